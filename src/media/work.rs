//! Where blocking GStreamer work runs: state changes, teardowns and pushes that can wait on
//! streaming threads or devices never run on a tokio worker (nor in a signal handler). The
//! work and the timers that lead to it (a stream's linger, a source's restart) are tracked,
//! so that shutdown waits for them to finish instead of polling and sleeping.

use std::sync::LazyLock;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

struct Work {
    tracker: TaskTracker,
    /// Cancelled at shutdown: pending timers then do nothing (everything stops anyway).
    shutdown: CancellationToken,
}

static WORK: LazyLock<Work> = LazyLock::new(|| Work {
    tracker: TaskTracker::new(),
    shutdown: CancellationToken::new(),
});

/// Runs `f` on tokio's blocking pool, tracked; outside a tokio runtime (a GLib thread, a
/// unit test), on the calling thread.
pub fn off_worker(f: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(WORK.tracker.spawn_blocking_on(f, &runtime)),
        Err(_) => f(),
    }
}

/// Runs `f` on tokio's blocking pool, tracked, and gives its result (an error only if `f`
/// panicked). For a task that must wait for blocking work: a state change it goes on after.
pub async fn run<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    WORK.tracker.spawn_blocking(f).await
}

/// Runs `f` off the workers (as [`off_worker`]) once `delay` has passed, unless the daemon
/// shuts down first. `runtime`: where the timer runs when the caller is not on one (the RTSP
/// server's GLib thread lets go of a stream); with none at all (unit tests), a short-lived
/// thread of its own sleeps, never the caller.
pub fn after(
    delay: Duration,
    runtime: Option<&tokio::runtime::Handle>,
    f: impl FnOnce() + Send + 'static,
) {
    let runtime = tokio::runtime::Handle::try_current()
        .ok()
        .or_else(|| runtime.cloned());
    match runtime {
        Some(runtime) => {
            let shutdown = WORK.shutdown.clone();
            let tracker = WORK.tracker.clone();
            let rt = runtime.clone();
            drop(WORK.tracker.spawn_on(
                async move {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(delay) => {
                            let _ = tracker.spawn_blocking_on(f, &rt).await;
                        }
                    }
                },
                &runtime,
            ));
        }
        None => {
            // Taken by whichever runs it: the thread, or this caller if there is no thread.
            let f = std::sync::Arc::new(std::sync::Mutex::new(Some(f)));
            let run = {
                let f = std::sync::Arc::clone(&f);
                move || {
                    std::thread::sleep(delay);
                    if let Some(f) = crate::sync::lock(&f).take() {
                        f();
                    }
                }
            };
            if std::thread::Builder::new()
                .name("after".into())
                .spawn(run)
                .is_err()
                && let Some(f) = crate::sync::lock(&f).take()
            {
                f();
            }
        }
    }
}

/// Shutdown: timers not yet due are dropped, and this waits (at most `within`) for the work
/// under way to finish. True if it all did.
pub async fn settle(within: Duration) -> bool {
    WORK.shutdown.cancel();
    WORK.tracker.close();
    tokio::time::timeout(within, WORK.tracker.wait())
        .await
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn outside_a_runtime_work_runs_on_the_calling_thread() {
        let me = std::thread::current().id();
        let ran_on = Arc::new(std::sync::Mutex::new(None));
        let seen = Arc::clone(&ran_on);
        off_worker(move || *crate::sync::lock(&seen) = Some(std::thread::current().id()));
        assert_eq!(*crate::sync::lock(&ran_on), Some(me));
    }

    #[test]
    fn delayed_work_without_a_runtime_runs_on_a_thread_of_its_own() {
        let done = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&done);
        after(Duration::from_millis(10), None, move || {
            count.fetch_add(1, Ordering::SeqCst);
        });
        // Not on this thread: it returned before the delay.
        assert_eq!(done.load(Ordering::SeqCst), 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while done.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }
}
