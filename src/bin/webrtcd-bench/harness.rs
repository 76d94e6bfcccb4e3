//! What the benchmark and the integration tests both need to run real peers: Chromium's
//! flags that work on this machine, a daemon's announced address, a private redis-server. One copy, included by
//! the tests too (`tests/common/mod.rs`), so the two cannot drift apart.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Headless Chromium that stays on loopback: no background networking, no name lookups but
/// 127.0.0.1, ICE allowed on loopback. `media`: grant camera/microphone, with fake devices.
pub fn chromium_flags(profile: &Path, media: bool) -> Vec<String> {
    let mut flags: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--allow-loopback-in-peer-connection",
        "--autoplay-policy=no-user-gesture-required",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--window-size=1024,800",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    flags.push(format!("--user-data-dir={}", profile.display()));
    if media {
        flags.push("--use-fake-ui-for-media-stream".into());
        flags.push("--use-fake-device-for-media-stream".into());
    }
    flags
}

/// `user.js` for a fresh headless Firefox profile: ICE on loopback with plain addresses, no
/// name lookups but 127.0.0.1, no background traffic, autoplay allowed, camera and microphone
/// granted with fake devices.
pub fn firefox_user_js() -> String {
    let mut prefs = vec![
        ("media.peerconnection.ice.loopback", "true"),
        ("media.peerconnection.ice.obfuscate_host_addresses", "false"),
        ("media.autoplay.default", "0"),
        ("media.autoplay.blocking_policy", "0"),
        ("network.dns.forceResolve", "\"127.0.0.1\""),
        ("network.trr.mode", "5"),
        ("app.update.enabled", "false"),
        ("browser.shell.checkDefaultBrowser", "false"),
        ("datareporting.policy.dataSubmissionEnabled", "false"),
        ("toolkit.telemetry.enabled", "false"),
        ("media.gmp-manager.updateEnabled", "false"),
        ("network.captive-portal-service.enabled", "false"),
        ("network.connectivity-service.enabled", "false"),
    ];
    // Camera and microphone granted, with fake devices.
    prefs.push(("media.navigator.streams.fake", "true"));
    prefs.push(("media.navigator.permission.fake", "true"));
    // Without this getUserMedia never settles in headless Firefox (measured here).
    prefs.push(("media.navigator.permission.disabled", "true"));
    prefs.push(("permissions.default.camera", "1"));
    prefs.push(("permissions.default.microphone", "1"));
    prefs
        .iter()
        .map(|(k, v)| format!("user_pref(\"{k}\", {v});\n"))
        .collect()
}

/// Inside a network namespace with only `lo`: a device (`nl0`, 10.213.0.1/24) with the default
/// route and multicast on it. Chromium without camera permission hides its addresses behind
/// mDNS names and gathers them only with a default route; WS-Discovery needs a non-loopback
/// address. The device drops what is sent into it: nothing leaves the namespace. Once.
pub fn default_route() -> Result<(), String> {
    let ip = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ip(&["link", "show", "nl0"]) {
        return Ok(());
    }
    // `dummy` where the kernel has it, `ifb` here.
    if !ip(&["link", "add", "nl0", "type", "dummy"]) && !ip(&["link", "add", "nl0", "type", "ifb"])
    {
        return Err("ip link add nl0 (dummy or ifb) failed".into());
    }
    for args in [
        &["addr", "add", "10.213.0.1/24", "dev", "nl0"][..],
        &["link", "set", "nl0", "multicast", "on", "up"],
        &["route", "add", "224.0.0.0/4", "dev", "nl0"],
        &["route", "add", "default", "dev", "nl0"],
    ] {
        if !ip(args) {
            return Err(format!("ip {args:?} failed"));
        }
    }
    Ok(())
}

/// The `host:port` a `webrtcd` child prints first (`… listening on http(s)://ADDR`), read from
/// its piped stdout; the rest of its stdout is drained so it never blocks on a full pipe.
pub fn announced_address(child: &mut Child, within: Duration) -> Option<String> {
    let stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let line = rx.recv_timeout(within).ok()?;
    Some(line.rsplit("://").next()?.trim().to_string())
}

