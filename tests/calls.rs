//! Daemon-to-daemon calls: real processes, real webrtcbin, real WebSocket, 127.0.0.1 only.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_through_the_callees_embedded_relay() {
    let _serial = serial().await;
    let profile = light_profile("embedded", "");
    let door = Proc::daemon("door", &profile, &[]);
    let alice = Proc::daemon("alice", &profile, &["--relay", &door.ws_url()]);
    wait_peer(&alice, "door").await;
    let session = place_call(&alice, "door").await;
    assert_call_works(&alice, &door, &session).await;
    // The pipeline count is real: the call's and the shared encoders' while the call runs,
    // 0 once everything is torn down.
    let s = status(&alice).await;
    assert_eq!(
        s["pipelines"], 3,
        "the call and shared VP8 and Opus encoders: {s}"
    );
    assert_eq!(s["encoders"]["video"], 1, "{s}");
    assert_eq!(s["encoders"]["audio"], 1, "{s}");
    assert_eq!(hang_up(&alice, &session).await, 204);
    wait_idle(&alice).await;
    wait_idle(&door).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_through_a_standalone_relay() {
    let _serial = serial().await;
    let profile = light_profile("standalone", "");
    let relay = Proc::relay("relay", "127.0.0.1:0", &[]);
    let door = Proc::daemon("door2", &profile, &["--relay", &relay.ws_url()]);
    let alice = Proc::daemon("alice2", &profile, &["--relay", &relay.ws_url()]);
    wait_peer(&alice, "door2").await;
    // Placed with the thin CLI client this time.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_webrtcd"))
        .args(["call", "door2", "--api", &alice.api("")])
        .output()
        .expect("webrtcd call");
    assert!(out.status.success(), "{out:?}");
    let reply: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let session = reply["session"].as_str().expect("session").to_string();
    assert_call_works(&alice, &door, &session).await;
    // Calling nobody fails with a clear message and a non-zero exit.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_webrtcd"))
        .args(["call", "nobody", "--api", &alice.api("")])
        .output()
        .expect("webrtcd call");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
}

/// The callee's media takes a second to start, so the offer arrives first: it is held, and the
/// answer still sends on both media lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_before_callee_media_is_held_and_answered_sendrecv() {
    let _serial = serial().await;
    let slow = light_profile("slow-callee", "media_start_delay_ms = 1000");
    let fast = light_profile("fast-caller", "");
    let alice = Proc::daemon("alice3", &fast, &[]);
    let tap = Proxy::start(alice.ws_url(), pass).await;
    let door = Proc::daemon("door3", &slow, &["--relay", &tap.url]);
    wait_peer(&alice, "door3").await;
    let session = place_call(&alice, "door3").await;
    assert_call_works(&alice, &door, &session).await;

    assert!(
        door.log_text().contains("offer before media: held"),
        "the offer did not arrive before the callee's media; the test proves nothing"
    );
    let answers = tap.messages(Direction::ToRelay, "answer");
    assert_eq!(answers.len(), 1);
    let sdp = answers[0]["sdp"].as_str().expect("sdp");
    let media_sections: Vec<&str> = sdp
        .split("m=")
        .skip(1)
        .filter(|m| m.starts_with("audio") || m.starts_with("video"))
        .collect();
    assert_eq!(media_sections.len(), 2, "{sdp}");
    for m in media_sections {
        assert!(m.contains("a=sendrecv"), "not sendrecv:\nm={m}");
    }
}

/// The caller's offer is held back on its way to the relay, so its candidates reach the
/// callee first: the callee holds them until the offer, and the call connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_before_the_offer_still_connect() {
    let _serial = serial().await;
    let profile = light_profile("early-candidates", "");
    let door = Proc::daemon("door4", &profile, &[]);
    let late_offers = Proxy::start(door.ws_url(), delay_offers).await;
    let alice = Proc::daemon("alice4", &profile, &["--relay", &late_offers.url]);
    wait_peer(&alice, "door4").await;
    let session = place_call(&alice, "door4").await;
    assert_call_works(&alice, &door, &session).await;

    let order = late_offers.sent_types();
    let offer_at = order.iter().position(|t| t == "offer").expect("offer sent");
    let first_candidate = order
        .iter()
        .position(|t| t == "candidate")
        .expect("candidates sent");
    assert!(
        first_candidate < offer_at,
        "candidates did not overtake the offer: {order:?}"
    );
    // Every candidate we send names its m-line both ways (sdpMid and sdpMLineIndex).
    for c in late_offers.messages(Direction::ToRelay, "candidate") {
        assert!(c["sdpMid"].is_string(), "{c}");
        assert!(c["sdpMLineIndex"].is_u64(), "{c}");
    }
    let end_of_candidates = late_offers
        .messages(Direction::ToRelay, "candidate")
        .iter()
        .any(|c| c["candidate"] == "");
    assert!(end_of_candidates, "the daemon sends end-of-candidates");
}

