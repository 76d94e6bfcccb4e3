//! Never down: floods, stalled and silent clients, a frozen or restarted relay, hostile SDP,
//! peers that vanish, and a camera that takes seconds to open. Each test runs in a fresh
//! network namespace with only `lo` (see common/browser.rs); clients that must not share the
//! daemon's per-address cap connect from other 127.x addresses.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message as Frame;
use common::browser::Net;
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use webrtcd::service::api_client;

type Ws = async_tungstenite::WebSocketStream<
    async_tungstenite::tokio::TokioAdapter<tokio::net::TcpStream>,
>;

/// A WebSocket to `daemon`'s relay from local address `from`.
async fn ws_from(from: &str, daemon: &Proc) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("addr"))
        .expect("bind");
    let tcp = socket
        .connect(daemon.addr.parse().expect("addr"))
        .await
        .expect("connect");
    async_tungstenite::tokio::client_async(daemon.ws_url(), tcp)
        .await
        .expect("handshake")
        .0
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Frame::text(v.to_string())).await.expect("send");
}

/// The next JSON message within `within`; `None` if the connection closed or nothing came.
async fn next_json(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Frame::Text(text)))) => return serde_json::from_str(text.as_str()).ok(),
            Ok(Some(Ok(Frame::Close(_)) | Err(_)) | None) | Err(_) => return None,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Registers `id` and returns the socket, the `registered` message consumed.
