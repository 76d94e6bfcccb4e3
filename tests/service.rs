//! The daemon as a service: systemd notifications and watchdog, shutdown, metrics, health.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::browser::Net;
use common::journal::Journald;
use common::*;
use webrtcd::service::api_client;

/// A stand-in for systemd's notification socket: collects what the daemon sends.
struct NotifySocket {
    socket: UnixDatagram,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        NotifySocket {
            socket,
            path,
            _dir: dir,
        }
    }

    fn env(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    /// Every datagram that arrives within `window`, with when it arrived.
    fn collect(&self, window: Duration) -> Vec<(Instant, String)> {
        let end = Instant::now() + window;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // Bounded by the deadline: each wait is at most what is left of the window.
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            self.socket
                .set_read_timeout(Some(left))
                .expect("read timeout");
            match self.socket.recv(&mut buf) {
                Ok(n) => out.push((
                    Instant::now(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                )),
                Err(_) => break,
            }
        }
        out
    }

    /// Waits (bounded) for a datagram containing `what`; returns everything seen until then.
    fn wait_for(&self, what: &str, timeout: Duration) -> Vec<String> {
        let end = Instant::now() + timeout;
        let mut seen = Vec::new();
        while Instant::now() < end {
            for (_, msg) in self.collect(Duration::from_millis(200)) {
                let found = msg.contains(what);
                seen.push(msg);
                if found {
                    return seen;
                }
            }
        }
        panic!("no {what} within {timeout:?}; got {seen:?}");
    }
}

