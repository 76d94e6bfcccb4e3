//! The door in front of the RTSP server. Connections are accepted here, not by
//! gst-rtsp-server: each is admitted under the listener's caps (in total, per client
//! address), must send its first request's header within a few seconds, and only then is
//! handed to the server (`transfer_connection`, with the bytes already read). A connection
//! over a cap is answered `503` here and closed; gst-rtsp-server never sees it.
//!
//! Why not refuse inside gst-rtsp-server: its only hook is a `pre-*-request` signal, and
//! answering `pre-options-request` with an error frees the request's response, a stack
//! variable of its caller (`handle_options_request`, 1.22), which aborted the daemon with
//! `munmap_chunk(): invalid pointer` once a flood had pushed clients over the cap.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst_rtsp_server::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::service::listener::{self, Admission, Slot};
use crate::sync::lock;

/// The longest first-request header taken (RTSP requests are a few hundred bytes).
const MAX_HEADER: usize = 8 * 1024;
/// Refused connections being answered at once; past this they are closed unanswered.
pub const MAX_REFUSING: usize = 32;
/// How long a refused connection gets to send the request its `503` answers.
const REFUSE_WITHIN: Duration = Duration::from_secs(1);
/// RTSP sessions one connection may hold at once ([`bound_sessions`]); the session pool holds
/// this many per admitted connection.
pub const MAX_SESSIONS_PER_CLIENT: usize = 2;
/// How long a connection may go without setting up a session.
const SESSION_WITHIN: Duration = Duration::from_secs(20);
/// How long a connection stays once its sessions have ended.
const AFTER_SESSION: Duration = Duration::from_secs(5);

/// Where admitted connections go: the RTSP server, on its GLib thread.
#[derive(Clone)]
pub struct Handoff {
    server: gst_rtsp_server::RTSPServer,
    context: glib::MainContext,
    /// The slot of the connection being handed over, taken by `client-connected` (which
    /// the server emits within `transfer_connection`, on the same thread).
    pending: Arc<Mutex<Option<Slot>>>,
    /// The server's thread and the loop it runs, stopped and joined when the front stops.
    thread: Arc<Mutex<Option<ServerThread>>>,
}

/// The RTSP server's loop and the thread that runs it.
type ServerThread = (glib::MainLoop, std::thread::JoinHandle<()>);

impl Handoff {
    /// `server` must not be attached (it would accept connections itself); `context` is the
    /// one its thread runs.
    pub fn new(server: gst_rtsp_server::RTSPServer, context: glib::MainContext) -> Handoff {
        let pending: Arc<Mutex<Option<Slot>>> = Arc::default();
        let taken = Arc::clone(&pending);
        let timers = context.clone();
        let owners = Owners::default();
        if let Some(pool) = server.session_pool() {
            let owners = Arc::clone(&owners);
            pool.connect_session_removed(move |_, session| {
                let owner = session
                    .sessionid()
                    .and_then(|id| lock(&owners).remove(id.as_str()));
                if let Some(live) = owner {
                    live.fetch_sub(1, Ordering::Relaxed);
                }
            });
        }
        server.connect_client_connected(move |_, client| {
            // Held until the server closes the client (or drops it, whichever is first).
            let slot = Mutex::new(lock(&taken).take());
            client.connect_closed(move |_| {
                lock(&slot).take();
            });
            bound_sessions(client, &timers, &owners);
        });
        Handoff {
            server,
            context,
            pending,
            thread: Arc::default(),
        }
    }

    /// Runs `main_loop` (on the server's context) on a thread of its own until [`Handoff::stop`].
    pub fn run(&self, main_loop: glib::MainLoop) -> std::io::Result<()> {
        let context = self.context.clone();
        let running = main_loop.clone();
        let thread = std::thread::Builder::new()
            .name("rtsp".into())
            .spawn(move || {
                let _ = context.with_thread_default(|| running.run());
            })?;
        *lock(&self.thread) = Some((main_loop, thread));
        Ok(())
    }

    /// Stops the server's loop and waits for its thread (off the tokio workers).
    async fn stop(&self) {
        let Some((main_loop, thread)) = lock(&self.thread).take() else {
            return;
        };
        main_loop.quit();
        let _ = crate::media::work::run(move || thread.join()).await;
    }

    /// Hands `stream`, whose first bytes were `initial`, to the server.
    fn transfer(&self, stream: TcpStream, peer: SocketAddr, initial: String, slot: Slot) {
        let fd: OwnedFd = match stream.into_std() {
            Ok(stream) => stream.into(),
            Err(err) => {
                tracing::debug!(%peer, "RTSP: {err}");
                return;
            }
        };
        let this = self.clone();
        self.context.invoke(move || {
            let socket = match gst_rtsp_server::gio::Socket::from_fd(fd) {
                Ok(socket) => socket,
                Err(err) => {
                    tracing::debug!(%peer, "RTSP: {err}");
                    return;
                }
            };
            *lock(&this.pending) = Some(slot);
            let ip = peer.ip().to_string();
            let port = i32::from(peer.port());
            if let Err(err) = this
                .server
                .transfer_connection(socket, &ip, port, Some(&initial))
            {
                tracing::debug!(%peer, "RTSP: not handed over: {err}");
            }
            // Not taken: the server made no client of it. Its slot is free again.
            lock(&this.pending).take();
        });
    }
}

/// Each live RTSP session's id, and the live-session count of the connection that set it up.
type Owners = Arc<Mutex<HashMap<String, Arc<AtomicUsize>>>>;

