//! Test harness: real `webrtcd` processes on 127.0.0.1 (port 0), their HTTP API, and a
//! signaling proxy that can watch and delay frames between a daemon and its relay.
#![allow(dead_code)]

pub mod aiortc;
pub mod browser;
#[path = "../../src/bin/webrtcd-bench/harness.rs"]
pub mod harness;
pub mod http;
pub mod journal;
pub mod picture;
pub mod rtsp;
pub mod ws;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message as Frame;
use futures::StreamExt;
use serde_json::Value;
use webrtcd::service::api_client;

/// Calls need most of this 2-core machine: run the tests that make them one at a time.
/// (An async mutex: the guard is held across awaits; it works across the tests' runtimes.)
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

pub fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs");
    std::fs::create_dir_all(&dir).expect("create target/test-logs");
    dir
}

/// A light version of the test profile (320x240) so two daemons fit on two cores, with
/// `top` (keys like `media_start_delay_ms = 1000`) added at the top level.
pub fn light_profile(name: &str, top: &str) -> PathBuf {
    profile_with_codecs(name, top, "\"vp8\"")
}

/// Writes a profile with this exact text.
pub fn write_profile(name: &str, text: &str) -> PathBuf {
    let path = artifacts_dir().join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write profile");
    path
}

/// Like [`light_profile`], with the video codecs given (`"\"h264\", \"vp8\""`).
pub fn profile_with_codecs(name: &str, top: &str, video_codecs: &str) -> PathBuf {
    let text = format!(
        "name = \"{name}\"\n{top}\n\
         [video]\nsource = \"test\"\nwidth = 320\nheight = 240\nframerate = 30\n\
         codecs = [{video_codecs}]\nbitrate_kbps = 500\n\
         [audio]\nsource = \"test\"\ncodecs = [\"opus\"]\n"
    );
    let path = artifacts_dir().join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write profile");
    path
}

