//! Codecs, their RTP payload types, and matching a remote offer's formats to what we can send.
//!
//! Answering rule measured on GStreamer 1.22: the caps on our send pad must carry the payload
//! type the offerer chose for that codec, or webrtcbin answers the m-line recvonly/inactive.
//! So the answerer reads the offer first and builds its send branches to match.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    Vp8,
    H264,
    Opus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
}

impl Codec {
    /// As profiles spell it: `vp8`, `h264`, `opus`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Vp8 => "vp8",
            Codec::H264 => "h264",
            Codec::Opus => "opus",
        }
    }

    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Vp8 => "VP8",
            Codec::H264 => "H264",
            Codec::Opus => "OPUS",
        }
    }

    pub fn from_encoding_name(name: &str) -> Option<Codec> {
        [Codec::Vp8, Codec::H264, Codec::Opus]
            .into_iter()
            .find(|c| c.encoding_name().eq_ignore_ascii_case(name))
    }

    pub fn kind(self) -> MediaKind {
        match self {
            Codec::Vp8 | Codec::H264 => MediaKind::Video,
            Codec::Opus => MediaKind::Audio,
        }
    }

    pub fn is_video(self) -> bool {
        self.kind() == MediaKind::Video
    }

    pub fn clock_rate(self) -> i32 {
        match self {
            Codec::Vp8 | Codec::H264 => 90_000,
            Codec::Opus => 48_000,
        }
    }

    /// The payload type we use when we are the offerer (Chromium's numbers).
    pub fn default_payload_type(self) -> u32 {
        match self {
            Codec::Vp8 => 96,
            Codec::H264 => 102,
            Codec::Opus => 111,
        }
    }

    /// The RTP caps webrtcbin sees on our send pad for this codec.
    pub fn rtp_caps(self, payload_type: u32) -> gst::Caps {
        let media = match self.kind() {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        };
        let mut caps = gst::Caps::builder("application/x-rtp")
            .field("media", media)
            .field("encoding-name", self.encoding_name())
            .field("payload", payload_type as i32)
            .field("clock-rate", self.clock_rate());
        match self {
            // Without encoding-params the rtpmap is `OPUS/48000` and Chromium rejects it.
            // useinbandfec (in our fmtp): we decode in-band FEC, so send it (RFC 7587); with
            // `[audio] fec = false` our descriptions leave it out (session::sdp).
            Codec::Opus => {
                caps = caps
                    .field("encoding-params", "2")
                    .field("useinbandfec", "1")
            }
            Codec::H264 => caps = caps.field("packetization-mode", "1"),
            Codec::Vp8 => {}
        }
        caps.build()
    }

    /// The depayloader alone (to count frames without decoding them).
    ///
    /// A video depayloader that sees a frame lost for good (the jitter buffer gave up on it,
    /// retransmission too) asks the sender for a keyframe (`request-keyframe`: a PLI), as
    /// browsers do. Without it the decoder went on from a broken reference until the next
    /// periodic keyframe — and when the lost frame was the keyframe that moved the call to
    /// another rendition, it decoded the new rung's frames at the old size (seen once under a
    /// policed link: 640×360 garbage at 20 fps while the camera sent 160×90).
    pub fn depay(self) -> &'static str {
        match self {
            Codec::Vp8 => "rtpvp8depay request-keyframe=true",
            Codec::H264 => "rtph264depay request-keyframe=true",
            Codec::Opus => "rtpopusdepay",
        }
    }

    /// Launch-syntax of depayloader and decoder for received RTP of this codec.
    pub fn depay_decode(self) -> &'static str {
        match self {
            Codec::Vp8 => "rtpvp8depay request-keyframe=true ! vp8dec",
            Codec::H264 => "rtph264depay request-keyframe=true ! avdec_h264",
            // A packet lost for good (the jitter buffer's gap) is rebuilt from the next one's
            // in-band FEC when it carries some, else concealed.
            Codec::Opus => "rtpopusdepay ! opusdec plc=true use-inband-fec=true",
        }
    }
}

/// One codec format of one m-line in a remote offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedFormat {
    pub payload_type: u32,
    pub codec: Codec,
    pub fmtp: Option<String>,
}

/// One m-line of a remote offer, restricted to codecs we know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedMedia {
    pub mline: u32,
    pub kind: MediaKind,
    pub formats: Vec<OfferedFormat>,
}

