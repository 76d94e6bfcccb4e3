//! Is this daemon alive? `/healthz` asks, and so does the systemd watchdog before each ping.
//!
//! "Alive" means each part answers within a bound: the relay's registry lock, the call
//! manager and every session task (each goes round its loop at least once a second), the
//! GStreamer core (an element can be made), and every shared encoder viewers wait on has
//! produced a frame recently. A part that hangs (a deadlock, a wedged streaming thread) makes
//! the check fail, so systemd restarts the daemon instead of leaving it silently hung.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::media::cameras::Cameras;
use crate::relay::Relay;
use crate::session::CallManager;

/// How long one part may take to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// A session task that has not gone round its loop for this long is stuck. (It may wait up
/// to 10 s on one webrtcbin promise, so this is longer.)
const SESSION_STUCK_AFTER: Duration = Duration::from_secs(15);
/// A shared encoder with viewers and no frame for this long is wedged.
const ENCODER_STALLED_AFTER: Duration = Duration::from_secs(5);

pub struct Health {
    relay: Arc<Relay>,
    calls: Arc<CallManager>,
    cameras: Arc<Cameras>,
    relay_probe: Probe,
    calls_probe: Probe,
    gst_probe: Probe,
    encoders_probe: Probe,
}

impl Health {
    pub fn new(relay: Arc<Relay>, calls: Arc<CallManager>, cameras: Arc<Cameras>) -> Health {
        Health {
            relay,
            calls,
            cameras,
            relay_probe: Probe::default(),
            calls_probe: Probe::default(),
            gst_probe: Probe::default(),
            encoders_probe: Probe::default(),
        }
    }

    /// `Err` names everything that is wrong (every part is asked, whatever the others say: a
    /// GStreamer probe still out from a busy moment must not hide the wedged encoder that is
    /// the real fault). With `signaling`, not being registered with the
    /// relay counts too (for `/healthz`; the watchdog leaves that out, since restarting
    /// cannot bring back a remote relay).
    pub async fn check(&self, signaling: bool) -> Result<(), String> {
        let relay = Arc::clone(&self.relay);
        let calls = Arc::clone(&self.calls);
        let cameras = Arc::clone(&self.cameras);
        // Together: a check that fails takes one bound (2 s), not one per part.
        let (relay, calls, gst, encoders) = tokio::join!(
            self.relay_probe
                .run("the relay", move || relay.peer_count()),
            self.calls_probe.run("the call manager", move || {
                (
                    calls.stuck_sessions(SESSION_STUCK_AFTER),
                    calls.id().is_some(),
                )
            }),
            self.gst_probe.run("GStreamer", || {
                gst::ElementFactory::make("fakesink").build().is_ok()
            }),
            self.encoders_probe.run("the shared encoders", move || {
                cameras.stalled(ENCODER_STALLED_AFTER)
            }),
        );
        let mut faults: Vec<String> = Vec::new();
        if let Err(fault) = relay {
            faults.push(fault);
        }
        match calls {
            Ok((stuck, registered)) => {
                faults.extend(stuck.into_iter().take(1));
                if signaling && !registered {
                    faults.push("not registered with the signaling relay".into());
                }
            }
            Err(fault) => faults.push(fault),
        }
        match gst {
            Ok(true) => {}
            Ok(false) => faults.push("GStreamer cannot make elements".into()),
            Err(fault) => faults.push(fault),
        }
        match encoders {
            Ok(stalled) => faults.extend(stalled),
            Err(fault) => faults.push(fault),
        }
        if faults.is_empty() {
            Ok(())
        } else {
            Err(faults.join("; "))
        }
    }
}

/// Runs a check on a blocking thread with a time bound. A check that never returns (a
/// deadlock) is not started again: the next check fails at once instead of piling up threads.
#[derive(Default)]
struct Probe {
    in_flight: Arc<AtomicBool>,
}

impl Probe {
    async fn run<T: Send + 'static>(
        &self,
        what: &str,
        check: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        if self.in_flight.swap(true, Ordering::AcqRel) {
            return Err(format!("{what} has not answered an earlier check"));
        }
        let in_flight = Arc::clone(&self.in_flight);
        // Not tracked, on purpose: a check wedged in GStreamer (what it is there to find)
        // must not hold shutdown. At most one per part is out at a time (`in_flight`).
        let task = tokio::task::spawn_blocking(move || {
            let out = check();
            in_flight.store(false, Ordering::Release);
            out
        });
        match tokio::time::timeout(ANSWER_WITHIN, task).await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(_)) => Err(format!("{what} failed its check")),
            Err(_) => Err(format!(
                "{what} did not answer within {} s",
                ANSWER_WITHIN.as_secs()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_probe_that_hangs_fails_and_is_not_run_twice() {
        let probe = Probe::default();
        assert_eq!(probe.run("quick", || 7).await, Ok(7));
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let err = probe
            .run("stuck", move || wait.recv().is_ok())
            .await
            .unwrap_err();
        assert!(err.contains("did not answer"), "{err}");
        let again = probe.run("stuck", || true).await.unwrap_err();
        assert!(again.contains("earlier check"), "{again}");
        release.send(()).unwrap();
    }
}