async fn register(from: &str, daemon: &Proc, id: &str) -> Ws {
    let mut ws = ws_from(from, daemon).await;
    send(&mut ws, json!({"type": "register", "id": id})).await;
    let reply = next_json(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(
        reply.as_ref().map(|r| r["type"].clone()),
        Some(json!("registered")),
        "{reply:?}"
    );
    ws
}

/// `GET path` on `p`: status code, and how long it took.
async fn timed_get(p: &Proc, path: &str) -> (u16, Duration) {
    let started = Instant::now();
    let (status, _) = api_client::request("GET", &p.api(path), None, None)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (status, started.elapsed())
}

fn fds_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A daemon registered on `door`'s embedded relay, once `door` sees it.
async fn visitor_of(door: &Proc, id: &str) -> Proc {
    let profile = light_profile(id, "");
    let visitor = Proc::daemon(id, &profile, &["--relay", &door.ws_url()]);
    wait_peer(&visitor, &door.name).await;
    visitor
}

/// A visitor daemon registered on `door`'s embedded relay calls it; the call must work.
async fn a_call_works(door: &Proc, visitor_id: &str) {
    let visitor = visitor_of(door, visitor_id).await;
    let session = place_call(&visitor, &door.name).await;
    assert_call_works(&visitor, door, &session).await;
}

netns_test!(
    a_flood_of_calls_leaves_the_device_registered_and_callable,
    Net::LoopbackOnly,
    {
        let profile = light_profile("flood-door", "max_sessions = 4");
        let door = Proc::daemon("flood-door", &profile, &[]);
        let mallory = register("127.0.0.2", &door, "mallory").await;
        let (mut tx, mut rx) = mallory.split();
        // 10 000 calls in one burst, as fast as the socket takes them.
        let flood = tokio::spawn(async move {
            for i in 0..10_000 {
                let call = json!({"type": "call", "to": "flood-door", "session": format!("f{i}")});
                if tx.send(Frame::text(call.to_string())).await.is_err() {
                    return i;
                }
            }
            10_000
        });
        let (mut busy, mut limited) = (0, 0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, rx.next()).await {
            let Frame::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(text.as_str()).expect("JSON");
            match (v["type"].as_str(), v["reason"].as_str(), v["code"].as_str()) {
                (Some("hangup"), Some("busy"), _) => busy += 1,
                (Some("error"), _, Some("rate-limited")) => limited += 1,
                _ => {}
            }
        }
        let sent = flood.await.expect("flood task");
        eprintln!("flood: {sent} calls written, {busy} busy, {limited} rate-limited errors");
        assert!(limited >= 1, "the flooder was told to slow down");
        // Its calls that never offer hold sessions till the connect timeout, but never the
        // last one: that stays free for others.
        let max_sessions = 4;
        let held = calls(&door)
            .await
            .into_iter()
            .filter(|c| c["peer"] == "mallory")
            .count();
        assert!(held < max_sessions, "mallory holds {held} sessions");
        let s = status(&door).await;
        assert_eq!(s["registered"], true, "{s}");
        assert_eq!(s["id"], "flood-door", "{s}");
        assert_eq!(timed_get(&door, "/healthz").await.0, 200);
        // Nobody can take the device's id.
        let mut thief = ws_from("127.0.0.3", &door).await;
        send(&mut thief, json!({"type": "register", "id": "flood-door"})).await;
        let reply = next_json(&mut thief, Duration::from_secs(5)).await;
        assert_eq!(reply.map(|r| r["code"].clone()), Some(json!("id-taken")));
        a_call_works(&door, "flood-visitor").await;
    }
);

// A flooder (127.0.0.5) sends 2 000 offers of 16 KiB to a client (127.0.0.1) that reads
// everything but is busy while the burst arrives (a small receive window, and it reads once
// the flooder has gone: a browser tab busy for a moment), 20 times in a row: the reader stays
// connected and hears each flooder leave. Before the relay kept room for its own notices in
// every queue, the flood filled the reader's queue (256) and the `peer-left` that followed
// got the reader dropped too.
netns_test!(
    a_flooder_never_gets_a_reading_client_dropped,
    Net::LoopbackOnly,
    {
        let profile = light_profile("relay-flood-door", "");
        let door = Proc::daemon("relay-flood-door", &profile, &[]);
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let tcp = socket
            .connect(door.addr.parse().expect("addr"))
            .await
            .expect("connect");
        let mut reader = async_tungstenite::tokio::client_async(door.ws_url(), tcp)
            .await
            .expect("handshake")
            .0;
        send(&mut reader, json!({"type": "register", "id": "reader"})).await;
        assert_eq!(
            next_json(&mut reader, Duration::from_secs(5))
                .await
                .map(|r| r["type"].clone()),
            Some(json!("registered"))
        );
        // Offers of 16 KiB: more than the kernel's socket buffers hold reach the reader's
        // queue, so the queue itself fills while the reader is busy.
        let sdp = format!("v=0\r\n{}", "a=x\r\n".repeat(16 * 1024 / 5));
        let mut received = 0u64;
        for round in 0..20 {
            let id = format!("flooder{round}");
            let flooder = register("127.0.0.5", &door, &id).await;
            let (mut tx, rx) = flooder.split();
            let sdp = sdp.clone();
            let flood = tokio::spawn(async move {
                for i in 0..2_000 {
                    let msg = json!({"type": "offer", "to": "reader", "session": format!("f{i}"), "sdp": sdp});
                    if tx.send(Frame::text(msg.to_string())).await.is_err() {
                        return i;
                    }
                }
                2_000
            });
            // Busy while the flood lasts (bounded), then the flooder goes (or was dropped).
            let sent = tokio::time::timeout(Duration::from_secs(30), flood)
                .await
                .expect("the flood ends")
                .expect("flood task");
            drop(rx);
            // The reader reads until the flooder's departure is announced.
            let mut left = false;
            while let Some(v) = next_json(&mut reader, Duration::from_secs(5)).await {
                received += 1;
                if v["type"] == "peer-left" && v["id"] == id.as_str() {
                    left = true;
                    break;
                }
            }
            assert!(
                left,
                "round {round} ({sent} sent): the reader was dropped, or never heard {id} leave"
            );
        }
        eprintln!("the reader read {received} messages over 20 floods");
        // Still registered, and still reached.
        let mut other = register("127.0.0.2", &door, "other").await;
        send(
            &mut other,
            json!({"type": "call", "to": "reader", "session": "hello"}),
        )
        .await;
        loop {
            let v = next_json(&mut reader, Duration::from_secs(5))
                .await
                .expect("the reader is still connected");
            if v["session"] == "hello" {
                break;
            }
        }
    }
);

// A silent connection is closed within 5 s. With every connection slot taken by WebSockets
// (`max_connections = 24`, one host holding them all), a health probe still gets its answer (a slot of the health checks' reserve), and
// that reserve serves nothing else.
netns_test!(
    a_full_house_of_websockets_leaves_healthz_answering,
    Net::LoopbackOnly,
    {
        let profile = light_profile("full-house", "");
        let cfg = config_file(
            "full-house",
            "max_connections = 24\nmax_connections_per_address = 64\n",
        );
        let door = Proc::daemon("full-house", &profile, &["--config", &cfg]);
        // A connection that sends nothing is closed within a few seconds (5 s; a request's
        // header has client_timeout_secs, 10 s here).
        {
            use tokio::io::AsyncReadExt;
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .bind("127.0.0.5:0".parse().expect("addr"))
                .expect("bind");
            let mut silent = socket
                .connect(door.addr.parse().expect("addr"))
                .await
                .expect("connect");
            let started = Instant::now();
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(8), silent.read(&mut byte)).await;
            assert!(
                matches!(read, Ok(Ok(0)) | Ok(Err(_))),
                "a silent connection still open after {:?}",
                started.elapsed()
            );
            eprintln!(
                "a silent connection was closed after {:?}",
                started.elapsed()
            );
        }
        let mut held = Vec::new();
        for _ in 0..40 {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .bind("127.0.0.5:0".parse().expect("addr"))
                .expect("bind");
            let tcp = socket
                .connect(door.addr.parse().expect("addr"))
                .await
                .expect("connect");
            match tokio::time::timeout(
                Duration::from_secs(3),
                async_tungstenite::tokio::client_async(door.ws_url(), tcp),
            )
            .await
            {
                Ok(Ok((ws, _))) => held.push(ws),
                _ => break,
            }
        }
        assert!(held.len() >= 24, "{} WebSockets held", held.len());
        // The ordinary slots are gone: a request from the monitor's address is answered from
        // the reserve, for health and metrics only.
        assert_eq!(timed_get(&door, "/healthz").await.0, 200);
        assert_eq!(timed_get(&door, "/metrics").await.0, 200);
        assert_eq!(timed_get(&door, "/api/status").await.0, 503);
        drop(held);
        // Freed: everything is served again (the daemon notices the closes at once).
        let served = poll(Duration::from_secs(5), || async {
            (timed_get(&door, "/api/status").await.0 == 200).then_some(())
        })
        .await;
        assert!(served.is_some(), "slots were not given back");
    }
);