fn pings(msgs: &[(Instant, String)]) -> usize {
    msgs.iter()
        .filter(|(_, m)| m.contains("WATCHDOG=1"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_systemd_ready_then_pings_the_watchdog_then_stopping() {
    let _serial = serial().await;
    let notify = NotifySocket::new();
    let profile = light_profile("notify", "");
    // WATCHDOG_USEC = 1 s: the daemon pings every 500 ms.
    let mut door = Proc::daemon_env(
        "notify-door",
        &profile,
        &[],
        &[
            ("NOTIFY_SOCKET", &notify.env()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    // The listening line came first (Proc waited for it); READY=1 follows it.
    let before_ready = notify.wait_for("READY=1", Duration::from_secs(10));
    assert!(
        !before_ready.iter().any(|m| m.contains("WATCHDOG=1")),
        "{before_ready:?}"
    );
    let window = notify.collect(Duration::from_secs(3));
    let n = pings(&window);
    assert!(
        (3..=12).contains(&n),
        "{n} watchdog pings in 3 s at a 500 ms pace: {window:?}"
    );
    let (status, body) = api_client::request("GET", &door.api("/healthz"), None, None)
        .await
        .expect("healthz");
    assert_eq!((status, body.trim()), (200, "ok"));

    let status = door.terminate().expect("the daemon exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    let rest = notify.collect(Duration::from_millis(300));
    assert!(
        rest.iter().any(|(_, m)| m.contains("STOPPING=1")),
        "{rest:?}"
    );
}

/// A video source whose streaming thread sleeps for a minute on its first frame: the shared
/// encoder produces nothing while a call waits on it — a wedged GStreamer thread.
fn wedged_profile() -> std::path::PathBuf {
    write_profile(
        "wedged",
        r#"name = "wedged"

[video]
source = "launch"
launch = "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1 ! identity sleep-time=60000000"
codecs = ["vp8"]

[audio]
source = "test"
codecs = ["opus"]
"#,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_media_engine_stops_the_watchdog_and_fails_healthz() {
    let _serial = serial().await;
    let notify = NotifySocket::new();
    let door = Proc::daemon("healthy-peer", &light_profile("healthy-peer", ""), &[]);
    let wedged = Proc::daemon_env(
        "wedged",
        &wedged_profile(),
        &["--relay", &door.ws_url()],
        &[
            ("NOTIFY_SOCKET", &notify.env()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    notify.wait_for("READY=1", Duration::from_secs(10));
    assert!(
        pings(&notify.collect(Duration::from_secs(2))) >= 2,
        "healthy at first"
    );
    wait_peer(&wedged, "healthy-peer").await;
    place_call(&wedged, "healthy-peer").await;

    // Within ~5 s the shared video encoder counts as wedged; the pings stop for good.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut quiet = false;
    while Instant::now() < deadline {
        if pings(&notify.collect(Duration::from_secs(3))) == 0 {
            quiet = true;
            break;
        }
    }
    assert!(quiet, "the watchdog was still pinged 30 s into the wedge");
    assert_eq!(
        pings(&notify.collect(Duration::from_secs(3))),
        0,
        "pinged again while still wedged"
    );
    let (status, body) = api_client::request("GET", &wedged.api("/healthz"), None, None)
        .await
        .expect("healthz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("vp8 encoder has produced nothing"), "{body}");
    // The healthy daemon on the other end of that call is still fine.
    let (status, _) = api_client::request("GET", &door.api("/healthz"), None, None)
        .await
        .expect("healthz");
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_call_hangs_up_the_peer_and_exits_0_within_3_s() {
    let _serial = serial().await;
    let profile = light_profile("sigterm", "");
    let mut door = Proc::daemon("sigterm-door", &profile, &[]);
    let tap = Proxy::start(door.ws_url(), pass).await;
    let alice = Proc::daemon("sigterm-alice", &profile, &["--relay", &tap.url]);
    wait_peer(&alice, "sigterm-door").await;
    let session = place_call(&alice, "sigterm-door").await;
    wait_call(&door, &session, "media", media_and_pings_flow).await;

    let started = Instant::now();
    let status = door.terminate().expect("the daemon exits after SIGTERM");
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let hangups = tap.messages(Direction::FromRelay, "hangup");
    assert!(
        hangups
            .iter()
            .any(|h| h["session"] == session.as_str() && h["reason"] == "shutdown"),
        "alice got no hangup: {hangups:?}"
    );
    let log = door.log_text();
    let last = log
        .lines()
        .rev()
        .find(|l| l.contains("stopped"))
        .unwrap_or_default();
    assert!(
        last.contains("calls=0") && last.contains("pipelines=0"),
        "every pipeline reached NULL and was freed: {last:?}"
    );
    wait_for("alice's side to end", Duration::from_secs(10), || async {
        calls(&alice).await.is_empty().then_some(())
    })
    .await;
}

/// `/metrics` as Prometheus would read it: sample name + labels → value.
async fn scrape(p: &Proc, token: Option<&str>) -> Vec<prometheus_parse::Sample> {
    let (status, body) = api_client::request("GET", &p.api("/metrics"), None, token)
        .await
        .expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines)
        .expect("Prometheus text format")
        .samples
}

fn value(samples: &[prometheus_parse::Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_during_a_call_and_need_the_token() {
    let _serial = serial().await;
    let profile = light_profile("metrics", "");
    let token = "metrics-token-1";
    let door = Proc::daemon_env("metrics-door", &profile, &[], &[("WEBRTCD_TOKENS", token)]);
    for path in ["/metrics", "/healthz"] {
        let (status, _) = api_client::request("GET", &door.api(path), None, None)
            .await
            .expect("GET");
        assert_eq!(status, 401, "{path} without the token");
    }
    let alice = Proc::daemon(
        "metrics-alice",
        &profile,
        &["--relay", &format!("{}?token={token}", door.ws_url())],
    );
    wait_peer(&alice, "metrics-door").await;
    let session = place_call(&alice, "metrics-door").await;
    wait_call(&alice, &session, "media", media_and_pings_flow).await;

    let first = scrape(&alice, None).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = scrape(&alice, None).await;
    assert_eq!(
        value(&second, "webrtcd_sessions_active", &[("role", "caller")]),
        1.0
    );
    for name in [
        "webrtcd_rtp_sent_packets_total",
        "webrtcd_rtp_sent_bytes_total",
        "webrtcd_rtp_received_packets_total",
        "webrtcd_rtp_received_bytes_total",
    ] {
        for kind in ["video", "audio"] {
            let (a, b) = (
                value(&first, name, &[("kind", kind)]),
                value(&second, name, &[("kind", kind)]),
            );
            assert!(
                b > a && a > 0.0,
                "{name}{{kind={kind}}} moved from {a} to {b}"
            );
        }
    }
    let frames = |s: &[_]| value(s, "webrtcd_frames_encoded_total", &[("encoder", "vp8enc")]);
    assert!(frames(&second) > frames(&first), "frames encoded move");
    // Exported per codec. A call on an encoder that has just started (it starts with a
    // keyframe) or has just made one forces none, so this call may leave it at 0; the unit
    // tests in media::shared count forced keyframes.
    assert!(
        second
            .iter()
            .any(|s| s.metric == "webrtcd_keyframes_forced_total"
                && s.labels.get("codec") == Some("vp8")),
        "webrtcd_keyframes_forced_total{{codec=vp8}} is exported"
    );
    assert!(value(&second, "webrtcd_negotiation_seconds_count", &[]) >= 1.0);
    assert!(value(&second, "webrtcd_first_frame_seconds_count", &[]) >= 1.0);

    // The relay's side lives in the door's embedded relay.
    let relay = scrape(&door, Some(token)).await;
    assert_eq!(value(&relay, "webrtcd_relay_peers", &[]), 2.0);
    for kind in ["call", "offer", "answer"] {
        assert!(
            value(
                &relay,
                "webrtcd_relay_messages_routed_total",
                &[("type", kind)]
            ) >= 1.0,
            "{kind} routed"
        );
    }
    assert_eq!(
        value(&relay, "webrtcd_sessions_active", &[("role", "callee")]),
        1.0
    );

    assert_eq!(hang_up(&alice, &session).await, 204);
    wait_idle(&alice).await;
    let after = scrape(&alice, None).await;
    assert_eq!(
        value(&after, "webrtcd_sessions_active", &[("role", "caller")]),
        0.0
    );
    assert_eq!(
        value(
            &after,
            "webrtcd_sessions_ended_total",
            &[("role", "caller"), ("reason", "hangup")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_can_come_from_systemd_credentials() {
    let _serial = serial().await;
    let credentials = tempfile::tempdir().expect("tempdir");
    std::fs::write(credentials.path().join("tokens"), "from-credentials-1\n").expect("write");
    let dir = credentials.path().to_string_lossy().into_owned();
    let door = Proc::daemon_env(
        "credentials",
        &light_profile("credentials", ""),
        &[],
        &[("CREDENTIALS_DIRECTORY", &dir)],
    );
    let url = door.api("/api/status");
    let (status, _) = api_client::request("GET", &url, None, None)
        .await
        .expect("GET");
    assert_eq!(status, 401);
    let (status, _) = api_client::request("GET", &url, None, Some("from-credentials-1"))
        .await
        .expect("GET");
    assert_eq!(status, 200);
    drop(door);

    // A credential that is there but cannot be read stops the daemon: read as "no tokens",
    // it would open the API to anyone.
    let unreadable = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(unreadable.path().join("tokens")).expect("a directory, not a file");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_webrtcd"))
        .args(["run", "--listen", "127.0.0.1:0"])
        .env("WEBRTCD_CONFIG", "/dev/null")
        .env("CREDENTIALS_DIRECTORY", unreadable.path())
        .output()
        .expect("webrtcd");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tokens") && stderr.contains("cannot read"),
        "{stderr}"
    );
}

// Under systemd (a real journald here, on the test's own /run), entries go to the journal
// natively with their priority, GStreamer's warnings come through with their category, and
// at the default level no SDP, candidate or fingerprint is logged.
netns_test!(
    journal_entries_have_priorities_and_keep_sdp_out_of_info,
    Net::LoopbackOnly,
    {
        let journald = Journald::start();
        let profile = light_profile("journal", "");
        let door = journald.daemon("journal-door", &profile, &[], "info");
        let alice = Proc::daemon("journal-alice", &profile, &["--relay", &door.ws_url()]);
        wait_peer(&alice, "journal-door").await;
        let session = place_call(&alice, "journal-door").await;
        wait_call(&door, &session, "media", media_and_pings_flow).await;
        assert_eq!(hang_up(&alice, &session).await, 204);
        wait_idle(&door).await;

        let entries = journald.ours();
        assert!(entries.len() > 3, "{entries:?}");
        for entry in &entries {
            assert_eq!(
                entry["_TRANSPORT"], "journal",
                "native, not a text stream: {entry}"
            );
            // tracing-journald: error 3, warn 4, info 5.
            assert!(
                matches!(entry["PRIORITY"].as_str(), Some("3" | "4" | "5")),
                "not an entry at info level: {entry}"
            );
        }
        let text = serde_json::to_string(&entries).expect("JSON");
        assert!(text.contains("call ended"), "{text}");
        for secret in ["v=0", "a=fingerprint", "typ host", "candidate:"] {
            assert!(!text.contains(secret), "{secret} logged at info: {text}");
        }
        assert!(
            !text.contains("\\u001b"),
            "no terminal colours in the journal"
        );
        // GStreamer's own warnings arrive through the same log, with their category.
        assert!(
            entries.iter().any(|e| e["TARGET"] == "gstreamer"
                && e["PRIORITY"] == "4"
                && e["F_CATEGORY"].is_string()),
            "{text}"
        );
    }
);

/// The size of a JPEG, read by a real decoder (GStreamer's `jpegdec`).
fn decoded_size(jpeg: &[u8]) -> (usize, usize) {
    let picture = common::picture::decode_jpeg(jpeg);
    (picture.width, picture.height)
}

// Home Assistant's generic camera polls a still picture: `GET /api/snapshot.jpg?width=W` is a
// JPEG of the size asked for, taken from the running capture (idle: one is started for it).
netns_test!(
    snapshots_are_jpegs_of_the_size_asked_for,
    Net::LoopbackOnly,
    {
        let token = "snapshot-view-0123";
        let cfg = config_file(
            "snap-door",
            &format!("tokens = [{{ secret = '{token}', scope = 'view' }}]\n"),
        );
        let door = Proc::daemon(
            "snap-door",
            &light_profile("snap-door", "linger_ms = 200"),
            &["--config", &cfg],
        );
        let auth = format!("Bearer {token}");
        let get = |path: &'static str| {
            let (addr, auth) = (door.addr.clone(), auth.clone());
            async move {
                let started = Instant::now();
                let reply =
                    common::http::send(&addr, "GET", path, &[("Authorization", &auth)], "").await;
                (reply, started.elapsed())
            }
        };
        // No token: 401 (a `view` token suffices: it is the picture a viewer sees anyway).
        let anonymous = common::http::send(&door.addr, "GET", "/api/snapshot.jpg", &[], "").await;
        assert_eq!(anonymous.status, 401);
        // Idle: a capture starts for it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (idle, idle_time) = get("/api/snapshot.jpg?width=160").await;
        assert_eq!(idle.status, 200, "{}", idle.body);
        assert_eq!(idle.header("content-type"), "image/jpeg");
        assert_eq!(decoded_size(&idle.bytes), (160, 120));
        // While a call runs: the next picture of the running capture, full size by default.
        let viewer = Proc::daemon_env(
            "snap-viewer",
            &light_profile("snap-viewer", ""),
            &["--relay", &door.ws_url()],
            &[("WEBRTCD_RELAY_TOKEN", token)],
        );
        wait_peer(&viewer, "snap-door").await;
        let session = place_call(&viewer, "snap-door").await;
        wait_call(&viewer, &session, "video", |c| {
            c["video_frames"].as_u64() > Some(10)
        })
        .await;
        let mut times = Vec::new();
        for _ in 0..5 {
            let (running, time) = get("/api/snapshot.jpg").await;
            assert_eq!(running.status, 200, "{}", running.body);
            assert_eq!(decoded_size(&running.bytes), (320, 240));
            times.push(time);
        }
        times.sort();
        let median = times[times.len() / 2];
        eprintln!("snapshot: idle {idle_time:?}, running {times:?}");
        assert!(median <= Duration::from_millis(300), "{times:?}");
    }
);
