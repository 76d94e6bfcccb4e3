//! All calls of this daemon: starts session tasks, routes signaling messages to them, and
//! answers the questions the HTTP API asks. Holds its lock only to read or change the maps;
//! it never calls webrtcbin (that is the session task's job).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

mod decide;

pub use decide::DecideError;

use super::call;
use super::events::{Event, PeerInput};
use super::notify::Notifier;
use super::{CallInfo, CallSettings, CallSnapshot, Role};
use crate::media::cameras::{Camera, Cameras};
use crate::media::profile::AnswerPolicy;
use crate::protocol::{EndReason, ErrorCode, FromRelay, PeerId, Route, Signal};
use crate::sync::lock;

/// The peer name of every WHEP session (its player is known by its session's URL only). It
/// holds a space, which no relay id may: no peer on the relay can pose as a WHEP player.
pub const WHEP_PEER: &str = "whep player";
/// The peer name of every WHIP publication (an endpoint known by its URL).
pub const WHIP_PEER: &str = "whip endpoint";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlaceCallError {
    #[error("not registered with a relay yet")]
    NotRegistered,
    #[error("no peer '{0}' is registered")]
    UnknownPeer(String),
    #[error("this device is busy ({0} calls)")]
    Busy(usize),
    #[error("no camera '{0}'")]
    NoSuchCamera(String),
}

struct SessionHandle {
    events: mpsc::UnboundedSender<Event>,
    /// What the peer sends; bounded (a flooding peer loses messages, not our memory).
    peer: mpsc::Sender<PeerInput>,
    /// What local programs send the peer (the bridge); bounded likewise.
    local: mpsc::Sender<String>,
    info: Arc<CallInfo>,
    /// The camera it watches, as it was when the call started (a reload may replace it).
    camera: Arc<Camera>,
}

#[derive(Default)]
struct State {
    /// Keyed by (peer, session): a session id is only unique per caller.
    sessions: HashMap<(String, String), SessionHandle>,
    peers: BTreeSet<String>,
    id: Option<String>,
}

pub struct CallManager {
    /// Every call's settings but its camera's (`CallSettings::for_camera`).
    settings: Arc<CallSettings>,
    cameras: Arc<Cameras>,
    signaling: mpsc::Sender<Signal>,
    state: Mutex<State>,
    next_session: AtomicU64,
    pub ended: AtomicU64,
    /// Every session task; shutdown waits on it.
    tasks: TaskTracker,
    /// Calls' lifecycle events and DataChannel messages, for hooks, `/api/events` and the
    /// bridge.
    notifier: Arc<Notifier>,
    /// Ringing calls decided lately (a rejected call is gone at once): a second decision
    /// that finds the call gone is told it was decided, not that there is no such call.
    decided: Mutex<std::collections::VecDeque<(String, std::time::Instant)>>,
}

