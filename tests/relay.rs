//! The relay over real WebSockets: a standalone `webrtcd relay` and a daemon's embedded one.

mod common;

use std::time::Duration;

use async_tungstenite::tungstenite::client::IntoClientRequest;
use serde_json::json;

use common::ws::*;
use common::*;
use webrtcd::service::api_client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_errors_and_oversize_over_a_real_socket() {
    let relay = Proc::relay("relay-ws", "127.0.0.1:0", &[]);
    let url = relay.ws_url();
    let mut alice = register(&url, "alice").await;
    let mut door = register(&url, "door").await;
    assert_eq!(
        recv(&mut alice).await,
        json!({"type": "peer-joined", "id": "door"})
    );

    // A forged `from` is replaced by the sender's registered id.
    send(
        &mut alice,
        json!({"type": "call", "to": "door", "from": "mallory", "session": "s1"}),
    )
    .await;
    let call = recv(&mut door).await;
    assert_eq!(call["type"], "call");
    assert_eq!(call["from"], "alice");
    assert_eq!(call["session"], "s1");

    // Bad JSON, an unknown type, an oversize message: an error each, connection still usable.
    send_text(&mut alice, "{oops".into()).await;
    assert_eq!(recv(&mut alice).await["code"], "bad-message");
    send(
        &mut alice,
        json!({"type": "teleport", "to": "door", "session": "s1"}),
    )
    .await;
    assert_eq!(recv(&mut alice).await["code"], "bad-message");
    let big = json!({"type": "offer", "to": "door", "session": "s1", "sdp": "x".repeat(70 * 1024)});
    send(&mut alice, big).await;
    assert_eq!(recv(&mut alice).await["code"], "too-large");
    send(
        &mut alice,
        json!({"type": "hangup", "to": "nobody", "session": "s2"}),
    )
    .await;
    let err = recv(&mut alice).await;
    assert_eq!(err["code"], "unknown-peer");
    assert_eq!(err["session"], "s2");

    // The id is taken while alice is connected.
    let mut imposter = connect(&url).await;
    send(&mut imposter, json!({"type": "register", "id": "alice"})).await;
    assert_eq!(recv(&mut imposter).await["code"], "id-taken");

    send(
        &mut alice,
        json!({"type": "hangup", "to": "door", "session": "s1", "reason": "bye"}),
    )
    .await;
    let hangup = recv(&mut door).await;
    assert_eq!(hangup["type"], "hangup");
    assert_eq!(hangup["reason"], "bye");

    // Dropping a connection announces peer-left to the others.
    drop(alice);
    assert_eq!(
        recv(&mut door).await,
        json!({"type": "peer-left", "id": "alice"})
    );
}

async fn http_status(url: &str, token: Option<&str>) -> u16 {
    api_client::request("GET", url, None, token)
        .await
        .expect("request")
        .0
}

