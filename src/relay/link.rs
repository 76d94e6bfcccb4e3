//! The daemon's own connection to a relay: the embedded one in-process, or a remote one over
//! WebSocket that is re-registered with backoff whenever it goes away and comes back.

use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::Message as Frame;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::Relay;
use super::ws;
use crate::protocol::{ErrorCode, Message};

/// What the daemon hears from its relay.
#[derive(Debug)]
pub enum LinkEvent {
    Message(Message),
    /// The connection to the relay was lost; a `registered` follows when it is back.
    Down,
}

pub struct Link {
    /// Messages to the relay.
    pub outgoing: mpsc::Sender<Message>,
    pub incoming: mpsc::Receiver<LinkEvent>,
}

const QUEUE: usize = 256;
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Registers `id` with the relay running in this process.
pub fn embedded(relay: &Arc<Relay>, id: Option<String>) -> Link {
    let (outgoing, mut from_daemon) = mpsc::channel::<Message>(QUEUE);
    let (to_daemon, incoming) = mpsc::channel(QUEUE);
    let (mut attachment, mut inbox) = relay.attach();
    tokio::spawn(async move {
        attachment.handle(Message::Register { id });
        loop {
            tokio::select! {
                msg = from_daemon.recv() => match msg {
                    Some(msg) => attachment.handle(msg),
                    None => break,
                },
                msg = inbox.recv() => match msg {
                    Some(msg) => if to_daemon.send(LinkEvent::Message(msg)).await.is_err() { break },
                    None => break,
                },
            }
        }
    });
    Link { outgoing, incoming }
}

/// Connects to a remote relay (`ws://host:port/signaling`), keeps the registration alive.
pub fn remote(url: String, id: Option<String>) -> Link {
    let (outgoing, mut from_daemon) = mpsc::channel::<Message>(QUEUE);
    let (to_daemon, incoming) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        let mut backoff = BACKOFF_MIN;
        loop {
            match connect_once(&url, id.clone(), &mut from_daemon, &to_daemon, &mut backoff).await {
                Ok(Session::DaemonGone) => return,
                Ok(Session::RelayGone) => {
                    tracing::warn!(relay = %url, "relay connection lost; reconnecting")
                }
                Err(err) => tracing::warn!(relay = %url, "relay unreachable: {err}"),
            }
            if to_daemon.send(LinkEvent::Down).await.is_err() {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    });
    Link { outgoing, incoming }
}

enum Session {
    RelayGone,
    DaemonGone,
}

async fn connect_once(
    url: &str,
    id: Option<String>,
    from_daemon: &mut mpsc::Receiver<Message>,
    to_daemon: &mpsc::Sender<LinkEvent>,
    backoff: &mut Duration,
) -> anyhow::Result<Session> {
    let (ws, _) =
        async_tungstenite::tokio::connect_async_with_config(url, Some(ws::config())).await?;
    let (mut sink, mut stream) = ws.split();
    sink.send(Frame::text(Message::Register { id }.encode()))
        .await?;
    loop {
        tokio::select! {
            msg = from_daemon.recv() => match msg {
                Some(msg) => sink.send(Frame::text(msg.encode())).await?,
                None => return Ok(Session::DaemonGone),
            },
            frame = stream.next() => match frame {
                Some(Ok(Frame::Text(text))) => match Message::decode(text.as_str()) {
                    Ok(msg) => {
                        if matches!(msg, Message::Registered { .. }) {
                            *backoff = BACKOFF_MIN;
                        }
                        // After a reconnect the relay may not yet have noticed our old
                        // connection is gone: retry with backoff instead of staying unregistered.
                        let taken = matches!(msg, Message::Error { code: ErrorCode::IdTaken, .. });
                        if to_daemon.send(LinkEvent::Message(msg)).await.is_err() {
                            return Ok(Session::DaemonGone);
                        }
                        if taken {
                            return Ok(Session::RelayGone);
                        }
                    }
                    Err(err) => tracing::warn!("relay sent something unreadable: {err}"),
                },
                Some(Ok(Frame::Close(_))) | None => return Ok(Session::RelayGone),
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    tracing::debug!("relay read: {err}");
                    return Ok(Session::RelayGone);
                }
            },
        }
    }
}
