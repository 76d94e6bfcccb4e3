//! The intercom: calls that ring until someone accepts or rejects them (`answer = "ring"`),
//! between real daemons over a real relay, 127.0.0.1 only.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A ringing door station (light profile, one call at a time) with `top` added.
fn ringing_profile(name: &str, top: &str) -> std::path::PathBuf {
    light_profile(name, &format!("answer = \"ring\"\nmax_sessions = 1\n{top}"))
}

fn frames(call: &Value) -> u64 {
    call["video_frames"].as_u64().unwrap_or(0)
}

/// The call `session` on `p`, if it is still there.
async fn find_call(p: &Proc, session: &str) -> Option<Value> {
    calls(p).await.into_iter().find(|c| c["session"] == session)
}

/// Polls (every 10 ms, at most `within`) until `p`'s side of `session` has decoded a video
/// frame.
async fn time_to_first_frame(p: &Proc, session: &str, within: Duration) {
    let started = Instant::now();
    while started.elapsed() < within {
        if find_call(p, session).await.is_some_and(|c| frames(&c) > 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no video frame on {} within {within:?}", p.name);
}

/// The call rings on both sides, the callee's encoders start while it rings, and it answers
/// early (the daemon's caller asks, protocol 1.2): the connection and the DataChannel come up
/// while it rings, but no media flows either way until someone accepts; then media and the
/// DataChannel work as in any call. Accept → first frame is compared with a cold call to a
/// door that answers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ringing_call_connects_only_once_accepted_and_its_media_is_warm() {
    let _serial = serial().await;
    let door = Proc::daemon("ring-door", &ringing_profile("ring-door", ""), &[]);
    let caller_profile = light_profile("ring-caller", "");
    let alice = Proc::daemon("ring-alice", &caller_profile, &["--relay", &door.ws_url()]);
    wait_peer(&alice, "ring-door").await;
    let session = place_call(&alice, "ring-door").await;
    wait_call(&door, &session, "ringing", |c| c["state"] == "ringing").await;
    wait_call(&alice, &session, "ringing (caller)", |c| {
        c["state"] == "ringing"
    })
    .await;
    // Warm while ringing: the door's shared video and audio encoders run, with no viewer.
    wait_for(
        "the ringing door's encoders to run",
        Duration::from_secs(10),
        || async {
            let s = status(&door).await;
            (s["encoders"]["video"] == 1 && s["encoders"]["audio"] == 1).then_some(())
        },
    )
    .await;
    // Answered early: connected under the ringing (the DataChannel runs over DTLS, and its
    // keepalives pass)...
    for (p, side) in [(&alice, "caller"), (&door, "door")] {
        wait_for(
            &format!("the {side}'s DataChannel to open while it rings"),
            Duration::from_secs(10),
            || async {
                find_call(p, &session).await.filter(|c| {
                    c["datachannel"] == "open" && c["pongs_received"].as_u64().unwrap_or(0) > 0
                })
            },
        )
        .await;
    }
    // ...but nothing flows, however long it rings.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for p in [&alice, &door] {
        let ringing = find_call(p, &session).await.expect("still ringing");
        assert_eq!(frames(&ringing), 0, "video before accept: {ringing}");
        assert_eq!(
            ringing["audio_buffers"], 0,
            "audio before accept: {ringing}"
        );
        assert_eq!(ringing["state"], "ringing", "{ringing}");
        let rtp = &ringing["rtp_packets"];
        assert_eq!(rtp["video_received"], 0, "{}: {ringing}", p.name);
        assert_eq!(rtp["audio_received"], 0, "{}: {ringing}", p.name);
    }
    assert!(door.log_text().contains("answered early"));
    // Decisions are for ringing callees only.
    assert_eq!(
        post_status(&alice, &format!("/api/calls/{session}/accept")).await,
        409,
        "the caller has nothing to accept"
    );
    assert_eq!(post_status(&door, "/api/calls/nosuch/accept").await, 404);

    let started = Instant::now();
    assert_eq!(
        post_status(&door, &format!("/api/calls/{session}/accept")).await,
        204
    );
    time_to_first_frame(&alice, &session, Duration::from_secs(20)).await;
    let accepted = started.elapsed();
    assert_call_works(&alice, &door, &session).await;
    assert_eq!(
        post_status(&door, &format!("/api/calls/{session}/accept")).await,
        409,
        "a connected call is not ringing"
    );
    assert_eq!(hang_up(&alice, &session).await, 204);
    wait_idle(&alice).await;
    wait_idle(&door).await;

    // A cold call to a door that answers at once (its encoders not running): call → first
    // frame, to compare.
    let cold_door = Proc::daemon(
        "cold-door",
        &light_profile("cold-door", ""),
        &["--relay", &door.ws_url()],
    );
    wait_peer(&alice, "cold-door").await;
    let started = Instant::now();
    let cold_session = place_call(&alice, "cold-door").await;
    time_to_first_frame(&alice, &cold_session, Duration::from_secs(20)).await;
    let cold = started.elapsed();
    eprintln!(
        "first frame: accept → {} ms (encoders warmed while ringing); cold call → {} ms",
        accepted.as_millis(),
        cold.as_millis()
    );
    // A plain call on a clean link logs no GStreamer-CRITICAL (each keyframe request made
    // one: a NULL unref after our keyframe probe dropped the event).
    for p in [&door, &alice, &cold_door] {
        let log = p.log_text();
        assert!(!log.contains("GStreamer-CRITICAL"), "{}: {log}", p.name);
    }
}

