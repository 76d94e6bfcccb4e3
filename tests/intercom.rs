//! The intercom: calls that ring until someone accepts or rejects them (`answer = "ring"`),
//! between real daemons over a real relay, 127.0.0.1 only.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A ringing door station (light profile, one call at a time) with `top` added.
fn ringing_profile(name: &str, top: &str) -> std::path::PathBuf {
    light_profile(name, &format!("answer = \"ring\"\nmax_sessions = 1\n{top}"))
}

fn frames(call: &Value) -> u64 {
    call["video_frames"].as_u64().unwrap_or(0)
}

/// The call `session` on `p`, if it is still there.
async fn find_call(p: &Proc, session: &str) -> Option<Value> {
    calls(p).await.into_iter().find(|c| c["session"] == session)
}

/// Polls (every 10 ms, at most `within`) until `p`'s side of `session` has decoded a video
/// frame.
async fn time_to_first_frame(p: &Proc, session: &str, within: Duration) {
    let started = Instant::now();
    while started.elapsed() < within {
        if find_call(p, session).await.is_some_and(|c| frames(&c) > 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no video frame on {} within {within:?}", p.name);
}

/// The call rings on both sides, the callee's encoders start while it rings, nothing flows
/// until someone accepts; then media and the DataChannel work as in any call. Accept → first
/// frame is compared with a cold call to a door that answers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ringing_call_connects_only_once_accepted_and_its_media_is_warm() {
    let _serial = serial().await;
    let door = Proc::daemon("ring-door", &ringing_profile("ring-door", ""), &[]);
    let caller_profile = light_profile("ring-caller", "");
    let alice = Proc::daemon("ring-alice", &caller_profile, &["--relay", &door.ws_url()]);
    wait_peer(&alice, "ring-door").await;
    let session = place_call(&alice, "ring-door").await;
    wait_call(&door, &session, "ringing", |c| c["state"] == "ringing").await;
    wait_call(&alice, &session, "ringing (caller)", |c| {
        c["state"] == "ringing"
    })
    .await;
    // Warm while ringing: the door's shared video and audio encoders run, with no viewer.
    wait_for(
        "the ringing door's encoders to run",
        Duration::from_secs(10),
        || async {
            let s = status(&door).await;
            (s["encoders"]["video"] == 1 && s["encoders"]["audio"] == 1).then_some(())
        },
    )
    .await;
    // Nothing is answered, so nothing flows, however long it rings.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ringing = find_call(&alice, &session).await.expect("still ringing");
    assert_eq!(frames(&ringing), 0, "video before accept: {ringing}");
    assert_eq!(ringing["state"], "ringing", "{ringing}");
    // Decisions are for ringing callees only.
    assert_eq!(
        post_status(&alice, &format!("/api/calls/{session}/accept")).await,
        409,
        "the caller has nothing to accept"
    );
    assert_eq!(post_status(&door, "/api/calls/nosuch/accept").await, 404);

    let started = Instant::now();
    assert_eq!(
        post_status(&door, &format!("/api/calls/{session}/accept")).await,
        204
    );
    time_to_first_frame(&alice, &session, Duration::from_secs(20)).await;
    let accepted = started.elapsed();
    assert_call_works(&alice, &door, &session).await;
    assert_eq!(
        post_status(&door, &format!("/api/calls/{session}/accept")).await,
        409,
        "a connected call is not ringing"
    );
    assert_eq!(hang_up(&alice, &session).await, 204);
    wait_idle(&alice).await;
    wait_idle(&door).await;

    // A cold call to a door that answers at once (its encoders not running): call → first
    // frame, to compare.
    let cold_door = Proc::daemon(
        "cold-door",
        &light_profile("cold-door", ""),
        &["--relay", &door.ws_url()],
    );
    wait_peer(&alice, "cold-door").await;
    let started = Instant::now();
    let cold_session = place_call(&alice, "cold-door").await;
    time_to_first_frame(&alice, &cold_session, Duration::from_secs(20)).await;
    let cold = started.elapsed();
    eprintln!(
        "first frame: accept → {} ms (encoders warmed while ringing); cold call → {} ms",
        accepted.as_millis(),
        cold.as_millis()
    );
    let _ = (door, cold_door);
}

/// Every way a ringing call ends without being accepted, with the reason each side records,
/// and `busy` for a second caller while one rings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ringing_calls_end_rejected_unanswered_or_cancelled_and_others_hear_busy() {
    let _serial = serial().await;
    let door = Proc::daemon(
        "ring-door2",
        &ringing_profile("ring-door2", "ring_timeout_secs = 2"),
        &[],
    );
    let caller_profile = light_profile("ring-callers", "");
    let alice = Proc::daemon("ring-alice2", &caller_profile, &["--relay", &door.ws_url()]);
    let bob = Proc::daemon("ring-bob2", &caller_profile, &["--relay", &door.ws_url()]);
    wait_peer(&alice, "ring-door2").await;
    wait_peer(&bob, "ring-door2").await;

    // Rejected: both sides end with `rejected`.
    let session = place_call(&alice, "ring-door2").await;
    wait_call(&door, &session, "ringing", |c| c["state"] == "ringing").await;
    // While it rings, a second caller is told `busy` (max_sessions = 1).
    let second = place_call(&bob, "ring-door2").await;
    wait_for("bob's call to end", Duration::from_secs(15), || async {
        find_call(&bob, &second).await.is_none().then_some(())
    })
    .await;
    assert_eq!(ended_with(&bob, "busy").await, 1);
    assert_eq!(
        post_status(&door, &format!("/api/calls/{session}/reject")).await,
        204
    );
    wait_idle(&door).await;
    wait_idle(&alice).await;
    assert_eq!(ended_with(&door, "rejected").await, 1);
    assert_eq!(ended_with(&alice, "rejected").await, 1);

    // Nobody decides within ring_timeout_secs: `no-answer` on both sides.
    let started = Instant::now();
    let session = place_call(&alice, "ring-door2").await;
    wait_call(&door, &session, "ringing", |c| c["state"] == "ringing").await;
    wait_idle(&door).await;
    wait_idle(&alice).await;
    let rang = started.elapsed();
    assert!(rang >= Duration::from_secs(2), "ended after {rang:?}");
    assert_eq!(ended_with(&door, "no-answer").await, 1);
    assert_eq!(ended_with(&alice, "no-answer").await, 1);

    // The caller hangs up while it rings: `cancelled` on both sides.
    let session = place_call(&alice, "ring-door2").await;
    wait_call(&alice, &session, "ringing (caller)", |c| {
        c["state"] == "ringing"
    })
    .await;
    assert_eq!(hang_up(&alice, &session).await, 204);
    wait_idle(&door).await;
    wait_idle(&alice).await;
    assert_eq!(ended_with(&door, "cancelled").await, 1);
    assert_eq!(ended_with(&alice, "cancelled").await, 1);
    let _ = bob;
}

/// `answer = "reject"` (do not disturb): every call is refused with `rejected`, and no
/// session or pipeline is made for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_door_that_rejects_every_call_makes_nothing_for_it() {
    let _serial = serial().await;
    let door = Proc::daemon(
        "dnd-door",
        &light_profile("dnd-door", "answer = \"reject\""),
        &[],
    );
    let alice = Proc::daemon(
        "dnd-alice",
        &light_profile("dnd-alice", ""),
        &["--relay", &door.ws_url()],
    );
    wait_peer(&alice, "dnd-door").await;
    let session = place_call(&alice, "dnd-door").await;
    wait_for(
        "the refused call to end",
        Duration::from_secs(15),
        || async { find_call(&alice, &session).await.is_none().then_some(()) },
    )
    .await;
    assert_eq!(ended_with(&alice, "rejected").await, 1);
    let s = status(&door).await;
    assert_eq!(s["pipelines"], 0, "{s}");
    assert_eq!(
        ended_with(&door, "rejected").await,
        0,
        "no session was started"
    );
}