async fn ws_refused_with(url: &str) -> Option<u16> {
    match async_tungstenite::tokio::connect_async(url).await {
        Ok(_) => None,
        Err(async_tungstenite::tungstenite::Error::Http(resp)) => Some(resp.status().as_u16()),
        Err(other) => panic!("unexpected error {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_the_relay_and_the_api() {
    let relay = Proc::relay("relay-token", "127.0.0.1:0", &["--token", "s3cret-relay"]);
    let url = relay.ws_url();
    assert_eq!(ws_refused_with(&url).await, Some(401), "missing token");
    assert_eq!(
        ws_refused_with(&format!("{url}?token=wrong")).await,
        Some(401),
        "wrong token"
    );
    assert_eq!(
        ws_refused_with(&format!("{url}?token=s3cret-relay")).await,
        None
    );
    let mut request = url.as_str().into_client_request().expect("request");
    request.headers_mut().insert(
        "authorization",
        "Bearer s3cret-relay".parse().expect("header"),
    );
    assert!(
        async_tungstenite::tokio::connect_async(request)
            .await
            .is_ok()
    );

    // The daemon: tokens from its config file guard /api and /signaling, not the page.
    let _serial = serial().await;
    let config = artifacts_dir().join("token-config.toml");
    std::fs::write(&config, "tokens = [\"t0ken-for-tests\"]\n").expect("write config");
    let profile = light_profile("token-daemon", "");
    let daemon = Proc::daemon(
        "token-daemon",
        &profile,
        &["--config", config.to_str().expect("path")],
    );
    assert_eq!(http_status(&daemon.api("/api/calls"), None).await, 401);
    assert_eq!(
        http_status(&daemon.api("/api/calls"), Some("nope")).await,
        401
    );
    assert_eq!(
        http_status(&daemon.api("/api/calls"), Some("t0ken-for-tests")).await,
        200
    );
    assert_eq!(
        http_status(&daemon.api("/api/status?token=t0ken-for-tests"), None).await,
        200
    );
    assert_eq!(http_status(&daemon.api("/"), None).await, 200);
    assert_eq!(ws_refused_with(&daemon.ws_url()).await, Some(401));
}

/// A `view` token may reach the relay's full members (the devices, admin tokens) and nobody
/// else: viewers neither see nor reach one another, and ids that only look alike are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_tokens_reach_only_full_members() {
    let relay = Proc::relay(
        "relay-scopes",
        "127.0.0.1:0",
        &["--token", "admin-token-1", "--view-token", "view-token-1"],
    );
    let admin_url = format!("{}?token=admin-token-1", relay.ws_url());
    let view_url = format!("{}?token=view-token-1", relay.ws_url());
    let mut door = register(&admin_url, "door").await;
    let mut anna = register(&view_url, "anna").await;
    assert_eq!(
        recv(&mut door).await,
        json!({"type": "peer-joined", "id": "anna"})
    );
    // A second viewer is told about the door only, and anna is not told about it.
    let mut ws = connect(&view_url).await;
    send(&mut ws, json!({"type": "register", "id": "bob"})).await;
    let welcome = recv(&mut ws).await;
    assert_eq!(welcome["peers"], json!(["door"]), "{welcome}");
    let mut bob = ws;
    assert_eq!(
        recv(&mut door).await,
        json!({"type": "peer-joined", "id": "bob"})
    );
    // bob reaches the door; anna is no peer to him.
    send(
        &mut bob,
        json!({"type": "call", "to": "door", "session": "b1"}),
    )
    .await;
    assert_eq!(recv(&mut door).await["from"], "bob");
    send(
        &mut bob,
        json!({"type": "call", "to": "anna", "session": "b2"}),
    )
    .await;
    assert_eq!(recv(&mut bob).await["code"], "unknown-peer");
    // The door calls viewers.
    send(
        &mut door,
        json!({"type": "call", "to": "anna", "session": "d1"}),
    )
    .await;
    assert_eq!(recv(&mut anna).await["from"], "door");
    // bob leaves: the door hears it, anna (who never saw him) hears nothing; her next
    // message is the door's.
    drop(bob);
    assert_eq!(
        recv(&mut door).await,
        json!({"type": "peer-left", "id": "bob"})
    );
    send(
        &mut door,
        json!({"type": "hangup", "to": "anna", "session": "d1"}),
    )
    .await;
    assert_eq!(recv(&mut anna).await["type"], "hangup");
    // `door` + a zero-width space would look like the door in any list.
    let mut lookalike = connect(&admin_url).await;
    send(
        &mut lookalike,
        json!({"type": "register", "id": "door\u{200B}"}),
    )
    .await;
    assert_eq!(recv(&mut lookalike).await["code"], "bad-message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_rejects_bad_bodies_and_unknown_peers() {
    let _serial = serial().await;
    let profile = light_profile("api-errors", "");
    let daemon = Proc::daemon("api-errors", &profile, &[]);
    wait_for("registration", Duration::from_secs(10), || async {
        (status(&daemon).await["registered"] == true).then_some(())
    })
    .await;
    let url = daemon.api("/api/calls");
    let post = |body: &'static str| {
        let url = url.clone();
        async move {
            api_client::request("POST", &url, Some(body.to_string()), None)
                .await
                .expect("POST")
                .0
        }
    };
    assert_eq!(post("not json").await, 400);
    assert_eq!(post(r#"{"too": "door"}"#).await, 400);
    assert_eq!(post(r#"{"to": "nobody"}"#).await, 404);
    assert_eq!(hang_up(&daemon, "no-such-session").await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_stops_answering_pings_is_dropped() {
    let relay = Proc::relay("relay-keepalive", "127.0.0.1:0", &["--keepalive-secs", "1"]);
    let url = relay.ws_url();
    // Registers, then never reads again: it cannot answer the relay's pings.
    let started = std::time::Instant::now();
    let mute = register(&url, "mute").await;
    let mut watcher = register(&url, "watcher").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        let msg = tokio::time::timeout_at(deadline, recv(&mut watcher))
            .await
            .expect("peer-left for the mute connection within 8 s");
        if msg == json!({"type": "peer-left", "id": "mute"}) {
            break;
        }
    }
    // The watcher, which reads (and so answers pings), is still registered.
    // Silence is tolerated for two keepalive intervals, not dropped at the first ping.
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "dropped too early: {:?}",
        started.elapsed()
    );
    let mut probe = register(&url, "probe").await;
    send(
        &mut probe,
        json!({"type": "call", "to": "watcher", "session": "k"}),
    )
    .await;
    assert_eq!(recv(&mut watcher).await["type"], "peer-joined");
    assert_eq!(recv(&mut watcher).await["from"], "probe");
    drop(mute);
    // Closing the mute connection once its writer gave up used to await that writer's
    // finished JoinHandle again: a panic in the relay (the log shows it).
    assert!(
        !relay.log_text().contains("panicked"),
        "{}",
        relay.log_text()
    );
}
