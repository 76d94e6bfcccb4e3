//! The relay's side of the cluster: how the Redis backend joins the registry to the cluster
//! and hands in what the other relays say (the registry's requests are `ToCluster`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use crate::metrics;
use crate::protocol::{ErrorCode, FromRelay, PeerId, Signal};
use crate::relay::registry::{
    Access, CLUSTER_ROUTES, ClusterInbox, ClusterSender, ConnId, Delivery, Relay, RemotePeer,
};

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
                FromRelay::PeerJoined {
                    id: PeerId::local(id),
                },
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
        let left = FromRelay::PeerLeft {
            id: PeerId::local(id),
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
        let _ = peer.outbox.try_send(FromRelay::error(
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
        let left = FromRelay::PeerLeft {
            id: PeerId::local(id),
            reason: None,
        };
        Self::broadcast(&mut peers, id, removed.access, left);
    }

    /// A message another relay routed to a peer of this one.
    pub fn deliver_routed(&self, msg: Signal) {
        let to = msg.route().to.clone();
        let kind = msg.kind();
        let peers = self.lock();
        match Self::deliver_from_peer(&peers, &to, FromRelay::Signal(msg)) {
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
