//! What this machine has: cameras, microphones and speakers (GStreamer's device monitor).

use gst::prelude::*;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Device {
    pub class: String,
    pub name: String,
    /// e.g. `/dev/video0` or `hw:1,0`, when the device says.
    pub path: Option<String>,
    /// Formats it offers, one caps structure per entry.
    pub formats: Vec<String>,
}

/// Lists cameras (`Video/Source`), microphones (`Audio/Source`) and speakers (`Audio/Sink`).
pub fn list() -> Vec<Device> {
    let monitor = gst::DeviceMonitor::new();
    for class in ["Video/Source", "Audio/Source", "Audio/Sink"] {
        let _ = monitor.add_filter(Some(class), None);
    }
    if monitor.start().is_err() {
        return Vec::new();
    }
    let devices = monitor
        .devices()
        .iter()
        .map(|d| {
            let props = d.properties();
            let path = props.as_ref().and_then(|p| {
                [
                    "device.path",
                    "api.v4l2.path",
                    "api.alsa.path",
                    "object.path",
                ]
                .iter()
                .find_map(|k| p.get::<String>(*k).ok())
            });
            let formats = d
                .caps()
                .map(|caps| caps.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default();
            Device {
                class: d.device_class().to_string(),
                name: d.display_name().to_string(),
                path,
                formats,
            }
        })
        .collect();
    monitor.stop();
    devices
}
