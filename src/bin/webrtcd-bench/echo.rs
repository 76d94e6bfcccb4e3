//! The intercom's echo, measured end to end (issue 26): a far end talks to a door station
//! (speech from espeak-ng, into the far daemon's ALSA microphone); the door plays it on its
//! ALSA speaker, whose sound comes back into its ALSA microphone through a simulated room
//! (a delay, −6 dB, a 60 ms reverberant tail, the speaker's clock ±100 ppm off the
//! microphone's); the near end talks alone, then over the far end (double talk); the far end
//! records what the door sends back. `tests/peers/room.py` is the room and the measurer: one
//! process, one clock, all four ALSA streams through the `file` plugin and fifos. Each case
//! runs with the door's echo canceller on and off (the measurement must be able to fail).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;

use crate::echo_alone;
use crate::procs::{Daemon, Killed};

/// A room: its delay (ms) and the speaker's clock against the microphone's (ppm).
pub const CASES: [(u32, i32); 3] = [(20, 100), (80, -100), (200, 100)];

/// The room's script (it needs numpy and espeak-ng: `make test` installs both).
fn room_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/room.py")
}

#[derive(Debug, Default, Serialize)]
pub struct Echo {
    pub rooms: Vec<Row>,
    pub alone: Vec<echo_alone::Row>,
    /// Noise suppression and gain control ([`crate::near_end`]).
    pub near: Vec<crate::near_end::Row>,
    /// Speech under loss ([`crate::speech_loss`]), and from Chromium
    /// ([`crate::speech_chromium`]).
    pub speech: Vec<crate::speech_loss::Row>,
    pub speech_chromium: Vec<crate::speech_loss::Row>,
    /// The same with the browser's own audio processing on.
    pub speech_chromium_processed: Vec<crate::speech_loss::Row>,
}

/// A daemon's microphone settings (the profile's `[audio]` keys).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Door {
    pub echo_cancel: bool,
    pub noise_suppression: bool,
    pub gain_control: bool,
    /// Opus in-band FEC in what it sends.
    pub fec: bool,
}

impl Door {
    /// The profile's defaults: nothing but FEC.
    pub const PLAIN: Door = Door {
        echo_cancel: false,
        noise_suppression: false,
        gain_control: false,
        fec: true,
    };
}

/// A call through a room: the door's and the far end's settings, the door's ICE address.
pub struct Ends<'a> {
    pub door: Door,
    pub far: Door,
    pub door_ice: &'a str,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub delay_ms: u32,
    pub drift_ppm: i32,
    pub echo_cancel: bool,
    /// Everything the room measured (room.py's JSON).
    pub room: Value,
}

/// The four devices of both daemons, in one ALSA configuration: each a `file` plugin on a
/// fifo the room reads or writes (mono microphones, stereo speakers, S16 at 48 kHz).
fn asound_conf(dir: &Path) -> String {
    let mut conf = String::from("pcm.nullpcm { type null }\n");
    for (pcm, channels, mic) in [
        ("door_mic", 1, true),
        ("far_mic", 1, true),
        ("door_speaker", 2, false),
        ("far_speaker", 2, false),
    ] {
        let fifo = dir.join(format!("{}.fifo", pcm.replace('_', "-")));
        let file = if mic {
            format!("file \"/dev/null\"; infile \"{}\"", fifo.display())
        } else {
            format!("file \"{}\"", fifo.display())
        };
        conf.push_str(&format!(
            "pcm.{pcm} {{ type plug; slave {{ pcm \"{pcm}_file\"; format S16_LE; rate 48000; \
             channels {channels} }} }}\n\
             pcm.{pcm}_file {{ type file; slave.pcm \"nullpcm\"; {file}; format \"raw\" }}\n"
        ));
    }
    conf
}

/// A daemon of the room: a small test picture, its ALSA microphone and speaker.
fn profile(name: &str, side: &str, door: Door) -> String {
    format!(
        "name = \"{name}\"\nmax_sessions = 1\n\
         [video]\nsource = \"test\"\nwidth = 160\nheight = 120\ncodecs = [\"vp8\"]\n\
         [audio]\nsource = \"alsa\"\ndevice = \"{side}_mic\"\ncodecs = [\"opus\"]\n\
         echo_cancel = {}\nnoise_suppression = {}\ngain_control = {}\nfec = {}\n\
         [receive]\nvideo = \"count\"\naudio = \"alsa\"\naudio_device = \"{side}_speaker\"\n",
        door.echo_cancel, door.noise_suppression, door.gain_control, door.fec
    )
}

/// One call through one echo room: the room's measures.
async fn run_case(
    dir: &Path,
    delay_ms: u32,
    drift_ppm: i32,
    echo_cancel: bool,
) -> anyhow::Result<Value> {
    let label = format!(
        "echo-{delay_ms}ms-{}",
        if echo_cancel { "aec" } else { "off" }
    );
    let args = [
        "--delay-ms".to_string(),
        delay_ms.to_string(),
        "--drift-ppm".to_string(),
        drift_ppm.to_string(),
        "--reverb".to_string(),
    ];
    let ends = Ends {
        door: Door {
            echo_cancel,
            ..Door::PLAIN
        },
        far: Door::PLAIN,
        door_ice: "127.0.0.1",
    };
    run_room(dir, &label, &args, &ends).await
}

