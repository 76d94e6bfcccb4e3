//! Creating a webrtcbin and wiring its signals to the session task.
//!
//! Every handler here only posts an [`Event`] and returns: no webrtcbin calls, no state
//! changes, no locks. Closures hold the event sender and nothing else, so no reference cycle
//! keeps a pipeline alive after teardown.

use gst::prelude::*;
use gst_webrtc::{WebRTCDataChannel, WebRTCICEGatheringState, WebRTCPeerConnectionState};
use tokio::sync::mpsc::{Sender, UnboundedSender};

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use super::CallSettings;
use super::events::{Event, PeerInput};
use super::ice;
use super::identity::DtlsIdentity;
use super::loss_estimate::ReceiverReport;
use crate::media::codecs::MediaKind;

#[derive(Debug, thiserror::Error)]
pub enum WebRtcError {
    #[error("webrtcbin is not available (is gstreamer1.0-plugins-bad installed?): {0}")]
    Missing(String),
    #[error(transparent)]
    Ice(#[from] ice::IceError),
}

pub fn create(settings: &CallSettings) -> Result<gst::Element, WebRtcError> {
    let webrtcbin = gst::ElementFactory::make("webrtcbin")
        .name("webrtc")
        .property_from_str("bundle-policy", "max-bundle")
        .property("latency", settings.profile.receive.latency_ms)
        .build()
        .map_err(|e| WebRtcError::Missing(e.to_string()))?;
    if let Some(stun) = &settings.stun_server {
        webrtcbin.set_property("stun-server", stun);
    }
    for turn in &settings.turn_servers {
        let _added: bool = webrtcbin.emit_by_name("add-turn-server", &[&turn.expose()]);
    }
    if let Some(rest) = &settings.turn_rest {
        let credentials = rest.issue("webrtcd");
        for url in rest.urls_with(&credentials) {
            let added: bool = webrtcbin.emit_by_name("add-turn-server", &[&url]);
            if !added {
                tracing::warn!(server = %crate::redact::url(&url), "webrtcbin refused a TURN server");
            }
        }
    }
    if settings.relay_only {
        webrtcbin.set_property_from_str("ice-transport-policy", "relay");
    }
    ice::restrict_host_addresses(&webrtcbin, &settings.ice_addresses)?;
    ice::configure_agent(&webrtcbin);
    use_identity(&webrtcbin, &settings.identity);
    Ok(webrtcbin)
}

/// Tests only (debug builds): with `WEBRTCD_TEST_STALL_PEER=PEER:MS` in the environment,
/// the webrtcbin of a call with PEER stalls for MS milliseconds, once: its first new
/// transceiver's handler sleeps, and webrtcbin emits that signal holding its own lock, so
/// each of its signals and pads waits meanwhile. What a wedged webrtcbin does to the rest of
/// the daemon is then testable (the API must not wait on it). Release builds ignore it.
#[cfg(debug_assertions)]
pub fn stall_for_tests(webrtcbin: &gst::Element, peer: &str) {
    let Ok(spec) = std::env::var("WEBRTCD_TEST_STALL_PEER") else {
        return;
    };
    let Some((who, ms)) = spec.split_once(':') else {
        return;
    };
    let Ok(ms) = ms.parse::<u64>() else {
        return;
    };
    if who != peer {
        return;
    }
    let once = std::sync::atomic::AtomicBool::new(false);
    webrtcbin.connect("on-new-transceiver", false, move |_| {
        if !once.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                ms,
                "stalling this call's webrtcbin (WEBRTCD_TEST_STALL_PEER)"
            );
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        None
    });
}

/// Gives every DTLS element of this webrtcbin our certificate as soon as it is created.
/// Setting a property of a new child element is not a webrtcbin call.
///
/// webrtcbin 1.22 then writes a wrong `a=fingerprint`: it hashes every base64 line of the
/// `pem` string, private key included. The session therefore writes our certificate's
/// fingerprint into each SDP before using it ([`super::sdp::set_fingerprint`]).
fn use_identity(webrtcbin: &gst::Element, identity: &Arc<DtlsIdentity>) {
    let Some(bin) = webrtcbin.downcast_ref::<gst::Bin>() else {
        return;
    };
    let pem = identity.pem().to_string();
    bin.connect_deep_element_added(move |_, _, element| {
        let is_dtls_decoder = element.factory().is_some_and(|f| f.name() == "dtlssrtpdec");
        if is_dtls_decoder {
            element.set_property("pem", &pem);
        }
    });
}

