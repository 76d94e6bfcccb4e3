//! Logs: `tracing` to stderr. Under systemd (stderr is the journal stream) each line is plain
//! text prefixed with its syslog priority (`<3>` error … `<7>` debug), which journald turns
//! into the entry's priority; elsewhere, the usual timestamped format. GStreamer's own
//! warnings and errors are routed into the same log, with their category.
//!
//! SDP, candidates and addresses are logged at debug level only.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if stderr_is_journal() {
        builder.with_ansi(false).event_format(Journald).init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

/// Whether stderr is the journal stream systemd gave us (`$JOURNAL_STREAM` is `dev:inode`
/// of it; a child whose stderr was redirected elsewhere must not use the journal format).
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

/// `<priority>target: message fields`, one line per event.
struct Journald;

impl<S, N> FormatEvent<S, N> for Journald
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        write!(writer, "<{}>{}: ", priority(meta.level()), meta.target())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// syslog priorities, as sd-daemon(3) defines the prefixes.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
    fn priorities_follow_syslog() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
    }
}
