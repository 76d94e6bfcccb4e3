//! Daemon configuration: a TOML file (`/etc/webrtcd/webrtcd.toml` unless `--config` or
//! `WEBRTCD_CONFIG` names another), secrets from the environment or systemd credentials,
//! and command-line flags over all of it. `webrtcd.example.toml` documents every key.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

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
    #[serde(default = "default_listen")]
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
    #[serde(default = "default_profile")]
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
    /// `[[hooks]]`: programs run on call events (`ringing`, `connected`, `ended`).
    #[serde(default)]
    pub hooks: Vec<Hook>,
    /// Serve `rtsp://HOST:PORT/live` (for NVRs) here; none: no RTSP.
    pub rtsp_listen: Option<SocketAddr>,
    /// RTSP connections at once (more are answered 503 and closed).
    #[serde(default = "default_rtsp_max_clients")]
    pub rtsp_max_clients: usize,
    /// RTSP connections at once from one client address.
    #[serde(default = "default_rtsp_max_clients_per_address")]
    pub rtsp_max_clients_per_address: usize,
    /// WHEP sessions at once from one client address.
    #[serde(default = "default_whep_max_per_address")]
    pub whep_max_per_address: usize,
    /// A WHEP session whose player has not connected (ICE and DTLS) within this many seconds
    /// ends, and frees its place.
    #[serde(default = "default_connect_timeout")]
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
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u64,
    /// A connected call from whose peer nothing arrives (RTP, RTCP, DataChannel) for this
    /// many seconds ends with reason `network`.
    #[serde(default = "default_ice_recovery")]
    pub ice_recovery_secs: u64,
    /// `"relay"`: calls use TURN-relayed candidates only (needs a TURN server).
    #[serde(default)]
    pub ice_transport_policy: TransportPolicy,
    /// Where the DTLS certificate is kept (default: `$STATE_DIRECTORY`, else `./state`).
    pub state_dir: Option<PathBuf>,
    /// Most connections open at once, HTTP and WebSocket together (kept below the file
    /// descriptor limit, with room left for calls).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most connections open at once from one client address.
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: usize,
    /// Seconds a client gets to send a request's header, and a WebSocket to register.
    #[serde(default = "default_client_timeout")]
    pub client_timeout_secs: u64,
    /// Messages per second one relay connection may send on average …
    #[serde(default = "default_relay_rate")]
    pub relay_messages_per_second: f64,
    /// … and at once. Past it the sender gets `rate-limited`, then is dropped.
    #[serde(default = "default_relay_burst")]
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
    #[serde(default = "default_bridge_mode")]
    pub mode: u32,
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
    #[serde(default = "default_hook_timeout")]
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
    #[serde(default = "default_turn_ttl")]
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

impl Default for IceConfig {
    fn default() -> IceConfig {
        IceConfig {
            stun_server: None,
            turn_servers: Vec::new(),
            addresses: Vec::new(),
            turn_secret: None,
            turn_credential_ttl_secs: default_turn_ttl(),
        }
    }
}

