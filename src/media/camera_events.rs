//! What a camera itself tells the rest of the device (motion, recording paused or resumed),
//! apart from any call: media raises them through a function the service gives it, which
//! hands them to `/api/events` and the hooks.

use std::sync::Arc;

/// One thing that happened to a camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraEvent {
    /// `motion-start`, `motion-end`, `recording-paused`, `recording-resumed`.
    pub event: &'static str,
    pub camera: String,
    /// Why (`recording-paused`: the write that failed).
    pub reason: Option<String>,
}

/// Raises a camera event; never blocks (it runs on streaming and recorder threads).
pub type OnCameraEvent = Arc<dyn Fn(CameraEvent) + Send + Sync>;
