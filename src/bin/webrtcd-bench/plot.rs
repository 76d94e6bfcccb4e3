//! The picture: daemon CPU and RSS against viewers, shared encoder vs one per viewer. Drawn
//! as SVG here, turned into PNG by `rsvg-convert` (Debian package librsvg2-bin).

use std::fmt::Write as _;
use std::path::Path;

use crate::scenarios::Scaling;

const W: f64 = 960.0;
const H: f64 = 420.0;
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"];

struct Panel<'a> {
    x0: f64,
    title: &'a str,
    unit: &'a str,
    value: fn(&crate::scenarios::Load) -> f64,
}

pub fn svg(runs: &[Scaling], title: &str) -> String {
    let panels = [
        Panel {
            x0: 60.0,
            title: "daemon CPU (% of one core)",
            unit: "%",
            value: |l| l.cpu_pct,
        },
        Panel {
            x0: 540.0,
            title: "daemon RSS (MiB)",
            unit: "MiB",
            value: |l| l.rss_mib,
        },
    ];
    let max_viewers = runs
        .iter()
        .flat_map(|r| r.rows.iter().map(|l| l.viewers))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="DejaVu Sans, sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" font-size="15" text-anchor="middle">{title}</text>"#,
        W / 2.0
    );
    let (pw, ph, top) = (380.0, 280.0, 50.0);
    for p in &panels {
        let max_y = runs
            .iter()
            .flat_map(|r| r.rows.iter().map(p.value))
            .fold(1.0f64, f64::max)
            * 1.1;
        let x = |v: f64| p.x0 + v / max_viewers * pw;
        let y = |v: f64| top + ph - v / max_y * ph;
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle">{}</text>
<rect x="{}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>
"##,
            p.x0 + pw / 2.0,
            top - 8.0,
            p.title,
            p.x0
        );
        for i in 0..=4 {
            let v = max_y * f64::from(i) / 4.0;
            let _ = writeln!(
                s,
                r##"<line x1="{x1}" x2="{x2}" y1="{ly}" y2="{ly}" stroke="#eee"/><text x="{tx}" y="{ty}" text-anchor="end">{v:.0}{unit}</text>"##,
                x1 = p.x0,
                x2 = p.x0 + pw,
                ly = y(v),
                tx = p.x0 - 4.0,
                ty = y(v) + 4.0,
                unit = if i == 4 { p.unit } else { "" }
            );
        }
        let mut ticks: Vec<usize> = runs
            .iter()
            .flat_map(|r| r.rows.iter().map(|l| l.viewers))
            .collect();
        ticks.sort_unstable();
        ticks.dedup();
        for v in ticks.into_iter().map(|v| v as f64) {
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle">{v}</text>"#,
                x(v),
                top + ph + 16.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">viewers</text>"#,
            p.x0 + pw / 2.0,
            top + ph + 32.0
        );
        for (i, run) in runs.iter().enumerate() {
            let points: Vec<String> = run
                .rows
                .iter()
                .map(|l| format!("{:.1},{:.1}", x(l.viewers as f64), y((p.value)(l))))
                .collect();
            let colour = COLOURS[i % COLOURS.len()];
            let dash = if run.per_viewer_encoder {
                r#" stroke-dasharray="6,4""#
            } else {
                ""
            };
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>"#,
                points.join(" ")
            );
            for pt in &points {
                let (cx, cy) = pt.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(s, r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{colour}"/>"#);
            }
        }
    }
    for (i, run) in runs.iter().enumerate() {
        let label = format!(
            "{} {} ({})",
            run.codec.to_uppercase(),
            if run.per_viewer_encoder {
                "one encoder per viewer"
            } else {
                "shared encoder"
            },
            run.server
        );
        let (lx, ly) = (
            60.0 + (i % 2) as f64 * 440.0,
            H - 36.0 + (i / 2) as f64 * 18.0,
        );
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{}" stroke-width="2"{}/><text x="{}" y="{}">{label}</text>"#,
            lx + 24.0,
            COLOURS[i % COLOURS.len()],
            if run.per_viewer_encoder {
                r#" stroke-dasharray="6,4""#
            } else {
                ""
            },
            lx + 30.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Writes `path` (PNG) from the SVG, keeping the SVG beside it.
pub fn write_png(svg_text: &str, path: &Path) -> anyhow::Result<()> {
    let svg_path = path.with_extension("svg");
    std::fs::write(&svg_path, svg_text)?;
    let status = std::process::Command::new("rsvg-convert")
        .arg("-o")
        .arg(path)
        .arg(&svg_path)
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        _ => anyhow::bail!(
            "rsvg-convert (Debian package librsvg2-bin) could not draw {}; the SVG is at {}",
            path.display(),
            svg_path.display()
        ),
    }
}
