//! Encode once, fan out: many calls share one capture and one encoder per codec.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn camera_profile(name: &str, top: &str, keyframe_interval: u32) -> std::path::PathBuf {
    write_profile(
        name,
        &format!(
            "name = \"{name}\"\nmax_sessions = 8\nlinger_ms = 500\n{top}\n\
             [video]\nsource = \"test\"\nwidth = 320\nheight = 240\nframerate = 30\n\
             codecs = [\"vp8\"]\nbitrate_kbps = 400\nkeyframe_interval = {keyframe_interval}\n\
             [audio]\nsource = \"test\"\ncodecs = [\"opus\"]\n"
        ),
    )
}

/// One viewer daemon placing `n` calls to the camera; returns the session ids.
async fn viewers_call(viewer: &Proc, camera: &str, n: usize) -> Vec<String> {
    let mut sessions = Vec::new();
    for _ in 0..n {
        sessions.push(place_call(viewer, camera).await);
    }
    sessions
}

async fn all_decode(viewer: &Proc, sessions: &[String]) {
    for s in sessions {
        wait_call(viewer, s, "≥ 30 decoded frames", |c| {
            c["video_frames"].as_u64().unwrap_or(0) >= 30
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_viewers_share_one_encoder() {
    let _serial = serial().await;
    let camera = Proc::daemon("cam-shared", &camera_profile("cam-shared", "", 60), &[]);
    let viewer = Proc::daemon(
        "viewers",
        &light_profile("viewers", "max_sessions = 8"),
        &["--relay", &camera.ws_url()],
    );
    wait_peer(&viewer, "cam-shared").await;
    let sessions = viewers_call(&viewer, "cam-shared", 5).await;
    all_decode(&viewer, &sessions).await;
    let s = status(&camera).await;
    assert_eq!(s["sessions"], 5, "{s}");
    assert_eq!(
        s["encoders"]["video"], 1,
        "one video encoder for five viewers: {s}"
    );
    assert_eq!(s["encoders"]["audio"], 1, "{s}");
    let vp8 = s["shared_streams"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["codec"] == "vp8").cloned())
        .unwrap_or(Value::Null);
    assert_eq!(vp8["subscribers"], 5, "{s}");

    // The last viewer leaving stops the shared encoders (after the linger).
    for session in &sessions {
        hang_up(&viewer, session).await;
    }
    wait_idle(&camera).await;
    assert_eq!(status(&camera).await["encoders"]["video"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_viewer_encoder_encodes_once_per_viewer() {
    let _serial = serial().await;
    let profile = camera_profile("cam-per-viewer", "per_viewer_encoder = true", 60);
    let camera = Proc::daemon("cam-per-viewer", &profile, &[]);
    let viewer = Proc::daemon(
        "viewers2",
        &light_profile("viewers2", "max_sessions = 8"),
        &["--relay", &camera.ws_url()],
    );
    wait_peer(&viewer, "cam-per-viewer").await;
    let sessions = viewers_call(&viewer, "cam-per-viewer", 3).await;
    all_decode(&viewer, &sessions).await;
    let s = status(&camera).await;
    assert_eq!(s["encoders"]["video"], 3, "{s}");
    assert_eq!(s["shared_streams"], Value::Array(vec![]), "{s}");
}

/// The stream's keyframes are 10 s apart; a viewer joining it mid-way still gets a picture
/// within a second of its connection coming up (its arrival forces a keyframe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_viewer_gets_a_keyframe_at_once() {
    let _serial = serial().await;
    let camera = Proc::daemon("cam-join", &camera_profile("cam-join", "", 300), &[]);
    let viewer = Proc::daemon(
        "joiner",
        &light_profile("joiner", "max_sessions = 8"),
        &["--relay", &camera.ws_url()],
    );
    wait_peer(&viewer, "cam-join").await;
    let first = place_call(&viewer, "cam-join").await;
    all_decode(&viewer, std::slice::from_ref(&first)).await;
    // Well inside the 10 s between scheduled keyframes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = place_call(&viewer, "cam-join").await;
    let c = wait_call(&viewer, &second, "a first frame", |c| {
        c["first_frame_ms"].is_number()
    })
    .await;
    let connected = c["connected_ms"].as_f64().expect("connected_ms");
    let first_frame = c["first_frame_ms"].as_f64().expect("first_frame_ms");
    assert!(
        first_frame - connected <= 1000.0,
        "first frame {first_frame:.0} ms, connected {connected:.0} ms: {c}"
    );
    let s = status(&camera).await;
    let vp8 = s["shared_streams"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["codec"] == "vp8").cloned())
        .unwrap_or(Value::Null);
    // Forced for the joiner (the first call started from the encoder's first keyframe,
    // forcing none), or — should a viewer's PLI have forced one just before — taken from that.
    assert!(vp8["keyframes_forced"].as_u64().unwrap_or(0) >= 1, "{s}");
}

/// The shared encoder's thread sends every call's packets itself (no thread per call): a
/// viewer that stops taking anything must cost the others nothing. One viewer freezes mid-call;
/// another freezes right after placing its call, before its connection can come up (webrtcbin
/// holds a call's send path until DTLS has its keys, so a call must not be fed before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_viewers_stall_no_other_viewer() {
    let _serial = serial().await;
    let camera = Proc::daemon("cam-frozen", &camera_profile("cam-frozen", "", 60), &[]);
    let viewer =
        |id: &str| Proc::daemon(id, &light_profile(id, ""), &["--relay", &camera.ws_url()]);
    let (watching, frozen, early) = (viewer("watching"), viewer("frozen"), viewer("early"));
    for v in [&watching, &frozen, &early] {
        wait_peer(v, "cam-frozen").await;
    }
    let watched = place_call(&watching, "cam-frozen").await;
    let mid_call = place_call(&frozen, "cam-frozen").await;
    all_decode(&watching, std::slice::from_ref(&watched)).await;
    all_decode(&frozen, std::slice::from_ref(&mid_call)).await;
    frozen.signal("STOP");
    place_call(&early, "cam-frozen").await;
    let state = wait_for(
        "the early call at the camera",
        Duration::from_secs(10),
        || async {
            let calls = calls(&camera).await;
            let early = calls.iter().find(|c| c["peer"] == "early")?;
            Some(early["state"].clone())
        },
    )
    .await;
    early.signal("STOP");
    eprintln!("the early viewer froze with its call {state}");

    let frames = |c: &Value| c["video_frames"].as_u64().unwrap_or(0);
    let before = frames(&wait_call(&watching, &watched, "the call", |_| true).await);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = frames(&wait_call(&watching, &watched, "the call", |_| true).await);
    let states: Vec<String> = calls(&camera)
        .await
        .iter()
        .map(|c| format!("{} {}", c["peer"], c["state"]))
        .collect();
    eprintln!(
        "watching viewer: {} frames in 4 s beside frozen ones; camera: {states:?}",
        after - before
    );
    frozen.signal("CONT");
    early.signal("CONT");
    // 30 fps: ~120 frames; a stalled fan-out gives next to none.
    assert!(after - before >= 40, "{} frames in 4 s", after - before);
}

/// A camera whose stream ends every second (as an unplugged-and-replugged camera would).
fn flaky_camera(name: &str, restart_limit: u32, frames_per_life: u32) -> std::path::PathBuf {
    write_profile(
        name,
        &format!(
            "name = \"{name}\"\nsource_restart_limit = {restart_limit}\n\
             [video]\nsource = \"launch\"\n\
             launch = \"videotestsrc is-live=true pattern=ball num-buffers={frames_per_life}\"\n\
             width = 320\nheight = 240\nframerate = 30\ncodecs = [\"vp8\"]\nbitrate_kbps = 400\n\
             [audio]\nsource = \"test\"\ncodecs = [\"opus\"]\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_source_is_restarted_and_viewers_see_video_again() {
    let _serial = serial().await;
    let camera = Proc::daemon("cam-flaky", &flaky_camera("cam-flaky", 100, 30), &[]);
    let viewer = Proc::daemon(
        "flaky-viewer",
        &light_profile("flaky-viewer", ""),
        &["--relay", &camera.ws_url()],
    );
    wait_peer(&viewer, "cam-flaky").await;
    let session = place_call(&viewer, "cam-flaky").await;
    // Each life of the source gives 30 frames: 100 decoded frames need several restarts.
    let c = wait_call(&viewer, &session, "video across source restarts", |c| {
        c["video_frames"].as_u64().unwrap_or(0) >= 100
    })
    .await;
    assert_eq!(c["state"], "connected", "{c}");
    let restarts = camera.log_text().matches("shared source restarted").count();
    assert!(restarts >= 2, "restarted {restarts} times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_keeps_failing_ends_its_calls_with_source_error() {
    let _serial = serial().await;
    let camera = Proc::daemon("cam-broken", &flaky_camera("cam-broken", 1, 10), &[]);
    let tap = Proxy::start(camera.ws_url(), pass).await;
    let viewer = Proc::daemon(
        "broken-viewer",
        &light_profile("broken-viewer", ""),
        &["--relay", &tap.url],
    );
    wait_peer(&viewer, "cam-broken").await;
    let session = place_call(&viewer, "cam-broken").await;
    wait_for(
        "the call to end with source-error",
        Duration::from_secs(20),
        || async {
            tap.messages(Direction::FromRelay, "hangup")
                .into_iter()
                .find(|h| h["session"] == session && h["reason"] == "source-error")
        },
    )
    .await;
    wait_idle(&viewer).await;
    // The daemon is still up, and serves a new call (with a fresh source).
    let s = status(&camera).await;
    assert_eq!(s["registered"], true, "{s}");
    let again = place_call(&viewer, "cam-broken").await;
    wait_call(&camera, &again, "a new call", |c| c["state"] == "connected").await;
}
