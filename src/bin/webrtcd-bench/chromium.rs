//! Headless browsers for the benchmark (Chromium, Firefox; pinned to a core or not), and a
//! collector of the reports the daemon's own page sends (`?report=/report`), in front of the
//! daemon.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

#[derive(Clone, Copy, Debug, Serialize)]
pub enum Engine {
    Chromium,
    Firefox,
}

/// A headless browser showing one URL; its whole process group (its helpers too) is killed
/// and its profile removed on drop.
pub struct Browser {
    child: Child,
    profile: std::path::PathBuf,
}

impl Browser {
    /// Chromium with camera and microphone granted (fake devices: plain addresses, no mDNS
    /// names), on any core.
    pub fn chromium(url: &str, dir: &std::path::Path) -> anyhow::Result<Browser> {
        Browser::open(Engine::Chromium, url, dir, true, None)
    }

    /// Chromium with camera and microphone granted, its microphone saying `wav` over and over
    /// (`--use-file-for-fake-audio-capture`).
    pub fn chromium_saying(
        url: &str,
        dir: &std::path::Path,
        wav: &std::path::Path,
    ) -> anyhow::Result<Browser> {
        let say = format!("--use-file-for-fake-audio-capture={}", wav.display());
        Browser::open_with(Engine::Chromium, url, dir, true, None, &[say])
    }

    /// `engine` showing `url` (logs in `dir/ENGINE.log`). `media`: Chromium grants camera and
    /// microphone (Firefox's profile always does); `core`: every thread on that core only.
    pub fn open(
        engine: Engine,
        url: &str,
        dir: &std::path::Path,
        media: bool,
        core: Option<usize>,
    ) -> anyhow::Result<Browser> {
        Browser::open_with(engine, url, dir, media, core, &[])
    }

    fn open_with(
        engine: Engine,
        url: &str,
        dir: &std::path::Path,
        media: bool,
        core: Option<usize>,
        flags: &[String],
    ) -> anyhow::Result<Browser> {
        let name = format!("{engine:?}").to_lowercase();
        let profile = dir.join(format!("{name}-profile"));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile)?;
        let program = match engine {
            Engine::Chromium => "chromium",
            Engine::Firefox => "firefox-esr",
        };
        let mut command = match core {
            Some(core) => {
                let mut pinned = Command::new("taskset");
                pinned.args(["-c", &core.to_string(), program]);
                pinned
            }
            None => Command::new(program),
        };
        match engine {
            Engine::Chromium => {
                command.args(crate::harness::chromium_flags(&profile, media));
                command.args(flags);
            }
            Engine::Firefox => {
                std::fs::write(profile.join("user.js"), crate::harness::firefox_user_js())?;
                command
                    .args(["--headless", "--no-remote", "--profile"])
                    .arg(&profile)
                    .env("MOZ_DISABLE_CONTENT_SANDBOX", "1");
            }
        }
        // SAFETY: setsid/prctl are async-signal-safe; in the child between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = command
            .arg(url)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!("starting {engine:?} (Debian packages chromium, firefox-esr)")
            })?;
        Ok(Browser { child, profile })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's process group.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Receives the page's reports (a POST every 500 ms to its own origin: see
/// [`crate::harness::report_proxy`]) and keeps the latest.
pub struct Collector {
    /// Where the browser opens the page: the daemon, through the proxy.
    pub addr: String,
    latest: Arc<Mutex<Option<Value>>>,
}

impl Collector {
    /// A collector in front of the daemon at `daemon` (`host:port`).
    pub async fn start(daemon: &str) -> anyhow::Result<Collector> {
        let latest = Arc::new(Mutex::new(None));
        let keep = Arc::clone(&latest);
        let addr = crate::harness::report_proxy(
            daemon.to_string(),
            Arc::new(move |body: &[u8]| {
                if let Ok(v) = serde_json::from_slice::<Value>(body) {
                    *webrtcd::sync::lock(&keep) = Some(v);
                }
            }),
        )
        .await?;
        Ok(Collector { addr, latest })
    }

    pub fn latest(&self) -> Option<Value> {
        webrtcd::sync::lock(&self.latest).clone()
    }

    /// The page's report once call `session` shows its first frame (at most `within`).
    pub async fn first_frame_of(&self, session: &str, within: Duration) -> anyhow::Result<Value> {
        crate::procs::poll(within, || async {
            self.latest()
                .filter(|r| r["call"]["session"] == session)
                .filter(|r| r["call"]["firstFrameAt"].is_number())
        })
        .await
        .context("Chromium showed no frame")
    }

    /// Waits until the page has no call.
    pub async fn call_ended(&self) -> anyhow::Result<()> {
        crate::procs::poll(Duration::from_secs(10), || async {
            self.latest().filter(|r| r["call"].is_null()).map(|_| ())
        })
        .await
        .context("the page did not end the call")
    }
}
