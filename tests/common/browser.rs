//! Real browsers (Debian's chromium and firefox-esr, headless) in a fresh network namespace.
//!
//! A browser test re-runs itself under `unshare -n` with only `lo` up, so the daemon, the
//! browser and the test's own HTTP calls all share one private loopback: nothing can reach
//! or leave the machine, and both ICE stacks use 127.0.0.1. The page reports its state to a
//! small collector in front of the daemon (the client's `?report=/report` feature).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::{artifacts_dir, wait_for};

const INSIDE: &str = "WEBRTCD_TEST_IN_NETNS";

/// How the namespace is set up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// Only `lo`.
    LoopbackOnly,
    /// `lo` plus a dummy interface (a private address of this namespace, multicast on, the
    /// default route). Chromium without media permission hands out `.local` names only for
    /// its default route's address, and its mDNS responder needs a multicast interface;
    /// Firefox gathers nothing at all without a default route.
    WithDummyRoute,
}

/// A test that runs inside a fresh network namespace: declares the `#[tokio::test]`, takes the
/// serial lock, and re-runs itself under `unshare` (its name comes from the function's, so
/// the two cannot drift apart).
#[macro_export]
macro_rules! netns_test {
    ($(#[$meta:meta])* $name:ident, $net:expr, $body:block) => {
        $(#[$meta])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let _serial = $crate::common::serial().await;
            if !$crate::common::browser::isolated(stringify!($name), $net) {
                return;
            }
            $body
        }
    };
}

/// Outside the namespace: re-runs test `name` inside a fresh one, asserts it passed, and
/// returns false. Inside: sets the namespace up and returns true (run the test body).
pub fn isolated(name: &str, net: Net) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        run(&["ip", "link", "set", "lo", "up"]);
        if net == Net::WithDummyRoute {
            super::harness::default_route().expect("a default route in the namespace");
        }
        return true;
    }
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new("unshare");
    if !is_root() {
        // Unprivileged: a user namespace makes us root inside it.
        cmd.arg("-r");
    }
    // A mount namespace too: a test may mount over /run (its own journald) without touching
    // the machine's.
    let status = cmd
        .args(["-n", "-m", "--"])
        .arg(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .status()
        .expect("unshare (util-linux)");
    assert!(
        status.success(),
        "{name} failed inside its network namespace"
    );
    false
}

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

fn run(args: &[&str]) {
    let status = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(status.success(), "{args:?} failed");
}

/// Receives the page's reports (`POST /report` to the page's own origin), keeps the latest:
/// it stands in front of the daemon (see `harness::report_proxy`), so the browser opens the
/// page at [`Collector::addr`].
pub struct Collector {
    pub addr: String,
    latest: Arc<Mutex<Option<Value>>>,
}

impl Collector {
    /// A collector in front of the daemon at `daemon` (`host:port`).
    pub async fn start(daemon: &str) -> Collector {
        let latest = Arc::new(Mutex::new(None));
        let store = Arc::clone(&latest);
        let addr = super::harness::report_proxy(
            daemon.to_string(),
            Arc::new(move |body: &[u8]| {
                if let Ok(v) = serde_json::from_slice::<Value>(body) {
                    *store.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
                }
            }),
        )
        .await
        .expect("report proxy");
        Collector { addr, latest }
    }

