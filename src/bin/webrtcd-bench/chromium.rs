//! Headless Chromium showing the daemon's own page, auto-answering, and reporting its state
//! (the page's `?report=URL`) to a small collector here.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

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

/// Receives the page's reports (a POST every 500 ms) and keeps the latest.
pub struct Collector {
    pub url: String,
    latest: Arc<Mutex<Option<Value>>>,
}

impl Collector {
    pub async fn start() -> anyhow::Result<Collector> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/report", listener.local_addr()?);
        let latest = Arc::new(Mutex::new(None));
        let keep = Arc::clone(&latest);
        let app = axum::Router::new().route(
            "/report",
            axum::routing::post(move |body: axum::body::Bytes| {
                let keep = Arc::clone(&keep);
                async move {
                    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                        *keep.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
                    }
                    ""
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Collector { url, latest })
    }

    pub fn latest(&self) -> Option<Value> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
