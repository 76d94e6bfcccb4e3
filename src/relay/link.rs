//! The daemon's own connection to a relay: the embedded one in-process, or a remote one over
//! WebSocket that is re-registered with backoff whenever it goes away and comes back — with
//! several, the first that answers, then the next whenever the one in use goes away.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_tungstenite::tungstenite::Message as Frame;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Relay;
use super::ws;
use crate::backoff::Backoff;
use crate::protocol::{ErrorCode, FromRelay, PeerId, Signal, ToRelay};
use crate::redact::SecretUrl;

/// The remote relays and how to reach them.
#[derive(Clone)]
pub struct RemoteRelay {
    /// `ws://` or `wss://host:port/signaling`, in order of preference (at least one); shown
    /// redacted (a `?token=` may be in them).
    pub urls: Vec<SecretUrl>,
    /// Sent as `Authorization: Bearer`.
    pub token: Option<SecretString>,
    /// How a `wss://` relay's certificate is verified.
    pub tls: Arc<rustls::ClientConfig>,
}

/// What the daemon hears from its relay.
#[derive(Debug)]
pub enum LinkEvent {
    Message(FromRelay),
    /// The connection to the relay was lost; a `registered` follows when it is back.
    Down,
}

pub struct Link {
    /// Messages to the relay.
    pub outgoing: mpsc::Sender<Signal>,
    pub incoming: mpsc::Receiver<LinkEvent>,
}

/// Where the link's task is tracked, and what ends it (after the last hangups have left).
pub struct LinkTasks {
    pub tracker: tokio_util::task::TaskTracker,
    pub shutdown: tokio_util::sync::CancellationToken,
}

const QUEUE: usize = 256;
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Short enough that a relay that comes back sees the daemon again within a few seconds.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Registers `id` with the relay running in this process. The registration cannot be taken
/// from the daemon by other peers; should it be lost anyway, the daemon hears `Down` and it
/// is made again at once.
pub fn embedded(relay: &Arc<Relay>, id: Option<String>, tasks: &LinkTasks) -> Link {
    let (outgoing, mut from_daemon) = mpsc::channel::<Signal>(QUEUE);
    let (to_daemon, incoming) = mpsc::channel(QUEUE);
    let relay = Arc::clone(relay);
    let shutdown = tasks.shutdown.clone();
    tasks.tracker.spawn(async move {
        // Bounded by the daemon's life: each turn is one registration, and turns are paced.
        loop {
            let (mut attachment, mut inbox) = relay.attach_owner();
            let kicked = attachment.kicked();
            attachment.handle(ToRelay::Register {
                id: id.clone().map(PeerId::local),
            });
            loop {
                tokio::select! {
                    msg = from_daemon.recv() => match msg {
                        Some(msg) => attachment.handle(ToRelay::Signal(msg)),
                        None => return,
                    },
                    msg = inbox.recv() => {
                        let Some(msg) = msg else { break };
                        let refused = matches!(msg, FromRelay::Error { code: ErrorCode::IdTaken, .. });
                        if to_daemon.send(LinkEvent::Message(msg)).await.is_err() {
                            return;
                        }
                        if refused {
                            break;
                        }
                    }
                    _ = kicked.notified() => break,
                    _ = shutdown.cancelled() => {
                        // The last hangups go out before the daemon leaves the relay.
                        while let Ok(msg) = from_daemon.try_recv() {
                            attachment.handle(ToRelay::Signal(msg));
                        }
                        return;
                    }
                }
            }
            tracing::warn!("lost the registration on the embedded relay; registering again");
            drop(attachment);
            if to_daemon.send(LinkEvent::Down).await.is_err() {
                return;
            }
            if !Backoff::sleep(BACKOFF_MIN, &shutdown).await {
                return;
            }
        }
    });
    Link { outgoing, incoming }
}