/// What receives each report's body.
pub type OnReport = std::sync::Arc<dyn Fn(&[u8]) + Send + Sync>;

/// The page only reports to its own origin (`?report=/report`), so a test or benchmark that
/// wants the reports stands in front of the daemon: this serves `POST /report` itself (each
/// body goes to `on_report`) and `GET /minimal.html` (a third party's page), and passes every other request, WebSocket upgrades included,
/// unchanged to the daemon at `upstream` (`host:port`). Returns the proxy's `host:port`; the
/// browser opens the page there, so the page, its WebSocket and its reports share one origin.
pub async fn report_proxy(upstream: String, on_report: OnReport) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // Both legs without Nagle, as the daemon's own sockets and the browser's are: with
            // it, a message written while the one before waits for its (delayed) ACK waited
            // up to 40 ms here — the page's offer, 20–40 ms after its `call`, reached the
            // daemon ~45 ms after it (measured 2026-12-03), a delay no real path has.
            let _ = stream.set_nodelay(true);
            let upstream = upstream.clone();
            let on_report = std::sync::Arc::clone(&on_report);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    proxy_one(req, upstream.clone(), std::sync::Arc::clone(&on_report))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Ok(addr)
}

/// A third party's viewer page, served by the proxy at `/minimal.html` (same origin as the
/// daemon's `/signaling` behind it): see the page for what it does.
const MINIMAL_PAGE: &[u8] = include_bytes!("minimal.html");

type ProxyBody = http_body_util::combinators::BoxBody<hyper::body::Bytes, hyper::Error>;

async fn proxy_one(
    mut req: hyper::Request<hyper::body::Incoming>,
    upstream: String,
    on_report: OnReport,
) -> Result<hyper::Response<ProxyBody>, hyper::Error> {
    use http_body_util::{BodyExt, Empty};
    let empty = || Empty::new().map_err(|never| match never {}).boxed();
    if req.method() == hyper::Method::POST && req.uri().path() == "/report" {
        let body = req.into_body().collect().await?.to_bytes();
        on_report(&body);
        return Ok(hyper::Response::new(empty()));
    }
    if req.method() == hyper::Method::GET && req.uri().path() == "/minimal.html" {
        let page = http_body_util::Full::new(hyper::body::Bytes::from_static(MINIMAL_PAGE))
            .map_err(|never| match never {})
            .boxed();
        let mut response = hyper::Response::new(page);
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        return Ok(response);
    }
    let bad_gateway = || {
        let mut r = hyper::Response::new(empty());
        *r.status_mut() = hyper::StatusCode::BAD_GATEWAY;
        r
    };
    let Ok(stream) = tokio::net::TcpStream::connect(&upstream).await else {
        return Ok(bad_gateway());
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut sender, conn)) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
    else {
        return Ok(bad_gateway());
    };
    tokio::spawn(conn.with_upgrades());
    let client_side = hyper::upgrade::on(&mut req);
    let mut response = sender.send_request(req).await?;
    if response.status() == hyper::StatusCode::SWITCHING_PROTOCOLS {
        let daemon_side = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            if let (Ok(a), Ok(b)) = tokio::join!(client_side, daemon_side) {
                let mut a = hyper_util::rt::TokioIo::new(a);
                let mut b = hyper_util::rt::TokioIo::new(b);
                let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
            }
        });
    }
    Ok(response.map(|body| body.boxed()))
}

/// A private redis-server (Debian's) on a free port of 127.0.0.1, without persistence,
/// killed when dropped.
pub struct RedisServer {
    child: Child,
    /// `redis://127.0.0.1:PORT`
    pub url: String,
}

impl RedisServer {
    /// Starts it, its output to `log`, and waits (at most 10 s) until it listens.
    pub fn start(log: &Path) -> std::io::Result<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::fs::File::create(log)?)
            .spawn()
            .map_err(|e| {
                std::io::Error::other(format!("redis-server (Debian package redis-server): {e}"))
            })?;
        let server = RedisServer {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() >= deadline {
                return Err(std::io::Error::other("redis-server did not start"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
