//! Checking a config before it is used: every problem found, named by its key.

use std::net::IpAddr;

use super::{Config, TransportPolicy};

impl Config {
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
            if let Err(why) = crate::service::guard::parse_origin(origin) {
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
        if let Some(recording) = &self.recording {
            out.extend(recording.problems());
        }
        out
    }
}

impl super::RecordingConfig {
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(2..=3600).contains(&self.segment_secs) {
            out.push("recording.segment_secs: between 2 and 3600".into());
        }
        if self.pre_secs > 30 {
            out.push("recording.pre_secs: at most 30".into());
        }
        if self.post_secs > 600 {
            out.push("recording.post_secs: at most 600".into());
        }
        if self.keep_days == Some(0) {
            out.push("recording.keep_days: at least 1 (or leave it out)".into());
        }
        for name in self.cameras.iter().flatten() {
            if let Err(why) = crate::camera_name::CameraName::parse(name) {
                out.push(format!("recording.cameras: {name:?}: {why}"));
            }
        }
        out
    }
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
