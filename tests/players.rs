//! Players that know nothing of webrtcd's signaling. WHEP: one HTTP POST (RFC 9725), played by
//! aiortc (an independent stack that never trickles: its candidates are in its offer) and by
//! Chromium with a published WHEP client; the HTTP rules are checked with raw requests. RTSP:
//! ffprobe, ffmpeg and GStreamer's rtspsrc, as NVRs use it.
//!
//! aioice never uses 127.0.0.1: these run in a namespace with a dummy interface, and every
//! packet stays inside it.

mod common;

use std::time::{Duration, Instant};

use common::browser::Net;
use common::http::send;
use common::rtsp::{basic, describe_and_stay, describe_status, ffprobe_streams, run_tool};
use common::*;
use serde_json::Value;

const VIEW: &str = "whep-view-token-0123";
const ADMIN: &str = "whep-admin-token-0123";

/// A daemon with an admin and a view token, `top` in its profile and `config` (sections)
/// at the end of its configuration.
fn whep_daemon(name: &str, top: &str, config: &str) -> Proc {
    let cfg = config_file(
        name,
        &format!(
            "tokens = [{{ secret = '{ADMIN}', scope = 'admin' }}, \
             {{ secret = '{VIEW}', scope = 'view' }}]\n\
             allowed_origins = ['http://player.example']\n{config}"
        ),
    );
    Proc::daemon(name, &light_profile(name, top), &["--config", &cfg])
}

/// `GET path` on `p` with the admin token: the body's text.
async fn admin_get(p: &Proc, path: &str) -> String {
    let (_, body) = webrtcd::service::api_client::request("GET", &p.api(path), None, Some(ADMIN))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    body
}

async fn admin_calls(p: &Proc) -> Vec<Value> {
    serde_json::from_str::<Vec<Value>>(&admin_get(p, "/api/calls").await).unwrap_or_default()
}

/// Waits (bounded) until `p` runs no encoder.
async fn wait_encoders_stopped(p: &Proc, within: Duration) {
    wait_for("the encoders to stop", within, || async {
        let v: Value = serde_json::from_str(&admin_get(p, "/api/status").await).unwrap_or_default();
        (v["encoders"]["video"] == 0 && v["encoders"]["audio"] == 0).then_some(())
    })
    .await;
}

/// The smallest offer that gets past the HTTP checks (it is refused or queued later).
const TINY_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n\
a=rtpmap:96 VP8/90000\r\n";

netns_test!(
    an_aiortc_player_plays_over_whep_and_leaves_with_delete,
    Net::WithDummyRoute,
    {
        let door = whep_daemon("whep-door", "max_sessions = 1", "");
        let url = format!("http://{}/whep", door.addr);
        let started = Instant::now();
        let player = aiortc::spawn(
            "whep-player",
            &[
                "--whep".into(),
                url,
                "--token".into(),
                VIEW.into(),
                "--stay".into(),
                "--seconds".into(),
                "8".into(),
            ],
        );
        // The WHEP session is an ordinary call: role `whep`, and it plays.
        let call = poll(Duration::from_secs(15), || async {
            admin_calls(&door).await.into_iter().find(|c| {
                c["role"] == "whep" && c["rtp_packets"]["video_sent"].as_u64() > Some(100)
            })
        })
        .await
        .expect("a WHEP call sending video");
        let session = call["session"].as_str().expect("session").to_string();
        let path = format!("/whep/{session}");
        let auth = format!("Bearer {VIEW}");
        let frag = |ufrag: &str| {
            format!(
                "a=ice-ufrag:{ufrag}\r\na=ice-pwd:fragpasswordfragpassword\r\nm=audio 9 RTP/AVP 0\r\n\
                 a=mid:0\r\na=candidate:1 1 udp 2122260223 10.213.0.1 9 typ host\r\n"
            )
        };
        // The one session allowed is taken: a second offer is refused, and nothing else.
        let busy = send(
            &door.addr,
            "POST",
            "/whep",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/sdp"),
            ],
            TINY_OFFER,
        )
        .await;
        assert_eq!(busy.status, 503, "{}", busy.body);
        // Candidates for a session whose ETag does not match: 412; a session that is not
        // there: 404.
        let stale = send(
            &door.addr,
            "PATCH",
            &path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/trickle-ice-sdpfrag"),
                ("If-Match", "\"stale\""),
            ],
            "",
        )
        .await;
        assert_eq!(stale.status, 412, "{}", stale.body);
        let unknown = send(
            &door.addr,
            "PATCH",
            "/whep/0123456789abcdef",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/trickle-ice-sdpfrag"),
            ],
            "",
        )
        .await;
        assert_eq!(unknown.status, 404);
        let gone = send(
            &door.addr,
            "DELETE",
            "/whep/0123456789abcdef",
            &[("Authorization", &auth)],
            "",
        )
        .await;
        assert_eq!(gone.status, 404);
        let report = aiortc::finished(player, &door).await;
        eprintln!(
            "WHEP player: {report}; {:.1} s",
            started.elapsed().as_secs_f64()
        );
        assert_eq!(report["status"], 201, "{report}");
        assert_eq!(report["location"], path.as_str(), "{report}");
        assert_eq!(report["content_type"], "application/sdp", "{report}");
        assert!(
            report["etag"].as_str().is_some_and(|e| e.starts_with('"')),
            "{report}"
        );
        assert_eq!(
            report["answer_has_candidates"], true,
            "non-trickling players need them"
        );
        assert!(report["video_frames"].as_u64() >= Some(30), "{report}");
        assert!(report["audio_frames"].as_u64() > Some(0), "{report}");
        assert_eq!(report["delete_status"], 200, "{report}");
        // DELETE ended the call.
        let ended = poll(Duration::from_secs(10), || async {
            admin_calls(&door).await.is_empty().then_some(())
        })
        .await;
        assert!(ended.is_some(), "the WHEP call outlived its DELETE");
        let after = send(
            &door.addr,
            "PATCH",
            &path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/trickle-ice-sdpfrag"),
            ],
            &frag("x"),
        )
        .await;
        assert_eq!(after.status, 404, "a deleted session is gone");
    }
);

