//! Peer registry and routing: who is online, and where each routed message goes.
//!
//! No sockets here. A connection is an [`Attachment`]: the I/O layer feeds it the text frames
//! it reads and drains the bounded channel it writes from. The daemon attaches to its own
//! embedded relay the same way, without a socket, and the unit tests drive it with channels.

use crate::metrics;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, mpsc};

use crate::protocol::{ErrorCode, Message};

/// How many messages may wait for one slow connection before the relay gives up on it.
pub const OUTBOX_CAPACITY: usize = 256;

const MAX_ID_LEN: usize = 64;

type ConnId = u64;

struct Peer {
    conn: ConnId,
    outbox: mpsc::Sender<Message>,
    /// Woken when the relay drops this peer (its queue overflowed); the I/O loop then closes.
    kicked: Arc<Notify>,
}

#[derive(Default)]
struct Peers {
    by_id: HashMap<String, Peer>,
    next_auto_id: u64,
}

/// Counters the relay keeps about its own work.
#[derive(Default, Debug)]
pub struct RelayStats {
    pub routed: AtomicU64,
    pub rejected: AtomicU64,
}

/// The shared relay. Cheap to clone through `Arc`.
#[derive(Default)]
pub struct Relay {
    peers: Mutex<Peers>,
    next_conn: AtomicU64,
    pub stats: RelayStats,
}

/// One connection's view of the relay: its identity and its way to send.
pub struct Attachment {
    relay: Arc<Relay>,
    conn: ConnId,
    id: Option<String>,
    outbox: mpsc::Sender<Message>,
    kicked: Arc<Notify>,
}

impl Relay {
    pub fn new() -> Arc<Relay> {
        Arc::new(Relay::default())
    }

    /// Attaches a new connection. Messages for it arrive on the returned receiver.
    pub fn attach(self: &Arc<Self>) -> (Attachment, mpsc::Receiver<Message>) {
        let (outbox, inbox) = mpsc::channel(OUTBOX_CAPACITY);
        let attachment = Attachment {
            relay: Arc::clone(self),
            conn: self.next_conn.fetch_add(1, Ordering::Relaxed),
            id: None,
            outbox,
            kicked: Arc::new(Notify::new()),
        };
        (attachment, inbox)
    }

    /// How many peers are registered (takes the registry lock: the health check uses it to
    /// see that routing is not wedged).
    pub fn peer_count(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Ids currently registered, sorted.
    #[cfg(test)]
    fn peer_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().by_id.keys().cloned().collect();
        ids.sort();
        ids
    }

    fn lock(&self) -> MutexGuard<'_, Peers> {
        // A panic while holding this lock would be a bug in this file; the data stays usable.
        self.peers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `msg` for `peer`. A full queue means the peer stopped reading: it is dropped
    /// from the registry (and told so through `kicked`) rather than stalling everyone else.
    fn deliver(peers: &mut Peers, to: &str, msg: Message) -> Vec<String> {
        let Some(peer) = peers.by_id.get(to) else {
            return Vec::new();
        };
        match peer.outbox.try_send(msg) {
            Ok(()) => Vec::new(),
            Err(mpsc::error::TrySendError::Closed(_)) => vec![to.to_string()],
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(peer = to, "outgoing queue full; dropping the peer");
                peer.kicked.notify_one();
                vec![to.to_string()]
            }
        }
    }

    /// Sends `msg` to every registered peer except `except`, dropping the ones that cannot
    /// take it, and announcing those departures in turn.
    fn broadcast(peers: &mut Peers, except: &str, msg: Message) {
        let mut gone: Vec<String> = Vec::new();
        let targets: Vec<String> = peers
            .by_id
            .keys()
            .filter(|id| id.as_str() != except)
            .cloned()
            .collect();
        for id in targets {
            gone.extend(Self::deliver(peers, &id, msg.clone()));
        }
        Self::remove_dead(peers, gone);
    }

    fn remove_dead(peers: &mut Peers, mut gone: Vec<String>) {
        // Bounded: each round removes at least one peer from a finite map.
        while let Some(id) = gone.pop() {
            if peers.by_id.remove(&id).is_none() {
                continue;
            }
            metrics::get().relay_peers.dec();
            let left = Message::PeerLeft { id: id.clone() };
            let ids: Vec<String> = peers.by_id.keys().cloned().collect();
            for other in ids {
                gone.extend(Self::deliver(peers, &other, left.clone()));
            }
        }
    }
}

impl Attachment {
    /// The id this connection registered, once it has.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// Resolves when the relay has dropped this connection for not keeping up.
    pub fn kicked(&self) -> Arc<Notify> {
        Arc::clone(&self.kicked)
    }

    /// Handles one text frame read from the connection.
    pub fn handle_text(&mut self, text: &str) {
        match Message::decode(text) {
            Ok(msg) => self.handle(msg),
            Err(err) => self.reject(err.code(), err.to_string(), None),
        }
    }

