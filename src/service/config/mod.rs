//! Daemon configuration: a TOML file (`/etc/webrtcd/webrtcd.toml` unless `--config` or
//! `WEBRTCD_CONFIG` names another), secrets from the environment or systemd credentials,
//! and command-line flags over all of it. `webrtcd.example.toml` documents every key.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

mod defaults;
mod secrets;
#[cfg(test)]
mod tests;
mod validate;

pub use secrets::Secrets;

use super::auth::{Scope, Token};
use crate::redact::SecretUrl;

/// Where the packaged config lives; used when neither `--config` nor `WEBRTCD_CONFIG` is set.
pub const DEFAULT_FILE: &str = "/etc/webrtcd/webrtcd.toml";
/// Environment variable naming the config file.
pub const FILE_ENV: &str = "WEBRTCD_CONFIG";

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
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    /// This device's id on the relay (none: the relay assigns one).
    pub id: Option<String>,
    /// Register with this remote relay (`ws://` or `wss://host:port/signaling`) instead of
    /// the embedded one; or with the first of a list that answers, moving to the next when
    /// it goes away (`relay = ["wss://a/signaling", "wss://b/signaling"]`).
    #[serde(default, deserialize_with = "one_or_many")]
    pub relay: Vec<SecretUrl>,
    /// The token this daemon presents to the remote relay (`Authorization: Bearer`); also
    /// `$WEBRTCD_RELAY_TOKEN` or the systemd credential `relay-token`.
    pub relay_token: Option<SecretString>,
    /// CA certificates (PEM) a `wss://` relay's certificate must chain to, instead of the
    /// system's trusted roots.
    pub relay_ca: Option<PathBuf>,
    /// The pipeline profile.
    #[serde(default = "defaults::profile")]
    pub profile: PathBuf,
    /// Bearer tokens: `"secret"` (scope admin) or `{ secret = "…", scope = "view" }` (none:
    /// open).
    #[serde(default)]
    pub tokens: Vec<Token>,
    /// `"self-signed"`: serve HTTPS with a certificate made at first start and kept in the
    /// state directory. Or set `tls_cert` and `tls_key`.
    pub tls: Option<TlsMode>,
    /// Certificate chain (PEM) to serve HTTPS and WSS with; SIGHUP reloads it.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Names and addresses the self-signed certificate is made for (default: the host name,
    /// `NAME.local`, `localhost` and the machine's addresses).
    #[serde(default)]
    pub tls_names: Vec<String>,
    /// With TLS: serve HTTPS here and keep `listen` plain HTTP (default: `listen` is HTTPS).
    pub tls_listen: Option<SocketAddr>,
    /// `[[publish]]`: WHIP endpoints (an SFU's ingest) the shared stream is published to.
    #[serde(default)]
    pub publish: Vec<PublishTarget>,
    /// `[bridge]`: local programs exchange DataChannel messages with calls over a Unix
    /// socket.
    pub bridge: Option<BridgeConfig>,
    /// `[recording]`: segments of each camera's video written to disk (none: no recording).
    pub recording: Option<RecordingConfig>,
    /// `[[hooks]]`: programs run on call events (`ringing`, `connected`, `ended`).
    #[serde(default)]
    pub hooks: Vec<Hook>,
    /// Serve `rtsp://HOST:PORT/live` (for NVRs) here; none: no RTSP.
    pub rtsp_listen: Option<SocketAddr>,
    /// RTSP connections at once (more are answered 503 and closed).
    #[serde(default = "defaults::rtsp_max_clients")]
    pub rtsp_max_clients: usize,
    /// RTSP connections at once from one client address.
    #[serde(default = "defaults::rtsp_max_clients_per_address")]
    pub rtsp_max_clients_per_address: usize,
    /// WHEP sessions at once from one client address.
    #[serde(default = "defaults::whep_max_per_address")]
    pub whep_max_per_address: usize,
    /// A WHEP session whose player has not connected (ICE and DTLS) within this many seconds
    /// ends, and frees its place.
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Web origins (`https://nvr.example:8123`) besides the daemon's own whose pages may use
    /// it.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Host names (no port) requests may be addressed to besides loopback names, addresses
    /// and the TLS certificate's names (protects against DNS rebinding).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    #[serde(default)]
    pub ice: IceConfig,
    /// Seconds between WebSocket pings of idle relay connections.
    #[serde(default = "defaults::keepalive")]
    pub keepalive_secs: u64,
    /// A connected call from whose peer nothing arrives (RTP, RTCP, DataChannel) for this
    /// many seconds ends with reason `network`.
    #[serde(default = "defaults::ice_recovery")]
    pub ice_recovery_secs: u64,
    /// `"relay"`: calls use TURN-relayed candidates only (needs a TURN server).
    #[serde(default)]
    pub ice_transport_policy: TransportPolicy,
    /// Where the DTLS certificate is kept (default: `$STATE_DIRECTORY`, else `./state`).
    pub state_dir: Option<PathBuf>,
    /// Most connections open at once, HTTP and WebSocket together (kept below the file
    /// descriptor limit, with room left for calls).
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Most connections open at once from one client address.
    #[serde(default = "defaults::max_connections_per_address")]
    pub max_connections_per_address: usize,
    /// Seconds a client gets to send a request's header, and a WebSocket to register.
    #[serde(default = "defaults::client_timeout")]
    pub client_timeout_secs: u64,
    /// Messages per second one relay connection may send on average …
    #[serde(default = "defaults::relay_rate")]
    pub relay_messages_per_second: f64,
    /// … and at once. Past it the sender gets `rate-limited`, then is dropped.
    #[serde(default = "defaults::relay_burst")]
    pub relay_message_burst: u32,
    /// Serve the web client from this directory instead of the copy built into the binary.
    pub web_dir: Option<PathBuf>,
    /// The file this was read from (none: built-in defaults).
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// The DataChannel bridge's Unix socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// `/run/webrtcd/bridge.sock` (under systemd, /run/webrtcd is the daemon's own).
    pub socket: PathBuf,
    /// The socket's permissions (octal in TOML: `0o660`): who may connect, by the
    /// daemon's user and group. Anyone who can connect talks to every call.
    #[serde(default = "defaults::bridge_mode")]
    pub mode: u32,
}

