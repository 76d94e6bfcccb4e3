//! The ICE servers a browser or player is told about: STUN, and TURN with short-lived
//! credentials (never the long-term ones of `turn_servers` URLs that carry a password).
//! `GET /api/ice-servers` gives them as JSON, WHEP as `Link` headers.

use crate::session::turn::{TurnRest, browser_url};

#[derive(Debug, Default)]
pub struct IceServers {
    pub stun: Option<String>,
    pub turn_rest: Option<TurnRest>,
    pub relay_only: bool,
}

/// One entry of an `RTCConfiguration`'s `iceServers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserServer {
    pub urls: Vec<String>,
    /// TURN only: a username and password made for this request.
    pub credentials: Option<(String, String)>,
}

impl IceServers {
    /// The servers in the form browsers take (`stun:`/`turn:` URLs); TURN only
    /// `with_turn`, with credentials issued now for `user`.
    pub fn for_browser(&self, user: &str, with_turn: bool) -> Vec<BrowserServer> {
        let mut servers = Vec::new();
        if let Some(stun) = self.stun.as_deref().and_then(browser_url) {
            servers.push(BrowserServer {
                urls: vec![stun],
                credentials: None,
            });
        }
        if let (Some(rest), true) = (&self.turn_rest, with_turn) {
            let credentials = rest.issue(user);
            let urls: Vec<String> = rest.servers.iter().filter_map(|s| browser_url(s)).collect();
            if !urls.is_empty() {
                servers.push(BrowserServer {
                    urls,
                    credentials: Some((credentials.username, credentials.password)),
                });
            }
        }
        servers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_alone_has_no_credentials() {
        let ice = IceServers {
            stun: Some("stun://stun.example:3478".into()),
            ..IceServers::default()
        };
        let servers = ice.for_browser("browser", true);
        assert_eq!(servers.len(), 1);
        assert!(servers[0].urls[0].starts_with("stun:"));
        assert_eq!(servers[0].credentials, None);
        assert!(
            IceServers::default()
                .for_browser("browser", true)
                .is_empty()
        );
    }
}
