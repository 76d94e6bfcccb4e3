//! Headless Chromium showing the daemon's own page, auto-answering, and reporting its state
//! (the page's `?report=/report`) to a small collector here, in front of the daemon.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

pub struct Chromium {
    child: Child,
    profile: std::path::PathBuf,
}

impl Chromium {
    pub fn open(url: &str, dir: &std::path::Path) -> anyhow::Result<Chromium> {
        let profile = dir.join("chromium-profile");
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile)?;
        let log = dir.join("chromium.log");
        let mut command = Command::new("chromium");
        // SAFETY: setsid/prctl are async-signal-safe; in the child between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .args(crate::harness::chromium_flags(&profile, true))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .context("starting chromium (Debian package chromium)")?;
        Ok(Chromium { child, profile })
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // The whole process group: Chromium's helpers too.
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
