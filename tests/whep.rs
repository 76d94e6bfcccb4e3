//! WHEP: players that know nothing of webrtcd's signaling play its stream with one HTTP POST
//! (RFC 9725). aiortc (an independent stack that never trickles: its candidates are in its
//! offer) is the player; the HTTP rules are checked with raw requests.
//!
//! aioice never uses 127.0.0.1: these run in a namespace with a dummy interface, and every
//! packet stays inside it.

mod common;

use std::time::{Duration, Instant};

use common::browser::Net;
use common::http::send;
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

async fn admin_calls(p: &Proc) -> Vec<Value> {
    let (_, body) =
        webrtcd::service::api_client::request("GET", &p.api("/api/calls"), None, Some(ADMIN))
            .await
            .expect("GET /api/calls");
    serde_json::from_str::<Vec<Value>>(&body).unwrap_or_default()
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
  if (e.track.kind !== "video") return;
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
    if (s.type === "inbound-rtp" && s.kind === "audio") result.audio = s.packetsReceived || 0;
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
            (result["frames"].as_u64() >= Some(30) && result["audio"].as_u64() > Some(0))
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
        assert_eq!(result["error"], Value::Null, "{result}");
    }
);
