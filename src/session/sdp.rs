//! Small readings of SDP that the call needs: mids, the BUNDLE group, candidate components,
//! and what to answer.

use crate::media::codecs::{Codec, MediaKind, choose, offered_media};

/// Reads a peer's SDP (offer or answer). `Err` says, for a person, why it cannot be used:
/// not SDP at all, no m-line, or more m-lines than `max_mlines`.
pub fn check(text: &str, max_mlines: usize) -> Result<gst_sdp::SDPMessage, String> {
    if !text.trim_start().starts_with("v=0") {
        return Err("not an SDP description (it must start with v=0)".into());
    }
    let sdp = gst_sdp::SDPMessage::parse_buffer(text.as_bytes())
        .map_err(|_| "the SDP description does not parse".to_string())?;
    let mlines = sdp.medias_len() as usize;
    if mlines == 0 {
        return Err("the SDP description has no m-line".into());
    }
    if mlines > max_mlines {
        return Err(format!(
            "the SDP description has {mlines} m-lines; this device takes at most {max_mlines}"
        ));
    }
    Ok(sdp)
}

/// What the callee will do with each audio/video m-line of an offer: send `codec` with the
/// offer's payload type, or only receive (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerPlan {
    pub mlines: Vec<(u32, Option<(Codec, u32)>)>,
    pub data_channel: bool,
}

impl AnswerPlan {
    /// The codecs the answer sends.
    pub fn codecs(&self) -> Vec<Codec> {
        self.mlines
            .iter()
            .filter_map(|(_, send)| send.map(|(codec, _)| codec))
            .collect()
    }
}

/// Decides how to answer `text` — a pure function of the offer and our codecs (`ours`, per
/// kind, in preference order), so the fuzzer can drive it. `Err` says why the offer cannot
/// be answered (`bad-sdp`).
pub fn plan_answer(
    text: &str,
    max_mlines: usize,
    ours: &dyn Fn(MediaKind) -> Vec<Codec>,
) -> Result<(gst_sdp::SDPMessage, AnswerPlan), String> {
    let offer = check(text, max_mlines)?;
    let offered = offered_media(&offer);
    let data_channel = has_data_channel(&offer);
    // An m-line of codecs we know none of (H.265 only, say) would be answered inactive: a
    // call that carries nothing is refused, not answered.
    if offered.iter().all(|m| m.formats.is_empty()) && !data_channel {
        return Err(
            "the offer has no audio or video codec or DataChannel this device can answer".into(),
        );
    }
    let mlines = offered
        .iter()
        .map(|m| (m.mline, choose(m, &ours(m.kind))))
        .collect();
    Ok((
        offer,
        AnswerPlan {
            mlines,
            data_channel,
        },
    ))
}

/// Whether the description has a DataChannel (SCTP) m-line.
pub fn has_data_channel(sdp: &gst_sdp::SDPMessageRef) -> bool {
    sdp.medias()
        .any(|m| m.media() == Some("application") && m.proto().is_some_and(|p| p.contains("SCTP")))
}

/// The `a=mid` of each m-line, in order.
pub fn mids(sdp: &gst_sdp::SDPMessageRef) -> Vec<Option<String>> {
    sdp.medias()
        .map(|m| m.attribute_val("mid").map(str::to_string))
        .collect()
}

