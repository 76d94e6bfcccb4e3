//! Secure by default, against real browsers, real TLS and a real journald: pages from other
//! origins and DNS-rebinding names are refused, bodies must be JSON, HTTPS/WSS with a test CA
//! (reloaded on SIGHUP), `wss://` relays verified, token scopes, no secret in any log, and no
//! peer text that can forge a journal entry. Each test runs in its own network namespace
//! (see common/browser.rs).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_tungstenite::tungstenite::Message as Frame;
use base64::Engine as _;
use common::browser::{Driven, Net};
use common::journal::Journald;
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webrtcd::service::api_client;

// ---- helpers ------------------------------------------------------------------------------

/// A certificate authority made for one test, and the server certificates it signs.
struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    /// The CA certificate, PEM.
    file: PathBuf,
}

impl TestCa {
    fn new(dir: &Path) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "webrtcd test CA");
        let key = rcgen::KeyPair::generate().expect("CA key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA");
        std::fs::create_dir_all(dir).expect("dir");
        let file = dir.join("ca.pem");
        std::fs::write(&file, issuer.pem()).expect("write CA");
        TestCa { issuer, file }
    }

    /// Signs a certificate for `names` with a fresh key, writes both as PEM; returns the
    /// base64 SHA-256 of its public key (what Chromium's SPKI list takes) and the SHA-256 of
    /// the certificate.
    fn server_cert(&self, names: &[&str], cert: &Path, key: &Path) -> (String, Vec<u8>) {
        use rcgen::PublicKeyData;
        use sha2::Digest;
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        let leaf = params.signed_by(&leaf_key, &self.issuer).expect("sign");
        std::fs::write(cert, leaf.pem()).expect("write cert");
        std::fs::write(key, leaf_key.serialize_pem()).expect("write key");
        let spki = sha2::Sha256::digest(leaf_key.subject_public_key_info());
        let spki = base64::engine::general_purpose::STANDARD.encode(spki);
        (spki, sha2::Sha256::digest(leaf.der()).to_vec())
    }
}

