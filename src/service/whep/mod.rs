//! WHEP (RFC 9725's model, as WHEP players implement it): a player POSTs an SDP offer to
//! `/whep` and gets the answer, with the daemon's candidates in it, and the session's URL;
//! PATCHes candidates (or an ICE restart) to that URL, and DELETEs it to leave. A WHEP
//! session is an ordinary call of the [`CallManager`] (role `whep`): it shares the encoder,
//! counts against `max_sessions` and shows in `GET /api/calls`. Only how the call's messages
//! travel differs: over HTTP, through a [`Link`], instead of the relay.

pub mod frag;
pub mod http;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::protocol::{Route, Signal};
use crate::session::ice::Credentials;
use crate::session::manager::WHEP_PEER;
use crate::session::{CallManager, PlaceCallError};
use crate::sync::lock;

/// How long a POST waits for the call to answer (media start included).
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// How long a PATCH restarting ICE waits for the call's new answer: a call ignores a restart
/// too soon after the last one, and the player should hear so (503) and retry, not hang.
const RESTART_ANSWER_WITHIN: Duration = Duration::from_secs(3);
/// How long an answer waits for the daemon's candidates to be gathered into it.
const GATHER_WITHIN: Duration = Duration::from_secs(2);
/// What a call may have sent before the link reads it (answer, candidates, hangup).
const LINK_QUEUE: usize = 64;
/// At most this many candidates are kept per answer.
const MAX_CANDIDATES: usize = 32;

/// What the call has said to its player, as the link last saw it.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Answers so far (1 after the first; each ICE restart adds one).
    pub answers: u32,
    pub answer: Option<String>,
    /// The latest answer's candidates: (m-line index, `candidate:…`).
    pub candidates: Vec<(u32, String)>,
    pub gathered: bool,
    /// Why the call ended, once it has.
    pub ended: Option<String>,
}

/// One WHEP session: what its call said (a watch the link updates) and the offer its
/// answer belongs to (an ICE restart sends it again with new credentials).
struct Link {
    view: watch::Receiver<View>,
    offer: Mutex<String>,
    /// The player's address (none: not known, a test driving the router).
    from: Option<IpAddr>,
}

/// Every live WHEP session, by id.
pub struct Sessions {
    calls: Arc<CallManager>,
    links: Mutex<HashMap<String, Arc<Link>>>,
    /// Sessions at once from one address: one player cannot hold every `max_sessions` slot.
    max_per_address: usize,
    tasks: tokio_util::task::TaskTracker,
}

#[derive(Debug, thiserror::Error)]
pub enum WhepError {
    #[error("{0}")]
    Busy(String),
    #[error("the offer was refused: {0}")]
    Refused(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("no such session")]
    NotFound,
    #[error("no camera '{0}'")]
    NoSuchCamera(String),
}

impl Sessions {
    /// `tasks`: where each session's task (following its call) is tracked, for shutdown.
    pub fn new(
        calls: Arc<CallManager>,
        max_per_address: usize,
        tasks: tokio_util::task::TaskTracker,
    ) -> Arc<Sessions> {
        Arc::new(Sessions {
            calls,
            links: Mutex::default(),
            max_per_address: max_per_address.max(1),
            tasks,
        })
    }