    pub fn latest(&self) -> Option<Value> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until the page's report satisfies `accept`; the last report is in the panic.
    pub async fn wait(&self, what: &str, accept: impl Fn(&Value) -> bool) -> Value {
        let result = tokio::time::timeout(
            Duration::from_secs(40),
            wait_for(what, Duration::from_secs(40), || async {
                self.latest().filter(|v| accept(v))
            }),
        )
        .await;
        match result {
            Ok(v) => v,
            Err(_) => panic!(
                "timed out waiting for {what}; last report: {:?}",
                self.latest()
            ),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Engine {
    Chromium,
    Firefox,
}

/// A headless browser showing one URL; its whole process group is killed on drop.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
}

pub struct Options {
    /// Grant camera/microphone permission (with fake devices). Without it Chromium hides its
    /// addresses behind mDNS names.
    pub permission: bool,
}

impl Browser {
    pub fn open(engine: Engine, url: &str, options: Options) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let log = artifacts_dir().join(format!("{engine:?}.log").to_lowercase());
        let log = std::fs::File::create(log).expect("browser log");
        let mut cmd = match engine {
            Engine::Chromium => chromium(url, profile.path().to_path_buf(), &options),
            Engine::Firefox => firefox(url, profile.path().to_path_buf(), &options),
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {engine:?}: {e}"));
        Browser {
            child,
            _profile: profile,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's process group.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

pub use super::harness::chromium_flags;

fn chromium(url: &str, profile: PathBuf, options: &Options) -> Command {
    let mut cmd = Command::new("/usr/bin/chromium");
    cmd.args(chromium_flags(&profile, options.permission))
        .arg(url);
    cmd
}

fn firefox(url: &str, profile: PathBuf, options: &Options) -> Command {
    // Camera and microphone are always granted (fake devices); Firefox has no equivalent of
    // Chromium's mDNS-hiding mode to test.
    let _ = options.permission;
    std::fs::write(profile.join("user.js"), super::harness::firefox_user_js()).expect("user.js");
    let mut cmd = Command::new("/usr/bin/firefox-esr");
    cmd.args(["--headless", "--no-remote", "--profile"])
        .arg(&profile)
        .arg(url)
        .env("MOZ_DISABLE_CONTENT_SANDBOX", "1");
    cmd
}

/// A Chromium driven through WebDriver (Debian's chromedriver), as a person would use it.
pub struct Driven {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Driven {
    pub async fn start() -> Driven {
        Driven::start_with(&[]).await
    }

    /// Chromium with `extra` flags after the usual ones (a later flag wins).
    pub async fn start_with(extra: &[String]) -> Driven {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let log = std::fs::File::create(artifacts_dir().join("chromedriver.log")).expect("log");
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("chromedriver (Debian package chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().expect("profile");
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": chromium_flags(profile.path(), true)
                    .into_iter()
                    .chain(extra.iter().cloned())
                    .collect::<Vec<_>>(),
            }
        }}});
        let created = wait_for("chromedriver", Duration::from_secs(20), || {
            let url = format!("{base}/session");
            let body = caps.to_string();
            async move {
                let (status, text) =
                    webrtcd::service::api_client::request("POST", &url, Some(body), None)
                        .await
                        .ok()?;
                (status == 200).then(|| serde_json::from_str::<Value>(&text).ok())?
            }
        })
        .await;
        let session = created["value"]["sessionId"]
            .as_str()
            .expect("session id")
            .to_string();
        Driven {
            driver,
            base,
            session,
            _profile: profile,
        }
    }

    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let body = Some(body.unwrap_or_else(|| serde_json::json!({})).to_string())
            .filter(|_| method != "GET");
        let (status, text) = webrtcd::service::api_client::request(method, &url, body, None)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"));
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status != 200 {
            return Value::Null;
        }
        v["value"].clone()
    }

    pub async fn open(&self, url: &str) {
        self.command("POST", "/url", Some(serde_json::json!({ "url": url })))
            .await;
    }

    /// Clicks the first element matching `css`, waiting for it to appear.
    pub async fn click(&self, css: &str) {
        let element = wait_for(
            &format!("element {css}"),
            Duration::from_secs(20),
            || async {
                let found = self
                    .command(
                        "POST",
                        "/element",
                        Some(serde_json::json!({"using": "css selector", "value": css})),
                    )
                    .await;
                found
                    .as_object()
                    .and_then(|o| o.values().next())
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            },
        )
        .await;
        self.command("POST", &format!("/element/{element}/click"), None)
            .await;
    }

    /// Shows pages as a screen of `width`×`height` CSS pixels would, a phone's included
    /// (Chromium's device metrics: its headless window is never narrower than 500).
    pub async fn emulate_screen(&self, width: u32, height: u32) {
        let params = serde_json::json!({
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": true,
        });
        let cmd =
            serde_json::json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": params});
        self.command("POST", "/goog/cdp/execute", Some(cmd)).await;
    }

    pub async fn script(&self, js: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(serde_json::json!({"script": js, "args": []})),
        )
        .await
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let b64 = self.command("GET", "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("screenshot"))
            .expect("base64 PNG")
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's process group (chromedriver and its browser).
        unsafe {
            libc::kill(-(self.driver.id() as i32), libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}