/// `run` with a free port, ICE on loopback, `id`, `profile`, its own state directory, `extra`.
pub fn daemon_args(id: &str, profile: &Path, extra: &[&str]) -> Vec<String> {
    let state = state_dir(id);
    let mut args: Vec<String> = [
        "run",
        "--state-dir",
        state.to_str().expect("utf-8 path"),
        "--listen",
        "127.0.0.1:0",
        "--id",
        id,
        "--ice-address",
        "127.0.0.1",
        "--profile",
        profile.to_str().expect("utf-8 path"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A config file for `run --config` with `text`.
pub fn config_file(name: &str, text: &str) -> String {
    let path = artifacts_dir().join(format!("{name}.config.toml"));
    std::fs::write(&path, text).expect("write config");
    path.to_string_lossy().into_owned()
}

/// Each daemon's own state directory (its DTLS identity lives there).
pub fn state_dir(id: &str) -> PathBuf {
    artifacts_dir().join("state").join(id)
}

/// A running `webrtcd` process, killed when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub log: PathBuf,
}

impl Proc {
    /// `webrtcd run` on a free port, ICE on loopback, debug logs to target/test-logs.
    pub fn daemon(id: &str, profile: &Path, extra: &[&str]) -> Proc {
        Proc::daemon_env(id, profile, extra, &[])
    }

    pub fn daemon_env(id: &str, profile: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Proc {
        let args = daemon_args(id, profile, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::spawn_env(id, &args, envs)
    }

    /// `webrtcd relay` on `listen` (`127.0.0.1:0` for a free port).
    pub fn relay(name: &str, listen: &str, extra: &[&str]) -> Proc {
        let mut args = vec!["relay", "--listen", listen];
        args.extend_from_slice(extra);
        Proc::spawn(name, &args)
    }

    pub fn spawn(name: &str, args: &[&str]) -> Proc {
        Proc::spawn_env(name, args, &[])
    }

    /// Like [`Proc::spawn`], with extra environment variables.
    pub fn spawn_env(name: &str, args: &[&str], envs: &[(&str, &str)]) -> Proc {
        let log = artifacts_dir().join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log).expect("create log");
        Proc::spawn_with(name, args, envs, Stdio::from(stderr), log)
    }

    /// Like [`Proc::spawn_env`], with stderr going to `stderr` (`log` names where it ends up).
    pub fn spawn_with(
        name: &str,
        args: &[&str],
        envs: &[(&str, &str)],
        stderr: Stdio,
        log: PathBuf,
    ) -> Proc {
        // `WEBRTCD_TEST_WRAP="valgrind --log-file=…"`: each daemon runs under that program
        // (a memory checker), and is given much longer to start.
        let wrap = std::env::var("WEBRTCD_TEST_WRAP").unwrap_or_default();
        let mut wrap = wrap.split_whitespace();
        let mut command = match wrap.next() {
            Some(program) => {
                let mut command = Command::new(program);
                command.args(wrap).arg(env!("CARGO_BIN_EXE_webrtcd"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_webrtcd")),
        };
        let start_within = if std::env::var_os("WEBRTCD_TEST_WRAP").is_some() {
            Duration::from_secs(600)
        } else {
            Duration::from_secs(30)
        };
        // SAFETY: prctl is async-signal-safe; this runs in the child between fork and exec.
        // A daemon must not outlive a test that was killed (it could run, and write, forever).
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command
            .args(args)
            // Not the machine's /etc/webrtcd/webrtcd.toml, nor secrets or systemd sockets
            // from the test's own environment; a test sets what it needs in `envs`.
            .env("WEBRTCD_CONFIG", "/dev/null")
            .env_remove("WEBRTCD_TOKENS")
            .env_remove("WEBRTCD_TURN_SERVERS")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .env("RUST_LOG", "webrtcd=debug,info")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn webrtcd");
        let addr = harness::announced_address(&mut child, start_within)
            .unwrap_or_else(|| panic!("{name} did not announce its address; see {log:?}"));
        Proc {
            name: name.to_string(),
            child,
            addr,
            log,
        }
    }

    pub fn api(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/signaling", self.addr)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends it `name` (`STOP`: frozen, `CONT`: thawed).
    pub fn signal(&self, name: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} {}", self.pid());
    }

    /// SIGKILL: the peer vanishes without a word.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        // Under a memory checker, exiting (and its report) takes longer.
        let within = if std::env::var_os("WEBRTCD_TEST_WRAP").is_some() {
            Duration::from_secs(120)
        } else {
            Duration::from_secs(10)
        };
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        // CI shows a failed test's output, not the files it leaves: show the log's end.
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("---- last lines of {} ----", self.log.display());
            for line in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{}", line.chars().take(400).collect::<String>());
            }
        }
    }
}

pub async fn get(p: &Proc, path: &str) -> Value {
    get_as(p, None, path).await
}

/// [`get`] with a token (`Authorization: Bearer`).
pub async fn get_as(p: &Proc, token: Option<&str>, path: &str) -> Value {
    let (status, body) = api_client::request("GET", &p.api(path), None, token)
        .await
        .unwrap_or_else(|e| panic!("GET {path} on {}: {e}", p.name));
    assert_eq!(status, 200, "GET {path} on {}: {body}", p.name);
    serde_json::from_str(&body).expect("JSON")
}

pub async fn status(p: &Proc) -> Value {
    get(p, "/api/status").await
}

pub async fn calls(p: &Proc) -> Vec<Value> {
    match get(p, "/api/calls").await {
        Value::Array(calls) => calls,
        other => panic!("calls is not a list: {other}"),
    }
}

/// `POST /api/calls`; returns the session id.
pub async fn place_call(from: &Proc, to: &str) -> String {
    let body = serde_json::json!({ "to": to }).to_string();
    let (status, text) = api_client::request("POST", &from.api("/api/calls"), Some(body), None)
        .await
        .expect("POST /api/calls");
    assert_eq!(status, 201, "place call: {text}");
    let v: Value = serde_json::from_str(&text).expect("JSON");
    v["session"].as_str().expect("session").to_string()
}

pub async fn hang_up(p: &Proc, session: &str) -> u16 {
    let path = format!("/api/calls/{session}");
    let (status, _) = api_client::request("DELETE", &p.api(&path), None, None)
        .await
        .expect("DELETE");
    status
}

/// How many calls of `p` ended with `reason`, from `/metrics`.
pub async fn ended_with(p: &Proc, reason: &str) -> u64 {
    metric(
        p,
        "webrtcd_sessions_ended_total",
        &format!("reason=\"{reason}\""),
    )
    .await
}

/// The sum of `p`'s `/metrics` samples named `name` whose line contains `label`.
pub async fn metric(p: &Proc, name: &str, label: &str) -> u64 {
    metric_as(p, None, name, label).await
}

/// [`metric`] with a token.
pub async fn metric_as(p: &Proc, token: Option<&str>, name: &str, label: &str) -> u64 {
    let (_, text) = api_client::request("GET", &p.api("/metrics"), None, token)
        .await
        .expect("GET /metrics");
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// `GET /api/events` (with `token`), read raw as it comes (for 60 s at most) into a shared
/// string; the task reading it.
pub async fn event_stream(
    p: &Proc,
    token: Option<&str>,
) -> (
    std::sync::Arc<std::sync::Mutex<String>>,
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(&p.addr)
        .await
        .expect("connect");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "GET /api/events HTTP/1.1\r\nHost: {}\r\n{auth}Accept: text/event-stream\r\n\r\n",
        p.addr
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = std::sync::Arc::clone(&text);
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            if let Ok(mut t) = sink.lock() {
                t.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
    (text, reader)
}

/// The threads process `pid` runs now.
pub fn threads_of(pid: i32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// `POST path` on `p`'s API with an empty JSON object; the status.
pub async fn post_status(p: &Proc, path: &str) -> u16 {
    let (status, _) = api_client::request("POST", &p.api(path), Some("{}".into()), None)
        .await
        .expect("POST");
    status
}

/// Polls `check` every 100 ms until it yields a value, or panics after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    match poll(timeout, check).await {
        Some(v) => v,
        None => panic!("timed out waiting for {what}"),
    }
}

/// Polls `check` every 100 ms until it yields a value; `None` after `timeout`.
pub async fn poll<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `p` has registered and sees `peer` online.
pub async fn wait_peer(p: &Proc, peer: &str) {
    wait_for(
        &format!("{} to see {peer}", p.name),
        Duration::from_secs(15),
        || async {
            let s = status(p).await;
            let peers = s["peers"].as_array().cloned().unwrap_or_default();
            peers.iter().any(|x| x == peer).then_some(())
        },
    )
    .await
}

/// The call with this session id on `p`, once `accept` holds for it.
pub async fn wait_call(
    p: &Proc,
    session: &str,
    what: &str,
    accept: impl Fn(&Value) -> bool,
) -> Value {
    let found = poll(Duration::from_secs(30), || async {
        calls(p)
            .await
            .into_iter()
            .find(|c| c["session"] == session && accept(c))
    })
    .await;
    match found {
        Some(call) => call,
        // What the call looked like last (per-track RTP counts, states) tells where it stuck.
        None => panic!(
            "timed out waiting for {what} on {}; its calls: {:?}",
            p.name,
            calls(p).await
        ),
    }
}

/// Media and DataChannel flow both ways on this side of the call.
pub fn media_and_pings_flow(c: &Value) -> bool {
    c["video_frames"].as_u64().unwrap_or(0) >= 30
        && c["audio_buffers"].as_u64().unwrap_or(0) > 0
        && c["pongs_received"].as_u64().unwrap_or(0) >= 1
        && c["pings_answered"].as_u64().unwrap_or(0) >= 1
}

/// Both sides decode ≥ 30 video frames and audio, ping/pong works both ways, and only the
/// caller created a DataChannel.
pub async fn assert_call_works(caller: &Proc, callee: &Proc, session: &str) {
    let a = wait_call(caller, session, "media + pings", media_and_pings_flow).await;
    let b = wait_call(callee, session, "media + pings", media_and_pings_flow).await;
    assert_eq!(a["role"], "caller");
    assert_eq!(b["role"], "callee");
    assert_eq!(a["state"], "connected");
    assert_eq!(b["state"], "connected");
    assert_eq!(
        a["datachannels_created"], 1,
        "caller creates the channel: {a}"
    );
    assert_eq!(a["datachannels_received"], 0, "{a}");
    assert_eq!(
        b["datachannels_created"], 0,
        "callee never creates one: {b}"
    );
    assert_eq!(b["datachannels_received"], 1, "{b}");
}

/// No sessions and no live pipelines left.
pub async fn wait_idle(p: &Proc) {
    wait_for(
        &format!("{} to have no sessions and no pipelines", p.name),
        Duration::from_secs(15),
        || async {
            let s = status(p).await;
            (s["sessions"] == 0 && s["pipelines"] == 0).then_some(())
        },
    )
    .await
}

/// A signaling man-in-the-middle: daemons connect to it as if it were the relay; it forwards
/// every frame to the real relay, records what passed, and can rewrite what goes to the relay.
pub struct Proxy {
    pub url: String,
    pub frames: Arc<Mutex<Vec<(Direction, Value)>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ToRelay,
    FromRelay,
}

/// Decides what becomes of one message on its way to the relay: the messages to forward
/// instead (none: dropped), each after its own delay (later frames may overtake it).
pub type Rewrite = fn(Value) -> Vec<(Duration, Value)>;

pub fn pass(v: Value) -> Vec<(Duration, Value)> {
    vec![(Duration::ZERO, v)]
}

impl Proxy {
    pub async fn start(upstream: String, rewrite: Rewrite) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let url = format!("ws://{}/signaling", listener.local_addr().expect("addr"));
        let frames = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&frames);
        tokio::spawn(async move {
            // Bounded: a test makes a handful of connections.
            for _ in 0..16 {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let upstream = upstream.clone();
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let _ = Proxy::pipe(tcp, upstream, log, rewrite).await;
                });
            }
        });
        Proxy { url, frames }
    }

    async fn pipe(
        tcp: tokio::net::TcpStream,
        upstream: String,
        log: Arc<Mutex<Vec<(Direction, Value)>>>,
        rewrite: Rewrite,
    ) -> anyhow::Result<()> {
        let client = async_tungstenite::tokio::accept_async(tcp).await?;
        let (relay, _) = async_tungstenite::tokio::connect_async(upstream).await?;
        let (mut client_tx, mut client_rx) = client.split();
        let (mut relay_tx, mut relay_rx) = relay.split();
        let (to_relay, mut to_relay_rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
        let record = |dir: Direction, v: &Value| {
            log.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((dir, v.clone()));
        };
        loop {
            tokio::select! {
                frame = client_rx.next() => match frame {
                    Some(Ok(Frame::Text(text))) => {
                        let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                        for (delay, out) in rewrite(v) {
                            if delay.is_zero() {
                                let _ = to_relay.send(out);
                                continue;
                            }
                            let tx = to_relay.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                let _ = tx.send(out);
                            });
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => return Ok(()),
                },
                Some(v) = to_relay_rx.recv() => {
                    record(Direction::ToRelay, &v);
                    relay_tx.send(Frame::text(v.to_string())).await?;
                }
                frame = relay_rx.next() => match frame {
                    Some(Ok(Frame::Text(text))) => {
                        if let Ok(v) = serde_json::from_str::<Value>(text.as_str()) {
                            record(Direction::FromRelay, &v);
                        }
                        client_tx.send(Frame::Text(text)).await?;
                    }
                    Some(Ok(_)) => {}
                    _ => return Ok(()),
                },
            }
        }
    }

    /// Recorded messages of one type, in the order they passed.
    pub fn messages(&self, dir: Direction, kind: &str) -> Vec<Value> {
        self.frames
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(d, v)| *d == dir && v["type"] == kind)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Types of the messages that went to the relay, in order.
    pub fn sent_types(&self) -> Vec<String> {
        self.frames
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(d, _)| *d == Direction::ToRelay)
            .filter_map(|(_, v)| v["type"].as_str().map(str::to_string))
            .collect()
    }
}

/// A minimal, valid audio-only offer, as another WebRTC stack would send.
pub fn audio_offer(mlines: usize) -> String {
    let fp: Vec<String> = (0..32).map(|i| format!("{:02X}", i * 7 % 256)).collect();
    let mids: Vec<String> = (0..mlines).map(|i| i.to_string()).collect();
    let mut sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {}\r\n\
         a=fingerprint:sha-256 {}\r\n",
        mids.join(" "),
        fp.join(":")
    );
    for mid in &mids {
        sdp += &format!(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:{mid}\r\n\
             a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\n\
             a=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 OPUS/48000/2\r\n"
        );
    }
    sdp
}
