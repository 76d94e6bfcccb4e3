//! One connection's view of the relay: it registers, and what it sends is rate-limited,
//! checked and routed to the peer it names (here, or on another relay of the cluster).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::{Notify, mpsc};

use super::rate::{Admit, Bucket};
use super::{Access, ConnId, Delivery, Peer, Relay, ToCluster, sees};
use crate::metrics;
use crate::protocol::{ErrorCode, FromRelay, PeerId, SessionId, Signal, ToRelay};

/// One connection's view of the relay: its identity and its way to send.
pub struct Attachment {
    pub(super) relay: Arc<Relay>,
    pub(super) conn: ConnId,
    pub(super) id: Option<String>,
    pub(super) outbox: mpsc::Sender<FromRelay>,
    pub(super) kicked: Arc<Notify>,
    /// None for the daemon's own attachment.
    pub(super) bucket: Option<Bucket>,
    pub(super) access: Access,
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
        match ToRelay::decode(text) {
            Ok(msg) => self.handle(msg),
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
    pub fn handle(&mut self, msg: ToRelay) {
        match msg {
            ToRelay::Register { id } => self.register(id.map(String::from)),
            ToRelay::Signal(signal) => self.route(signal),
        }
    }

    fn route(&mut self, mut msg: Signal) {
        let route = msg.route_mut();
        let session = Some(route.session.clone());
        let Some(me) = self.id.clone() else {
            self.reject(ErrorCode::NotRegistered, "register first", session);
            return;
        };
        // The relay, not the client, says who a message is from.
        route.from = Some(PeerId::local(me));
        let to = route.to.clone();
        let kind = msg.kind();
        let peers = self.relay.lock();
        let reachable = peers
            .by_id
            .get(to.as_str())
            .is_some_and(|peer| sees(self.access, peer.access));
        let elsewhere = peers
            .remote
            .get(to.as_str())
            .filter(|peer| sees(self.access, peer.access))
            .map(|peer| peer.node.clone());
        // A peer this connection may not reach is, to it, no peer at all.
        let delivery = match (reachable, elsewhere, &peers.cluster) {
            (true, _, _) => Relay::deliver_from_peer(&peers, &to, FromRelay::Signal(msg)),
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
        let mut others: Vec<PeerId> = peers
            .by_id
            .iter()
            .map(|(id, peer)| (id, peer.access))
            .chain(peers.remote.iter().map(|(id, peer)| (id, peer.access)))
            .filter(|(_, access)| sees(self.access, *access))
            .map(|(id, _)| PeerId::local(id.as_str()))
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
        let welcome = FromRelay::Registered {
            id: PeerId::local(id.as_str()),
            peers: others,
        };
        let gone = Relay::notify(&peers, &id, welcome);
        Relay::remove_dead(&mut peers, gone);
        Relay::broadcast(
            &mut peers,
            &id,
            self.access,
            FromRelay::PeerJoined {
                id: PeerId::local(id.as_str()),
            },
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

    fn reject(&self, code: ErrorCode, message: impl Into<String>, session: Option<SessionId>) {
        self.count_rejected(code);
        self.reply(FromRelay::error(code, message, session));
    }

    /// Sends to this connection itself; a full queue here means the peer is not reading
    /// its own errors. The daemon's own attachment is never dropped for it.
    fn reply(&self, msg: FromRelay) {
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