impl CallManager {
    /// `signaling` carries this daemon's messages to the relay.
    pub fn new(
        settings: CallSettings,
        cameras: Arc<Cameras>,
        signaling: mpsc::Sender<Signal>,
    ) -> Arc<CallManager> {
        Arc::new(CallManager {
            settings: Arc::new(settings),
            cameras,
            signaling,
            state: Mutex::default(),
            next_session: AtomicU64::new(1),
            ended: AtomicU64::new(0),
            tasks: TaskTracker::new(),
            notifier: Arc::default(),
            decided: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Calls' lifecycle events and their peers' DataChannel messages.
    pub fn notifier(&self) -> &Arc<Notifier> {
        &self.notifier
    }

    /// Sends `text` on the DataChannel of the call `session` (none: of every call); how many
    /// calls took it (a call whose queue is full drops it).
    pub fn send_to_channels(&self, session: Option<&str>, text: &str) -> usize {
        let state = self.lock();
        state
            .sessions
            .values()
            .filter(|h| session.is_none_or(|s| h.info.session == s))
            .filter(|h| h.local.try_send(text.to_string()).is_ok())
            .count()
    }

    pub fn id(&self) -> Option<String> {
        self.lock().id.clone()
    }

    pub fn peers(&self) -> Vec<String> {
        self.lock().peers.iter().cloned().collect()
    }

    pub fn calls(&self) -> Vec<CallSnapshot> {
        let mut calls: Vec<CallSnapshot> = self
            .lock()
            .sessions
            .values()
            .map(|h| h.info.snapshot())
            .collect();
        calls.sort_by(|a, b| a.session.cmp(&b.session));
        calls
    }

    /// Sessions whose task has not gone round its loop for `after`, described.
    pub fn stuck_sessions(&self, after: std::time::Duration) -> Vec<String> {
        self.lock()
            .sessions
            .values()
            .filter(|h| h.info.since_heartbeat() > after)
            .map(|h| {
                format!(
                    "the task of call {} has not run for {} s",
                    h.info.session,
                    h.info.since_heartbeat().as_secs()
                )
            })
            .collect()
    }

    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    /// The daemon's cameras.
    pub fn cameras(&self) -> &Arc<Cameras> {
        &self.cameras
    }

    /// Calls on `camera` now.
    pub fn viewers(&self, camera: &str) -> usize {
        let state = self.lock();
        state
            .sessions
            .values()
            .filter(|h| h.info.camera == camera)
            .count()
    }

    /// Calls fed by `camera`'s encoders (not by a camera of the same name that replaced it).
    pub fn on_camera(&self, camera: &Camera) -> usize {
        let state = self.lock();
        let on = state.sessions.values();
        on.filter(|h| Arc::ptr_eq(&h.camera.encoders, &camera.encoders))
            .count()
    }

    /// Ends every call fed by `camera`'s encoders with `reason` (its peer told); how many.
    pub fn end_camera(&self, camera: &Camera, reason: EndReason) -> usize {
        let state = self.lock();
        let on = state.sessions.values();
        let on = on.filter(|h| Arc::ptr_eq(&h.camera.encoders, &camera.encoders));
        on.filter(|h| {
            h.events
                .send(Event::End {
                    reason,
                    tell_peer: true,
                })
                .is_ok()
        })
        .count()
    }

    /// The camera named `name` (none: the first). Taken under the calls' lock; the cameras'
    /// own lock is never held while the calls' is taken.
    fn camera(&self, name: Option<&str>) -> Result<Arc<Camera>, PlaceCallError> {
        self.cameras
            .get(name)
            .ok_or_else(|| PlaceCallError::NoSuchCamera(name.unwrap_or_default().to_string()))
    }

    /// Places a call to `to`, sending `camera` (none: the first); returns the new session
    /// id.
    pub fn place_call(
        self: &Arc<Self>,
        to: &str,
        camera: Option<&str>,
    ) -> Result<String, PlaceCallError> {
        // Under the calls' lock: a reload that replaces the camera ends the calls on the old
        // one after the swap, so a call is either found by it or on the new camera.
        let mut state = self.lock();
        let camera = self.camera(camera)?;
        let Some(me) = state.id.clone() else {
            return Err(PlaceCallError::NotRegistered);
        };
        if !state.peers.contains(to) {
            return Err(PlaceCallError::UnknownPeer(to.to_string()));
        }
        let max = camera.profile.max_sessions;
        if state.sessions.len() >= max {
            return Err(PlaceCallError::Busy(max));
        }
        let n = self.next_session.fetch_add(1, Ordering::Relaxed);
        // Unguessable: a callee refuses a `call` whose id another caller's live call holds
        // (`session-taken`), so an id someone could predict could be taken first.
        let mut salt = [0u8; 6];
        let salt = match getrandom::fill(&mut salt) {
            Ok(()) => salt.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            Err(_) => format!("{:x}", std::process::id()),
        };
        let session = format!("{me}-{n}-{salt}");
        let signaling = self.signaling.clone();
        let call = (to, session.as_str(), Role::Caller);
        self.start(&mut state, call, &camera, signaling, false);
        Ok(session)
    }

    /// Starts a WHEP session answering `offer` under the id `session` (the caller makes it
    /// unguessable: it is the session's URL). Everything the call would send its peer (the
    /// answer, candidates, the hangup) goes to `to_player` instead of the relay; messages
    /// from the player come in through [`CallManager::from_whep_player`].
    pub fn start_whep(
        self: &Arc<Self>,
        session: &str,
        offer: String,
        camera: Option<&str>,
        to_player: mpsc::Sender<Signal>,
    ) -> Result<(), PlaceCallError> {
        // Under the calls' lock: a reload that replaces the camera ends the calls on the old
        // one after the swap, so a call is either found by it or on the new camera.
        let mut state = self.lock();
        let camera = self.camera(camera)?;
        let max = camera.profile.max_sessions;
        if state.sessions.len() >= max || self.tasks.is_closed() {
            return Err(PlaceCallError::Busy(max));
        }
        let me = state.id.clone().unwrap_or_default();
        let call = (WHEP_PEER, session, Role::Whep);
        self.start(&mut state, call, &camera, to_player, false);
        drop(state);
        self.from_http_peer(
            WHEP_PEER,
            Signal::Offer {
                route: Route::new(&me, session),
                sdp: offer,
            },
        );
        Ok(())
    }

    /// Starts publishing to a WHIP endpoint as session `session`: the call offers (to
    /// `to_endpoint`: its publisher posts the offer), and takes the endpoint's answer through
    /// [`CallManager::from_http_peer`] with [`WHIP_PEER`]. Not counted against
    /// `max_sessions`: it is the device's own output, not a viewer. It sends the first
    /// camera.
    pub fn start_publish(
        self: &Arc<Self>,
        session: &str,
        to_endpoint: mpsc::Sender<Signal>,
    ) -> Result<(), PlaceCallError> {
        let mut state = self.lock();
        let camera = self.camera(None)?;
        if self.tasks.is_closed() {
            return Err(PlaceCallError::Busy(0));
        }
        let call = (WHIP_PEER, session, Role::Whip);
        self.start(&mut state, call, &camera, to_endpoint, false);
        Ok(())
    }

    /// Hands a message from a peer over HTTP (a WHEP player's offer or candidates, a WHIP
    /// endpoint's answer) to its session.
    pub fn from_http_peer(&self, peer: &str, mut msg: Signal) {
        msg.route_mut().from = Some(PeerId::local(peer));
        self.route_to_session(msg);
    }

    /// Ends the call with this session id (any peer). False when there is no such call.
    pub fn hangup(&self, session: &str) -> bool {
        let state = self.lock();
        let found = state.sessions.values().find(|h| h.info.session == session);
        match found {
            Some(handle) => {
                let _ = handle.events.send(Event::End {
                    reason: EndReason::Hangup,
                    tell_peer: true,
                });
                true
            }
            None => false,
        }
    }

    /// Ends every call and waits (at most `grace`) for their tasks to finish; no call can
    /// start after this. False when some were still running at the end of `grace`.
    pub async fn shut_down(&self, reason: EndReason, grace: Duration) -> bool {
        self.tasks.close();
        for handle in self.lock().sessions.values() {
            let _ = handle.events.send(Event::End {
                reason,
                tell_peer: true,
            });
        }
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }

    /// The relay connection was lost: nobody is known to be online any more. Running calls
    /// keep their media (it does not pass through the relay).
    pub fn on_signaling_down(&self) {
        let mut state = self.lock();
        state.id = None;
        state.peers.clear();
    }

    /// Handles one message from the relay.
    pub fn on_signaling(self: &Arc<Self>, msg: FromRelay) {
        match msg {
            FromRelay::Registered { id, peers } => {
                tracing::info!(id = %id, peers = peers.len(), "registered with the relay");
                let mut state = self.lock();
                state.peers = peers
                    .into_iter()
                    .filter(|p| *p != id)
                    .map(String::from)
                    .collect();
                state.id = Some(id.into());
            }
            FromRelay::PeerJoined { id } => {
                let mut state = self.lock();
                if state.id.as_deref() != Some(id.as_str()) {
                    state.peers.insert(id.into());
                }
            }
            FromRelay::PeerLeft { id, reason } => {
                tracing::debug!(peer = %id, "peer left");
                // Its relay died, not the peer: a connected call's media does not pass
                // through relays and goes on (the path watch ends it if the peer is gone).
                let relay_gone = reason.as_deref() == Some(crate::protocol::RELAY_GONE);
                let mut state = self.lock();
                state.peers.remove(id.as_str());
                for ((peer, _), handle) in state.sessions.iter() {
                    if id == peer.as_str()
                        && !(relay_gone && handle.info.state() == super::CallState::Connected)
                    {
                        let _ = handle.events.send(Event::End {
                            reason: EndReason::PeerLeft,
                            tell_peer: false,
                        });
                    }
                }
            }
            FromRelay::Error {
                code,
                message,
                session,
            } => {
                tracing::warn!(?code, session = ?session, "relay error: {}", crate::protocol::escape_for_log(&message));
                if let (ErrorCode::UnknownPeer, Some(session)) = (code, session) {
                    self.end_session(&session, EndReason::UnknownPeer);
                }
            }
            FromRelay::Signal(Signal::Call {
                route,
                early,
                camera,
            }) => {
                let Some(from) = route.from.map(String::from) else {
                    return;
                };
                let session = String::from(route.session);
                let mut state = self.lock();
                let key = (from.clone(), session.clone());
                if state.sessions.contains_key(&key) {
                    return;
                }
                // Looked up under the calls' lock (see `place_call`).
                let Ok(camera) = self.camera(camera.as_deref()) else {
                    drop(state);
                    tracing::info!(peer = %from, "a call for a camera this device does not have refused");
                    self.refuse_call(&from, &session, EndReason::NoSuchCamera);
                    return;
                };
                // Session ids are the callers' choice, and the API names calls by them: a
                // caller reusing another's live session id would shadow that call (accept,
                // reject and hang-up could reach the wrong one). Refused.
                if state.sessions.keys().any(|(_, live)| *live == session) {
                    drop(state);
                    tracing::info!(peer = %from, "a call reusing a live session id refused");
                    self.refuse_call(&from, &session, EndReason::SessionTaken);
                    return;
                }
                // One peer's calls still waiting for their offer (its media setup, a browser's
                // permission prompt, may take a while) can hold every session but one: a flood
                // of `call`s that never offer leaves room for someone else.
                let waiting = state
                    .sessions
                    .iter()
                    .filter(|((peer, _), h)| {
                        use super::CallState::{AwaitingOffer, Ringing, Starting};
                        *peer == from
                            && matches!(h.info.state(), Starting | Ringing | AwaitingOffer)
                    })
                    .count();
                // The daemon's keys, as the profile now says (every camera's view has them).
                let profile = &camera.profile;
                if state.sessions.len() >= profile.max_sessions
                    || waiting >= profile.max_sessions.saturating_sub(1).max(1)
                    || self.tasks.is_closed()
                {
                    drop(state);
                    tracing::debug!(peer = %from, "busy: refusing a call");
                    self.refuse_call(&from, &session, EndReason::Busy);
                    return;
                }
                if profile.answer == AnswerPolicy::Reject {
                    drop(state);
                    tracing::info!(peer = %from, "a call refused (answer = \"reject\")");
                    self.refuse_call(&from, &session, EndReason::Rejected);
                    return;
                }
                let signaling = self.signaling.clone();
                // `early`: the caller takes an early answer while this side rings.
                let call = (from.as_str(), session.as_str(), Role::Callee);
                self.start(&mut state, call, &camera, signaling, early);
            }
            FromRelay::Signal(routed) => self.route_to_session(routed),
        }
    }

    /// Answers a `call` that starts no session with `hangup` `reason` (a full signaling
    /// queue loses it: the caller times out instead).
    fn refuse_call(&self, to: &str, session: &str, reason: EndReason) {
        if self
            .signaling
            .try_send(Signal::hangup(to, session, reason))
            .is_err()
        {
            tracing::debug!(%reason, "signaling queue full; a refusal was not sent");
        }
    }

    fn route_to_session(&self, msg: Signal) {
        let route = msg.route();
        let Some(from) = route.from.clone() else {
            return;
        };
        let key = (String::from(from), route.session.to_string());
        let state = self.lock();
        match state.sessions.get(&key) {
            Some(handle) => {
                if handle.peer.try_send(PeerInput::Signaling(msg)).is_err() {
                    tracing::debug!(session = %key.1, "the peer sends faster than the call reads; dropped");
                }
            }
            // Ended, or never started: a late hangup or candidate is normal. Ignore quietly.
            None => tracing::debug!(session = %key.1, "message for an unknown session ignored"),
        }
    }

    fn end_session(&self, session: &str, reason: EndReason) {
        let state = self.lock();
        if let Some(handle) = state.sessions.values().find(|h| h.info.session == session) {
            let _ = handle.events.send(Event::End {
                reason,
                tell_peer: false,
            });
        }
    }

    /// Registers a session and spawns its task. Called with the lock held; the task itself
    /// runs elsewhere, and removes its entry when it ends — however it ends.
    /// `call` is the peer, the session and this side's role; `signaling` carries what the
    /// call sends its peer.
    fn start(
        self: &Arc<Self>,
        state: &mut State,
        (peer, session, role): (&str, &str, Role),
        camera: &Arc<Camera>,
        signaling: mpsc::Sender<Signal>,
        early_answer: bool,
    ) {
        let info = Arc::new(CallInfo::new(session, peer, role, &camera.name));
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (peer_tx, peer_rx) = mpsc::channel(call::PEER_QUEUE);
        let (local_tx, local_rx) = mpsc::channel(call::LOCAL_QUEUE);
        let key = (peer.to_string(), session.to_string());
        state.sessions.insert(
            key.clone(),
            SessionHandle {
                events: events_tx.clone(),
                peer: peer_tx.clone(),
                local: local_tx,
                info: Arc::clone(&info),
                camera: Arc::clone(camera),
            },
        );
        tracing::info!(session, peer, ?role, camera = %camera.name, "call starting");
        let active = crate::metrics::get()
            .sessions_active
            .get_or_create(&crate::metrics::RoleLabel {
                role: role.as_str(),
                camera: camera.name.to_string(),
            })
            .clone();
        active.inc();
        let manager = Arc::clone(self);
        let settings = Arc::new(self.settings.for_camera(camera));
        let run = call::run(
            Arc::clone(&info),
            Arc::clone(&self.notifier),
            settings,
            signaling.clone(),
            call::Inputs {
                events_tx,
                events: events_rx,
                peer: peer_rx,
                peer_tx,
                local: local_rx,
                early_answer,
            },
        );
        let notifier = Arc::clone(&self.notifier);
        self.tasks.spawn(async move {
            let end = super::supervise::supervised(run, &info, &signaling).await;
            notifier.event("ended", &info, Some(end.reason.as_str()));
            tracing::debug!(session = %key.1, reason = %end.reason, "session task done");
            manager.lock().sessions.remove(&key);
            manager.ended.fetch_add(1, Ordering::Relaxed);
            active.dec();
            crate::metrics::get()
                .sessions_ended
                .get_or_create(&crate::metrics::EndLabels {
                    role: role.as_str(),
                    reason: end.reason.as_str(),
                    camera: info.camera.clone(),
                })
                .inc();
        });
    }
}