/// Turns on NACK and retransmission (RTX) for the video transceivers (`video[i]`: whether
/// transceiver `i` carries video), before the offer or answer is made: webrtcbin then offers
/// `rtx` and `nack` (answers them when offered) and keeps a send buffer to retransmit from.
/// Video only, as browsers do: with it on audio too, webrtcbin 1.22 offers an SSRC twice and
/// Chromium refuses the offer. With `fec` (a percentage), also ULP FEC in RED. Call through
/// the session's `in_webrtcbin` (`get-transceiver` takes webrtcbin's own lock).
pub fn enable_loss_recovery(webrtcbin: &gst::Element, video: &[bool], fec: Option<u32>) {
    for (index, _) in video.iter().enumerate().filter(|(_, v)| **v) {
        let Ok(index) = i32::try_from(index) else {
            return;
        };
        let transceiver = webrtcbin
            .emit_by_name::<Option<gst_webrtc::WebRTCRTPTransceiver>>("get-transceiver", &[&index]);
        if let Some(transceiver) = transceiver {
            transceiver.set_property("do-nack", true);
            if let Some(percentage) = fec {
                transceiver.set_property("fec-type", gst_webrtc::WebRTCFECType::UlpRed);
                transceiver.set_property("fec-percentage", percentage);
            }
        }
    }
}

/// What loss recovery did so far, summed over a webrtcbin's elements.
#[derive(Debug, Default, Clone, Copy)]
pub struct Recovery {
    /// Retransmission requests received, and packets retransmitted (`rtprtxsend`).
    pub requests: u64,
    pub retransmitted: u64,
    /// Lost packets rebuilt from FEC (`rtpulpfecdec`).
    pub fec_recovered: u64,
}

/// Loss recovery, in one pass over webrtcbin's elements: returns what it did ([`Recovery`]), and
/// turns on `do-retransmission` on the jitterbuffer of every SSRC in `video_ssrcs` (the
/// peer's video, from its description) so lost video is asked for again. webrtcbin 1.22 takes
/// that setting from the wrong transceiver under BUNDLE (measured: with NACK on the video
/// transceiver only, neither jitterbuffer asked). Call on the session task.
pub fn loss_recovery(webrtcbin: &gst::Element, video_ssrcs: &[u32]) -> Recovery {
    let mut done = Recovery::default();
    let Some(bin) = webrtcbin.downcast_ref::<gst::Bin>() else {
        return done;
    };
    for element in bin.iterate_recurse().into_iter().flatten() {
        let Some(factory) = element.factory() else {
            continue;
        };
        match factory.name().as_str() {
            "rtprtxsend" => {
                done.requests += u64::from(element.property::<u32>("num-rtx-requests"));
                done.retransmitted += u64::from(element.property::<u32>("num-rtx-packets"));
            }
            "rtpulpfecdec" => {
                done.fec_recovered += u64::from(element.property::<u32>("recovered"));
            }
            "rtpjitterbuffer" if !element.property::<bool>("do-retransmission") => {
                let ssrc = element
                    .static_pad("sink")
                    .and_then(|p| p.current_caps())
                    .and_then(|caps| caps.structure(0).and_then(|s| s.get::<u32>("ssrc").ok()));
                if ssrc.is_some_and(|ssrc| video_ssrcs.contains(&ssrc)) {
                    element.set_property("do-retransmission", true);
                }
            }
            _ => {}
        }
    }
    done
}

/// Whether the call's transport-wide congestion control gets the peer's feedback: unknown
/// until the descriptions say whether transport-cc was negotiated.
pub const FEEDBACK_UNKNOWN: u8 = 0;
pub const FEEDBACK_YES: u8 = 1;
pub const FEEDBACK_NO: u8 = 2;

