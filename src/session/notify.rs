//! What calls tell the rest of the device: their lifecycle (`ringing`, `connected`, `ended`:
//! for event hooks and `GET /api/events`) and the DataChannel messages peers send (for the
//! local bridge). Broadcast: a listener that falls behind loses the oldest messages (and
//! learns it has), a call never waits for anyone.

use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::broadcast;

use super::Role;

/// Events kept for a listener that has not read them yet.
const EVENTS_KEPT: usize = 256;
/// DataChannel messages kept for a listener that has not read them yet (each at most 64 KiB:
/// at most 16 MiB, whatever peers send).
const MESSAGES_KEPT: usize = 256;

/// One moment in a call's life, or a camera's (motion, recording: no session, peer or role).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CallEvent {
    /// `ringing`, `connected`, `ended`, `device-lost` or `device-back`; a camera's
    /// `motion-start`, `motion-end`, `recording-paused` or `recording-resumed`.
    pub event: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub session: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub peer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The camera the call watches, or the camera the event is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub camera: Option<String>,
    /// Why it ended (`ended`: a hangup reason), or why recording paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Which of the call's devices (`device-lost`, `device-back` only): `microphone` or
    /// `speaker`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<&'static str>,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
}

/// The event names a hook may ask for.
pub const EVENT_NAMES: [&str; 9] = [
    "ringing",
    "connected",
    "ended",
    "device-lost",
    "device-back",
    "motion-start",
    "motion-end",
    "recording-paused",
    "recording-resumed",
];

/// A DataChannel message a peer sent on a call (not the daemon's own ping and pong).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChannelMessage {
    pub session: String,
    pub peer: String,
    pub data: String,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub struct Notifier {
    events: broadcast::Sender<CallEvent>,
    messages: broadcast::Sender<ChannelMessage>,
}

impl Default for Notifier {
    fn default() -> Notifier {
        Notifier {
            events: broadcast::channel(EVENTS_KEPT).0,
            messages: broadcast::channel(MESSAGES_KEPT).0,
        }
    }
}

impl Notifier {
    pub fn event(&self, event: &'static str, info: &super::CallInfo, reason: Option<&'static str>) {
        self.send(event, info, reason, None);
    }

    /// A device the call uses was lost (`device-lost`) or is back (`device-back`).
    pub fn device(&self, event: &'static str, info: &super::CallInfo, device: &'static str) {
        self.send(event, info, None, Some(device));
    }

    fn send(
        &self,
        event: &'static str,
        info: &super::CallInfo,
        reason: Option<&'static str>,
        device: Option<&'static str>,
    ) {
        // No listener: nobody to tell.
        let _ = self.events.send(CallEvent {
            event,
            session: info.session.clone(),
            peer: info.peer.clone(),
            role: Some(info.role),
            camera: Some(info.camera.clone()),
            reason: reason.map(str::to_string),
            device,
            time_ms: now_ms(),
        });
    }

    /// Something happened to a camera (motion, recording); never blocks.
    pub fn camera(&self, event: crate::media::camera_events::CameraEvent) {
        let _ = self.events.send(CallEvent {
            event: event.event,
            session: String::new(),
            peer: String::new(),
            role: None,
            camera: Some(event.camera),
            reason: event.reason,
            device: None,
            time_ms: now_ms(),
        });
    }

    pub fn message(&self, info: &super::CallInfo, data: &str) {
        let _ = self.messages.send(ChannelMessage {
            session: info.session.clone(),
            peer: info.peer.clone(),
            data: data.to_string(),
        });
    }

    pub fn events(&self) -> broadcast::Receiver<CallEvent> {
        self.events.subscribe()
    }

    pub fn messages(&self) -> broadcast::Receiver<ChannelMessage> {
        self.messages.subscribe()
    }
}
