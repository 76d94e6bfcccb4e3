//! `[motion]` (in a one-camera profile) or `[camera.motion]`: whether and how a camera's
//! picture is watched for motion (`media::motion`).

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MotionSettings {
    /// Off unless asked for: watching keeps the camera's capture (and its encoder) running.
    #[serde(default)]
    pub enabled: bool,
    /// 0.0–1.0: how small a moving part of the picture counts as motion (1.0: the smallest,
    /// about 0.5 % of the picture; 0.0: a tenth of it).
    #[serde(default = "default_sensitivity")]
    pub sensitivity: f64,
    /// Motion must go on this long before `motion-start` (a flicker is not motion).
    #[serde(default = "default_min_duration_ms")]
    pub min_duration_ms: u64,
    /// `motion-end` once the picture has been still this long.
    #[serde(default = "default_end_after_secs")]
    pub end_after_secs: u64,
}

impl Default for MotionSettings {
    fn default() -> MotionSettings {
        MotionSettings {
            enabled: false,
            sensitivity: default_sensitivity(),
            min_duration_ms: default_min_duration_ms(),
            end_after_secs: default_end_after_secs(),
        }
    }
}

fn default_sensitivity() -> f64 {
    0.5
}
fn default_min_duration_ms() -> u64 {
    400
}
fn default_end_after_secs() -> u64 {
    5
}

impl MotionSettings {
    pub(super) fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sensitivity) {
            return Err("motion.sensitivity: between 0.0 and 1.0".into());
        }
        if self.min_duration_ms > 10_000 {
            return Err("motion.min_duration_ms: at most 10000".into());
        }
        if !(1..=300).contains(&self.end_after_secs) {
            return Err("motion.end_after_secs: between 1 and 300".into());
        }
        Ok(())
    }
}
