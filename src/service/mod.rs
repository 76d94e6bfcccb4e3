//! The daemon around the calls: configuration, the HTTP listener (page, API, `/signaling`),
//! and start-up / shutdown.

pub mod api_client;
pub mod auth;
pub mod bridge;
mod cameras;
pub mod caps;
mod check;
pub mod config;
mod daemon;
pub mod guard;
mod health;
mod hooks;
pub mod http;
pub mod http_client;
pub mod ice_servers;
pub mod listener;
pub mod logging;
mod notify;
mod recordings;
mod reload;
pub mod rtsp;
pub mod tls;
mod watching;
pub mod whep;
pub mod whip;

pub use check::{Checked, check_config};
pub use daemon::{run_daemon, run_relay};