fn default_turn_ttl() -> u64 {
    86_400
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

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_profile() -> PathBuf {
    PathBuf::from("pipelines/test.toml")
}
fn default_keepalive() -> u64 {
    20
}
fn default_ice_recovery() -> u64 {
    30
}
fn default_max_connections() -> usize {
    512
}
fn default_max_connections_per_address() -> usize {
    64
}
fn default_client_timeout() -> u64 {
    10
}
fn default_relay_rate() -> f64 {
    200.0
}
fn default_relay_burst() -> u32 {
    400
}

impl Default for Config {
    fn default() -> Config {
        // An empty document is a valid config: every key has a default.
        Config {
            listen: default_listen(),
            id: None,
            relay: Vec::new(),
            relay_token: None,
            relay_ca: None,
            profile: default_profile(),
            tokens: Vec::new(),
            tls: None,
            tls_cert: None,
            tls_key: None,
            tls_names: Vec::new(),
            tls_listen: None,
            publish: Vec::new(),
            bridge: None,
            hooks: Vec::new(),
            rtsp_listen: None,
            rtsp_max_clients: default_rtsp_max_clients(),
            rtsp_max_clients_per_address: default_rtsp_max_clients_per_address(),
            whep_max_per_address: default_whep_max_per_address(),
            connect_timeout_secs: default_connect_timeout(),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            ice: IceConfig::default(),
            keepalive_secs: default_keepalive(),
            ice_recovery_secs: default_ice_recovery(),
            ice_transport_policy: TransportPolicy::All,
            state_dir: None,
            max_connections: default_max_connections(),
            max_connections_per_address: default_max_connections_per_address(),
            client_timeout_secs: default_client_timeout(),
            relay_messages_per_second: default_relay_rate(),
            relay_message_burst: default_relay_burst(),
            web_dir: None,
            file: None,
        }
    }
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

    /// Every problem found, as `key: what is wrong`; empty when the config is good.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(id) = &self.id
            && let Err(why) = crate::protocol::check_id(id)
        {
            out.push(format!(
                "id: {}: {why}",
                crate::protocol::escape_for_log(id)
            ));
        }
        for relay in &self.relay {
            if let Err(why) = check_url(relay.expose(), &["ws", "wss"], false) {
                // The URL may hold a token: show it redacted.
                out.push(format!("relay: {relay}: {why}"));
            }
        }
        if self.relay.is_empty() && (self.relay_token.is_some() || self.relay_ca.is_some()) {
            out.push("relay_token, relay_ca: only used with relay".into());
        }
        if let Some(ca) = &self.relay_ca
            && !ca.is_file()
        {
            out.push(format!("relay_ca: {} is not a file", ca.display()));
        }
        for token in &self.tokens {
            let secret = token.secret();
            if secret.len() < 8 || secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
                out.push("tokens: a token must be at least 8 characters, without spaces".into());
            }
        }
        match (&self.tls, &self.tls_cert, &self.tls_key) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                out.push("tls: \"self-signed\" or tls_cert and tls_key, not both".into())
            }
            (None, Some(_), None) | (None, None, Some(_)) => {
                out.push("tls_cert, tls_key: set both, or neither".into())
            }
            _ => {}
        }
        for (key, file) in [("tls_cert", &self.tls_cert), ("tls_key", &self.tls_key)] {
            if let Some(file) = file
                && !file.is_file()
            {
                out.push(format!("{key}: {} is not a file", file.display()));
            }
        }
        if self.tls_listen.is_some() && !self.tls_enabled() {
            out.push("tls_listen: needs tls or tls_cert and tls_key".into());
        }
        for origin in &self.allowed_origins {
            if let Err(why) = super::guard::parse_origin(origin) {
                out.push(format!("allowed_origins: {origin:?}: {why}"));
            }
        }
        for host in &self.allowed_hosts {
            if host.is_empty() || host.contains([':', '/', ' ']) && host.parse::<IpAddr>().is_err()
            {
                out.push(format!(
                    "allowed_hosts: {host:?}: a host name or address, without scheme or port"
                ));
            }
        }
        if !(1..=3600).contains(&self.keepalive_secs) {
            out.push(format!(
                "keepalive_secs: {} is not between 1 and 3600",
                self.keepalive_secs
            ));
        }
        if !(2..=3600).contains(&self.ice_recovery_secs) {
            out.push(format!(
                "ice_recovery_secs: {} is not between 2 and 3600",
                self.ice_recovery_secs
            ));
        }
        if self.max_connections == 0 {
            out.push("max_connections: must be at least 1".into());
        }
        for target in &self.publish {
            match url::Url::parse(&target.url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
                _ => out.push(format!(
                    "publish: {:?} is not an http:// or https:// URL",
                    target.url
                )),
            }
        }
        if let Some(bridge) = &self.bridge {
            if !bridge.socket.is_absolute() {
                out.push("bridge.socket: must be an absolute path".into());
            }
            if bridge.mode > 0o777 {
                out.push("bridge.mode: permission bits, e.g. 0o660".into());
            }
        }
        for hook in &self.hooks {
            let names = crate::session::notify::EVENT_NAMES;
            if hook.on.is_empty() {
                out.push("hooks.on: name at least one event".into());
            }
            if let Some(bad) = hook.on.iter().find(|e| !names.contains(&e.as_str())) {
                out.push(format!("hooks.on: {bad:?} is not one of {names:?}"));
            }
            if !hook.exec.is_absolute() {
                out.push(format!(
                    "hooks.exec: {:?} is not an absolute path",
                    hook.exec
                ));
            }
            if !(1..=300).contains(&hook.timeout_secs) {
                out.push("hooks.timeout_secs: must be between 1 and 300".into());
            }
        }
        if self.rtsp_max_clients == 0 {
            out.push("rtsp_max_clients: must be at least 1".into());
        }
        if self.rtsp_max_clients_per_address == 0 {
            out.push("rtsp_max_clients_per_address: must be at least 1".into());
        }
        if self.whep_max_per_address == 0 {
            out.push("whep_max_per_address: must be at least 1".into());
        }
        if !(1..=300).contains(&self.connect_timeout_secs) {
            out.push(format!(
                "connect_timeout_secs: {} is not between 1 and 300",
                self.connect_timeout_secs
            ));
        }
        if self.max_connections_per_address == 0 {
            out.push("max_connections_per_address: must be at least 1".into());
        }
        if !(1..=300).contains(&self.client_timeout_secs) {
            out.push(format!(
                "client_timeout_secs: {} is not between 1 and 300",
                self.client_timeout_secs
            ));
        }
        if !(self.relay_messages_per_second > 0.0 && self.relay_messages_per_second.is_finite()) {
            out.push("relay_messages_per_second: must be more than 0".into());
        }
        if self.relay_message_burst == 0 {
            out.push("relay_message_burst: must be at least 1".into());
        }
        if let Some(stun) = &self.ice.stun_server
            && let Err(why) = check_url(stun, &["stun", "stuns"], false)
        {
            out.push(format!("ice.stun_server: {stun:?}: {why}"));
        }
        let rest = self.ice.turn_secret.is_some();
        if self.ice_transport_policy == TransportPolicy::Relay && self.ice.turn_servers.is_empty() {
            out.push("ice_transport_policy: \"relay\" needs ice.turn_servers".into());
        }
        if rest && !(60..=7 * 86_400).contains(&self.ice.turn_credential_ttl_secs) {
            out.push("ice.turn_credential_ttl_secs: between 60 and 604800".into());
        }
        for turn in &self.ice.turn_servers {
            if let Err(why) = check_url(turn.expose(), &["turn", "turns"], !rest) {
                // The URL holds a password: name the problem, not the URL.
                out.push(format!("ice.turn_servers: {why}"));
            }
        }
        if let Some(dir) = &self.web_dir
            && !dir.join("index.html").is_file()
        {
            out.push(format!("web_dir: {} has no index.html", dir.display()));
        }
        out
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