/// Every way a ringing call ends without being accepted, with the reason each side records,
/// and `busy` for a second caller while one rings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ringing_calls_end_rejected_unanswered_or_cancelled_and_others_hear_busy() {
    let _serial = serial().await;
    let door = Proc::daemon(
        "ring-door2",
        &ringing_profile("ring-door2", "ring_timeout_secs = 2"),
        &[],
    );
    let caller_profile = light_profile("ring-callers", "");
    let alice = Proc::daemon("ring-alice2", &caller_profile, &["--relay", &door.ws_url()]);
    let bob = Proc::daemon("ring-bob2", &caller_profile, &["--relay", &door.ws_url()]);
    wait_peer(&alice, "ring-door2").await;
    wait_peer(&bob, "ring-door2").await;

    // Rejected: both sides end with `rejected`.
    let session = place_call(&alice, "ring-door2").await;
    wait_call(&door, &session, "ringing", |c| c["state"] == "ringing").await;
    // While it rings, a second caller is told `busy` (max_sessions = 1).
    let second = place_call(&bob, "ring-door2").await;
    wait_for("bob's call to end", Duration::from_secs(15), || async {
        find_call(&bob, &second).await.is_none().then_some(())
    })
    .await;
    assert_eq!(ended_with(&bob, "busy").await, 1);
    assert_eq!(
        post_status(&door, &format!("/api/calls/{session}/reject")).await,
        204
    );
    wait_idle(&door).await;
    wait_idle(&alice).await;
    assert_eq!(ended_with(&door, "rejected").await, 1);
    assert_eq!(ended_with(&alice, "rejected").await, 1);

    // Nobody decides within ring_timeout_secs: `no-answer` on both sides.
    let started = Instant::now();
    let session = place_call(&alice, "ring-door2").await;
    wait_call(&door, &session, "ringing", |c| c["state"] == "ringing").await;
    wait_idle(&door).await;
    wait_idle(&alice).await;
    let rang = started.elapsed();
    assert!(rang >= Duration::from_secs(2), "ended after {rang:?}");
    assert_eq!(ended_with(&door, "no-answer").await, 1);
    assert_eq!(ended_with(&alice, "no-answer").await, 1);

    // The caller hangs up while it rings: `cancelled` on both sides.
    let session = place_call(&alice, "ring-door2").await;
    wait_call(&alice, &session, "ringing (caller)", |c| {
        c["state"] == "ringing"
    })
    .await;
    assert_eq!(hang_up(&alice, &session).await, 204);
    wait_idle(&door).await;
    wait_idle(&alice).await;
    assert_eq!(ended_with(&door, "cancelled").await, 1);
    assert_eq!(ended_with(&alice, "cancelled").await, 1);
    let _ = bob;
}