/// The SSRCs a description announces for its video (`a=ssrc:N …` in video m-lines).
pub fn video_ssrcs(sdp: &gst_sdp::SDPMessageRef) -> Vec<u32> {
    let mut out: Vec<u32> = sdp
        .medias()
        .filter(|m| m.media() == Some("video"))
        .flat_map(|m| {
            m.attributes()
                .filter(|a| a.key() == "ssrc")
                .collect::<Vec<_>>()
        })
        .filter_map(|a| a.value()?.split_whitespace().next()?.parse().ok())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

use crate::media::send::TRANSPORT_CC_URI;

/// The id the description gives transport-wide congestion control on its video
/// (`a=extmap:N <uri>`), if it has it: an answer must use the offer's id.
pub fn transport_cc_id(sdp: &gst_sdp::SDPMessageRef) -> Option<u32> {
    sdp.medias()
        .filter(|m| m.media() == Some("video"))
        .flat_map(|m| {
            m.attributes()
                .filter(|a| a.key() == "extmap")
                .collect::<Vec<_>>()
        })
        .filter_map(|a| a.value())
        .find_map(|v| {
            let mut words = v.split_whitespace();
            let id = words.next()?.split('/').next()?.parse().ok()?;
            (words.next()? == TRANSPORT_CC_URI).then_some(id)
        })
        .filter(|id| (1..=14).contains(id))
}

/// Adds transport-wide congestion control (extension `id`) to every video m-line that has
/// its feedback (`a=rtcp-fb:* transport-cc`) but not the extension: webrtcbin 1.22 answers
/// the feedback of an offer and drops its `a=extmap`, and without the extension in the
/// answer the offerer's estimator never hears a thing.
pub fn add_transport_cc(sdp: &mut gst_sdp::SDPMessageRef, id: u32) {
    let value = format!("{id} {TRANSPORT_CC_URI}");
    for i in 0..sdp.medias_len() {
        let Some(media) = sdp.media_mut(i) else {
            continue;
        };
        let wants = media.media() == Some("video")
            && media.attributes().any(|a| {
                a.key() == "rtcp-fb" && a.value().is_some_and(|v| v.ends_with(" transport-cc"))
            });
        let has = media.attributes().any(|a| {
            a.key() == "extmap" && a.value().is_some_and(|v| v.contains(TRANSPORT_CC_URI))
        });
        if wants && !has {
            media.add_attribute("extmap", Some(&value));
        }
    }
}

/// The payload types of `media` whose `a=rtpmap` names the codec `name` (any case).
pub fn payloads_named(media: &gst_sdp::SDPMediaRef, name: &str) -> Vec<u8> {
    media
        .attributes()
        .filter(|a| a.key() == "rtpmap")
        .filter_map(|a| {
            let (pt, codec) = a.value()?.split_once(' ')?;
            let codec = codec.split('/').next()?;
            codec.eq_ignore_ascii_case(name).then(|| pt.parse().ok())?
        })
        .collect()
}

/// Takes `useinbandfec=1` out of every audio fmtp: a peer then adds no Opus FEC to what it
/// sends us (`[audio] fec = false`; webrtcbin's answer keeps what the offer said).
pub fn drop_in_band_fec(sdp: &mut gst_sdp::SDPMessageRef) {
    for media in sdp.medias_mut() {
        if media.media() != Some("audio") {
            continue;
        }
        let fmtps: Vec<(u32, String)> = media
            .attributes()
            .enumerate()
            .filter(|(_, a)| a.key() == "fmtp")
            .filter_map(|(i, a)| Some((i as u32, a.value()?.to_string())))
            .filter(|(_, v)| v.contains("useinbandfec"))
            .collect();
        // Last first: removing an attribute moves the ones after it.
        for (i, value) in fmtps.into_iter().rev() {
            let Some((pt, params)) = value.split_once(' ') else {
                continue;
            };
            let kept: Vec<&str> = params
                .split(';')
                .map(str::trim)
                .filter(|p| !p.is_empty() && !p.starts_with("useinbandfec"))
                .collect();
            // Nothing left: no fmtp at all (not `useinbandfec=0`, which a webrtcbin peer whose
            // own caps say 1 cannot match to its transceiver).
            let _ = if kept.is_empty() {
                media.remove_attribute(i)
            } else {
                let value = format!("{pt} {}", kept.join(";"));
                media.replace_attribute(i, gst_sdp::SDPAttribute::new("fmtp", Some(&value)))
            };
        }
    }
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

/// Replaces every `a=fingerprint` (session and media level) with `fingerprint`.
pub fn set_fingerprint(sdp: &mut gst_sdp::SDPMessageRef, fingerprint: &str) {
    let attr = || gst_sdp::SDPAttribute::new("fingerprint", Some(fingerprint));
    for i in fingerprint_positions(sdp.attributes()) {
        let _ = sdp.replace_attribute(i, attr());
    }
    for media in sdp.medias_mut() {
        for i in fingerprint_positions(media.attributes()) {
            let _ = media.replace_attribute(i, attr());
        }
    }
}

/// The ICE credentials of a description: its first m-line's, or the session's (every m-line
/// of a bundle carries the same).
pub fn ice_credentials(sdp: &gst_sdp::SDPMessageRef) -> Option<super::ice::Credentials> {
    let find = |key: &str| {
        sdp.medias()
            .next()
            .and_then(|m| m.attribute_val(key))
            .or_else(|| sdp.attribute_val(key))
            .map(str::to_string)
    };
    Some(super::ice::Credentials {
        ufrag: find("ice-ufrag")?,
        pwd: find("ice-pwd")?,
    })
}

/// Puts `credentials` in every `a=ice-ufrag` and `a=ice-pwd` (session and media level): an ICE
/// restart's description carries libnice's new ones, not what webrtcbin wrote (it reuses the
/// first negotiation's).
pub fn set_ice_credentials(
    sdp: &mut gst_sdp::SDPMessageRef,
    credentials: &super::ice::Credentials,
) {
    let value = |key: &str| match key {
        "ice-ufrag" => Some(credentials.ufrag.as_str()),
        "ice-pwd" => Some(credentials.pwd.as_str()),
        _ => None,
    };
    let positions = |attrs: &mut dyn Iterator<Item = &gst_sdp::SDPAttribute>| {
        attrs
            .enumerate()
            .filter_map(|(i, a)| value(a.key()).map(|v| (i as u32, a.key().to_string(), v)))
            .collect::<Vec<_>>()
    };
    for (i, key, v) in positions(&mut sdp.attributes()) {
        let _ = sdp.replace_attribute(i, gst_sdp::SDPAttribute::new(&key, Some(v)));
    }
    for media in sdp.medias_mut() {
        for (i, key, v) in positions(&mut media.attributes()) {
            let _ = media.replace_attribute(i, gst_sdp::SDPAttribute::new(&key, Some(v)));
        }
    }
}

fn fingerprint_positions<'a>(attrs: impl Iterator<Item = &'a gst_sdp::SDPAttribute>) -> Vec<u32> {
    attrs
        .enumerate()
        .filter(|(_, a)| a.key() == "fingerprint")
        .map(|(i, _)| i as u32)
        .collect()
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

    /// Every `a=fingerprint` value (session and media level), e.g. `sha-256 AB:CD:…`.
    pub fn fingerprints(sdp: &gst_sdp::SDPMessageRef) -> Vec<String> {
        let session = sdp.attributes().filter(|a| a.key() == "fingerprint");
        let media = sdp.medias().flat_map(|m| {
            m.attributes()
                .filter(|a| a.key() == "fingerprint")
                .collect::<Vec<_>>()
        });
        session
            .chain(media)
            .filter_map(|a| a.value().map(str::to_string))
            .collect()
    }

    #[test]
    fn ice_credentials_are_read_and_replaced_everywhere() {
        let text = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:old1\r\na=ice-pwd:oldpasswordoldpassword\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:old1\r\na=ice-pwd:oldpasswordoldpassword\r\n";
        gst::init().unwrap();
        let mut sdp = gst_sdp::SDPMessage::parse_buffer(text.as_bytes()).unwrap();
        let old = ice_credentials(&sdp).unwrap();
        assert_eq!(old.ufrag, "old1");
        let new = super::super::ice::Credentials {
            ufrag: "new2".into(),
            pwd: "newpasswordnewpassword".into(),
        };
        set_ice_credentials(&mut sdp, &new);
        assert_eq!(ice_credentials(&sdp), Some(new));
        let written = sdp.to_string();
        assert!(!written.contains("old"), "{written}");
        assert_eq!(written.matches("a=ice-ufrag:new2").count(), 2, "{written}");
    }

    #[test]
    fn an_offer_of_codecs_we_do_not_know_is_refused() {
        gst::init().unwrap();
        let ours = |kind| match kind {
            MediaKind::Video => vec![Codec::Vp8, Codec::H264],
            MediaKind::Audio => vec![Codec::Opus],
        };
        let h265 = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 H265/90000\r\na=recvonly\r\n";
        assert!(plan_answer(h265, 16, &ours).is_err());
        // One known codec is enough (we send it).
        let vp8 = format!("{h265}m=video 9 UDP/TLS/RTP/SAVPF 97\r\na=rtpmap:97 VP8/90000\r\n");
        let (_, plan) = plan_answer(&vp8, 16, &ours).unwrap();
        assert_eq!(plan.codecs(), [Codec::Vp8]);
    }

    #[test]
    fn video_ssrcs_come_from_video_mlines_only() {
        let text = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=ssrc-group:FID 11 12\r\na=ssrc:11 cname:x\r\n\
a=ssrc:11 msid:x y\r\na=ssrc:12 cname:x\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ssrc:21 cname:x\r\n";
        gst::init().unwrap();
        let sdp = gst_sdp::SDPMessage::parse_buffer(text.as_bytes()).unwrap();
        assert_eq!(video_ssrcs(&sdp), [11, 12]);
    }

    #[test]
    fn transport_cc_id_from_the_video_extmap() {
        let text = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=extmap:4 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=extmap:2 urn:ietf:params:rtp-hdrext:toffset\r\n\
a=extmap:5/sendrecv http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n";
        gst::init().unwrap();
        let sdp = gst_sdp::SDPMessage::parse_buffer(text.as_bytes()).unwrap();
        assert_eq!(transport_cc_id(&sdp), Some(5));
        let none =
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
        let sdp = gst_sdp::SDPMessage::parse_buffer(none.as_bytes()).unwrap();
        assert_eq!(transport_cc_id(&sdp), None);
    }

    #[test]
    fn in_band_fec_is_taken_out_of_audio_only() {
        let text = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 112\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=fmtp:112 useinbandfec=1\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=fmtp:96 useinbandfec=1\r\n";
        gst::init().unwrap();
        let mut sdp = gst_sdp::SDPMessage::parse_buffer(text.as_bytes()).unwrap();
        drop_in_band_fec(&mut sdp);
        let written = sdp.to_string();
        assert!(written.contains("a=fmtp:111 minptime=10\r\n"), "{written}");
        assert!(!written.contains("a=fmtp:112"), "{written}");
        assert!(
            written.contains("a=fmtp:96 useinbandfec=1\r\n"),
            "{written}"
        );
    }

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
    fn fingerprint_replaced_everywhere() {
        gst::init().unwrap();
        let text = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 00:11\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=fingerprint:sha-256 00:11\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 97\r\na=fingerprint:sha-256 00:11\r\na=mid:1\r\n";
        let mut sdp = gst_sdp::SDPMessage::parse_buffer(text.as_bytes()).unwrap();
        set_fingerprint(&mut sdp, "sha-256 AA:BB");
        assert_eq!(fingerprints(&sdp), vec!["sha-256 AA:BB"; 3]);
        assert_eq!(mids(&sdp), vec![Some("0".into()), Some("1".into())]);
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
