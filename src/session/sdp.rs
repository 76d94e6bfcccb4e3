//! Small readings of SDP that the call needs: mids, the BUNDLE group, candidate components.

/// The `a=mid` of each m-line, in order.
pub fn mids(sdp: &gst_sdp::SDPMessageRef) -> Vec<Option<String>> {
    sdp.medias()
        .map(|m| m.attribute_val("mid").map(str::to_string))
        .collect()
}

/// The m-line index that carries a bundled transport (the first mid of `a=group:BUNDLE`).
pub fn bundle_transport_mline(sdp: &gst_sdp::SDPMessageRef) -> Option<u32> {
    let group = sdp
        .attributes()
        .filter(|a| a.key() == "group")
        .filter_map(|a| a.value())
        .find_map(|v| v.strip_prefix("BUNDLE "))?;
    let first = group.split_whitespace().next()?;
    mids(sdp)
        .iter()
        .position(|m| m.as_deref() == Some(first))
        .map(|i| i as u32)
}

/// The m-line index with this mid.
pub fn mline_of_mid(sdp: &gst_sdp::SDPMessageRef, mid: &str) -> Option<u32> {
    mids(sdp)
        .iter()
        .position(|m| m.as_deref() == Some(mid))
        .map(|i| i as u32)
}

/// The ICE component of a candidate line (`candidate:FOUNDATION COMPONENT ...`), with or
/// without the `a=` prefix.
pub fn candidate_component(candidate: &str) -> Option<u32> {
    let line = candidate.strip_prefix("a=").unwrap_or(candidate);
    line.strip_prefix("candidate:")?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bundle_and_mids() {
        let text = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE video0 audio1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:audio1\r\nm=video 9 UDP/TLS/RTP/SAVPF 97\r\na=mid:video0\r\n";
        gst::init().unwrap();
        let sdp = gst_sdp::SDPMessage::parse_buffer(text.as_bytes()).unwrap();
        assert_eq!(bundle_transport_mline(&sdp), Some(1));
        assert_eq!(mline_of_mid(&sdp, "audio1"), Some(0));
        assert_eq!(
            mids(&sdp),
            vec![Some("audio1".into()), Some("video0".into())]
        );
    }

    #[test]
    fn candidate_components() {
        assert_eq!(
            candidate_component("candidate:1 2 udp 2122260222 127.0.0.1 5000 typ host"),
            Some(2)
        );
        assert_eq!(
            candidate_component("a=candidate:abc 1 UDP 1 x.local 1 typ host"),
            Some(1)
        );
        assert_eq!(candidate_component("garbage"), None);
    }
}
