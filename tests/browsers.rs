//! Browsers against the daemon, both directions, both codecs, strictly on loopback inside a
//! fresh network namespace (see common/browser.rs).

mod common;

use std::time::Duration;

use common::browser::{Browser, Collector, Engine, Net, Options};
use common::*;
use serde_json::Value;

/// Where the page is, what it reports to, and the daemon it talks to.
struct Scene {
    daemon: Proc,
    collector: Collector,
}

async fn scene(id: &str, codecs: &str) -> Scene {
    let profile = profile_with_codecs(id, "", codecs);
    let daemon = Proc::daemon(id, &profile, &[]);
    let collector = Collector::start(&daemon.addr).await;
    Scene { daemon, collector }
}

impl Scene {
    fn page(&self, query: &str) -> String {
        format!("http://{}/?{query}&report=/report", self.collector.addr)
    }
}

fn call_of(report: &Value) -> &Value {
    &report["call"]
}

/// The browser decodes ≥ 30 frames, receives audio, and ping/pong runs both ways.
fn browser_receives(report: &Value) -> bool {
    let call = call_of(report);
    call["connected"] == true
        && call["stats"]["framesDecoded"].as_u64().unwrap_or(0) >= 30
        && call["stats"]["audioPackets"].as_u64().unwrap_or(0) > 0
        && call["pongs"].as_u64().unwrap_or(0) >= 1
        && call["pingsAnswered"].as_u64().unwrap_or(0) >= 1
}

async fn daemon_side(daemon: &Proc) -> Value {
    wait_for("the daemon's call", Duration::from_secs(20), || async {
        calls(daemon).await.into_iter().next()
    })
    .await
}

async fn browser_calls_daemon(
    engine: Engine,
    codec: &str,
    codecs: &str,
    mode: &str,
    permission: bool,
) -> (Value, Value) {
    let s = scene("door", codecs).await;
    let media = mode == "intercom";
    let _browser = Browser::open(
        engine,
        &s.page(&format!("call=door&codec={codec}&mode={mode}")),
        Options { permission },
    );
    let report = s
        .collector
        .wait(&format!("{engine:?} to receive"), browser_receives)
        .await;
    print_phases(engine, &report);
    let call = daemon_side(&s.daemon).await;
    let session = call["session"].as_str().unwrap_or_default().to_string();
    let daemon = wait_call(&s.daemon, &session, "daemon side of the call", |c| {
        c["pongs_received"].as_u64().unwrap_or(0) >= 1 && (!media || media_and_pings_flow(c))
    })
    .await;
    assert_eq!(daemon["role"], "callee");
    assert_eq!(
        daemon["datachannels_created"], 0,
        "the callee never creates a channel"
    );
    assert_eq!(daemon["datachannels_received"], 1);
    (report, daemon)
}

/// Where the browser's call → first frame went (ms from its call's start), for the log.
fn print_phases(engine: Engine, report: &Value) {
    let call = call_of(report);
    let phases = &call["phases"];
    let Some(start) = phases["start"].as_f64() else {
        return;
    };
    let at = |v: &Value| v.as_f64().map(|t| format!("{:.0}", t - start));
    let mut line = String::new();
    for name in ["offer", "answer", "ice", "dtls", "rtp"] {
        line.push_str(&format!(
            " {name} {}",
            at(&phases[name]).unwrap_or("–".into())
        ));
    }
    let first = at(&call["firstFrameAt"]).unwrap_or("–".into());
    eprintln!("{engine:?} calling: ms from its call's start:{line}, first frame {first}");
}

