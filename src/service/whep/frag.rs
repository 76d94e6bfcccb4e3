//! SDP text for WHEP: an answer with the daemon's candidates gathered into it (WHEP players
//! need not trickle), and `application/trickle-ice-sdpfrag` bodies (RFC 8840) both ways.

use crate::session::ice::Credentials;

/// A trickle-ice-sdpfrag from a player: its ICE credentials (new ones mean an ICE restart),
/// its candidates with the index of the offer's m-line each belongs to, and whether it said
/// it has no more.
#[derive(Debug, Default, PartialEq)]
pub struct Fragment {
    pub credentials: Option<Credentials>,
    /// (m-line index in the offer, `candidate:…`)
    pub candidates: Vec<(u32, String)>,
    pub end_of_candidates: bool,
}

/// At most this many candidates are taken from one fragment.
const MAX_CANDIDATES: usize = 64;

/// Parses a fragment; `mids` are the offer's m-line ids in order (a fragment names its
/// m-lines by `a=mid`). Unknown lines are skipped, as RFC 8840 asks.
pub fn parse(text: &str, mids: &[String]) -> Fragment {
    let mut fragment = Fragment::default();
    let (mut ufrag, mut pwd) = (None, None);
    let mut mline = 0u32;
    for line in text.lines().map(str::trim) {
        if let Some(mid) = line.strip_prefix("a=mid:") {
            mline = mids
                .iter()
                .position(|m| m == mid.trim())
                .map_or(0, |i| i as u32);
        } else if let Some(value) = line.strip_prefix("a=ice-ufrag:") {
            ufrag = Some(value.trim().to_string());
        } else if let Some(value) = line.strip_prefix("a=ice-pwd:") {
            pwd = Some(value.trim().to_string());
        } else if let Some(candidate) = line.strip_prefix("a=candidate:") {
            if fragment.candidates.len() < MAX_CANDIDATES {
                fragment
                    .candidates
                    .push((mline, format!("candidate:{}", candidate.trim())));
            }
        } else if line == "a=end-of-candidates" {
            fragment.end_of_candidates = true;
        }
    }
    if let (Some(ufrag), Some(pwd)) = (ufrag, pwd) {
        fragment.credentials = Some(Credentials { ufrag, pwd });
    }
    fragment
}

/// The `a=mid` of each m-line of `sdp`, in order (empty where there is none).
pub fn mids(sdp: &str) -> Vec<String> {
    let mut mids = Vec::new();
    for line in sdp.lines().map(str::trim) {
        if line.starts_with("m=") {
            mids.push(String::new());
        } else if let (Some(mid), Some(last)) = (line.strip_prefix("a=mid:"), mids.last_mut()) {
            *last = mid.trim().to_string();
        }
    }
    mids
}

/// `sdp` with `candidates` (m-line index, `candidate:…`) added to their m-lines, and
/// `a=end-of-candidates` on each m-line when `complete`. `None` when `sdp` is no description
/// with media.
pub fn with_candidates(sdp: &str, candidates: &[(u32, String)], complete: bool) -> Option<String> {
    let mut message = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes()).ok()?;
    let count = message.medias_len();
    if count == 0 {
        return None;
    }
    for (mline, candidate) in candidates {
        let value = candidate.strip_prefix("candidate:").unwrap_or(candidate);
        if let Some(media) = message.media_mut(*mline).filter(|_| *mline < count) {
            media.add_attribute("candidate", Some(value));
        }
    }
    if complete {
        for i in 0..count {
            if let Some(media) = message.media_mut(i) {
                media.add_attribute("end-of-candidates", None);
            }
        }
    }
    Some(message.to_string())
}

/// A fragment with the daemon's credentials and candidates, for the first m-line (all are
/// bundled on it): the answer to a player's ICE restart, or candidates trickled to a WHIP
/// endpoint.
pub fn fragment(
    credentials: &Credentials,
    mid: &str,
    candidates: &[(u32, String)],
    complete: bool,
) -> String {
    let mut text = format!(
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\nm=audio 9 RTP/AVP 0\r\na=mid:{mid}\r\n",
        credentials.ufrag, credentials.pwd
    );
    for (_, candidate) in candidates {
        text.push_str(&format!("a={candidate}\r\n"));
    }
    if complete {
        text.push_str("a=end-of-candidates\r\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE v a\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:v\r\na=ice-ufrag:abcd\r\n\
a=ice-pwd:passwordpasswordpassword\r\na=rtpmap:96 VP8/90000\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:a\r\na=rtpmap:111 OPUS/48000/2\r\n";

    #[test]
    fn a_fragment_gives_credentials_candidates_and_their_mlines() {
        let frag = "a=ice-options:trickle ice2\r\na=group:BUNDLE v a\r\nm=audio 9 RTP/AVP 0\r\n\
a=mid:a\r\na=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\n\
a=end-of-candidates\r\n";
        let parsed = parse(frag, &mids(OFFER));
        assert_eq!(mids(OFFER), ["v", "a"]);
        let credentials = parsed.credentials.expect("credentials");
        assert_eq!(credentials.ufrag, "EsAw");
        assert_eq!(credentials.pwd, "P2uYro0UCOQ4zxjKXaWCBui1");
        assert_eq!(parsed.candidates.len(), 1);
        assert_eq!(parsed.candidates[0].0, 1);
        assert!(
            parsed.candidates[0]
                .1
                .starts_with("candidate:1387637174 1 udp")
        );
        assert!(parsed.end_of_candidates);
    }

    #[test]
    fn a_hostile_fragment_is_bounded_and_garbage_is_nothing() {
        let many = "a=candidate:1 1 udp 1 192.0.2.1 1 typ host\r\n".repeat(1000);
        assert_eq!(parse(&many, &[]).candidates.len(), MAX_CANDIDATES);
        assert_eq!(parse("\u{0}garbage\nm=\na=mid:", &[]), Fragment::default());
    }

    #[test]
    fn candidates_go_into_their_mline_and_the_end_is_marked() {
        gst::init().unwrap();
        let candidate = "candidate:1 1 UDP 2015363327 127.0.0.1 40000 typ host".to_string();
        let sdp = with_candidates(OFFER, &[(0, candidate), (9, "candidate:x".into())], true)
            .expect("parses");
        let video = &sdp[sdp.find("m=video").unwrap()..sdp.find("m=audio").unwrap()];
        assert!(video.contains("a=candidate:1 1 UDP 2015363327 127.0.0.1 40000 typ host\r\n"));
        assert_eq!(sdp.matches("a=end-of-candidates").count(), 2);
        assert!(
            !sdp.contains("candidate:x"),
            "an m-line that is not there is skipped"
        );
        assert!(with_candidates("not sdp", &[], true).is_none());
    }
}
