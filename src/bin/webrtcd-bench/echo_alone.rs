//! The echo canceller alone (`webrtcdsp` + `webrtcechoprobe`, GStreamer 1.22 with
//! webrtc-audio-processing 0.3), in the best conditions it can have: one pipeline, one clock,
//! speech through the probe and the same speech, later by a fixed delay and −6 dB, into the
//! canceller — no device, no network, no drift. What it removes here bounds what it can remove
//! in a door station; how it finds the delay (`delay-agnostic`, or the buffers' running
//! times) is the setting that matters.

use std::path::Path;
use std::process::Command;

use anyhow::Context;
use gst::prelude::*;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Row {
    pub delay_ms: u32,
    /// `delay-agnostic` (the daemon's setting), else lined up by running time — which here
    /// says the echo is not late at all (the queue holds buffers back, their timestamps stay):
    /// the canceller given the delay exactly.
    pub delay_agnostic: bool,
    /// ERLE in 2 s windows, dB.
    pub erle_db: Vec<f64>,
}

pub const CASES: [(u32, bool); 3] = [(20, true), (100, true), (100, false)];

/// 10 ms of samples pulled from an appsink until EOS (S16, interleaved).
fn pull_all(sink: gst_app::AppSink, out: &mut Vec<i16>) {
    while let Ok(sample) = sink.pull_sample() {
        if let Some(map) = sample.buffer().and_then(|b| b.map_readable().ok()) {
            out.extend(
                map.chunks_exact(2)
                    .map(|s| i16::from_le_bytes([s[0], s[1]])),
            );
        }
    }
}

fn power(x: &[i16]) -> f64 {
    x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len().max(1) as f64 + 1e-9
}

fn run(wav: &Path, delay_ms: u32, delay_agnostic: bool) -> anyhow::Result<Row> {
    let desc = format!(
        "filesrc location=\"{}\" ! wavparse ! audioconvert ! audioresample ! \
         audio/x-raw,format=S16LE,rate=48000,channels=2 ! identity sync=true ! tee name=t \
         t. ! queue ! webrtcechoprobe name=alone-probe ! fakesink sync=false \
         t. ! queue max-size-time=0 max-size-buffers=0 max-size-bytes=0 min-threshold-time={} ! \
         volume volume=0.5 ! tee name=m \
         m. ! queue ! webrtcdsp probe=alone-probe delay-agnostic={delay_agnostic} \
         gain-control=false noise-suppression=false ! appsink name=out sync=false \
         m. ! queue ! appsink name=mic sync=false",
        wav.display(),
        u64::from(delay_ms) * 1_000_000
    );
    let pipeline = gst::parse::launch(&desc)
        .with_context(|| desc.clone())?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let sink = |name: &str| {
        pipeline
            .by_name(name)
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .with_context(|| format!("appsink {name}"))
    };
    let (out, mic) = (sink("out")?, sink("mic")?);
    pipeline.set_state(gst::State::Playing)?;
    let collect = |s: gst_app::AppSink| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            pull_all(s, &mut v);
            v
        })
    };
    let (out, mic) = (collect(out), collect(mic));
    let bus = pipeline.bus().context("bus")?;
    let done = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(60),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    pipeline.set_state(gst::State::Null)?;
    match done.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => {}
        Some(gst::MessageView::Error(e)) => anyhow::bail!("{}", e.error()),
        _ => anyhow::bail!("the canceller alone did not finish within 60 s"),
    }
    let out = out.join().map_err(|_| anyhow::anyhow!("out"))?;
    let mic = mic.join().map_err(|_| anyhow::anyhow!("mic"))?;
    let window = 2 * 48_000 * 2;
    let erle_db = mic
        .chunks(window)
        .zip(out.chunks(window))
        .filter(|(m, _)| m.len() == window)
        .map(|(m, o)| (10.0 * (power(m) / power(o)).log10() * 10.0).round() / 10.0)
        .collect();
    Ok(Row {
        delay_ms,
        delay_agnostic,
        erle_db,
    })
}

pub fn measure(dir: &Path) -> anyhow::Result<Vec<Row>> {
    gst::init()?;
    let wav = dir.join("echo-alone-speech.wav");
    let text = "A visitor is waiting at the front door with a parcel for you. Please come down \
                and sign for it, the courier cannot wait much longer. A visitor is waiting at \
                the front door with a parcel for you.";
    let made = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "160", "-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .context("espeak-ng (make test installs it)")?;
    anyhow::ensure!(made.success(), "espeak-ng failed");
    let rows = CASES
        .iter()
        .map(|&(delay_ms, agnostic)| run(&wav, delay_ms, agnostic))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| the canceller alone (one pipeline, a fixed delay) | finds the delay by | \
         ERLE dB, 2 s windows |\n|---|---|---|\n",
    );
    for r in rows {
        let series: Vec<String> = r.erle_db.iter().map(|v| format!("{v:.0}")).collect();
        out.push_str(&format!(
            "| {} ms | {} | {} |\n",
            r.delay_ms,
            if r.delay_agnostic {
                "guessing (`delay-agnostic`, the daemon's setting)"
            } else {
                "running time (here: the delay exactly, by timestamps)"
            },
            series.join(" · ")
        ));
    }
    out
}
