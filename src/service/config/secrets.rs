//! Secrets kept out of the config file: the environment and systemd credentials.

use std::path::Path;

use secrecy::SecretString;

use super::ConfigError;

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
