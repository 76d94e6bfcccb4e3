//! The peers of the other relays of a cluster, and what the registry asks of the cluster
//! backend (`crate::relay::cluster`), which reads it from a [`ClusterInbox`].

use tokio::sync::mpsc;

use super::{Access, ConnId};
use crate::protocol::Signal;

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
    Route { node: String, msg: Signal },
}

/// The relay's side of its cluster backend: claims and releases are few (one per
/// registration) and must not be lost; routed messages are bounded, like a peer's queue.
pub(in crate::relay) struct ClusterSender {
    pub(in crate::relay) control: mpsc::UnboundedSender<ToCluster>,
    pub(in crate::relay) routes: mpsc::Sender<ToCluster>,
}

/// The backend's side: what the relay asks of it.
pub struct ClusterInbox {
    pub control: mpsc::UnboundedReceiver<ToCluster>,
    pub routes: mpsc::Receiver<ToCluster>,
}

/// Routed messages that may wait for the cluster backend.
pub(in crate::relay) const CLUSTER_ROUTES: usize = 1024;
