//! The call's DataChannel: created by the caller only, pinged once a second for the round
//! trip (and the path watch), and the way local programs' text reaches the peer.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_webrtc::WebRTCDataChannel;
use tokio::sync::mpsc;

use super::{Call, CallEnd};
use crate::protocol::EndReason;
use crate::session::events::PeerInput;
use crate::session::{ChannelState, webrtc};

/// Pings remembered while waiting for their pongs.
const PINGS_IN_FLIGHT: usize = 16;
/// A peer's DataChannel message larger than this is not handed to local programs.
const MAX_LOCAL_MESSAGE: usize = 64 * 1024;

pub(super) struct Channel {
    channel: Option<WebRTCDataChannel>,
    open: bool,
    pings: Pings,
    /// Where the DataChannel's text goes (bounded, like signaling from the peer).
    peer_tx: mpsc::Sender<PeerInput>,
}

/// The pings waiting for their pongs (the newest [`PINGS_IN_FLIGHT`]).
#[derive(Default)]
struct Pings {
    in_flight: VecDeque<(u64, Instant)>,
    last: u64,
}

impl Pings {
    fn next_id(&mut self) -> u64 {
        self.last += 1;
        self.last
    }

    fn sent(&mut self, id: u64, at: Instant) {
        if self.in_flight.len() == PINGS_IN_FLIGHT {
            self.in_flight.pop_front();
        }
        self.in_flight.push_back((id, at));
    }

    /// The round trip of ping `id`, if it is one of ours still waiting.
    fn pong(&mut self, id: u64, now: Instant) -> Option<Duration> {
        let pos = self.in_flight.iter().position(|(n, _)| *n == id)?;
        let (_, sent) = self.in_flight.remove(pos)?;
        Some(now.duration_since(sent))
    }
}

/// What a text message on the DataChannel is.
#[derive(Debug, PartialEq, Eq)]
enum Incoming {
    Ping(u64),
    Pong(u64),
    /// For the device's local programs (the bridge).
    Local,
    TooLarge,
}

#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Keepalive {
    Ping { id: u64 },
    Pong { id: u64 },
}

fn classify(text: &str) -> Incoming {
    match serde_json::from_str(text).ok() {
        Some(Keepalive::Ping { id }) => Incoming::Ping(id),
        Some(Keepalive::Pong { id }) => Incoming::Pong(id),
        None if text.len() <= MAX_LOCAL_MESSAGE => Incoming::Local,
        None => Incoming::TooLarge,
    }
}