/// Puts Google Congestion Control (`rtpgccbwe`) on the call's transport: webrtcbin asks for
/// an "aux sender" for each transport, and everything sent passes through it. It reads the
/// peer's transport-wide feedback, paces what is sent, and its estimate lands in
/// `info.estimate_bps` (an atomic store in the handler; the session task reads it).
/// `max_kbps` bounds the estimate (no point in estimating above what could be sent).
/// `feedback` says whether the peer negotiated transport-cc: without it (known before the
/// transport exists, as for an answerer) no estimator is inserted; an estimator inserted
/// before that was known (an offerer) leaves the estimate to the loss-based one.
pub fn estimate_bandwidth(
    webrtcbin: &gst::Element,
    info: &Arc<super::CallInfo>,
    max_kbps: u32,
    feedback: Arc<AtomicU8>,
) {
    let info = Arc::downgrade(info);
    // The signal wants an element or NULL: a handler returning no value at all aborts the
    // process (a Rust panic that cannot unwind through C).
    let no_element = || Some(None::<gst::Element>.to_value());
    webrtcbin.connect("request-aux-sender", false, move |_| {
        if feedback.load(Ordering::Relaxed) == FEEDBACK_NO {
            return no_element();
        }
        let gcc = match gst::ElementFactory::make("rtpgccbwe")
            .property("max-bitrate", max_kbps.saturating_mul(1000))
            .property("min-bitrate", 50_000u32)
            .build()
        {
            Ok(gcc) => gcc,
            Err(e) => {
                tracing::warn!("no bandwidth estimation: {e}");
                return no_element();
            }
        };
        let info = info.clone();
        let feedback = Arc::clone(&feedback);
        gcc.connect_notify(Some("estimated-bitrate"), move |gcc, _| {
            if let Some(info) = info.upgrade()
                && feedback.load(Ordering::Relaxed) == FEEDBACK_YES
            {
                let bps = gcc.property::<u32>("estimated-bitrate");
                info.estimate_bps.store(u64::from(bps), Ordering::Relaxed);
            }
        });
        Some(gcc.to_value())
    });
}

/// Keeps `latest` up to date with the peer's RTCP report blocks on our stream `ssrc` (in its
/// sender or receiver reports). rtpbin keeps only the last report block per remote source in
/// its statistics, whichever of our streams it was about, so the reports are read as they
/// come, from its RTP session's `on-receiving-rtcp` (the handler parses and stores an atomic,
/// nothing else). The session exists once the transport does: returns false until then (call
/// again later).
pub fn watch_receiver_reports(
    webrtcbin: &gst::Element,
    ssrc: u32,
    latest: Arc<LatestReport>,
) -> bool {
    let Some(session) = rtp_session(webrtcbin) else {
        return false;
    };
    session.connect("on-receiving-rtcp", false, move |args| {
        let buffer = args.get(1).and_then(|v| v.get::<gst::Buffer>().ok());
        if let Some(map) = buffer.as_ref().and_then(|b| b.map_readable().ok())
            && let Some(report) = report_on(&map, ssrc)
        {
            latest.store(report);
        }
        None
    });
    true
}

/// The report block about `ssrc` in a compound RTCP packet, if any; of several, the one that
/// says the most was lost. A GStreamer peer that sends several streams writes a sender report
/// for each, every one with a block about each stream it receives, made one after the other
/// (in one compound packet or in several): all but one of the blocks about a stream cover an
/// interval of nothing and say 0 % lost (seen at 10 % random loss: 28/256, then 0, same
/// sequence number). [`LatestReport::store`] keeps the first across packets.
fn report_on(data: &[u8], ssrc: u32) -> Option<ReceiverReport> {
    let compound = rtcp_types::Compound::parse(data).ok()?;
    compound
        .flatten()
        .filter_map(|packet| {
            let block = match &packet {
                rtcp_types::Packet::Sr(sr) => sr.report_blocks().find(|b| b.ssrc() == ssrc),
                rtcp_types::Packet::Rr(rr) => rr.report_blocks().find(|b| b.ssrc() == ssrc),
                _ => None,
            }?;
            Some(ReceiverReport {
                fraction_lost: u32::from(block.fraction_lost()),
                highest_seq: block.extended_sequence_number(),
            })
        })
        .max_by_key(|r| r.fraction_lost)
}

