//! The processes a benchmark runs: webrtcd daemons (the camera and its viewers) and what
//! /proc says about them.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use webrtcd::service::api_client;

/// Kills its process when dropped (a helper process must not outlive its scenario).
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `webrtcd run` on 127.0.0.1 (a free port, ICE on loopback); killed when dropped.
pub struct Daemon {
    pub name: String,
    child: Child,
    pub addr: String,
}

impl Daemon {
    /// Writes `profile` next to the logs and starts a daemon with it.
    pub fn start(dir: &Path, name: &str, profile: &str, extra: &[&str]) -> anyhow::Result<Daemon> {
        Daemon::start_at(dir, name, profile, "127.0.0.1", extra)
    }

    /// Like [`Daemon::start`], with ICE on `ice_address` only (a path of its own, which the
    /// networks benchmark can make lossy or narrow).
    pub fn start_at(
        dir: &Path,
        name: &str,
        profile: &str,
        ice_address: &str,
        extra: &[&str],
    ) -> anyhow::Result<Daemon> {
        Daemon::start_with(dir, name, profile, ice_address, extra, &[])
    }

    /// Like [`Daemon::start_at`], with `env` set for it (an ALSA configuration of the
    /// bench's).
    pub fn start_with(
        dir: &Path,
        name: &str,
        profile: &str,
        ice_address: &str,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> anyhow::Result<Daemon> {
        let profile_path = dir.join(format!("{name}.toml"));
        std::fs::write(&profile_path, profile)?;
        let state = dir.join(format!("state-{name}"));
        // No config file but the one `extra` names (`--config` once only).
        let config = if extra.contains(&"--config") {
            None
        } else {
            Some("/dev/null")
        };
        let mut args: Vec<std::ffi::OsString> = [
            "run",
            "--listen",
            "127.0.0.1:0",
            "--id",
            name,
            "--ice-address",
            ice_address,
        ]
        .iter()
        .map(Into::into)
        .collect();
        if let Some(config) = config {
            args.extend(["--config".into(), config.into()]);
        }
        args.extend(["--profile".into(), profile_path.into_os_string()]);
        args.extend(["--state-dir".into(), state.into_os_string()]);
        args.extend(extra.iter().map(Into::into));
        let (child, addr) = spawn_webrtcd(dir, name, &args, env)?;
        Ok(Daemon {
            name: name.to_string(),
            child,
            addr,
        })
    }

    /// SIGTERM, then waits (at most `within`, then SIGKILL) for the exit status.
    pub async fn terminate(
        &mut self,
        within: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let pid = libc::pid_t::try_from(self.child.id())?;
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("{} did not exit within {within:?} of SIGTERM", self.name);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/signaling", self.addr)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("http://{}{path}", self.addr);
        let (status, body) = api_client::request("GET", &url, None, None).await?;
        if status != 200 {
            bail!("GET {url}: {status} {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    pub async fn calls(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .get("/api/calls")
            .await?
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    pub async fn call(&self, to: &str) -> anyhow::Result<String> {
        self.call_with(to, None).await
    }

    /// Calls `to`, sending `camera` (none: the first).
    pub async fn call_with(&self, to: &str, camera: Option<&str>) -> anyhow::Result<String> {
        let url = format!("http://{}/api/calls", self.addr);
        let body = match camera {
            Some(camera) => serde_json::json!({ "to": to, "camera": camera }),
            None => serde_json::json!({ "to": to }),
        }
        .to_string();
        let (status, text) = api_client::request("POST", &url, Some(body), None).await?;
        if status != 201 {
            bail!("{} calling {to}: {status} {text}", self.name);
        }
        let v: Value = serde_json::from_str(&text)?;
        Ok(v["session"].as_str().unwrap_or_default().to_string())
    }

    pub async fn hang_up(&self, session: &str) -> anyhow::Result<()> {
        let url = format!("http://{}/api/calls/{session}", self.addr);
        api_client::request("DELETE", &url, None, None).await?;
        Ok(())
    }

    /// Waits until `peer` is registered with the relay this daemon uses.
    pub async fn wait_peer(&self, peer: &str) -> anyhow::Result<()> {
        poll(Duration::from_secs(20), || async {
            let status = self.get("/api/status").await.ok()?;
            let peers = status["peers"].as_array()?.clone();
            peers.iter().any(|p| p == peer).then_some(())
        })
        .await
        .with_context(|| format!("{} never saw {peer}", self.name))
    }

    /// Waits until no call is left (shared encoders may linger).
    pub async fn wait_no_calls(&self) -> anyhow::Result<()> {
        poll(Duration::from_secs(15), || async {
            let status = self.get("/api/status").await.ok()?;
            (status["sessions"] == 0).then_some(())
        })
        .await
        .with_context(|| format!("{} kept a call", self.name))
    }

    /// Waits until no call is left and every pipeline (shared encoders too) was freed.
    pub async fn wait_idle(&self) -> anyhow::Result<()> {
        poll(Duration::from_secs(20), || async {
            let status = self.get("/api/status").await.ok()?;
            (status["sessions"] == 0 && status["pipelines"] == 0).then_some(())
        })
        .await
        .with_context(|| format!("{} did not go idle", self.name))
    }

    /// Waits until the call `session` satisfies `accept`; returns it.
    pub async fn wait_call(
        &self,
        session: &str,
        timeout: Duration,
        accept: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        poll(timeout, || async {
            self.calls()
                .await
                .ok()?
                .into_iter()
                .find(|c| c["session"] == session && accept(c))
        })
        .await
        .with_context(|| format!("call {session} on {}", self.name))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 5 ms until it yields, for at most `timeout`.
/// Starts `webrtcd ARGS` (logs in `dir/NAME.log`), killed if the benchmark dies; returns it
/// and the address it announced.
pub fn spawn_webrtcd(
    dir: &Path,
    name: &str,
    args: &[std::ffi::OsString],
    env: &[(&str, &Path)],
) -> anyhow::Result<(Child, String)> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let binary = std::env::current_exe()?.with_file_name("webrtcd");
    let mut command = Command::new(&binary);
    // SAFETY: prctl is async-signal-safe; runs in the child between fork and exec. A
    // process must not outlive an interrupted benchmark.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = command
        .args(args)
        // The soak wants each call's end reason (one info line per call); a scenario may
        // set its own.
        .env(
            "RUST_LOG",
            std::env::var("WEBRTCD_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let addr = crate::harness::announced_address(&mut child, Duration::from_secs(60))
        .with_context(|| format!("{name} did not start; see {}/{name}.log", dir.display()))?;
    Ok((child, addr))
}

pub async fn poll<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(v) = check().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// CPU time, memory and threads of one process, from /proc.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// User + system CPU seconds so far.
    pub cpu_secs: f64,
    pub rss_mib: f64,
    pub threads: u64,
}

pub fn usage(pid: u32) -> anyhow::Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(Usage {
        cpu_secs: ticks as f64 / per_sec,
        rss_mib: field("VmRSS:") as f64 / 1024.0,
        threads: field("Threads:"),
    })
}

/// Where a run's logs and profiles go.
pub fn work_dir() -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
