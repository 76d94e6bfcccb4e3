//! The DataChannel bridge: local programs (a door relay, a light switch) talk to calls over a
//! Unix socket, one JSON object per line.
//!
//! - daemon → client: every DataChannel message a peer sends (not the daemon's own ping and
//!   pong), as `{"session", "peer", "data"}`;
//! - client → daemon: `{"session", "data"}` sends `data` on that call's DataChannel (without
//!   `session`: on every call's); `data` is text, or any JSON value (sent as its JSON text).
//!   A line that cannot be used is answered `{"error": "…"}`.
//!
//! A client that stops reading is dropped (a write that does not finish within
//! [`WRITE_WITHIN`], or a backlog beyond what the notifier keeps, 256 messages): calls never
//! wait for it. A peer's message over 64 KiB is not passed on.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::codec::{FramedRead, LinesCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::BridgeConfig;
use crate::session::CallManager;

/// Clients connected at once; more are refused.
pub const MAX_CLIENTS: usize = 16;
/// The longest line a client may write (a DataChannel message is small).
const MAX_LINE: usize = 64 * 1024;
/// A client that does not take a line within this is not reading: dropped.
const WRITE_WITHIN: Duration = Duration::from_secs(2);

/// What a client writes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Outgoing {
    session: Option<String>,
    data: serde_json::Value,
}

/// Listens on the bridge's socket until `shutdown`; the socket file is removed then.
pub fn start(
    config: &BridgeConfig,
    calls: Arc<CallManager>,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let path = config.socket.clone();
    // A socket left by a daemon that did not stop cleanly; never anything else.
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        if !meta.file_type().is_socket() {
            anyhow::bail!(
                "bridge.socket: {} exists and is not a socket",
                path.display()
            );
        }
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("bridge: cannot listen on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(config.mode))
        .with_context(|| format!("bridge: permissions of {}", path.display()))?;
    tracing::info!(socket = %path.display(), "DataChannel bridge listening");
    let clients = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    let spawner = tasks.clone();
    tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!("bridge: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&clients).try_acquire_owned() else {
                // Counted, and logged at debug: a local connect flood must not flood the
                // journal too.
                crate::metrics::get().connections_refused.inc();
                tracing::debug!(max = MAX_CLIENTS, "bridge: too many clients; one refused");
                continue;
            };
            let calls = Arc::clone(&calls);
            let shutdown = shutdown.clone();
            spawner.spawn(async move {
                serve(stream, &calls, &shutdown).await;
                drop(permit);
            });
        }
        let _ = std::fs::remove_file(&path);
    });
    Ok(())
}

/// One client, until it leaves, stops reading, or the daemon stops.
async fn serve(stream: tokio::net::UnixStream, calls: &CallManager, shutdown: &CancellationToken) {
    tracing::debug!("bridge client connected");
    let (read, mut write) = stream.into_split();
    let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_LINE));
    let mut messages = calls.notifier().messages();
    let why = loop {
        let reply = tokio::select! {
            _ = shutdown.cancelled() => break "the daemon stops",
            message = messages.recv() => match message {
                Ok(message) => serde_json::to_string(&message).ok(),
                Err(RecvError::Lagged(_)) => break "it fell behind",
                Err(RecvError::Closed) => break "the daemon stops",
            },
            line = lines.next() => match line {
                Some(Ok(line)) => send(calls, &line),
                Some(Err(tokio_util::codec::LinesCodecError::MaxLineLengthExceeded)) => {
                    break "a line too long"
                }
                // Not UTF-8, or the socket failed.
                Some(Err(tokio_util::codec::LinesCodecError::Io(_))) => break "a read failed",
                None => break "it left",
            },
        };
        if let Some(mut text) = reply {
            text.push('\n');
            match tokio::time::timeout(WRITE_WITHIN, write.write_all(text.as_bytes())).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break "it left",
                Err(_) => break "it stopped reading",
            }
        }
    };
    tracing::info!("bridge client dropped: {why}");
}

/// Sends what a client wrote; the error line to answer, if any.
fn send(calls: &CallManager, line: &str) -> Option<String> {
    if line.trim().is_empty() {
        return None;
    }
    let error = |text: &str| Some(serde_json::json!({ "error": text }).to_string());
    let outgoing: Outgoing = match serde_json::from_str(line) {
        Ok(outgoing) => outgoing,
        Err(_) => return error("expected {\"session\": \"…\", \"data\": …}"),
    };
    let text = match outgoing.data {
        serde_json::Value::String(text) => text,
        other => other.to_string(),
    };
    let sent = calls.send_to_channels(outgoing.session.as_deref(), &text);
    match (sent, outgoing.session) {
        (0, Some(_)) => error("no such call"),
        _ => None,
    }
}
