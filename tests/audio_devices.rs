//! A door's microphone that goes away mid-call and comes back: the call stays up with its
//! video, says so (`/api/calls`, `/api/events`, `/metrics`), and gets its audio back without
//! a new call.
//!
//! The microphone is a PulseAudio source reached through ALSA's `pulse` plugin, as on a
//! kiosk with a sound server; "unplugging" it unloads the source. PulseAudio's plugin then
//! stalls the read without an error (a kernel device says `ENODEV`, which GStreamer turns
//! into an error): the harder case, a device that just goes quiet.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A private PulseAudio server: its own socket, no D-Bus, a 440 Hz source named `mic` and,
/// once plugged in, a speaker (a null sink) named `speaker` whose monitor says what it plays.
struct Pulse {
    server: Child,
    socket: PathBuf,
    conf: PathBuf,
}

impl Pulse {
    fn start(name: &str) -> Pulse {
        let dir = artifacts_dir().join(format!("{name}-pulse"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("pulse dir");
        let socket = dir.join("native");
        let log = std::fs::File::create(dir.join("pulse.log")).expect("pulse log");
        let server = Command::new("pulseaudio")
            .args([
                "-n",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
                "--disable-shm=yes",
                "--log-target=stderr",
                "-L",
            ])
            .arg(format!(
                "module-native-protocol-unix socket={} auth-anonymous=1",
                socket.display()
            ))
            .env("HOME", &dir)
            .env("XDG_RUNTIME_DIR", &dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("pulseaudio (scripts/install-deps.sh test installs it)");
        let conf = dir.join("asound.conf");
        std::fs::write(
            &conf,
            format!(
                "pcm.webrtcd_mic {{\n  type pulse\n  server \"unix:{0}\"\n  device \"mic\"\n}}\n\
                 pcm.webrtcd_speaker {{\n  type pulse\n  server \"unix:{0}\"\n  device \"speaker\"\n}}\n",
                socket.display()
            ),
        )
        .expect("asound.conf");
        let pulse = Pulse {
            server,
            socket,
            conf,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while pulse.pactl(&["info"]).is_none() {
            assert!(Instant::now() < deadline, "pulseaudio did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        pulse.plug_mic();
        pulse
    }

    /// `pactl` against this server; its output if it worked.
    fn pactl(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("pactl")
            .args(args)
            .env("PULSE_SERVER", format!("unix:{}", self.socket.display()))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn plug_mic(&self) {
        self.pactl(&[
            "load-module",
            "module-sine-source",
            "source_name=mic",
            "frequency=440",
            "rate=48000",
        ])
        .expect("load the microphone");
    }

    fn unplug_mic(&self) {
        self.pactl(&["unload-module", "module-sine-source"])
            .expect("unload the microphone");
    }

    fn plug_speaker(&self) {
        self.pactl(&[
            "load-module",
            "module-null-sink",
            "sink_name=speaker",
            "rate=48000",
        ])
        .expect("load the speaker");
    }

    /// The share of loud samples (|x| > 1000 of 32768) in what the speaker plays for about a
    /// second (its monitor, recorded with parec).
    fn speaker_loudness(&self) -> f64 {
        let out = Command::new("timeout")
            .args(["1.5", "parec", "-d", "speaker.monitor", "--raw"])
            .args(["--format=s16le", "--rate=48000", "--channels=1"])
            .env("PULSE_SERVER", format!("unix:{}", self.socket.display()))
            .output()
            .expect("parec");
        let samples: Vec<i16> = out
            .stdout
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        let loud = samples.iter().filter(|s| s.unsigned_abs() > 1000).count();
        loud as f64 / samples.len().max(1) as f64
    }
}

impl Drop for Pulse {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// `GET /api/events` read into a file as it streams (curl), for as long as this lives.
struct EventLog {
    curl: Child,
    file: PathBuf,
}

impl EventLog {
    fn follow(p: &Proc, name: &str) -> EventLog {
        let file = artifacts_dir().join(format!("{name}-events.txt"));
        let out = std::fs::File::create(&file).expect("events file");
        let curl = Command::new("curl")
            .args(["-sN", "--max-time", "120", &p.api("/api/events")])
            .stdout(out)
            .spawn()
            .expect("curl");
        EventLog { curl, file }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.file).unwrap_or_default()
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        let _ = self.curl.kill();
        let _ = self.curl.wait();
    }
}

fn the_call(calls: &[serde_json::Value]) -> Option<serde_json::Value> {
    calls.first().cloned()
}

/// A door on `pulse`'s microphone (its `[receive]` section as given), following its events,
/// and alice calling it: (door, its events, alice, the session).
async fn call_a_pulse_door(
    name: &str,
    pulse: &Pulse,
    receive: &str,
) -> (Proc, EventLog, Proc, String) {
    let door_name = format!("{name}-door");
    let door_profile = write_profile(
        &door_name,
        &format!(
            "name = \"{door_name}\"\n\
             [video]\nsource = \"test\"\nwidth = 320\nheight = 240\ncodecs = [\"vp8\"]\n\
             [audio]\nsource = \"alsa\"\ndevice = \"webrtcd_mic\"\ncodecs = [\"opus\"]\n\
             [receive]\n{receive}\n"
        ),
    );
    let env = [("ALSA_CONFIG_PATH", pulse.conf.to_str().expect("path"))];
    let door = Proc::daemon_env(&door_name, &door_profile, &[], &env);
    let events = EventLog::follow(&door, &door_name);
    let alice_name = format!("{name}-alice");
    let alice = Proc::daemon(
        &alice_name,
        &light_profile(&alice_name, ""),
        &["--relay", &door.ws_url()],
    );
    wait_peer(&alice, &door_name).await;
    let session = place_call(&alice, &door_name).await;
    (door, events, alice, session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_microphone_unplugged_mid_call_comes_back_without_a_new_call() {
    let _serial = serial().await;
    let pulse = Pulse::start("unplug");
    let (door, events, alice, session) =
        call_a_pulse_door("unplug", &pulse, "video = \"count\"\naudio = \"count\"").await;
    wait_call(&alice, &session, "audio from the door's microphone", |c| {
        c["audio_buffers"].as_u64().unwrap_or(0) >= 50
    })
    .await;
    let door_call = the_call(&calls(&door).await).expect("the door's call");
    assert_eq!(door_call["devices"]["microphone"], "ok", "{door_call}");

    pulse.unplug_mic();
    let lost = wait_for(
        "the door to say its microphone is lost",
        Duration::from_secs(15),
        || async { the_call(&calls(&door).await).filter(|c| c["devices"]["microphone"] == "lost") },
    )
    .await;
    assert_eq!(lost["state"], "connected", "{lost}");
    assert_eq!(
        metric(&door, "webrtcd_devices_down", "device=\"microphone\"").await,
        1
    );
    assert!(metric(&door, "webrtcd_devices_lost_total", "device=\"microphone\"").await >= 1);
    // The call goes on with its video while the microphone is away.
    let before = wait_call(&alice, &session, "the call", |_| true).await;
    let frames = before["video_frames"].as_u64().unwrap_or(0);
    wait_call(
        &alice,
        &session,
        "video while the microphone is away",
        |c| c["video_frames"].as_u64().unwrap_or(0) >= frames + 30,
    )
    .await;

    pulse.plug_mic();
    let heard = wait_call(&alice, &session, "the call", |_| true).await["audio_buffers"]
        .as_u64()
        .unwrap_or(0);
    let c = wait_call(&alice, &session, "audio again on the same call", |c| {
        c["audio_buffers"].as_u64().unwrap_or(0) >= heard + 100
    })
    .await;
    assert_eq!(c["state"], "connected", "{c}");
    let back = wait_for(
        "the door to say its microphone is back",
        Duration::from_secs(10),
        || async { the_call(&calls(&door).await).filter(|c| c["devices"]["microphone"] == "ok") },
    )
    .await;
    assert_eq!(back["session"].as_str(), Some(session.as_str()), "{back}");
    assert_eq!(
        metric(&door, "webrtcd_devices_down", "device=\"microphone\"").await,
        0
    );
    let text = wait_for("the device events", Duration::from_secs(10), || async {
        let text = events.text();
        text.contains("event: device-back").then_some(text)
    })
    .await;
    for name in ["device-lost", "device-back"] {
        assert!(
            text.contains(&format!("event: {name}\ndata: {{\"event\":\"{name}\""))
                && text.contains("\"device\":\"microphone\""),
            "{name} not streamed: {text}"
        );
    }
}

/// A microphone that errors again and again (its stream ends every second, as a flaky USB
/// device's would), past the restart limit that ends a camera's calls: the call stays up,
/// and audio keeps coming between the failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_microphone_that_keeps_failing_never_ends_the_call() {
    let _serial = serial().await;
    let door_profile = write_profile(
        "flaky-mic-door",
        "name = \"flaky-mic-door\"\nsource_restart_limit = 1\n\
         [video]\nsource = \"test\"\nwidth = 320\nheight = 240\ncodecs = [\"vp8\"]\n\
         [audio]\nsource = \"launch\"\n\
         launch = \"audiotestsrc is-live=true num-buffers=50 samplesperbuffer=960\"\n\
         codecs = [\"opus\"]\n",
    );
    let door = Proc::daemon("flaky-mic-door", &door_profile, &[]);
    let alice = Proc::daemon(
        "flaky-mic-alice",
        &light_profile("flaky-mic-alice", ""),
        &["--relay", &door.ws_url()],
    );
    wait_peer(&alice, "flaky-mic-door").await;
    let session = place_call(&alice, "flaky-mic-door").await;
    // Each life of the microphone gives one second; 3 s of audio needs several of them.
    let c = wait_call(&alice, &session, "audio across microphone restarts", |c| {
        c["audio_buffers"].as_u64().unwrap_or(0) >= 150
    })
    .await;
    assert_eq!(c["state"], "connected", "{c}");
    let restarts = door.log_text().matches("shared source restarted").count();
    assert!(restarts >= 2, "restarted {restarts} times");
    assert!(
        !door.log_text().contains("shared source given up"),
        "the microphone was given up on"
    );
}

/// A door whose speaker is missing when a call comes (a USB speakerphone not plugged in):
/// the call goes up all the same — video, the door's microphone — says its speaker is lost,
/// and plays the caller's audio once the speaker is plugged in, on the same call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_speaker_ends_nothing_and_plays_once_plugged_in() {
    let _serial = serial().await;
    let pulse = Pulse::start("speakerless");
    let (door, events, alice, session) = call_a_pulse_door(
        "speakerless",
        &pulse,
        "video = \"count\"\naudio = \"alsa\"\naudio_device = \"webrtcd_speaker\"",
    )
    .await;
    let lost = wait_for(
        "the door to say its speaker is lost",
        Duration::from_secs(15),
        || async { the_call(&calls(&door).await).filter(|c| c["devices"]["speaker"] == "lost") },
    )
    .await;
    assert_eq!(lost["state"], "connected", "{lost}");
    // Everything else works: the door's picture and microphone reach alice.
    wait_call(&alice, &session, "video and audio from the door", |c| {
        c["video_frames"].as_u64().unwrap_or(0) >= 30
            && c["audio_buffers"].as_u64().unwrap_or(0) >= 50
    })
    .await;
    assert_eq!(
        metric(&door, "webrtcd_devices_down", "device=\"speaker\"").await,
        1
    );

    pulse.plug_speaker();
    let back = wait_for(
        "the door to say its speaker is back",
        Duration::from_secs(15),
        || async { the_call(&calls(&door).await).filter(|c| c["devices"]["speaker"] == "ok") },
    )
    .await;
    assert_eq!(back["session"].as_str(), Some(session.as_str()), "{back}");
    // Alice's tone (440 Hz at 0.2) plays on it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut loudness = pulse.speaker_loudness();
    while loudness < 0.3 && Instant::now() < deadline {
        loudness = pulse.speaker_loudness();
    }
    assert!(
        loudness >= 0.3,
        "the speaker plays {loudness:.2} loud samples"
    );
    assert_eq!(
        metric(&door, "webrtcd_devices_down", "device=\"speaker\"").await,
        0
    );
    let text = wait_for("the device events", Duration::from_secs(10), || async {
        let text = events.text();
        text.contains("event: device-back").then_some(text)
    })
    .await;
    assert!(
        text.contains("\"event\":\"device-lost\"") && text.contains("\"device\":\"speaker\""),
        "{text}"
    );
}
