//! Real devices without real hardware: ALSA through a userspace configuration the test makes,
//! a camera profile on a machine with no camera, and the device/encoder listing.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// An ALSA configuration of our own: a microphone that records silence (`null`) and a
/// speaker that writes what it plays to a file.
fn alsa_config(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = artifacts_dir();
    let played = dir.join(format!("{name}-speaker.raw"));
    let _ = std::fs::remove_file(&played);
    let conf = dir.join(format!("{name}-asound.conf"));
    std::fs::write(
        &conf,
        format!(
            "pcm.webrtcd_mic {{\n  type null\n}}\n\
             pcm.webrtcd_speaker {{\n  type file\n  slave.pcm \"webrtcd_null\"\n  file \"{}\"\n  format \"raw\"\n}}\n\
             pcm.webrtcd_null {{\n  type null\n}}\n",
            played.display()
        ),
    )
    .expect("asound.conf");
    (conf, played)
}

/// The door's microphone is ALSA (`alsasrc`), and what the door receives plays on an ALSA
/// speaker (`alsasink`): audio crosses the call through real ALSA on both ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alsa_microphone_and_speaker_through_a_userspace_config() {
    let _serial = serial().await;
    let (conf, played) = alsa_config("alsa");
    let door_profile = write_profile(
        "alsa-door",
        "name = \"alsa-door\"\n\
         [video]\nsource = \"test\"\nwidth = 320\nheight = 240\ncodecs = [\"vp8\"]\n\
         [audio]\nsource = \"alsa\"\ndevice = \"webrtcd_mic\"\ncodecs = [\"opus\"]\n\
         [receive]\nvideo = \"count\"\naudio = \"alsa\"\naudio_device = \"webrtcd_speaker\"\n",
    );
    let env = [("ALSA_CONFIG_PATH", conf.to_str().expect("path"))];
    let door = Proc::daemon_env("alsa-door", &door_profile, &[], &env);
    let alice = Proc::daemon(
        "alsa-alice",
        &light_profile("alsa-alice", ""),
        &["--relay", &door.ws_url()],
    );
    wait_peer(&alice, "alsa-door").await;
    let session = place_call(&alice, "alsa-door").await;
    // Alice decodes audio captured by alsasrc on the door.
    wait_call(
        &alice,
        &session,
        "audio from the door's ALSA microphone",
        |c| c["audio_buffers"].as_u64().unwrap_or(0) >= 50,
    )
    .await;
    // The door plays alice's audio into its ALSA speaker: the file grows.
    wait_for(
        "the ALSA speaker to play",
        Duration::from_secs(15),
        || async {
            let len = std::fs::metadata(&played).map(|m| m.len()).unwrap_or(0);
            (len > 48_000).then_some(len)
        },
    )
    .await;
}

/// The shipped camera profile on a machine without a camera: a clear error naming the file
/// and the key, and a prompt exit, never a hang.
#[test]
fn camera_profile_without_a_camera_fails_fast_and_clearly() {
    if std::path::Path::new("/dev/video0").exists() {
        eprintln!("skipped: this machine has /dev/video0");
        return;
    }
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_webrtcd"))
        .args(["run", "--listen", "127.0.0.1:0", "--profile"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/pipelines/camera.toml"
        ))
        .args(["--state-dir"])
        .arg(state_dir("no-camera"))
        .output()
        .expect("run webrtcd");
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("camera.toml: video.device: /dev/video0 does not exist"),
        "{stderr}"
    );
}

#[test]
fn devices_lists_encoder_candidates_with_their_state() {
    let out = Command::new(env!("CARGO_BIN_EXE_webrtcd"))
        .arg("devices")
        .output()
        .expect("webrtcd devices");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for section in ["Cameras:", "Microphones:", "Speakers:", "Encoders:"] {
        assert!(text.contains(section), "{text}");
    }
    let line = |enc: &str| {
        text.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(enc))
            .unwrap_or("")
            .to_string()
    };
    assert!(line("x264enc").ends_with("works"), "{text}");
    assert!(line("vp8enc").ends_with("works"), "{text}");
    assert!(line("opusenc").ends_with("works"), "{text}");
    // No hardware encoder on this machine: listed, and said to be missing.
    assert!(line("v4l2h264enc").ends_with("missing"), "{text}");
}