netns_test!(
    stalled_connections_neither_crash_the_daemon_nor_stop_a_call,
    Net::LoopbackOnly,
    {
        raise_own_fd_limit(8192);
        let profile = light_profile("stall-door", "");
        let cfg = config_file("stall-door", "client_timeout_secs = 3\n");
        let door = Proc::daemon("stall-door", &profile, &["--config", &cfg]);
        let pid = door.pid();
        let fds_before = fds_of(pid);
        let visitor = visitor_of(&door, "stall-visitor").await;
        let session = place_call(&visitor, "stall-door").await;
        let before = wait_call(&door, &session, "media", media_and_pings_flow).await;
        // 2 000 half-sent requests from 4 hosts: each host gets its 64 slots, the rest are
        // closed at once, and everyone else still gets in.
        let port: u16 = door
            .addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        let mut held = Vec::new();
        for i in 0..2000u32 {
            let from = format!("127.0.1.{}", 1 + i % 4);
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .bind(format!("{from}:0").parse().expect("addr"))
                .expect("bind");
            let to: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(2), socket.connect(to)).await
            else {
                continue;
            };
            let mut stream = stream.into_std().expect("std stream");
            stream.set_nonblocking(false).expect("blocking");
            let _ = stream.write_all(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n");
            held.push(stream);
        }
        eprintln!("{} stalled connections opened", held.len());
        // The daemon answers, the running call goes on, and a new call works.
        let (code, took) = timed_get(&door, "/api/status").await;
        assert_eq!(code, 200);
        eprintln!("/api/status with the stalled connections: {took:?}");
        let frames = before["video_frames"].as_u64().unwrap_or(0);
        wait_call(&door, &session, "the running call to go on", |c| {
            c["video_frames"].as_u64().unwrap_or(0) > frames + 30
        })
        .await;
        a_call_works(&door, "stall-visitor2").await;
        let peak = fds_of(pid);
        // Every stalled connection is closed by the daemon within its bound (3 s) — or was
        // refused at once.
        let closed_by = Instant::now() + Duration::from_secs(6);
        let mut still_open = 0;
        for stream in &mut held {
            let left = closed_by
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            stream.set_read_timeout(Some(left)).expect("timeout");
            let mut buf = [0u8; 512];
            let closed = loop {
                match stream.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(_) => continue,
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        break false;
                    }
                    Err(_) => break true,
                }
            };
            if !closed {
                still_open += 1;
            }
        }
        assert_eq!(still_open, 0, "stalled connections the daemon never closed");
        drop(held);
        let fds_after = wait_for(
            "descriptors back to normal",
            Duration::from_secs(10),
            || async {
                let n = fds_of(pid);
                (n <= fds_before + 40).then_some(n)
            },
        )
        .await;
        eprintln!("daemon fds: before {fds_before}, peak {peak}, after {fds_after}");
    }
);

