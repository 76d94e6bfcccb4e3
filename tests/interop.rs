//! An independent WebRTC stack against the daemon: aiortc, whose DTLS offers only
//! ECDHE-ECDSA cipher suites (an RSA-certificate daemon fails with "no shared cipher" when it
//! is the DTLS server) and which never trickles (candidates only in its SDP). Both directions.
//!
//! aioice never uses 127.0.0.1, so these run in a private network namespace that also has a
//! dummy interface: every packet stays inside the namespace the test made.

mod common;

use std::time::Duration;

use common::browser::Net;
use common::*;

/// The aiortc peer, with debug logs, bounded at 40 s.
fn run_aiortc(
    daemon: &Proc,
    id: &str,
    call: Option<&str>,
) -> std::thread::JoinHandle<aiortc::PeerRun> {
    aiortc::run(daemon, id, call, &["--seconds", "40"], true)
}

netns_test!(an_ecdsa_only_stack_calls_the_daemon, Net::WithDummyRoute, {
    let daemon = Proc::daemon("interop-callee", &light_profile("interop-callee", ""), &[]);
    let peer = run_aiortc(&daemon, "aiortc", Some("interop-callee"));
    let daemon_call = poll(Duration::from_secs(40), || async {
        calls(&daemon)
            .await
            .into_iter()
            .find(|c| c["pongs_received"].as_u64().unwrap_or(0) >= 1)
    })
    .await;
    let report = aiortc::finished(peer, &daemon).await;
    let daemon_call = daemon_call.expect("the daemon received pongs from aiortc");
    assert_eq!(report["channel_created_locally"], true);
    assert_eq!(daemon_call["role"], "callee");
    assert_eq!(daemon_call["datachannels_created"], 0);
});

netns_test!(the_daemon_calls_an_ecdsa_only_stack, Net::WithDummyRoute, {
    let daemon = Proc::daemon("interop-caller", &light_profile("interop-caller", ""), &[]);
    let peer = run_aiortc(&daemon, "aiortc", None);
    wait_peer(&daemon, "aiortc").await;
    let session = place_call(&daemon, "aiortc").await;
    let pongs = poll(Duration::from_secs(40), || async {
        calls(&daemon)
            .await
            .into_iter()
            .find(|c| c["session"] == session && c["pongs_received"].as_u64().unwrap_or(0) >= 1)
    })
    .await;
    let report = aiortc::finished(peer, &daemon).await;
    assert!(pongs.is_some(), "the daemon received pongs from aiortc");
    assert_eq!(report["channel_received"], true);
});

// A caller of protocol 1.1 (aiortc's peer never asks for an early answer) calls a door that
// rings: the door holds its offer, answers only once accepted, and the call works.
netns_test!(
    a_caller_that_takes_no_early_answer_rings_and_connects_once_accepted,
    Net::WithDummyRoute,
    {
        let profile = light_profile("interop-ring", "answer = \"ring\"");
        let daemon = Proc::daemon("interop-ring", &profile, &[]);
        let peer = run_aiortc(&daemon, "aiortc-old", Some("interop-ring"));
        let ringing = poll(Duration::from_secs(20), || async {
            calls(&daemon)
                .await
                .into_iter()
                .find(|c| c["state"] == "ringing")
        })
        .await
        .expect("the door to ring");
        let session = ringing["session"].as_str().unwrap_or_default().to_string();
        // Its offer is held: no connection while it rings (aiortc would not take an answer in
        // `ringing`, and its ICE would never start).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let held = calls(&daemon)
            .await
            .into_iter()
            .find(|c| c["session"] == session.as_str())
            .expect("still ringing");
        assert_eq!(held["state"], "ringing", "{held}");
        assert_ne!(held["datachannel"], "open", "{held}");
        assert_eq!(
            post_status(&daemon, &format!("/api/calls/{session}/accept")).await,
            204
        );
        let report = aiortc::finished(peer, &daemon).await;
        assert_eq!(report["connected"], true, "{report}");
        assert!(
            report["video_frames"].as_u64().unwrap_or(0) >= 30,
            "{report}"
        );
        let log = daemon.log_text();
        assert!(!log.contains("answered early"), "{log}");
    }
);
