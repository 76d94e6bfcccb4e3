//! A call's task under supervision: a bug that panics it ends that call alone, with
//! `internal-error` told to its peer.

use futures::FutureExt;
use tokio::sync::mpsc;

use super::call::CallEnd;
use super::{CallInfo, CallState};
use crate::protocol::{EndReason, Signal};

/// Runs a session to its end. A session that panics ends with `internal-error`, and its peer
/// is told so; its pipeline is torn down as the task unwinds (`OwnedPipeline`).
pub(super) async fn supervised(
    run: impl std::future::Future<Output = CallEnd>,
    info: &CallInfo,
    signaling: &mpsc::Sender<Signal>,
) -> CallEnd {
    match std::panic::AssertUnwindSafe(run).catch_unwind().await {
        Ok(end) => end,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(session = %info.session, "the call's task failed: {what}");
            let end = CallEnd::local(EndReason::InternalError, "");
            if signaling.try_send(end.hangup(info)).is_err() {
                tracing::debug!("signaling queue full; internal-error not sent");
            }
            info.set_state(CallState::Ended);
            end
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Role;

    #[tokio::test]
    async fn a_session_that_panics_ends_with_internal_error_and_the_peer_is_told() {
        let info = CallInfo::new("s1", "alice", Role::Callee, "test");
        let (tx, mut rx) = mpsc::channel(4);
        let end = supervised(
            async {
                if info.session == "s1" {
                    panic!("a bug");
                }
                CallEnd::local(EndReason::Hangup, "")
            },
            &info,
            &tx,
        )
        .await;
        assert_eq!(end.reason, EndReason::InternalError);
        match rx.try_recv() {
            Ok(Signal::Hangup { reason, route, .. }) => {
                assert_eq!(reason, "internal-error");
                assert_eq!(route.to, "alice");
                assert_eq!(route.session, "s1");
            }
            other => panic!("expected a hangup, got {other:?}"),
        }
        assert_eq!(info.state(), CallState::Ended);
    }
}
