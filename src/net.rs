//! Where a URL points, as a socket and a TLS handshake take it.

/// Why a URL cannot be connected to.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unreachable {
    #[error("no host in the URL")]
    NoHost,
    #[error("no port for {0}")]
    NoPort(String),
}

/// The host (an IPv6 literal without the brackets `Url::host_str` keeps, which neither a
/// socket address nor a TLS server name takes) and the port (the scheme's default when the
/// URL gives none).
pub fn host_and_port(url: &url::Url) -> Result<(String, u16), Unreachable> {
    let host = match url.host() {
        Some(url::Host::Domain(name)) => name.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(Unreachable::NoHost),
    };
    let port = url
        .port_or_known_default()
        .ok_or_else(|| Unreachable::NoPort(url.scheme().to_string()))?;
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(text: &str) -> Result<(String, u16), Unreachable> {
        host_and_port(&url::Url::parse(text).expect("a URL"))
    }

    #[test]
    fn ports_default_by_scheme() {
        assert_eq!(parts("http://cam.local/x"), Ok(("cam.local".into(), 80)));
        assert_eq!(parts("https://cam.local"), Ok(("cam.local".into(), 443)));
        assert_eq!(
            parts("ws://10.0.0.2/signaling"),
            Ok(("10.0.0.2".into(), 80))
        );
        assert_eq!(
            parts("wss://relay:8443/signaling"),
            Ok(("relay".into(), 8443))
        );
    }

    #[test]
    fn an_ipv6_literal_loses_its_brackets() {
        assert_eq!(
            parts("wss://[::1]:9000/signaling"),
            Ok(("::1".into(), 9000))
        );
        assert_eq!(parts("http://[fe80::1]/"), Ok(("fe80::1".into(), 80)));
    }

    #[test]
    fn a_url_without_host_or_port_is_refused() {
        assert_eq!(parts("unix:/run/webrtcd.sock"), Err(Unreachable::NoHost));
        assert_eq!(
            parts("gopher://host/"),
            Err(Unreachable::NoPort("gopher".into()))
        );
    }
}