/// `[recording]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingConfig {
    /// Where segments go (default: `recordings` in the state directory).
    pub path: Option<PathBuf>,
    /// The cameras recorded, by name (default: all).
    pub cameras: Option<Vec<String>>,
    #[serde(default)]
    pub mode: RecordingMode,
    /// A segment's length.
    #[serde(default = "defaults::segment_secs")]
    pub segment_secs: u64,
    /// Segments older than this many days are deleted (default: kept until space runs short).
    pub keep_days: Option<u32>,
    /// The oldest segments are deleted while the disk has less than this free (MiB).
    #[serde(default = "defaults::min_free_mb")]
    pub min_free_mb: u64,
    /// `mode = "motion"`: seconds kept before a motion (from the keyframe that far back).
    #[serde(default = "defaults::pre_secs")]
    pub pre_secs: u64,
    /// `mode = "motion"`: seconds kept after a motion ended.
    #[serde(default = "defaults::post_secs")]
    pub post_secs: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordingMode {
    #[default]
    Continuous,
    /// Only while a camera's motion lasts (`[camera.motion]` enabled), with `pre_secs` and
    /// `post_secs` around it.
    Motion,
    Off,
}

/// A program run on call events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    /// Which events: `ringing`, `connected`, `ended`.
    pub on: Vec<String>,
    /// The program (an absolute path; run directly, not through a shell).
    pub exec: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    /// A hook still running after this long is killed (with everything it started).
    #[serde(default = "defaults::hook_timeout")]
    pub timeout_secs: u64,
}

/// One WHIP endpoint to publish to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishTarget {
    /// `https://sfu.example/whip/room` (or `http://`).
    pub url: String,
    /// Sent as `Authorization: Bearer …`; never logged.
    pub token: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceConfig {
    /// `stun://host:port`
    pub stun_server: Option<String>,
    /// `turn://user:password@host:port` (or `turns://`)
    #[serde(default)]
    pub turn_servers: Vec<SecretUrl>,
    /// Restrict ICE host candidates to these local addresses.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    /// coturn's `static-auth-secret`: with it, `turn_servers` are given without credentials
    /// and each call (and each page, through `/api/ice-servers`) gets short-lived ones.
    pub turn_secret: Option<SecretString>,
    /// How long those credentials stay valid.
    #[serde(default = "defaults::turn_ttl")]
    pub turn_credential_ttl_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    SelfSigned,
}

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Token, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Entry {
            /// The old form: every token could do everything.
            Plain(String),
            Scoped {
                secret: String,
                scope: Scope,
            },
        }
        Ok(match Entry::deserialize(d)? {
            Entry::Plain(secret) => Token::new(secret, Scope::Admin),
            Entry::Scoped { secret, scope } => Token::new(secret, scope),
        })
    }
}