/// What one admitted connection may hold. Each RTSP session has a media pipeline of its own
/// (several threads): a client that sent SETUP after SETUP without a `Session` header made
/// a session and a pipeline each (100 SETUPs: 815 threads). A recorder needs one session per
/// connection (every track's SETUP names it); a connection that holds more than
/// [`MAX_SESSIONS_PER_CLIENT`] live sessions at once is closed (a TEARDOWN, or a session's
/// timeout, gives one back). A connection that sets none up within [`SESSION_WITHIN`]
/// (OPTIONS, then silence) is closed too, and one whose sessions ended after
/// [`AFTER_SESSION`]: none holds its admission slot for nothing.
fn bound_sessions(
    client: &gst_rtsp_server::RTSPClient,
    timers: &glib::MainContext,
    owners: &Owners,
) {
    let live = Arc::new(AtomicUsize::new(0));
    let ever = Arc::new(AtomicBool::new(false));
    client.set_post_session_timeout(AFTER_SESSION.as_secs() as i32);
    let weak = client.downgrade();
    let closer = timers.clone();
    let owners = Arc::clone(owners);
    let had = Arc::clone(&ever);
    client.connect_new_session(move |_, session| {
        had.store(true, Ordering::Relaxed);
        if let Some(id) = session.sessionid() {
            lock(&owners).insert(id.to_string(), Arc::clone(&live));
        }
        if live.fetch_add(1, Ordering::Relaxed) + 1 > MAX_SESSIONS_PER_CLIENT {
            tracing::info!("RTSP: a client holds too many sessions; closed");
            // Not from inside its own request: on the server's thread, a moment later.
            let weak = weak.clone();
            glib::idle_source_new(None, glib::Priority::DEFAULT, move || {
                if let Some(client) = weak.upgrade() {
                    client.close();
                }
                glib::ControlFlow::Break
            })
            .attach(Some(&closer));
        }
    });
    let weak = client.downgrade();
    glib::timeout_source_new(SESSION_WITHIN, None, glib::Priority::DEFAULT, move || {
        if !ever.load(Ordering::Relaxed)
            && let Some(client) = weak.upgrade()
        {
            tracing::debug!("RTSP: no session set up in time; closed");
            client.close();
        }
        glib::ControlFlow::Break
    })
    .attach(Some(timers));
}

/// Accepts RTSP connections on `listener` until `shutdown`; each waits for its first
/// request on a task of `tracker` (at most `request_within`), then goes to `handoff`.
pub async fn serve(
    listener: TcpListener,
    admission: Arc<Admission>,
    request_within: Duration,
    handoff: Handoff,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    while let Some((stream, peer)) = listener::accept(&listener, &shutdown).await {
        let Some(slot) = admission.admit(peer.ip()) else {
            crate::metrics::get().connections_refused.inc();
            tracing::debug!(%peer, "RTSP: connection refused: too many connections");
            if let Ok(permit) = Arc::clone(&refusing).try_acquire_owned() {
                tracker.spawn(async move {
                    refuse(stream).await;
                    drop(permit);
                });
            }
            continue;
        };
        let handoff = handoff.clone();
        tracker.spawn(async move {
            let mut stream = stream;
            match tokio::time::timeout(request_within, first_request(&mut stream)).await {
                Ok(Some(initial)) => handoff.transfer(stream, peer, initial, slot),
                Ok(None) => tracing::debug!(%peer, "RTSP: not a request; closed"),
                Err(_) => tracing::debug!(%peer, "RTSP: no request in time; closed"),
            }
        });
    }
    handoff.stop().await;
}

/// Reads until the end of the first request's header; `None` when the peer closes first,
/// or sends more than [`MAX_HEADER`] bytes of it, or bytes that are no RTSP text.
async fn first_request(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if header_complete(&buf) {
            break;
        }
        if buf.len() > MAX_HEADER {
            return None;
        }
    }
    // The server takes the bytes as a C string: no NUL, valid text.
    if buf.contains(&0) {
        return None;
    }
    String::from_utf8(buf).ok()
}

fn header_complete(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n")
}

/// Answers a connection over the caps `503`, with its request's `CSeq` (clients match
/// answers by it) when it sends one soon enough, and closes it.
async fn refuse(mut stream: TcpStream) {
    let mut buf = vec![0u8; 2048];
    let read = tokio::time::timeout(REFUSE_WITHIN, stream.read(&mut buf)).await;
    let n = match read {
        Ok(Ok(n)) if n > 0 => n,
        _ => return,
    };
    let cseq = cseq(&buf[..n]).unwrap_or(0);
    let reply = format!(
        "RTSP/1.0 503 Service Unavailable\r\nCSeq: {cseq}\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n"
    );
    let _ = tokio::time::timeout(REFUSE_WITHIN, stream.write_all(reply.as_bytes())).await;
}

/// The `CSeq` header's number, if the request has one.
fn cseq(request: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(request).ok()?;
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("cseq")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_cseq_of_a_request() {
        let request = b"OPTIONS rtsp://h/live RTSP/1.0\r\ncseq: 7\r\nUser-Agent: x\r\n\r\n";
        assert_eq!(cseq(request), Some(7));
        assert_eq!(cseq(b"OPTIONS * RTSP/1.0\r\n\r\n"), None);
        assert_eq!(cseq(b"\xff\xfe"), None);
    }

    #[test]
    fn a_header_ends_at_an_empty_line() {
        assert!(header_complete(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n"));
        assert!(header_complete(b"OPTIONS * RTSP/1.0\nCSeq: 1\n\n"));
        assert!(!header_complete(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n"));
    }
}