/// What the peer's feedback on our stream `ssrc` added up to, from rtpbin's session
/// statistics (reading them is not a webrtcbin call).
#[derive(Debug, Clone, Copy)]
pub struct StreamFeedback {
    /// Keyframe requests (PLI and FIR).
    pub keyframe_requests: u64,
    /// The round trip its latest report block gave (RTCP LSR/DLSR), if any.
    pub round_trip: Option<std::time::Duration>,
}

/// rtpbin's `RTPSession` object for the call: under max-bundle every stream is in RTP
/// session 0. `None` before the transport exists (this does not create it).
pub fn rtp_session(webrtcbin: &gst::Element) -> Option<glib::Object> {
    let rtpbin = webrtcbin.downcast_ref::<gst::Bin>()?.by_name("rtpbin")?;
    rtpbin.emit_by_name::<Option<glib::Object>>("get-internal-session", &[&0u32])
}

/// The statistics of every source (SSRC) in the call's RTP session, ours and the peer's.
pub fn source_stats(session: &glib::Object) -> Vec<gst::Structure> {
    let stats = session.property::<gst::Structure>("stats");
    stats
        .get::<glib::ValueArray>("source-stats")
        .map(|sources| {
            sources
                .iter()
                .filter_map(|value| value.get::<gst::Structure>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `None` before the session exists.
pub fn stream_feedback(webrtcbin: &gst::Element, ssrc: u32) -> Option<StreamFeedback> {
    let session = rtp_session(webrtcbin)?;
    source_stats(&session).into_iter().find_map(|source| {
        (source.get::<u32>("ssrc").ok()? == ssrc).then(|| {
            let count = |field| u64::from(source.get::<u32>(field).unwrap_or(0));
            // In 1/65536 s (RTCP's compact NTP format); 0 when the block had no LSR.
            let round_trip = source
                .get::<bool>("have-rb")
                .unwrap_or(false)
                .then(|| source.get::<u32>("rb-round-trip").unwrap_or(0))
                .filter(|&units| units > 0)
                .map(|units| std::time::Duration::from_secs_f64(f64::from(units) / 65536.0));
            StreamFeedback {
                keyframe_requests: count("recv-pli-count") + count("recv-fir-count"),
                round_trip,
            }
        })
    })
}

/// The latest report block on one of our streams, shared between a signal handler (which
/// stores) and the session task (which reads): one atomic word.
#[derive(Debug, Default)]
pub struct LatestReport(AtomicU64);

impl LatestReport {
    const PRESENT: u64 = 1 << 40;

    /// Keeps `report`, unless it is another block about the same moment (same highest
    /// sequence number) that says less was lost: see [`report_on`].
    fn store(&self, report: ReceiverReport) {
        if let Some(kept) = self.get()
            && kept.highest_seq == report.highest_seq
            && kept.fraction_lost >= report.fraction_lost
        {
            return;
        }
        let word = Self::PRESENT
            | (u64::from(report.highest_seq) << 8)
            | u64::from(report.fraction_lost.min(255));
        self.0.store(word, Ordering::Relaxed);
    }

    pub fn get(&self) -> Option<ReceiverReport> {
        let word = self.0.load(Ordering::Relaxed);
        (word & Self::PRESENT != 0).then_some(ReceiverReport {
            fraction_lost: (word & 0xff) as u32,
            highest_seq: ((word >> 8) & 0xffff_ffff) as u32,
        })
    }
}

/// Counts the RTCP reports that arrive from the peer into `info` (rtpbin's `on-ssrc-active`
/// fires for each remote source that sends one). Only an atomic add in the handler.
pub fn count_peer_rtcp(webrtcbin: &gst::Element, info: &Arc<super::CallInfo>) {
    let Some(rtpbin) = webrtcbin
        .downcast_ref::<gst::Bin>()
        .and_then(|bin| bin.by_name("rtpbin"))
    else {
        tracing::warn!("webrtcbin has no rtpbin: the peer's RTCP is not counted");
        return;
    };
    let info = Arc::clone(info);
    rtpbin.connect("on-ssrc-active", false, move |_| {
        info.rtcp_received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        None
    });
}

pub fn wire(webrtcbin: &gst::Element, events: &UnboundedSender<Event>, peer: &Sender<PeerInput>) {
    let tx = events.clone();
    webrtcbin.connect("on-ice-candidate", false, move |args| {
        let mline = args.get(1).and_then(|v| v.get::<u32>().ok());
        let candidate = args.get(2).and_then(|v| v.get::<String>().ok());
        if let (Some(mline), Some(candidate)) = (mline, candidate) {
            let _ = tx.send(Event::IceCandidate { mline, candidate });
        }
        None
    });

    let tx = events.clone();
    webrtcbin.connect_notify(Some("ice-gathering-state"), move |bin, _| {
        let state = bin.property::<WebRTCICEGatheringState>("ice-gathering-state");
        if state == WebRTCICEGatheringState::Complete {
            let _ = tx.send(Event::GatheringComplete);
        }
    });

    let tx = events.clone();
    webrtcbin.connect_notify(Some("connection-state"), move |bin, _| {
        let state = bin.property::<WebRTCPeerConnectionState>("connection-state");
        let _ = tx.send(Event::ConnectionState(state));
    });

    let tx = events.clone();
    webrtcbin.connect_pad_added(move |_, pad| {
        if pad.direction() != gst::PadDirection::Src {
            return;
        }
        // Hold the stream until the task has linked a decoder: an unlinked pad would make
        // the jitterbuffer's task pause for good on not-linked.
        let probe = pad.add_probe(gst::PadProbeType::BLOCK_DOWNSTREAM, |_, _| {
            gst::PadProbeReturn::Ok
        });
        let _ = tx.send(Event::PadAdded {
            pad: pad.clone(),
            probe,
        });
    });

    let tx = events.clone();
    let peer = peer.clone();
    webrtcbin.connect("on-data-channel", false, move |args| {
        if let Some(channel) = args.get(1).and_then(|v| v.get::<WebRTCDataChannel>().ok()) {
            wire_channel(&channel, &tx, &peer);
            let _ = tx.send(Event::DataChannel(channel));
        }
        None
    });

    // on-negotiation-needed is deliberately not connected: the caller offers once its tracks
    // and DataChannel exist, never on a negotiation-needed that fires before that.
}

/// Connects a data channel's signals. Done inside on-data-channel (connecting handlers is not
/// a webrtcbin call) so no message that arrives right after the channel opens is missed.
pub fn wire_channel(
    channel: &WebRTCDataChannel,
    events: &UnboundedSender<Event>,
    peer: &Sender<PeerInput>,
) {
    let tx = events.clone();
    channel.connect_on_open(move |_| {
        let _ = tx.send(Event::ChannelOpen);
    });
    let tx = events.clone();
    channel.connect_on_close(move |_| {
        let _ = tx.send(Event::ChannelClosed);
    });
    // The peer decides how much it sends: a full queue drops the message (never blocks
    // the SCTP thread, never grows without bound).
    let tx = peer.clone();
    channel.connect_on_message_string(move |_, text| {
        if let Some(text) = text {
            let _ = tx.try_send(PeerInput::ChannelText(text.to_string()));
        }
    });
}

/// Bus errors and warnings go to the task; nothing else is needed from the bus.
pub fn watch_bus(pipeline: &gst::Pipeline, events: &UnboundedSender<Event>) {
    let Some(bus) = pipeline.bus() else { return };
    let tx = events.clone();
    bus.set_sync_handler(move |_, msg| {
        match msg.view() {
            gst::MessageView::Error(err) => {
                let source = msg.src().map(|s| s.path_string().to_string());
                let text = format!(
                    "{}: {} ({:?})",
                    source.unwrap_or_default(),
                    err.error(),
                    err.debug()
                );
                let _ = tx.send(Event::PipelineError(text));
            }
            gst::MessageView::Warning(w) => {
                tracing::debug!("pipeline warning: {} ({:?})", w.error(), w.debug());
            }
            gst::MessageView::NewClock(clock) => {
                let name = clock.clock().map(|c| c.name().to_string());
                tracing::debug!(clock = name.as_deref().unwrap_or("none"), "call clock");
            }
            _ => {}
        }
        gst::BusSyncReply::Drop
    });
}

pub enum Direction {
    Sent,
    Received,
}

/// Counts RTP packets and bytes through `pad` into `/metrics`, and packets into the call's
/// own counts. The counters are looked up once here, not per packet.
pub fn count_rtp(
    pad: &gst::Pad,
    kind: MediaKind,
    direction: Direction,
    call: &Arc<super::RtpCounts>,
) {
    let metrics = crate::metrics::get();
    let label = crate::metrics::KindLabel {
        kind: match kind {
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
        },
    };
    let (packets, bytes) = match direction {
        Direction::Sent => (&metrics.rtp_packets_sent, &metrics.rtp_bytes_sent),
        Direction::Received => (&metrics.rtp_packets_received, &metrics.rtp_bytes_received),
    };
    let packets = packets.get_or_create(&label).clone();
    let bytes = bytes.get_or_create(&label).clone();
    let call = Arc::clone(call);
    let call_packets = move |n: u64| {
        let counter = match (&direction, kind) {
            (Direction::Sent, MediaKind::Video) => &call.video_sent,
            (Direction::Sent, MediaKind::Audio) => &call.audio_sent,
            (Direction::Received, MediaKind::Video) => &call.video_received,
            (Direction::Received, MediaKind::Audio) => &call.audio_received,
        };
        counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    };
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        move |_, info| {
            match &info.data {
                Some(gst::PadProbeData::Buffer(buffer)) => {
                    packets.inc();
                    call_packets(1);
                    bytes.inc_by(buffer.size() as u64);
                }
                Some(gst::PadProbeData::BufferList(list)) => {
                    packets.inc_by(list.len() as u64);
                    call_packets(list.len() as u64);
                    bytes.inc_by(list.calculate_size() as u64);
                }
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_block_is_found_by_ssrc_in_a_compound_packet() {
        use rtcp_types::{
            Compound, ReceiverReport as Rr, ReportBlock, RtcpPacketWriter, RtcpPacketWriterExt,
        };
        let block = |ssrc, lost, seq| {
            ReportBlock::builder(ssrc)
                .fraction_lost(lost)
                .extended_sequence_number(seq)
        };
        let rr = Rr::builder(1)
            .add_report_block(block(7, 10, 100))
            .add_report_block(block(9, 64, 200));
        // Reports from the peer's other streams, made just before and after: 0 % over nothing.
        let before = Rr::builder(3).add_report_block(block(9, 0, 200));
        let again = Rr::builder(2).add_report_block(block(9, 0, 200));
        let compound = Compound::builder()
            .add_packet(before)
            .add_packet(rr)
            .add_packet(again);
        let mut data = vec![0; compound.calculate_size().unwrap()];
        compound.write_into(&mut data).unwrap();
        let report = report_on(&data, 9).unwrap();
        assert_eq!((report.fraction_lost, report.highest_seq), (64, 200));
        assert!(report_on(&data, 8).is_none());
        assert!(report_on(b"not rtcp", 9).is_none());
        let latest = LatestReport::default();
        assert!(latest.get().is_none());
        latest.store(report);
        assert_eq!(latest.get(), Some(report));
        // The same moment again, over an interval of nothing (another packet): kept as it was.
        let nothing = ReceiverReport {
            fraction_lost: 0,
            ..report
        };
        latest.store(nothing);
        assert_eq!(latest.get(), Some(report));
        let next = ReceiverReport {
            fraction_lost: 0,
            highest_seq: 300,
        };
        latest.store(next);
        assert_eq!(latest.get(), Some(next));
    }
}
