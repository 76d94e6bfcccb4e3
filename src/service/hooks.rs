//! Event hooks: a program run on call events (`ringing`, `connected`, `ended`) — a bell, a
//! light, a message to a home-automation system. The event goes to the program as JSON on
//! standard input and in `WEBRTCD_*` environment variables (and nothing else of the daemon's
//! environment, which may hold secrets). Calls never wait for a hook: at most
//! [`MAX_RUNNING`] run at once (more events are skipped, with a warning), and each is killed,
//! with every process it started, after its `timeout_secs`.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::Hook;
use crate::session::CallManager;
use crate::session::notify::CallEvent;

/// Hooks running at once.
const MAX_RUNNING: usize = 8;
/// The `PATH` a hook gets.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs `hooks` on the calls' events until `shutdown`.
pub fn start(
    hooks: &[Hook],
    calls: &CallManager,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) {
    if hooks.is_empty() {
        return;
    }
    let hooks: Arc<[Hook]> = hooks.into();
    let mut events = calls.notifier().events();
    let running = Arc::new(tokio::sync::Semaphore::new(MAX_RUNNING));
    let spawner = tasks.clone();
    tasks.spawn(async move {
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = events.recv() => match event {
                    Ok(event) => event,
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "hooks: events missed");
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                },
            };
            for hook in hooks
                .iter()
                .filter(|h| h.on.iter().any(|e| e == event.event))
            {
                let Ok(permit) = Arc::clone(&running).try_acquire_owned() else {
                    tracing::warn!(
                        hook = %hook.exec.display(),
                        event = event.event,
                        "hooks: {MAX_RUNNING} already running; this one skipped"
                    );
                    continue;
                };
                let hook = hook.clone();
                let event = event.clone();
                spawner.spawn(async move {
                    run(&hook, &event).await;
                    drop(permit);
                });
            }
        }
    });
}

/// Runs one hook for one event, within its time.
async fn run(hook: &Hook, event: &CallEvent) {
    let json = serde_json::to_string(event).unwrap_or_default();
    let role = serde_json::to_value(event.role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut command = tokio::process::Command::new(&hook.exec);
    command
        .args(&hook.args)
        .env_clear()
        .env("PATH", PATH)
        .env("WEBRTCD_EVENT", event.event)
        .env("WEBRTCD_SESSION", &event.session)
        .env("WEBRTCD_PEER", &event.peer)
        .env("WEBRTCD_ROLE", role)
        .env("WEBRTCD_REASON", event.reason.as_deref().unwrap_or(""))
        .env("WEBRTCD_CAMERA", event.camera.as_deref().unwrap_or(""))
        .env("WEBRTCD_DEVICE", event.device.unwrap_or(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        // Its complaints go where the daemon's do (the journal).
        .stderr(Stdio::inherit())
        // Its own process group: on timeout the whole group is killed.
        .process_group(0)
        .kill_on_drop(true);
    let exec = hook.exec.display();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            tracing::warn!(hook = %exec, "hook could not start: {err}");
            return;
        }
    };
    let pid = child.id();
    let limit = Duration::from_secs(hook.timeout_secs);
    let finished = tokio::time::timeout(limit, async {
        if let Some(mut stdin) = child.stdin.take() {
            // A hook that does not read its input is fine.
            let _ = stdin.write_all(json.as_bytes()).await;
            let _ = stdin.write_all(b"\n").await;
        }
        child.wait().await
    })
    .await;
    match finished {
        Ok(Ok(status)) if status.success() => {
            tracing::debug!(hook = %exec, event = event.event, "hook done");
        }
        Ok(Ok(status)) => {
            tracing::warn!(hook = %exec, event = event.event, "hook failed: {status}")
        }
        Ok(Err(err)) => tracing::warn!(hook = %exec, "hook: {err}"),
        Err(_) => {
            tracing::warn!(hook = %exec, event = event.event, "hook still running after {limit:?}: killed");
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill(2) on the hook's own process group (it leads it: process_group(0)).
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            let _ = child.kill().await;
        }
    }
}
