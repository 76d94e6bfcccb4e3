//! How many connections each listener may hold, fitted together under the process's
//! open-file limit, and how long an RTSP connection gets to say something.

use std::time::Duration;

use super::config::Config;
use super::listener;

/// Connection caps that fit under the open-file limit together, with
/// [`listener::FDS_RESERVED`] descriptors left for calls and pipelines: every HTTP listener
/// (`listen`, and `tls_listen`) with its health reserve, the RTSP listener with the refusals it
/// answers, and the bridge's clients.
pub struct ConnectionCaps {
    /// `max_connections`, per HTTP listener.
    pub http: usize,
    /// `rtsp_max_clients` (0 without `rtsp_listen`).
    pub rtsp: usize,
}

impl ConnectionCaps {
    pub fn of(config: &Config) -> ConnectionCaps {
        let fd_limit = listener::raise_fd_limit();
        let http_listeners = 1 + usize::from(config.tls_listen.is_some() && config.tls_enabled());
        let rtsp_on = config.rtsp_listen.is_some();
        let fixed = http_listeners * listener::reserved_slots()
            + if rtsp_on {
                super::rtsp::front::MAX_REFUSING
            } else {
                0
            }
            + if config.bridge.is_some() {
                super::bridge::MAX_CLIENTS
            } else {
                0
            };
        let rtsp = if rtsp_on {
            listener::fit_connections("rtsp_max_clients", config.rtsp_max_clients, fd_limit, fixed)
        } else {
            0
        };
        let http = listener::fit_connections(
            "max_connections (all HTTP listeners together)",
            config.max_connections * http_listeners,
            fd_limit,
            fixed + rtsp,
        ) / http_listeners;
        ConnectionCaps { http, rtsp }
    }
}

/// How long an RTSP connection gets to send its first request: a few seconds (a recorder
/// sends OPTIONS or DESCRIBE at once), `client_timeout_secs` if lower.
pub fn rtsp_request_within(config: &Config) -> Duration {
    Duration::from_secs(config.client_timeout_secs.clamp(1, 5))
}
