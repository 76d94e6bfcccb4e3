//! Accepting and rejecting a ringing call: the first decision is the only one, and a second
//! that finds the call gone is told it was decided.

use std::time::{Duration, Instant};

use super::{CallManager, SessionHandle};
use crate::protocol::EndReason;
use crate::session::Role;
use crate::session::events::Event;
use crate::sync::lock;

/// Why a ringing call could not be accepted or rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecideError {
    #[error("no such call")]
    NotFound,
    #[error("the call is not ringing")]
    NotRinging,
    /// Another accept or reject came first.
    #[error("the call was accepted or rejected already")]
    Decided,
}

/// How many recent decisions are remembered, and for how long.
const DECIDED_KEPT: usize = 64;
const DECIDED_FOR: Duration = Duration::from_secs(30);

impl CallManager {
    /// Accepts a ringing call: it answers now.
    pub fn accept(&self, session: &str) -> Result<(), DecideError> {
        self.decide(session, Event::Accept)
    }

    /// Rejects a ringing call: it ends with `rejected`, and the caller is told.
    pub fn reject(&self, session: &str) -> Result<(), DecideError> {
        self.decide(
            session,
            Event::End {
                reason: EndReason::Rejected,
                tell_peer: true,
            },
        )
    }

    /// Hands a decision to a ringing callee (a caller whose callee rings has nothing to
    /// decide). The call may stop ringing before it reads the event (its ring timed out):
    /// it then ignores an accept, and a reject ends it all the same.
    fn decide(&self, session: &str, decision: Event) -> Result<(), DecideError> {
        let state = self.lock();
        let named: Vec<&SessionHandle> = state
            .sessions
            .values()
            .filter(|h| h.info.session == session)
            .collect();
        let ringing: Vec<&SessionHandle> = named
            .iter()
            .copied()
            .filter(|h| {
                h.info.role == Role::Callee && h.info.state() == crate::session::CallState::Ringing
            })
            .collect();
        // A session id names one call at most: a `call` reusing a live call's id is refused.
        match (named.len(), ringing.first()) {
            (0, _) if self.decided_lately(session) => Err(DecideError::Decided),
            (0, _) => Err(DecideError::NotFound),
            (_, Some(handle)) if handle.info.decide_once() => {
                self.remember_decision(session);
                let _ = handle.events.send(decision);
                Ok(())
            }
            (_, Some(_)) => Err(DecideError::Decided),
            (_, None) => Err(DecideError::NotRinging),
        }
    }

    fn remember_decision(&self, session: &str) {
        let mut decided = lock(&self.decided);
        if decided.len() >= DECIDED_KEPT {
            decided.pop_front();
        }
        decided.push_back((session.to_string(), Instant::now()));
    }

    fn decided_lately(&self, session: &str) -> bool {
        let decided = lock(&self.decided);
        decided
            .iter()
            .any(|(s, at)| s == session && at.elapsed() < DECIDED_FOR)
    }
}
