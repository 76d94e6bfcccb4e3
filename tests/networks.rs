//! Calls over links that are not perfect, made inside the test's own network namespace (only
//! `lo`, see common/browser.rs): nftables cuts UDP (every ICE path) while signaling, over TCP,
//! stays up. A short cut heals by itself on the same call; a path that stays dead ends the
//! call with reason `network` within `ice_recovery_secs`.

mod common;

use std::time::{Duration, Instant};

use common::browser::Net;
use common::*;
use serde_json::Value;

/// All UDP in the namespace dropped while this lives (nftables, input hook: every packet on
/// `lo` passes it).
struct UdpCut;

impl UdpCut {
    fn start() -> UdpCut {
        input_rule("cut", &["meta", "l4proto", "udp", "drop"]);
        UdpCut
    }

    /// Every ICE path cut: all UDP, and all TCP but to or from `procs`' HTTP ports (signaling
    /// and the API stay up). libnice also gathers ICE-TCP candidates, and a call that restarts
    /// ICE while UDP is gone finds its way over TCP.
    fn all_but_signaling(procs: &[&Proc]) -> UdpCut {
        let cut = UdpCut::start();
        let ports: Vec<&str> = procs
            .iter()
            .filter_map(|p| p.addr.rsplit(':').next())
            .collect();
        let keep = format!("{{ {} }}", ports.join(", "));
        nft(&[
            "add", "rule", "inet", "cut", "input", "meta", "l4proto", "tcp", "tcp", "sport", "!=",
            &keep, "tcp", "dport", "!=", &keep, "drop",
        ]);
        cut
    }
}

impl Drop for UdpCut {
    fn drop(&mut self) {
        nft(&["delete", "table", "inet", "cut"]);
    }
}

/// nftables table `table` with an input chain (every packet on `lo` passes it) holding `rule`.
/// Delete the table to undo it.
fn input_rule(table: &str, rule: &[&str]) {
    nft(&["add", "table", "inet", table]);
    nft(&[
        "add",
        "chain",
        "inet",
        table,
        "input",
        "{ type filter hook input priority 0; }",
    ]);
    let mut args = vec!["add", "rule", "inet", table, "input"];
    args.extend_from_slice(rule);
    nft(&args);
}

fn nft(args: &[&str]) {
    let status = std::process::Command::new("nft")
        .args(args)
        .status()
        .expect("nft (Debian package nftables)");
    assert!(status.success(), "nft {args:?}");
}

fn frames(call: &Value) -> u64 {
    call["video_frames"].as_u64().unwrap_or(0)
}

netns_test!(
    a_cut_heals_on_the_same_call_and_a_dead_path_ends_it,
    Net::LoopbackOnly,
    {
        // Longer than the 8 s cut below and the few seconds it takes to heal after it.
        const RECOVERY_SECS: u64 = 15;
        let config = format!("ice_recovery_secs = {RECOVERY_SECS}\n");
        let (door, visitor, session) = call_between("cut", &config).await;

        // 6 s without any UDP: the call stays, and media flows again soon after.
        let healed = cut_for(Duration::from_secs(6), &[&door, &visitor], &session).await;
        eprintln!("video flowed again {healed:?} after the cut ended");
        assert!(healed <= Duration::from_secs(5), "{healed:?}");
        assert_eq!(ended_with(&door, "network").await, 0);
        // The cut shows as a freeze in what each side received, and the picture is back.
        for p in [&door, &visitor] {
            let call = wait_call(p, &session, "the call", |_| true).await;
            let received = &call["receive"];
            assert!(received["freezes"].as_u64().unwrap_or(0) >= 1, "{call}");
            assert_eq!(received["video_width"], 320, "{call}");
            assert_eq!(received["video_height"], 240, "{call}");
        }

        // A longer cut: the visitor, which offered, restarts ICE while it lasts and the door
        // answers; media flows again soon after, on the same call.
        let healed = cut_for(Duration::from_secs(8), &[&door, &visitor], &session).await;
        eprintln!(
            "after an 8 s cut and an ICE restart, video flowed again {healed:?} after it ended"
        );
        assert!(healed <= Duration::from_secs(5), "{healed:?}");
        for p in [&door, &visitor] {
            let call = wait_call(p, &session, "the call", |_| true).await;
            assert!(call["ice_restarts"].as_u64().unwrap_or(0) >= 1, "{call}");
        }
        assert_eq!(ended_with(&door, "network").await, 0);

        // A cut that does not end: the call ends with `network`, within the bound.
        let _cut = UdpCut::all_but_signaling(&[&door, &visitor]);
        let cut_at = Instant::now();
        wait_for(
            "the dead call to end",
            Duration::from_secs(RECOVERY_SECS + 15),
            || async { (ended_with(&door, "network").await >= 1).then_some(()) },
        )
        .await;
        let ended = cut_at.elapsed();
        eprintln!("dead path ended the call after {ended:?}");
        assert!(ended >= Duration::from_secs(RECOVERY_SECS - 1), "{ended:?}");
        wait_idle(&door).await;
        wait_idle(&visitor).await;
    }
);

/// Cuts every ICE path for `length`, then restores them: how long after the restore every one of
/// `procs` decoded 30 more frames of `session`.
async fn cut_for(length: Duration, procs: &[&Proc], session: &str) -> Duration {
    let cut = UdpCut::all_but_signaling(procs);
    tokio::time::sleep(length).await;
    let mut during = Vec::new();
    for p in procs {
        during.push(frames(&wait_call(p, session, "the call", |_| true).await));
    }
    drop(cut);
    let restored = Instant::now();
    for (p, before) in procs.iter().zip(during) {
        wait_call(p, session, "video after the cut", |c| {
            frames(c) > before + 30
        })
        .await;
    }
    restored.elapsed()
}

/// `PREFIX-door` and `PREFIX-visitor` (on the door's relay), both with config `config`; the
/// visitor has called the door and the call works both ways. Returns them and the session.
async fn call_between(prefix: &str, config: &str) -> (Proc, Proc, String) {
    let door_id = format!("{prefix}-door");
    let visitor_id = format!("{prefix}-visitor");
    let door = Proc::daemon(
        &door_id,
        &light_profile(&door_id, ""),
        &["--config", &config_file(&door_id, config)],
    );
    let visitor = Proc::daemon(
        &visitor_id,
        &light_profile(&visitor_id, ""),
        &[
            "--config",
            &config_file(&visitor_id, config),
            "--relay",
            &door.ws_url(),
        ],
    );
    wait_peer(&visitor, &door_id).await;
    let session = place_call(&visitor, &door_id).await;
    assert_call_works(&visitor, &door, &session).await;
    (door, visitor, session)
}

