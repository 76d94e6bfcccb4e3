//! Real devices without real hardware: ALSA through a userspace configuration the test makes,
//! a camera profile on a machine with no camera, and the device/encoder listing.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// An ALSA configuration of our own: a microphone that records a tone and a speaker that
/// writes what it plays to a file (S16_LE, 48 kHz, stereo), both through ALSA's `file` plugin
/// and paced to real time by `tests/peers/alsa_pace.py` (ALSA's `null` device alone is
/// unpaced: its clock races, and a pipeline on it spins a core). The microphone's writer
/// lives as long as the returned rig.
struct AlsaRig {
    conf: std::path::PathBuf,
    played: std::path::PathBuf,
    mic: std::process::Child,
}

impl Drop for AlsaRig {
    fn drop(&mut self) {
        let _ = self.mic.kill();
        let _ = self.mic.wait();
    }
}

fn alsa_rig(name: &str) -> AlsaRig {
    let dir = artifacts_dir();
    let pacer = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/alsa_pace.py");
    let played = dir.join(format!("{name}-speaker.raw"));
    let _ = std::fs::remove_file(&played);
    let fifo = dir.join(format!("{name}-mic.fifo"));
    let _ = std::fs::remove_file(&fifo);
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    // 48 kHz mono S16: 96 000 bytes/s, for at most as long as a test may run.
    let mic = Command::new("python3")
        .args([pacer, "mic"])
        .arg(&fifo)
        .args(["96000", "300"])
        .spawn()
        .expect("the microphone's pacer");
    let conf = dir.join(format!("{name}-asound.conf"));
    std::fs::write(
        &conf,
        format!(
            "pcm.webrtcd_mic {{\n  type plug\n  slave {{ pcm \"webrtcd_mic_file\"; format S16_LE; rate 48000; channels 1 }}\n}}\n\
             pcm.webrtcd_mic_file {{\n  type file\n  slave.pcm \"webrtcd_null\"\n  file \"/dev/null\"\n  infile \"{}\"\n  format \"raw\"\n}}\n\
             pcm.webrtcd_speaker {{\n  type plug\n  slave {{ pcm \"webrtcd_speaker_file\"; format S16_LE; rate 48000; channels 2 }}\n}}\n\
             pcm.webrtcd_speaker_file {{\n  type file\n  slave.pcm \"webrtcd_null\"\n  file \"|python3 {pacer} speaker {} 192000\"\n  format \"raw\"\n}}\n\
             pcm.webrtcd_null {{\n  type null\n}}\n",
            fifo.display(),
            played.display()
        ),
    )
    .expect("asound.conf");
    AlsaRig { conf, played, mic }
}

/// The door's microphone is ALSA (`alsasrc`), and what the door receives plays on an ALSA
/// speaker (`alsasink`): audio crosses the call through real ALSA on both ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alsa_microphone_and_speaker_through_a_userspace_config() {
    let _serial = serial().await;
    let rig = alsa_rig("alsa");
    let (conf, played) = (&rig.conf, &rig.played);
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
    // The door plays alice's tone into its ALSA speaker. The file alone would also fill with
    // the silence ALSA plays between packets: real audio shows up as non-zero samples.
    let heard = poll(Duration::from_secs(15), || async {
        let loud = loud_samples(played);
        (loud > 4800).then_some(loud)
    })
    .await;
    if heard.is_none() {
        // Seen twice under a busy full suite, never alone: say whether alice's audio reached
        // the door at all, or reached it and was not played.
        let door_calls = calls(&door).await;
        panic!(
            "timed out waiting for alice's tone on the ALSA speaker ({} loud samples); the \
             door's calls: {door_calls:?}",
            loud_samples(played)
        );
    }
    // Stop the daemons (the file plugin would reopen it), then delete it.
    drop(alice);
    drop(door);
    let _ = std::fs::remove_file(played);
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

fn intercom_profile(name: &str) -> std::path::PathBuf {
    // pipelines/intercom.toml with test-friendly sources: a test pattern and a tone instead of
    // a camera and microphone; the speaker is ALSA (a file), the echo canceller on.
    write_profile(
        name,
        &format!(
            "name = \"{name}\"\nmax_sessions = 1\nlinger_ms = 0\n\
             [video]\nsource = \"test\"\nwidth = 320\nheight = 240\ncodecs = [\"vp8\"]\n\
             [audio]\nsource = \"test\"\ncodecs = [\"opus\"]\necho_cancel = true\n\
             [receive]\nvideo = \"count\"\naudio = \"alsa\"\naudio_device = \"webrtcd_speaker\"\n"
        ),
    )
}

/// Samples above silence in the last 4 MiB written to a speaker file (S16LE).
fn loud_samples(file: &std::path::Path) -> usize {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(file) else {
        return 0;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(4 << 20) & !1;
    let mut tail = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut tail).is_err() {
        return 0;
    }
    tail.chunks_exact(2)
        .filter(|s| i16::from_le_bytes([s[0], s[1]]).unsigned_abs() > 1000)
        .count()
}

/// Two intercoms call each other: each sees the other's video and decodes the other's audio
/// into its ALSA speaker (the paced one of [`alsa_rig`]; the ALSA test above checks what a
/// speaker receives), with the echo canceller (AEC3 on the microphone, a copy of the speaker) in the pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_intercoms_see_and_hear_each_other_with_echo_cancellation() {
    let _serial = serial().await;
    let door_rig = alsa_rig("intercom-door");
    let hall_rig = alsa_rig("intercom-hall");
    let (door_conf, hall_conf) = (&door_rig.conf, &hall_rig.conf);
    let door = Proc::daemon_env(
        "intercom-door",
        &intercom_profile("intercom-door"),
        &[],
        &[("ALSA_CONFIG_PATH", door_conf.to_str().expect("path"))],
    );
    let hall = Proc::daemon_env(
        "intercom-hall",
        &intercom_profile("intercom-hall"),
        &["--relay", &door.ws_url()],
        &[("ALSA_CONFIG_PATH", hall_conf.to_str().expect("path"))],
    );
    wait_peer(&hall, "intercom-door").await;
    let session = place_call(&hall, "intercom-door").await;
    assert_call_works(&hall, &door, &session).await;
    for side in [&door, &hall] {
        let s = status(side).await;
        assert_eq!(s["echo_cancellers"]["microphones"], 1, "{s}");
        assert_eq!(s["echo_cancellers"]["speakers"], 1, "{s}");
        let c = wait_call(side, &session, "audio into the speaker", |c| {
            c["audio_buffers"].as_u64().unwrap_or(0) >= 100 && c["state"] == "connected"
        })
        .await;
        assert_eq!(c["state"], "connected", "{c}");
    }
}
