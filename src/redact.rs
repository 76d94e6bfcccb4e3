//! Keeping secrets out of logs: URLs that may carry a password (`turn://user:pass@host`) or a
//! token (`wss://relay/signaling?token=…`) are shown with those parts replaced.

use std::fmt;

use serde::Deserialize;

const HIDDEN: &str = "[redacted]";

/// `text` with any password and any `token` query value replaced; text that is not a URL is
/// hidden whole (it might be nothing but a secret).
pub fn url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        return HIDDEN.into();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some(HIDDEN));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let secret = k.eq_ignore_ascii_case("token") || k.eq_ignore_ascii_case("password");
                (
                    k.into_owned(),
                    if secret {
                        HIDDEN.into()
                    } else {
                        v.into_owned()
                    },
                )
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    let shown = url.to_string();
    // `turn:user:pass@host` has no authority: the password sits in the path.
    match url.cannot_be_a_base() {
        true => match shown.split_once('@') {
            Some((before, after)) => match before.rsplit_once(':') {
                Some((user, _)) => format!("{user}:{HIDDEN}@{after}"),
                None => shown,
            },
            None => shown,
        },
        false => shown,
    }
}

/// A URL that may hold a secret: its `Debug` and `Display` show it redacted; only
/// [`SecretUrl::expose`] gives the real text, for the one place that connects with it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(text: impl Into<String>) -> SecretUrl {
        SecretUrl(text.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", url(&self.0))
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&url(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_tokens_are_hidden() {
        let shown = url("wss://relay.example/signaling?token=s3cret&x=1");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("x=1") && shown.contains("relay.example"),
            "{shown}"
        );
        let shown = url("turns://user:pa55word@turn.example:5349?transport=tcp");
        assert!(!shown.contains("pa55word"), "{shown}");
        assert!(
            shown.contains("user") && shown.contains("turn.example"),
            "{shown}"
        );
        let shown = url("turn:user:pa55word@turn.example:3478");
        assert!(!shown.contains("pa55word"), "{shown}");
        assert!(shown.contains("turn.example:3478"), "{shown}");
        assert_eq!(url("not a url s3cret"), HIDDEN);
        assert_eq!(
            url("ws://relay.example:8443/signaling"),
            "ws://relay.example:8443/signaling"
        );
    }

    #[test]
    fn a_secret_url_shows_redacted() {
        let secret = SecretUrl::new("turn://u:pa55word@h:3478");
        assert!(!format!("{secret:?} {secret}").contains("pa55word"));
        assert_eq!(secret.expose(), "turn://u:pa55word@h:3478");
    }
}
