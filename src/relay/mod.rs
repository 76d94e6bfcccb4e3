//! The signaling relay: a registry of peers that routes protocol messages between them
//! ([`registry`], no I/O), its WebSocket server side ([`ws`]), and the daemon's own link to a
//! relay, embedded or remote ([`link`]).

pub mod cluster;
pub mod link;
pub mod registry;
pub mod ws;

pub use registry::{Access, Relay};