    fn links(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Link>>> {
        lock(&self.links)
    }

    fn link(&self, session: &str) -> Result<Arc<Link>, WhepError> {
        self.links()
            .get(session)
            .cloned()
            .ok_or(WhepError::NotFound)
    }

    /// Starts a session answering `offer` from a player at `from`, watching `camera` (none:
    /// the first); returns its id and the answer (candidates in it).
    pub async fn open(
        self: &Arc<Self>,
        offer: String,
        from: Option<IpAddr>,
        camera: Option<&str>,
    ) -> Result<(String, String), WhepError> {
        let session = new_session_id().ok_or_else(|| WhepError::Busy("no randomness".into()))?;
        let (to_player, from_call) = mpsc::channel(LINK_QUEUE);
        let (view_tx, view) = watch::channel(View::default());
        let link = Arc::new(Link {
            view,
            offer: Mutex::new(offer.clone()),
            from,
        });
        {
            let mut links = self.links();
            let theirs = links
                .values()
                .filter(|l| from.is_some() && l.from == from)
                .count();
            if theirs >= self.max_per_address {
                return Err(WhepError::Busy(format!(
                    "{theirs} WHEP sessions from this address already (whep_max_per_address)"
                )));
            }
            links.insert(session.clone(), Arc::clone(&link));
        }
        if let Err(err) = self.calls.start_whep(&session, offer, camera, to_player) {
            self.links().remove(&session);
            return Err(match err {
                PlaceCallError::Busy(_) => WhepError::Busy(err.to_string()),
                PlaceCallError::NoSuchCamera(name) => WhepError::NoSuchCamera(name),
                other => WhepError::Refused(other.to_string()),
            });
        }
        // Until the player has its answer, the call is this request's: a failed or abandoned
        // POST (the player went away) ends it rather than leaving it to its ICE timeout.
        let pending = HangupOnDrop {
            calls: Arc::clone(&self.calls),
            session: Some(session.clone()),
        };
        // The link lives as long as the call's side of the channel: it ends with the call.
        let sessions = Arc::clone(self);
        let id = session.clone();
        self.tasks.spawn(async move {
            follow(from_call, view_tx).await;
            sessions.links().remove(&id);
        });
        let answer = wait_answer(&link, 0, ANSWER_WITHIN).await?;
        pending.keep();
        Ok((session, answer))
    }

    /// Hands a player's candidates to its call, or restarts ICE when the fragment has new
    /// credentials: then returns the daemon's answering fragment.
    pub async fn patch(&self, session: &str, fragment: &str) -> Result<Option<String>, WhepError> {
        let link = self.link(session)?;
        let offer = lock(&link.offer).clone();
        let mids = frag::mids(&offer);
        let parsed = frag::parse(fragment, &mids);
        let me = self.calls.id().unwrap_or_default();
        let restart = parsed
            .credentials
            .as_ref()
            .filter(|new| credentials_of(&offer).as_ref() != Some(*new));
        let mut answered = None;
        if let Some(new) = restart {
            let Some(restarted) = with_credentials(&offer, new) else {
                return Err(WhepError::Refused(
                    "the session's offer is unreadable".into(),
                ));
            };
            let before = link.view.borrow().answers;
            self.calls.from_http_peer(
                WHEP_PEER,
                Signal::Offer {
                    route: Route::new(&me, session),
                    sdp: restarted.clone(),
                },
            );
            answered = Some((before, restarted));
        }
        tracing::debug!(
            session,
            candidates = parsed.candidates.len(),
            restart = answered.is_some(),
            "WHEP patch"
        );
        for (mline, candidate) in parsed.candidates {
            self.calls.from_http_peer(
                WHEP_PEER,
                Signal::Candidate {
                    route: Route::new(&me, session),
                    candidate,
                    sdp_mid: mids.get(mline as usize).cloned().filter(|m| !m.is_empty()),
                    sdp_mline_index: Some(mline),
                },
            );
        }
        let Some((before, restarted)) = answered else {
            return Ok(None);
        };
        // The new credentials become the session's only once the call took them: a restart it
        // ignored (too soon after the last) is retried by the player with the same ones.
        wait_answer(&link, before, RESTART_ANSWER_WITHIN)
            .await
            .map_err(|err| match err {
                WhepError::Timeout(_) => {
                    WhepError::Busy("the ICE restart was not taken; try again".into())
                }
                other => other,
            })?;
        *lock(&link.offer) = restarted;
        let view = link.view.borrow().clone();
        let answer = view.answer.unwrap_or_default();
        let credentials = credentials_of(&answer)
            .ok_or_else(|| WhepError::Refused("the restart answer has no credentials".into()))?;
        let mid = frag::mids(&answer).into_iter().next().unwrap_or_default();
        Ok(Some(frag::fragment(
            &credentials,
            &mid,
            &view.candidates,
            view.gathered,
        )))
    }

    /// Ends a session. False when there is none.
    pub fn close(&self, session: &str) -> bool {
        tracing::debug!(session, "WHEP delete");
        self.link(session).is_ok() && self.calls.hangup(session)
    }

    /// How many answers the session has given (its ETag changes with each).
    pub fn answers(&self, session: &str) -> Option<u32> {
        self.link(session).ok().map(|l| l.view.borrow().answers)
    }
}

/// Reads what the call sends its player, until the call ends.
async fn follow(mut from_call: mpsc::Receiver<Signal>, view: watch::Sender<View>) {
    while let Some(msg) = from_call.recv().await {
        view.send_modify(|v| match msg {
            Signal::Answer { sdp, .. } => {
                v.answers += 1;
                v.answer = Some(sdp);
                v.candidates.clear();
                v.gathered = false;
            }
            Signal::Candidate { candidate, .. } if candidate.is_empty() => v.gathered = true,
            Signal::Candidate {
                candidate,
                sdp_mline_index,
                ..
            } if v.candidates.len() < MAX_CANDIDATES => {
                v.candidates.push((sdp_mline_index.unwrap_or(0), candidate));
            }
            Signal::Hangup {
                reason, message, ..
            } => {
                v.ended = Some(match message {
                    Some(detail) if !detail.is_empty() => format!("{reason}: {detail}"),
                    _ => reason,
                });
            }
            _ => {}
        });
    }
    view.send_modify(|v| {
        v.ended.get_or_insert_with(|| "ended".to_string());
    });
}

/// Waits for answer number `after + 1`, then (briefly) for its candidates; returns it with
/// the candidates gathered into it.
async fn wait_answer(link: &Link, after: u32, within: Duration) -> Result<String, WhepError> {
    let mut view = link.view.clone();
    let answered = tokio::time::timeout(
        within,
        view.wait_for(|v| v.answers > after || v.ended.is_some()),
    )
    .await
    .map_err(|_| WhepError::Timeout(within))?
    .map_err(|_| WhepError::Refused("the call ended".into()))?
    .clone();
    if answered.answers <= after {
        return Err(WhepError::Refused(answered.ended.unwrap_or_default()));
    }
    let _ = tokio::time::timeout(
        GATHER_WITHIN,
        view.wait_for(|v| v.gathered || v.ended.is_some() || v.answers > after + 1),
    )
    .await;
    let latest = view.borrow().clone();
    let answer = latest.answer.unwrap_or_default();
    frag::with_candidates(&answer, &latest.candidates, latest.gathered)
        .ok_or_else(|| WhepError::Refused("the answer does not parse".into()))
}

/// Hangs a call up when dropped, unless kept.
struct HangupOnDrop {
    calls: Arc<CallManager>,
    session: Option<String>,
}

impl HangupOnDrop {
    fn keep(mut self) {
        self.session = None;
    }
}

impl Drop for HangupOnDrop {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            tracing::debug!(%session, "WHEP offer not answered to its player: hanging up");
            self.calls.hangup(&session);
        }
    }
}

/// The ICE credentials of a description.
pub fn credentials_of(sdp: &str) -> Option<Credentials> {
    let message = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes()).ok()?;
    crate::session::sdp::ice_credentials(&message)
}

fn with_credentials(sdp: &str, credentials: &Credentials) -> Option<String> {
    let mut message = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes()).ok()?;
    crate::session::sdp::set_ice_credentials(&mut message, credentials);
    Some(message.to_string())
}

/// 128 random bits, hex: with the token, the session's URL is what lets a player change or
/// end its session.
fn new_session_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
