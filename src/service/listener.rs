//! Accepting HTTP connections within bounds: a total cap kept below the process's file
//! descriptor limit, a cap per client address (one host cannot take every slot), and a
//! bound on how long a client may take to send a request's header. A WebSocket keeps its
//! connection's slot for as long as it is open.
//!
//! With TLS, the first byte tells a TLS handshake from a plain-HTTP request: the first is
//! served as HTTPS (and WSS), the second gets a redirect to the same address over HTTPS.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::guard::{Guard, Listening};
use crate::sync::lock;

/// How long a connection gets to finish its request once shutdown starts.
const CLOSE_GRACE: Duration = Duration::from_millis(300);
/// After `accept` fails (out of descriptors), wait this long before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once, HTTP and WebSocket together.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_per_address: usize,
    /// A client must send a whole request header within this (and idle keep-alive
    /// connections are closed after it).
    pub header_timeout: Duration,
}

/// Counts the connections that are open, in total and per address.
pub struct Admission {
    limits: Limits,
    total: Arc<Semaphore>,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    /// Slots kept for health checks once every other is taken ([`Admission::with_reserve`]).
    reserve: Option<Arc<Admission>>,
}

/// Slots kept for `/healthz` and `/metrics`, and how many one address may hold: a monitor
/// gets an answer while signaling clients fill every other slot.
const RESERVED: usize = 8;
const RESERVED_PER_ADDRESS: usize = 1;
/// The only paths a connection on a reserved slot may ask for.
const RESERVED_PATHS: [&str; 2] = ["/healthz", "/metrics"];

/// One admitted connection's place. Dropped (last clone) when the connection — or the
/// WebSocket it was upgraded to — closes.
#[derive(Clone)]
pub struct Slot(Arc<SlotInner>);

impl Slot {
    /// A slot of the health checks' reserve: it serves [`RESERVED_PATHS`] only.
    pub fn is_reserved(&self) -> bool {
        self.0.reserved
    }
}

struct SlotInner {
    _permit: OwnedSemaphorePermit,
    addr: IpAddr,
    admission: Arc<Admission>,
    reserved: bool,
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        let mut map = self.admission.lock();
        if let Some(n) = map.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.addr);
            }
        }
    }
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Self::plain(limits))
    }

    fn plain(limits: Limits) -> Admission {
        Admission {
            limits,
            total: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            per_address: Mutex::default(),
            reserve: None,
        }
    }

    /// [`Admission::new`], with [`RESERVED`] more slots for health checks: taken only when
    /// the others are, and good for `/healthz` and `/metrics` alone.
    pub fn with_reserve(limits: Limits) -> Arc<Admission> {
        let reserve = Admission::plain(Limits {
            max_connections: RESERVED,
            max_per_address: RESERVED_PER_ADDRESS,
            header_timeout: limits.header_timeout,
        });
        Arc::new(Admission {
            reserve: Some(Arc::new(reserve)),
            ..Self::plain(limits)
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        lock(&self.per_address)
    }

    /// A slot for a new connection from `addr`: an ordinary one, else one of the health
    /// checks' reserve; `None` when both are full (for this address or in total).
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Option<Slot> {
        self.admit_here(addr, false).or_else(|| {
            // Only once every ordinary slot is taken: an address at its own cap is not let
            // into the reserve.
            if self.total.available_permits() > 0 {
                return None;
            }
            self.reserve
                .as_ref()
                .and_then(|reserve| reserve.admit_here(addr, true))
        })
    }

    fn admit_here(self: &Arc<Self>, addr: IpAddr, reserved: bool) -> Option<Slot> {
        let addr = client_of(addr);
        let mut map = self.lock();
        let from_addr = map.get(&addr).copied().unwrap_or(0);
        if from_addr >= self.limits.max_per_address.max(1) {
            return None;
        }
        let permit = Arc::clone(&self.total).try_acquire_owned().ok()?;
        map.insert(addr, from_addr + 1);
        Some(Slot(Arc::new(SlotInner {
            _permit: permit,
            addr,
            admission: Arc::clone(self),
            reserved,
        })))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.limits.max_connections.max(1) - self.total.available_permits()
    }
}

/// The next connection on `listener`; `None` once `shutdown` is cancelled. A failed accept
/// (out of descriptors, most likely) is retried after [`ACCEPT_BACKOFF`]: no one is refused
/// for good, and the loop does not spin.
pub async fn accept(
    listener: &TcpListener,
    shutdown: &CancellationToken,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => return None,
        };
        match accepted {
            Ok(accepted) => return Some(accepted),
            Err(err) => {
                tracing::warn!("accept on {:?}: {err}", listener.local_addr().ok());
                if !crate::backoff::Backoff::sleep(ACCEPT_BACKOFF, shutdown).await {
                    return None;
                }
            }
        }
    }
}

/// TLS on a listener: the server's configuration, and the guard that checks a plain-HTTP
/// request's `Host` before it is redirected to HTTPS (else any `Host` would be echoed into
/// the redirect: an open redirect).
pub struct Secure {
    pub config: Arc<rustls::ServerConfig>,
    pub guard: Arc<Guard>,
}