fn default_bridge_mode() -> u32 {
    0o660
}
fn default_hook_timeout() -> u64 {
    10
}
fn default_rtsp_max_clients() -> usize {
    16
}
fn default_rtsp_max_clients_per_address() -> usize {
    4
}
fn default_whep_max_per_address() -> usize {
    4
}
fn default_connect_timeout() -> u64 {
    10
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

fn check_url(text: &str, schemes: &[&str], needs_credentials: bool) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    if !schemes.contains(&url.scheme()) {
        return Err(format!("the scheme must be {}", schemes.join(" or ")));
    }
    // stun:host:port parses as a path; only the ws URLs have an authority.
    let host = url.host_str().map(str::to_string).or_else(|| {
        url.path()
            .split([':', '@'])
            .find(|s| !s.is_empty())
            .map(String::from)
    });
    if host.is_none_or(|h| h.is_empty()) {
        return Err("no host".into());
    }
    if needs_credentials && url.username().is_empty() && !url.path().contains('@') {
        return Err("a TURN server needs user:password@ in its URL".into());
    }
    Ok(())
}

/// Secrets from outside the config file: `WEBRTCD_TOKENS` / `WEBRTCD_TURN_SERVERS`
/// (separated by commas or whitespace) and `WEBRTCD_RELAY_TOKEN`, and systemd credentials
/// `tokens` / `turn-servers` (one per line) and `relay-token` in `$CREDENTIALS_DIRECTORY`.
/// Tokens from outside the file have the admin scope.
#[derive(Debug, Default)]
pub struct Secrets {
    pub tokens: Vec<SecretString>,
    pub turn_servers: Vec<SecretString>,
    pub relay_token: Option<SecretString>,
    pub turn_secret: Option<SecretString>,
}