/// Video frames `p` has decoded in call `session` so far.
async fn frames_of(p: &Proc, session: &str) -> u64 {
    frames(&wait_call(p, session, "the call", |_| true).await)
}

/// `webrtcd run` like [`Proc::daemon`], but with ICE on `ip` only (a path of its own).
fn daemon_at(id: &str, ip: &str, top: &str, extra: &[&str]) -> Proc {
    let profile = light_profile(id, top);
    let mut args = daemon_args(id, &profile, extra);
    // daemon_args binds ICE to 127.0.0.1; this daemon gets its own address instead.
    if let Some(i) = args.iter().position(|a| a == "127.0.0.1") {
        args[i] = ip.to_string();
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::spawn_env(id, &args, &[])
}

/// A camera (profile top-level keys `camera_top`) and two viewers (`viewer_top`: their
/// top-level keys, or a `[receive]` section), one losing 5 % of its UDP packets: 10 s of frames decoded by the
/// lossy and the clean viewer, and the lossy viewer's call as the camera and the viewer see it.
async fn lossy_and_clean(
    prefix: &str,
    camera_top: &str,
    viewer_top: &str,
) -> (u64, u64, Value, Value) {
    let camera_id = format!("{prefix}-camera");
    let camera = Proc::daemon(&camera_id, &light_profile(&camera_id, camera_top), &[]);
    let relay = camera.ws_url();
    let lossy = daemon_at(
        &format!("{prefix}-lossy"),
        "127.0.0.3",
        viewer_top,
        &["--relay", &relay],
    );
    let clean = daemon_at(
        &format!("{prefix}-clean"),
        "127.0.0.4",
        viewer_top,
        &["--relay", &relay],
    );
    let mut sessions = Vec::new();
    for viewer in [&lossy, &clean] {
        wait_peer(viewer, &camera_id).await;
        let session = place_call(viewer, &camera_id).await;
        assert_call_works(viewer, &camera, &session).await;
        sessions.push(session);
    }
    // 5 % of the UDP packets toward the lossy viewer are lost, from now on.
    input_rule(
        "loss",
        &[
            "ip",
            "daddr",
            "127.0.0.3",
            "meta",
            "l4proto",
            "udp",
            "numgen",
            "random",
            "mod",
            "100",
            "<",
            "5",
            "drop",
        ],
    );
    let lossy_start = frames_of(&lossy, &sessions[0]).await;
    let clean_start = frames_of(&clean, &sessions[1]).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let lossy_got = frames_of(&lossy, &sessions[0]).await - lossy_start;
    let clean_got = frames_of(&clean, &sessions[1]).await - clean_start;
    nft(&["delete", "table", "inet", "loss"]);
    let sent = wait_call(&camera, &sessions[0], "the camera's side", |_| true).await;
    eprintln!(
        "{prefix}: 10 s at 5 % loss: lossy viewer {lossy_got} frames, clean viewer {clean_got}; \
         camera: {}",
        sent["send"]
    );
    // Every call's retransmissions are counted in /metrics too.
    let retransmitted = metric(&camera, "webrtcd_packets_retransmitted_total", "").await;
    assert!(
        retransmitted >= sent["send"]["packets_retransmitted"].as_u64().unwrap_or(0),
        "/metrics: {retransmitted}, the call: {}",
        sent["send"]
    );
    let received = wait_call(&lossy, &sessions[0], "the lossy side", |_| true).await;
    eprintln!("{prefix}: the lossy viewer: {}", received["receive"]);
    (lossy_got, clean_got, sent, received)
}

netns_test!(
    lost_packets_are_asked_for_again_and_retransmitted,
    Net::LoopbackOnly,
    {
        // Both wait 300 ms for late packets: time for a retransmission (or two) to arrive.
        let (lossy_got, clean_got, sent, received) =
            lossy_and_clean("loss", "", "[receive]\nlatency_ms = 300\n").await;
        // The viewer's own view of its call: the frame rate it decoded over the last second
        // (30 sent; one second read once, so a freeze in it shows: 17–28 measured).
        assert!(
            received["receive"]["fps"].as_f64().unwrap_or(0.0) >= 10.0,
            "{}",
            received["receive"]
        );
        assert!(
            sent["send"]["nacks_received"].as_u64().unwrap_or(0) > 0,
            "{sent}"
        );
        assert!(
            sent["send"]["packets_retransmitted"].as_u64().unwrap_or(0) > 0,
            "{sent}"
        );
        // With 300 ms to wait, retransmissions arrive in time (measured: 98–100 % of the clean
        // viewer's frames, also with two more such tests at once; 96–100 % with 200 ms, too
        // close to the bound; about 66 % with the default 50 ms). Before the viewer's RTCP
        // budget followed what it receives, its NACKs waited up to ~0.5 s for their turn:
        // 94–98 %, and below the bound in 2 of 3 runs beside two more such tests.
        assert!(
            lossy_got as f64 >= 0.95 * clean_got as f64,
            "lossy {lossy_got} vs clean {clean_got}"
        );
    }
);

/// As much redundancy as media, so that a 10 s run surely rebuilds something (at 25 % one run
/// in three rebuilt nothing).
const FEC: &str = "fec = true\nfec_percentage = 100";

// FEC (`fec = true`, both sides): the lossy viewer rebuilds lost packets from the redundancy
// at once, with no round trip. Run beside the same call without FEC, for the numbers.
netns_test!(
    fec_rebuilds_lost_packets_without_a_round_trip,
    Net::LoopbackOnly,
    {
        let (lossy, clean, _, _) = lossy_and_clean("nofec", "", "").await;
        let without = lossy as f64 / clean.max(1) as f64;
        // Both sides must have it: an answer carries FEC only if the offer did. On a loaded
        // machine a 10 s run rebuilt nothing once in the full suite (2026-12-03; 4 runs
        // alone rebuilt plenty): one more run before calling it broken.
        let mut run = lossy_and_clean("fec", FEC, &format!("{FEC}\n")).await;
        if run.3["receive"]["fec_recovered"].as_u64().unwrap_or(0) == 0 {
            eprintln!("fec: nothing rebuilt in this run; once more");
            run = lossy_and_clean("fec", FEC, &format!("{FEC}\n")).await;
        }
        let (lossy, clean, _, received) = run;
        let with = lossy as f64 / clean.max(1) as f64;
        let camera_log =
            std::fs::read_to_string(artifacts_dir().join("fec-camera.log")).unwrap_or_default();
        assert!(camera_log.contains("ulpfec/90000"), "no FEC negotiated");
        assert!(camera_log.contains("red/90000"), "no RED negotiated");
        eprintln!(
            "share of the clean viewer's frames at 5 % loss: {without:.2} without FEC, {with:.2} with"
        );
        assert!(
            received["receive"]["fec_recovered"].as_u64().unwrap_or(0) > 0,
            "nothing rebuilt from FEC: {received}"
        );
        // Measured over 7 runs, with FEC and without: 0.6–1.6 of the clean viewer's frames (a
        // noisy machine: with 100 % redundancy the clean viewer itself sometimes made only
        // 8 fps); 0.34 once on a loaded CI machine. At 5 % random loss on loopback FEC rebuilds
        // packets but does not beat NACK; this checks that it works and does not break the
        // call (a broken one decodes next to nothing), not how well: that is load-dependent.
        assert!(with >= 0.15, "{with:.2} with FEC");
    }
);

// ---- Adaptive bitrate ---------------------------------------------------------------------

/// A camera sending 640×360 VP8 at 1 Mbit/s; with `ladder`, also 320×180 at 300 kbit/s and
/// 160×90 at 100. The picture is a moving zone plate: every rung needs about the rate it is
/// given (measured 919, 296 and 99 kbit/s; a moving ball fits in 100 kbit/s at any size, and
/// noise overshoots every target). 640×360, not the 1280×720 of the shipped camera profile:
/// three daemons encoding and decoding 720p do not fit this 2-core machine at 25 fps.
fn camera_profile(id: &str, ladder: bool) -> std::path::PathBuf {
    camera_profile_with(id, ladder, "")
}

/// [`camera_profile`] with `top` (top-level keys) added.
fn camera_profile_with(id: &str, ladder: bool, top: &str) -> std::path::PathBuf {
    let rungs = if ladder {
        "[[video.ladder]]\nwidth = 640\nheight = 360\nbitrate_kbps = 1000\n\
         [[video.ladder]]\nwidth = 320\nheight = 180\nbitrate_kbps = 300\n\
         [[video.ladder]]\nwidth = 160\nheight = 90\nbitrate_kbps = 100\n"
    } else {
        ""
    };
    write_profile(
        id,
        &format!(
            "name = \"{id}\"\n{top}\n[video]\nsource = \"launch\"\n\
             launch = \"videotestsrc is-live=true pattern=zone-plate kx2=20 ky2=20 kt=1\"\nwidth = 640\nheight = 360\n\
             framerate = 30\ncodecs = [\"vp8\"]\nbitrate_kbps = 1000\n{rungs}"
        ),
    )
}

/// A receive-only viewer (it decodes and counts video) with ICE on `ip`, on `relay`.
fn viewer_at(id: &str, ip: &str, relay: &str) -> Proc {
    let profile = write_profile(
        id,
        &format!("name = \"{id}\"\n[receive]\nvideo = \"count\"\n"),
    );
    let mut args = daemon_args(id, &profile, &["--relay", relay]);
    if let Some(i) = args.iter().position(|a| a == "127.0.0.1") {
        args[i] = ip.to_string();
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::spawn_env(id, &args, &[])
}

/// What a viewer received over `window`: frames per second and new freezes, and the size.
async fn watch(p: &Proc, session: &str, window: Duration) -> (f64, u64, Value) {
    let before = wait_call(p, session, "the call", |_| true).await;
    tokio::time::sleep(window).await;
    let after = wait_call(p, session, "the call", |_| true).await;
    let fps = (frames(&after) - frames(&before)) as f64 / window.as_secs_f64();
    let freezes = after["receive"]["freezes"].as_u64().unwrap_or(0)
        - before["receive"]["freezes"].as_u64().unwrap_or(0);
    (fps, freezes, after)
}

/// Waits (at most 10 s) until the rendition `session` gets from `camera` has not changed for
/// `quiet`.
async fn settle(camera: &Proc, session: &str, quiet: Duration) {
    let rendition = |c: &Value| c["send"]["rendition"].clone();
    let mut last = rendition(&wait_call(camera, session, "the call", |_| true).await);
    let mut since = std::time::Instant::now();
    let limit = std::time::Instant::now() + Duration::from_secs(10);
    while since.elapsed() < quiet {
        assert!(
            std::time::Instant::now() < limit,
            "the rendition kept changing for 10 s: now {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = rendition(&wait_call(camera, session, "the call", |_| true).await);
        if now != last {
            last = now;
            since = std::time::Instant::now();
        }
    }
}

/// Police UDP toward `ip` to about 300 kbit/s (no queue: what is over the rate is dropped).
fn police(table: &str, ip: &str) {
    input_rule(
        table,
        &[
            "ip",
            "daddr",
            ip,
            "meta",
            "l4proto",
            "udp",
            "limit",
            "rate",
            "over",
            "37",
            "kbytes/second",
            "burst",
            "16",
            "kbytes",
            "drop",
        ],
    );
}

/// `tests/peers/rtp_watch.py`: the RTP sent to one address, as it leaves (before the
/// policing drops any), summed up per stream when its time is up.
struct RtpWatch {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl RtpWatch {
    fn start(to: &str, time: Duration) -> RtpWatch {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/rtp_watch.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .args(["--to", to, "--seconds", &time.as_secs_f64().to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 tests/peers/rtp_watch.py");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("rtp_watch.py to listen within 20 s");
        assert!(ready.contains("ready"), "rtp_watch.py: {ready}");
        RtpWatch { child, lines }
    }

    /// Waits for its time to be up; its summary.
    fn finish(mut self) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(60))
            .expect("rtp_watch.py's summary");
        let _ = self.child.wait();
        serde_json::from_str(&line).expect("JSON from rtp_watch.py")
    }
}

/// A call that moved between rungs (its viewer decoded 640×360, then less, meanwhile) is still
/// one stream on the wire: one SSRC for its video, sequence numbers without a break,
/// timestamps that never go back and keep pace with the clock. Packets lost to the policing
/// are lost after this point; a break here would be the sender's.
fn the_wire_stays_one_stream(wire: &Value) {
    let streams = wire["streams"].as_array().cloned().unwrap_or_default();
    let video = streams.first().cloned().unwrap_or_default();
    let same_type = streams.iter().filter(|s| s["pt"] == video["pt"]).count();
    assert_eq!(same_type, 1, "more than one SSRC carried the video: {wire}");
    assert_eq!(video["seq_breaks"], 0, "sequence numbers broke: {video}");
    assert_eq!(video["ts_backwards"], 0, "timestamps went back: {video}");
    let media_secs = video["ts_span"].as_f64().unwrap_or(0.0) / 90_000.0;
    let wall_secs = video["wall_span"].as_f64().unwrap_or(0.0);
    assert!(
        wall_secs > 10.0 && (0.8..1.2).contains(&(media_secs / wall_secs)),
        "timestamps did not keep pace: {media_secs:.1} s of media in {wall_secs:.1} s: {video}"
    );
    eprintln!(
        "on the wire to the narrow viewer: one SSRC, {} packets, no break, {media_secs:.1} s \
         of timestamps in {wall_secs:.1} s",
        video["packets"]
    );
}

/// Two viewers of one camera, viewer B's path policed to ~300 kbit/s. With the ladder, A
/// keeps the best rung and B gets a lower rung that flows; the camera runs one encoder per rung in
/// use. Without it, B's picture starves. Returns (B's fps, B's freezes) of each run.
async fn two_viewers_one_narrow(ladder: bool) -> (f64, u64) {
    let tag = if ladder { "abr" } else { "flat" };
    let camera_id = format!("{tag}-camera");
    let camera = Proc::daemon(&camera_id, &camera_profile(&camera_id, ladder), &[]);
    let relay = camera.ws_url();
    let narrow = viewer_at(&format!("{tag}-narrow"), "127.0.0.3", &relay);
    let wide = viewer_at(&format!("{tag}-wide"), "127.0.0.4", &relay);
    let mut sessions = Vec::new();
    let mut started_at = Vec::new();
    for viewer in [&narrow, &wide] {
        wait_peer(&camera, &viewer.name).await;
        let session = place_call(&camera, &viewer.name).await;
        let call = wait_call(viewer, &session, "video", |c| frames(c) > 30).await;
        started_at.push(call["receive"]["video_width"].clone());
        sessions.push(session);
    }
    // What goes on the wire to B while it moves down: see `the_wire_stays_one_stream`.
    let wire = ladder.then(|| RtpWatch::start("127.0.0.3", Duration::from_secs(14)));
    police(tag, "127.0.0.3");
    if ladder {
        // B's picture is watched on the rung it moved down to, once it has stayed there for
        // 1.5 s (a fall may take two steps, a second apart), for 5 s: before its first probe
        // up, which comes at the earliest 8 s after a move. A probe that fails costs the
        // viewer a glitch by design (and its rung's other viewers a keyframe or two); when
        // probes come and how they back off is `adapt`'s unit tests.
        wait_call(
            &camera,
            &sessions[0],
            "the narrow viewer moving down",
            |c| c["send"]["rendition"] != "640x360",
        )
        .await;
        settle(&camera, &sessions[0], Duration::from_millis(1500)).await;
    } else {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    // Both viewers over the same 5 s (over 1 s one busy moment on the 2 cores read as 24 fps).
    let window = Duration::from_secs(5);
    // The frames the camera's top rung (or its one encoder) makes meanwhile: the most the
    // clean viewer can get.
    let top_frames = |streams: &Value| {
        let stream = &streams[0];
        stream["rungs"][0]["frames"]
            .as_u64()
            .or_else(|| stream["frames"].as_u64())
            .unwrap_or(0)
    };
    let top_before = top_frames(&status(&camera).await["shared_streams"]);
    let ((narrow_fps, narrow_freezes, narrow_call), (wide_fps, _, wide_call)) = tokio::join!(
        watch(&narrow, &sessions[0], window),
        watch(&wide, &sessions[1], window)
    );
    let top_fps = top_frames(&status(&camera).await["shared_streams"]).saturating_sub(top_before)
        as f64
        / window.as_secs_f64();
    // What the camera sends each and the encoders it runs, read before B's first probe
    // could start.
    let sent: Vec<Value> = {
        let mut out = Vec::new();
        for s in &sessions {
            out.push(wait_call(&camera, s, "the camera's side", |_| true).await["send"].clone());
        }
        out
    };
    let streams = status(&camera).await["shared_streams"].clone();
    eprintln!(
        "{tag}: narrow {narrow_fps:.1} fps, {narrow_freezes} freezes in 5 s, {}x{}; \
         wide {wide_fps:.1} fps {}x{}; the top rung made {top_fps:.1} fps; \
         camera sends {sent:?}; streams {streams}",
        narrow_call["receive"]["video_width"],
        narrow_call["receive"]["video_height"],
        wide_call["receive"]["video_width"],
        wide_call["receive"]["video_height"],
    );
    nft(&["delete", "table", "inet", tag]);
    // The clean viewer gets what the top rung makes, whatever the narrow one's link does
    // (measured: 94–100 % of it; the two counters are not read at the same instant). The rung
    // itself made 22–30 fps in these 5 s, with a release build too: its encoder, fed through
    // a one-frame leaky queue, loses frames when the two cores are busy, more often while the
    // 320x180 rung encodes too (alone, this test picture at 640x360 loses ~2 %); the clean
    // viewer then got as few, with no packet lost.
    assert!(top_fps >= 15.0, "the top rung made {top_fps} fps");
    assert!(
        wide_fps >= 0.9 * top_fps,
        "the clean viewer: {wide_fps} fps of the {top_fps} the top rung made"
    );
    assert_eq!(wide_call["receive"]["video_width"], 640, "{wide_call}");
    if ladder {
        let narrow_width = narrow_call["receive"]["video_width"].as_u64().unwrap_or(0);
        assert_eq!(started_at[0], 640, "the narrow viewer started at the top");
        assert!(
            narrow_width < 640,
            "the narrow viewer stayed at the top: {narrow_call}"
        );
        // (Its estimate may sit well above its rung: an estimator on a rung of 100 kbit/s
        // climbs until a probe of the next rung fails.)
        assert!(sent[0]["estimate_kbps"].as_u64().is_some(), "{:?}", sent[0]);
        assert_ne!(sent[0]["rendition"], "640x360", "{:?}", sent[0]);
        assert_eq!(sent[1]["rendition"], "640x360", "{:?}", sent[1]);
        assert!(metric(&camera, "webrtcd_rendition_switches_total", "").await >= 1);
        if let Some(wire) = wire {
            the_wire_stays_one_stream(&wire.finish());
        }
        // One encoder per rung in use: two here, and the third idle.
        let rungs = streams[0]["rungs"].as_array().cloned().unwrap_or_default();
        let encoding = rungs.iter().filter(|r| r["encoding"] == true).count();
        let in_use = rungs
            .iter()
            .filter(|r| r["viewers"].as_u64().unwrap_or(0) > 0)
            .count();
        assert_eq!(encoding, in_use, "{streams}");
        assert!(encoding <= 2, "{streams}");
    }
    (narrow_fps, narrow_freezes)
}

netns_test!(
    a_narrow_viewer_gets_a_lower_rung_and_the_others_keep_the_best,
    Net::LoopbackOnly,
    {
        let (abr_fps, abr_freezes) = two_viewers_one_narrow(true).await;
        assert!(
            abr_fps >= 15.0,
            "narrow viewer with the ladder: {abr_fps} fps"
        );
        assert!(
            abr_freezes <= 3,
            "narrow viewer with the ladder: {abr_freezes} freezes"
        );
        let (flat_fps, flat_freezes) = two_viewers_one_narrow(false).await;
        // The same link without a ladder: one 2 Mbit/s picture for all, and B starves.
        assert!(
            flat_fps < 15.0 || flat_freezes > 3,
            "without the ladder the narrow viewer got {flat_fps} fps, {flat_freezes} freezes"
        );
    }
);

// With an encoder per viewer (webrtcsink's way, for comparison) the narrow viewer's own encoder
// follows its link's estimate instead.
netns_test!(
    a_viewers_own_encoder_follows_its_estimate,
    Net::LoopbackOnly,
    {
        let camera = Proc::daemon(
            "own-camera",
            &camera_profile_with("own-camera", false, "per_viewer_encoder = true"),
            &[],
        );
        let narrow = viewer_at("own-narrow", "127.0.0.3", &camera.ws_url());
        wait_peer(&camera, "own-narrow").await;
        let session = place_call(&camera, "own-narrow").await;
        wait_call(&narrow, &session, "video", |c| frames(c) > 30).await;
        police("own", "127.0.0.3");
        let sent = wait_for("the encoder to follow", Duration::from_secs(30), || async {
            let call = wait_call(&camera, &session, "the camera's side", |_| true).await;
            let target = call["send"]["target_kbps"].as_u64().unwrap_or(u64::MAX);
            (target < 400).then_some(call["send"].clone())
        })
        .await;
        eprintln!("own encoder behind 300 kbit/s: {sent}");
        nft(&["delete", "table", "inet", "own"]);
        assert_eq!(
            status(&camera).await["shared_streams"],
            serde_json::json!([])
        );
    }
);

// A viewer that does not negotiate transport-cc (aiortc: receiver reports, NACK, PLI and REMB,
// no transport-wide feedback) and a camera with a ladder; then the viewer's path is policed
// to about 300 kbit/s. The camera estimates the link from the loss the viewer reports and
// moves it down the ladder, where its picture flows again. `camera_calls`: the camera offers
// (it cannot know yet whether the viewer will send transport-wide feedback) instead of
// answering the viewer's call.
async fn fitted_from_loss_reports(camera_calls: bool) {
    let tag = if camera_calls { "rr-out" } else { "rr-in" };
    let camera_id = format!("{tag}-camera");
    let viewer_id = format!("{tag}-viewer");
    let camera = Proc::daemon(&camera_id, &camera_profile(&camera_id, true), &[]);
    // aiortc's only address is the dummy interface's (it never uses 127.0.0.1).
    let seconds = 40;
    // A window long enough to hold a failed probe of the next rung up and the picture that
    // flows around it: a 6 s window that fell on a probe read 5.3 fps (CI, session 21).
    let args = [
        "--stay",
        "--seconds",
        &seconds.to_string(),
        "--window",
        "14",
    ];
    let callee = (!camera_calls).then_some(camera_id.as_str());
    let viewer = aiortc::run(&camera, &viewer_id, callee, &args, false);
    let started = Instant::now();
    if camera_calls {
        wait_peer(&camera, &viewer_id).await;
        place_call(&camera, &viewer_id).await;
    }
    let call = poll(Duration::from_secs(20), || async {
        calls(&camera).await.into_iter().find(|c| {
            c["state"] == "connected" && c["rtp_packets"]["video_sent"].as_u64() > Some(300)
        })
    })
    .await
    .expect("aiortc's call connected and got video");
    assert_eq!(call["send"]["estimator"], "loss", "{call}");
    assert_eq!(call["send"]["rendition"], "640x360", "{call}");
    police(tag, "10.213.0.1");
    // aiortc leaves when its --seconds end; read the camera's side before.
    let left = Duration::from_secs(seconds).saturating_sub(started.elapsed());
    tokio::time::sleep(left.saturating_sub(Duration::from_secs(3))).await;
    let session = call["session"].as_str().unwrap_or_default().to_string();
    let sent = wait_call(&camera, &session, "the camera's side", |_| true).await["send"].clone();
    let report = aiortc::finished(viewer, &camera).await;
    nft(&["delete", "table", "inet", tag]);
    eprintln!(
        "{tag}: no transport-cc, policed to 300 kbit/s: viewer {report}; camera sends {sent}"
    );
    assert_ne!(sent["rendition"], "640x360", "{sent}");
    assert!(
        sent["estimate_kbps"].as_u64().unwrap_or(u64::MAX) < 1000,
        "{sent}"
    );
    assert!(
        report["video_size"][0].as_u64().unwrap_or(0) < 640,
        "{report}"
    );
    // Measured 15–31 fps at 160×90 between probes of 320×180, which do not fit and each cost
    // a few seconds of picture (the same link without adapting: 0.0–0.3 fps, the ladder
    // test's flat run). Over 14 s that holds one failed probe at most (they back off to 16 s).
    let fps = report["recent_fps"].as_f64().unwrap_or(0.0);
    assert!(fps >= 7.0, "{fps} fps in the last 14 s: {report}");
}

netns_test!(
    a_viewer_without_transport_cc_is_fitted_from_its_loss_reports,
    Net::WithDummyRoute,
    {
        fitted_from_loss_reports(false).await;
    }
);

netns_test!(
    a_viewer_without_transport_cc_that_the_camera_calls_is_fitted_too,
    Net::WithDummyRoute,
    {
        fitted_from_loss_reports(true).await;
    }
);

// Chromium (the page) calls a camera with a ladder and watches; then its link narrows to a
// 500 kbit/s bottleneck with a queue (tbf on `lo`: both ways, signaling included). It settles
// on a rung that fits and plays smoothly; its freezes come in the first seconds, while the
// estimate falls.
netns_test!(
    chromium_behind_a_bottleneck_plays_a_rung_that_fits,
    Net::LoopbackOnly,
    {
        let camera = Proc::daemon("tbf-camera", &camera_profile("tbf-camera", true), &[]);
        let chrome = page_calling(&camera, "tbf-page", "tbf-camera").await;
        let page = || async {
            chrome
                .script(
                    "return state.call ? {session: state.call.session, \
                     frames: state.call.stats.framesDecoded || 0, \
                     freezes: state.call.stats.freezes || 0, \
                     freeze_ms: state.call.stats.freezeMs || 0, width: state.call.stats.width || 0, \
                     rendition: state.call.stats.rendition || '', \
                     estimate: state.call.stats.estimateKbps || 0, \
                     at: performance.now()} : null;",
                )
                .await
        };
        let playing = wait_for("Chromium to play", Duration::from_secs(30), || async {
            let v = page().await;
            (v["frames"].as_u64().unwrap_or(0) >= 10).then_some(v)
        })
        .await;
        let session = playing["session"].as_str().unwrap_or_default().to_string();
        // The bottleneck comes once it plays (page and WebDriver traffic share `lo`).
        let status = std::process::Command::new("tc")
            .args([
                "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "500kbit",
            ])
            .args(["burst", "16kb", "latency", "300ms"])
            .status()
            .expect("tc");
        assert!(status.success(), "tc qdisc add … tbf");
        // Watched for 40 s, once a second: the page's frames and freezes, and the rendition
        // the camera sends (a few KiB a second across the bottleneck).
        let count = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
        let started = Instant::now();
        let mut samples: Vec<(f64, Value, String)> = Vec::new();
        while started.elapsed() < Duration::from_secs(40) {
            let now = page().await;
            let sent = wait_call(&camera, &session, "the camera's side", |_| true).await;
            let rendition = sent["send"]["rendition"].as_str().unwrap_or("").to_string();
            samples.push((started.elapsed().as_secs_f64(), now, rendition));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Judged on the stretches of 6 s, from 8 s after the bottleneck came, in which the
        // camera sent one rendition throughout, and for 3 s before: the estimate falling at
        // first, a probe of the next rung (from 8 s on a rung, 4 s long) and the seconds after
        // a switch are adapting, measured by the ladder benchmarks. (With 5 s before, a run
        // whose camera moved between 160x90 and 320x180 every 10 s had no stretch to judge.) The page must
        // play smoothly in one of them at least (on this 2-core machine a stretch now and then
        // has a stall under the bottleneck's queue: 1 run in 3 at a fixed 20–26 s, before
        // this session too). Without the ladder no stretch comes near (0.2 fps).
        let steady: Vec<(usize, usize)> = (0..samples.len())
            .filter_map(|i| {
                let from = samples[i].0;
                let end = samples.iter().position(|s| s.0 >= from + 6.0)?;
                let one = samples
                    .iter()
                    .filter(|s| s.0 >= from - 3.0 && s.0 <= samples[end].0)
                    .all(|s| s.2 == samples[i].2);
                (from >= 8.0 && one).then_some((i, end))
            })
            .collect();
        // Frames per second by the page's own clock: WebDriver's requests cross the same
        // bottleneck, and one held up behind its queue (or a lost TCP segment) would make the
        // test's clock say a stretch was longer than the frames it counted.
        let judged = |&(i, end): &(usize, usize)| {
            let (before, after) = (&samples[i].1, &samples[end].1);
            let page_ms = |v: &Value| v["at"].as_f64().unwrap_or(0.0);
            let fps = (count(after, "frames") - count(before, "frames")) as f64 * 1000.0
                / (page_ms(after) - page_ms(before)).max(1.0);
            let frozen_ms = count(after, "freeze_ms").saturating_sub(count(before, "freeze_ms"));
            (frozen_ms, fps)
        };
        // Smooth: at least 20 fps, and frozen (Chromium's own count: a gap well over the usual
        // frame interval) for at most 1 s of the 6. Judged by time frozen, not the number of
        // freezes: on a loaded 2-core CI machine the best stretch once held 4 short freezes
        // at 29.3 fps (about a fifth of a second each).
        let smooth = steady
            .iter()
            .filter(|w| {
                let (frozen_ms, fps) = judged(w);
                frozen_ms <= 1000 && fps >= 20.0
            })
            .count();
        let sent = wait_call(&camera, &session, "the camera's side", |_| true).await;
        let switches: Vec<(u64, &str)> = samples
            .windows(2)
            .filter(|w| w[0].2 != w[1].2)
            .map(|w| (w[1].0 as u64, w[1].2.as_str()))
            .collect();
        let best = steady.iter().min_by(|a, b| {
            let (fa, pa) = judged(a);
            let (fb, pb) = judged(b);
            fa.cmp(&fb).then(pb.total_cmp(&pa))
        });
        let Some(&(start, end)) = best else {
            panic!("no 6 s on one rendition in 40 s behind the bottleneck: {switches:?}");
        };
        let (frozen_ms, fps) = judged(&(start, end));
        let after = &samples[end].1;
        let slowest = samples
            .windows(2)
            .map(|w| w[1].0 - w[0].0 - 1.0)
            .fold(0.0, f64::max);
        eprintln!(
            "behind 500 kbit/s: {smooth} of {} steady 6 s stretches smooth; the best, {:.0}–{:.0} s \
             after it came: {fps:.1} fps on {}, frozen {frozen_ms} ms; switches {switches:?}; \
             slowest reading {slowest:.1} s; page \
             {after}; camera sends {}",
            steady.len(),
            samples[start].0,
            samples[end].0,
            samples[start].2,
            sent["send"]
        );
        assert!(fps >= 20.0, "{fps} fps");
        // 640×360 needs 1 Mbit/s: it cannot be what plays.
        assert!(count(after, "width") < 640, "{after}");
        assert_ne!(samples[start].2, "640x360", "{sent}");
        assert!(
            frozen_ms <= 1000,
            "frozen over 1 s on every steady stretch: {after}"
        );
        // The overlay shows the device's side of the call (its last reading, a moment before).
        let last = &samples[samples.len() - 1].1;
        assert_eq!(
            last["rendition"], sent["send"]["rendition"],
            "{last} / {sent}"
        );
        let after = last;
        assert!(count(after, "estimate") > 0, "{after}");
    }
);

/// Headless Chromium showing `daemon`'s page as `id`, which calls `peer` once it is listed.
async fn page_calling(daemon: &Proc, id: &str, peer: &str) -> common::browser::Driven {
    let chrome = common::browser::Driven::start().await;
    chrome
        .open(&format!("http://{}/?id={id}&call={peer}", daemon.addr))
        .await;
    chrome
}

// Chromium asks for lost packets (NACK) and the camera sends them again (RTX) from the call's
// own send buffer: 5 % of the packets toward the page are dropped.
netns_test!(
    chromium_asks_for_lost_packets_and_gets_them_again,
    Net::LoopbackOnly,
    {
        let camera = Proc::daemon("nack-camera", &light_profile("nack-camera", ""), &[]);
        let chrome = page_calling(&camera, "nack-page", "nack-camera").await;
        let page = || async {
            chrome
                .script(
                    "return state.call ? {session: state.call.session, \
                     frames: state.call.stats.framesDecoded || 0, \
                     nacks: state.call.stats.nacks || 0, \
                     port: state.call.stats.localPort || 0} : null;",
                )
                .await
        };
        let playing = wait_for("Chromium to play", Duration::from_secs(30), || async {
            let v = page().await;
            (v["frames"].as_u64().unwrap_or(0) >= 10 && v["port"].as_u64().unwrap_or(0) > 0)
                .then_some(v)
        })
        .await;
        let session = playing["session"].as_str().unwrap_or_default().to_string();
        let port = playing["port"].to_string();
        input_rule(
            "pageloss",
            &[
                "udp", "dport", &port, "numgen", "random", "mod", "100", "<", "5", "drop",
            ],
        );
        let before = page().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let after = page().await;
        nft(&["delete", "table", "inet", "pageloss"]);
        let sent = wait_call(&camera, &session, "the camera's side", |_| true).await;
        let count = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
        let fps = (count(&after, "frames") - count(&before, "frames")) as f64 / 10.0;
        eprintln!(
            "Chromium at 5 % loss: {fps:.1} fps, {} NACKs sent; camera sends {}",
            count(&after, "nacks"),
            sent["send"]
        );
        assert!(count(&after, "nacks") > count(&before, "nacks"), "{after}");
        assert!(
            sent["send"]["nacks_received"].as_u64().unwrap_or(0) > 0,
            "{sent}"
        );
        assert!(
            sent["send"]["packets_retransmitted"].as_u64().unwrap_or(0) > 0,
            "{sent}"
        );
        assert!(
            metric(&camera, "webrtcd_packets_retransmitted_total", "").await > 0,
            "the retransmissions are in /metrics"
        );
        // It kept playing (30 fps sent).
        assert!(fps >= 15.0, "{fps} fps at 5 % loss");
    }
);

// ---- TURN ---------------------------------------------------------------------------------

const TURN_SECRET: &str = "turn-shared-secret-0123";

/// coturn on 127.0.0.1:3478 checking TURN REST credentials made with [`TURN_SECRET`]; its log
/// is `target/test-logs/coturn.log`. Killed on drop.
struct Coturn {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Coturn {
    fn start() -> Coturn {
        let log = artifacts_dir().join("coturn.log");
        let out = std::fs::File::create(&log).expect("coturn log");
        let child = std::process::Command::new("turnserver")
            .args([
                "-n",
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                "--listening-port=3478",
                "--min-port=50000",
                "--max-port=50100",
                "--use-auth-secret",
                &format!("--static-auth-secret={TURN_SECRET}"),
                "--realm=webrtcd.test",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--allow-loopback-peers",
                "--log-file=stdout",
                "--simple-log",
                "--verbose",
            ])
            .stdout(out)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("turnserver (Debian package coturn)");
        let coturn = Coturn { child, log };
        for _ in 0..100 {
            if coturn.log_text().contains("Total auth threads") {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        coturn
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The candidates `p` sent to its peer (its debug log).
fn local_candidates(p: &Proc) -> Vec<String> {
    p.log_text()
        .lines()
        .filter(|l| l.contains("local candidate"))
        .filter_map(|l| l.split("candidate=").nth(1).map(str::to_string))
        .collect()
}

netns_test!(
    calls_connect_through_turn_with_short_lived_credentials,
    Net::LoopbackOnly,
    {
        let coturn = Coturn::start();
        let config = format!(
            "ice_transport_policy = 'relay'\n[ice]\n\
             turn_servers = ['turn://127.0.0.1:3478?transport=udp']\n\
             turn_secret = '{TURN_SECRET}'\n"
        );
        let (door, visitor, _) = call_between("turn", &config).await;
        // Relayed only: every candidate either side offered is coturn's.
        for p in [&door, &visitor] {
            let candidates = local_candidates(p);
            assert!(!candidates.is_empty(), "{} sent no candidate", p.name);
            assert!(
                candidates.iter().all(|c| c.contains("typ relay")),
                "{}: {candidates:?}",
                p.name
            );
        }
        assert!(
            coturn.log_text().contains(":webrtcd"),
            "coturn saw the REST username"
        );

        // What a page gets: the server in browser form, fresh credentials, the policy.
        let ice = get(&door, "/api/ice-servers").await;
        assert_eq!(ice["iceTransportPolicy"], "relay", "{ice}");
        let turn = &ice["iceServers"][0];
        assert_eq!(
            turn["urls"][0], "turn:127.0.0.1:3478?transport=udp",
            "{ice}"
        );
        assert!(
            turn["username"]
                .as_str()
                .is_some_and(|u| u.ends_with(":browser")),
            "{ice}"
        );
        assert!(!ice.to_string().contains(TURN_SECRET));

        // Credentials that expired an hour ago: coturn refuses them, no relay, no call.
        let secret = secrecy::SecretString::from(TURN_SECRET.to_string());
        let old = std::time::SystemTime::now() - Duration::from_secs(7200);
        let expired =
            webrtcd::session::turn::credentials(&secret, "expired", old, Duration::from_secs(3600));
        let url = webrtcd::session::turn::with_credentials(
            "turn://127.0.0.1:3478?transport=udp",
            &expired,
        )
        .expect("url");
        let late = Proc::daemon(
            "turn-late",
            &light_profile("turn-late", ""),
            &[
                "--config",
                &config_file(
                    "turn-late",
                    &format!("ice_transport_policy = 'relay'\n[ice]\nturn_servers = ['{url}']\n"),
                ),
                "--relay",
                &door.ws_url(),
            ],
        );
        wait_peer(&late, "turn-door").await;
        let session = place_call(&late, "turn-door").await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let calls = calls(&late).await;
        let call = calls.iter().find(|c| c["session"] == session.as_str());
        assert!(
            call.is_none_or(|c| c["state"] != "connected"),
            "a call through expired credentials: {call:?}"
        );
        assert!(
            local_candidates(&late)
                .iter()
                .all(|c| !c.contains("typ relay")),
            "coturn gave an expired user a relay"
        );
    }
);

// The page asks the device for its ICE servers (`/api/ice-servers`): Chromium gets coturn with
// short-lived credentials and the relay-only policy, and the call goes through TURN.
netns_test!(
    chromium_relays_through_turn_with_credentials_from_the_device,
    Net::LoopbackOnly,
    {
        let _coturn = Coturn::start();
        let config = format!(
            "ice_transport_policy = 'relay'\n[ice]\n\
             turn_servers = ['turn://127.0.0.1:3478?transport=udp']\n\
             turn_secret = '{TURN_SECRET}'\n"
        );
        let door = Proc::daemon(
            "turn-page-door",
            &light_profile("turn-page-door", ""),
            &["--config", &config_file("turn-page-door", &config)],
        );
        let chrome = common::browser::Driven::start().await;
        chrome
            .open(&format!("http://{}/?id=turner&autoanswer=1", door.addr))
            .await;
        wait_peer(&door, "turner").await;
        let session = place_call(&door, "turner").await;
        let seen = wait_for(
            "Chromium to play over TURN",
            Duration::from_secs(30),
            || async {
                let v = chrome
                    .script(
                        "return state.call ? {frames: state.call.stats.framesDecoded || 0, \
                     path: state.call.stats.path || '', \
                     policy: state.iceConfig.iceTransportPolicy || ''} : null;",
                    )
                    .await;
                (v["frames"].as_u64().unwrap_or(0) >= 30).then_some(v)
            },
        )
        .await;
        assert_eq!(seen["policy"], "relay", "{seen}");
        assert!(
            seen["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("relay")),
            "Chromium's selected pair: {seen}"
        );
        wait_call(&door, &session, "pongs", |c| {
            c["pongs_received"].as_u64().unwrap_or(0) >= 1
        })
        .await;
    }
);

// Chromium (the page) calls the daemon; all UDP is cut for 6 s: the same call plays again
// soon after the cut ends.
netns_test!(
    a_cut_under_a_chromium_call_heals_on_the_same_call,
    Net::LoopbackOnly,
    {
        let door = Proc::daemon("cut-page-door", &light_profile("cut-page-door", ""), &[]);
        let chrome = page_calling(&door, "walker", "cut-page-door").await;
        let page_frames = || async {
            chrome
                .script("return state.call ? {session: state.call.session, frames: state.call.stats.framesDecoded || 0} : null;")
                .await
        };
        let before = wait_for("Chromium to play", Duration::from_secs(30), || async {
            let v = page_frames().await;
            (v["frames"].as_u64().unwrap_or(0) >= 30).then_some(v)
        })
        .await;
        let cut = UdpCut::start();
        tokio::time::sleep(Duration::from_secs(6)).await;
        let during = page_frames().await["frames"].as_u64().unwrap_or(0);
        drop(cut);
        let restored = Instant::now();
        let after = wait_for("video after the cut", Duration::from_secs(15), || async {
            let v = page_frames().await;
            (v["frames"].as_u64().unwrap_or(0) > during + 30).then_some(v)
        })
        .await;
        let healed = restored.elapsed();
        eprintln!("Chromium played again {healed:?} after the cut ended");
        assert_eq!(after["session"], before["session"], "the same call");
        assert!(healed <= Duration::from_secs(5), "{healed:?}");
        let session = before["session"].as_str().unwrap_or_default().to_string();
        wait_call(&door, &session, "the call on the daemon", |c| {
            c["state"] == "connected"
        })
        .await;
    }
);

/// Drops, for as long as this lives, every UDP packet to or from local port `port`: one end of
/// a path gone for good (the interface a phone left), while other ports still work.
struct PortCut(&'static str);

impl PortCut {
    fn start(table: &'static str, port: u64) -> PortCut {
        let port = port.to_string();
        input_rule(table, &["udp", "sport", &port, "drop"]);
        nft(&[
            "add", "rule", "inet", table, "input", "udp", "dport", &port, "drop",
        ]);
        PortCut(table)
    }
}

impl Drop for PortCut {
    fn drop(&mut self) {
        nft(&["delete", "table", "inet", self.0]);
    }
}

/// What the page shows of its call: session, frames decoded, the local port of the pair in
/// use, ICE restarts it made.
async fn page_call(chrome: &common::browser::Driven) -> Value {
    chrome
        .script(
            "return state.call ? {session: state.call.session, \
             frames: state.call.stats.framesDecoded || 0, \
             port: state.call.stats.localPort || 0, \
             restarts: state.call.iceRestarts || 0, \
             connection: state.call.pc.connectionState} : null;",
        )
        .await
}

/// Chromium plays; then the port its path uses is cut for good. Whoever offered restarts ICE
/// (the page if `page_calls`, else the device); the page gathers again, and the same call
/// plays over a new path. Returns the device and the session.
async fn path_changes_under_a_chromium_call(id: &str, page_calls: bool) -> (Proc, String) {
    let door = Proc::daemon(id, &light_profile(id, ""), &[]);
    let chrome = common::browser::Driven::start().await;
    let page_id = format!("{id}-page");
    if page_calls {
        chrome
            .open(&format!("http://{}/?id={page_id}&call={id}", door.addr))
            .await;
    } else {
        chrome
            .open(&format!("http://{}/?id={page_id}&autoanswer=1", door.addr))
            .await;
        wait_peer(&door, &page_id).await;
        place_call(&door, &page_id).await;
    }
    let before = wait_for("Chromium to play", Duration::from_secs(30), || async {
        let v = page_call(&chrome).await;
        (v["frames"].as_u64().unwrap_or(0) >= 30 && v["port"].as_u64().unwrap_or(0) > 0)
            .then_some(v)
    })
    .await;
    let old_port = before["port"].as_u64().unwrap_or(0);
    let _cut = PortCut::start("gone", old_port);
    let cut_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = page_call(&chrome).await["frames"].as_u64().unwrap_or(0);
    let after = wait_for("video over a new path", Duration::from_secs(40), || async {
        let v = page_call(&chrome).await;
        (v["frames"].as_u64().unwrap_or(0) > during + 30).then_some(v)
    })
    .await;
    eprintln!(
        "Chromium played again {:?} after its port {old_port} was cut for good: {after}",
        cut_at.elapsed()
    );
    assert_eq!(after["session"], before["session"], "the same call");
    assert_ne!(after["port"], before["port"], "a new path: {after}");
    let session = before["session"].as_str().unwrap_or_default().to_string();
    let call = wait_call(&door, &session, "the call on the daemon", |c| {
        c["state"] == "connected"
    })
    .await;
    assert!(call["ice_restarts"].as_u64().unwrap_or(0) >= 1, "{call}");
    if page_calls {
        assert!(after["restarts"].as_u64().unwrap_or(0) >= 1, "{after}");
    } else {
        assert_eq!(
            after["restarts"], 0,
            "the page answered, it did not restart: {after}"
        );
    }
    assert!(metric(&door, "webrtcd_ice_restarts_total", "").await >= 1);
    (door, session)
}

// The page calls the device; then the page's path goes away for good (its port is cut): the
// page restarts ICE (`restartIce`), the device answers the new credentials on the same call,
// and video resumes over the new path.
netns_test!(
    chromium_restarts_ice_on_the_same_call_when_its_path_is_gone,
    Net::LoopbackOnly,
    {
        path_changes_under_a_chromium_call("move-door", true).await;
    }
);

// The device calls the page; then the page's path goes away for good: the device, which
// offered, restarts ICE once it has heard nothing for a few seconds; the page answers from
// its new path, and video resumes on the same call.
netns_test!(
    the_device_restarts_ice_when_the_page_path_is_gone,
    Net::LoopbackOnly,
    {
        path_changes_under_a_chromium_call("moved-door", false).await;
    }
);