fn raise_own_fd_limit(want: u64) {
    let limit = libc::rlimit {
        rlim_cur: want,
        rlim_max: want,
    };
    // SAFETY: setrlimit reads the struct; as root (the namespace) raising the hard limit works.
    let ok = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0;
    assert!(ok, "could not raise the open-file limit to {want}");
}

netns_test!(
    idle_silent_and_non_reading_websockets_are_closed,
    Net::LoopbackOnly,
    {
        let profile = light_profile("ws-door", "");
        let cfg = config_file("ws-door", "client_timeout_secs = 2\n");
        let door = Proc::daemon("ws-door", &profile, &["--config", &cfg]);
        // Never registers: closed after 2 s.
        let started = Instant::now();
        let mut idle = ws_from("127.0.0.2", &door).await;
        assert!(next_json(&mut idle, Duration::from_secs(6)).await.is_none());
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1800) && took < Duration::from_secs(5),
            "closed after {took:?}"
        );

        // Registers, then never reads while another peer sends it 60 KiB offers: its writer times
        // out, it is dropped (the sender is not), and everyone hears peer-left.
        let _sink = register("127.0.0.3", &door, "sink").await;
        let flooder = register("127.0.0.4", &door, "flooder").await;
        let (mut tx, mut rx) = flooder.split();
        let sdp = "v=0 ".to_string() + &"x".repeat(60 * 1024);
        let writer = tokio::spawn(async move {
            // Paced under the rate limit (200/s): 40/s for at most 30 s.
            for i in 0..1200 {
                let offer =
                    json!({"type": "offer", "to": "sink", "session": format!("s{i}"), "sdp": sdp});
                if tx.send(Frame::text(offer.to_string())).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut sink_left = false;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, rx.next()).await {
            if let Frame::Text(text) = frame {
                let v: Value = serde_json::from_str(text.as_str()).expect("JSON");
                if v == json!({"type": "peer-left", "id": "sink"}) {
                    sink_left = true;
                    break;
                }
            }
        }
        writer.abort();
        assert!(
            sink_left,
            "the peer that stopped reading was dropped within 30 s"
        );
        assert_eq!(status(&door).await["registered"], true);
    }
);

netns_test!(
    the_link_to_a_frozen_or_restarted_relay_recovers,
    Net::LoopbackOnly,
    {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut relay = Proc::relay("link-relay", &listen, &["--keepalive-secs", "1"]);
        let url = relay.ws_url();
        let profile = light_profile("link-door", "");
        let cfg = config_file("link-door", "keepalive_secs = 1\n");
        let door = Proc::daemon("link-door", &profile, &["--config", &cfg, "--relay", &url]);
        let visitor = Proc::daemon(
            "link-visitor",
            &profile,
            &["--config", &cfg, "--relay", &url],
        );
        wait_peer(&visitor, "link-door").await;

        // Frozen: the TCP connection stays up, nothing answers.
        relay.signal("STOP");
        let frozen = Instant::now();
        wait_for(
            "the door to notice the frozen relay",
            Duration::from_secs(8),
            || async {
                let (code, body) = api_client::request("GET", &door.api("/healthz"), None, None)
                    .await
                    .ok()?;
                (code == 503 && body.contains("not registered")).then_some(())
            },
        )
        .await;
        eprintln!("frozen relay noticed after {:?}", frozen.elapsed());
        relay.signal("CONT");
        wait_peer(&visitor, "link-door").await;

        // Killed and started again on the same address.
        relay.kill();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let relay = Proc::relay("link-relay", &listen, &["--keepalive-secs", "1"]);
        let back = Instant::now();
        wait_for(
            "the door to register again",
            Duration::from_secs(5),
            || async { (status(&door).await["registered"] == true).then_some(()) },
        )
        .await;
        eprintln!(
            "re-registered {:?} after the relay was back",
            back.elapsed()
        );
        wait_peer(&visitor, "link-door").await;
        let session = place_call(&visitor, "link-door").await;
        assert_call_works(&visitor, &door, &session).await;
        drop(relay);
    }
);

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The hangup for `session` on `ws`, within 10 s.
async fn hangup_for(ws: &mut Ws, session: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(v) = next_json(ws, Duration::from_secs(10)).await
            && v["type"] == "hangup"
            && v["session"] == session
        {
            return v;
        }
    }
    panic!("no hangup for {session}");
}

