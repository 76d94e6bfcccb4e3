//! webrtcd: turns a Linux device into a WebRTC endpoint.
//!
//! Dependencies point one way: `service` → `relay` and `session`; `session` → `media`;
//! `relay` and `session` → `protocol`. The leaves (`backoff`, `camera_name`, `metrics`,
//! `net`, `sync`) anyone may use.

pub mod backoff;
pub mod camera_name;
pub mod fuzzing;
pub mod media;
pub mod metrics;
pub mod net;
pub mod protocol;
pub mod redact;
pub mod relay;
pub mod service;
pub mod session;
pub mod sync;
mod toml_error;
