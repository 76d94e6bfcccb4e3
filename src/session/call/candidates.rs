//! ICE candidates: the peer's, held until there is a description to add them to (bounded),
//! and ours, remembered to be sent again after an ICE restart.

use gst::prelude::*;

use super::{Call, Step};
use crate::protocol::{Route, Signal};
use crate::session::sdp;

/// Remote candidates held until the remote description is set; a peer sending more before
/// it has offered or answered is not a real one. Also the most of ours remembered.
const MAX_HELD_CANDIDATES: usize = 64;

/// A candidate as signaling carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Candidate {
    pub candidate: String,
    pub sdp_mid: Option<String>,
    pub sdp_mline_index: Option<u32>,
}

/// The candidates of a call, both ways.
#[derive(Default)]
pub(super) struct Candidates {
    held: Vec<Candidate>,
    /// Candidates dropped past [`MAX_HELD_CANDIDATES`] (logged once).
    dropped: usize,
    /// The local candidates sent to the peer: after an ICE restart the peer has forgotten
    /// them, and libnice does not gather again (the same sockets serve the new checks).
    sent: Vec<Candidate>,
    sent_end_of_candidates: bool,
}

/// What becomes of a remote candidate.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Arrival {
    /// Its end-of-candidates, or an RTCP candidate (every stream is rtcp-muxed): no use.
    Useless,
    /// Kept until a description is set.
    Held,
    /// Past the bound: dropped (`first`: the first one dropped, worth a log line).
    Dropped { first: bool },
    /// To be added now.
    Add(Candidate),
}

impl Candidates {
    /// `can_add`: a remote description is set and no ICE restart waits for its answer.
    pub fn arrive(&mut self, candidate: Candidate, can_add: bool) -> Arrival {
        if candidate.candidate.trim().is_empty()
            || sdp::candidate_component(&candidate.candidate).is_some_and(|c| c != 1)
        {
            return Arrival::Useless;
        }
        if can_add {
            return Arrival::Add(candidate);
        }
        if self.held.len() >= MAX_HELD_CANDIDATES {
            self.dropped += 1;
            return Arrival::Dropped {
                first: self.dropped == 1,
            };
        }
        self.held.push(candidate);
        Arrival::Held
    }

    pub fn take_held(&mut self) -> Vec<Candidate> {
        std::mem::take(&mut self.held)
    }

    /// Remembers one of ours as sent (an empty one is the end of candidates).
    pub fn sent(&mut self, candidate: &Candidate) {
        if !candidate.candidate.is_empty() && self.sent.len() < MAX_HELD_CANDIDATES {
            self.sent.push(candidate.clone());
        }
    }

    /// The first end-of-candidates only (true once).
    pub fn end_of_candidates_due(&mut self) -> bool {
        !std::mem::replace(&mut self.sent_end_of_candidates, true)
    }

    pub fn all_sent(&self) -> &[Candidate] {
        &self.sent
    }
}

impl Call {
    pub(super) fn on_remote_candidate(&mut self, candidate: Candidate) {
        // During an ICE restart the peer's new candidates wait for its answer too.
        let can_add = self.talk.remote.is_some() && !self.ice.awaiting_restart_answer;
        match self.candidates.arrive(candidate, can_add) {
            Arrival::Useless => {
                tracing::trace!(session = %self.info.session, "a candidate of no use");
            }
            Arrival::Held | Arrival::Dropped { first: false } => {}
            Arrival::Dropped { first: true } => tracing::info!(
                session = %self.info.session,
                "more than {MAX_HELD_CANDIDATES} candidates before a description; dropping the rest"
            ),
            Arrival::Add(candidate) => self.add_candidate(&candidate),
        }
    }

    pub(super) fn apply_held_candidates(&mut self) {
        for candidate in self.candidates.take_held() {
            self.add_candidate(&candidate);
        }
    }

    fn add_candidate(&self, candidate: &Candidate) {
        let Some(remote) = &self.talk.remote else {
            return;
        };
        // Under max-bundle everything travels on the bundle's transport, whichever m-line
        // the peer (browsers send one copy per m-line) attached the candidate to.
        let mline = sdp::bundle_transport_mline(remote)
            .or_else(|| {
                candidate
                    .sdp_mid
                    .as_deref()
                    .and_then(|mid| sdp::mline_of_mid(remote, mid))
            })
            .or(candidate.sdp_mline_index)
            .unwrap_or(0);
        // An m-line the remote description does not have would make webrtcbin log errors.
        if mline as usize >= remote.medias_len() as usize {
            return;
        }
        let line = candidate
            .candidate
            .strip_prefix("a=")
            .unwrap_or(&candidate.candidate);
        self.webrtcbin
            .emit_by_name::<()>("add-ice-candidate", &[&mline, &line]);
    }