/// A ringing call is decided once: an accept and a reject sent together, one wins (204), the
/// other hears 409. A second caller reusing the ringing call's session id is refused with
/// `session-taken` and cannot shadow it (accept still names one call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ringing_call_is_decided_once_and_its_id_cannot_be_shadowed() {
    let _serial = serial().await;
    let door = Proc::daemon(
        "ring-once",
        &ringing_profile("ring-once", "ring_timeout_secs = 30"),
        &[],
    );
    let alice = Proc::daemon(
        "ring-once-alice",
        &light_profile("ring-once-callers", ""),
        &["--relay", &door.ws_url()],
    );
    wait_peer(&alice, "ring-once").await;
    let mut winners = std::collections::BTreeMap::new();
    for round in 0..6 {
        let session = place_call(&alice, "ring-once").await;
        wait_call(&door, &session, "ringing", |c| c["state"] == "ringing").await;
        if round == 0 {
            // Another caller picks the same session id: refused, the ringing call untouched.
            let mut mallory = common::ws::register(&door.ws_url(), "mallory").await;
            common::ws::send(
                &mut mallory,
                serde_json::json!({"type": "call", "to": "ring-once", "session": session}),
            )
            .await;
            let reply = common::ws::recv_within(&mut mallory, Duration::from_secs(5)).await;
            assert_eq!(reply["type"], "hangup", "{reply}");
            assert_eq!(reply["reason"], "session-taken", "{reply}");
            assert_eq!(calls(&door).await.len(), 1, "no second call under that id");
        }
        let (accept_path, reject_path) = (
            format!("/api/calls/{session}/accept"),
            format!("/api/calls/{session}/reject"),
        );
        let accept = post_status(&door, &accept_path);
        let reject = post_status(&door, &reject_path);
        let (accepted, rejected) = tokio::join!(accept, reject);
        let mut statuses = [accepted, rejected];
        statuses.sort();
        assert_eq!(statuses, [204, 409], "accept {accepted}, reject {rejected}");
        *winners
            .entry(if accepted == 204 { "accept" } else { "reject" })
            .or_insert(0) += 1;
        hang_up(&door, &session).await;
        wait_idle(&door).await;
        wait_idle(&alice).await;
    }
    eprintln!("decisions that won: {winners:?}");
    let _ = alice;
}

/// A door that takes two calls at once rings for both: the second caller is not told `busy`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_door_that_takes_two_calls_rings_for_a_second_caller() {
    let _serial = serial().await;
    let door = Proc::daemon(
        "ring-door4",
        &light_profile("ring-door4", "answer = \"ring\"\nmax_sessions = 2"),
        &[],
    );
    let caller_profile = light_profile("ring-callers4", "");
    let alice = Proc::daemon("ring-alice4", &caller_profile, &["--relay", &door.ws_url()]);
    let bob = Proc::daemon("ring-bob4", &caller_profile, &["--relay", &door.ws_url()]);
    wait_peer(&alice, "ring-door4").await;
    wait_peer(&bob, "ring-door4").await;
    let first = place_call(&alice, "ring-door4").await;
    wait_call(&door, &first, "ringing", |c| c["state"] == "ringing").await;
    let second = place_call(&bob, "ring-door4").await;
    wait_call(&door, &second, "the second ringing", |c| {
        c["state"] == "ringing"
    })
    .await;
    wait_call(&bob, &second, "ringing (second caller)", |c| {
        c["state"] == "ringing"
    })
    .await;
    assert_eq!(ended_with(&bob, "busy").await, 0);
    for session in [&first, &second] {
        assert_eq!(
            post_status(&door, &format!("/api/calls/{session}/reject")).await,
            204
        );
    }
    wait_idle(&door).await;
    assert_eq!(ended_with(&door, "rejected").await, 2);
}

/// `answer = "reject"` (do not disturb): every call is refused with `rejected`, and no
/// session or pipeline is made for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_door_that_rejects_every_call_makes_nothing_for_it() {
    let _serial = serial().await;
    let door = Proc::daemon(
        "dnd-door",
        &light_profile("dnd-door", "answer = \"reject\""),
        &[],
    );
    let alice = Proc::daemon(
        "dnd-alice",
        &light_profile("dnd-alice", ""),
        &["--relay", &door.ws_url()],
    );
    wait_peer(&alice, "dnd-door").await;
    let session = place_call(&alice, "dnd-door").await;
    wait_for(
        "the refused call to end",
        Duration::from_secs(15),
        || async { find_call(&alice, &session).await.is_none().then_some(()) },
    )
    .await;
    assert_eq!(ended_with(&alice, "rejected").await, 1);
    let s = status(&door).await;
    assert_eq!(s["pipelines"], 0, "{s}");
    assert_eq!(
        ended_with(&door, "rejected").await,
        0,
        "no session was started"
    );
}

