//! Every key's default: what an empty config file means.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{Config, IceConfig, TransportPolicy};

pub(super) fn turn_ttl() -> u64 {
    86_400
}
pub(super) fn listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
pub(super) fn profile() -> PathBuf {
    PathBuf::from("pipelines/test.toml")
}
pub(super) fn keepalive() -> u64 {
    20
}
pub(super) fn ice_recovery() -> u64 {
    30
}
pub(super) fn max_connections() -> usize {
    512
}
pub(super) fn max_connections_per_address() -> usize {
    64
}
pub(super) fn client_timeout() -> u64 {
    10
}
pub(super) fn relay_rate() -> f64 {
    200.0
}
pub(super) fn relay_burst() -> u32 {
    400
}
pub(super) fn bridge_mode() -> u32 {
    0o660
}
pub(super) fn hook_timeout() -> u64 {
    10
}
pub(super) fn rtsp_max_clients() -> usize {
    16
}
pub(super) fn rtsp_max_clients_per_address() -> usize {
    4
}
pub(super) fn whep_max_per_address() -> usize {
    4
}
pub(super) fn connect_timeout() -> u64 {
    10
}

impl Default for IceConfig {
    fn default() -> IceConfig {
        IceConfig {
            stun_server: None,
            turn_servers: Vec::new(),
            addresses: Vec::new(),
            turn_secret: None,
            turn_credential_ttl_secs: turn_ttl(),
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        // An empty document is a valid config: every key has a default.
        Config {
            listen: listen(),
            id: None,
            relay: Vec::new(),
            relay_token: None,
            relay_ca: None,
            profile: profile(),
            tokens: Vec::new(),
            tls: None,
            tls_cert: None,
            tls_key: None,
            tls_names: Vec::new(),
            tls_listen: None,
            publish: Vec::new(),
            bridge: None,
            recording: None,
            hooks: Vec::new(),
            rtsp_listen: None,
            rtsp_max_clients: rtsp_max_clients(),
            rtsp_max_clients_per_address: rtsp_max_clients_per_address(),
            whep_max_per_address: whep_max_per_address(),
            connect_timeout_secs: connect_timeout(),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            ice: IceConfig::default(),
            keepalive_secs: keepalive(),
            ice_recovery_secs: ice_recovery(),
            ice_transport_policy: TransportPolicy::All,
            state_dir: None,
            max_connections: max_connections(),
            max_connections_per_address: max_connections_per_address(),
            client_timeout_secs: client_timeout(),
            relay_messages_per_second: relay_rate(),
            relay_message_burst: relay_burst(),
            web_dir: None,
            file: None,
        }
    }
}

pub fn segment_secs() -> u64 {
    60
}

pub fn min_free_mb() -> u64 {
    500
}

pub fn pre_secs() -> u64 {
    5
}

pub fn post_secs() -> u64 {
    10
}