/// Reads the audio and video m-lines of an offer (the DataChannel's is skipped).
pub fn offered_media(sdp: &gst_sdp::SDPMessageRef) -> Vec<OfferedMedia> {
    let mut out = Vec::new();
    for (index, media) in sdp.medias().enumerate() {
        let kind = match media.media() {
            Some("audio") => MediaKind::Audio,
            Some("video") => MediaKind::Video,
            _ => continue,
        };
        let mut formats = Vec::new();
        for fmt in media.formats() {
            let Ok(pt) = fmt.parse::<u32>() else { continue };
            let Some(codec) = rtpmap_codec(media, pt) else {
                continue;
            };
            formats.push(OfferedFormat {
                payload_type: pt,
                codec,
                fmtp: fmtp(media, pt),
            });
        }
        out.push(OfferedMedia {
            mline: index as u32,
            kind,
            formats,
        });
    }
    out
}

fn rtpmap_codec(media: &gst_sdp::SDPMediaRef, pt: u32) -> Option<Codec> {
    let prefix = format!("{pt} ");
    media
        .attributes()
        .filter(|a| a.key() == "rtpmap")
        .filter_map(|a| a.value())
        .find_map(|v| v.strip_prefix(&prefix))
        .and_then(|rest| rest.split('/').next())
        .and_then(Codec::from_encoding_name)
}

fn fmtp(media: &gst_sdp::SDPMediaRef, pt: u32) -> Option<String> {
    let prefix = format!("{pt} ");
    media
        .attributes()
        .filter(|a| a.key() == "fmtp")
        .filter_map(|a| a.value())
        .find_map(|v| v.strip_prefix(&prefix).map(str::to_string))
}

/// Picks, for one offered m-line, the first of our preferred codecs the offer carries in a
/// form our encoder really produces, and the offerer's payload type for it.
pub fn choose(offered: &OfferedMedia, preferences: &[Codec]) -> Option<(Codec, u32)> {
    preferences.iter().find_map(|&codec| {
        offered
            .formats
            .iter()
            .find(|f| f.codec == codec && format_is_sendable(f))
            .map(|f| (codec, f.payload_type))
    })
}

/// H.264 offers carry several profiles; webrtcbin only answers one our encoder's caps match.
/// Our encoders produce constrained baseline with packetization-mode 1.
fn format_is_sendable(format: &OfferedFormat) -> bool {
    if format.codec != Codec::H264 {
        return true;
    }
    let params = format.fmtp.as_deref().unwrap_or("");
    let param = |name: &str| {
        params
            .split(';')
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    let constrained_baseline = param("profile-level-id").is_some_and(|id| {
        let bytes = u32::from_str_radix(&id, 16).unwrap_or(0);
        let profile_idc = (bytes >> 16) & 0xff;
        let constraints = (bytes >> 8) & 0xff;
        id.len() == 6 && profile_idc == 0x42 && constraints & 0x40 != 0
    });
    let mode1 = param("packetization-mode").as_deref() == Some("1");
    constrained_baseline && mode1
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROMIUM_LIKE: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
a=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 102 108\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n\
a=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
a=rtpmap:108 H264/90000\r\n\
a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\n";

    fn parse(text: &str) -> gst_sdp::SDPMessage {
        gst::init().unwrap();
        gst_sdp::SDPMessage::parse_buffer(text.as_bytes()).unwrap()
    }

    #[test]
    fn reads_payload_types_from_the_offer() {
        let media = offered_media(&parse(CHROMIUM_LIKE));
        assert_eq!(media.len(), 2);
        assert_eq!(media[0].kind, MediaKind::Audio);
        assert_eq!(choose(&media[0], &[Codec::Opus]), Some((Codec::Opus, 111)));
        assert_eq!(choose(&media[1], &[Codec::Vp8]), Some((Codec::Vp8, 96)));
    }

    #[test]
    fn h264_picks_the_constrained_baseline_payload_type() {
        let media = offered_media(&parse(CHROMIUM_LIKE));
        // 102 is plain baseline (42001f): our encoder's constrained baseline doesn't match it.
        assert_eq!(choose(&media[1], &[Codec::H264]), Some((Codec::H264, 108)));
    }

    #[test]
    fn other_stacks_numbers_are_followed() {
        let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 97\r\na=rtpmap:97 VP8/90000\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 OPUS/48000/2\r\n";
        let media = offered_media(&parse(sdp));
        assert_eq!(
            choose(&media[0], &[Codec::H264, Codec::Vp8]),
            Some((Codec::Vp8, 97))
        );
        assert_eq!(choose(&media[1], &[Codec::Opus]), Some((Codec::Opus, 96)));
        assert_eq!(choose(&media[1], &[Codec::Vp8]), None);
    }
}
