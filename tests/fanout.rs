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
    assert!(vp8["keyframes_forced"].as_u64().unwrap_or(0) >= 2, "{s}");
}
