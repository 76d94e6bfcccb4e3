//! The daemon around the calls: configuration, the HTTP listener (page, API, `/signaling`),
//! and start-up / shutdown.

pub mod api_client;
pub mod auth;
pub mod config;
mod daemon;
pub mod http;

pub use daemon::{run_daemon, run_relay};
