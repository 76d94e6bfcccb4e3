//! Daemon configuration: a TOML file, overridden by command-line flags.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Invalid { file: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP listener: page, API and the embedded relay.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// This device's id on the relay (none: the relay assigns one).
    pub id: Option<String>,
    /// Register with this remote relay (`ws://host:port/signaling`) instead of the embedded one.
    pub relay: Option<String>,
    /// The pipeline profile.
    #[serde(default = "default_profile")]
    pub profile: PathBuf,
    /// Bearer tokens accepted on `/signaling` and `/api/*` (none: open).
    #[serde(default)]
    pub tokens: Vec<String>,
    #[serde(default)]
    pub ice: IceConfig,
    /// Seconds between WebSocket pings of idle relay connections.
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u64,
    /// Where the DTLS certificate is kept (default: `$STATE_DIRECTORY`, else `./state`).
    pub state_dir: Option<PathBuf>,
    /// Most WebSocket connections the embedded relay serves at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceConfig {
    /// `stun://host:port`
    pub stun_server: Option<String>,
    /// `turn://user:password@host:port` (or `turns://`)
    #[serde(default)]
    pub turn_servers: Vec<String>,
    /// Restrict ICE host candidates to these local addresses.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_profile() -> PathBuf {
    PathBuf::from("pipelines/test.toml")
}
fn default_keepalive() -> u64 {
    20
}
fn default_max_connections() -> usize {
    256
}

impl Default for Config {
    fn default() -> Config {
        // An empty document is a valid config: every key has a default.
        Config {
            listen: default_listen(),
            id: None,
            relay: None,
            profile: default_profile(),
            tokens: Vec::new(),
            ice: IceConfig::default(),
            keepalive_secs: default_keepalive(),
            state_dir: None,
            max_connections: default_max_connections(),
        }
    }
}

impl Config {
    /// The state directory: the configured one, systemd's `StateDirectory=`, or `./state`.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .or_else(|| std::env::var_os("STATE_DIRECTORY").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("state"))
    }

    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            file: file.to_path_buf(),
            message: e.message().trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_defaults_and_unknown_keys_fail() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert!(toml::from_str::<Config>("lisen = '1.2.3.4:1'").is_err());
        let c: Config = toml::from_str(
            "id='door'\n[ice]\naddresses=['127.0.0.1']\nstun_server='stun://x:3478'",
        )
        .unwrap();
        assert_eq!(c.ice.addresses.len(), 1);
    }
}