netns_test!(
    an_ice_restart_is_answered_over_patch,
    Net::WithDummyRoute,
    {
        let door = whep_daemon("whep-restart", "", "");
        let url = format!("http://{}/whep", door.addr);
        let player = aiortc::spawn(
            "whep-restarter",
            &[
                "--whep".into(),
                url,
                "--token".into(),
                VIEW.into(),
                "--stay".into(),
                "--seconds".into(),
                "8".into(),
            ],
        );
        let call = poll(Duration::from_secs(15), || async {
            admin_calls(&door)
                .await
                .into_iter()
                .find(|c| c["role"] == "whep" && c["state"] == "connected")
        })
        .await
        .expect("a connected WHEP call");
        let path = format!("/whep/{}", call["session"].as_str().unwrap_or_default());
        let auth = format!("Bearer {VIEW}");
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/trickle-ice-sdpfrag"),
        ];
        // Trickled candidates: 204.
        let trickle = send(
            &door.addr,
            "PATCH",
            &path,
            &headers,
            "a=mid:0\r\na=candidate:2 1 udp 2122260223 10.213.0.1 9 typ host\r\n",
        )
        .await;
        assert_eq!(trickle.status, 204, "{}", trickle.body);
        // New credentials: an ICE restart, answered with the daemon's new ones and a new ETag.
        let restart = send(&door.addr, "PATCH", &path, &headers, "a=ice-ufrag:rstr\r\na=ice-pwd:restartpasswordrestartpass\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n").await;
        assert_eq!(restart.status, 200, "{}", restart.body);
        assert_eq!(
            restart.header("content-type"),
            "application/trickle-ice-sdpfrag"
        );
        assert!(restart.body.contains("a=ice-ufrag:"), "{}", restart.body);
        assert!(restart.body.contains("a=ice-pwd:"), "{}", restart.body);
        assert!(
            restart.header("etag").ends_with(".2\""),
            "{}",
            restart.header("etag")
        );
        let restarts = poll(Duration::from_secs(5), || async {
            admin_calls(&door)
                .await
                .into_iter()
                .find(|c| c["ice_restarts"].as_u64() >= Some(1))
        })
        .await;
        assert!(restarts.is_some(), "the call counts the restart");
        let _ = aiortc::finished(player, &door).await;
    }
);

