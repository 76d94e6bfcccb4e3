//! `[receive]`: what this device does with the media its peers send.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Receive {
    pub video: SinkKind,
    pub audio: SinkKind,
    /// With `audio = "alsa"`: the ALSA playback device (`default`, `hw:0,0`, …).
    pub audio_device: Option<String>,
    /// Receive jitterbuffer latency; webrtcbin's default of 200 ms delays the first frame.
    pub latency_ms: u32,
    /// Read capture times stamped into received pictures (`video.stamp_capture_time` on the
    /// sender) and report capture → decoded-frame latency in `/api/calls`.
    pub measure_latency: bool,
    /// Ask peers to send their Opus with redundancy (RED, RFC 2198; Chromium does): a lost
    /// packet is replaced by its copy in the next one (session::red).
    pub audio_red: bool,
}

/// Each key's default (an absent `[receive]` is an empty one).
impl Default for Receive {
    fn default() -> Receive {
        Receive {
            video: SinkKind::default(),
            audio: SinkKind::default(),
            audio_device: None,
            latency_ms: default_latency_ms(),
            measure_latency: false,
            audio_red: true,
        }
    }
}

/// What happens to decoded remote media.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkKind {
    /// Decode and count (the test profile, and a headless device that only reports).
    #[default]
    Count,
    /// Depayload and count frames without decoding (benchmark viewers: cheap receivers).
    Frames,
    /// Decode and play on the default output (autovideosink / autoaudiosink).
    Auto,
    /// Audio to an ALSA device (`receive.audio_device`).
    Alsa,
    /// Video straight to the display, without a desktop (kmssink).
    Kms,
    /// Video to a Wayland compositor (waylandsink).
    Wayland,
}

fn default_latency_ms() -> u32 {
    50
}