// ---- the DataChannel bridge ------------------------------------------------------------------

/// A daemon config with a bridge socket at `socket` (and `extra`).
fn bridge_config(name: &str, socket: &std::path::Path, extra: &str) -> String {
    config_file(
        name,
        &format!("[bridge]\nsocket = '{}'\n{extra}", socket.display()),
    )
}

/// Connects to a bridge socket (waiting, bounded, for the daemon to make it).
async fn bridge_client(socket: &std::path::Path) -> tokio::net::UnixStream {
    wait_for("the bridge socket", Duration::from_secs(10), || async {
        tokio::net::UnixStream::connect(socket).await.ok()
    })
    .await
}

/// Reads JSON lines from a bridge client until one satisfies `accept` (bounded).
async fn bridge_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>>,
    what: &str,
    accept: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = tokio::time::timeout(left, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no {what} on the bridge within 15 s"))
            .expect("read")
            .unwrap_or_else(|| panic!("the bridge closed before {what}"));
        let value: Value = serde_json::from_str(&line).expect("a JSON line");
        if accept(&value) {
            return value;
        }
    }
}

/// A local program floods the bridge socket: 300 connections at once, some writing garbage
/// or a line past 64 KiB. At most 16 are served (the rest are closed at once), garbage is
/// answered, an oversized line ends its client, the daemon logs no line per refusal, and
/// once the flood is gone a client is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_the_bridge_socket_is_bounded_and_passes() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let _serial = serial().await;
    let socket = artifacts_dir().join("bridge-flood.sock");
    let door = Proc::daemon(
        "bridge-flood",
        &light_profile("bridge-flood", ""),
        &["--config", &bridge_config("bridge-flood", &socket, "")],
    );
    let first = bridge_client(&socket).await;
    let mut held = vec![first];
    for _ in 0..300 {
        if let Ok(stream) = tokio::net::UnixStream::connect(&socket).await {
            held.push(stream);
        }
    }
    // Served: still open a moment later; refused: closed (EOF) at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut open = Vec::new();
    for mut stream in held {
        let mut byte = [0u8; 1];
        // Nothing to read within 20 ms: still open (a refused one reads EOF at once).
        let read = tokio::time::timeout(Duration::from_millis(20), stream.read(&mut byte)).await;
        if read.is_err() {
            open.push(stream);
        }
    }
    assert_eq!(open.len(), 16, "bridge clients served at once");
    // Garbage is answered; a line past 64 KiB ends its client.
    let (read, mut write) = open.pop().expect("a client").into_split();
    let mut lines = tokio::io::BufReader::new(read).lines();
    write.write_all(b"\x01 not json\n").await.expect("write");
    let reply = bridge_line(&mut lines, "an error", |v| v["error"].is_string()).await;
    assert!(reply["error"].is_string(), "{reply}");
    let (read, mut write) = open.pop().expect("a client").into_split();
    let _ = write.write_all(&vec![b'x'; 70 * 1024]).await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::BufReader::new(read).read_to_end(&mut rest),
    )
    .await;
    assert!(
        closed.is_ok(),
        "a client past the line limit was not closed"
    );
    let log = door.log_text();
    assert!(
        log.contains("bridge client dropped: a line too long"),
        "{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("too many clients") && !l.contains("DEBUG")),
        "a refusal is logged at debug only (a local flood must not flood the journal)"
    );
    // Gone: a new client is served.
    drop(open);
    drop(lines);
    let answered = poll(Duration::from_secs(10), || async {
        let stream = tokio::net::UnixStream::connect(&socket).await.ok()?;
        let (read, mut write) = stream.into_split();
        write
            .write_all(b"{\"session\": \"none\", \"data\": \"hi\"}\n")
            .await
            .ok()?;
        let mut lines = tokio::io::BufReader::new(read).lines();
        let line = tokio::time::timeout(Duration::from_secs(1), lines.next_line())
            .await
            .ok()?
            .ok()??;
        serde_json::from_str::<Value>(&line).ok()
    })
    .await;
    let answered = answered.expect("a client served once the flood has gone");
    assert_eq!(answered["error"], "no such call", "{answered}");
}

