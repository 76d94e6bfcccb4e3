//! The door's noise suppression and gain control, measured as the echo is (issue 26): the
//! same room and calls (`tests/peers/room.py --scenario near`), but the far end silent and
//! the near end talking in the door's room — over a fan's noise at 0 and 10 dB SNR (noise
//! suppression on and off), or quietly and loudly with no noise (gain control on and off).
//! The far end records what the door sends. The echo canceller is on throughout (noise
//! suppression and gain control come with it).

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::echo::{Door, Ends, run_room};

#[derive(Debug, Serialize)]
pub struct Row {
    /// The fan's noise below the near end's speech (dB), if any.
    pub snr_db: Option<f64>,
    /// The near end's speech level (dBFS, active speech).
    pub near_dbfs: f64,
    pub door: Door,
    /// Everything the room measured.
    pub room: Value,
}

/// Noise at 0 and 10 dB SNR, suppression on and off; a quiet (−40 dBFS) and a loud
/// (−20 dBFS) near end, gain control on and off.
const CASES: [(Option<f64>, f64, bool, bool); 8] = [
    (Some(0.0), -26.0, true, false),
    (Some(0.0), -26.0, false, false),
    (Some(10.0), -26.0, true, false),
    (Some(10.0), -26.0, false, false),
    (None, -40.0, false, true),
    (None, -40.0, false, false),
    (None, -20.0, false, true),
    (None, -20.0, false, false),
];

pub async fn measure(dir: &Path) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (snr_db, near_dbfs, noise_suppression, gain_control) in CASES {
        let door = Door {
            echo_cancel: true,
            noise_suppression,
            gain_control,
            fec: true,
        };
        let mut args: Vec<String> = ["--scenario", "near", "--delay-ms", "80", "--reverb"]
            .map(String::from)
            .to_vec();
        args.extend(["--near-dbfs".to_string(), near_dbfs.to_string()]);
        if let Some(snr) = snr_db {
            args.extend(["--snr-db".to_string(), snr.to_string()]);
        }
        let label = format!(
            "near-{}snr-{}dbfs-ns{}-agc{}",
            snr_db.map(|s| s.to_string()).unwrap_or_else(|| "no".into()),
            -near_dbfs,
            u8::from(noise_suppression),
            u8::from(gain_control)
        );
        let ends = Ends {
            door,
            far: Door::PLAIN,
            door_ice: "127.0.0.1",
        };
        let room = run_room(dir, &label, &args, &ends).await?;
        rows.push(Row {
            snr_db,
            near_dbfs,
            door,
            room,
        });
    }
    Ok(rows)
}

fn cell(v: &Value) -> String {
    v.as_f64()
        .map(|x| format!("{x:.1}"))
        .unwrap_or_else(|| "–".into())
}

fn on(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| near end over a fan's noise: SNR heard dB | noise suppression | noise alone: heard → \
         sent dBFS | SNR sent dB |\n|---|---|---|---|\n",
    );
    for r in rows.iter().filter(|r| r.snr_db.is_some()) {
        let v = &r.room;
        out.push_str(&format!(
            "| {} | {} | {} → {} | {} |\n",
            cell(&v["snr_in_db"]),
            on(r.door.noise_suppression),
            cell(&v["noise_in_dbfs"]),
            cell(&v["noise_sent_dbfs"]),
            cell(&v["snr_sent_db"]),
        ));
    }
    out.push_str("\n| near end's speech heard dBFS | gain control | sent dBFS |\n|---|---|---|\n");
    for r in rows.iter().filter(|r| r.snr_db.is_none()) {
        let v = &r.room;
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            cell(&v["near_in_dbfs"]),
            on(r.door.gain_control),
            cell(&v["sent_dbfs"]),
        ));
    }
    out
}
