//! Bearer tokens and what each may do. A token comes as `Authorization: Bearer T` or
//! `?token=T` (a browser's WebSocket cannot set headers). A token has a scope:
//!
//! - `view`: `/signaling` to call the device and watch or talk to it (and the page);
//! - `admin`: everything, `/api/*`, `/metrics`, `/healthz` and calls to any peer.
//!
//! With no token configured everything is open (the listener is loopback-only by default).

use std::fmt;

use axum::http::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    View,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::View => "view",
            Scope::Admin => "admin",
        }
    }

    /// Whether a holder of `self` may do what needs `needed`.
    pub fn allows(self, needed: Scope) -> bool {
        self >= needed
    }
}

/// One accepted token. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct Token {
    secret: SecretString,
    pub scope: Scope,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}, [secret])", self.scope.as_str())
    }
}

impl Token {
    pub fn new(secret: impl Into<String>, scope: Scope) -> Token {
        Token {
            secret: SecretString::from(secret.into()),
            scope,
        }
    }

    pub fn secret(&self) -> &str {
        self.secret.expose_secret()
    }
}

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Vec<Token>);

impl Tokens {
    pub fn new(tokens: Vec<Token>) -> Tokens {
        Tokens(tokens)
    }

    /// No token configured: everything is open.
    pub fn open(&self) -> bool {
        self.0.is_empty()
    }

    /// The scope the request's token grants: `Admin` when no tokens are configured, `None`
    /// when the request carries no accepted token.
    pub fn scope_of(&self, headers: &HeaderMap, query: Option<&str>) -> Option<Scope> {
        if self.open() {
            return Some(Scope::Admin);
        }
        let from_header = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string());
        let from_query = query.and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
        });
        [from_header, from_query]
            .iter()
            .flatten()
            .filter_map(|offered| self.match_token(offered))
            .max()
    }

    /// The scope of the configured token equal to `offered`. Every token is compared, each
    /// in constant time over SHA-256 digests, so neither the time taken nor an early exit
    /// tells how much of a token, or how long a token, matched.
    fn match_token(&self, offered: &str) -> Option<Scope> {
        let offered = Sha256::digest(offered.as_bytes());
        let mut found: Option<Scope> = None;
        for token in &self.0 {
            let known = Sha256::digest(token.secret().as_bytes());
            if bool::from(known.ct_eq(&offered)) {
                found = found.max(Some(token.scope));
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(axum::http::header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    #[test]
    fn no_tokens_means_open() {
        assert_eq!(
            Tokens::default().scope_of(&headers(None), None),
            Some(Scope::Admin)
        );
    }

    #[test]
    fn header_or_query_token_with_its_scope() {
        let tokens = Tokens::new(vec![
            Token::new("s3cret-admin", Scope::Admin),
            Token::new("s3cret-view", Scope::View),
        ]);
        let scope = |h: Option<&str>, q: Option<&str>| tokens.scope_of(&headers(h), q);
        assert_eq!(scope(Some("Bearer s3cret-admin"), None), Some(Scope::Admin));
        assert_eq!(
            scope(None, Some("a=1&token=s3cret-view")),
            Some(Scope::View)
        );
        assert_eq!(scope(None, None), None, "missing");
        assert_eq!(scope(Some("Bearer nope"), None), None, "wrong");
        assert_eq!(scope(None, Some("token=s3cret-vie")), None, "prefix");
        assert_eq!(scope(Some("s3cret-admin"), None), None, "no Bearer");
        // Two tokens offered: the wider scope counts.
        assert_eq!(
            scope(Some("Bearer s3cret-view"), Some("token=s3cret-admin")),
            Some(Scope::Admin)
        );
    }

    #[test]
    fn scopes_are_ordered() {
        assert!(Scope::Admin.allows(Scope::View));
        assert!(Scope::View.allows(Scope::View));
        assert!(!Scope::View.allows(Scope::Admin));
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let tokens = Tokens::new(vec![Token::new("hunter2-hunter2", Scope::View)]);
        let shown = format!("{tokens:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("view"), "{shown}");
    }
}
