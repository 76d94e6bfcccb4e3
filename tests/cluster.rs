//! A relay cluster on a real Redis (Debian's redis-server, started here on 127.0.0.1): two
//! relays share one registry; daemons registered on different relays call each other; a
//! relay that dies is noticed within two heartbeats, and its daemons move to another.

mod common;

use std::time::{Duration, Instant};

use serde_json::json;

use common::ws::*;
use common::*;

fn redis(name: &str) -> harness::RedisServer {
    harness::RedisServer::start(&artifacts_dir().join(format!("{name}.log"))).expect("redis-server")
}

fn cluster_relay(name: &str, redis: &harness::RedisServer) -> Proc {
    Proc::relay(name, "127.0.0.1:0", &["--redis", &redis.url])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_on_two_relays_call_each_other_and_survive_a_relay_dying() {
    let _serial = serial().await;
    let redis = redis("redis-cluster");
    let mut r1 = cluster_relay("relay-r1", &redis);
    let r2 = cluster_relay("relay-r2", &redis);
    let profile = light_profile("cluster", "");
    // A registers with R1 (R2 is its fallback), B with R2.
    let a = Proc::daemon(
        "cluster-a",
        &profile,
        &["--relay", &r1.ws_url(), "--relay", &r2.ws_url()],
    );
    let b = Proc::daemon("cluster-b", &profile, &["--relay", &r2.ws_url()]);
    wait_peer(&a, "cluster-b").await;
    wait_peer(&b, "cluster-a").await;

    // An id registered on R1 is taken on R2.
    let mut taken = connect(&r2.ws_url()).await;
    send(&mut taken, json!({"type": "register", "id": "cluster-a"})).await;
    let reply = recv(&mut taken).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "id-taken", "{reply}");
    // A plain client on R1 sees the peers of both relays, and hears peer-joined from R2's.
    let mut watcher = register(&r1.ws_url(), "cluster-watcher").await;
    let joined_on_r2 = register(&r2.ws_url(), "cluster-newcomer").await;
    let heard = recv(&mut watcher).await;
    assert_eq!(heard["type"], "peer-joined", "{heard}");
    assert_eq!(heard["id"], "cluster-newcomer", "{heard}");
    drop(joined_on_r2);
    let heard = recv(&mut watcher).await;
    assert_eq!(heard["type"], "peer-left", "{heard}");
    drop(watcher);

    // A (on R1) calls B (on R2): signaling goes through Redis, media flows both ways.
    let session = place_call(&a, "cluster-b").await;
    assert_call_works(&a, &b, &session).await;

    // R1 dies: B hears peer-left for A within two heartbeats (1 s each, and the sweep). A
    // comes back on R2 moments later, so the timing is taken from a plain client on R2 (it
    // hears what B hears), and B's log shows B heard it.
    let mut observer = register(&r2.ws_url(), "cluster-observer").await;
    r1.kill();
    let killed = Instant::now();
    let left = loop {
        let heard = recv_within(&mut observer, Duration::from_secs(10)).await;
        if heard["type"] == "peer-left" && heard["id"] == "cluster-a" {
            break heard;
        }
    };
    let noticed = killed.elapsed();
    assert_eq!(left["reason"], "relay-gone", "{left}");
    wait_for("B to log that A left", Duration::from_secs(5), || async {
        b.log_text()
            .contains("peer left peer=cluster-a")
            .then_some(())
    })
    .await;
    // …A moves to R2 (its fallback), and a new call works.
    wait_peer(&b, "cluster-a").await;
    let moved = killed.elapsed();
    eprintln!(
        "R1 killed: B heard A leave after {} ms; A registered on R2 after {} ms",
        noticed.as_millis(),
        moved.as_millis()
    );
    // Two heartbeats are 2 s, the sweep runs every 250 ms; the last 750 ms are margin for a
    // busy machine (the figure itself is printed above).
    assert!(
        noticed < Duration::from_millis(3000),
        "peer-left took {noticed:?}"
    );
    // The call that was up went on through all of it (media never passed the relay).
    let before = calls(&b).await;
    let frames = |calls: &[serde_json::Value]| {
        calls
            .iter()
            .find(|c| c["session"] == session.as_str())
            .and_then(|c| c["video_frames"].as_u64())
    };
    let before = frames(&before).expect("B's call survived the relay's death");
    wait_call(&b, &session, "more frames after the failover", |c| {
        c["state"] == "connected" && c["video_frames"].as_u64().unwrap_or(0) > before + 30
    })
    .await;
    wait_call(&a, &session, "A's side still connected", |c| {
        c["state"] == "connected"
    })
    .await;
    assert_eq!(hang_up(&a, &session).await, 204);
    wait_idle(&a).await;
    wait_idle(&b).await;
    // And a new call, the other way, through the relay A moved to.
    let session = place_call(&b, "cluster-a").await;
    assert_call_works(&b, &a, &session).await;
}