/// Whom an address counts for in per-address caps: an IPv4 address (also when it comes
/// IPv4-mapped), or an IPv6 /64 (one host commonly has a whole /64 to pick addresses from).
fn client_of(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// Serves `app` on `listener` until `shutdown`, each connection a task on `tracker`: HTTPS
/// when `tls` is given, else plain HTTP. Each request carries its connection's [`Slot`],
/// [`Listening`] and `ConnectInfo<SocketAddr>` as extensions.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    admission: Arc<Admission>,
    tls: Option<Secure>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let header_timeout = admission.limits.header_timeout;
    let redirect = tls.as_ref().map(|secure| {
        to_https().layer(axum::middleware::from_fn_with_state(
            Arc::clone(&secure.guard),
            super::guard::guard,
        ))
    });
    let tls = tls.map(|secure| secure.config);
    let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    while let Some((stream, peer)) = accept(&listener, &shutdown).await {
        // Signaling is small messages back to back (an answer, then its candidates): none
        // should wait for the previous one's ACK (Nagle). No change measured on loopback
        // (2026-12-03), where ACKs come at once; on a real link a delayed ACK can hold one.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%peer, "TCP_NODELAY: {err}");
        }
        let Some(slot) = admission.admit(peer.ip()) else {
            crate::metrics::get().connections_refused.inc();
            tracing::debug!(%peer, "connection refused: too many connections");
            drop(stream);
            continue;
        };
        let conn = Connection {
            slot,
            peer,
            header_timeout,
            shutdown: shutdown.clone(),
        };
        let app = app.clone();
        let tls = tls.clone();
        let redirect = redirect.clone();
        tracker.spawn(async move {
            // A connection that says nothing for a few seconds is closed before it costs
            // more than its descriptor (a whole header then has `header_timeout`).
            let first = first_byte(&stream, header_timeout.min(FIRST_BYTE_WITHIN)).await;
            let Some(first) = first else {
                tracing::debug!(%peer, "nothing sent in time; closed");
                return;
            };
            let Some(tls) = tls else {
                let listening = Listening {
                    secure: false,
                    loopback,
                };
                return conn.serve(TokioIo::new(stream), app, listening).await;
            };
            const TLS_HANDSHAKE: u8 = 0x16;
            if first != TLS_HANDSHAKE {
                let listening = Listening {
                    secure: false,
                    loopback,
                };
                let redirect = redirect.unwrap_or_else(to_https);
                return conn.serve(TokioIo::new(stream), redirect, listening).await;
            }
            let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
            match tokio::time::timeout(header_timeout, accept).await {
                Ok(Ok(stream)) => {
                    let listening = Listening {
                        secure: true,
                        loopback,
                    };
                    conn.serve(TokioIo::new(stream), app, listening).await
                }
                Ok(Err(err)) => tracing::debug!(%peer, "TLS handshake: {err}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// How long a new connection may send nothing at all (`client_timeout_secs` if lower).
const FIRST_BYTE_WITHIN: Duration = Duration::from_secs(5);

/// The client's first byte (left in the socket), or `None` when it sends nothing in time or
/// goes away. On the TLS port it tells a TLS handshake record from plain HTTP.
async fn first_byte(stream: &tokio::net::TcpStream, within: Duration) -> Option<u8> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(within, stream.peek(&mut first)).await {
        Ok(Ok(1)) => Some(first[0]),
        _ => None,
    }
}

/// What a plain-HTTP request on the TLS port gets: a redirect to the same address over
/// HTTPS. Served behind the guard ([`Secure::guard`]): a foreign `Host` gets 403.
fn to_https() -> Router {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    Router::new().fallback(|req: axum::extract::Request| async move {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let location = format!("https://{host}{path}");
        match axum::http::HeaderValue::from_str(&location) {
            Ok(location) => (
                StatusCode::PERMANENT_REDIRECT,
                [(header::LOCATION, location)],
                "this port speaks HTTPS\n",
            )
                .into_response(),
            Err(_) => (StatusCode::BAD_REQUEST, "this port speaks HTTPS\n").into_response(),
        }
    })
}

/// What a connection on a reserved slot gets for anything but a health check; it is closed
/// after (the slot is for the next monitor).
fn full_house() -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONNECTION, "close"), (header::RETRY_AFTER, "5")],
        "too many connections; try again later\n",
    )
        .into_response()
}

/// One admitted connection, served by hyper over plain TCP or TLS.
struct Connection {
    slot: Slot,
    peer: SocketAddr,
    header_timeout: Duration,
    shutdown: CancellationToken,
}

impl Connection {
    async fn serve<I>(self, io: I, app: Router, listening: Listening)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let Connection {
            slot,
            peer,
            header_timeout,
            shutdown,
        } = self;
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            use futures::FutureExt;
            use futures::future::Either;
            let reserved = slot.is_reserved();
            if reserved && !RESERVED_PATHS.contains(&req.uri().path()) {
                return Either::Left(std::future::ready(Ok(full_house())));
            }
            req.extensions_mut().insert(slot.clone());
            req.extensions_mut().insert(listening);
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            // A reserved slot serves one health check and is given back: no keep-alive.
            Either::Right(app.clone().oneshot(req).map(move |response| {
                response.map(|mut response| {
                    if reserved {
                        response.headers_mut().insert(
                            axum::http::header::CONNECTION,
                            axum::http::HeaderValue::from_static("close"),
                        );
                    }
                    response
                })
            }))
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(io, service)
            .with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%peer, "connection: {err}");
                }
            }
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
            }
        }
    }
}