impl Secrets {
    /// An unreadable credential is an error: silently reading it as "no tokens" would open
    /// the API.
    pub fn from_environment() -> Result<Secrets, ConfigError> {
        let env = |name: &str| std::env::var(name).unwrap_or_default();
        let credential = |name: &str| -> Result<String, ConfigError> {
            let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
                return Ok(String::new());
            };
            let file = Path::new(&dir).join(name);
            match std::fs::read_to_string(&file) {
                Ok(text) => Ok(text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
                Err(source) => Err(ConfigError::Read { file, source }),
            }
        };
        let split = |text: String| -> Vec<SecretString> {
            text.split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(|s| SecretString::from(s.to_string()))
                .collect()
        };
        let mut tokens = split(env("WEBRTCD_TOKENS"));
        tokens.extend(split(credential("tokens")?));
        let mut turn_servers = split(env("WEBRTCD_TURN_SERVERS"));
        turn_servers.extend(split(credential("turn-servers")?));
        let relay_token = split(credential("relay-token")?)
            .into_iter()
            .chain(split(env("WEBRTCD_RELAY_TOKEN")))
            .next();
        let turn_secret = split(credential("turn-secret")?)
            .into_iter()
            .chain(split(env("WEBRTCD_TURN_SECRET")))
            .next();
        Ok(Secrets {
            tokens,
            turn_servers,
            relay_token,
            turn_secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_their_key() {
        let c: Config = toml::from_str(
            "relay = 'http://x'\ntokens = ['short']\nkeepalive_secs = 0\ntls = 'self-signed'\ntls_cert = '/nonexistent'\nallowed_origins = ['evil.example']\n[ice]\nstun_server = 'stun:'\nturn_servers = ['turn:relay.example:3478']",
        )
        .unwrap();
        let problems = c.problems();
        for key in [
            "relay:",
            "tokens:",
            "keepalive_secs:",
            "tls:",
            "tls_cert:",
            "allowed_origins:",
            "ice.stun_server:",
            "ice.turn_servers:",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key} in {problems:?}"
            );
        }
        let good: Config = toml::from_str(
            "relay = 'wss://relay.example/signaling'\ntokens = ['0123456789']\n[ice]\nstun_server = 'stun://stun.example:3478'\nturn_servers = ['turn://u:p@relay.example:3478']",
        )
        .unwrap();
        assert_eq!(good.problems(), Vec::<String>::new());
    }

    /// One relay, or a list to fail over along, in that order.
    #[test]
    fn relay_is_one_url_or_a_list() {
        let urls = |text: &str| -> Vec<String> {
            let c: Config = toml::from_str(text).unwrap();
            c.relay.iter().map(|u| u.expose().to_string()).collect()
        };
        assert_eq!(urls("relay = 'wss://a/signaling'"), ["wss://a/signaling"]);
        assert_eq!(
            urls("relay = ['wss://a/signaling', 'ws://b:8080/signaling']"),
            ["wss://a/signaling", "ws://b:8080/signaling"]
        );
        assert!(urls("").is_empty());
    }

    #[test]
    fn a_relative_profile_is_relative_to_the_file() {
        let dir = std::env::temp_dir().join(format!("webrtcd-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("webrtcd.toml");
        std::fs::write(&file, "profile = 'pipelines/camera.toml'\n").unwrap();
        let c = Config::load(&file).unwrap();
        assert_eq!(c.profile, dir.join("pipelines/camera.toml"));
        std::fs::write(&file, "id = 'door'\n").unwrap();
        assert_eq!(
            Config::load(&file).unwrap().profile,
            PathBuf::from("pipelines/test.toml")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The shipped config documents every key, with values that parse.
    #[test]
    fn the_shipped_config_documents_every_key() {
        let text = include_str!("../../config/webrtcd.toml");
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                // A commented key, or a commented table (`[bridge]`, `[[publish]]`).
                Some(rest) if rest.split_once(" = ").is_some() || rest.starts_with('[') => rest,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let c: Config = toml::from_str(&uncommented).unwrap();
        let problems = c.problems();
        assert!(
            problems
                .iter()
                .all(|p| p.starts_with("web_dir:") || p.starts_with("relay_ca:")),
            "only files may be missing here: {problems:?}"
        );
        for key in [
            "listen",
            "profile",
            "id",
            "relay",
            "tokens",
            "relay_token",
            "relay_ca",
            "tls",
            "tls_cert",
            "tls_key",
            "tls_names",
            "tls_listen",
            "rtsp_listen",
            "rtsp_max_clients",
            "rtsp_max_clients_per_address",
            "whep_max_per_address",
            "connect_timeout_secs",
            "[[publish]]",
            "[bridge]",
            "socket",
            "mode",
            "[[hooks]]",
            "on",
            "exec",
            "args",
            "timeout_secs",
            "allowed_origins",
            "allowed_hosts",
            "keepalive_secs",
            "ice_recovery_secs",
            "ice_transport_policy",
            "turn_secret",
            "turn_credential_ttl_secs",
            "max_connections",
            "max_connections_per_address",
            "client_timeout_secs",
            "relay_messages_per_second",
            "relay_message_burst",
            "state_dir",
            "web_dir",
            "[ice]",
            "stun_server",
            "turn_servers",
            "addresses",
        ] {
            assert!(text.contains(key), "{key} is not documented");
        }
    }

    #[test]
    fn secrets_are_added() {
        let mut c = Config::default();
        c.add_secrets(&Secrets {
            tokens: vec!["from-credentials".into()],
            turn_servers: vec!["turn://u:p@h:3478".into()],
            relay_token: Some("relay-secret".into()),
            turn_secret: None,
        });
        assert_eq!(c.tokens.len(), 1);
        assert_eq!(c.tokens[0].secret(), "from-credentials");
        assert_eq!(c.tokens[0].scope, Scope::Admin);
        assert_eq!(c.ice.turn_servers.len(), 1);
        assert!(c.relay_token.is_some());
        // Nothing secret in the config's Debug.
        c.relay = vec![SecretUrl::new("wss://r.example/signaling?token=in-the-url")];
        let shown = format!("{c:?}");
        for secret in [
            "from-credentials",
            "turn://u:p@",
            "relay-secret",
            "in-the-url",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn tokens_old_and_scoped_forms() {
        let c: Config = toml::from_str(
            "tokens = ['admin-token-1', { secret = 'view-token-1', scope = 'view' }]",
        )
        .unwrap();
        assert_eq!(c.tokens[0].scope, Scope::Admin);
        assert_eq!(c.tokens[1].scope, Scope::View);
        let c: Config =
            toml::from_str("[[tokens]]\nsecret = 'view-token-1'\nscope = 'view'\n").unwrap();
        assert_eq!(c.tokens[0].secret(), "view-token-1");
        assert!(toml::from_str::<Config>("tokens = [{ secret = 'x', scope = 'root' }]").is_err());
    }

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
