//! Peer registry and routing: who is online, and where each routed message goes.
//!
//! No sockets here. A connection is an [`Attachment`]: the I/O layer feeds it the text frames
//! it reads and drains the bounded channel it writes from. The daemon attaches to its own
//! embedded relay the same way, without a socket, and the unit tests drive it with channels.
//!
//! Backpressure falls on the sender: a message for a peer whose queue is full is refused to
//! its sender (`rate-limited`), and a sender faster than its rate limit is refused, then
//! dropped if it keeps going. A peer is only dropped for what it does itself: not reading
//! what the relay itself sends it (its own replies, `peer-joined`/`peer-left`).

use crate::metrics;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{Notify, mpsc};

use crate::protocol::{ErrorCode, Message};

/// How many messages may wait for one slow connection.
pub const OUTBOX_CAPACITY: usize = 256;

/// Room kept in every peer's queue for what the relay itself tells it (`peer-left`, errors):
/// messages routed from other peers may fill only the rest. A sender's burst (up to
/// [`RateLimit::burst`], more than a queue) is refused once it reaches this line, so the
/// notice that the flooder was dropped still fits and a recipient that reads is never
/// dropped for what another peer sent.
pub const NOTICE_RESERVE: usize = 64;

pub type ConnId = u64;

/// What a connection may do on the relay, from the token it came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Message any peer, see every peer (the daemon itself, admin tokens, no tokens at all).
    Full,
    /// Message only full members (call the device, answer its calls), and see only them:
    /// viewers neither see nor reach one another.
    ViewOnly,
}

/// How fast one connection may send: `per_second` on average, `burst` at once. A sender
/// refused more than `burst` times in a row is dropped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// The default fits a daemon peer setting up ten calls at once (each an answer, a dozen
/// candidates, a hangup: at 50/s such a peer lost answers and its calls failed ICE in the
/// soak) and still stops a flood within a fraction of a second.
impl Default for RateLimit {
    fn default() -> RateLimit {
        RateLimit {
            per_second: 200.0,
            burst: 400,
        }
    }
}

/// A token bucket, refilled continuously.
struct Bucket {
    limit: RateLimit,
    tokens: f64,
    refilled: Instant,
    /// Messages refused since the last one let through.
    refused_in_a_row: u32,
}

enum Admit {
    Yes,
    Refuse,
    Drop,
}

impl Bucket {
    fn new(limit: RateLimit) -> Bucket {
        Bucket {
            limit,
            tokens: f64::from(limit.burst),
            refilled: Instant::now(),
            refused_in_a_row: 0,
        }
    }

    fn admit(&mut self, now: Instant) -> Admit {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens =
            (self.tokens + elapsed * self.limit.per_second).min(f64::from(self.limit.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            return Admit::Yes;
        }
        self.refused_in_a_row += 1;
        if self.refused_in_a_row > self.limit.burst {
            Admit::Drop
        } else {
            Admit::Refuse
        }
    }
}

struct Peer {
    conn: ConnId,
    access: Access,
    outbox: mpsc::Sender<Message>,
    /// Woken when the relay drops this peer (it stopped reading, or flooded); the I/O loop
    /// then closes.
    kicked: Arc<Notify>,
    /// The daemon's own registration on its embedded relay: never dropped for what others
    /// send, and never made to wait behind a rate limit.
    owner: bool,
}

#[derive(Default)]
struct Peers {
    by_id: HashMap<String, Peer>,
    next_auto_id: u64,
    /// Assigned ids start with this (`peer`; in a cluster, `peer-NODE`: unique across it).
    auto_prefix: Option<String>,
    /// In a cluster: the peers registered on the other relays, and the way to them.
    remote: HashMap<String, RemotePeer>,
    cluster: Option<ClusterSender>,
}

/// A peer registered on another relay of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePeer {
    /// The relay (node) that holds it.
    pub node: String,
    pub access: Access,
}

/// What the relay asks of its cluster backend, without waiting for it.
#[derive(Debug)]
pub enum ToCluster {
    /// A peer registered here: claim its id across the cluster and announce it (a refusal
    /// comes back as [`Relay::claim_refused`]).
    Claim {
        id: String,
        access: Access,
        conn: ConnId,
    },
    /// A peer registered here left: release its id and announce it.
    Release { id: String },
    /// A message for a peer on relay `node`.
    Route { node: String, msg: Message },
}

