//! Why a call ends: the reason on the wire, the text for the peer and the log, and the error
//! behind it (kept with its sources until the line that logs it).

use std::error::Error;

use super::super::CallInfo;
use crate::protocol::{EndReason, Signal};

/// An error kept with its chain of causes.
pub type Cause = Box<dyn Error + Send + Sync + 'static>;

/// Why a call ends, what went wrong (for logs and the peer), and whether the peer still
/// needs telling.
#[derive(Debug)]
pub struct CallEnd {
    pub reason: EndReason,
    pub detail: String,
    pub tell_peer: bool,
    /// The error `detail` was made from, if any: its sources go to the log, not the peer.
    pub cause: Option<Cause>,
}

impl CallEnd {
    pub fn local(reason: EndReason, detail: impl Into<String>) -> CallEnd {
        CallEnd {
            reason,
            detail: detail.into(),
            tell_peer: true,
            cause: None,
        }
    }

    /// Ended by `reason` with nothing more to say (`tell_peer`: whether the peer must hear it).
    pub fn plain(reason: EndReason, tell_peer: bool) -> CallEnd {
        CallEnd {
            tell_peer,
            ..CallEnd::local(reason, "")
        }
    }

    /// `reason`, for `err`: its message for the peer, the whole chain for the log.
    pub fn from_error(reason: EndReason, err: impl Into<Cause>) -> CallEnd {
        let cause = err.into();
        CallEnd {
            cause: Some(cause),
            ..CallEnd::local(reason, String::new())
        }
        .with_detail_from_cause()
    }

    pub(super) fn media(detail: impl Into<String>) -> CallEnd {
        CallEnd::local(EndReason::MediaError, detail)
    }

    pub(super) fn media_error(err: impl Into<Cause>) -> CallEnd {
        CallEnd::from_error(EndReason::MediaError, err)
    }

    pub(super) fn bad_sdp(detail: impl Into<String>) -> CallEnd {
        CallEnd::local(EndReason::BadSdp, detail)
    }

    fn with_detail_from_cause(mut self) -> CallEnd {
        if let Some(cause) = &self.cause {
            self.detail = cause.to_string();
        }
        self
    }

    /// `detail`, then each source of the error behind it: what the log says.
    pub fn chain(&self) -> String {
        let mut out = self.detail.clone();
        let mut source = self.cause.as_deref().and_then(|c| c.source());
        while let Some(err) = source {
            // An error that quotes its source already says it once.
            let text = err.to_string();
            if !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            source = err.source();
        }
        out
    }

    /// The `hangup` that tells the peer.
    pub fn hangup(&self, info: &CallInfo) -> Signal {
        let mut msg = Signal::hangup(&info.peer, &info.session, self.reason);
        if let Signal::Hangup { message, .. } = &mut msg
            && !self.detail.is_empty()
        {
            *message = Some(self.detail.clone());
        }
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("the camera would not start")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_peer_gets_the_message_and_the_log_gets_its_causes() {
        let err = Outer(std::io::Error::other("/dev/video0 is busy"));
        let end = CallEnd::media_error(err);
        assert_eq!(end.reason, EndReason::MediaError);
        assert_eq!(end.detail, "the camera would not start");
        assert_eq!(
            end.chain(),
            "the camera would not start: /dev/video0 is busy"
        );
        assert!(end.tell_peer);
    }

    #[test]
    fn an_end_without_an_error_logs_its_detail() {
        let end = CallEnd::local(EndReason::Timeout, "too slow");
        assert_eq!(end.chain(), "too slow");
        let quiet = CallEnd::plain(EndReason::Hangup, false);
        assert!(quiet.detail.is_empty() && !quiet.tell_peer);
    }
}