/// Connects to a remote relay (`ws://host:port/signaling`), keeps the registration alive:
/// pings every `keepalive`, and reconnects with backoff when the relay closes, errs, or has
/// been silent for two intervals (a half-open connection, a frozen relay). With several
/// relays, each attempt after a loss or a failure goes to the next in the list.
pub fn remote(
    relay: RemoteRelay,
    id: Option<String>,
    keepalive: Duration,
    tasks: &LinkTasks,
) -> Link {
    let (outgoing, mut from_daemon) = mpsc::channel::<Signal>(QUEUE);
    let (to_daemon, incoming) = mpsc::channel(QUEUE);
    let shutdown = tasks.shutdown.clone();
    tasks.tracker.spawn(async move {
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut next = 0;
        let mut taken_in_a_row = 0;
        loop {
            let Some(url) = relay.urls.get(next % relay.urls.len().max(1)).cloned() else {
                tracing::error!("no relay to register with");
                return;
            };
            let ended = connect_once(
                &relay,
                &url,
                Registration {
                    id: id.clone(),
                    keepalive,
                    shutdown: &shutdown,
                },
                &mut from_daemon,
                &to_daemon,
                &mut backoff,
            )
            .await;
            // A relay that says the id is taken is alive (it has not yet noticed our old
            // registration is gone, or its cluster not yet that our relay died): try it again,
            // soon and without growing the backoff, rather than one that may be dead.
            // A real duplicate (another device with our id) is not worth hammering: after a
            // few seconds of quick retries, the usual backoff.
            let mut quick = false;
            match ended {
                Ok(Session::DaemonGone) => return,
                Ok(Session::RelayGone(why @ ID_TAKEN)) => {
                    taken_in_a_row += 1;
                    quick = taken_in_a_row <= ID_TAKEN_QUICK_RETRIES;
                    tracing::warn!(relay = %url, "{why}; registering again")
                }
                Ok(Session::RelayGone(why)) => {
                    taken_in_a_row = 0;
                    next += 1;
                    tracing::warn!(relay = %url, "relay connection lost ({why}); reconnecting")
                }
                Err(err) => {
                    taken_in_a_row = 0;
                    next += 1;
                    tracing::warn!(relay = %url, "relay unreachable: {err:#}")
                }
            }
            if to_daemon.send(LinkEvent::Down).await.is_err() {
                return;
            }
            let pause = if quick {
                ID_TAKEN_RETRY
            } else {
                backoff.next_pause()
            };
            if !Backoff::sleep(jittered(pause), &shutdown).await {
                return;
            }
        }
    });
    Link { outgoing, incoming }
}

const ID_TAKEN: &str = "the id is taken";
/// How soon a relay that said the id is taken is asked again, how many times…
const ID_TAKEN_RETRY: Duration = Duration::from_millis(300);
/// …before the usual backoff applies.
const ID_TAKEN_QUICK_RETRIES: u32 = 20;

/// `pause` give or take a fifth: a fleet that lost its relay at once does not come back in
/// step.
fn jittered(pause: Duration) -> Duration {
    let mut byte = [0u8; 1];
    if getrandom::fill(&mut byte).is_err() {
        return pause;
    }
    // 0.8 … 1.2
    pause.mul_f64(0.8 + f64::from(byte[0]) / 255.0 * 0.4)
}

enum Session {
    RelayGone(&'static str),
    DaemonGone,
}

/// A byte stream to the relay: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Opens the TCP connection (and TLS, for `wss://`, verifying the certificate) and sends the
/// WebSocket handshake with the token in a header.
async fn open(
    relay: &RemoteRelay,
    url: &SecretUrl,
) -> anyhow::Result<
    async_tungstenite::WebSocketStream<async_tungstenite::tokio::TokioAdapter<Box<dyn Io>>>,
> {
    // Errors name the relay redacted: the URL itself may hold a token.
    let parsed = url::Url::parse(url.expose()).context("not a URL")?;
    let (host, port) = crate::net::host_and_port(&parsed)?;
    let secure = parsed.scheme() == "wss";
    let mut request = url
        .expose()
        .into_client_request()
        .context("not a WebSocket URL")?;
    if let Some(token) = &relay.token {
        let value = format!("Bearer {}", token.expose_secret())
            .parse()
            .context("the relay token is not a valid header value")?;
        request.headers_mut().insert("authorization", value);
    }
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    // Small messages back to back: not held for the previous one's ACK (see the listener).
    tcp.set_nodelay(true)
        .with_context(|| format!("TCP_NODELAY to {host}:{port}"))?;
    let stream: Box<dyn Io> = if secure {
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .with_context(|| format!("{host} is not a name a certificate can hold"))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&relay.tls))
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS with {host}:{port}"))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (ws, _) =
        async_tungstenite::tokio::client_async_with_config(request, stream, Some(ws::config()))
            .await
            .context("WebSocket handshake")?;
    Ok(ws)
}