/// Raises the soft limit on open files to the hard one (systemd's `LimitNOFILE`), and
/// returns it: the connection cap must stay well below it, with room for pipelines.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// Descriptors kept free for pipelines, calls (ICE sockets, GLib wakeups) and files.
pub const FDS_RESERVED: u64 = 1024;

/// The connection cap to use for `what` (a config key): the configured one, lowered (with a
/// warning) so that it, the `others` (other listeners' caps) and [`FDS_RESERVED`]
/// descriptors fit under `fd_limit`.
pub fn fit_connections(what: &str, configured: usize, fd_limit: u64, others: usize) -> usize {
    let room = fd_limit
        .saturating_sub(FDS_RESERVED)
        .saturating_sub(others as u64)
        .max(16) as usize;
    if configured > room {
        tracing::warn!(
            configured,
            fd_limit,
            "{what} lowered to {room} to leave descriptors for calls and other listeners"
        );
        room
    } else {
        configured
    }
}

/// Slots the health checks' reserve adds to a listener's cap ([`Admission::with_reserve`]).
pub const fn reserved_slots() -> usize {
    RESERVED
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per: usize) -> Limits {
        Limits {
            max_connections: total,
            max_per_address: per,
            header_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn caps_per_address_and_in_total_and_frees_slots() {
        let admission = Admission::new(limits(3, 2));
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let c: IpAddr = "127.0.0.4".parse().unwrap();
        let a1 = admission.admit(a).unwrap();
        let _a2 = admission.admit(a).unwrap();
        assert!(admission.admit(a).is_none(), "per address");
        let _b1 = admission.admit(b).unwrap();
        assert!(admission.admit(c).is_none(), "in total");
        assert_eq!(admission.open(), 3);
        // A clone (a WebSocket holding its connection's slot) keeps it.
        let held = a1.clone();
        drop(a1);
        assert!(admission.admit(c).is_none());
        drop(held);
        assert!(admission.admit(c).is_some());
        assert!(admission.lock().get(&a) == Some(&1));
    }

    #[test]
    fn health_checks_have_slots_of_their_own() {
        let admission = Admission::with_reserve(limits(3, 2));
        let a: IpAddr = "127.0.0.5".parse().unwrap();
        let b: IpAddr = "127.0.0.1".parse().unwrap();
        let c: IpAddr = "127.0.0.6".parse().unwrap();
        let mut ordinary: Vec<Slot> = (0..2).map(|_| admission.admit(a).unwrap()).collect();
        assert!(ordinary.iter().all(|s| !s.is_reserved()));
        // At its own cap, with ordinary slots left: no reserve for it.
        assert!(admission.admit(a).is_none());
        ordinary.push(admission.admit(c).unwrap());
        // Full: an address gets RESERVED_PER_ADDRESS reserved slots, no more.
        let reserved: Vec<Slot> = (0..RESERVED_PER_ADDRESS)
            .map(|_| admission.admit(a).unwrap())
            .collect();
        assert!(reserved.iter().all(Slot::is_reserved));
        assert!(admission.admit(a).is_none());
        // Another address (the monitor) still gets one.
        assert!(admission.admit(b).is_some_and(|s| s.is_reserved()));
        drop(ordinary);
        assert!(admission.admit(b).is_some_and(|s| !s.is_reserved()));
        // Without a reserve, full is full.
        let plain = Admission::new(limits(1, 1));
        let _one = plain.admit(a).unwrap();
        assert!(plain.admit(b).is_none());
    }

    #[test]
    fn an_ipv6_host_counts_once_per_64() {
        let admission = Admission::new(limits(10, 2));
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _a = admission.admit(one).unwrap();
        let _b = admission.admit(same_64).unwrap();
        assert!(admission.admit(same_64).is_none(), "the same /64");
        assert!(admission.admit(other_64).is_some());
        let mapped: IpAddr = "::ffff:127.0.0.9".parse().unwrap();
        let v4: IpAddr = "127.0.0.9".parse().unwrap();
        let _c = admission.admit(mapped).unwrap();
        let _d = admission.admit(v4).unwrap();
        assert!(admission.admit(v4).is_none(), "IPv4-mapped counts as IPv4");
    }

    #[test]
    fn the_cap_leaves_room_for_calls() {
        assert_eq!(fit_connections("max_connections", 512, 8192, 0), 512);
        assert_eq!(fit_connections("max_connections", 4096, 2048, 0), 1024);
        assert_eq!(fit_connections("max_connections", 100, 0, 0), 16);
        // Other listeners' caps come out of the same descriptors.
        assert_eq!(fit_connections("max_connections", 1024, 2048, 24), 1000);
    }
}
