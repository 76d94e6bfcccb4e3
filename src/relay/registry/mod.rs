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

mod attachment;
mod rate;
mod remote;
#[cfg(test)]
mod tests;

pub use attachment::Attachment;
pub use rate::RateLimit;
pub(in crate::relay) use remote::{CLUSTER_ROUTES, ClusterSender};
pub use remote::{ClusterInbox, RemotePeer, ToCluster};

use crate::metrics;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, mpsc};

use crate::protocol::{FromRelay, PeerId};
use rate::Bucket;

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

pub(in crate::relay) struct Peer {
    pub(in crate::relay) conn: ConnId,
    pub(in crate::relay) access: Access,
    pub(in crate::relay) outbox: mpsc::Sender<FromRelay>,
    /// Woken when the relay drops this peer (it stopped reading, or flooded); the I/O loop
    /// then closes.
    pub(in crate::relay) kicked: Arc<Notify>,
    /// The daemon's own registration on its embedded relay: never dropped for what others
    /// send, and never made to wait behind a rate limit.
    pub(in crate::relay) owner: bool,
}

#[derive(Default)]
pub(in crate::relay) struct Peers {
    pub(in crate::relay) by_id: HashMap<String, Peer>,
    pub(in crate::relay) next_auto_id: u64,
    /// Assigned ids start with this (`peer`; in a cluster, `peer-NODE`: unique across it).
    pub(in crate::relay) auto_prefix: Option<String>,
    /// In a cluster: the peers registered on the other relays, and the way to them.
    pub(in crate::relay) remote: HashMap<String, RemotePeer>,
    pub(in crate::relay) cluster: Option<ClusterSender>,
}

/// Counters the relay keeps about its own work.
#[derive(Default, Debug)]
pub struct RelayStats {
    pub routed: AtomicU64,
    pub rejected: AtomicU64,
}

/// The shared relay. Cheap to clone through `Arc`.
pub struct Relay {
    pub(in crate::relay) peers: Mutex<Peers>,
    pub(in crate::relay) next_conn: AtomicU64,
    pub(in crate::relay) rate: RateLimit,
    pub stats: RelayStats,
}

impl Default for Relay {
    fn default() -> Relay {
        Relay::with_rate(RateLimit::default())
    }
}

/// What became of a message handed to a peer's queue.
pub(in crate::relay) enum Delivery {
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
    pub fn attach(self: &Arc<Self>, access: Access) -> (Attachment, mpsc::Receiver<FromRelay>) {
        self.attach_with(Some(Bucket::new(self.rate)), access)
    }

    /// Attaches the daemon that embeds this relay: no rate limit, and never dropped for what
    /// other peers send.
    pub fn attach_owner(self: &Arc<Self>) -> (Attachment, mpsc::Receiver<FromRelay>) {
        self.attach_with(None, Access::Full)
    }

    fn attach_with(
        self: &Arc<Self>,
        bucket: Option<Bucket>,
        access: Access,
    ) -> (Attachment, mpsc::Receiver<FromRelay>) {
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
    pub(in crate::relay) fn peer_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().by_id.keys().cloned().collect();
        ids.sort();
        ids
    }

    pub(in crate::relay) fn lock(&self) -> MutexGuard<'_, Peers> {
        crate::sync::lock(&self.peers)
    }

    pub(in crate::relay) fn deliver(peers: &Peers, to: &str, msg: FromRelay) -> Delivery {
        let Some(peer) = peers.by_id.get(to) else {
            return Delivery::Closed;
        };
        Self::enqueue(peer, msg)
    }

    pub(in crate::relay) fn enqueue(peer: &Peer, msg: FromRelay) -> Delivery {
        match peer.outbox.try_send(msg) {
            Ok(()) => Delivery::Queued,
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Closed,
            Err(mpsc::error::TrySendError::Full(_)) => Delivery::Full,
        }
    }

    /// Queues a message another peer sent, within what [`NOTICE_RESERVE`] leaves.
    pub(in crate::relay) fn deliver_from_peer(peers: &Peers, to: &str, msg: FromRelay) -> Delivery {
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
    pub(in crate::relay) fn notify(peers: &Peers, to: &str, msg: FromRelay) -> Vec<String> {
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
    pub(in crate::relay) fn broadcast(
        peers: &mut Peers,
        about: &str,
        access: Access,
        msg: FromRelay,
    ) {
        let mut gone: Vec<String> = Vec::new();
        for (id, peer) in peers.by_id.iter().filter(|(id, _)| id.as_str() != about) {
            if sees(peer.access, access) {
                gone.extend(Self::notify(peers, id, msg.clone()));
            }
        }
        Self::remove_dead(peers, gone);
    }

    pub(in crate::relay) fn remove_dead(peers: &mut Peers, mut gone: Vec<String>) {
        // Bounded: each round removes at least one peer from a finite map.
        while let Some(id) = gone.pop() {
            let Some(removed) = peers.by_id.remove(&id) else {
                continue;
            };
            metrics::get().relay_peers.dec();
            if let Some(cluster) = &peers.cluster {
                let _ = cluster.control.send(ToCluster::Release { id: id.clone() });
            }
            let left = FromRelay::PeerLeft {
                id: PeerId::local(id.clone()),
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

/// Whether a peer with access `viewer` may see and message a peer with access `seen`.
pub(in crate::relay) fn sees(viewer: Access, seen: Access) -> bool {
    viewer == Access::Full || seen == Access::Full
}