// One address cannot take every session with WHEP offers that never connect: past
// `whep_max_per_address` it gets 503 while a player elsewhere is served, and sessions that do
// not connect within `connect_timeout_secs` end and let the encoders stop.
netns_test!(
    whep_offers_that_never_connect_are_capped_per_address_and_reclaimed,
    Net::LoopbackOnly,
    {
        let door = whep_daemon(
            "whep-caps",
            "max_sessions = 4\nlinger_ms = 500",
            "whep_max_per_address = 2\nconnect_timeout_secs = 3\n",
        );
        let auth = format!("Bearer {VIEW}");
        // A complete offer (credentials, fingerprint) whose player never does ICE.
        const TINY_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
a=recvonly\r\na=rtcp-mux\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB\r\na=setup:actpass\r\na=rtpmap:96 VP8/90000\r\n";
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/sdp"),
        ];
        let offer_from = |from: &'static str| {
            common::http::send_from(from, &door.addr, "POST", "/whep", &headers, TINY_OFFER)
        };
        for n in 0..2 {
            let opened = offer_from("127.0.0.5").await;
            assert_eq!(opened.status, 201, "offer {n}: {}", opened.body);
        }
        let third = offer_from("127.0.0.5").await;
        assert_eq!(third.status, 503, "{}", third.body);
        // Another host is still served: the attacker does not hold max_sessions.
        let other = offer_from("127.0.0.1").await;
        assert_eq!(other.status, 201, "{}", other.body);
        assert_eq!(admin_calls(&door).await.len(), 3);
        // None connects: all three end within connect_timeout_secs (3 s, and a margin).
        let started = Instant::now();
        wait_for(
            "the unconnected sessions to end",
            Duration::from_secs(10),
            || async { admin_calls(&door).await.is_empty().then_some(()) },
        )
        .await;
        eprintln!("reclaimed {:?} after the last offer", started.elapsed());
        let metrics = admin_get(&door, "/metrics").await;
        let timed_out: f64 = metrics
            .lines()
            .filter(|l| {
                l.starts_with("webrtcd_sessions_ended_total") && l.contains("reason=\"timeout\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(timed_out >= 3.0, "ended with timeout: {timed_out}");
        // And the encoders they started stop (after the profile's linger).
        wait_encoders_stopped(&door, Duration::from_secs(10)).await;
        // The attacker's address may offer again.
        let again = offer_from("127.0.0.5").await;
        assert_eq!(again.status, 201, "{}", again.body);
    }
);

netns_test!(
    whep_requests_are_checked_before_any_call_starts,
    Net::LoopbackOnly,
    {
        let door = whep_daemon(
            "whep-rules",
            "",
            "[ice]\nstun_server = 'stun://127.0.0.1:3478'\n",
        );
        let auth = format!("Bearer {VIEW}");
        let sdp = ("Content-Type", "application/sdp");
        // No token: 401. A token but not SDP: 415 (text/plain: a form could send it).
        let anonymous = send(&door.addr, "POST", "/whep", &[sdp], TINY_OFFER).await;
        assert_eq!(anonymous.status, 401);
        for kind in ["text/plain", "application/json"] {
            let wrong = send(
                &door.addr,
                "POST",
                "/whep",
                &[("Authorization", &auth), ("Content-Type", kind)],
                TINY_OFFER,
            )
            .await;
            assert_eq!(wrong.status, 415, "{kind}: {}", wrong.body);
        }
        // Not an offer: 400, with a short text saying why.
        let garbage = send(
            &door.addr,
            "POST",
            "/whep",
            &[("Authorization", &auth), sdp],
            "hello",
        )
        .await;
        assert_eq!(garbage.status, 400);
        assert!(!garbage.body.is_empty());
        // An offer of nothing the device can answer (H.265 only): 400, no session.
        let h265 = TINY_OFFER
            .replace("VP8/90000", "H265/90000")
            .replace("opus/48000/2", "L16/8000");
        let nothing = send(
            &door.addr,
            "POST",
            "/whep",
            &[("Authorization", &auth), sdp],
            &h265,
        )
        .await;
        assert_eq!(nothing.status, 400, "{}", nothing.body);
        // Preflight: pages of other origins are refused; an allowed one gets CORS headers
        // and, with no token, STUN but no TURN credentials.
        let evil = send(
            &door.addr,
            "OPTIONS",
            "/whep",
            &[
                ("Origin", "http://evil.example"),
                ("Access-Control-Request-Method", "POST"),
            ],
            "",
        )
        .await;
        assert_eq!(evil.status, 403);
        let allowed = send(
            &door.addr,
            "OPTIONS",
            "/whep",
            &[
                ("Origin", "http://player.example"),
                ("Access-Control-Request-Method", "POST"),
                (
                    "Access-Control-Request-Headers",
                    "authorization, content-type",
                ),
            ],
            "",
        )
        .await;
        assert_eq!(allowed.status, 204);
        assert_eq!(
            allowed.header("access-control-allow-origin"),
            "http://player.example"
        );
        assert!(
            allowed
                .header("access-control-allow-headers")
                .contains("Authorization")
        );
        assert!(
            allowed
                .header("access-control-allow-methods")
                .contains("PATCH")
        );
        assert!(
            allowed.header("link").contains("rel=\"ice-server\""),
            "{:?}",
            allowed.headers
        );
        assert!(
            !allowed.header("link").contains("credential"),
            "{:?}",
            allowed.headers
        );
        // With a token (a player that authenticates its preflight) and `turn_secret`: TURN
        // credentials of the REST scheme, short-lived, in the Link header.
        let turn = whep_daemon(
            "whep-turn",
            "",
            "[ice]\nturn_servers = ['turn://127.0.0.1:3478?transport=udp']\n\
             turn_secret = 'whep-turn-secret'\n",
        );
        let preflight = |token: Option<String>| {
            let addr = turn.addr.clone();
            async move {
                let mut headers = vec![
                    ("Origin", "http://player.example".to_string()),
                    ("Access-Control-Request-Method", "POST".to_string()),
                ];
                if let Some(token) = token {
                    headers.push(("Authorization", token));
                }
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                send(&addr, "OPTIONS", "/whep", &headers, "").await
            }
        };
        let with_token = preflight(Some(auth.clone())).await;
        assert_eq!(with_token.status, 204);
        let link = with_token.header("link");
        assert!(
            link.contains("<turn:127.0.0.1:3478?transport=udp>")
                && link.contains("credential=\"")
                && link.contains(":whep\""),
            "{link}"
        );
        let without = preflight(None).await;
        assert!(
            !without.header("link").contains("credential"),
            "{:?}",
            without.headers
        );
        // Deleting something that is not a WHEP session is a 404, never the end of a call.
        let not_whep = send(
            &door.addr,
            "DELETE",
            "/whep/not-a-session",
            &[("Authorization", &auth)],
            "",
        )
        .await;
        assert_eq!(not_whep.status, 404);
        assert!(admin_calls(&door).await.is_empty());
    }
);

/// The page a player's site would have: the published `whip-whep` client (npm, installed by
/// `make test` into tests/web), playing the daemon's `/whep` from another origin.
const PLAYER_PAGE: &str = r#"<!doctype html>
<video id="v" autoplay muted playsinline></video>
<script type="module">
import { WHEPClient } from "/whep.js";
const params = new URLSearchParams(location.search);
const result = (window.result = { state: "new", frames: 0, audio: 0, error: null });
const started = performance.now();
const video = document.getElementById("v");
const pc = new RTCPeerConnection();
pc.addTransceiver("video", { direction: "recvonly" });
pc.addTransceiver("audio", { direction: "recvonly" });
pc.ontrack = (e) => {
  if (e.track.kind === "audio") {
    // Played, so that it is decoded (samples count only what is played out).
    window.speaker = new Audio();
    window.speaker.srcObject = new MediaStream([e.track]);
    window.speaker.play().catch(() => {});
    return;
  }
  video.srcObject = new MediaStream([e.track]);
  video.requestVideoFrameCallback(() => {
    result.firstFrameMs = Math.round(performance.now() - started);
  });
};
pc.addEventListener("connectionstatechange", () => { result.state = pc.connectionState; });
const whep = new WHEPClient();
whep.view(pc, params.get("url"), params.get("token")).catch((e) => { result.error = String(e); });
setInterval(async () => {
  for (const s of (await pc.getStats()).values()) {
    if (s.type === "inbound-rtp" && s.kind === "video") result.frames = s.framesDecoded || 0;
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      result.audio = s.packetsReceived || 0;
      result.audioSamples = (s.totalSamplesReceived || 0) - (s.concealedSamples || 0);
    }
  }
}, 250);
window.leave = () => whep.stop().then(() => { result.stopped = true; }, (e) => { result.error = String(e); });
</script>
"#;