/// Two daemons with bridges: a program on the caller's side asks the door to open over the
/// call's DataChannel; the shipped example (examples/door-relay.py) on the door's bridge
/// receives it, "opens" (runs its command) and answers, and the answer reaches the caller's
/// program. A bridge client that never reads is dropped, and the call's ping/pong never
/// waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_carries_datachannel_messages_to_local_programs_and_back() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let _serial = serial().await;
    let dir = artifacts_dir().join("bridge");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bridge dir");
    let door_socket = dir.join("door.sock");
    let alice_socket = dir.join("alice.sock");
    let opened = dir.join("opened");
    let door = Proc::daemon(
        "bridge-door",
        &light_profile("bridge-door", ""),
        &["--config", &bridge_config("bridge-door", &door_socket, "")],
    );
    let alice = Proc::daemon(
        "bridge-alice",
        &light_profile("bridge-alice", ""),
        &[
            "--relay",
            &door.ws_url(),
            "--config",
            &bridge_config("bridge-alice", &alice_socket, ""),
        ],
    );
    // Only the daemon's user and group may connect.
    let _ = bridge_client(&door_socket).await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&door_socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660, "socket mode {mode:o}");

    // The door's program: the shipped example, opening the "door" by touching a file.
    let mut relay = std::process::Command::new("python3")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/door-relay.py"))
        .args(["--once", "--socket"])
        .arg(&door_socket)
        .arg("--command")
        .arg(format!("touch {}", opened.display()))
        .args(["--allow", "bridge-alice"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 examples/door-relay.py");
    // Connected before anything is sent (Python may take a while to start). Its output is
    // read to the end (a closed pipe would kill it).
    let stdout = relay.stdout.take().expect("stdout");
    let (said, mut lines_said) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            let _ = said.send(line);
        }
    });
    let first = tokio::time::timeout(Duration::from_secs(20), lines_said.recv())
        .await
        .expect("door-relay.py to connect within 20 s")
        .expect("a line from door-relay.py");
    assert!(first.starts_with("connected to"), "door-relay.py: {first}");
    // A program that never reads.
    let stuck = bridge_client(&door_socket).await;
    let (read, mut write) = bridge_client(&alice_socket).await.into_split();
    let mut lines = tokio::io::BufReader::new(read).lines();

    wait_peer(&alice, "bridge-door").await;
    let session = place_call(&alice, "bridge-door").await;
    wait_call(&alice, &session, "an open DataChannel", |c| {
        c["datachannel"] == "open" && c["pongs_received"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    let open = serde_json::json!({"session": session, "data": {"type": "open"}}).to_string();
    write
        .write_all(format!("{open}\n").as_bytes())
        .await
        .expect("write");
    let answer = bridge_line(&mut lines, "the door's answer", |v| v["session"] == session).await;
    assert_eq!(answer["peer"], "bridge-door", "{answer}");
    let data: Value = serde_json::from_str(answer["data"].as_str().expect("text")).expect("JSON");
    assert_eq!(data["type"], "opened", "{answer}");
    assert!(opened.exists(), "the door command ran");
    // A line without a session goes to every call (here, the one).
    std::fs::remove_file(&opened).expect("remove the door's mark");
    write
        .write_all(b"{\"data\": {\"type\": \"open\"}}\n")
        .await
        .expect("write");
    let answer = bridge_line(
        &mut lines,
        "the door's answer to a line for every call",
        |v| v["session"] == session,
    )
    .await;
    let data: Value = serde_json::from_str(answer["data"].as_str().expect("text")).expect("JSON");
    assert_eq!(data["type"], "opened", "{answer}");
    assert!(opened.exists(), "the door command ran again");
    // Unusable lines are answered, not fatal.
    write.write_all(b"not json\n").await.expect("write");
    let error = bridge_line(&mut lines, "an error line", |v| v.get("error").is_some()).await;
    assert!(
        error["error"].as_str().unwrap_or("").contains("expected"),
        "{error}"
    );
    write
        .write_all(b"{\"session\": \"nosuch\", \"data\": \"x\"}\n")
        .await
        .expect("write");
    let error = bridge_line(&mut lines, "no such call", |v| v.get("error").is_some()).await;
    assert_eq!(error["error"], "no such call");

    // Fill the stuck client's socket: 600 messages of 1 kB reach the door (paced: a call's
    // queue is bounded), more than a Unix socket buffers.
    let pongs_before = find_call(&door, &session).await.expect("call")["pongs_received"]
        .as_u64()
        .unwrap_or(0);
    let filler = "x".repeat(1000);
    for i in 0..600 {
        let line = serde_json::json!({"session": session, "data": format!("{i} {filler}")});
        write
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    wait_for(
        "the stuck client to be dropped",
        Duration::from_secs(15),
        || async {
            door.log_text()
                .contains("bridge client dropped: it stopped reading")
                .then_some(())
        },
    )
    .await;
    // The call went on answering pings all along, and still does.
    let call = wait_call(&door, &session, "more pongs", |c| {
        c["pongs_received"].as_u64().unwrap_or(0) >= pongs_before + 3
    })
    .await;
    assert_eq!(call["state"], "connected", "{call}");
    assert!(
        call["rtt_ms"].as_f64().unwrap_or(f64::MAX) < 500.0,
        "round trip {call}"
    );
    drop(stuck);
    assert_eq!(hang_up(&alice, &session).await, 204);
    let _ = relay.kill();
    let _ = relay.wait();
}

// ---- hooks and /api/events ---------------------------------------------------------------

/// Writes an executable shell script.
fn script(path: &std::path::Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Whether a process is alive.
fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// A ringing door runs its hooks for `ringing`, `connected` and `ended` with the event as
/// JSON on stdin and in the environment (and none of its own environment); a hook that
/// hangs is killed, with what it started, after its bound; `/api/events` streams the same
/// events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_on_call_events_within_their_bound_and_events_stream() {
    let _serial = serial().await;
    let dir = artifacts_dir().join("hooks");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("hooks dir");
    let record = dir.join("record.sh");
    let events = dir.join("events.log");
    script(
        &record,
        &format!(
            "{{ cat; echo \"env $WEBRTCD_EVENT $WEBRTCD_SESSION $WEBRTCD_PEER $WEBRTCD_ROLE \
             reason=$WEBRTCD_REASON secret=${{HOOK_TEST_SECRET:-none}}\"; }} >> {}",
            events.display()
        ),
    );
    let hang = dir.join("hang.sh");
    let pids = dir.join("pids");
    script(
        &hang,
        &format!("sleep 60 &\necho \"$$ $!\" > {}\nwait", pids.display()),
    );
    let config = config_file(
        "hooks-door",
        &format!(
            "[[hooks]]\non = ['ringing', 'connected', 'ended']\nexec = '{}'\n\
             [[hooks]]\non = ['connected']\nexec = '{}'\ntimeout_secs = 1\n",
            record.display(),
            hang.display()
        ),
    );
    let door = Proc::daemon_env(
        "hooks-door",
        &ringing_profile("hooks-door", ""),
        &["--config", &config],
        &[("HOOK_TEST_SECRET", "hunter2")],
    );
    let alice = Proc::daemon(
        "hooks-alice",
        &light_profile("hooks-alice", ""),
        &["--relay", &door.ws_url()],
    );
    // The event stream, read raw as it comes.
    let (streamed, reader) = event_stream(&door, None).await;

    wait_peer(&alice, "hooks-door").await;
    let session = place_call(&alice, "hooks-door").await;
    wait_call(&door, &session, "ringing", |c| c["state"] == "ringing").await;
    assert_eq!(
        post_status(&door, &format!("/api/calls/{session}/accept")).await,
        204
    );
    wait_call(&door, &session, "connected", |c| c["state"] == "connected").await;
    // The hanging hook started, and is killed (with its child) after its second.
    let (shell, child) = wait_for("the hanging hook", Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(&pids).unwrap_or_default();
        let mut it = text
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok());
        Some((it.next()?, it.next()?))
    })
    .await;
    wait_for(
        "the hanging hook and its child to be killed",
        Duration::from_secs(10),
        || async { (!alive(shell) && !alive(child)).then_some(()) },
    )
    .await;
    assert!(door.log_text().contains("killed"), "the kill is logged");
    assert_eq!(hang_up(&alice, &session).await, 204);
    wait_idle(&door).await;

    let recorded = wait_for("three hook runs", Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        (text.matches("env ").count() >= 3).then_some(text)
    })
    .await;
    let runs: Vec<(Value, &str)> = {
        let lines: Vec<&str> = recorded.lines().collect();
        lines
            .chunks(2)
            .map(|pair| {
                (
                    serde_json::from_str(pair[0]).expect("JSON on stdin"),
                    pair[1],
                )
            })
            .collect()
    };
    let names: Vec<&str> = runs
        .iter()
        .map(|(json, _)| json["event"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["ringing", "connected", "ended"], "{recorded}");
    for (json, env) in &runs {
        assert_eq!(json["session"], session.as_str(), "{json}");
        assert_eq!(json["peer"], "hooks-alice", "{json}");
        assert_eq!(json["role"], "callee", "{json}");
        assert!(
            env.starts_with(&format!(
                "env {} {session} hooks-alice callee",
                json["event"].as_str().unwrap_or("")
            )),
            "{env}"
        );
        assert!(
            env.ends_with("secret=none"),
            "the daemon's environment leaked: {env}"
        );
    }
    assert_eq!(runs[2].0["reason"], "hangup", "{recorded}");
    assert!(runs[2].1.contains("reason=hangup"), "{recorded}");

    // The same events on /api/events.
    let text = wait_for("the streamed events", Duration::from_secs(10), || async {
        let text = streamed.lock().expect("lock").clone();
        text.contains("event: ended").then_some(text)
    })
    .await;
    assert!(text.contains("text/event-stream"), "{text}");
    for name in ["ringing", "connected", "ended"] {
        assert!(
            text.contains(&format!(
                "event: {name}\ndata: {{\"event\":\"{name}\",\"session\":\"{session}\""
            )),
            "{name} not streamed: {text}"
        );
    }
    reader.abort();
}

/// Early answers with hostile ends. A caller that asks `early` and never uses the answer (its
/// ICE never answers) gets the answer in `ringing` and nothing else — no `answer` — and the
/// call rings out, leaving nothing behind. A callee that answers a daemon's call early with
/// garbage ends that call with `bad-sdp`. Both daemons serve a real call afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_answers_with_hostile_ends_end_cleanly() {
    use common::ws::{recv_within, register, send};
    let _serial = serial().await;
    let door = Proc::daemon(
        "early-door",
        &ringing_profile("early-door", "ring_timeout_secs = 3"),
        &[],
    );
    let mut mallory = register(&door.ws_url(), "mallory").await;
    let call =
        serde_json::json!({"type": "call", "to": "early-door", "session": "m1", "early": true});
    send(&mut mallory, call).await;
    let offer = serde_json::json!({"type": "offer", "to": "early-door", "session": "m1", "sdp": audio_offer(1)});
    send(&mut mallory, offer).await;
    let (mut answered_early, mut answered) = (false, false);
    let hangup = loop {
        let v = recv_within(&mut mallory, Duration::from_secs(15)).await;
        match v["type"].as_str() {
            Some("ringing") if v["sdp"].is_string() => answered_early = true,
            Some("answer") => answered = true,
            Some("hangup") => break v,
            _ => {}
        }
    };
    assert!(answered_early, "the early answer in `ringing`");
    assert!(!answered, "an `answer` means accepted: nobody accepted");
    assert_eq!(hangup["reason"], "no-answer", "{hangup}");
    wait_idle(&door).await;

    // Mallory as a callee: a daemon's call to it, answered early with garbage.
    let alice = Proc::daemon(
        "early-alice",
        &light_profile("early-alice", ""),
        &["--relay", &door.ws_url()],
    );
    wait_peer(&alice, "mallory").await;
    let session = place_call(&alice, "mallory").await;
    let call = loop {
        let v = recv_within(&mut mallory, Duration::from_secs(10)).await;
        if v["type"] == "call" {
            break v;
        }
    };
    assert_eq!(
        call["early"], true,
        "a webrtcd caller asks for the early answer: {call}"
    );
    let garbage = serde_json::json!({"type": "ringing", "to": "early-alice", "session": session, "sdp": "v=0\r\nnot an answer"});
    send(&mut mallory, garbage).await;
    let hangup = loop {
        let v = recv_within(&mut mallory, Duration::from_secs(10)).await;
        if v["type"] == "hangup" {
            break v;
        }
    };
    assert_eq!(hangup["reason"], "bad-sdp", "{hangup}");
    wait_idle(&alice).await;

    // Both still serve a real call.
    let session = place_call(&alice, "early-door").await;
    wait_call(&door, &session, "ringing", |c| c["state"] == "ringing").await;
    assert_eq!(
        post_status(&door, &format!("/api/calls/{session}/accept")).await,
        204
    );
    assert_call_works(&alice, &door, &session).await;
}
