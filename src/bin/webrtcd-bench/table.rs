//! The full run's Markdown: each scenario's own table, then first frames, latency and scaling.

use std::fmt::Write as _;

use crate::scenarios::Spread;
use crate::{
    Report, cameras, cluster, cold_page, echo, first_frame, keyframe, motion, networks, players,
    recording, ring,
};

/// One `| what | median | p95 | range | samples |` row (dashes when nothing was measured).
pub fn spread_row(out: &mut String, what: &str, s: &Option<Spread>) {
    match s {
        Some(s) => {
            let _ = writeln!(
                out,
                "| {what} | {:.0} | {:.0} | {:.0}–{:.0} | {} |",
                s.median_ms, s.p95_ms, s.min_ms, s.max_ms, s.samples
            );
        }
        None => {
            let _ = writeln!(out, "| {what} | – | – | – | 0 |");
        }
    }
}

pub fn markdown(r: &Report) -> String {
    let mut out = String::new();
    // Each scenario's own table, if it ran.
    let tables = [
        r.players.as_ref().map(players::markdown),
        (!r.first_frame.is_empty()).then(|| first_frame::markdown(&r.first_frame)),
        (!r.cold_page.is_empty()).then(|| cold_page::markdown(&r.cold_page)),
        (!r.ring.is_empty()).then(|| ring::markdown(&r.ring)),
        (!r.keyframes.is_empty()).then(|| keyframe::markdown(&r.keyframes)),
        (!r.echo.rooms.is_empty()).then(|| echo::markdown(&r.echo)),
        r.cameras.as_ref().map(cameras::markdown),
        (!r.recording.is_empty()).then(|| recording::markdown(&r.recording)),
        r.motion.as_ref().map(motion::markdown),
        r.routing.as_ref().map(cluster::markdown),
    ];
    for table in tables.into_iter().flatten() {
        out.push_str(&table);
        out.push('\n');
    }
    out.push_str(
        "| first frame | median ms | p95 ms | range ms | calls |\n|---|---|---|---|---|\n",
    );
    spread_row(
        &mut out,
        "call → first decoded frame, daemon → daemon",
        &r.first_frame_daemon,
    );
    spread_row(
        &mut out,
        "call → first decoded frame, daemon → Chromium",
        &r.first_frame_chromium,
    );
    spread_row(
        &mut out,
        "join running stream: call → first decoded frame",
        &r.join.as_ref().map(|j| j.call_to_frame.clone()),
    );
    spread_row(
        &mut out,
        "join running stream: connection up → first decoded frame",
        &r.join.as_ref().map(|j| j.connected_to_frame.clone()),
    );
    out.push_str("\n| capture → decoded frame | p50 ms | p95 ms | max ms | frames |\n|---|---|---|---|---|\n");
    for (codec, l) in &r.latency {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {:.1} | {} |",
            codec.to_uppercase(),
            l.p50_ms,
            l.p95_ms,
            l.max_ms,
            l.frames
        );
    }
    out.push_str(
        "\n| codec | encoder | viewers | up | daemon CPU % | × 1 viewer | RSS MiB | threads | viewers' CPU % | fps min / mean | late frames | daemon sent: fps, packets/s per call min / mean |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for run in &r.scaling {
        let base = run.rows.first().map(|l| l.cpu_pct).unwrap_or(0.0);
        let mode = if run.per_viewer_encoder {
            "per viewer"
        } else {
            "shared"
        };
        let _ = writeln!(
            out,
            "| {} | {mode} | idle | – | – | – | {:.1} | {} | – | – | – | – |",
            run.codec.to_uppercase(),
            run.idle_rss_mib,
            run.idle_threads
        );
        for l in &run.rows {
            let _ = writeln!(
                out,
                "| {} | {mode} | {} | {} | {:.0} | {:.2} | {:.1} | {} | {:.0} | {:.1} / {:.1} | {} | {} |",
                l.codec.to_uppercase(),
                l.viewers,
                l.connected,
                l.cpu_pct,
                if base > 0.0 { l.cpu_pct / base } else { 0.0 },
                l.rss_mib,
                l.threads,
                l.viewers_cpu_pct,
                l.min_fps,
                l.mean_fps,
                l.late_frames,
                l.sent.map_or("–".to_string(), |s| format!(
                    "{}, {:.0} / {:.0}",
                    s.fps.map_or("–".to_string(), |fps| format!("{fps:.1}")),
                    s.min_pps,
                    s.mean_pps
                ))
            );
        }
        if let Some(why) = &run.stopped {
            let _ = writeln!(
                out,
                "| {} | {mode} | {why} | | | | | | | | | |",
                run.codec.to_uppercase()
            );
        }
    }
    if !r.networks.is_empty() || !r.spread.is_empty() {
        out.push('\n');
        out.push_str(&networks::markdown(&r.networks, &r.spread));
    }
    out
}