/// Serves [`PLAYER_PAGE`] and the library on a port of its own (another origin than the
/// daemon's); returns that origin.
async fn serve_player_page() -> String {
    use axum::routing::get;
    let library = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/web/node_modules/whip-whep/whep.js");
    let script = std::fs::read_to_string(&library)
        .unwrap_or_else(|e| panic!("{library:?} ({e}): make test installs it (npm)"));
    let app = axum::Router::new()
        .route("/", get(|| async { axum::response::Html(PLAYER_PAGE) }))
        .route(
            "/whep.js",
            get(move || async move { ([("content-type", "text/javascript")], script.clone()) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let origin = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    origin
}

// With a default route: Chromium without media permission offers only its default route's
// address, behind an mDNS name (see the browsers tests).
netns_test!(
    chromium_plays_over_whep_with_a_published_client_from_another_origin,
    Net::WithDummyRoute,
    {
        let page = serve_player_page().await;
        let cfg = config_file(
            "whep-chromium",
            &format!(
                "tokens = [{{ secret = '{ADMIN}', scope = 'admin' }}, \
                 {{ secret = '{VIEW}', scope = 'view' }}]\nallowed_origins = ['{page}']\n"
            ),
        );
        let door = Proc::daemon(
            "whep-chromium",
            &light_profile("whep-chromium", ""),
            &["--config", &cfg],
        );
        let chrome = common::browser::Driven::start().await;
        chrome
            .open(&format!(
                "{page}/?url=http://{}/whep&token={VIEW}",
                door.addr
            ))
            .await;
        let played = poll(Duration::from_secs(30), || async {
            let result = chrome.script("return window.result || null;").await;
            // Video decoded, and audio decoded too (samples that were not concealment).
            (result["frames"].as_u64() >= Some(30) && result["audioSamples"].as_u64() > Some(0))
                .then_some(result)
        })
        .await;
        let result = chrome.script("return window.result || null;").await;
        let played = played.unwrap_or_else(|| panic!("Chromium did not play: {result}"));
        eprintln!("Chromium over WHEP (whip-whep 1.2.0): {played}");
        let calls = admin_calls(&door).await;
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0]["role"], "whep");
        // The client trickled its candidates with PATCH (it posts its offer before gathering).
        assert!(
            door.log_text().contains("WHEP patch"),
            "no PATCH reached the daemon"
        );
        // Leaving sends DELETE, which ends the call.
        chrome.script("window.leave(); return true;").await;
        let ended = poll(Duration::from_secs(10), || async {
            admin_calls(&door).await.is_empty().then_some(())
        })
        .await;
        let result = chrome.script("return window.result || null;").await;
        assert!(ended.is_some(), "DELETE did not end the call: {result}");
        assert!(
            door.log_text().contains("WHEP delete"),
            "no DELETE reached the daemon"
        );
        assert_eq!(result["error"], Value::Null, "{result}");
    }
);

// ---- RTSP -----------------------------------------------------------------------------------

const RTSP_TOKEN: &str = "rtsp-view-token-0123";

/// A camera with H.264 and Opus serving RTSP on a free port; returns it and its RTSP URL
/// (with the Basic credentials NVRs are given).
fn rtsp_camera(name: &str) -> (Proc, String) {
    rtsp_camera_with(name, "")
}

/// [`rtsp_camera`] with more daemon configuration.
fn rtsp_camera_with(name: &str, extra: &str) -> (Proc, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let cfg = config_file(
        name,
        &format!(
            "tokens = [{{ secret = '{RTSP_TOKEN}', scope = 'view' }}, \
             {{ secret = '{ADMIN}', scope = 'admin' }}]\n\
             rtsp_listen = '127.0.0.1:{port}'\n{extra}"
        ),
    );
    let camera = Proc::daemon(
        name,
        &profile_with_codecs(name, "", "\"h264\""),
        &["--config", &cfg],
    );
    let url = format!("rtsp://webrtcd:{RTSP_TOKEN}@127.0.0.1:{port}/live");
    (camera, url)
}

/// Frames GStreamer's `rtspsrc` decodes from `url` over UDP in `window`, and how long after
/// its start the first came.
fn rtspsrc_frames_over_udp(url: &str, window: Duration) -> (u64, Option<Duration>) {
    use gst::prelude::*;
    gst::init().expect("GStreamer");
    let pipeline = gst::parse::launch(&format!(
        "rtspsrc location={url} protocols=udp latency=200 name=src \
         src. ! application/x-rtp,media=video ! rtph264depay ! avdec_h264 ! \
         appsink name=out sync=false emit-signals=false max-buffers=2 drop=true"
    ))
    .expect("pipeline")
    .downcast::<gst::Pipeline>()
    .expect("a pipeline");
    let sink = pipeline
        .by_name("out")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .expect("appsink");
    let started = Instant::now();
    pipeline.set_state(gst::State::Playing).expect("playing");
    let deadline = started + window;
    let (mut frames, mut first) = (0, None);
    while Instant::now() < deadline {
        if sink
            .try_pull_sample(gst::ClockTime::from_mseconds(100))
            .is_some()
        {
            frames += 1;
            first.get_or_insert_with(|| started.elapsed());
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    (frames, first)
}

netns_test!(
    nvrs_record_the_shared_stream_over_rtsp,
    Net::LoopbackOnly,
    {
        let (camera, url) = rtsp_camera("rtsp-camera");
        // What is there: H.264 at the profile's size, Opus and PCMA.
        let started = Instant::now();
        let (ok, probe) =
            ffprobe_streams(&url, "codec_name,width,height", Duration::from_secs(30)).await;
        let probe_time = started.elapsed();
        assert!(ok, "{probe}");
        assert!(
            probe.contains("codec_name=h264|width=320|height=240"),
            "{probe}"
        );
        assert!(probe.contains("codec_name=opus"), "{probe}");
        // G.711 A-law too, for recorders that take nothing else.
        assert!(probe.contains("codec_name=pcm_alaw"), "{probe}");
        // A recorder over TCP: 3 s into an MP4 that reads back with at least 60 frames.
        let mp4 = artifacts_dir().join("rtsp-record.mp4");
        let _ = std::fs::remove_file(&mp4);
        let mp4_text = mp4.to_string_lossy().into_owned();
        let (ok, text) = run_tool(
            "ffmpeg",
            [
                "-v",
                "error",
                "-rtsp_transport",
                "tcp",
                "-i",
                &url,
                "-t",
                "3",
                "-c",
                "copy",
                "-y",
                &mp4_text,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            Duration::from_secs(30),
        )
        .await;
        assert!(ok, "{text}");
        let (ok, counted) = run_tool(
            "ffprobe",
            [
                "-v",
                "error",
                "-count_frames",
                "-select_streams",
                "v",
                "-show_entries",
                "stream=nb_read_frames",
                "-of",
                "default=nw=1:nk=1",
                &mp4_text,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            Duration::from_secs(30),
        )
        .await;
        assert!(ok, "{counted}");
        let frames: u64 = counted.trim().parse().unwrap_or(0);
        assert!(frames >= 60, "{frames} frames recorded");
        // GStreamer's rtspsrc over UDP decodes frames too.
        let udp_url = url.clone();
        let (udp_frames, first_frame) = tokio::task::spawn_blocking(move || {
            rtspsrc_frames_over_udp(&udp_url, Duration::from_secs(3))
        })
        .await
        .expect("rtspsrc");
        assert!(
            udp_frames >= 30,
            "rtspsrc over UDP decoded {udp_frames} frames"
        );
        // Credentials: none or a wrong password is a 401; the token is a 200.
        assert_eq!(describe_status(&url, None).await, 401);
        assert_eq!(
            describe_status(&url, Some(&basic("wrong-password"))).await,
            401
        );
        assert_eq!(describe_status(&url, Some(&basic(RTSP_TOKEN))).await, 200);
        eprintln!(
            "RTSP: ffprobe {probe_time:?} to describe the stream; {frames} frames in 3 s over TCP, \
             {udp_frames} decoded over UDP in 3 s, the first {first_frame:?} after rtspsrc started"
        );
        let _ = camera;
    }
);

// `rtsp_max_clients`: a client over the limit is told 503 (not dropped unanswered), and its
// slot comes back when it leaves: many refused clients never lock recorders out.
netns_test!(
    rtsp_refuses_clients_over_its_limit_and_frees_their_slots,
    Net::LoopbackOnly,
    {
        let (camera, url) = rtsp_camera_with("rtsp-limit", "rtsp_max_clients = 1\n");
        let auth = basic(RTSP_TOKEN);
        // The RTSP listener comes up just after the HTTP one (not probed with a connection:
        // that would take the one slot for a moment).
        wait_for("the RTSP listener", Duration::from_secs(10), || {
            let up = camera.log_text().contains("listening on rtsp://");
            async move { up.then_some(()) }
        })
        .await;
        let (status, first) = describe_and_stay(&url, Some(&auth)).await;
        assert_eq!(status, 200);
        for _ in 0..5 {
            assert_eq!(describe_status(&url, Some(&auth)).await, 503);
        }
        drop(first);
        // The holder left: the next client is served (bounded: the server sees the close
        // on its own thread).
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = 0;
        while Instant::now() < deadline {
            last = describe_status(&url, Some(&auth)).await;
            if last == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(last, 200, "the slot was not given back");
        let _ = camera;
    }
);

/// One RTSP request on `stream`; the reply's status, `None` once the daemon has closed it.
async fn rtsp_request(
    stream: &mut tokio::net::TcpStream,
    request: &str,
    within: Duration,
) -> Option<u16> {
    rtsp_exchange(stream, request, within)
        .await
        .map(|(status, _)| status)
}

/// [`rtsp_request`], with the reply's header too.
async fn rtsp_exchange(
    stream: &mut tokio::net::TcpStream,
    request: &str,
    within: Duration,
) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + within;
    while !reply.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        reply.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&reply).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

// Admitted RTSP connections cannot hold more than they use: SETUP after SETUP without a
// `Session` header (each a session with a media pipeline: 100 of them made 815 threads) ends
// the connection at the third, and a connection that sets up no session (OPTIONS, then
// silence) is closed within 20 s. A recorder is served all along.
netns_test!(
    rtsp_connections_that_hold_without_playing_are_closed,
    Net::LoopbackOnly,
    {
        let (camera, url) = rtsp_camera("rtsp-hold");
        wait_for("the RTSP listener", Duration::from_secs(10), || {
            let up = camera.log_text().contains("listening on rtsp://");
            async move { up.then_some(()) }
        })
        .await;
        let parsed = url::Url::parse(&url).expect("url");
        let addr = format!("127.0.0.1:{}", parsed.port().expect("port"));
        let bare = format!("rtsp://{addr}/live");
        let auth = basic(RTSP_TOKEN);
        let threads_before = threads_of(camera.pid());
        // One connection, SETUP after SETUP, each without a Session header.
        let mut greedy = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let mut answered = Vec::new();
        for cseq in 1..=50 {
            let setup = format!(
                "SETUP {bare}/stream=0 RTSP/1.0\r\nCSeq: {cseq}\r\nAuthorization: {auth}\r\n\
                 Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
            );
            match rtsp_request(&mut greedy, &setup, Duration::from_secs(10)).await {
                Some(status) => answered.push(status),
                None => break,
            }
        }
        assert!(
            answered.len() <= 3 && answered.iter().all(|s| *s == 200),
            "SETUPs answered before the close: {answered:?}"
        );
        let threads = threads_of(camera.pid());
        assert!(
            threads < threads_before + 60,
            "threads {threads_before} → {threads}"
        );
        // A client that tears its session down and sets up another, three times over, holds
        // one at a time: it stays.
        let mut steady = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        for round in 0..3 {
            let setup = format!(
                "SETUP {bare}/stream=0 RTSP/1.0\r\nCSeq: {}\r\nAuthorization: {auth}\r\n\
                 Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n",
                2 * round + 1
            );
            let (status, reply) = rtsp_exchange(&mut steady, &setup, Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("round {round}: closed at SETUP"));
            assert_eq!(status, 200, "{reply}");
            let session = reply
                .lines()
                .find_map(|l| l.strip_prefix("Session: "))
                .and_then(|v| v.split(';').next())
                .expect("a Session header")
                .to_string();
            let teardown = format!(
                "TEARDOWN {bare} RTSP/1.0\r\nCSeq: {}\r\nAuthorization: {auth}\r\n\
                 Session: {session}\r\n\r\n",
                2 * round + 2
            );
            let torn = rtsp_request(&mut steady, &teardown, Duration::from_secs(10)).await;
            assert_eq!(torn, Some(200), "round {round}: TEARDOWN");
        }
        drop(steady);
        // OPTIONS from another host, then silence: closed within SESSION_WITHIN (20 s).
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.5:0".parse().expect("addr"))
            .expect("bind");
        let mut idle = socket
            .connect(addr.parse().expect("addr"))
            .await
            .expect("connect");
        let options = format!("OPTIONS {bare} RTSP/1.0\r\nCSeq: 1\r\n\r\n");
        assert_eq!(
            rtsp_request(&mut idle, &options, Duration::from_secs(20)).await,
            Some(200)
        );
        let started = Instant::now();
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::io::AsyncReadExt::read(&mut idle, &mut byte),
        )
        .await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "the idle client is still connected: {closed:?}"
        );
        eprintln!(
            "an idle client was closed {:?} after its OPTIONS",
            started.elapsed()
        );
        // A recorder is served.
        assert_eq!(describe_status(&url, Some(&auth)).await, 200);
        assert!(!camera.log_text().contains("GStreamer-CRITICAL"));
        let mut camera = camera;
        assert!(camera.terminate().is_some_and(|s| s.success()));
    }
);

// A recorder probes (DESCRIBE) as the previous client leaves, 40 times: every DESCRIBE is
// answered 200. With one media shared by every client, a DESCRIBE that found the media while
// the last client's departure was unpreparing it got 503 ("media was not unprepared").
netns_test!(
    an_rtsp_describe_never_fails_because_another_client_leaves,
    Net::LoopbackOnly,
    {
        let (camera, url) = rtsp_camera("rtsp-churn");
        wait_for("the RTSP listener", Duration::from_secs(10), || {
            let up = camera.log_text().contains("listening on rtsp://");
            async move { up.then_some(()) }
        })
        .await;
        let auth = basic(RTSP_TOKEN);
        let mut statuses = Vec::new();
        let (status, mut previous) = describe_and_stay(&url, Some(&auth)).await;
        statuses.push(status);
        for _ in 0..40 {
            // The next one connects and asks while the previous one goes away.
            let leaving = tokio::spawn(async move { drop(previous) });
            let (status, next) = describe_and_stay(&url, Some(&auth)).await;
            let _ = leaving.await;
            statuses.push(status);
            previous = next;
        }
        drop(previous);
        let refused = statuses.iter().filter(|s| **s != 200).count();
        assert_eq!(refused, 0, "DESCRIBE statuses: {statuses:?}");
        // Every client's media let go of the encoders when it left: they stop.
        wait_encoders_stopped(&camera, Duration::from_secs(15)).await;
    }
);

/// One attacker's connection flood on the RTSP port, for `for_how_long`: `count` connections
/// from `from`, held silent, re-made as the daemon closes them; every tenth sends a request
/// (a refused client) and every tenth after that garbage. How many connections were made.
async fn flood_rtsp(
    addr: std::net::SocketAddr,
    from: &str,
    count: usize,
    for_how_long: Duration,
) -> usize {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let from: std::net::IpAddr = from.parse().expect("address");
    let deadline = tokio::time::Instant::now() + for_how_long;
    let made = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let made = std::sync::Arc::clone(&made);
        tasks.spawn(async move {
            // Bounded: until the deadline, and at most 1 000 connections per task.
            for _ in 0..1000 {
                if tokio::time::Instant::now() >= deadline {
                    return;
                }
                let socket = tokio::net::TcpSocket::new_v4().expect("socket");
                socket
                    .bind(std::net::SocketAddr::new(from, 0))
                    .expect("bind");
                let Ok(Ok(mut stream)) =
                    tokio::time::timeout_at(deadline, socket.connect(addr)).await
                else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match i % 20 {
                    0 => {
                        let _ = stream
                            .write_all(b"OPTIONS rtsp://x/live RTSP/1.0\r\nCSeq: 9\r\n\r\n")
                            .await;
                    }
                    10 => {
                        let _ = stream.write_all(&[0u8, 0xff, 0x13, 0x37, b'\n']).await;
                    }
                    _ => {}
                }
                // Held until the daemon closes it (or the flood ends), then made again.
                let mut sink = [0u8; 512];
                loop {
                    match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
                        Ok(Ok(n)) if n > 0 => continue,
                        Ok(_) => break,
                        Err(_) => return,
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    made.load(std::sync::atomic::Ordering::Relaxed)
}

// The RTSP port under a connection flood (1 500 held from 127.0.0.5, re-made as they are
// closed, refused clients and garbage among them): the daemon lives, a recorder from
// 127.0.0.1 probes the stream meanwhile, HTTP answers, and silent connections are closed
// within seconds. Before the RTSP front, refused clients were answered through
// gst-rtsp-server's pre-options-request and the daemon aborted (munmap_chunk).
netns_test!(
    an_rtsp_connection_flood_neither_crashes_the_daemon_nor_locks_recorders_out,
    Net::LoopbackOnly,
    {
        webrtcd::service::listener::raise_fd_limit();
        let (camera, url) = rtsp_camera("rtsp-flood");
        let rtsp_addr: std::net::SocketAddr = {
            let parsed = url::Url::parse(&url).expect("url");
            format!("127.0.0.1:{}", parsed.port().expect("port"))
                .parse()
                .expect("addr")
        };
        wait_for("the RTSP listener", Duration::from_secs(10), || {
            let up = camera.log_text().contains("listening on rtsp://");
            async move { up.then_some(()) }
        })
        .await;
        let flood = tokio::spawn(flood_rtsp(
            rtsp_addr,
            "127.0.0.5",
            1500,
            Duration::from_secs(14),
        ));
        // The flood is in full swing.
        tokio::time::sleep(Duration::from_secs(2)).await;
        // A silent connection from the attacker's address is closed (idle before its first
        // request), or refused at once.
        {
            use tokio::io::AsyncReadExt;
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .bind("127.0.0.5:0".parse().expect("addr"))
                .expect("bind");
            let mut silent = socket.connect(rtsp_addr).await.expect("connect");
            let mut byte = [0u8; 1];
            let closed = tokio::time::timeout(Duration::from_secs(8), silent.read(&mut byte)).await;
            assert!(
                matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
                "a silent connection stayed open: {closed:?}"
            );
        }
        // A recorder from another address is served meanwhile.
        let (ok, probe) = ffprobe_streams(&url, "codec_name", Duration::from_secs(20)).await;
        assert!(
            ok && probe.contains("codec_name=h264"),
            "ffprobe during the flood: {probe}"
        );
        let (status, _) = webrtcd::service::api_client::request(
            "GET",
            &camera.api("/healthz"),
            None,
            Some(ADMIN),
        )
        .await
        .expect("healthz during the flood");
        assert_eq!(status, 200);
        let made = flood.await.expect("flood");
        assert!(made >= 1500, "the flood made {made} connections");
        // Alive, and still serving.
        assert!(
            std::fs::metadata(format!("/proc/{}", camera.pid())).is_ok(),
            "the daemon died: {}",
            camera.log_text()
        );
        assert_eq!(describe_status(&url, Some(&basic(RTSP_TOKEN))).await, 200);
        assert!(!camera.log_text().contains("munmap_chunk"));
        // And it shuts down cleanly.
        let mut camera = camera;
        assert!(camera.terminate().is_some_and(|s| s.success()));
    }
);

// Every kind of viewer at once — three WHEP players, two webrtcd viewers over signaling, an
// RTSP client — and the camera still runs one video and one Opus encoder (`encoders` counts
// the shared pipelines'; the RTSP media's G.711 transcode of the Opus stream is not in it).
netns_test!(
    every_kind_of_viewer_shares_one_encoder,
    Net::WithDummyRoute,
    {
        let (camera, url) = rtsp_camera("all-camera");
        let whep = format!("http://{}/whep", camera.addr);
        let players: Vec<_> = (0..3)
            .map(|i| {
                aiortc::spawn(
                    &format!("all-whep-{i}"),
                    &[
                        "--whep".into(),
                        whep.clone(),
                        "--token".into(),
                        RTSP_TOKEN.into(),
                        "--stay".into(),
                        "--seconds".into(),
                        "16".into(),
                    ],
                )
            })
            .collect();
        let mut viewers = Vec::new();
        for i in 0..2 {
            let id = format!("all-viewer-{i}");
            // Receive-only, and called by the camera. (A daemon that offers H.264 itself leaves
            // out profile-level-id, and the camera then finds no H.264 it can send.)
            let profile = write_profile(
                &id,
                &format!("name = \"{id}\"\n[receive]\nvideo = \"count\"\n"),
            );
            let viewer = Proc::daemon_env(
                &id,
                &profile,
                &["--relay", &camera.ws_url()],
                &[("WEBRTCD_RELAY_TOKEN", RTSP_TOKEN)],
            );
            let session = poll(Duration::from_secs(20), || async {
                let body = Some(format!("{{\"to\": \"{id}\"}}"));
                let url = camera.api("/api/calls");
                let (code, reply) =
                    webrtcd::service::api_client::request("POST", &url, body, Some(ADMIN))
                        .await
                        .ok()?;
                let reply: Value = serde_json::from_str(&reply).ok()?;
                (code == 201).then(|| reply["session"].as_str().map(str::to_string))?
            })
            .await
            .expect("the camera calls the viewer once it is registered");
            viewers.push((viewer, session));
        }
        let rtsp = tokio::task::spawn_blocking(move || {
            rtspsrc_frames_over_udp(&url, Duration::from_secs(10))
        });
        for (viewer, session) in &viewers {
            wait_call(viewer, session, "video", |c| {
                c["video_frames"].as_u64() > Some(30)
            })
            .await;
        }
        let all = poll(Duration::from_secs(20), || async {
            let calls = admin_calls(&camera).await;
            let whep = calls
                .iter()
                .filter(|c| c["role"] == "whep" && c["state"] == "connected")
                .count();
            (whep == 3 && calls.len() == 5).then_some(calls)
        })
        .await;
        assert!(
            all.is_some(),
            "not every viewer got in: {:?}",
            admin_calls(&camera).await
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (_, body) = webrtcd::service::api_client::request(
            "GET",
            &camera.api("/api/status"),
            None,
            Some(ADMIN),
        )
        .await
        .expect("status");
        let status: Value = serde_json::from_str(&body).expect("JSON");
        eprintln!("all kinds at once: {}", status);
        let (rtsp_frames, _) = rtsp.await.expect("rtspsrc");
        assert!(
            rtsp_frames >= 30,
            "the RTSP client decoded {rtsp_frames} frames"
        );
        assert_eq!(status["encoders"]["video"], 1, "{status}");
        assert_eq!(status["encoders"]["audio"], 1, "{status}");
        let video = status["shared_streams"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["codec"] == "h264"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(video["subscribers"], 6, "3 WHEP + 2 calls + RTSP: {status}");
        for player in players {
            let report = aiortc::finished(player, &camera).await;
            assert!(report["video_frames"].as_u64() >= Some(30), "{report}");
        }
    }
);

// ---- WHIP -----------------------------------------------------------------------------------

const WHIP_TOKEN: &str = "whip-endpoint-secret-0123";

/// The WHIP endpoint of tests/peers (aiortc) on `port`, reporting to `report`.
fn whip_endpoint(port: u16, report: &std::path::Path) -> std::process::Child {
    whip_endpoint_logging(port, report, "whip-endpoint.log")
}

fn whip_endpoint_logging(port: u16, report: &std::path::Path, log: &str) -> std::process::Child {
    let _ = std::fs::remove_file(report);
    std::process::Command::new(aiortc::python())
        .arg(aiortc::script("whip_endpoint.py"))
        .args([
            "--port",
            &port.to_string(),
            "--token",
            WHIP_TOKEN,
            "--seconds",
            "60",
        ])
        .arg("--report")
        .arg(report)
        .stderr(std::fs::File::create(artifacts_dir().join(log)).expect("log"))
        .spawn()
        .expect("python with aiortc (make test installs it)")
}

fn endpoint_report(report: &std::path::Path) -> Value {
    std::fs::read_to_string(report)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

async fn publish_status(camera: &Proc) -> Value {
    let (_, body) =
        webrtcd::service::api_client::request("GET", &camera.api("/api/status"), None, Some(ADMIN))
            .await
            .expect("status");
    serde_json::from_str::<Value>(&body).unwrap_or_default()["publish"][0].clone()
}

// The device publishes its stream to a WHIP endpoint (an SFU's ingest; here aiortc, an
// independent stack); the endpoint dies and comes back, and the device publishes again; on
// shutdown it DELETEs its session.
netns_test!(
    the_stream_is_published_over_whip_and_again_after_the_endpoint_restarts,
    Net::WithDummyRoute,
    {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let report = artifacts_dir().join("whip-endpoint.json");
        let mut endpoint = whip_endpoint(port, &report);
        let cfg = config_file(
            "whip-camera",
            &format!(
                "tokens = [{{ secret = '{ADMIN}', scope = 'admin' }}]\n\
                 [[publish]]\nurl = 'http://127.0.0.1:{port}/whip'\ntoken = '{WHIP_TOKEN}'\n"
            ),
        );
        let mut camera = Proc::daemon(
            "whip-camera",
            &light_profile("whip-camera", ""),
            &["--config", &cfg],
        );
        let frames_in = |within: u64| {
            let report = report.clone();
            poll(Duration::from_secs(within), move || {
                let report = report.clone();
                async move {
                    let r = endpoint_report(&report);
                    (r["video_frames"].as_u64() >= Some(30)).then_some(r)
                }
            })
        };
        let first = frames_in(30).await;
        assert!(
            first.is_some(),
            "the endpoint got no video: {}",
            endpoint_report(&report)
        );
        let status = publish_status(&camera).await;
        assert_eq!(status["state"], "publishing", "{status}");
        assert_eq!(status["url"], format!("http://127.0.0.1:{port}/whip"));
        // The endpoint vanishes without a word, and is back a moment later.
        let _ = endpoint.kill();
        let _ = endpoint.wait();
        let restarted = Instant::now();
        let mut endpoint = whip_endpoint(port, &report);
        let posted = poll(Duration::from_secs(20), || async {
            (endpoint_report(&report)["posts"].as_u64() >= Some(1)).then(|| restarted.elapsed())
        })
        .await;
        let again = frames_in(30).await;
        let after = restarted.elapsed();
        assert!(
            again.is_some(),
            "not published again: {}",
            endpoint_report(&report)
        );
        let status = publish_status(&camera).await;
        eprintln!(
            "WHIP: published again {posted:?} after the endpoint's restart, 30 frames there \
             after {after:?}; {status}"
        );
        // (The endpoint's own start, Python and aiortc, is most of it.)
        assert!(
            posted.is_some_and(|t| t <= Duration::from_secs(10)),
            "{posted:?}"
        );
        assert!(
            !camera.log_text().contains(WHIP_TOKEN),
            "the endpoint's token is in the log"
        );
        // Shutdown: the session is DELETEd.
        assert!(camera.terminate().is_some_and(|s| s.success()));
        let deleted = poll(Duration::from_secs(5), || async {
            (endpoint_report(&report)["deletes"].as_u64() >= Some(1)).then_some(())
        })
        .await;
        let _ = endpoint.kill();
        let _ = endpoint.wait();
        assert!(
            deleted.is_some(),
            "no DELETE on shutdown: {}",
            endpoint_report(&report)
        );
    }
);

// A STUN server that never answers keeps the daemon gathering past the moment it posts its
// offer (with its host candidates); the end of its candidates comes later, and is trickled to
// the endpoint with PATCH.
netns_test!(
    late_candidates_are_trickled_to_the_whip_endpoint,
    Net::WithDummyRoute,
    {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("free port")
        };
        let (port, silent_stun) = (free(), free());
        let report = artifacts_dir().join("whip-trickle-endpoint.json");
        let mut endpoint = whip_endpoint_logging(port, &report, "whip-trickle-endpoint.log");
        let cfg = config_file(
            "whip-trickler",
            &format!(
                "[[publish]]\nurl = 'http://127.0.0.1:{port}/whip'\ntoken = '{WHIP_TOKEN}'\n\
                 [ice]\nstun_server = 'stun://127.0.0.1:{silent_stun}'\n"
            ),
        );
        let camera = Proc::daemon(
            "whip-trickler",
            &light_profile("whip-trickler", ""),
            &["--config", &cfg],
        );
        let trickled = poll(Duration::from_secs(30), || async {
            let r = endpoint_report(&report);
            (r["trickled_end"].as_u64() >= Some(1) && r["video_frames"].as_u64() >= Some(30))
                .then_some(r)
        })
        .await;
        let _ = endpoint.kill();
        let _ = endpoint.wait();
        let r = endpoint_report(&report);
        eprintln!("WHIP trickle: {r}");
        assert!(trickled.is_some(), "no end of candidates trickled: {r}");
        assert_eq!(r["posts"], 1, "{r}");
        drop(camera);
    }
);