async fn daemon_calls_browser(engine: Engine, codecs: &str) -> (Value, Value) {
    let s = scene("door", codecs).await;
    let _browser = Browser::open(
        engine,
        &s.page("id=viewer&autoanswer=1"),
        Options { permission: true },
    );
    wait_peer(&s.daemon, "viewer").await;
    let session = place_call(&s.daemon, "viewer").await;
    let report = s
        .collector
        .wait(&format!("{engine:?} to receive"), browser_receives)
        .await;
    let daemon = wait_call(&s.daemon, &session, "pongs", |c| {
        c["pongs_received"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    assert_eq!(daemon["role"], "caller");
    assert_eq!(daemon["datachannels_created"], 1);
    assert_eq!(call_of(&report)["role"], "callee");
    (report, daemon)
}

fn codec_of(report: &Value) -> String {
    call_of(report)["stats"]["codec"]
        .as_str()
        .unwrap_or_default()
        .to_uppercase()
}

// ---- Chromium ------------------------------------------------------------------------------

netns_test!(chromium_calls_the_daemon_vp8, Net::LoopbackOnly, {
    let (report, _) =
        browser_calls_daemon(Engine::Chromium, "vp8", "\"vp8\", \"h264\"", "viewer", true).await;
    assert_eq!(codec_of(&report), "VP8");
});

netns_test!(chromium_calls_the_daemon_h264, Net::LoopbackOnly, {
    let (report, _) = browser_calls_daemon(
        Engine::Chromium,
        "h264",
        "\"vp8\", \"h264\"",
        "viewer",
        true,
    )
    .await;
    assert_eq!(codec_of(&report), "H264");
});

netns_test!(the_daemon_calls_chromium_vp8, Net::LoopbackOnly, {
    let (report, _) = daemon_calls_browser(Engine::Chromium, "\"vp8\"").await;
    assert_eq!(codec_of(&report), "VP8");
});

netns_test!(the_daemon_calls_chromium_h264, Net::LoopbackOnly, {
    let (report, _) = daemon_calls_browser(Engine::Chromium, "\"h264\"").await;
    assert_eq!(codec_of(&report), "H264");
});

// Intercom: Chromium sends its (fake) camera and microphone; the daemon decodes them.
netns_test!(
    chromium_intercom_sends_camera_and_microphone,
    Net::LoopbackOnly,
    {
        let (_, daemon) =
            browser_calls_daemon(Engine::Chromium, "vp8", "\"vp8\"", "intercom", true).await;
        assert!(
            daemon["video_frames"].as_u64().unwrap_or(0) >= 30,
            "{daemon}"
        );
        assert!(
            daemon["audio_buffers"].as_u64().unwrap_or(0) > 0,
            "{daemon}"
        );
    }
);

// Without media permission Chromium hides its addresses behind `.local` names that the
// daemon cannot resolve; the call connects through peer-reflexive candidates.
netns_test!(
    chromium_without_media_permission_sends_mdns_candidates_and_connects,
    Net::WithDummyRoute,
    {
        let (report, _) =
            browser_calls_daemon(Engine::Chromium, "vp8", "\"vp8\"", "viewer", false).await;
        let candidates = call_of(&report)["localCandidates"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(!candidates.is_empty(), "{report}");
        assert!(
            candidates
                .iter()
                .all(|c| c.as_str().is_some_and(|c| c.ends_with(".local"))),
            "Chromium was expected to send only mDNS candidates: {candidates:?}"
        );
    }
);

// ---- Firefox -------------------------------------------------------------------------------

netns_test!(firefox_calls_the_daemon_vp8, Net::WithDummyRoute, {
    let (report, _) =
        browser_calls_daemon(Engine::Firefox, "vp8", "\"vp8\", \"h264\"", "viewer", true).await;
    assert_eq!(codec_of(&report), "VP8");
});

netns_test!(the_daemon_calls_firefox_vp8, Net::WithDummyRoute, {
    let (report, _) = daemon_calls_browser(Engine::Firefox, "\"vp8\"").await;
    assert_eq!(codec_of(&report), "VP8");
});

netns_test!(
    firefox_intercom_sends_camera_and_microphone,
    Net::WithDummyRoute,
    {
        let (_, daemon) =
            browser_calls_daemon(Engine::Firefox, "vp8", "\"vp8\"", "intercom", true).await;
        assert!(
            daemon["video_frames"].as_u64().unwrap_or(0) >= 30,
            "{daemon}"
        );
        assert!(
            daemon["audio_buffers"].as_u64().unwrap_or(0) > 0,
            "{daemon}"
        );
    }
);

// Firefox here has no H.264 (its OpenH264 plugin is downloaded at run time, which this
// machine cannot do): the page says so and the call goes ahead in VP8.
netns_test!(
    firefox_without_h264_says_so_and_falls_back_to_vp8,
    Net::WithDummyRoute,
    {
        let (report, _) =
            browser_calls_daemon(Engine::Firefox, "h264", "\"vp8\", \"h264\"", "viewer", true)
                .await;
        assert_eq!(codec_of(&report), "VP8");
        let errors = report["errors"].to_string();
        assert!(errors.contains("cannot use H264"), "{errors}");
    }
);

// The built-in page used as a person would: open it, click "Call" next to the device, and
// see the video play. A screenshot of the page mid-call is kept as a test artifact.
netns_test!(
    a_person_opens_the_page_clicks_call_and_sees_video,
    Net::LoopbackOnly,
    {
        let profile = profile_with_codecs("front-door", "", "\"vp8\"");
        let daemon = Proc::daemon("front-door", &profile, &[]);
        let chrome = common::browser::Driven::start().await;
        chrome
            .open(&format!("http://{}/?id=visitor", daemon.addr))
            .await;
        chrome.click("#peers button[data-peer='front-door']").await;
        let playing = wait_for(
            "the remote video to play",
            Duration::from_secs(30),
            || async {
                let v = chrome
                    .script(
                        "const v = document.getElementById('remote'); \
                 return {w: v.videoWidth, t: v.currentTime, paused: v.paused, \
                 stats: document.getElementById('stats').textContent, \
                 bar: !document.getElementById('call-bar').hidden};",
                    )
                    .await;
                (v["w"].as_u64().unwrap_or(0) > 0
                    && v["t"].as_f64().unwrap_or(0.0) > 1.5
                    && v["paused"] == false)
                    .then_some(v)
            },
        )
        .await;
        assert_eq!(
            playing["bar"], true,
            "the call bar (hang up) is shown: {playing}"
        );
        assert!(
            playing["stats"].as_str().unwrap_or("").contains("VP8"),
            "{playing}"
        );
        let png = chrome.screenshot().await;
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(artifacts_dir().join("page-in-call.png"), &png).expect("write screenshot");

        // Hanging up from the page ends the daemon's side too.
        chrome.click("#hangup").await;
        wait_idle(&daemon).await;
    }
);

// The page as the intercom's answering station: an incoming call rings (Accept and Reject,
// the caller told `ringing`), nothing plays until a person clicks Accept, then the video does.
// The door has no speaker (its ALSA device does not exist): the page's microphone reaches a
// door that cannot play it, and the call goes on all the same.
netns_test!(
    an_incoming_call_rings_on_the_page_and_accept_shows_video,
    Net::LoopbackOnly,
    {
        let speakerless = "[receive]\naudio = \"alsa\"\naudio_device = \"webrtcd_no_speaker\"";
        let profile = profile_with_codecs("door-bell", speakerless, "\"vp8\"");
        let daemon = Proc::daemon("door-bell", &profile, &[]);
        let chrome = common::browser::Driven::start().await;
        chrome
            .open(&format!(
                "http://{}/?id=kiosk&autoanswer=0&mode=intercom",
                daemon.addr
            ))
            .await;
        wait_peer(&daemon, "kiosk").await;
        let session = place_call(&daemon, "kiosk").await;
        let page = "const v = document.getElementById('remote'); \
             return {ringing: !document.getElementById('incoming').hidden, \
             from: document.getElementById('incoming-from').textContent, \
             tone: ringAudio ? ringAudio.ctx.state : null, \
             w: v.videoWidth, t: v.currentTime, paused: v.paused};";
        // It rings, and its tone sounds (an AudioContext starts suspended, then runs: on a
        // machine with no sound card, into Chromium's own output).
        let ringing = wait_for("the page to ring", Duration::from_secs(20), || async {
            let v = chrome.script(page).await;
            (v["ringing"] == true && v["tone"] == "running").then_some(v)
        })
        .await;
        assert_eq!(ringing["from"], "door-bell", "{ringing}");
        // The caller heard it ring, and nothing plays while it does.
        wait_call(&daemon, &session, "ringing", |c| c["state"] == "ringing").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let still = chrome.script(page).await;
        assert_eq!(still["w"], 0, "video before accept: {still}");
        let png = chrome.screenshot().await;
        std::fs::write(artifacts_dir().join("page-ringing.png"), &png).expect("write screenshot");

        chrome.click("#accept").await;
        let playing = wait_for(
            "the remote video to play",
            Duration::from_secs(30),
            || async {
                let v = chrome.script(page).await;
                (v["w"].as_u64().unwrap_or(0) > 0
                    && v["t"].as_f64().unwrap_or(0.0) > 1.0
                    && v["paused"] == false)
                    .then_some(v)
            },
        )
        .await;
        assert_eq!(playing["ringing"], false, "{playing}");
        assert_eq!(
            playing["tone"],
            serde_json::Value::Null,
            "rings on: {playing}"
        );
        wait_call(&daemon, &session, "connected", |c| {
            c["state"] == "connected"
        })
        .await;
        // The page's microphone reached the door, whose speaker is missing: said, not fatal.
        let speakerless = wait_call(&daemon, &session, "the door's speaker lost", |c| {
            c["devices"]["speaker"] == "lost"
        })
        .await;
        assert_eq!(speakerless["state"], "connected", "{speakerless}");
        assert!(
            speakerless["rtp_packets"]["audio_received"]
                .as_u64()
                .unwrap_or(0)
                > 0,
            "{speakerless}"
        );
        assert_eq!(hang_up(&daemon, &session).await, 204);
        wait_idle(&daemon).await;

        // Rung again, and rejected with the page's button: the caller hears `rejected`.
        let rejected = place_call(&daemon, "kiosk").await;
        wait_for(
            "the page to ring again",
            Duration::from_secs(20),
            || async {
                let v = chrome.script(page).await;
                (v["ringing"] == true).then_some(v)
            },
        )
        .await;
        chrome.click("#reject").await;
        wait_for("the call to end", Duration::from_secs(10), || async {
            calls(&daemon)
                .await
                .iter()
                .all(|c| c["session"] != rejected.as_str())
                .then_some(())
        })
        .await;
        assert_eq!(ended_with(&daemon, "rejected").await, 1);
        let after = chrome.script(page).await;
        assert_eq!(after["ringing"], false, "{after}");

        // The other way: the page calls a door that rings, and says so until it is accepted.
        // The door answers early (protocol 1.2): the page's connection and DataChannel come
        // up while it rings, and nothing passes until the accept — no picture either way (the
        // page talks: its camera's packets reach the door, which plays none), and the page's
        // DataChannel text reaches the door's local programs only after it.
        let ring = profile_with_codecs("ring-door", "answer = \"ring\"", "\"vp8\"");
        let socket = artifacts_dir().join("ring-door-bridge.sock");
        let config = config_file(
            "ring-door",
            &format!("[bridge]\nsocket = '{}'\n", socket.display()),
        );
        let door = Proc::daemon(
            "ring-door",
            &ring,
            &["--relay", &daemon.ws_url(), "--config", &config],
        );
        let bridge = wait_for("the bridge socket", Duration::from_secs(10), || async {
            tokio::net::UnixStream::connect(&socket).await.ok()
        })
        .await;
        let (bridge_read, _bridge_write) = bridge.into_split();
        let mut bridge_lines =
            tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(bridge_read));
        wait_peer(&daemon, "ring-door").await;
        let call_button = "#peers button[data-peer='ring-door']";
        wait_for("the door on the page", Duration::from_secs(10), || async {
            let found = chrome
                .script(&format!(
                    "return !!document.querySelector(\"{call_button}\");"
                ))
                .await;
            (found == true).then_some(())
        })
        .await;
        chrome
            .script("document.getElementById('mode').value = 'intercom'; return true;")
            .await;
        chrome.click(call_button).await;
        let state = "return document.getElementById('call-state').textContent;";
        wait_for(
            "the page to say it rings",
            Duration::from_secs(20),
            || async { (chrome.script(state).await == "ringing…").then_some(()) },
        )
        .await;
        let rung = wait_for("the door to ring", Duration::from_secs(10), || async {
            calls(&door)
                .await
                .into_iter()
                .find(|c| c["state"] == "ringing")
        })
        .await;
        let rung = rung["session"].as_str().unwrap_or_default().to_string();
        let early = "const c = state.call; return {pc: c.pc.connectionState, \
             channel: c.channel && c.channel.readyState, \
             text: document.getElementById('call-state').textContent, \
             w: document.getElementById('remote').videoWidth};";
        let up = wait_for(
            "the page to connect while the door rings",
            Duration::from_secs(20),
            || async {
                let v = chrome.script(early).await;
                (v["pc"] == "connected" && v["channel"] == "open").then_some(v)
            },
        )
        .await;
        assert_eq!(up["text"], "ringing…", "{up}");
        chrome
            .script("state.call.channel.send('open-before-accept'); return true;")
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let still = chrome.script(early).await;
        assert_eq!(
            still["w"], 0,
            "the door's picture before the accept: {still}"
        );
        let door_call = || async {
            calls(&door)
                .await
                .into_iter()
                .find(|c| c["session"] == rung.as_str())
                .expect("the door's call")
        };
        let ringing = door_call().await;
        assert_eq!(ringing["state"], "ringing", "{ringing}");
        assert_eq!(ringing["datachannel"], "open", "{ringing}");
        assert!(
            ringing["rtp_packets"]["video_received"]
                .as_u64()
                .unwrap_or(0)
                > 0,
            "the page's camera reaches the door while it rings: {ringing}"
        );
        assert_eq!(
            ringing["video_frames"], 0,
            "played before the accept: {ringing}"
        );
        assert_eq!(
            ringing["audio_buffers"], 0,
            "played before the accept: {ringing}"
        );
        assert_eq!(
            post_status(&door, &format!("/api/calls/{rung}/accept")).await,
            204
        );
        wait_for(
            "the door's video to play",
            Duration::from_secs(30),
            || async {
                let v = chrome.script(page).await;
                (v["t"].as_f64().unwrap_or(0.0) > 1.0 && v["paused"] == false).then_some(())
            },
        )
        .await;
        // The door plays the page's camera now: it asked the page for a keyframe.
        wait_for(
            "the door to show the page's camera",
            Duration::from_secs(10),
            || async {
                (door_call().await["video_frames"].as_u64().unwrap_or(0) > 0).then_some(())
            },
        )
        .await;
        chrome
            .script("state.call.channel.send('open-after-accept'); return true;")
            .await;
        let first = tokio::time::timeout(Duration::from_secs(10), bridge_lines.next_line())
            .await
            .expect("no DataChannel text reached the door's bridge within 10 s")
            .expect("read the bridge")
            .expect("the bridge closed");
        let first: Value = serde_json::from_str(&first).expect("a JSON line");
        assert_eq!(
            first["data"], "open-after-accept",
            "the first text the door's local programs got (the one sent while it rang must be dropped): {first}"
        );
    }
);
