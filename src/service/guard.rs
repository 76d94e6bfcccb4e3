//! The checks in front of every route, before the token's: whom a request is addressed to
//! (`Host`), which page sent it (`Origin`), and what its body is (`Content-Type`).
//!
//! - **Host.** A DNS-rebinding page (`evil.example` re-pointed at 127.0.0.1 or at the
//!   device) is same-origin with itself, so `Origin` cannot stop it; its requests still say
//!   `Host: evil.example`. Allowed: loopback names and addresses, the names in the TLS
//!   certificate, `allowed_hosts`; on a listener that is not loopback-only also any address,
//!   and this machine's name (`NAME`, `NAME.local`).
//! - **Origin.** Browsers send it on every cross-origin request and every WebSocket; a request
//!   with one must come from the daemon's own origin or `allowed_origins`. WebSockets have no
//!   CORS: without this check any page could open `/signaling`.
//! - **Content-Type.** A cross-site form or `fetch` without preflight can only send
//!   `text/plain`, form or multipart bodies; requiring JSON (or WHEP's SDP types, which are
//!   no more CORS-safelisted) on `POST` and `PATCH` keeps them from placing calls.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::tls::Reloadable;

/// What the listener that accepted a request is: a request extension set by the listener.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    /// The connection is TLS (`https`/`wss`).
    pub secure: bool,
    /// The listener is bound to a loopback address only.
    pub loopback: bool,
}

/// The configured exceptions, and the certificate whose names count as ours.
pub struct Guard {
    allowed_origins: Vec<url::Origin>,
    allowed_hosts: Vec<String>,
    tls: Option<Arc<Reloadable>>,
    hostname: Option<String>,
}

/// Parses `https://host:port` as a web origin (no path, query or credentials).
pub fn parse_origin(text: &str) -> Result<url::Origin, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("must be http:// or https:// with a host".into());
    }
    if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
        return Err("an origin is scheme://host[:port], nothing after it".into());
    }
    Ok(url.origin())
}

impl Guard {
    pub fn new(
        allowed_origins: &[String],
        allowed_hosts: &[String],
        tls: Option<Arc<Reloadable>>,
    ) -> Guard {
        Guard {
            // Config checks reported the ones that do not parse.
            allowed_origins: allowed_origins
                .iter()
                .filter_map(|o| parse_origin(o).ok())
                .collect(),
            allowed_hosts: allowed_hosts
                .iter()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            tls,
            hostname: super::tls::hostname(),
        }
    }

    /// Why the request must be refused, if it must.
    pub fn check(
        &self,
        listening: Listening,
        method: &Method,
        headers: &HeaderMap,
        host: Option<&str>,
    ) -> Result<(), (StatusCode, String)> {
        let forbidden = |why: String| Err((StatusCode::FORBIDDEN, why));
        let Some(host) = host else {
            return forbidden("a Host header is required".into());
        };
        let Some(name) = host_name(host) else {
            return forbidden("the Host header is not a host".into());
        };
        if !self.host_allowed(&name, listening.loopback) {
            return forbidden(format!(
                "requests addressed to {} are not served here; add the name to allowed_hosts",
                crate::protocol::escape_for_log(&name)
            ));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let scheme = if listening.secure { "https" } else { "http" };
            let own = url::Url::parse(&format!("{scheme}://{host}")).map(|u| u.origin());
            let theirs = origin
                .to_str()
                .ok()
                .and_then(|o| url::Url::parse(o).ok())
                .map(|u| u.origin());
            let allowed = match &theirs {
                Some(theirs) => {
                    own.as_ref().is_ok_and(|own| own == theirs)
                        || self.allowed_origins.contains(theirs)
                }
                // `Origin: null` (a sandboxed frame, a file) and garbage.
                None => false,
            };
            if !allowed {
                return forbidden(
                    "pages from other origins may not use this device; add the origin to \
                     allowed_origins"
                        .into(),
                );
            }
        }
        if matches!(*method, Method::POST | Method::PATCH | Method::PUT)
            && !is_accepted_body(headers.get(header::CONTENT_TYPE))
        {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the body must be application/json (or, for WHEP, application/sdp or \
                 application/trickle-ice-sdpfrag)"
                    .into(),
            ));
        }
        Ok(())
    }

    fn host_allowed(&self, name: &str, loopback_listener: bool) -> bool {
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            // A browser reaches an address literal only by being sent to it: that is no
            // rebinding. On a loopback listener only loopback addresses are honest.
            return ip.is_loopback() || !loopback_listener;
        }
        if self.allowed_hosts.iter().any(|h| h == name) {
            return true;
        }
        if let Some(tls) = &self.tls
            && tls.names().iter().any(|n| n == name)
        {
            return true;
        }
        if !loopback_listener
            && let Some(me) = &self.hostname
            && (name == me || name.strip_suffix(".local") == Some(me.as_str()))
        {
            return true;
        }
        false
    }
}

/// The host part of a `Host` header (`name`, `name:port`, `[v6]:port`), lower case, without
/// a trailing dot; `None` when it is not one.
fn host_name(host: &str) -> Option<String> {
    let authority: axum::http::uri::Authority = host.parse().ok()?;
    let name = authority.host();
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    if name.is_empty() || authority.as_str().contains('@') {
        return None;
    }
    Some(name.trim_end_matches('.').to_ascii_lowercase())
}