netns_test!(
    hostile_offers_end_with_bad_sdp_and_bounded_threads,
    Net::LoopbackOnly,
    {
        let profile = light_profile("sdp-door", "");
        let door = Proc::daemon("sdp-door", &profile, &[]);
        let threads_before = threads_of(door.pid());
        let mut ghost = register("127.0.0.2", &door, "ghost").await;
        let offers = [
            ("not-sdp", "hello, I am not SDP".to_string()),
            (
                "no-mlines",
                "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".to_string(),
            ),
            ("too-many", audio_offer(200)),
            // Only a codec the device does not know: refused, never answered inactive.
            (
                "h265-only",
                "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
                 m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
                 a=rtpmap:96 H265/90000\r\na=sendrecv\r\n"
                    .to_string(),
            ),
        ];
        let mut peak = threads_before;
        for (session, sdp) in offers {
            send(
                &mut ghost,
                json!({"type": "call", "to": "sdp-door", "session": session}),
            )
            .await;
            send(
                &mut ghost,
                json!({"type": "offer", "to": "sdp-door", "session": session, "sdp": sdp}),
            )
            .await;
            let hangup = hangup_for(&mut ghost, session).await;
            peak = peak.max(threads_of(door.pid()));
            assert_eq!(hangup["reason"], "bad-sdp", "{session}: {hangup}");
            let message = hangup["message"].as_str().unwrap_or("");
            assert!(
                !message.is_empty() && !message.contains("0x"),
                "{session}: {hangup}"
            );
            eprintln!("{session}: {message}");
        }
        assert!(
            peak < threads_before + 40,
            "threads: {threads_before} → {peak}"
        );
        wait_idle(&door).await;
        // A real offer is still answered.
        send(
            &mut ghost,
            json!({"type": "call", "to": "sdp-door", "session": "good"}),
        )
        .await;
        send(
            &mut ghost,
            json!({"type": "offer", "to": "sdp-door", "session": "good", "sdp": audio_offer(1)}),
        )
        .await;
        let answered = loop {
            match next_json(&mut ghost, Duration::from_secs(10)).await {
                Some(v) if v["type"] == "answer" => break true,
                Some(v) if v["type"] == "hangup" => panic!("refused: {v}"),
                Some(_) => continue,
                None => break false,
            }
        };
        assert!(answered, "a valid offer gets an answer");
        // The peer vanishes mid-negotiation (its socket closes): the session is gone within 5 s.
        drop(ghost);
        let gone = Instant::now();
        wait_idle(&door).await;
        assert!(
            gone.elapsed() < Duration::from_secs(5),
            "gone after {:?}",
            gone.elapsed()
        );
        a_call_works(&door, "sdp-visitor").await;
    }
);

netns_test!(
    a_peer_frozen_mid_call_is_hung_up_within_10_s,
    Net::LoopbackOnly,
    {
        let profile = light_profile("freeze-door", "");
        let cfg = config_file("freeze-door", "keepalive_secs = 2\n");
        let door = Proc::daemon("freeze-door", &profile, &["--config", &cfg]);
        let visitor = visitor_of(&door, "freeze-visitor").await;
        let session = place_call(&visitor, "freeze-door").await;
        wait_call(&door, &session, "connected", |c| c["state"] == "connected").await;
        // Signaling and media both fall silent.
        visitor.signal("STOP");
        let frozen = Instant::now();
        wait_for(
            "the frozen peer's call to end",
            Duration::from_secs(12),
            || async { calls(&door).await.is_empty().then_some(()) },
        )
        .await;
        let took = frozen.elapsed();
        eprintln!("frozen peer's call ended after {took:?}");
        assert!(took <= Duration::from_secs(10), "{took:?}");
        visitor.signal("CONT");
        drop(visitor);
        wait_idle(&door).await;
        a_call_works(&door, "freeze-visitor2").await;
    }
);