/// The callee starts its media on `call`, as the protocol says: its shared encoders run
/// while the offer is still on its way (held back 2 s here), so the answer does not wait for
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callee_starts_its_encoders_on_call_before_the_offer() {
    let _serial = serial().await;
    let profile = light_profile("warm-callee", "");
    let door = Proc::daemon("door-warm", &profile, &[]);
    let late_offers = Proxy::start(door.ws_url(), delay_offers_2s).await;
    let alice = Proc::daemon("alice-warm", &profile, &["--relay", &late_offers.url]);
    wait_peer(&alice, "door-warm").await;
    let session = place_call(&alice, "door-warm").await;
    wait_for(
        "the door's encoders running before the offer reached it",
        Duration::from_secs(10),
        || async {
            let s = status(&door).await;
            let running = s["encoders"]["video"] == 1 && s["encoders"]["audio"] == 1;
            // Read after the status: the encoders ran before the offer was let through.
            let offer_held = late_offers.messages(Direction::ToRelay, "offer").is_empty();
            assert!(
                offer_held || running,
                "the offer went through before the encoders ran"
            );
            (running && offer_held).then_some(())
        },
    )
    .await;
    let state = calls(&door).await;
    assert!(
        state
            .iter()
            .any(|c| c["session"] == session.as_str() && c["state"] == "awaiting-offer"),
        "{state:?}"
    );
    assert_call_works(&alice, &door, &session).await;
}

/// A caller whose profile says `datachannel = false` (a camera whose viewers only watch)
/// opens no DataChannel: media flows, nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_without_a_datachannel_sends_media_only() {
    let _serial = serial().await;
    let camera = Proc::daemon(
        "camera-nodc",
        &light_profile("camera-nodc", "datachannel = false"),
        &[],
    );
    let viewer = Proc::daemon(
        "viewer-nodc",
        &light_profile("viewer-nodc", ""),
        &["--relay", &camera.ws_url()],
    );
    wait_peer(&camera, "viewer-nodc").await;
    let session = place_call(&camera, "viewer-nodc").await;
    let seen = wait_call(&viewer, &session, "video", |c| {
        c["video_frames"].as_u64().unwrap_or(0) >= 30
            && c["audio_buffers"].as_u64().unwrap_or(0) > 0
    })
    .await;
    assert_eq!(seen["datachannels_received"], 0, "{seen}");
    let sent = wait_call(&camera, &session, "connected", |c| {
        c["state"] == "connected"
    })
    .await;
    assert_eq!(sent["datachannels_created"], 0, "{sent}");
    assert_eq!(sent["datachannel"], "none", "{sent}");
    // Still connected a few seconds on (no pong is expected, none is missed).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = wait_call(&camera, &session, "still connected", |c| {
        c["state"] == "connected"
    })
    .await;
    assert_eq!(later["ice_restarts"], 0, "{later}");
}

fn delay_offers_2s(v: Value) -> Vec<(Duration, Value)> {
    let delay = if v["type"] == "offer" {
        Duration::from_secs(2)
    } else {
        Duration::ZERO
    };
    vec![(delay, v)]
}

fn delay_offers(v: Value) -> Vec<(Duration, Value)> {
    let delay = if v["type"] == "offer" {
        Duration::from_secs(1)
    } else {
        Duration::ZERO
    };
    vec![(delay, v)]
}

