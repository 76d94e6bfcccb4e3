//! Entry points for the coverage-guided fuzz targets (`fuzz/`, cargo-fuzz on nightly) and
//! for the test that replays their corpora on stable (`tests/fuzz_corpus.rs`). Each takes
//! arbitrary bytes and panics only on a real bug: a broken invariant, not a refused input.

use std::sync::Arc;

use crate::media::codecs::{Codec, MediaKind};
use crate::protocol::{FromRelay, PeerId, Signal, ToRelay, escape_for_log};
use crate::relay::registry::{Attachment, RateLimit, Relay};

/// Protocol messages: whatever decodes re-encodes to the same message; log escaping never
/// lets a control character through.
pub fn protocol(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(msg) = ToRelay::decode(text) {
        let again = ToRelay::decode(&msg.encode());
        assert!(
            again.as_ref().is_ok_and(|m| *m == msg),
            "{msg:?} does not survive a round trip: {again:?}"
        );
        if let ToRelay::Signal(signal) = &msg {
            let _ = signal.kind();
            // What the relay passes on reads as the same signal on the other side.
            let passed = FromRelay::decode(&FromRelay::Signal(signal.clone()).encode());
            assert!(
                passed
                    .as_ref()
                    .is_ok_and(|m| *m == FromRelay::Signal(signal.clone())),
                "{signal:?} is not passed on as it came: {passed:?}"
            );
        }
    }
    if let Ok(msg) = FromRelay::decode(text) {
        let again = FromRelay::decode(&msg.encode());
        assert!(
            again.as_ref().is_ok_and(|m| *m == msg),
            "{msg:?} does not survive a round trip: {again:?}"
        );
        let _ = msg.kind();
    }
    let escaped = escape_for_log(text);
    assert!(!escaped.chars().any(char::is_control), "{escaped:?}");
}

/// The relay registry driven by a sequence of operations, one per pair of bytes: register,
/// route a message, disconnect, drain or not drain (a slow reader). Checks that routing never
/// panics, the daemon's own registration is never lost, and the registry holds exactly the
/// connections that registered and are still attached.
pub fn relay(data: &[u8]) {
    const IDS: [&str; 4] = ["door", "alice", "bob", "mallory"];
    let relay = Arc::new(Relay::with_rate(RateLimit {
        per_second: 1e9,
        burst: 1_000_000,
    }));
    let (mut owner, mut owner_inbox) = relay.attach_owner();
    owner.handle(ToRelay::Register {
        id: Some(PeerId::local("door")),
    });
    let mut conns: Vec<(Attachment, tokio::sync::mpsc::Receiver<FromRelay>)> = Vec::new();
    for pair in data.chunks(2).take(512) {
        let (op, arg) = (pair[0], pair.get(1).copied().unwrap_or(0));
        let pick = |n: usize| (arg as usize) % n.max(1);
        match op % 6 {
            0 if conns.len() < 8 => conns.push(relay.attach(if arg % 2 == 0 {
                crate::relay::Access::Full
            } else {
                crate::relay::Access::ViewOnly
            })),
            1 if !conns.is_empty() => {
                let i = pick(conns.len());
                let id = IDS[(arg as usize / 8) % IDS.len()];
                conns[i]
                    .0
                    .handle_text(&format!(r#"{{"type":"register","id":"{id}"}}"#));
            }
            2 if !conns.is_empty() => {
                let i = pick(conns.len());
                let to = IDS[(arg as usize / 8) % IDS.len()];
                let kind = ["call", "hangup", "offer", "candidate"][(arg as usize / 32) % 4];
                let text = match kind {
                    "offer" => {
                        format!(r#"{{"type":"offer","to":"{to}","session":"s","sdp":"v=0"}}"#)
                    }
                    "candidate" => format!(
                        r#"{{"type":"candidate","to":"{to}","session":"s","candidate":""}}"#
                    ),
                    _ => format!(r#"{{"type":"{kind}","to":"{to}","session":"s"}}"#),
                };
                conns[i].0.handle_text(&text);
            }
            3 if !conns.is_empty() => {
                conns.remove(pick(conns.len()));
            }
            4 if !conns.is_empty() => {
                let i = pick(conns.len());
                while conns[i].1.try_recv().is_ok() {}
            }
            5 => {
                // The daemon sends to someone (it reads its own inbox only sometimes).
                let to = IDS[pick(IDS.len())];
                owner.handle(ToRelay::Signal(Signal::hangup(
                    to,
                    "s",
                    crate::protocol::EndReason::Busy,
                )));
                if arg % 2 == 0 {
                    while owner_inbox.try_recv().is_ok() {}
                }
            }
            _ => {}
        }
        assert!(relay.holds("door", owner.conn()), "the daemon lost its id");
        let registered = conns
            .iter()
            .filter(|(a, _)| a.id().is_some_and(|id| relay.holds(id, a.conn())))
            .count();
        // Exactly the daemon and the attached connections that hold their registration.
        assert_eq!(relay.peer_count(), registered + 1);
    }
    let owner_conn = owner.conn();
    drop(conns);
    assert_eq!(relay.peer_count(), 1, "only the daemon is left");
    assert!(relay.holds("door", owner_conn));
}

/// SDP intake: offer text → the answer's codec, payload-type and m-line decisions. Whatever
/// the text, the plan only names m-lines the offer has, payload types it offered, and codecs
/// we have, within the m-line limit.
pub fn sdp(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = gst::init();
    let ours = |kind: MediaKind| match kind {
        MediaKind::Video => vec![Codec::Vp8, Codec::H264],
        MediaKind::Audio => vec![Codec::Opus],
    };
    let Ok((offer, plan)) = crate::session::sdp::plan_answer(text, 16, &ours) else {
        return;
    };
    assert!(offer.medias_len() as usize <= 16);
    for (mline, send) in &plan.mlines {
        let media = offer
            .media(*mline)
            .expect("the plan names an m-line of the offer"); // ok: fuzz invariant
        if let Some((codec, pt)) = send {
            assert!(ours(codec.kind()).contains(codec));
            assert!(
                media.formats().any(|f| f.parse::<u32>().ok() == Some(*pt)),
                "payload type {pt} was not offered on m-line {mline}"
            );
        }
    }
}
