//! Serving one WebSocket connection against the relay registry.
//!
//! Reading and writing run in separate tasks, so a client that stops reading cannot stop its
//! own connection from noticing anything else (pings, kicks, a close): its writer times out
//! on the stuck write, and the connection ends and releases its slot.

use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::Message as Frame;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::{WebSocketSender, WebSocketStream};
use futures::{AsyncRead, AsyncWrite, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Access, Relay};
use crate::protocol::{FromRelay, MAX_MESSAGE_BYTES};

/// Frames up to this size are read so that an oversize message gets a `too-large` answer and
/// the connection stays usable; beyond it the connection is closed.
pub const MAX_FRAME_BYTES: usize = 16 * MAX_MESSAGE_BYTES;

pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}

/// The bounds one connection lives within.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Ping interval; a connection silent for two of them is closed.
    pub keepalive: Duration,
    /// A write (a message or a ping) that has not completed by then drops the client.
    pub write_timeout: Duration,
    /// A connection that has not registered by then is closed.
    pub register_within: Duration,
}

impl ConnectionLimits {
    pub fn new(keepalive: Duration) -> ConnectionLimits {
        ConnectionLimits {
            keepalive,
            write_timeout: Duration::from_secs(10),
            register_within: Duration::from_secs(10),
        }
    }
}

/// Runs a connection until the peer goes away, stops answering pings, does not register in
/// time, stops reading, or is dropped by the relay. Leaving unregisters it, which announces
/// `peer-left`.
pub async fn serve<S>(
    ws: WebSocketStream<S>,
    relay: Arc<Relay>,
    access: Access,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut attachment, outbox) = relay.attach(access);
    let kicked = attachment.kicked();
    let (sink, mut stream) = ws.split();
    let (heard_tx, heard_rx) = tokio::sync::watch::channel(Instant::now());
    let mut writer = tokio::spawn(write(sink, outbox, heard_rx, limits));
    let register_deadline = tokio::time::sleep(limits.register_within);
    tokio::pin!(register_deadline);
    let mut writer_done = false;
    loop {
        tokio::select! {
            frame = stream.next() => {
                heard_tx.send_replace(Instant::now());
                match frame {
                    Some(Ok(Frame::Text(text))) => attachment.handle_text(text.as_str()),
                    Some(Ok(Frame::Binary(_))) => attachment.reject_binary(),
                    Some(Ok(Frame::Ping(_) | Frame::Pong(_) | Frame::Frame(_))) => {}
                    Some(Ok(Frame::Close(_))) | None => break,
                    Some(Err(err)) => {
                        tracing::debug!("websocket read: {err}");
                        break;
                    }
                }
            }
            _ = &mut writer => {
                writer_done = true;
                break;
            }
            _ = kicked.notified() => break,
            _ = shutdown.cancelled() => break,
            _ = &mut register_deadline, if attachment.id().is_none() => {
                tracing::debug!("closing a connection that did not register in time");
                break;
            }
        }
    }
    // Leaving the registry closes the outbox: the writer sends what is queued (the error
    // that explains a kick, say), then closes — unless the client does not read, so the wait
    // is short.
    // (A finished writer must not be awaited again: a JoinHandle polled after completion
    // panics — seen when a peer stopped answering pings.)
    drop(attachment);
    if !writer_done
        && tokio::time::timeout(FLUSH_ON_CLOSE, &mut writer)
            .await
            .is_err()
    {
        writer.abort();
    }
}

/// How long a closing connection may take to send what was queued for it.
const FLUSH_ON_CLOSE: Duration = Duration::from_secs(1);

/// Writes queued messages and pings; returns when a write fails or times out, or the peer
/// has been silent for two keepalive intervals.
async fn write<S>(
    mut sink: WebSocketSender<S>,
    mut outbox: mpsc::Receiver<FromRelay>,
    heard: tokio::sync::watch::Receiver<Instant>,
    limits: ConnectionLimits,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let keepalive = limits.keepalive;
    let mut ping = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
    loop {
        let frame = tokio::select! {
            msg = outbox.recv() => match msg {
                Some(msg) => Frame::text(msg.encode()),
                None => break,
            },
            _ = ping.tick() => {
                if heard.borrow().elapsed() > keepalive * 2 {
                    tracing::info!("no answer to pings; closing");
                    break;
                }
                Frame::Ping(Default::default())
            }
        };
        match tokio::time::timeout(limits.write_timeout, sink.send(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::debug!("websocket write: {err}");
                return;
            }
            Err(_) => {
                tracing::info!("a client stopped reading; closing");
                return;
            }
        }
    }
    let _ = tokio::time::timeout(limits.write_timeout, sink.close(None)).await;
}