/// Stands in for a peer that never trickles and sends what browsers send: its own candidates
/// never arrive (nor any end-of-candidates); instead the callee gets, for the same session,
/// an unresolvable `.local` (mDNS) candidate, an RTCP (component 2) candidate, copies for
/// other m-lines, and end-of-candidates with a null mid.
fn never_trickle_but_send_oddities(v: Value) -> Vec<(Duration, Value)> {
    if v["type"] != "candidate" {
        return pass(v);
    }
    if v["candidate"] != "" {
        return Vec::new();
    }
    let odd = |candidate: &str, mid: Value, index: Value| {
        let mut c = v.clone();
        c["candidate"] = candidate.into();
        c["sdpMid"] = mid;
        c["sdpMLineIndex"] = index;
        c
    };
    let mdns = "candidate:9 1 udp 2122260223 0b5d2f3e-1c1d-4e3f-9a1b-6c7d8e9f0a1b.local 50123 typ host generation 0";
    let rtcp = "candidate:9 2 udp 2122260222 127.0.0.1 50124 typ host";
    vec![
        (Duration::ZERO, odd(mdns, "0".into(), 0.into())),
        (Duration::ZERO, odd(mdns, "1".into(), 1.into())),
        (Duration::ZERO, odd(rtcp, "0".into(), 0.into())),
        (Duration::ZERO, odd("", Value::Null, Value::Null)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_trickles_still_connects() {
    let _serial = serial().await;
    let profile = light_profile("no-trickle", "");
    let door = Proc::daemon("door9", &profile, &[]);
    let silent = Proxy::start(door.ws_url(), never_trickle_but_send_oddities).await;
    let alice = Proc::daemon("alice9", &profile, &["--relay", &silent.url]);
    wait_peer(&alice, "door9").await;
    let session = place_call(&alice, "door9").await;
    assert_call_works(&alice, &door, &session).await;
    let forwarded = silent.messages(Direction::ToRelay, "candidate");
    assert!(
        forwarded.iter().all(|c| c["candidate"] == ""
            || c["candidate"]
                .as_str()
                .is_some_and(|s| s.contains(".local") || s.contains(" 2 udp"))),
        "none of the caller's real candidates reached the callee: {forwarded:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hangup_from_the_callee_ends_both_sides() {
    let _serial = serial().await;
    let profile = light_profile("callee-hangup", "");
    let door = Proc::daemon("door5", &profile, &[]);
    let alice = Proc::daemon("alice5", &profile, &["--relay", &door.ws_url()]);
    wait_peer(&alice, "door5").await;
    let session = place_call(&alice, "door5").await;
    wait_call(&door, &session, "connected", |c| c["state"] == "connected").await;
    assert_eq!(hang_up(&door, &session).await, 204);
    wait_idle(&door).await;
    wait_idle(&alice).await;
    // Hanging up again is a 404, not a crash.
    assert_eq!(hang_up(&door, &session).await, 404);

    // A following call works.
    let again = place_call(&alice, "door5").await;
    assert_call_works(&alice, &door, &again).await;
}

/// The callee's process dies mid-call: the caller hears `peer-left` from the relay and ends
/// the call; the caller keeps serving, and a new callee can be called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_killed_mid_call_ends_the_call_and_the_next_call_works() {
    let _serial = serial().await;
    let profile = light_profile("killed", "");
    let alice = Proc::daemon("alice6", &profile, &[]);
    let mut door = Proc::daemon("door6", &profile, &["--relay", &alice.ws_url()]);
    wait_peer(&alice, "door6").await;
    let session = place_call(&alice, "door6").await;
    wait_call(&alice, &session, "connected", |c| c["state"] == "connected").await;
    door.kill();
    let killed = std::time::Instant::now();
    wait_for(
        "the killed peer's call to end",
        Duration::from_secs(15),
        || async { calls(&alice).await.is_empty().then_some(()) },
    )
    .await;
    // Its socket closes with it: the relay says peer-left at once.
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    wait_idle(&alice).await;
    assert_eq!(
        status(&alice).await["peers"].as_array().map(Vec::len),
        Some(0)
    );

    let door = Proc::daemon("door6", &profile, &["--relay", &alice.ws_url()]);
    wait_peer(&alice, "door6").await;
    let session = place_call(&alice, "door6").await;
    assert_call_works(&alice, &door, &session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_beyond_max_sessions_is_refused_busy() {
    let _serial = serial().await;
    let single = light_profile("single", "max_sessions = 1");
    let profile = light_profile("busy-callers", "");
    let door = Proc::daemon("door7", &single, &[]);
    let tap = Proxy::start(door.ws_url(), pass).await;
    let alice = Proc::daemon("alice7", &profile, &["--relay", &door.ws_url()]);
    let bob = Proc::daemon("bob7", &profile, &["--relay", &tap.url]);
    wait_peer(&alice, "door7").await;
    wait_peer(&bob, "door7").await;
    let first = place_call(&alice, "door7").await;
    wait_call(&door, &first, "connected", |c| c["state"] == "connected").await;
    let second = place_call(&bob, "door7").await;
    wait_for("bob's call to end", Duration::from_secs(15), || async {
        calls(&bob).await.is_empty().then_some(())
    })
    .await;
    let hangups = tap.messages(Direction::FromRelay, "hangup");
    assert!(
        hangups
            .iter()
            .any(|h| h["session"] == second && h["reason"] == "busy"),
        "{hangups:?}"
    );
    // The first call is untouched.
    assert_eq!(calls(&door).await.len(), 1);
    wait_idle(&bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_re_registers_when_its_relay_comes_back() {
    let _serial = serial().await;
    let profile = light_profile("reregister", "");
    let mut relay = Proc::relay("relay8", "127.0.0.1:0", &[]);
    let addr = relay.addr.clone();
    let door = Proc::daemon("door8", &profile, &["--relay", &relay.ws_url()]);
    wait_for("registration", Duration::from_secs(10), || async {
        (status(&door).await["registered"] == true).then_some(())
    })
    .await;
    relay.kill();
    wait_for(
        "the loss to be noticed",
        Duration::from_secs(10),
        || async { (status(&door).await["registered"] == false).then_some(()) },
    )
    .await;
    let _relay = Proc::relay("relay8b", &addr, &[]);
    wait_for("re-registration", Duration::from_secs(15), || async {
        let s = status(&door).await;
        (s["registered"] == true && s["id"] == "door8").then_some(())
    })
    .await;
}