impl Channel {
    pub fn new(peer_tx: mpsc::Sender<PeerInput>) -> Channel {
        Channel {
            channel: None,
            open: false,
            pings: Pings::default(),
            peer_tx,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    pub fn send(&self, text: &str) -> bool {
        match &self.channel {
            Some(channel) => channel.send_string_full(Some(text)).is_ok(),
            None => false,
        }
    }

    /// The channel, for teardown.
    pub fn take(&mut self) -> Option<WebRTCDataChannel> {
        self.channel.take()
    }
}

impl Call {
    /// Caller: the DataChannel, before the offer (so the offer carries it).
    pub(super) async fn create_channel(&mut self) -> Result<(), CallEnd> {
        let channel = self
            .in_webrtcbin(|webrtcbin| {
                webrtcbin.emit_by_name::<Option<WebRTCDataChannel>>(
                    "create-data-channel",
                    &[&"chat", &None::<gst::Structure>],
                )
            })
            .await?
            .ok_or_else(|| CallEnd::local(EndReason::InternalError, "no DataChannel"))?;
        webrtc::wire_channel(&channel, &self.events, &self.channel.peer_tx);
        self.channel.channel = Some(channel);
        self.info.channels_created.fetch_add(1, Ordering::Relaxed);
        self.info.set_channel(ChannelState::Connecting);
        Ok(())
    }

    /// Callee: the caller's channel arrived.
    pub(super) fn on_data_channel(&mut self, channel: WebRTCDataChannel) {
        self.info.channels_received.fetch_add(1, Ordering::Relaxed);
        // on-data-channel fires for a channel that is already open; on-open may follow.
        self.channel.channel = Some(channel);
        self.on_channel_open();
    }

    pub(super) fn on_channel_open(&mut self) {
        let open = self
            .channel
            .channel
            .as_ref()
            .is_some_and(|c| c.ready_state() == gst_webrtc::WebRTCDataChannelState::Open);
        if open && !self.channel.open {
            self.channel.open = true;
            self.info.set_channel(ChannelState::Open);
            tracing::debug!(session = %self.info.session, "data channel open");
        }
    }

    pub(super) fn on_channel_closed(&mut self) {
        self.channel.open = false;
        self.info.set_channel(ChannelState::Closed);
    }

    pub(super) fn on_channel_text(&mut self, text: &str) {
        match classify(text) {
            Incoming::Ping(id) => {
                let pong = serde_json::json!({"type": "pong", "id": id}).to_string();
                if self.channel.send(&pong) {
                    self.info.pings_answered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Incoming::Pong(id) => {
                if let Some(rtt) = self.channel.pings.pong(id, Instant::now()) {
                    let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1);
                    self.info.rtt_us.store(micros, Ordering::Relaxed);
                    self.info.pongs_received.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Until someone accepts a ringing call, its channel carries keepalives only.
            Incoming::Local if self.talk.on_hold() => {
                tracing::debug!(session = %self.info.session, "a DataChannel message before the call was accepted: dropped");
            }
            Incoming::Local => self.notifier.message(&self.info, text),
            Incoming::TooLarge => {
                tracing::debug!(session = %self.info.session, bytes = text.len(), "a DataChannel message too large for local programs: dropped");
            }
        }
    }

    pub(super) fn send_ping(&mut self) {
        let id = self.channel.pings.next_id();
        let ping = serde_json::json!({"type": "ping", "id": id}).to_string();
        if self.channel.send(&ping) {
            self.channel.pings.sent(id, Instant::now());
        }
    }

    /// Text from a local program (the bridge) to the peer.
    pub(super) fn send_local_text(&self, text: &str) {
        if self.talk.on_hold() {
            tracing::debug!(session = %self.info.session, "the call rings: a local message dropped");
        } else if !self.channel.open || !self.channel.send(text) {
            tracing::debug!(session = %self.info.session, "no open DataChannel: a local message dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pong_gives_the_round_trip_of_its_ping_once() {
        let mut pings = Pings::default();
        let t0 = Instant::now();
        let id = pings.next_id();
        pings.sent(id, t0);
        assert_eq!(
            pings.pong(id, t0 + Duration::from_millis(12)),
            Some(Duration::from_millis(12))
        );
        assert_eq!(pings.pong(id, t0 + Duration::from_millis(13)), None);
        assert_eq!(pings.pong(999, t0), None);
    }

    #[test]
    fn only_the_newest_pings_are_remembered() {
        let mut pings = Pings::default();
        let t0 = Instant::now();
        for _ in 0..PINGS_IN_FLIGHT + 4 {
            let id = pings.next_id();
            pings.sent(id, t0);
        }
        assert_eq!(pings.in_flight.len(), PINGS_IN_FLIGHT);
        assert_eq!(pings.pong(1, t0), None);
        assert!(pings.pong(PINGS_IN_FLIGHT as u64 + 4, t0).is_some());
    }

    #[test]
    fn keepalives_are_told_from_local_programs_text() {
        assert_eq!(classify(r#"{"type":"ping","id":7}"#), Incoming::Ping(7));
        assert_eq!(classify(r#"{"type":"pong","id":8}"#), Incoming::Pong(8));
        assert_eq!(classify(r#"{"type":"open-door"}"#), Incoming::Local);
        assert_eq!(classify("plain text"), Incoming::Local);
        assert_eq!(
            classify(&"x".repeat(MAX_LOCAL_MESSAGE + 1)),
            Incoming::TooLarge
        );
    }
}