/// One call through a room run with `args` (room.py's) between `ends`, in a directory of its
/// own (`label`): the room's measures.
pub async fn run_room(
    dir: &Path,
    label: &str,
    args: &[String],
    ends: &Ends<'_>,
) -> anyhow::Result<Value> {
    let dir = dir.join(label);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    for fifo in ["door-mic", "far-mic", "door-speaker", "far-speaker"] {
        let made = Command::new("mkfifo")
            .arg(dir.join(format!("{fifo}.fifo")))
            .status()?;
        anyhow::ensure!(made.success(), "mkfifo {fifo}");
    }
    let conf = dir.join("asound.conf");
    std::fs::write(&conf, asound_conf(&dir))?;
    // The room first: the speakers' fifos need their reader before a daemon opens them.
    let mut room = Killed(
        Command::new("/usr/bin/python3")
            .arg(room_script())
            .arg("--dir")
            .arg(&dir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("room.log"))?)
            .spawn()
            .context(
                "the room (/usr/bin/python3 with numpy, and espeak-ng: make test installs them)",
            )?,
    );
    // (A daemon that opens a speaker's fifo before the room does waits for it: no race.)
    let env = [("ALSA_CONFIG_PATH", conf.as_path())];
    let door = Daemon::start_with(
        &dir,
        "echo-door",
        &profile("echo-door", "door", ends.door),
        ends.door_ice,
        &[],
        &env,
    )?;
    let far = Daemon::start_with(
        &dir,
        "echo-far",
        &profile("echo-far", "far", ends.far),
        "127.0.0.1",
        &["--relay", &door.ws_url()],
        &env,
    )?;
    far.wait_peer(&door.name).await?;
    far.call(&door.name).await?;
    // The room runs its schedule (~35 s after the call is heard) and exits.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while room.0.try_wait()?.is_none() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the room did not finish within 90 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(far);
    drop(door);
    let mut text = String::new();
    room.0
        .stdout
        .take()
        .context("the room's output")?
        .read_to_string(&mut text)?;
    let result: Value = serde_json::from_str(text.trim())
        .with_context(|| format!("the room's result: {text}; see {}", dir.display()))?;
    std::fs::write(dir.join("room.json"), text.trim())?;
    if let Some(error) = result["error"].as_str() {
        bail!("the room: {error}; see {}", dir.display());
    }
    Ok(result)
}

/// In `make bench`: everything; in its smoke run (`quick`) nothing (tests/echo.rs runs the
/// rooms' quick set on its own).
pub async fn in_full_run(dir: &Path, quick: bool) -> anyhow::Result<Echo> {
    if quick {
        return Ok(Echo::default());
    }
    measure(dir, false).await
}

/// Every case (or only the 80 ms room, `quick`), the canceller on and off; then (not
/// `quick`) the canceller alone ([`echo_alone`]). All of it is kept in `echo.json`.
pub async fn measure(dir: &Path, quick: bool) -> anyhow::Result<Echo> {
    let cases: &[(u32, i32)] = if quick { &CASES[1..2] } else { &CASES };
    let mut rows = Vec::new();
    for &(delay_ms, drift_ppm) in cases {
        for echo_cancel in [true, false] {
            let room = run_case(dir, delay_ms, drift_ppm, echo_cancel).await?;
            rows.push(Row {
                delay_ms,
                drift_ppm,
                echo_cancel,
                room,
            });
        }
    }
    let speech = crate::speech_loss::measure(dir, quick).await?;
    let (speech_chromium, speech_chromium_processed) =
        crate::speech_chromium::measure(dir, quick).await?;
    let (alone, near) = if quick {
        (Vec::new(), Vec::new())
    } else {
        let near = crate::near_end::measure(dir).await?;
        let dir = dir.to_path_buf();
        let alone = tokio::task::spawn_blocking(move || echo_alone::measure(&dir)).await??;
        (alone, near)
    };
    let echo = Echo {
        rooms: rows,
        alone,
        near,
        speech,
        speech_chromium,
        speech_chromium_processed,
    };
    // Everything the rooms measured (ERLE by half second, underruns, the lag found).
    std::fs::write(dir.join("echo.json"), serde_json::to_string_pretty(&echo)?)?;
    Ok(echo)
}

fn cell(v: &Value, unit: &str) -> String {
    v.as_f64()
        .map(|x| format!("{x:.1}{unit}"))
        .unwrap_or_else(|| "–".into())
}

pub fn markdown(echo: &Echo) -> String {
    let rows = &echo.rooms;
    let mut out = String::from(
        "| echo: room delay, speaker clock | canceller | ERLE dB (far end alone, 4–12 s) | \
         converged after | near end through, alone dB | near-end change in double talk dB | \
         ERLE after double talk dB |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let v = &r.room;
        out.push_str(&format!(
            "| {} ms, {:+} ppm | {} | {} | {} | {} | {} | {} |\n",
            r.delay_ms,
            r.drift_ppm,
            if r.echo_cancel { "on" } else { "off" },
            cell(&v["erle_db"], ""),
            cell(&v["converged_s"], " s"),
            cell(&v["near_end_single_talk_db"], ""),
            cell(&v["double_talk_change_db"], ""),
            cell(&v["erle_after_double_talk_db"], ""),
        ));
    }
    for (what, rows) in [
        ("speech, daemon → daemon", &echo.speech),
        ("speech, Chromium → daemon", &echo.speech_chromium),
        (
            "speech, Chromium → daemon, the browser's audio processing on",
            &echo.speech_chromium_processed,
        ),
    ] {
        if !rows.is_empty() {
            out.push('\n');
            out.push_str(&crate::speech_loss::markdown(what, rows));
        }
    }
    if !echo.near.is_empty() {
        out.push('\n');
        out.push_str(&crate::near_end::markdown(&echo.near));
    }
    if !echo.alone.is_empty() {
        out.push('\n');
        out.push_str(&echo_alone::markdown(&echo.alone));
    }
    out
}
