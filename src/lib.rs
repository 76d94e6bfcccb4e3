//! webrtcd: turns a Linux device into a WebRTC endpoint.
//!
//! Dependencies point one way: `service` → `relay` and `session`; `session` → `media`;
//! `relay` and `session` → `protocol`.

pub mod fuzzing;
pub mod media;
pub mod metrics;
pub mod protocol;
pub mod redact;
pub mod relay;
pub mod service;
pub mod session;
mod toml_error;