/// A port nobody in this namespace is using.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One raw HTTP/1.1 request (any headers, any Host); the status code.
async fn raw_status(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> u16 {
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
    let text = String::from_utf8_lossy(&reply);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

async fn status_with_token(url: &str, token: Option<&str>) -> u16 {
    api_client::request("GET", url, None, token)
        .await
        .expect("request")
        .0
}

async fn registered(p: &Proc) -> bool {
    api_client::request("GET", &p.api("/api/status"), None, None)
        .await
        .ok()
        .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
        .is_some_and(|s| s["registered"] == true)
}

// ---- Host, Origin, Content-Type ---------------------------------------------------------------

netns_test!(hosts_origins_and_bodies_are_checked, Net::LoopbackOnly, {
    let profile = light_profile("guard-door", "");
    let door = Proc::daemon("guard-door", &profile, &[]);
    let port = door.addr.rsplit(':').next().expect("port").to_string();
    let own = door.addr.clone();
    let get = |host: String, extra: Option<(&'static str, String)>| {
        let addr = door.addr.clone();
        async move {
            let mut headers = vec![("Host", host.clone())];
            headers.extend(extra);
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            raw_status(&addr, "GET", "/api/status", &headers, "").await
        }
    };
    // DNS rebinding: a name that is not ours, with or without the port.
    assert_eq!(get("evil.example".into(), None).await, 403);
    assert_eq!(get(format!("evil.example:{port}"), None).await, 403);
    assert_eq!(get(format!("192.168.1.7:{port}"), None).await, 403);
    assert_eq!(get(own.clone(), None).await, 200);
    assert_eq!(get(format!("localhost:{port}"), None).await, 200);
    // Origin: our own, or nothing (a non-browser client); never another page's.
    let origin = |o: &str| Some(("Origin", o.to_string()));
    assert_eq!(
        get(own.clone(), origin(&format!("http://{own}"))).await,
        200
    );
    assert_eq!(get(own.clone(), origin("http://evil.example")).await, 403);
    assert_eq!(get(own.clone(), origin("null")).await, 403);
    // A WebSocket from another origin (browsers allow any page to open one).
    let ws_headers = |origin: &'static str| {
        vec![
            ("Host", own.clone()),
            ("Upgrade", "websocket".to_string()),
            ("Connection", "Upgrade".to_string()),
            ("Sec-WebSocket-Version", "13".to_string()),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==".to_string()),
            ("Origin", origin.to_string()),
        ]
    };
    for (origin, expected) in [("http://evil.example", 403), ("", 101)] {
        let mut headers = ws_headers(origin);
        if origin.is_empty() {
            headers.pop();
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            raw_status(&door.addr, "GET", "/signaling", &headers, "").await,
            expected,
            "WebSocket with Origin {origin:?}"
        );
    }
    // Bodies: JSON only, so a cross-site form or a no-cors fetch cannot place a call.
    let post = |content_type: &'static str, body: &'static str| {
        let addr = door.addr.clone();
        let own = own.clone();
        async move {
            raw_status(
                &addr,
                "POST",
                "/api/calls",
                &[("Host", own.as_str()), ("Content-Type", content_type)],
                body,
            )
            .await
        }
    };
    assert_eq!(post("text/plain", r#"{"to":"nobody"}"#).await, 415);
    assert_eq!(
        post("application/x-www-form-urlencoded", "to=nobody").await,
        415
    );
    assert_eq!(post("multipart/form-data; boundary=x", "--x--").await, 415);
    assert_eq!(post("application/json", r#"{"to":"nobody"}"#).await, 404);
    assert!(calls(&door).await.is_empty());
});

// A page from another origin (a second port: another origin, same host) tries the device from
// a real Chromium: its WebSocket and its POST are refused; the device's own page works.
netns_test!(
    a_page_from_another_origin_cannot_use_the_device,
    Net::LoopbackOnly,
    {
        let profile = light_profile("origin-door", "");
        let door = Proc::daemon("origin-door", &profile, &[]);
        let evil_page = format!(
            r#"<!doctype html><title>evil</title><script>
window.result = {{ ws: null, post: null }};
const ws = new WebSocket("ws://{addr}/signaling");
ws.onopen = () => {{ window.result.ws = "open"; ws.send(JSON.stringify({{type: "register", id: "evil"}})); }};
ws.onerror = () => {{ window.result.ws = window.result.ws || "refused"; }};
fetch("http://{addr}/api/calls", {{ method: "POST", mode: "no-cors",
  headers: {{ "Content-Type": "text/plain" }}, body: JSON.stringify({{ to: "evil" }}) }})
  .then(() => {{ window.result.post = "sent"; }}, () => {{ window.result.post = "failed"; }});
</script>"#,
            addr = door.addr
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let evil = listener.local_addr().expect("addr");
        // What the device's page would leak to another origin, if it posted its reports there.
        let leaked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = std::sync::Arc::clone(&leaked);
        let app = axum::Router::new()
            .route(
                "/",
                axum::routing::get(move || {
                    let page = evil_page.clone();
                    async move { axum::response::Html(page) }
                }),
            )
            .route(
                "/report",
                axum::routing::post(move || {
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    async { "" }
                }),
            );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let chrome = Driven::start().await;
        chrome.open(&format!("http://{evil}/")).await;
        let result = wait_for(
            "the evil page's attempts",
            Duration::from_secs(20),
            || async {
                let r = chrome.script("return window.result;").await;
                (!r["ws"].is_null() && !r["post"].is_null()).then_some(r)
            },
        )
        .await;
        assert_eq!(result["ws"], "refused", "{result}");
        let s = status(&door).await;
        assert!(
            !s["peers"]
                .as_array()
                .expect("peers")
                .contains(&json!("evil")),
            "{s}"
        );
        // The POST left (no-cors hides the answer from the page) but placed no call.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(calls(&door).await.is_empty());
        assert!(
            !door.log_text().contains("call starting"),
            "no call was started"
        );

        // The device's own page, in the same browser, works; it reports its state
        // (addresses included) only to its own origin.
        chrome
            .open(&format!(
                "http://{}/?id=owner&report=http://{evil}/report",
                door.addr
            ))
            .await;
        wait_peer(&door, "owner").await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(leaked.load(std::sync::atomic::Ordering::Relaxed), 0);
    }
);

// ---- HTTPS and WSS ------------------------------------------------------------------------

/// The leaf certificate a TLS server at `addr` presents for `name`, trusting `ca` only.
async fn served_certificate(addr: &str, name: &str, ca: &Path) -> Vec<u8> {
    use sha2::Digest;
    let config = webrtcd::service::tls::client_config(Some(ca)).expect("client config");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let server = rustls_pki_types::ServerName::try_from(name.to_string()).expect("name");
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(server, tcp)
        .await
        .expect("TLS handshake with the test CA");
    let leaf = tls.get_ref().1.peer_certificates().expect("certificates")[0].clone();
    sha2::Sha256::digest(leaf.as_ref()).to_vec()
}

/// What the page's own state says about its call (the page's `state` is a global).
async fn page_call(chrome: &Driven) -> Value {
    chrome
        .script(
            "return state.call ? {connected: state.call.connected, \
             frames: (state.call.stats || {}).framesDecoded || 0, \
             audio: (state.call.stats || {}).audioPackets || 0} : null;",
        )
        .await
}

// With a default route: over plain HTTP Chromium has no media permission, and then offers only
// its default route's address, behind an mDNS name (see the browsers tests).
netns_test!(
    https_intercom_in_chromium_reload_and_the_http_hint,
    Net::WithDummyRoute,
    {
        let dir = artifacts_dir().join("tls-door");
        let _ = std::fs::remove_dir_all(&dir);
        let ca = TestCa::new(&dir);
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let (spki1, first) = ca.server_cert(&["webrtcd.test"], &cert, &key);
        // The certificate SIGHUP will load, made now so Chromium can be told to trust both.
        let (cert2, key2) = (dir.join("cert2.pem"), dir.join("key2.pem"));
        let (spki2, second) = ca.server_cert(&["webrtcd.test"], &cert2, &key2);
        let tls_port = free_port();
        let cfg = config_file(
            "tls-door",
            &format!(
                "tls_cert = '{}'\ntls_key = '{}'\ntls_listen = '127.0.0.1:{tls_port}'\n",
                cert.display(),
                key.display()
            ),
        );
        let profile = light_profile("tls-door", "");
        let mut door = Proc::daemon("tls-door", &profile, &["--config", &cfg]);
        let http_port = door.addr.rsplit(':').next().expect("port").to_string();
        let tls_addr = format!("127.0.0.1:{tls_port}");
        assert_eq!(
            served_certificate(&tls_addr, "webrtcd.test", &ca.file).await,
            first
        );

        // webrtcd.test is not localhost: the secure context comes from HTTPS alone.
        let chrome = Driven::start_with(&[
            format!("--ignore-certificate-errors-spki-list={spki1},{spki2}"),
            "--host-resolver-rules=MAP webrtcd.test 127.0.0.1,MAP * ~NOTFOUND,EXCLUDE 127.0.0.1"
                .into(),
        ])
        .await;
        chrome
            .open(&format!(
                "https://webrtcd.test:{tls_port}/?id=talker&mode=intercom&autoanswer=1"
            ))
            .await;
        wait_peer(&door, "talker").await;
        let page = chrome
        .script("return {secure: window.isSecureContext, mode: document.getElementById('mode').value};")
        .await;
        assert_eq!(page, json!({"secure": true, "mode": "intercom"}));
        // Both ways: the browser sends its camera and microphone, and plays the device's.
        let session = place_call(&door, "talker").await;
        wait_call(&door, &session, "the browser's media", media_and_pings_flow).await;
        let before = wait_for(
            "the browser to decode video",
            Duration::from_secs(30),
            || async {
                let c = page_call(&chrome).await;
                (c["frames"].as_u64().unwrap_or(0) >= 30 && c["audio"].as_u64().unwrap_or(0) > 0)
                    .then_some(c)
            },
        )
        .await;

        // A new certificate, SIGHUP: the next connection gets it, the call goes on.
        std::fs::copy(&cert2, &cert).expect("copy");
        std::fs::copy(&key2, &key).expect("copy");
        let hup = std::process::Command::new("kill")
            .args(["-HUP", &door.pid().to_string()])
            .status()
            .expect("kill");
        assert!(hup.success());
        wait_for("the new certificate", Duration::from_secs(10), || async {
            (served_certificate(&tls_addr, "webrtcd.test", &ca.file).await == second).then_some(())
        })
        .await;
        let frames = before["frames"].as_u64().unwrap_or(0);
        wait_for("the call to go on", Duration::from_secs(10), || async {
            let c = page_call(&chrome).await;
            (c["frames"].as_u64().unwrap_or(0) > frames + 30).then_some(())
        })
        .await;
        let call = calls(&door).await;
        assert_eq!(call[0]["state"], "connected", "{call:?}");

        // The same page over plain HTTP from a non-localhost name: viewing only, with the way
        // to HTTPS.
        chrome
            .open(&format!(
                "http://webrtcd.test:{http_port}/?id=watcher&autoanswer=1"
            ))
            .await;
        wait_peer(&door, "watcher").await;
        let page = chrome
            .script(
                "return {secure: window.isSecureContext, \
             hint: document.getElementById('https-hint').textContent, \
             talk: !document.querySelector('#mode option[value=intercom]').disabled};",
            )
            .await;
        assert_eq!(page["secure"], false, "{page}");
        assert_eq!(page["talk"], false, "{page}");
        let hint = page["hint"].as_str().unwrap_or_default();
        assert!(
            hint.contains(&format!("https://webrtcd.test:{tls_port}/")),
            "{hint}"
        );
        place_call(&door, "watcher").await;
        wait_for(
            "the HTTP page to watch",
            Duration::from_secs(30),
            || async {
                let c = page_call(&chrome).await;
                (c["frames"].as_u64().unwrap_or(0) >= 30).then_some(())
            },
        )
        .await;
        // Plain HTTP on the TLS port: a redirect, not garbage.
        let redirect = raw_status(&tls_addr, "GET", "/", &[("Host", "webrtcd.test")], "").await;
        assert_eq!(redirect, 308);
        // ... to a host of its own only: a foreign Host is refused, not redirected to.
        let foreign = raw_status(&tls_addr, "GET", "/", &[("Host", "evil.example")], "").await;
        assert_eq!(foreign, 403, "no open redirect");
        assert!(door.terminate().is_some_and(|s| s.success()));
    }
);

// `tls = "self-signed"`: made at the first start for the configured names, its fingerprint
// logged, the same one after a restart, served over HTTPS.
netns_test!(
    a_self_signed_certificate_is_made_once_and_kept,
    Net::LoopbackOnly,
    {
        let cfg = config_file(
            "self-signed-door",
            "tls = 'self-signed'\ntls_names = ['webrtcd.test', '127.0.0.1']\n",
        );
        let _ = std::fs::remove_dir_all(state_dir("self-signed-door"));
        let profile = light_profile("self-signed-door", "");
        let fingerprint_of = |door: &Proc| {
            let log = door.log_text();
            let line = log
                .lines()
                .find(|l| l.contains("TLS certificate (SHA-256)"))
                .unwrap_or_else(|| panic!("no fingerprint logged: {log}"))
                .to_string();
            line.split("fingerprint=")
                .nth(1)
                .and_then(|f| f.split_whitespace().next())
                .expect("fingerprint")
                .to_string()
        };
        let mut door = Proc::daemon("self-signed-door", &profile, &["--config", &cfg]);
        let first = fingerprint_of(&door);
        assert!(door.terminate().is_some_and(|s| s.success()));
        let door = Proc::daemon("self-signed-door", &profile, &["--config", &cfg]);
        assert_eq!(fingerprint_of(&door), first, "kept across restarts");
        // What is served is what was logged, and what the state directory keeps.
        let served = served_fingerprint_insecure(&door.addr).await;
        assert_eq!(served, first.replace(':', "").to_lowercase());
        let kept = std::fs::read_to_string(state_dir("self-signed-door").join("tls-cert.pem"))
            .expect("the certificate in the state directory");
        let kept = pem::parse(kept).expect("PEM");
        let kept: String = {
            use sha2::Digest;
            sha2::Sha256::digest(kept.contents())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        assert_eq!(kept, served);
    }
);

/// The SHA-256 of the certificate a TLS server presents, hex, checking nothing (what a person
/// compares with the logged fingerprint before accepting the certificate).
async fn served_fingerprint_insecure(addr: &str) -> String {
    use sha2::Digest;
    #[derive(Debug)]
    struct AcceptAnything(std::sync::Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AcceptAnything {
        fn verify_server_cert(
            &self,
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &[rustls_pki_types::CertificateDer<'_>],
            _: &rustls_pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = webrtcd::service::tls::provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AcceptAnything(provider)))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("webrtcd.test").expect("name");
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let leaf = tls.get_ref().1.peer_certificates().expect("certificates")[0].clone();
    sha2::Sha256::digest(leaf.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// A `wss://` relay whose certificate the daemon cannot verify is refused, clearly; with the CA
// configured it registers, and its token never reaches a log, through a relay restart too.
netns_test!(
    wss_relays_are_verified_and_secrets_stay_out_of_logs,
    Net::LoopbackOnly,
    {
        const RELAY_TOKEN: &str = "relay-secret-0123";
        const TURN_PASSWORD: &str = "turn-pa55word-0123";
        let dir = artifacts_dir().join("wss-relay");
        let _ = std::fs::remove_dir_all(&dir);
        let ca = TestCa::new(&dir);
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        ca.server_cert(&["127.0.0.1"], &cert, &key);
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let relay_args = [
            "--token",
            RELAY_TOKEN,
            "--tls-cert",
            cert.to_str().expect("path"),
            "--tls-key",
            key.to_str().expect("path"),
        ];
        let mut relay = Proc::relay("wss-relay", &listen, &relay_args);
        let url = format!("wss://{listen}/signaling");
        let turn =
            format!("\n[ice]\nturn_servers = ['turn://user:{TURN_PASSWORD}@127.0.0.1:3478']\n");

        // No CA configured: the system's roots do not know the test CA.
        let untrusting = Proc::daemon_env(
            "wss-untrusting",
            &light_profile("wss-untrusting", ""),
            &[
                "--config",
                &config_file("wss-untrusting", &format!("relay = '{url}'\n{turn}")),
            ],
            &[("WEBRTCD_RELAY_TOKEN", RELAY_TOKEN)],
        );
        // With the CA: one sends the token in a header, one still has it in the URL.
        let in_header = Proc::daemon_env(
            "wss-header",
            &light_profile("wss-header", ""),
            &[
                "--config",
                &config_file(
                    "wss-header",
                    &format!(
                        "relay = '{url}'\nrelay_ca = '{}'\n{turn}",
                        ca.file.display()
                    ),
                ),
            ],
            &[("WEBRTCD_RELAY_TOKEN", RELAY_TOKEN)],
        );
        let in_url = Proc::daemon(
            "wss-url",
            &light_profile("wss-url", ""),
            &[
                "--config",
                &config_file(
                    "wss-url",
                    &format!(
                        "relay = '{url}?token={RELAY_TOKEN}'\nrelay_ca = '{}'\n{turn}",
                        ca.file.display()
                    ),
                ),
            ],
        );
        for p in [&in_header, &in_url] {
            wait_for(
                "registration over wss://",
                Duration::from_secs(15),
                || async { registered(p).await.then_some(()) },
            )
            .await;
        }
        wait_for(
            "the refusal in the log",
            Duration::from_secs(10),
            || async {
                untrusting
                    .log_text()
                    .contains("UnknownIssuer")
                    .then_some(())
            },
        )
        .await;
        assert!(!registered(&untrusting).await);
        assert_eq!(
            status_with_token(&untrusting.api("/healthz"), None).await,
            503
        );

        // The relay restarts: both reconnect (logging the relay's URL as they do).
        relay.kill();
        for p in [&in_header, &in_url] {
            wait_for("the link to notice", Duration::from_secs(15), || async {
                (!registered(p).await).then_some(())
            })
            .await;
        }
        let _relay = Proc::relay("wss-relay-again", &listen, &relay_args);
        for p in [&in_header, &in_url] {
            wait_for("registration again", Duration::from_secs(15), || async {
                registered(p).await.then_some(())
            })
            .await;
        }
        for p in [&untrusting, &in_header, &in_url] {
            let log = p.log_text();
            assert!(
                log.contains("relay"),
                "{} logged nothing about its relay",
                p.name
            );
            for secret in [RELAY_TOKEN, TURN_PASSWORD] {
                assert!(!log.contains(secret), "{} logged {secret}", p.name);
            }
        }
    }
);

// ---- token scopes -------------------------------------------------------------------------

netns_test!(
    a_view_token_watches_but_cannot_administer,
    Net::LoopbackOnly,
    {
        let cfg = config_file(
            "scoped-door",
            "tokens = [{ secret = 'admin-token-0123', scope = 'admin' }, \
         { secret = 'view-token-0123', scope = 'view' }]\n",
        );
        let door = Proc::daemon(
            "scoped-door",
            &light_profile("scoped-door", ""),
            &["--config", &cfg],
        );
        let viewer_cfg = config_file(
            "scoped-viewer",
            &format!(
                "relay = '{}'\nrelay_token = 'view-token-0123'\n",
                door.ws_url()
            ),
        );
        let viewer = Proc::daemon(
            "scoped-viewer",
            &light_profile("scoped-viewer", ""),
            &["--config", &viewer_cfg],
        );
        wait_peer(&viewer, "scoped-door").await;
        let session = place_call(&viewer, "scoped-door").await;
        // The viewer watches and hears the door (its own API needs no token) …
        wait_call(&viewer, &session, "the door's media", media_and_pings_flow).await;
        // … and the door, asked with the admin token, has the call.
        let admin = Some("admin-token-0123");
        let (code, body) = api_client::request("GET", &door.api("/api/calls"), None, admin)
            .await
            .expect("GET");
        assert_eq!(code, 200);
        let door_calls: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(door_calls[0]["peer"], "scoped-viewer", "{door_calls}");
        for path in ["/api/calls", "/api/status", "/metrics", "/healthz"] {
            let url = door.api(path);
            assert_eq!(
                status_with_token(&url, Some("view-token-0123")).await,
                403,
                "{path}"
            );
            assert_eq!(status_with_token(&url, None).await, 401, "{path}");
            assert_eq!(
                status_with_token(&url, Some("admin-token-0123")).await,
                200,
                "{path}"
            );
        }
        // The call events (a stream that never ends: only its refusals are read here) and
        // the decisions on a ringing call need the admin token too.
        for (method, path) in [
            ("GET", "/api/events"),
            ("POST", "/api/calls/nosuch/accept"),
            ("POST", "/api/calls/nosuch/reject"),
        ] {
            let url = door.api(path);
            for (token, expected) in [(Some("view-token-0123"), 403), (None, 401)] {
                let body = (method == "POST").then(|| "{}".to_string());
                let (code, _) = api_client::request(method, &url, body, token)
                    .await
                    .expect("request");
                assert_eq!(code, expected, "{method} {path} with {token:?}");
            }
        }
        // The page itself needs no token.
        assert_eq!(status_with_token(&door.api("/"), None).await, 200);
    }
);

// ---- the journal --------------------------------------------------------------------------

netns_test!(peer_text_cannot_forge_a_journal_entry, Net::LoopbackOnly, {
    let journald = Journald::start();
    let profile = light_profile("journal-door", "");
    let mut door = journald.daemon("journal-door", &profile, &[], "webrtcd=debug,info");
    let (mut ws, _) = async_tungstenite::tokio::connect_async(door.ws_url())
        .await
        .expect("connect");
    let send = |v: Value| Frame::text(v.to_string());
    ws.send(send(json!({"type": "register", "id": "jester"})))
        .await
        .expect("send");
    ws.send(send(
        json!({"type": "call", "to": "journal-door", "session": "j1"}),
    ))
    .await
    .expect("send");
    tokio::time::sleep(Duration::from_millis(500)).await;
    ws.send(send(
        json!({"type": "hangup", "to": "journal-door", "session": "j1",
        "reason": "x\n<3>webrtcd: forged-reason", "message": "y\n<3>webrtcd: forged-message"}),
    ))
    .await
    .expect("send");
    ws.send(send(json!({"type": "call", "to": "journal-door",
        "session": "j2\n<3>webrtcd: forged-session"})))
        .await
        .expect("send");
    // The session's end and the refusal are logged; give journald a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(_)) = tokio::time::timeout_at(deadline, ws.next()).await {}
    door.kill();
    let ours = journald.ours();
    // Native journal entries, with their priority as a field.
    let listening = ours
        .iter()
        .find(|e| {
            e["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.contains("listening on"))
        })
        .expect("the listening entry");
    assert_eq!(listening["_TRANSPORT"], "journal", "{listening}");
    // tracing-journald: error 3, warn 4, info 5 (notice), debug 6, trace 7.
    assert_eq!(listening["PRIORITY"], "5", "{listening}");
    let forged: Vec<&Value> = ours
        .iter()
        .filter(|e| e.to_string().contains("forged"))
        .collect();
    assert!(
        !forged.is_empty(),
        "the peer's text was logged (at debug), escaped"
    );
    for entry in &forged {
        let message = entry["MESSAGE"].as_str().unwrap_or_default();
        assert!(!message.starts_with('<'), "a forged entry: {entry}");
        assert_eq!(
            entry["PRIORITY"], "6",
            "only debug entries carry peer text: {entry}"
        );
    }
    assert!(
        !ours
            .iter()
            .any(|e| e["PRIORITY"].as_str().is_some_and(|p| p <= "3")),
        "no error entries at all"
    );
});
