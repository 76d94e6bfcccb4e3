//! Serving one WebSocket connection against the relay registry.

use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message as Frame;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use futures::{AsyncRead, AsyncWrite, StreamExt};
use tokio::time::Instant;

use super::Relay;
use crate::protocol::{ErrorCode, MAX_MESSAGE_BYTES, Message};

/// Frames up to this size are read so that an oversize message gets a `too-large` answer and
/// the connection stays usable; beyond it the connection is closed.
pub const MAX_FRAME_BYTES: usize = 16 * MAX_MESSAGE_BYTES;

pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}

/// Runs a connection until the peer goes away, stops answering pings, or is dropped by the
/// relay for not reading. Leaving unregisters it, which announces `peer-left`.
pub async fn serve<S>(ws: WebSocketStream<S>, relay: Arc<Relay>, keepalive: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut attachment, mut outbox) = relay.attach();
    let kicked = attachment.kicked();
    let (mut sink, mut stream) = ws.split();
    let mut ping = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            frame = stream.next() => {
                last_heard = Instant::now();
                match frame {
                    Some(Ok(Frame::Text(text))) => attachment.handle_text(text.as_str()),
                    Some(Ok(Frame::Binary(_))) => {
                        let err = Message::error(ErrorCode::BadMessage, "text frames only", None);
                        if sink.send(Frame::text(err.encode())).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(Frame::Ping(_) | Frame::Pong(_) | Frame::Frame(_))) => {}
                    Some(Ok(Frame::Close(_))) | None => break,
                    Some(Err(err)) => {
                        tracing::debug!("websocket read: {err}");
                        break;
                    }
                }
            }
            Some(msg) = outbox.recv() => {
                if sink.send(Frame::text(msg.encode())).await.is_err() {
                    break;
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > keepalive * 2 {
                    tracing::info!(peer = ?attachment.id(), "no answer to pings; closing");
                    break;
                }
                if sink.send(Frame::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
            _ = kicked.notified() => break,
        }
    }
    let _ = sink.close(None).await;
    drop(attachment);
}