/// The relay's side of its cluster backend: claims and releases are few (one per
/// registration) and must not be lost; routed messages are bounded, like a peer's queue.
struct ClusterSender {
    control: mpsc::UnboundedSender<ToCluster>,
    routes: mpsc::Sender<ToCluster>,
}

/// The backend's side: what the relay asks of it.
pub struct ClusterInbox {
    pub control: mpsc::UnboundedReceiver<ToCluster>,
    pub routes: mpsc::Receiver<ToCluster>,
}

/// Routed messages that may wait for the cluster backend.
const CLUSTER_ROUTES: usize = 1024;

/// Counters the relay keeps about its own work.
#[derive(Default, Debug)]
pub struct RelayStats {
    pub routed: AtomicU64,
    pub rejected: AtomicU64,
}

/// The shared relay. Cheap to clone through `Arc`.
pub struct Relay {
    peers: Mutex<Peers>,
    next_conn: AtomicU64,
    rate: RateLimit,
    pub stats: RelayStats,
}

impl Default for Relay {
    fn default() -> Relay {
        Relay::with_rate(RateLimit::default())
    }
}

/// One connection's view of the relay: its identity and its way to send.
pub struct Attachment {
    relay: Arc<Relay>,
    conn: ConnId,
    id: Option<String>,
    outbox: mpsc::Sender<Message>,
    kicked: Arc<Notify>,
    /// None for the daemon's own attachment.
    bucket: Option<Bucket>,
    access: Access,
}

/// What became of a message handed to a peer's queue.
enum Delivery {
    Queued,
    /// The queue is full: the peer is not keeping up.
    Full,
    /// The peer's connection is gone.
    Closed,
}

impl Relay {
    pub fn new() -> Arc<Relay> {
        Arc::new(Relay::default())
    }

    /// A relay whose clients may each send `rate`.
    pub fn with_rate(rate: RateLimit) -> Relay {
        Relay {
            peers: Mutex::default(),
            next_conn: AtomicU64::new(0),
            rate,
            stats: RelayStats::default(),
        }
    }

    /// Attaches a new connection. Messages for it arrive on the returned receiver.
    pub fn attach(self: &Arc<Self>, access: Access) -> (Attachment, mpsc::Receiver<Message>) {
        self.attach_with(Some(Bucket::new(self.rate)), access)
    }

    /// Attaches the daemon that embeds this relay: no rate limit, and never dropped for what
    /// other peers send.
    pub fn attach_owner(self: &Arc<Self>) -> (Attachment, mpsc::Receiver<Message>) {
        self.attach_with(None, Access::Full)
    }

    fn attach_with(
        self: &Arc<Self>,
        bucket: Option<Bucket>,
        access: Access,
    ) -> (Attachment, mpsc::Receiver<Message>) {
        let (outbox, inbox) = mpsc::channel(OUTBOX_CAPACITY);
        let attachment = Attachment {
            relay: Arc::clone(self),
            conn: self.next_conn.fetch_add(1, Ordering::Relaxed),
            id: None,
            outbox,
            kicked: Arc::new(Notify::new()),
            bucket,
            access,
        };
        (attachment, inbox)
    }

    /// Whether connection `conn` holds the registration `id` (the daemon's health check asks
    /// this of its own registration).
    pub fn holds(&self, id: &str, conn: u64) -> bool {
        self.lock().by_id.get(id).is_some_and(|p| p.conn == conn)
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
        crate::sync::lock(&self.peers)
    }

    fn deliver(peers: &Peers, to: &str, msg: Message) -> Delivery {
        let Some(peer) = peers.by_id.get(to) else {
            return Delivery::Closed;
        };
        Self::enqueue(peer, msg)
    }

    fn enqueue(peer: &Peer, msg: Message) -> Delivery {
        match peer.outbox.try_send(msg) {
            Ok(()) => Delivery::Queued,
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Closed,
            Err(mpsc::error::TrySendError::Full(_)) => Delivery::Full,
        }
    }