    /// One of our candidates (gathered on m-line `mline`) to the peer.
    pub(super) async fn send_local_candidate(&mut self, mline: u32, candidate: String) -> Step {
        tracing::debug!(session = %self.info.session, mline, %candidate, "local candidate");
        let sdp_mid = self.talk.local_mids.get(mline as usize).cloned().flatten();
        self.send_candidate(Candidate {
            candidate,
            sdp_mid,
            sdp_mline_index: Some(mline),
        })
        .await
    }

    async fn send_candidate(&mut self, candidate: Candidate) -> Step {
        self.candidates.sent(&candidate);
        self.signal(self.candidate_message(candidate)).await
    }

    fn candidate_message(&self, candidate: Candidate) -> Signal {
        Signal::Candidate {
            route: Route::new(&self.info.peer, &self.info.session),
            candidate: candidate.candidate,
            sdp_mid: candidate.sdp_mid,
            sdp_mline_index: candidate.sdp_mline_index,
        }
    }

    fn end_of_candidates(&self) -> Candidate {
        Candidate {
            candidate: String::new(),
            sdp_mid: self.talk.local_mids.first().cloned().flatten(),
            sdp_mline_index: Some(0),
        }
    }

    pub(super) async fn send_end_of_candidates(&mut self) -> Step {
        if !self.candidates.end_of_candidates_due() {
            return Ok(());
        }
        let end = self.end_of_candidates();
        self.send_candidate(end).await
    }

    /// After an ICE restart: the peer forgot our candidates; libnice keeps them (and their
    /// sockets), but will not announce them again.
    pub(super) async fn send_candidates_again(&mut self) -> Step {
        let mut again: Vec<Candidate> = self.candidates.all_sent().to_vec();
        again.push(self.end_of_candidates());
        for candidate in again {
            self.signal(self.candidate_message(candidate)).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(n: u32, component: u32) -> Candidate {
        Candidate {
            candidate: format!(
                "candidate:{n} {component} UDP 2122252543 127.0.0.1 {} typ host",
                40000 + n
            ),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
        }
    }

    #[test]
    fn candidates_before_a_description_are_held_up_to_the_bound() {
        let mut candidates = Candidates::default();
        for n in 0..MAX_HELD_CANDIDATES as u32 {
            assert_eq!(candidates.arrive(host(n, 1), false), Arrival::Held);
        }
        assert_eq!(
            candidates.arrive(host(100, 1), false),
            Arrival::Dropped { first: true }
        );
        assert_eq!(
            candidates.arrive(host(101, 1), false),
            Arrival::Dropped { first: false }
        );
        assert_eq!(candidates.take_held().len(), MAX_HELD_CANDIDATES);
        assert!(candidates.take_held().is_empty());
    }

    #[test]
    fn rtcp_and_end_of_candidates_are_of_no_use_and_others_are_added_once_possible() {
        let mut candidates = Candidates::default();
        assert_eq!(candidates.arrive(host(1, 2), true), Arrival::Useless);
        let end = Candidate {
            candidate: " ".into(),
            sdp_mid: None,
            sdp_mline_index: None,
        };
        assert_eq!(candidates.arrive(end, false), Arrival::Useless);
        assert_eq!(
            candidates.arrive(host(1, 1), true),
            Arrival::Add(host(1, 1))
        );
    }

    #[test]
    fn ours_are_remembered_bounded_and_the_end_is_sent_once() {
        let mut candidates = Candidates::default();
        for n in 0..100 {
            candidates.sent(&host(n, 1));
        }
        candidates.sent(&Candidate {
            candidate: String::new(),
            sdp_mid: None,
            sdp_mline_index: Some(0),
        });
        assert_eq!(candidates.all_sent().len(), MAX_HELD_CANDIDATES);
        assert!(candidates.end_of_candidates_due());
        assert!(!candidates.end_of_candidates_due());
    }
}
