//! Speech under loss (issue 26): a far end's speech (espeak-ng, through its ALSA microphone)
//! crosses a call into a door whose ALSA speaker the room records (`tests/peers/room.py
//! --scenario speech`), while nftables drops a share of the UDP packets toward the door at
//! random (the door's ICE address only; the bench runs in its own network namespace). What
//! the door played is scored against what was said (`tests/peers/speech_score.py`: PESQ,
//! wideband, and STOI, from PyPI), with the far end's in-band FEC on and off. The door
//! conceals what stays lost (opusdec's PLC) either way.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use crate::echo::{Door, Ends, run_room};

/// The door's ICE address: the loss applies to packets toward it.
pub(crate) const DOOR_ICE: &str = "127.0.0.3";

#[derive(Debug, Serialize)]
pub struct Row {
    pub loss_percent: u32,
    pub fec: bool,
    /// Whether the door asked for RED (`[receive] audio_red`); `None` for a sender that sends
    /// no copies (a daemon: webrtcbin 1.22 wraps its Opus in RED without any).
    pub red: Option<bool>,
    /// speech_score.py's JSON: pesq_wb, stoi, the lag it found.
    pub score: Value,
}

/// The venv's Python (pesq, pystoi, scipy: `make test` installs them).
fn scorer() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    (
        root.join("target/interop-venv/bin/python"),
        root.join("tests/peers/speech_score.py"),
    )
}

/// Random loss of `percent` of the UDP packets toward the door while this lives.
pub(crate) struct Loss;

impl Loss {
    pub(crate) fn start(percent: u32) -> anyhow::Result<Loss> {
        nft(&["add", "table", "inet", "speechloss"])?;
        nft(&[
            "add",
            "chain",
            "inet",
            "speechloss",
            "input",
            "{ type filter hook input priority 0; }",
        ])?;
        let rule =
            format!("ip daddr {DOOR_ICE} meta l4proto udp numgen random mod 100 < {percent} drop");
        let mut args = vec!["add", "rule", "inet", "speechloss", "input"];
        args.extend(rule.split(' '));
        nft(&args)?;
        Ok(Loss)
    }
}

impl Drop for Loss {
    fn drop(&mut self) {
        let _ = nft(&["delete", "table", "inet", "speechloss"]);
    }
}

fn nft(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("nft")
        .args(args)
        .status()
        .context("nft (Debian package nftables)")?;
    anyhow::ensure!(status.success(), "nft {args:?}");
    Ok(())
}

/// One call at `percent` loss: the score of what the door played.
async fn run_case(dir: &Path, percent: u32, fec: bool) -> anyhow::Result<Value> {
    let label = format!("speech-{percent}pc-fec{}", u8::from(fec));
    let saved = dir.join(&label).join("streams");
    let args: Vec<String> = vec![
        "--scenario".into(),
        "speech".into(),
        "--save".into(),
        saved.display().to_string(),
    ];
    let ends = Ends {
        door: Door::PLAIN,
        far: Door { fec, ..Door::PLAIN },
        door_ice: DOOR_ICE,
    };
    let loss = if percent > 0 {
        Some(Loss::start(percent)?)
    } else {
        None
    };
    run_room(dir, &label, &args, &ends).await?;
    drop(loss);
    let (sent, received) = (saved.join("far_mic.raw"), saved.join("speaker.raw"));
    score(&[sent.as_os_str(), received.as_os_str()], &saved).await
}

/// speech_score.py with `args`: its JSON (`dir`: where a failure's material is).
pub(crate) async fn score(args: &[&std::ffi::OsStr], dir: &Path) -> anyhow::Result<Value> {
    let (python, script) = scorer();
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .args(args)
        .output()
        .await
        .with_context(|| format!("{} (make test installs pesq and pystoi)", python.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "speech_score.py: {}; see {}",
        String::from_utf8_lossy(&out.stderr),
        dir.display()
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// 0, 5, 10 and 20 % loss, FEC on and off (`quick`: 10 % only).
pub async fn measure(dir: &Path, quick: bool) -> anyhow::Result<Vec<Row>> {
    let losses: &[u32] = if quick { &[10] } else { &[0, 5, 10, 20] };
    let mut rows = Vec::new();
    for &loss_percent in losses {
        for fec in [true, false] {
            let score = run_case(dir, loss_percent, fec).await?;
            rows.push(Row {
                loss_percent,
                fec,
                red: None,
                score,
            });
        }
    }
    Ok(rows)
}

/// The table of `rows`, whose first column is headed `what` (`speech, daemon → daemon`).
pub fn markdown(what: &str, rows: &[Row]) -> String {
    let mut out = format!(
        "| {what}: random loss | in-band FEC | RED | PESQ (wideband) | STOI |\n\
         |---|---|---|---|---|\n"
    );
    for r in rows {
        let cell = |k: &str, digits: usize| {
            r.score[k]
                .as_f64()
                .map(|x| format!("{x:.digits$}"))
                .unwrap_or_else(|| "–".into())
        };
        let on = |b: bool| if b { "on" } else { "off" };
        // With RED: how many lost packets its copies rebuilt.
        let red = match (r.red, r.score["audio_recovered"].as_u64()) {
            (Some(true), Some(rebuilt)) => format!("on, {rebuilt} rebuilt"),
            (red, _) => red.map_or("–", on).to_string(),
        };
        out.push_str(&format!(
            "| {} % | {} | {} | {} | {} |\n",
            r.loss_percent,
            on(r.fec),
            red,
            cell("pesq_wb", 2),
            cell("stoi", 2),
        ));
    }
    out
}