/// Body types a page from another origin cannot send without a CORS preflight.
const ACCEPTED_BODIES: [&str; 3] = [
    "application/json",
    "application/sdp",
    "application/trickle-ice-sdpfrag",
];

fn is_accepted_body(content_type: Option<&axum::http::HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            ACCEPTED_BODIES
                .iter()
                .any(|a| v.trim().eq_ignore_ascii_case(a))
        })
}

/// The middleware: runs [`Guard::check`] on every request.
pub async fn guard(
    State(guard): State<Arc<Guard>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let listening = req
        .extensions()
        .get::<Listening>()
        .copied()
        // Requests that did not come through our listener (tests driving the router).
        .unwrap_or(Listening {
            secure: false,
            loopback: true,
        });
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    match guard.check(listening, req.method(), req.headers(), host.as_deref()) {
        Ok(()) => next.run(req).await,
        Err((status, why)) => {
            tracing::debug!(%status, path = req.uri().path(), "refused: {why}");
            (status, format!("{why}\n")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK: Listening = Listening {
        secure: false,
        loopback: true,
    };
    const LAN: Listening = Listening {
        secure: false,
        loopback: false,
    };

    fn guard() -> Guard {
        Guard::new(
            &["https://nvr.example:8123".into()],
            &["webrtcd.test".into()],
            None,
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn status(
        l: Listening,
        method: Method,
        pairs: &[(&'static str, &str)],
        host: &str,
    ) -> Option<StatusCode> {
        guard()
            .check(l, &method, &headers(pairs), Some(host))
            .err()
            .map(|(s, _)| s)
    }

    #[test]
    fn hosts_on_a_loopback_listener() {
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "a.localhost",
            "webrtcd.test:1",
        ] {
            assert_eq!(status(LOOPBACK, Method::GET, &[], ok), None, "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "192.168.1.5:8080",
            "webrtcd.test.evil",
        ] {
            assert_eq!(
                status(LOOPBACK, Method::GET, &[], bad),
                Some(StatusCode::FORBIDDEN),
                "{bad}"
            );
        }
    }

    #[test]
    fn hosts_on_a_lan_listener() {
        assert_eq!(status(LAN, Method::GET, &[], "192.168.1.5:8080"), None);
        assert_eq!(
            status(LAN, Method::GET, &[], "evil.example:8080"),
            Some(StatusCode::FORBIDDEN)
        );
        if let Some(me) = super::super::tls::hostname() {
            assert_eq!(
                status(LAN, Method::GET, &[], &format!("{me}.local:8080")),
                None
            );
            assert_eq!(
                status(LOOPBACK, Method::GET, &[], &format!("{me}.local:8080")),
                Some(StatusCode::FORBIDDEN),
                "not on a loopback listener"
            );
        }
    }

    #[test]
    fn origins() {
        let host = "127.0.0.1:8080";
        let get = |origin: &str| status(LOOPBACK, Method::GET, &[("origin", origin)], host);
        assert_eq!(get("http://127.0.0.1:8080"), None, "own origin");
        assert_eq!(get("https://nvr.example:8123"), None, "allowed");
        assert_eq!(get("http://evil.example"), Some(StatusCode::FORBIDDEN));
        assert_eq!(
            get("http://127.0.0.1:9999"),
            Some(StatusCode::FORBIDDEN),
            "other port"
        );
        assert_eq!(
            get("https://127.0.0.1:8080"),
            Some(StatusCode::FORBIDDEN),
            "other scheme"
        );
        assert_eq!(get("null"), Some(StatusCode::FORBIDDEN));
        let tls = Listening {
            secure: true,
            loopback: true,
        };
        assert_eq!(
            status(
                tls,
                Method::GET,
                &[("origin", "https://localhost:8443")],
                "localhost:8443"
            ),
            None
        );
        // Default ports are the same origin as no port.
        assert_eq!(
            status(
                LOOPBACK,
                Method::GET,
                &[("origin", "http://localhost")],
                "localhost:80"
            ),
            None
        );
    }

    #[test]
    fn bodies_must_be_json() {
        let host = "127.0.0.1:8080";
        let post = |ct: Option<&str>| match ct {
            Some(ct) => status(LOOPBACK, Method::POST, &[("content-type", ct)], host),
            None => status(LOOPBACK, Method::POST, &[], host),
        };
        assert_eq!(post(Some("application/json")), None);
        assert_eq!(post(Some("application/json; charset=utf-8")), None);
        for bad in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            None,
        ] {
            assert_eq!(
                post(bad),
                Some(StatusCode::UNSUPPORTED_MEDIA_TYPE),
                "{bad:?}"
            );
        }
        assert_eq!(status(LOOPBACK, Method::DELETE, &[], host), None);
    }

    #[test]
    fn origin_syntax() {
        assert!(parse_origin("https://nvr.example:8123").is_ok());
        assert!(parse_origin("nvr.example").is_err());
        assert!(parse_origin("https://nvr.example/path").is_err());
        assert!(parse_origin("ftp://nvr.example").is_err());
    }
}