    /// Handles one message from this connection's peer.
    pub fn handle(&mut self, mut msg: Message) {
        if let Message::Register { id } = msg {
            self.register(id);
            return;
        }
        let Some(route) = msg.route_mut() else {
            self.reject(ErrorCode::BadMessage, "peers may not send this type", None);
            return;
        };
        let session = Some(route.session.clone());
        let Some(me) = self.id.clone() else {
            self.reject(ErrorCode::NotRegistered, "register first", session);
            return;
        };
        // The relay, not the client, says who a message is from.
        route.from = Some(me);
        let to = route.to.clone();
        let kind = msg.kind();
        let mut peers = self.relay.lock();
        if !peers.by_id.contains_key(&to) {
            drop(peers);
            self.reject(ErrorCode::UnknownPeer, format!("no peer '{to}'"), session);
            return;
        }
        let gone = Relay::deliver(&mut peers, &to, msg);
        Relay::remove_dead(&mut peers, gone);
        drop(peers);
        self.relay.stats.routed.fetch_add(1, Ordering::Relaxed);
        metrics::get()
            .relay_routed
            .get_or_create(&metrics::TypeLabel { r#type: kind })
            .inc();
    }

    fn register(&mut self, requested: Option<String>) {
        if self.id.is_some() {
            self.reject(ErrorCode::BadMessage, "already registered", None);
            return;
        }
        let invalid = |id: &String| {
            id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(|c| c.is_control())
        };
        if requested.as_ref().is_some_and(invalid) {
            self.reject(
                ErrorCode::BadMessage,
                "an id is 1 to 64 characters, no control characters",
                None,
            );
            return;
        }
        let mut peers = self.relay.lock();
        let id = match requested {
            Some(id) if peers.by_id.contains_key(&id) => {
                drop(peers);
                self.reject(ErrorCode::IdTaken, format!("id '{id}' is in use"), None);
                return;
            }
            Some(id) => id,
            None => loop {
                // Bounded: each turn takes a fresh number; the map is finite.
                peers.next_auto_id += 1;
                let candidate = format!("peer-{}", peers.next_auto_id);
                if !peers.by_id.contains_key(&candidate) {
                    break candidate;
                }
            },
        };
        let mut others: Vec<String> = peers.by_id.keys().cloned().collect();
        others.sort();
        peers.by_id.insert(
            id.clone(),
            Peer {
                conn: self.conn,
                outbox: self.outbox.clone(),
                kicked: Arc::clone(&self.kicked),
            },
        );
        metrics::get().relay_peers.inc();
        let welcome = Message::Registered {
            id: id.clone(),
            peers: others,
        };
        let gone = Relay::deliver(&mut peers, &id, welcome);
        Relay::remove_dead(&mut peers, gone);
        Relay::broadcast(&mut peers, &id, Message::PeerJoined { id: id.clone() });
        drop(peers);
        tracing::debug!(peer = %id, "registered");
        self.id = Some(id);
    }

    fn reject(&self, code: ErrorCode, message: impl Into<String>, session: Option<String>) {
        self.relay.stats.rejected.fetch_add(1, Ordering::Relaxed);
        metrics::get()
            .relay_rejected
            .get_or_create(&metrics::ReasonLabel {
                reason: code.as_str(),
            })
            .inc();
        self.reply(Message::error(code, message, session));
    }

    /// Sends to this connection itself; a full queue here means the peer is not reading.
    fn reply(&self, msg: Message) {
        if self.outbox.try_send(msg).is_err() {
            self.kicked.notify_one();
        }
    }
}

impl Drop for Attachment {
    /// A closed connection leaves the registry, and everyone else hears `peer-left`.
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let mut peers = self.relay.lock();
        if peers.by_id.get(&id).is_some_and(|p| p.conn == self.conn) {
            Relay::remove_dead(&mut peers, vec![id.clone()]);
            tracing::debug!(peer = %id, "left");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Route;

    fn registered(relay: &Arc<Relay>, id: &str) -> (Attachment, mpsc::Receiver<Message>) {
        let (mut a, mut rx) = relay.attach();
        a.handle(Message::Register {
            id: Some(id.into()),
        });
        match rx.try_recv() {
            Ok(Message::Registered { id: got, .. }) => assert_eq!(got, id),
            other => panic!("expected registered, got {other:?}"),
        }
        (a, rx)
    }

    fn drain(rx: &mut mpsc::Receiver<Message>) -> Vec<Message> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            out.push(m);
        }
        out
    }

    fn error_code(msgs: &[Message]) -> Option<ErrorCode> {
        msgs.iter().find_map(|m| match m {
            Message::Error { code, .. } => Some(*code),
            _ => None,
        })
    }

    #[test]
    fn registered_lists_existing_peers_and_announces_newcomer() {
        let relay = Relay::new();
        let (_a, mut rx_a) = registered(&relay, "alice");
        let (mut b, mut rx_b) = relay.attach();
        b.handle(Message::Register {
            id: Some("door".into()),
        });
        assert_eq!(
            drain(&mut rx_b),
            vec![Message::Registered {
                id: "door".into(),
                peers: vec!["alice".into()]
            }]
        );
        assert_eq!(
            drain(&mut rx_a),
            vec![Message::PeerJoined { id: "door".into() }]
        );
    }

    #[test]
    fn routes_and_overwrites_from() {
        let relay = Relay::new();
        let (mut a, _rx_a) = registered(&relay, "alice");
        let (_b, mut rx_b) = registered(&relay, "door");
        a.handle_text(r#"{"type":"call","to":"door","from":"mallory","session":"s1"}"#);
        let got = drain(&mut rx_b);
        assert_eq!(
            got,
            vec![Message::Call {
                route: Route {
                    to: "door".into(),
                    from: Some("alice".into()),
                    session: "s1".into()
                }
            }]
        );
        assert_eq!(relay.stats.routed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn unknown_peer_error_carries_session() {
        let relay = Relay::new();
        let (mut a, mut rx_a) = registered(&relay, "alice");
        a.handle_text(r#"{"type":"hangup","to":"ghost","session":"s9"}"#);
        match drain(&mut rx_a).as_slice() {
            [Message::Error { code, session, .. }] => {
                assert_eq!(*code, ErrorCode::UnknownPeer);
                assert_eq!(session.as_deref(), Some("s9"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn id_taken_and_auto_id() {
        let relay = Relay::new();
        let (_a, _rx) = registered(&relay, "alice");
        let (mut b, mut rx_b) = relay.attach();
        b.handle_text(r#"{"type":"register","id":"alice"}"#);
        assert_eq!(error_code(&drain(&mut rx_b)), Some(ErrorCode::IdTaken));
        assert_eq!(b.id(), None);
        // The same connection may try again, without an id this time.
        b.handle_text(r#"{"type":"register"}"#);
        match drain(&mut rx_b).as_slice() {
            [Message::Registered { id, peers }] => {
                assert!(id.starts_with("peer-"));
                assert_eq!(peers, &vec!["alice".to_string()]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bad_json_unknown_type_and_too_large_keep_connection_usable() {
        let relay = Relay::new();
        let (mut a, mut rx_a) = registered(&relay, "alice");
        let (_b, mut rx_b) = registered(&relay, "door");
        drain(&mut rx_a);
        a.handle_text("{not json");
        assert_eq!(error_code(&drain(&mut rx_a)), Some(ErrorCode::BadMessage));
        a.handle_text(r#"{"type":"teleport","to":"door","session":"s"}"#);
        assert_eq!(error_code(&drain(&mut rx_a)), Some(ErrorCode::BadMessage));
        let big = format!(
            r#"{{"type":"offer","to":"door","session":"s","sdp":"{}"}}"#,
            "x".repeat(70 * 1024)
        );
        a.handle_text(&big);
        assert_eq!(error_code(&drain(&mut rx_a)), Some(ErrorCode::TooLarge));
        assert!(drain(&mut rx_b).is_empty());
        // Still routes afterwards.
        a.handle_text(r#"{"type":"call","to":"door","session":"s"}"#);
        assert_eq!(drain(&mut rx_b).len(), 1);
        assert_eq!(relay.stats.rejected.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn must_register_before_routing_and_cannot_send_relay_messages() {
        let relay = Relay::new();
        let (mut a, mut rx_a) = relay.attach();
        a.handle_text(r#"{"type":"call","to":"door","session":"s"}"#);
        assert_eq!(
            error_code(&drain(&mut rx_a)),
            Some(ErrorCode::NotRegistered)
        );
        a.handle_text(r#"{"type":"peer-left","id":"x"}"#);
        assert_eq!(error_code(&drain(&mut rx_a)), Some(ErrorCode::BadMessage));
    }

    #[test]
    fn closing_a_connection_announces_peer_left() {
        let relay = Relay::new();
        let (_a, mut rx_a) = registered(&relay, "alice");
        let (b, _rx_b) = registered(&relay, "door");
        drain(&mut rx_a);
        drop(b);
        assert_eq!(
            drain(&mut rx_a),
            vec![Message::PeerLeft { id: "door".into() }]
        );
        assert_eq!(relay.peer_ids(), vec!["alice".to_string()]);
    }

    #[test]
    fn a_peer_that_stops_reading_is_dropped_not_waited_for() {
        let relay = Relay::new();
        let (mut a, mut rx_a) = registered(&relay, "alice");
        let (slow, _rx_slow_never_read) = registered(&relay, "slow");
        let kicked = slow.kicked();
        for i in 0..(OUTBOX_CAPACITY + 1) {
            a.handle_text(&format!(
                r#"{{"type":"call","to":"slow","session":"s{i}"}}"#
            ));
        }
        assert!(!relay.peer_ids().contains(&"slow".to_string()));
        assert!(
            drain(&mut rx_a).contains(&Message::PeerLeft { id: "slow".into() }),
            "others learn that the slow peer left"
        );
        // The slow connection's I/O loop is woken to close it.
        // (notify_one stores a permit, so the wait completes at once.)
        use futures::FutureExt;
        assert!(kicked.notified().now_or_never().is_some());
    }
}