    /// Queues a message another peer sent, within what [`NOTICE_RESERVE`] leaves.
    fn deliver_from_peer(peers: &Peers, to: &str, msg: Message) -> Delivery {
        let Some(peer) = peers.by_id.get(to) else {
            return Delivery::Closed;
        };
        if peer.outbox.capacity() <= NOTICE_RESERVE {
            return Delivery::Full;
        }
        Self::enqueue(peer, msg)
    }

    /// Queues a message the relay itself sends (`registered`, `peer-joined`, `peer-left`).
    /// A peer that cannot take it has stopped reading: it is dropped (and told so through
    /// `kicked`), except the daemon's own registration, which only misses the notice.
    fn notify(peers: &Peers, to: &str, msg: Message) -> Vec<String> {
        match Self::deliver(peers, to, msg) {
            Delivery::Queued => Vec::new(),
            Delivery::Closed => vec![to.to_string()],
            Delivery::Full => match peers.by_id.get(to) {
                Some(peer) if peer.owner => {
                    tracing::warn!(peer = to, "the daemon's queue is full; a notice was lost");
                    Vec::new()
                }
                Some(peer) => {
                    tracing::info!(peer = to, "outgoing queue full; dropping the peer");
                    peer.kicked.notify_one();
                    vec![to.to_string()]
                }
                None => Vec::new(),
            },
        }
    }

    /// Sends `msg` about peer `about` (of access `access`) to every other registered peer
    /// that may see it, dropping the ones that cannot take it, and announcing those
    /// departures in turn.
    fn broadcast(peers: &mut Peers, about: &str, access: Access, msg: Message) {
        let mut gone: Vec<String> = Vec::new();
        for (id, peer) in peers.by_id.iter().filter(|(id, _)| id.as_str() != about) {
            if sees(peer.access, access) {
                gone.extend(Self::notify(peers, id, msg.clone()));
            }
        }
        Self::remove_dead(peers, gone);
    }

    fn remove_dead(peers: &mut Peers, mut gone: Vec<String>) {
        // Bounded: each round removes at least one peer from a finite map.
        while let Some(id) = gone.pop() {
            let Some(removed) = peers.by_id.remove(&id) else {
                continue;
            };
            metrics::get().relay_peers.dec();
            if let Some(cluster) = &peers.cluster {
                let _ = cluster.control.send(ToCluster::Release { id: id.clone() });
            }
            let left = Message::PeerLeft {
                id: id.clone(),
                reason: None,
            };
            for (other, peer) in &peers.by_id {
                if sees(peer.access, removed.access) {
                    gone.extend(Self::notify(peers, other, left.clone()));
                }
            }
        }
    }
}

/// The cluster backend's way in (see `super::cluster`): it learns what the relay needs from
/// the other relays and hands over what they send.
impl Relay {
    /// Makes this relay one of a cluster whose other members are `node`-named relays; the
    /// backend reads what the relay asks of it from the returned inbox. Assigned ids get
    /// the node's name so that no two relays assign the same.
    pub fn join_cluster(&self, node: &str) -> ClusterInbox {
        let (control, control_rx) = mpsc::unbounded_channel();
        let (routes, routes_rx) = mpsc::channel(CLUSTER_ROUTES);
        let mut peers = self.lock();
        peers.cluster = Some(ClusterSender { control, routes });
        peers.auto_prefix = Some(format!("peer-{node}"));
        ClusterInbox {
            control: control_rx,
            routes: routes_rx,
        }
    }

    /// The peers registered here, to claim again (after the backend lost its store).
    pub fn local_peers(&self) -> Vec<(String, Access, ConnId)> {
        self.lock()
            .by_id
            .iter()
            .map(|(id, p)| (id.clone(), p.access, p.conn))
            .collect()
    }

    /// The peers the relay believes are on other relays.
    pub fn remote_peers(&self) -> HashMap<String, RemotePeer> {
        self.lock().remote.clone()
    }

    /// A peer registered on another relay: the local peers that may see it hear
    /// `peer-joined` (once).
    pub fn remote_joined(&self, id: &str, remote: RemotePeer) {
        let mut peers = self.lock();
        if peers.by_id.contains_key(id) || peers.remote.get(id) == Some(&remote) {
            return;
        }
        let access = remote.access;
        let known = peers.remote.insert(id.to_string(), remote).is_some();
        if !known {
            // Not a local id: every local peer that may see it hears of it.
            Self::broadcast(
                &mut peers,
                id,
                access,
                Message::PeerJoined { id: id.to_string() },
            );
        }
    }