/// What one connection to a remote relay registers, how it keeps alive, and when it ends.
struct Registration<'a> {
    id: Option<String>,
    keepalive: Duration,
    /// The daemon stops: what it queued (the last hangups) is sent, then the link closes.
    shutdown: &'a tokio_util::sync::CancellationToken,
}

async fn connect_once(
    relay: &RemoteRelay,
    url: &SecretUrl,
    registration: Registration<'_>,
    from_daemon: &mut mpsc::Receiver<Signal>,
    to_daemon: &mpsc::Sender<LinkEvent>,
    backoff: &mut Backoff,
) -> anyhow::Result<Session> {
    let Registration {
        id,
        keepalive,
        shutdown,
    } = registration;
    // A frozen relay accepts the TCP connection and never answers the handshake.
    let silent = keepalive * 2;
    let ws = tokio::select! {
        _ = shutdown.cancelled() => return Ok(Session::DaemonGone),
        ws = tokio::time::timeout(silent, open(relay, url)) => {
            ws.map_err(|_| anyhow::anyhow!("no handshake within {silent:?}"))??
        }
    };
    let (mut sink, mut stream) = ws.split();
    let mut send = async |frame: Frame| -> anyhow::Result<()> {
        tokio::time::timeout(silent, sink.send(frame))
            .await
            .map_err(|_| anyhow::anyhow!("the relay is not reading"))??;
        Ok(())
    };
    send(Frame::text(
        ToRelay::Register {
            id: id.map(PeerId::local),
        }
        .encode(),
    ))
    .await?;
    let mut ping = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            msg = from_daemon.recv() => match msg {
                Some(msg) => send(Frame::text(msg.encode())).await?,
                None => return Ok(Session::DaemonGone),
            },
            _ = shutdown.cancelled() => {
                // The last hangups go out before the daemon leaves the relay.
                while let Ok(msg) = from_daemon.try_recv() {
                    send(Frame::text(msg.encode())).await?;
                }
                let _ = send(Frame::Close(None)).await;
                return Ok(Session::DaemonGone);
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > silent {
                    return Ok(Session::RelayGone("no answer to pings"));
                }
                send(Frame::Ping(Default::default())).await?;
            }
            frame = stream.next() => {
                last_heard = Instant::now();
                match frame {
                    Some(Ok(Frame::Text(text))) => match FromRelay::decode(text.as_str()) {
                        Ok(msg) => {
                            if matches!(msg, FromRelay::Registered { .. }) {
                                backoff.reset();
                                tracing::info!(relay = %url, "registered with the relay");
                            }
                            // After a reconnect the relay may not yet have noticed our old
                            // connection is gone: retry with backoff instead of staying
                            // unregistered.
                            let taken =
                                matches!(msg, FromRelay::Error { code: ErrorCode::IdTaken, .. });
                            if to_daemon.send(LinkEvent::Message(msg)).await.is_err() {
                                return Ok(Session::DaemonGone);
                            }
                            if taken {
                                return Ok(Session::RelayGone(ID_TAKEN));
                            }
                        }
                        Err(err) => tracing::warn!("relay sent something unreadable: {err}"),
                    },
                    Some(Ok(Frame::Close(_))) | None => return Ok(Session::RelayGone("closed")),
                    Some(Ok(_)) => {}
                    Some(Err(err)) => {
                        tracing::debug!("relay read: {err}");
                        return Ok(Session::RelayGone("read error"));
                    }
                }
            }
        }
    }
}
