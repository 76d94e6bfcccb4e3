//! systemd's notification protocol (sd_notify): `READY=1`, `WATCHDOG=1`, `STOPPING=1` as
//! datagrams to `$NOTIFY_SOCKET`. A few lines of our own instead of a crate: the protocol is
//! one datagram per state change.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
}

impl Notifier {
    /// Talks to `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace); does nothing
    /// when the daemon was not started by systemd.
    pub fn from_env() -> Notifier {
        let socket = std::env::var("NOTIFY_SOCKET").ok().and_then(|path| {
            let addr = match path.strip_prefix('@') {
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt;
                    std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
                }
                None => std::os::unix::net::SocketAddr::from_pathname(&path).ok()?,
            };
            let socket = UnixDatagram::unbound().ok()?;
            socket.set_nonblocking(true).ok()?;
            Some((socket, addr))
        });
        Notifier { socket }
    }

    pub fn notify(&self, state: &str) {
        if let Some((socket, addr)) = &self.socket
            && let Err(err) = socket.send_to_addr(state.as_bytes(), addr)
        {
            tracing::warn!("cannot notify systemd ({state}): {err}");
        }
    }
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC`, if it is meant for us.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let for_us = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_none_or(|pid| pid == std::process::id());
    (for_us && usec > 0).then(|| Duration::from_micros(usec / 2))
}