    /// A peer of another relay left, or (`relay_gone`) its relay died: the local peers
    /// that saw it hear `peer-left` (with reason `relay-gone`). With `node`, only if it was
    /// that relay's.
    pub fn remote_left(&self, id: &str, node: Option<&str>, relay_gone: bool) {
        let mut peers = self.lock();
        let Some(remote) = peers.remote.get(id) else {
            return;
        };
        if node.is_some_and(|n| n != remote.node) {
            return;
        }
        let access = remote.access;
        peers.remote.remove(id);
        let left = Message::PeerLeft {
            id: id.to_string(),
            reason: relay_gone.then(|| crate::protocol::RELAY_GONE.to_string()),
        };
        Self::broadcast(&mut peers, id, access, left);
    }

    /// Another relay holds the id a local peer registered (they registered at once): the
    /// local one is told `id-taken` and dropped.
    pub fn claim_refused(&self, id: &str, conn: ConnId) {
        let mut peers = self.lock();
        let Some(peer) = peers.by_id.get(id).filter(|p| p.conn == conn) else {
            return;
        };
        let _ = peer.outbox.try_send(Message::error(
            ErrorCode::IdTaken,
            format!("id '{id}' is in use"),
            None,
        ));
        if !peer.owner {
            peer.kicked.notify_one();
        }
        // Not ours to release: this one leaves without a word to the cluster (any peer it
        // takes with it, dropped for not reading, is released as usual).
        let Some(removed) = peers.by_id.remove(id) else {
            return;
        };
        metrics::get().relay_peers.dec();
        let left = Message::PeerLeft {
            id: id.to_string(),
            reason: None,
        };
        Self::broadcast(&mut peers, id, removed.access, left);
    }

