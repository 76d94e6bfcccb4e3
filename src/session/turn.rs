//! Short-lived TURN credentials (the "TURN REST API" scheme coturn's `use-auth-secret`
//! checks): username `EXPIRY:ID`, password base64(HMAC-SHA1(secret, username)). The server
//! refuses them after EXPIRY (Unix seconds); nobody needs the long-term secret but the
//! daemon and the TURN server.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};

/// What makes credentials: the shared secret, how long they live, and the servers (URLs
/// without credentials, `turn://host:port[?transport=udp|tcp]` or `turns://…`).
#[derive(Clone)]
pub struct TurnRest {
    pub secret: SecretString,
    pub ttl: Duration,
    pub servers: Vec<String>,
}

impl std::fmt::Debug for TurnRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnRest")
            .field("ttl", &self.ttl)
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

/// A username and password for one TURN user.
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Credentials for `id` that expire `ttl` after `now`. `ttl` may be zero or `now` in the
/// past: expired credentials, for tests.
pub fn credentials(secret: &SecretString, id: &str, now: SystemTime, ttl: Duration) -> Credentials {
    let expiry = now
        .checked_add(ttl)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let username = format!("{expiry}:{id}");
    // HMAC accepts a key of any length.
    let mut mac = match Hmac::<sha1::Sha1>::new_from_slice(secret.expose_secret().as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Credentials { username, password }
}

impl TurnRest {
    /// Fresh credentials for `id`, valid for the configured time.
    pub fn issue(&self, id: &str) -> Credentials {
        credentials(&self.secret, id, SystemTime::now(), self.ttl)
    }

    /// The servers as webrtcbin takes them, with `credentials` inside.
    pub fn urls_with(&self, credentials: &Credentials) -> Vec<String> {
        self.servers
            .iter()
            .filter_map(|server| with_credentials(server, credentials))
            .collect()
    }
}

/// `turn://host:port?…` with `user:pass@` put in, both percent-encoded: a REST username holds
/// a `:`, and webrtcbin splits user from password at the first unescaped one (it unescapes
/// each part after splitting).
pub fn with_credentials(server: &str, credentials: &Credentials) -> Option<String> {
    let mut url = url::Url::parse(server).ok()?;
    let encode = |s: &str| {
        url::form_urlencoded::byte_serialize(s.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    };
    url.set_username(&encode(&credentials.username)).ok()?;
    url.set_password(Some(&encode(&credentials.password)))
        .ok()?;
    Some(url.to_string())
}

/// The servers as a browser's `RTCIceServer` wants them: `turn:host:port?transport=…`.
pub fn browser_url(server: &str) -> Option<String> {
    let url = url::Url::parse(server).ok()?;
    let host = url.host_str()?;
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let query = url.query().map(|q| format!("?{q}")).unwrap_or_default();
    Some(format!("{}:{host}{port}{query}", url.scheme()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_follow_the_turn_rest_scheme() {
        // coturn's documented example: secret "north", user "1600000000:webrtcd".
        let secret = SecretString::from("north".to_string());
        let at = UNIX_EPOCH + Duration::from_secs(1_599_996_400);
        let c = credentials(&secret, "webrtcd", at, Duration::from_secs(3600));
        assert_eq!(c.username, "1600000000:webrtcd");
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"north").unwrap();
        mac.update(b"1600000000:webrtcd");
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(c.password, expected);
        assert_eq!(c.password.len(), 28, "base64 of 20 bytes");
    }

    #[test]
    fn the_colon_in_the_username_is_escaped_for_webrtcbin() {
        let c = Credentials {
            username: "1600000000:webrtcd".into(),
            password: "a+b/c=".into(),
        };
        let url = with_credentials("turn://127.0.0.1:3478?transport=udp", &c).unwrap();
        assert_eq!(
            url,
            "turn://1600000000%3Awebrtcd:a%2Bb%2Fc%3D@127.0.0.1:3478?transport=udp"
        );
        assert_eq!(
            browser_url("turn://127.0.0.1:3478?transport=udp").unwrap(),
            "turn:127.0.0.1:3478?transport=udp"
        );
    }
}