/// Which ICE candidates calls use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportPolicy {
    #[default]
    All,
    /// Relayed (TURN) candidates only: the device's addresses are never revealed.
    Relay,
}

impl Config {
    /// Whether the daemon serves HTTPS.
    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some() || (self.tls_cert.is_some() && self.tls_key.is_some())
    }

    /// Where the listener's certificate comes from, when TLS is on.
    pub fn cert_source(&self) -> Option<super::tls::CertSource> {
        use super::tls::CertSource;
        match (&self.tls, &self.tls_cert, &self.tls_key) {
            (Some(TlsMode::SelfSigned), _, _) => Some(CertSource::SelfSigned {
                dir: self.state_dir(),
                names: if self.tls_names.is_empty() {
                    super::tls::default_names()
                } else {
                    self.tls_names.clone()
                },
            }),
            (None, Some(cert), Some(key)) => Some(CertSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }

    /// Where recordings go.
    pub fn recording_dir(&self) -> Option<PathBuf> {
        let recording = self.recording.as_ref()?;
        Some(
            recording
                .path
                .clone()
                .unwrap_or_else(|| self.state_dir().join("recordings")),
        )
    }

    /// The state directory: the configured one, systemd's `StateDirectory=`, or `./state`.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .or_else(|| std::env::var_os("STATE_DIRECTORY").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("state"))
    }

    /// The config file to read: `explicit` (`--config`), else `$WEBRTCD_CONFIG`, else the
    /// packaged default if it exists. `None`: built-in defaults (a checkout running the demo).
    pub fn locate(explicit: Option<PathBuf>) -> Option<PathBuf> {
        explicit
            .or_else(|| std::env::var_os(FILE_ENV).map(PathBuf::from))
            .or_else(|| Some(PathBuf::from(DEFAULT_FILE)).filter(|p| p.exists()))
    }

    /// Reads `file`, or the built-in defaults when there is none; then adds secrets from the
    /// environment and systemd credentials.
    pub fn load_or_default(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = match file {
            Some(file) => Config::load(file)?,
            None => Config::default(),
        };
        config.add_secrets(&Secrets::from_environment()?);
        Ok(config)
    }

    /// Reads and parses `file`. A relative `profile` or `web_dir` is relative to the file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            file: file.to_path_buf(),
            message: crate::toml_error::describe(&text, &e),
        })?;
        let dir = file.parent().unwrap_or(Path::new("."));
        if config.profile.is_relative() && text_sets(&text, "profile") {
            config.profile = dir.join(&config.profile);
        }
        config.web_dir = config.web_dir.map(|d| dir.join(d));
        for file in [
            &mut config.tls_cert,
            &mut config.tls_key,
            &mut config.relay_ca,
        ] {
            *file = file.take().map(|f| dir.join(f));
        }
        config.file = Some(file.to_path_buf());
        Ok(config)
    }

    /// Bearer tokens, the relay's token and TURN servers kept out of the config file.
    pub fn add_secrets(&mut self, secrets: &Secrets) {
        self.tokens.extend(
            secrets
                .tokens
                .iter()
                .map(|t| Token::new(t.expose_secret(), Scope::Admin)),
        );
        self.ice.turn_servers.extend(
            secrets
                .turn_servers
                .iter()
                .map(|t| SecretUrl::new(t.expose_secret())),
        );
        if let Some(token) = &secrets.relay_token {
            self.relay_token = Some(token.clone());
        }
        if let Some(secret) = &secrets.turn_secret {
            self.ice.turn_secret = Some(secret.clone());
        }
    }
}

/// `relay = "wss://…"` or `relay = ["wss://…", "wss://…"]`.
fn one_or_many<'de, D>(deserializer: D) -> Result<Vec<SecretUrl>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(SecretUrl),
        Many(Vec<SecretUrl>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(url) => vec![url],
        OneOrMany::Many(urls) => urls,
    })
}

/// Whether `text` sets top-level `key` (so a relative value is relative to the file).
fn text_sets(text: &str, key: &str) -> bool {
    text.lines()
        .map(str::trim_start)
        .take_while(|l| !l.starts_with('['))
        .any(|l| {
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
}
