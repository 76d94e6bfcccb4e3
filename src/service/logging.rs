//! Logs: `tracing` to the journal or to stderr. Under systemd (stderr is the journal stream)
//! entries go to journald natively (`tracing-journald`: priority and fields as journal
//! fields, one datagram per entry, so no text a peer sends can start a second entry).
//! Elsewhere, the usual format on stderr, with every control character inside an entry
//! escaped so a peer's `\n<3>…` cannot forge a line. GStreamer's own warnings and errors are
//! routed into the same log, with their category.
//!
//! SDP, candidates, addresses and secrets are never logged at info level.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::sync::lock;

pub fn init() {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(journald) => {
                tracing_subscriber::registry()
                    .with(filter())
                    .with(journald.with_syslog_identifier("webrtcd".into()))
                    .init();
                return;
            }
            Err(err) => eprintln!("cannot reach journald ({err}); logging to stderr"),
        }
    }
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_ansi(terminal)
        .with_writer(move || EscapingStderr { colours: terminal })
        .init();
}

/// Whether stderr is the journal stream systemd gave us (`$JOURNAL_STREAM` is `dev:inode`
/// of it; a child whose stderr was redirected elsewhere must not use the journal).
fn stderr_is_journal() -> bool {
    let Ok(expected) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    // SAFETY: fstat on fd 2 with a zeroed, correctly sized stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    expected == format!("{}:{}", st.st_dev, st.st_ino)
}

/// stderr, one formatted event per write (the fmt layer writes each event whole), with the
/// control characters inside it escaped: only the event's final newline ends a line.
struct EscapingStderr {
    /// Keep ESC (the terminal's colours); off whenever stderr is not a terminal.
    colours: bool,
}

impl Write for EscapingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let escaped = escape_event(buf, self.colours);
        std::io::stderr().lock().write_all(&escaped)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `event` with every control character but a final newline (and tab, and ESC when
/// `colours`) written as `\xNN`.
fn escape_event(event: &[u8], colours: bool) -> Vec<u8> {
    let (body, end) = match event.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (event, &b""[..]),
    };
    let mut out = Vec::with_capacity(event.len() + 8);
    for &b in body {
        let keep = b == b'\t' || (colours && b == 0x1b);
        if (b < 0x20 || b == 0x7f) && !keep {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(end);
    out
}

/// Sends GStreamer's log into ours (call after `gst::init`). Unless `GST_DEBUG` asks for
/// more, only warnings and errors are produced at all.
pub fn route_gstreamer() {
    if std::env::var_os("GST_DEBUG").is_none() {
        gst::log::set_default_threshold(gst::DebugLevel::Warning);
    }
    gst::log::remove_default_log_function();
    let limiter = Mutex::new(RateLimit::default());
    gst::log::add_log_function(
        move |category, level, _file, function, _line, object, message| {
            let category = category.name();
            let suppressed = match lock(&limiter).admit(category, function.as_str(), Instant::now())
            {
                Admit::No => return,
                Admit::Yes { suppressed } => suppressed,
            };
            let mut text = message.get().map(|m| m.to_string()).unwrap_or_default();
            if suppressed > 0 {
                text.push_str(&format!(" ({suppressed} like it suppressed)"));
            }
            let object = object.map(|o| o.to_string()).unwrap_or_default();
            match level {
                gst::DebugLevel::Error => {
                    tracing::error!(target: "gstreamer", category, %object, %function, "{text}")
                }
                gst::DebugLevel::Warning => {
                    tracing::warn!(target: "gstreamer", category, %object, %function, "{text}")
                }
                gst::DebugLevel::Fixme | gst::DebugLevel::Info => {
                    tracing::info!(target: "gstreamer", category, %object, "{text}")
                }
                gst::DebugLevel::Debug => {
                    tracing::debug!(target: "gstreamer", category, %object, "{text}")
                }
                _ => tracing::trace!(target: "gstreamer", category, %object, "{text}"),
            }
        },
    );
}

/// Some GStreamer warnings repeat for every packet (rtpsession's "can't determine running
/// time" while a call starts, thousands a minute). Each (category, function) gets
/// `BURST` messages per `WINDOW`; the next one after the window says how many were dropped.
const BURST: u32 = 3;
const WINDOW: Duration = Duration::from_secs(60);
/// Bounds the table if GStreamer logs from very many places.
const MAX_KEYS: usize = 512;

#[derive(Default)]
struct RateLimit {
    seen: HashMap<(String, String), Window>,
}

struct Window {
    start: Instant,
    count: u32,
    suppressed: u32,
}

#[derive(Debug, PartialEq)]
enum Admit {
    Yes { suppressed: u32 },
    No,
}

impl RateLimit {
    fn admit(&mut self, category: &str, function: &str, now: Instant) -> Admit {
        if self.seen.len() >= MAX_KEYS {
            self.seen
                .retain(|_, w| now.duration_since(w.start) < WINDOW);
        }
        let window = self
            .seen
            .entry((category.to_string(), function.to_string()))
            .or_insert(Window {
                start: now,
                count: 0,
                suppressed: 0,
            });
        if now.duration_since(window.start) >= WINDOW {
            let suppressed = window.suppressed;
            *window = Window {
                start: now,
                count: 1,
                suppressed: 0,
            };
            return Admit::Yes { suppressed };
        }
        if window.count < BURST {
            window.count += 1;
            Admit::Yes { suppressed: 0 }
        } else {
            window.suppressed += 1;
            Admit::No
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_messages_are_limited_and_counted() {
        let mut limit = RateLimit::default();
        let t0 = Instant::now();
        for _ in 0..BURST {
            assert_eq!(
                limit.admit("rtpsession", "f", t0),
                Admit::Yes { suppressed: 0 }
            );
        }
        assert_eq!(limit.admit("rtpsession", "f", t0), Admit::No);
        assert_eq!(limit.admit("rtpsession", "f", t0), Admit::No);
        // Another place is not limited by this one.
        assert_eq!(limit.admit("vpxenc", "f", t0), Admit::Yes { suppressed: 0 });
        assert_eq!(
            limit.admit("rtpsession", "f", t0 + WINDOW),
            Admit::Yes { suppressed: 2 }
        );
    }

    #[test]
    fn an_entry_stays_one_line() {
        let forged = b"hangup reason=x\n<3>webrtcd: forged error\r\n";
        let out = escape_event(forged, false);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(out.ends_with(b"\n"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "hangup reason=x\\x0a<3>webrtcd: forged error\\x0d\n"
        );
        assert_eq!(
            escape_event(b"\x1b[1mred\x1b[0m\n", false),
            b"\\x1b[1mred\\x1b[0m\n"
        );
        assert_eq!(
            escape_event(b"\x1b[1mred\x1b[0m\n", true),
            b"\x1b[1mred\x1b[0m\n"
        );
    }
}