netns_test!(
    a_camera_that_blocks_in_its_start_stalls_nothing_else,
    Net::LoopbackOnly,
    {
        // Opening a FIFO for reading blocks until a writer comes: a camera that takes its time.
        let fifo = artifacts_dir().join("slow-camera.fifo");
        let _ = std::fs::remove_file(&fifo);
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        let profile = write_profile(
            "slow-camera",
            &format!(
                "name = \"slow-camera\"\n[video]\nsource = \"launch\"\n\
             launch = \"filesrc location={} ! queue ! rawvideoparse width=320 height=240 format=i420 framerate=30/1\"\n\
             width = 320\nheight = 240\nframerate = 30\ncodecs = [\"vp8\"]\nbitrate_kbps = 300\n\
             [audio]\nsource = \"test\"\ncodecs = [\"opus\"]\n",
                fifo.display()
            ),
        );
        let door = Proc::daemon("slow-camera", &profile, &[]);
        let visitor = visitor_of(&door, "slow-visitor").await;
        let session = place_call(&visitor, "slow-camera").await;
        // The door's camera is now opening (and will not finish until we write).
        wait_for(
            "the camera to be starting",
            Duration::from_secs(10),
            || async {
                let s = status(&door).await;
                let starting = s["shared_streams"]
                    .as_array()
                    .is_some_and(|v| v.iter().any(|st| st["state"] == "starting"));
                starting.then_some(())
            },
        )
        .await;
        let mut slowest = Duration::ZERO;
        for _ in 0..10 {
            for path in ["/api/status", "/healthz", "/api/calls"] {
                let (code, took) = timed_get(&door, path).await;
                assert_eq!(code, 200, "{path}");
                slowest = slowest.max(took);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("slowest answer while the camera was blocked: {slowest:?}");
        assert!(slowest < Duration::from_millis(500), "{slowest:?}");
        // The camera opens at last: frames flow to the caller.
        let writer = std::thread::spawn(move || {
            let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&fifo) else {
                return;
            };
            let frame = vec![128u8; 320 * 240 * 3 / 2];
            for _ in 0..(30 * 8) {
                if f.write_all(&frame).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(33));
            }
        });
        wait_call(&visitor, &session, "video from the slow camera", |c| {
            c["video_frames"].as_u64().unwrap_or(0) >= 10
        })
        .await;
        drop(door);
        let _ = writer.join();
    }
);

// A peer that restarts ICE over and over (an offer with new credentials, again and again, in
// the same session) gets one restart answered at a time: the rest are ignored, the daemon
// stays with one session and bounded threads.
netns_test!(
    a_flood_of_ice_restarts_is_answered_at_most_once_per_gap,
    Net::LoopbackOnly,
    {
        let door = Proc::daemon("restart-door", &light_profile("restart-door", ""), &[]);
        let threads_before = threads_of(door.pid());
        let mut ghost = register("127.0.0.2", &door, "restarter").await;
        let session = "restarts";
        send(
            &mut ghost,
            json!({"type": "call", "to": "restart-door", "session": session}),
        )
        .await;
        let offer =
            |ufrag: &str| audio_offer(1).replace("ice-ufrag:abcd", &format!("ice-ufrag:{ufrag}"));
        send(
            &mut ghost,
            json!({"type": "offer", "to": "restart-door", "session": session, "sdp": offer("abcd")}),
        )
        .await;
        for i in 0..30 {
            send(
                &mut ghost,
                json!({"type": "offer", "to": "restart-door", "session": session,
                       "sdp": offer(&format!("r{i:03}"))}),
            )
            .await;
        }
        let mut answers = 0;
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            match next_json(&mut ghost, Duration::from_millis(500)).await {
                Some(v) if v["type"] == "answer" => answers += 1,
                Some(v) if v["type"] == "hangup" => panic!("hung up: {v}"),
                _ => {}
            }
        }
        let call = wait_call(&door, session, "the call", |_| true).await;
        eprintln!("30 restart offers in a burst: {answers} answers; {call}");
        // The first offer's answer, and at most one restart (the first comes within the gap).
        assert!((1..=2).contains(&answers), "{answers} answers");
        assert!(call["ice_restarts"].as_u64().unwrap_or(0) <= 1, "{call}");
        assert!(threads_of(door.pid()) < threads_before + 40);
    }
);
