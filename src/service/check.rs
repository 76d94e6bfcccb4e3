//! `webrtcd check-config`: every problem in the config and its profile, one line each.

use std::path::PathBuf;

use super::config::Config;
use crate::media::{self, profile::Profile};

/// What `check-config` found: lines `file: key: what is wrong`, or none and a summary.
pub struct Checked {
    pub problems: Vec<String>,
    pub summary: String,
}

/// Needs no running daemon; initialises GStreamer to look for devices and plugins.
pub fn check_config(explicit: Option<PathBuf>) -> Checked {
    let file = Config::locate(explicit);
    let name = file
        .as_ref()
        .map_or("(built-in defaults)".to_string(), |f| {
            f.display().to_string()
        });
    let config = match Config::load_or_default(file.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            return Checked {
                problems: vec![err.to_string()],
                summary: String::new(),
            };
        }
    };
    let mut problems: Vec<String> = config
        .problems()
        .into_iter()
        .map(|p| format!("{name}: {p}"))
        .collect();
    let profile_file = &config.profile;
    let profile = Profile::load(profile_file).map_err(|e| e.to_string());
    let devices = profile.and_then(|profile| {
        media::init().map_err(|e| format!("{}: {e}", profile_file.display()))?;
        profile
            .check_devices(profile_file)
            .map_err(|e| e.to_string())
            .map(|()| profile)
    });
    match devices {
        Ok(profile) => Checked {
            summary: format!(
                "{name}: ok; profile {} ({}): ok; cameras: {}",
                profile.name,
                profile_file.display(),
                profile
                    .cameras()
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            problems,
        },
        Err(problem) => {
            problems.push(problem);
            Checked {
                problems,
                summary: String::new(),
            }
        }
    }
}
