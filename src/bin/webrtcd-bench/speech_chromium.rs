//! Speech under loss from a browser (issue 26): Chromium, on the daemon's own page in
//! intercom mode, answers the door's call with its microphone saying a file over and over
//! (`tests/peers/speech_wav.py`: the room's far-end speech), while nftables drops a share of
//! the UDP packets toward the door at random (as `speech_loss`). The door plays what it
//! receives on an ALSA speaker that writes to a file at the pace of a sound card
//! (`tests/peers/alsa_pace.py`); that is scored against the file (`speech_score.py --loop`).
//! "FEC off": the door's SDP does not say `useinbandfec=1` (`[audio] fec = false`), so
//! Chromium's Opus encoder adds none. "RED off": the door does not ask for Opus in RED
//! (`[receive] audio_red = false`), so Chromium sends each frame once. The page asks for its
//! microphone without the browser's echo cancellation, noise suppression and gain control (`processing=0`, as a speakerphone
//! that does its own would): with them, Chromium's canceller hears the door's tone played
//! back and cuts the speech in stretches of 0.1–2 s even without loss (PESQ 1.8–2.7 at 0 %,
//! 3.8–4.0 without them), which would hide what the network does. One call with them (0 %,
//! FEC on) is measured apart.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::chromium::Browser;
use crate::procs::{Daemon, poll};
use crate::speech_loss::{DOOR_ICE, Loss, Row, score};

/// How long the browser talks once the call carries its audio.
const TALK: Duration = Duration::from_secs(24);
/// The page's id on the door's relay.
const PAGE: &str = "speech-page";

fn script(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

/// The door: a small test picture and tone of its own; what it receives plays on its ALSA
/// speaker (`door_speaker`, recorded to `speaker.raw`).
fn door_profile(fec: bool, red: bool) -> String {
    format!(
        "name = \"speech-door\"\nmax_sessions = 1\n\
         [video]\nsource = \"test\"\nwidth = 160\nheight = 120\ncodecs = [\"vp8\"]\n\
         [audio]\nsource = \"test\"\ncodecs = [\"opus\"]\nfec = {fec}\n\
         [receive]\nvideo = \"count\"\naudio = \"alsa\"\naudio_device = \"door_speaker\"\n\
         audio_red = {red}\n"
    )
}

fn asound_conf(recorded: &Path) -> String {
    format!(
        "pcm.nullpcm {{ type null }}\n\
         pcm.door_speaker {{ type plug; slave {{ pcm \"door_speaker_file\"; format S16_LE; \
         rate 48000; channels 2 }} }}\n\
         pcm.door_speaker_file {{ type file; slave.pcm \"nullpcm\"; \
         file \"|/usr/bin/python3 {} speaker {} 192000\"; format \"raw\" }}\n",
        script("alsa_pace.py").display(),
        recorded.display()
    )
}

/// The left channel of S16 stereo.
fn left_channel(stereo: &[u8]) -> Vec<u8> {
    stereo
        .chunks_exact(4)
        .flat_map(|frame| [frame[0], frame[1]])
        .collect()
}

/// One call at `percent` loss: the score of what the door played.
async fn run_case(
    dir: &Path,
    said: &Path,
    percent: u32,
    (fec, red): (bool, bool),
    processing: bool,
) -> anyhow::Result<Value> {
    let dir = dir.join(format!(
        "speech-chromium-{percent}pc-fec{}-red{}{}",
        u8::from(fec),
        u8::from(red),
        if processing { "-processed" } else { "" }
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let recorded = dir.join("speaker.raw");
    let conf = dir.join("asound.conf");
    std::fs::write(&conf, asound_conf(&recorded))?;
    let env = [("ALSA_CONFIG_PATH", conf.as_path())];
    let door = Daemon::start_with(
        &dir,
        "speech-door",
        &door_profile(fec, red),
        DOOR_ICE,
        &[],
        &env,
    )?;
    let loss = if percent > 0 {
        Some(Loss::start(percent)?)
    } else {
        None
    };
    let page = format!(
        "http://{}/?id={PAGE}&mode=intercom&processing={}",
        door.addr,
        u8::from(processing)
    );
    let browser = Browser::chromium_saying(&page, &dir, &said.with_extension("wav"))?;
    door.wait_peer(PAGE).await?;
    let session = door.call(PAGE).await?;
    poll(Duration::from_secs(30), || async {
        let calls = door.calls().await.ok()?;
        calls
            .iter()
            .find(|c| c["session"] == session.as_str())
            .filter(|c| c["audio_buffers"].as_u64().unwrap_or(0) > 0)
            .map(|_| ())
    })
    .await
    .context("the door never heard the page")?;
    tokio::time::sleep(TALK).await;
    // What the door rebuilt from Chromium's redundant copies (RED), read before it hangs up.
    let rebuilt = door.calls().await.ok().and_then(|calls| {
        calls
            .iter()
            .find(|c| c["session"] == session.as_str())
            .and_then(|c| c["receive"]["audio_recovered"].as_u64())
    });
    let _ = door.hang_up(&session).await;
    drop(browser);
    drop(loss);
    drop(door);
    // The speaker's pacer ends with the daemon's pipe; what it wrote is complete by then.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mono = dir.join("speaker-mono.raw");
    std::fs::write(&mono, left_channel(&std::fs::read(&recorded)?))?;
    let said = said.with_extension("raw");
    let mut scored = score(
        &["--loop".as_ref(), said.as_os_str(), mono.as_os_str()],
        &dir,
    )
    .await?;
    if let (Some(object), Some(rebuilt)) = (scored.as_object_mut(), rebuilt) {
        object.insert("audio_recovered".into(), rebuilt.into());
    }
    Ok(scored)
}

/// 0, 5, 10 and 20 % loss (`quick`: 10 % only), with RED and FEC (the door's defaults), FEC
/// alone and neither, the page's microphone without the browser's processing; then (not
/// `quick`) no loss, RED and FEC, with it.
pub async fn measure(dir: &Path, quick: bool) -> anyhow::Result<(Vec<Row>, Vec<Row>)> {
    let said = dir.join("speech-said");
    let made = Command::new("/usr/bin/python3")
        .arg(script("speech_wav.py"))
        .arg(&said)
        .arg("20")
        .status()
        .context("speech_wav.py (/usr/bin/python3 with numpy, and espeak-ng)")?;
    anyhow::ensure!(made.success(), "speech_wav.py failed");
    let losses: &[u32] = if quick { &[10] } else { &[0, 5, 10, 20] };
    let mut rows = Vec::new();
    for &loss_percent in losses {
        for (fec, red) in [(true, true), (true, false), (false, false)] {
            let score = run_case(dir, &said, loss_percent, (fec, red), false).await?;
            rows.push(Row {
                loss_percent,
                fec,
                red: Some(red),
                score,
            });
        }
    }
    let mut processed = Vec::new();
    if !quick {
        let score = run_case(dir, &said, 0, (true, true), true).await?;
        processed.push(Row {
            loss_percent: 0,
            fec: true,
            red: Some(true),
            score,
        });
    }
    Ok((rows, processed))
}