    /// A message another relay routed to a peer of this one.
    pub fn deliver_routed(&self, msg: Message) {
        let Some(to) = msg.route().map(|r| r.to.clone()) else {
            return;
        };
        let kind = msg.kind();
        let peers = self.lock();
        match Self::deliver_from_peer(&peers, &to, msg) {
            Delivery::Queued => {
                self.stats.routed.fetch_add(1, Ordering::Relaxed);
                metrics::get()
                    .relay_routed
                    .get_or_create(&metrics::TypeLabel { r#type: kind })
                    .inc();
            }
            Delivery::Full | Delivery::Closed => {
                tracing::debug!(peer = %to, "a message from another relay could not be delivered");
            }
        }
    }
}

/// Whether a peer with access `viewer` may see and message a peer with access `seen`.
fn sees(viewer: Access, seen: Access) -> bool {
    viewer == Access::Full || seen == Access::Full
}

impl Attachment {
    /// The id this connection registered, once it has.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// This connection's number (see [`Relay::holds`]).
    pub fn conn(&self) -> u64 {
        self.conn
    }

    /// Resolves when the relay has dropped this connection (it stopped reading, or flooded).
    pub fn kicked(&self) -> Arc<Notify> {
        Arc::clone(&self.kicked)
    }

    /// Handles one text frame read from the connection.
    pub fn handle_text(&mut self, text: &str) {
        self.handle_text_at(text, Instant::now());
    }

    /// [`Attachment::handle_text`] at a given time (the rate limit's clock).
    pub fn handle_text_at(&mut self, text: &str, now: Instant) {
        if !self.admit(now) {
            return;
        }
        match Message::decode(text) {
            Ok(msg) => self.route(msg),
            Err(err) => self.reject(err.code(), err.to_string(), None),
        }
    }

    /// Tells a client that sent a binary frame that only text frames are understood.
    pub fn reject_binary(&mut self) {
        if self.admit(Instant::now()) {
            self.reject(ErrorCode::BadMessage, "text frames only", None);
        }
    }

    /// The rate limit: false when this message is refused (the sender is told, or dropped
    /// if it keeps going).
    fn admit(&mut self, now: Instant) -> bool {
        let Some(bucket) = &mut self.bucket else {
            return true;
        };
        match bucket.admit(now) {
            Admit::Yes => true,
            Admit::Refuse => {
                // One error per refused message would double what a flood costs us: tell
                // the sender once per burst.
                if bucket.refused_in_a_row == 1 {
                    self.reject(ErrorCode::RateLimited, "too many messages; slow down", None);
                } else {
                    self.count_rejected(ErrorCode::RateLimited);
                }
                false
            }
            Admit::Drop => {
                if bucket.refused_in_a_row == bucket.limit.burst + 1 {
                    tracing::info!(peer = ?self.id, "kept sending past the rate limit; dropping it");
                }
                self.count_rejected(ErrorCode::RateLimited);
                self.kicked.notify_one();
                false
            }
        }
    }

    /// Handles one message from this connection's peer (the daemon's own messages come in
    /// here directly, without a rate limit).
    pub fn handle(&mut self, msg: Message) {
        self.route(msg);
    }

    fn route(&mut self, mut msg: Message) {
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
        let peers = self.relay.lock();
        let reachable = peers
            .by_id
            .get(&to)
            .is_some_and(|peer| sees(self.access, peer.access));
        let elsewhere = peers
            .remote
            .get(&to)
            .filter(|peer| sees(self.access, peer.access))
            .map(|peer| peer.node.clone());
        // A peer this connection may not reach is, to it, no peer at all.
        let delivery = match (reachable, elsewhere, &peers.cluster) {
            (true, _, _) => Relay::deliver_from_peer(&peers, &to, msg),
            (false, Some(node), Some(cluster)) => {
                match cluster.routes.try_send(ToCluster::Route { node, msg }) {
                    Ok(()) => Delivery::Queued,
                    Err(mpsc::error::TrySendError::Full(_)) => Delivery::Full,
                    Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Closed,
                }
            }
            _ => Delivery::Closed,
        };
        drop(peers);
        match delivery {
            Delivery::Queued => {
                self.relay.stats.routed.fetch_add(1, Ordering::Relaxed);
                metrics::get()
                    .relay_routed
                    .get_or_create(&metrics::TypeLabel { r#type: kind })
                    .inc();
            }
            // The recipient is behind: the sender waits, the recipient is not punished.
            Delivery::Full => self.reject(
                ErrorCode::RateLimited,
                format!("'{to}' is not keeping up; try again later"),
                session,
            ),
            // Its connection is closing; peer-left follows.
            Delivery::Closed => {
                self.reject(ErrorCode::UnknownPeer, format!("no peer '{to}'"), session)
            }
        }
    }

    fn register(&mut self, requested: Option<String>) {
        if self.id.is_some() {
            self.reject(ErrorCode::BadMessage, "already registered", None);
            return;
        }
        if let Some(Err(why)) = requested.as_deref().map(crate::protocol::check_id) {
            self.reject(ErrorCode::BadMessage, why, None);
            return;
        }
        let mut peers = self.relay.lock();
        let id = match requested {
            Some(id) if peers.by_id.contains_key(&id) || peers.remote.contains_key(&id) => {
                drop(peers);
                self.reject(ErrorCode::IdTaken, format!("id '{id}' is in use"), None);
                return;
            }
            Some(id) => id,
            None => loop {
                // Bounded: each turn takes a fresh number; the maps are finite.
                peers.next_auto_id += 1;
                let prefix = peers.auto_prefix.as_deref().unwrap_or("peer");
                let candidate = format!("{prefix}-{}", peers.next_auto_id);
                if !peers.by_id.contains_key(&candidate) && !peers.remote.contains_key(&candidate) {
                    break candidate;
                }
            },
        };
        let mut others: Vec<String> = peers
            .by_id
            .iter()
            .map(|(id, peer)| (id, peer.access))
            .chain(peers.remote.iter().map(|(id, peer)| (id, peer.access)))
            .filter(|(_, access)| sees(self.access, *access))
            .map(|(id, _)| id.clone())
            .collect();
        others.sort();
        peers.by_id.insert(
            id.clone(),
            Peer {
                conn: self.conn,
                access: self.access,
                outbox: self.outbox.clone(),
                kicked: Arc::clone(&self.kicked),
                owner: self.bucket.is_none(),
            },
        );
        metrics::get().relay_peers.inc();
        if let Some(cluster) = &peers.cluster {
            let _ = cluster.control.send(ToCluster::Claim {
                id: id.clone(),
                access: self.access,
                conn: self.conn,
            });
        }
        let welcome = Message::Registered {
            id: id.clone(),
            peers: others,
        };
        let gone = Relay::notify(&peers, &id, welcome);
        Relay::remove_dead(&mut peers, gone);
        Relay::broadcast(
            &mut peers,
            &id,
            self.access,
            Message::PeerJoined { id: id.clone() },
        );
        drop(peers);
        tracing::debug!(peer = %id, "registered");
        self.id = Some(id);
    }

    fn count_rejected(&self, code: ErrorCode) {
        self.relay.stats.rejected.fetch_add(1, Ordering::Relaxed);
        metrics::get()
            .relay_rejected
            .get_or_create(&metrics::ReasonLabel {
                reason: code.as_str(),
            })
            .inc();
    }

    fn reject(&self, code: ErrorCode, message: impl Into<String>, session: Option<String>) {
        self.count_rejected(code);
        self.reply(Message::error(code, message, session));
    }

    /// Sends to this connection itself; a full queue here means the peer is not reading
    /// its own errors. The daemon's own attachment is never dropped for it.
    fn reply(&self, msg: Message) {
        if self.outbox.try_send(msg).is_err() && self.bucket.is_some() {
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
    use std::time::Duration;

    fn registered(relay: &Arc<Relay>, id: &str) -> (Attachment, mpsc::Receiver<Message>) {
        let (mut a, mut rx) = relay.attach(Access::Full);
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

    fn remote(node: &str) -> RemotePeer {
        RemotePeer {
            node: node.into(),
            access: Access::Full,
        }
    }

    /// A cluster member: peers of other relays are announced once, listed, reachable
    /// through the backend, their ids taken here; local registrations are claimed and
    /// released; a refused claim drops the local peer without releasing the other's id.
    #[test]
    fn a_cluster_member_knows_and_reaches_the_other_relays_peers() {
        let relay = Relay::new();
        let mut inbox = relay.join_cluster("n1");
        let (alice, mut rx_alice) = registered(&relay, "alice");
        match inbox.control.try_recv() {
            Ok(ToCluster::Claim { id, .. }) => assert_eq!(id, "alice"),
            other => panic!("expected a claim, got {other:?}"),
        }
        relay.remote_joined("bob", remote("n2"));
        relay.remote_joined("bob", remote("n2"));
        assert_eq!(
            drain(&mut rx_alice),
            vec![Message::PeerJoined { id: "bob".into() }],
            "announced once"
        );
        // Routed through the backend to bob's relay.
        let mut alice = alice;
        alice.handle(Message::Call {
            route: Route::new("bob", "s1"),
        });
        match inbox.routes.try_recv() {
            Ok(ToCluster::Route { node, msg }) => {
                assert_eq!(node, "n2");
                assert_eq!(
                    msg.route().and_then(|r| r.from.clone()),
                    Some("alice".into())
                );
            }
            other => panic!("expected a route, got {other:?}"),
        }
        // Its id is taken here too, and a newcomer's list holds it.
        let (mut taken, mut rx_taken) = relay.attach(Access::Full);
        taken.handle(Message::Register {
            id: Some("bob".into()),
        });
        assert_eq!(error_code(&drain(&mut rx_taken)), Some(ErrorCode::IdTaken));
        let (mut carol, mut rx_carol) = relay.attach(Access::Full);
        carol.handle(Message::Register { id: None });
        match rx_carol.try_recv() {
            Ok(Message::Registered { id, peers }) => {
                assert!(id.starts_with("peer-n1-"), "{id}");
                assert_eq!(peers, vec!["alice".to_string(), "bob".to_string()]);
            }
            other => panic!("expected registered, got {other:?}"),
        }
        drain(&mut rx_alice);
        // A message from bob's relay reaches alice.
        relay.deliver_routed(Message::Answer {
            route: Route {
                to: "alice".into(),
                from: Some("bob".into()),
                session: "s1".into(),
            },
            sdp: "v=0".into(),
        });
        assert!(matches!(drain(&mut rx_alice)[..], [Message::Answer { .. }]));
        // Bob's relay says he left (another relay's word about him is ignored).
        relay.remote_left("bob", Some("n3"), false);
        assert!(drain(&mut rx_alice).is_empty());
        relay.remote_left("bob", Some("n2"), true);
        assert_eq!(
            drain(&mut rx_alice),
            vec![Message::PeerLeft {
                id: "bob".into(),
                reason: Some("relay-gone".into())
            }]
        );
        // A claim refused: carol is told and dropped, her id not released.
        let carol_id = match inbox.control.try_recv() {
            Ok(ToCluster::Claim { id, conn, .. }) => (id, conn),
            other => panic!("expected carol's claim, got {other:?}"),
        };
        relay.claim_refused(&carol_id.0, carol_id.1);
        assert_eq!(error_code(&drain(&mut rx_carol)), Some(ErrorCode::IdTaken));
        assert!(inbox.control.try_recv().is_err(), "nothing released");
        // Alice leaving releases her id.
        drop(alice);
        match inbox.control.try_recv() {
            Ok(ToCluster::Release { id }) => assert_eq!(id, "alice"),
            other => panic!("expected a release, got {other:?}"),
        }
    }

    #[test]
    fn registered_lists_existing_peers_and_announces_newcomer() {
        let relay = Relay::new();
        let (_a, mut rx_a) = registered(&relay, "alice");
        let (mut b, mut rx_b) = relay.attach(Access::Full);
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
        let (mut b, mut rx_b) = relay.attach(Access::Full);
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
        let (mut a, mut rx_a) = relay.attach(Access::Full);
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
            vec![Message::PeerLeft {
                id: "door".into(),
                reason: None
            }]
        );
        assert_eq!(relay.peer_ids(), vec!["alice".to_string()]);
    }

    fn calls(a: &mut Attachment, to: &str, n: usize) {
        for i in 0..n {
            a.handle_text(&format!(
                r#"{{"type":"call","to":"{to}","session":"s{i}"}}"#
            ));
        }
    }

    #[test]
    fn flooding_a_slow_peer_refuses_the_sender_and_keeps_the_recipient() {
        let relay = Arc::new(Relay::with_rate(RateLimit {
            per_second: 1e9,
            burst: 100_000,
        }));
        let (mut a, mut rx_a) = registered(&relay, "alice");
        let (_slow, _rx_slow_never_read) = registered(&relay, "slow");
        drain(&mut rx_a);
        calls(&mut a, "slow", OUTBOX_CAPACITY + 10);
        assert!(relay.peer_ids().contains(&"slow".to_string()));
        let got = drain(&mut rx_a);
        assert_eq!(error_code(&got), Some(ErrorCode::RateLimited), "{got:?}");
        assert_eq!(
            got.len(),
            10 + NOTICE_RESERVE,
            "one refusal per message past the notices' reserve"
        );
    }

    /// A flooder at the default rate (a burst larger than a queue) against a recipient that
    /// has not read yet: the flooder is dropped, the recipient keeps its connection and
    /// hears that the flooder left.
    #[test]
    fn a_flooder_is_dropped_and_its_recipient_hears_so() {
        let relay = Arc::new(Relay::with_rate(RateLimit::default()));
        let (mut flooder, _rx_flooder) = registered(&relay, "flooder");
        let (reader, mut rx_reader) = registered(&relay, "reader");
        let reader_kicked = reader.kicked();
        drain(&mut rx_reader);
        let kicked = flooder.kicked();
        let now = Instant::now();
        for i in 0..(2 * RateLimit::default().burst as usize + 10) {
            flooder.handle_text_at(
                &format!(r#"{{"type":"call","to":"reader","session":"s{i}"}}"#),
                now,
            );
        }
        use futures::FutureExt;
        assert!(
            kicked.notified().now_or_never().is_some(),
            "flooder dropped"
        );
        drop(flooder);
        assert!(relay.peer_ids().contains(&"reader".to_string()));
        assert!(
            reader_kicked.notified().now_or_never().is_none(),
            "reader kept"
        );
        let got = drain(&mut rx_reader);
        assert_eq!(
            got.len(),
            OUTBOX_CAPACITY - NOTICE_RESERVE + 1,
            "calls, then peer-left"
        );
        assert!(matches!(got.last(), Some(Message::PeerLeft { id, .. }) if id == "flooder"));
    }

    #[test]
    fn a_flood_at_the_daemon_never_drops_its_registration() {
        let relay = Relay::new();
        let (mut daemon, mut daemon_rx) = relay.attach_owner();
        daemon.handle(Message::Register {
            id: Some("door".into()),
        });
        assert!(matches!(
            daemon_rx.try_recv(),
            Ok(Message::Registered { .. })
        ));
        let (mut attacker, mut rx) = registered(&relay, "mallory");
        // The daemon reads nothing meanwhile (it is busy); 1 000 calls arrive in one burst.
        calls(&mut attacker, "door", 1000);
        assert!(
            relay.holds("door", daemon.conn()),
            "the daemon keeps its id"
        );
        let got = drain(&mut rx);
        assert_eq!(error_code(&got), Some(ErrorCode::RateLimited));
        // Nobody can take the id over while the daemon is connected.
        let (mut thief, mut thief_rx) = relay.attach(Access::Full);
        thief.handle_text(r#"{"type":"register","id":"door"}"#);
        assert_eq!(error_code(&drain(&mut thief_rx)), Some(ErrorCode::IdTaken));
    }

    /// A daemon peer setting up ten calls at once sends each an answer, about a dozen
    /// candidates and an end of candidates in the same instant; none may be refused (at the
    /// old 50/s the soak lost answers this way and 3 % of such calls failed ICE).
    #[test]
    fn the_default_rate_takes_ten_call_set_ups_at_once() {
        let relay = Relay::new();
        let (mut daemon, mut rx) = relay.attach(Access::Full);
        let (_door, _rx_door) = registered(&relay, "door");
        let t0 = Instant::now();
        daemon.handle_text_at(r#"{"type":"register","id":"viewer"}"#, t0);
        drain(&mut rx);
        for call in 0..10 {
            for _ in 0..15 {
                let m = format!(
                    r#"{{"type":"candidate","to":"door","session":"s{call}","candidate":""}}"#
                );
                daemon.handle_text_at(&m, t0);
            }
        }
        assert_eq!(error_code(&drain(&mut rx)), None);
    }

    #[test]
    fn a_sender_past_its_rate_is_refused_then_dropped() {
        let limit = RateLimit {
            per_second: 10.0,
            burst: 5,
        };
        let relay = Arc::new(Relay::with_rate(limit));
        let (mut a, mut rx_a) = relay.attach(Access::Full);
        let (_door, _rx_door) = registered(&relay, "door");
        let t0 = Instant::now();
        a.handle_text_at(r#"{"type":"register","id":"alice"}"#, t0);
        drain(&mut rx_a);
        let call = r#"{"type":"call","to":"door","session":"s"}"#;
        for _ in 0..4 {
            a.handle_text_at(call, t0);
        }
        assert!(drain(&mut rx_a).is_empty(), "within the burst");
        a.handle_text_at(call, t0);
        assert_eq!(error_code(&drain(&mut rx_a)), Some(ErrorCode::RateLimited));
        // Half a second later five more fit again.
        let later = t0 + Duration::from_millis(500);
        for _ in 0..5 {
            a.handle_text_at(call, later);
        }
        assert!(drain(&mut rx_a).is_empty());
        let kicked = a.kicked();
        for _ in 0..=limit.burst {
            a.handle_text_at(call, later);
        }
        use futures::FutureExt;
        assert!(kicked.notified().now_or_never().is_some(), "dropped");
    }

    #[test]
    fn a_peer_that_stops_reading_relay_notices_is_dropped() {
        let relay = Relay::new();
        let (_a, mut rx_a) = registered(&relay, "alice");
        let (slow, _rx_slow_never_read) = registered(&relay, "slow");
        let kicked = slow.kicked();
        // Each newcomer is announced to everyone; `slow` never reads its announcements.
        let mut others = Vec::new();
        for i in 0..=OUTBOX_CAPACITY {
            others.push(registered(&relay, &format!("p{i}")));
            drain(&mut rx_a);
        }
        assert!(!relay.peer_ids().contains(&"slow".to_string()));
        use futures::FutureExt;
        assert!(kicked.notified().now_or_never().is_some());
    }
}
