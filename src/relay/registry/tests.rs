//! The registry driven through channels: registration, routing, flood and slow-reader bounds,
//! and a cluster member seeing the other relays' peers.
//!
//! Built for tests only: `#[cfg(test)] mod tests;` in this folder's `mod.rs`.

use super::*;
use crate::protocol::{ErrorCode, FromRelay, PeerId, Route, SessionId, Signal, ToRelay};
use std::time::{Duration, Instant};

fn registered(relay: &Arc<Relay>, id: &str) -> (Attachment, mpsc::Receiver<FromRelay>) {
    let (mut a, mut rx) = relay.attach(Access::Full);
    a.handle(ToRelay::Register {
        id: Some(PeerId::local(id)),
    });
    match rx.try_recv() {
        Ok(FromRelay::Registered { id: got, .. }) => assert_eq!(got, id),
        other => panic!("expected registered, got {other:?}"),
    }
    (a, rx)
}

fn drain(rx: &mut mpsc::Receiver<FromRelay>) -> Vec<FromRelay> {
    let mut out = Vec::new();
    while let Ok(m) = rx.try_recv() {
        out.push(m);
    }
    out
}

fn error_code(msgs: &[FromRelay]) -> Option<ErrorCode> {
    msgs.iter().find_map(|m| match m {
        FromRelay::Error { code, .. } => Some(*code),
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
        vec![FromRelay::PeerJoined {
            id: PeerId::local("bob")
        }],
        "announced once"
    );
    // Routed through the backend to bob's relay.
    let mut alice = alice;
    alice.handle(ToRelay::Signal(Signal::Call {
        route: Route::new("bob", "s1"),
        early: false,
        camera: None,
    }));
    match inbox.routes.try_recv() {
        Ok(ToCluster::Route { node, msg }) => {
            assert_eq!(node, "n2");
            assert_eq!(msg.route().from, Some(PeerId::local("alice")));
        }
        other => panic!("expected a route, got {other:?}"),
    }
    // Its id is taken here too, and a newcomer's list holds it.
    let (mut taken, mut rx_taken) = relay.attach(Access::Full);
    taken.handle(ToRelay::Register {
        id: Some(PeerId::local("bob")),
    });
    assert_eq!(error_code(&drain(&mut rx_taken)), Some(ErrorCode::IdTaken));
    let (mut carol, mut rx_carol) = relay.attach(Access::Full);
    carol.handle(ToRelay::Register { id: None });
    match rx_carol.try_recv() {
        Ok(FromRelay::Registered { id, peers }) => {
            assert!(id.starts_with("peer-n1-"), "{id}");
            assert_eq!(peers, ["alice", "bob"]);
        }
        other => panic!("expected registered, got {other:?}"),
    }
    drain(&mut rx_alice);
    // A message from bob's relay reaches alice.
    relay.deliver_routed(Signal::Answer {
        route: Route {
            to: PeerId::local("alice"),
            from: Some(PeerId::local("bob")),
            session: SessionId::local("s1"),
        },
        sdp: "v=0".into(),
    });
    assert!(matches!(
        drain(&mut rx_alice)[..],
        [FromRelay::Signal(Signal::Answer { .. })]
    ));
    // Bob's relay says he left (another relay's word about him is ignored).
    relay.remote_left("bob", Some("n3"), false);
    assert!(drain(&mut rx_alice).is_empty());
    relay.remote_left("bob", Some("n2"), true);
    assert_eq!(
        drain(&mut rx_alice),
        vec![FromRelay::PeerLeft {
            id: PeerId::local("bob"),
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
    b.handle(ToRelay::Register {
        id: Some(PeerId::local("door")),
    });
    assert_eq!(
        drain(&mut rx_b),
        vec![FromRelay::Registered {
            id: PeerId::local("door"),
            peers: vec![PeerId::local("alice")]
        }]
    );
    assert_eq!(
        drain(&mut rx_a),
        vec![FromRelay::PeerJoined {
            id: PeerId::local("door")
        }]
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
        vec![FromRelay::Signal(Signal::Call {
            route: Route {
                to: PeerId::local("door"),
                from: Some(PeerId::local("alice")),
                session: SessionId::local("s1")
            },
            early: false,
            camera: None,
        })]
    );
    assert_eq!(relay.stats.routed.load(Ordering::Relaxed), 1);
}

#[test]
fn unknown_peer_error_carries_session() {
    let relay = Relay::new();
    let (mut a, mut rx_a) = registered(&relay, "alice");
    a.handle_text(r#"{"type":"hangup","to":"ghost","session":"s9"}"#);
    match drain(&mut rx_a).as_slice() {
        [FromRelay::Error { code, session, .. }] => {
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
        [FromRelay::Registered { id, peers }] => {
            assert!(id.starts_with("peer-"));
            assert_eq!(peers, &["alice"]);
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
        vec![FromRelay::PeerLeft {
            id: PeerId::local("door"),
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
    assert!(matches!(got.last(), Some(FromRelay::PeerLeft { id, .. }) if id == "flooder"));
}

#[test]
fn a_flood_at_the_daemon_never_drops_its_registration() {
    let relay = Relay::new();
    let (mut daemon, mut daemon_rx) = relay.attach_owner();
    daemon.handle(ToRelay::Register {
        id: Some(PeerId::local("door")),
    });
    assert!(matches!(
        daemon_rx.try_recv(),
        Ok(FromRelay::Registered { .. })
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
            let m =
                format!(r#"{{"type":"candidate","to":"door","session":"s{call}","candidate":""}}"#);
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
