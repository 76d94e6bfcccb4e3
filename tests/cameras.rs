//! Several cameras in one daemon (`[[camera]]`): each is listed, snapshotted, watched over
//! WHEP, called over signaling and served over RTSP by its name, and shows its own picture
//! (three test cameras, red, green and blue); a name it does not have is refused everywhere;
//! a camera whose source fails leaves the others' viewers playing.
//!
//! aiortc (an independent stack) is the viewer; aioice never uses 127.0.0.1, so these run in a
//! namespace with a dummy interface, and every packet stays inside it.

mod common;

use std::time::Duration;

use common::browser::Net;
use common::http::send;
use common::*;
use serde_json::{Value, json};

const VIEW: &str = "cameras-view-token-0123";
const ADMIN: &str = "cameras-admin-token-0123";

/// A `[[camera]]` showing videotestsrc's `pattern` (a colour), 320×240, VP8 and H.264.
fn camera(name: &str, pattern: &str) -> String {
    format!(
        "[[camera]]\nname = '{name}'\n[camera.video]\nsource = 'launch'\n\
         launch = 'videotestsrc is-live=true pattern={pattern}'\n\
         width = 320\nheight = 240\nframerate = 30\ncodecs = ['vp8', 'h264']\nbitrate_kbps = 400\n"
    )
}

/// A daemon serving `cameras` (with `top` in its profile), both tokens, RTSP on a free port;
/// returns it and the RTSP port.
fn barn(name: &str, top: &str, cameras: &[String]) -> (Proc, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let profile = write_profile(name, &barn_profile(name, top, cameras));
    let cfg = config_file(
        name,
        &format!(
            "tokens = [{{ secret = '{ADMIN}', scope = 'admin' }}, \
             {{ secret = '{VIEW}', scope = 'view' }}]\nrtsp_listen = '127.0.0.1:{port}'\n"
        ),
    );
    (Proc::daemon(name, &profile, &["--config", &cfg]), port)
}

/// The profile of [`barn`]: `cameras` and `top`.
fn barn_profile(name: &str, top: &str, cameras: &[String]) -> String {
    format!(
        "name = '{name}'\nlinger_ms = 500\n{top}\n{}",
        cameras.concat()
    )
}

async fn view_get(p: &Proc, path: &str) -> common::http::Reply {
    send(
        &p.addr,
        "GET",
        path,
        &[("Authorization", &format!("Bearer {VIEW}"))],
        "",
    )
    .await
}

async fn admin_json(p: &Proc, path: &str) -> Value {
    let reply = send(
        &p.addr,
        "GET",
        path,
        &[("Authorization", &format!("Bearer {ADMIN}"))],
        "",
    )
    .await;
    serde_json::from_str(&reply.body).unwrap_or(Value::Null)
}

/// Which of red, green, blue and white a picture's mean colour `rgb` is (None: none
/// clearly).
fn colour(rgb: &[f64]) -> Option<&'static str> {
    let [r, g, b] = rgb else { return None };
    if [r, g, b].iter().all(|c| **c > 200.0) {
        return Some("white");
    }
    let names = [(r, "red"), (g, "green"), (b, "blue")];
    let (top, name) = names
        .iter()
        .max_by(|a, b| a.0.total_cmp(b.0))
        .map(|(v, n)| (**v, *n))?;
    let others = names.iter().filter(|(_, n)| *n != name).map(|(v, _)| **v);
    // videotestsrc's colours are pure: the others stay near 0 after coding.
    (top > 150.0 && others.into_iter().all(|v| v < 80.0)).then_some(name)
}

/// An aiortc WHEP player of `url` for `seconds`, staying to the end; it reports the frame
/// rate and freezes of its last `window` seconds.
fn whep_player(
    id: &str,
    url: String,
    seconds: u32,
    window: u32,
) -> std::thread::JoinHandle<aiortc::PeerRun> {
    aiortc::spawn(
        id,
        &[
            "--whep".into(),
            url,
            "--token".into(),
            VIEW.into(),
            "--stay".into(),
            "--seconds".into(),
            seconds.to_string(),
            "--window".into(),
            window.to_string(),
        ],
    )
}

async fn joined(peer: std::thread::JoinHandle<aiortc::PeerRun>) -> aiortc::PeerRun {
    tokio::task::spawn_blocking(move || peer.join())
        .await
        .expect("join")
        .expect("peer thread")
}

/// The colour an aiortc report saw last.
fn seen(report: &Value) -> Option<&'static str> {
    colour(&numbers(&report["video_rgb"]))
}

/// A JSON array of numbers (a colour a peer or a page reported); empty if it is none.
fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// The status of a raw RTSP DESCRIBE of `path` with the view token's Basic credentials.
async fn rtsp_describe(port: u16, path: &str) -> u16 {
    let url = format!("rtsp://127.0.0.1:{port}{path}");
    common::rtsp::describe_status(&url, Some(&common::rtsp::basic(VIEW))).await
}

netns_test!(
    three_cameras_each_show_their_own_picture_everywhere,
    Net::WithDummyRoute,
    {
        let cameras = [
            camera("red", "red"),
            camera("green", "green"),
            camera("blue", "blue"),
        ];
        let (barn, rtsp_port) = barn("barn", "", &cameras);
        // Listed in the profile's order, idle (nothing runs until watched).
        let listed = admin_json(&barn, "/api/cameras").await;
        let names: Vec<&str> = listed["cameras"]
            .as_array()
            .expect("cameras")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["red", "green", "blue"], "{listed}");
        let green = &listed["cameras"][1];
        assert_eq!(green["state"], "idle", "{green}");
        assert_eq!(green["video"]["width"], 320, "{green}");
        assert_eq!(green["video"]["codecs"], json!(["vp8", "h264"]), "{green}");
        assert!(green["encoders"]["vp8"].is_string(), "{green}");

        // Each snapshot shows its own colour; the old path is the first camera's.
        for name in ["red", "green", "blue"] {
            let shot = view_get(&barn, &format!("/api/cameras/{name}/snapshot.jpg?width=64")).await;
            assert_eq!(shot.status, 200, "{name}: {}", shot.body);
            let rgb = common::picture::decode_jpeg(&shot.bytes).mean_rgb;
            assert_eq!(colour(&rgb), Some(name), "{name}'s snapshot is {rgb:?}");
        }
        let first = view_get(&barn, "/api/snapshot.jpg?width=64").await;
        assert_eq!(
            colour(&common::picture::decode_jpeg(&first.bytes).mean_rgb),
            Some("red")
        );
        let none = view_get(&barn, "/api/cameras/nope/snapshot.jpg").await;
        assert_eq!(none.status, 404, "{}", none.body);

        // An aiortc WHEP player on each camera at once, each decoding its camera's picture.
        let players: Vec<_> = ["red", "green", "blue"]
            .iter()
            .map(|name| {
                let url = format!("http://{}/api/cameras/{name}/whep", barn.addr);
                (*name, whep_player(&format!("whep-{name}"), url, 10, 6))
            })
            .collect();
        // While they play: one viewer each, each camera running, each call names its camera.
        let watched = poll(Duration::from_secs(20), || async {
            let listed = admin_json(&barn, "/api/cameras").await;
            let cameras = listed["cameras"].as_array()?.clone();
            cameras
                .iter()
                .all(|c| c["viewers"] == 1 && c["state"] == "running")
                .then_some(listed)
        })
        .await;
        assert!(
            watched.is_some(),
            "{}",
            admin_json(&barn, "/api/cameras").await
        );
        let calls = admin_json(&barn, "/api/calls").await;
        let mut watching: Vec<&str> = calls
            .as_array()
            .expect("calls")
            .iter()
            .filter_map(|c| c["camera"].as_str())
            .collect();
        watching.sort();
        assert_eq!(watching, ["blue", "green", "red"], "{calls}");
        // Three cameras: three VP8 encoders at once, each labelled in the metrics.
        let metrics = send(
            &barn.addr,
            "GET",
            "/metrics",
            &[("Authorization", &format!("Bearer {ADMIN}"))],
            "",
        )
        .await
        .body;
        for name in ["red", "green", "blue"] {
            let label = format!("camera=\"{name}\"");
            assert!(
                metrics
                    .lines()
                    .any(|l| l.starts_with("webrtcd_frames_encoded_total") && l.contains(&label)),
                "frames of {name} counted: {metrics}"
            );
        }
        for (name, player) in players {
            let run = joined(player).await;
            assert!(run.ok, "{name}: {}\n{}", run.report, run.stderr);
            assert_eq!(seen(&run.report), Some(name), "{name}: {}", run.report);
        }

        // Over signaling: a `call` naming a camera watches that camera …
        let ws_url = format!("{}?token={VIEW}", barn.ws_url());
        let caller = aiortc::spawn(
            "caller-blue",
            &[
                "--signaling".into(),
                ws_url.clone(),
                "--call".into(),
                "barn".into(),
                "--camera".into(),
                "blue".into(),
                "--stay".into(),
                "--seconds".into(),
                "8".into(),
            ],
        );
        let run = joined(caller).await;
        assert!(run.ok, "{}\n{}", run.report, run.stderr);
        assert_eq!(seen(&run.report), Some("blue"), "{}", run.report);
        // … and one naming a camera the device does not have is refused, at once.
        let mut ws = ws::register(&ws_url, "lost-viewer").await;
        ws::send(
            &mut ws,
            json!({"type": "call", "to": "barn", "session": "s-nope", "camera": "nope"}),
        )
        .await;
        let reply = ws::recv(&mut ws).await;
        assert_eq!(reply["type"], "hangup", "{reply}");
        assert_eq!(reply["reason"], "no-such-camera", "{reply}");
        // WHEP for a camera there is not: 404, and no session.
        let calls_before = admin_json(&barn, "/api/calls").await;
        let whep = send(
            &barn.addr,
            "POST",
            "/api/cameras/nope/whep",
            &[
                ("Authorization", &format!("Bearer {VIEW}")),
                ("Content-Type", "application/sdp"),
            ],
            &audio_offer(1),
        )
        .await;
        assert_eq!(whep.status, 404, "{}", whep.body);
        let calls_after = admin_json(&barn, "/api/calls").await;
        let count = |calls: &Value| calls.as_array().map(Vec::len).expect("a list of calls");
        assert!(
            count(&calls_after) <= count(&calls_before),
            "no session for it: {calls_after}"
        );

        // RTSP: each camera at its name (ffprobe, as an NVR probes it), `/live` the first,
        // a name there is not 404.
        let url = format!("rtsp://webrtcd:{VIEW}@127.0.0.1:{rtsp_port}/green");
        let (ok, probed) =
            common::rtsp::ffprobe_streams(&url, "codec_name", Duration::from_secs(20)).await;
        assert!(ok && probed.contains("codec_name=h264"), "{probed}");
        assert_eq!(rtsp_describe(rtsp_port, "/live").await, 200);
        assert_eq!(rtsp_describe(rtsp_port, "/blue").await, 200);
        assert_eq!(rtsp_describe(rtsp_port, "/nope").await, 404);
    }
);

netns_test!(
    a_failing_camera_leaves_the_other_cameras_playing,
    Net::WithDummyRoute,
    {
        // `broken` ends its stream every second; after one restart it is given up, and its
        // viewer's call ends with `source-error`.
        let broken = camera("broken", "blue").replace(
            "videotestsrc is-live=true pattern=blue",
            "videotestsrc is-live=true num-buffers=30 pattern=blue",
        );
        let (barn, _) = barn(
            "barn-failing",
            "source_restart_limit = 1",
            &[camera("green", "green"), broken],
        );
        let url = |name: &str| format!("http://{}/api/cameras/{name}/whep", barn.addr);
        // Its last 12 s: from before the other camera's failures to after them.
        let green = whep_player("whep-steady", url("green"), 14, 12);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let failing = whep_player("whep-broken", url("broken"), 10, 6);
        let ended = poll(Duration::from_secs(20), || async {
            let text = send(
                &barn.addr,
                "GET",
                "/metrics",
                &[("Authorization", &format!("Bearer {ADMIN}"))],
                "",
            )
            .await
            .body;
            text.lines()
                .any(|l| {
                    l.starts_with("webrtcd_sessions_ended_total")
                        && l.contains("reason=\"source-error\"")
                        && l.contains("camera=\"broken\"")
                })
                .then_some(())
        })
        .await;
        assert!(
            ended.is_some(),
            "the broken camera's viewer ends with source-error"
        );
        let _ = joined(failing).await;
        // The green viewer never noticed: frames at full rate to its end, no freeze.
        let run = joined(green).await;
        assert!(run.ok, "{}\n{}", run.report, run.stderr);
        assert_eq!(seen(&run.report), Some("green"), "{}", run.report);
        let fps = run.report["recent_fps"].as_f64().unwrap_or(0.0);
        assert!(
            fps >= 20.0,
            "green's last seconds at {fps} fps: {}",
            run.report
        );
        assert_eq!(run.report["recent_freezes"], 0, "{}", run.report);
    }
);

/// GStreamer's rtspsrc playing a camera over TCP, as an NVR records it.
struct RtspViewer {
    pipeline: gst::Pipeline,
    packets: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl RtspViewer {
    fn start(url: &str) -> RtspViewer {
        use gst::prelude::*;
        gst::init().expect("GStreamer");
        let pipeline = gst::parse::launch(&format!(
            "rtspsrc location={url} protocols=tcp latency=100 ! \
             application/x-rtp,media=video ! fakesink name=out signal-handoffs=true"
        ))
        .expect("pipeline")
        .downcast::<gst::Pipeline>()
        .expect("a pipeline");
        let packets = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = std::sync::Arc::clone(&packets);
        pipeline
            .by_name("out")
            .expect("sink")
            .connect("handoff", false, move |_| {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                None
            });
        pipeline.set_state(gst::State::Playing).expect("playing");
        RtspViewer { pipeline, packets }
    }

    fn packets(&self) -> u64 {
        self.packets.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether an error or the end of the stream reached its bus within `within`.
    fn ended_within(&self, within: Duration) -> bool {
        use gst::prelude::*;
        let bus = self.pipeline.bus().expect("bus");
        bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(within.as_millis() as u64),
            &[gst::MessageType::Error, gst::MessageType::Eos],
        )
        .is_some()
    }
}

impl Drop for RtspViewer {
    fn drop(&mut self) {
        use gst::prelude::*;
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// A `webrtcd_sessions_ended_total` sample with this reason and camera is above 0.
async fn ended_for(p: &Proc, reason: &str, camera: &str) -> bool {
    let text = send(
        &p.addr,
        "GET",
        "/metrics",
        &[("Authorization", &format!("Bearer {ADMIN}"))],
        "",
    )
    .await
    .body;
    text.lines().any(|l| {
        l.starts_with("webrtcd_sessions_ended_total")
            && l.contains(&format!("reason=\"{reason}\""))
            && l.contains(&format!("camera=\"{camera}\""))
    })
}

async fn camera_names(p: &Proc) -> Vec<String> {
    admin_json(p, "/api/cameras").await["cameras"]
        .as_array()
        .map(|cameras| {
            cameras
                .iter()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

netns_test!(
    a_sighup_adds_removes_and_restarts_cameras_while_another_plays_on,
    Net::WithDummyRoute,
    {
        let name = "barn-reload";
        let before = [
            camera("red", "red"),
            camera("green", "green"),
            camera("blue", "blue"),
        ];
        let (barn, rtsp_port) = barn(name, "", &before);
        let ws_url = format!("{}?token={VIEW}", barn.ws_url());
        // Red is watched over signaling and by an RTSP recorder, green and blue over WHEP.
        let red = aiortc::spawn(
            "reload-red",
            &[
                "--signaling".into(),
                ws_url,
                "--call".into(),
                name.into(),
                "--camera".into(),
                "red".into(),
                "--stay".into(),
                "--seconds".into(),
                "16".into(),
            ],
        );
        let whep = |camera: &str| format!("http://{}/api/cameras/{camera}/whep", barn.addr);
        // Green's last 14 s span both reloads.
        let green = whep_player("reload-green", whep("green"), 18, 14);
        let blue = whep_player("reload-blue", whep("blue"), 16, 6);
        let all_watched = poll(Duration::from_secs(15), || async {
            let listed = admin_json(&barn, "/api/cameras").await;
            let cameras = listed["cameras"].as_array()?.clone();
            cameras
                .iter()
                .all(|c| c["viewers"].as_u64() >= Some(1))
                .then_some(())
        })
        .await;
        assert!(
            all_watched.is_some(),
            "{}",
            admin_json(&barn, "/api/cameras").await
        );
        // Started once the daemon serves RTSP (it binds after HTTP; the calls are up by now).
        let rtsp = |path: &str| format!("rtsp://webrtcd:{VIEW}@127.0.0.1:{rtsp_port}{path}");
        let recorder = RtspViewer::start(&rtsp("/red"));
        // An NVR of before cameras: `/live`, the first camera (red).
        let old_nvr = RtspViewer::start(&rtsp("/live"));
        let recording = poll(Duration::from_secs(10), || async {
            (recorder.packets() > 10 && old_nvr.packets() > 10).then_some(())
        })
        .await;
        assert!(recording.is_some(), "the RTSP recorders of red get packets");

        // A profile that does not validate is refused, and changes nothing.
        let bad = barn_profile(name, "", &before)
            .replace("codecs = ['vp8', 'h264']", "codecs = ['opus']");
        write_profile(name, &bad);
        barn.signal("HUP");
        wait_for(
            "the refusal in the log",
            Duration::from_secs(10),
            || async {
                barn.log_text()
                    .contains("profile not reloaded")
                    .then_some(())
            },
        )
        .await;
        assert!(
            barn.log_text().contains("video.codecs"),
            "the problem is logged"
        );
        assert_eq!(camera_names(&barn).await, ["red", "green", "blue"]);

        // Red out, white in, blue's frame rate changed, green's bit rate: red's viewers end
        // with camera-removed, blue's with camera-changed; green's encoder takes its new rate
        // and green plays on.
        let after = [
            camera("green", "green").replace("bitrate_kbps = 400", "bitrate_kbps = 250"),
            camera("blue", "blue").replace("framerate = 30", "framerate = 25"),
            camera("white", "white"),
        ];
        write_profile(name, &barn_profile(name, "", &after));
        let reloaded_at = std::time::Instant::now();
        barn.signal("HUP");
        wait_for("the new cameras", Duration::from_secs(15), || async {
            (camera_names(&barn).await == ["green", "blue", "white"]).then_some(())
        })
        .await;
        let white = whep_player("reload-white", whep("white"), 8, 4);
        let run = joined(white).await;
        assert!(run.ok, "white: {}\n{}", run.report, run.stderr);
        assert_eq!(seen(&run.report), Some("white"), "{}", run.report);
        eprintln!(
            "SIGHUP adding a camera → white's WHEP player done: {:?} (its first frame {} ms after its POST)",
            reloaded_at.elapsed(),
            run.report["first_frame_ms"]
        );
        let log = barn.log_text();
        assert!(
            log.contains(r#"retuned=[("green", 1)]"#),
            "green's running encoder took its new rate: {}",
            log.lines()
                .filter(|l| l.contains("profile reloaded"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(ended_for(&barn, "camera-removed", "red").await);
        assert!(ended_for(&barn, "camera-changed", "blue").await);
        let red = joined(red).await;
        let errors = red.report["errors"].to_string();
        assert!(
            errors.contains("hangup: camera-removed"),
            "red's viewer: {}",
            red.report
        );
        assert!(
            recorder.ended_within(Duration::from_secs(10)),
            "the RTSP recorder of red is let go"
        );
        assert!(
            old_nvr.ended_within(Duration::from_secs(5)),
            "red's recorder on /live is let go too"
        );
        assert_eq!(
            rtsp_describe(rtsp_port, "/live").await,
            200,
            "/live is green's now"
        );
        assert_eq!(rtsp_describe(rtsp_port, "/red").await, 404);
        assert_eq!(rtsp_describe(rtsp_port, "/white").await, 200);
        let _ = joined(blue).await;
        // Green never stopped: full rate over a window spanning both reloads, no freeze.
        let run = joined(green).await;
        assert!(run.ok, "green: {}\n{}", run.report, run.stderr);
        assert_eq!(seen(&run.report), Some("green"));
        let fps = run.report["recent_fps"].as_f64().unwrap_or(0.0);
        assert!(
            fps >= 20.0,
            "green at {fps} fps across the reloads: {}",
            run.report
        );
        assert_eq!(run.report["recent_freezes"], 0, "{}", run.report);
        assert!(!ended_for(&barn, "camera-changed", "green").await);
    }
);

/// A video element's mean colour, from an 8×8 canvas copy of its picture (null before one).
const MEAN_RGB_JS: &str = "function meanRgb(v) {
  if (v.videoWidth === 0) return null;
  const c = document.createElement('canvas');
  c.width = 8; c.height = 8;
  const g = c.getContext('2d');
  g.drawImage(v, 0, 0, 8, 8);
  const d = g.getImageData(0, 0, 8, 8).data;
  const rgb = [0, 0, 0];
  for (let i = 0; i < d.length; i += 4) { rgb[0] += d[i]; rgb[1] += d[i + 1]; rgb[2] += d[i + 2]; }
  return rgb.map((x) => x / (d.length / 4));
}
";

/// Each grid tile's camera, decoded size, play time, mean colour and where it sits on the
/// screen.
const TILES_JS: &str = "return [...document.querySelectorAll('#tiles .tile')].map((f) => {
  const v = f.querySelector('video');
  const r = f.getBoundingClientRect();
  return { camera: f.dataset.camera, w: v.videoWidth, t: v.currentTime, rgb: meanRgb(v),
           left: r.left, right: r.right, top: r.top, bottom: r.bottom,
           caption: f.querySelector('figcaption').textContent };
});";

/// What a person sees of the call controls and the remote video.
const PAGE_JS: &str =
    "const shown = (id) => getComputedStyle(document.getElementById(id)).display !== 'none';
const v = document.getElementById('remote');
return { bar: shown('call-bar'), hangup: document.getElementById('hangup').offsetParent !== null,
         picker: shown('camera-picker'), gridButton: shown('grid-open'),
         options: [...document.getElementById('camera').options].map((o) => o.value),
         w: v.videoWidth, t: v.currentTime, rgb: meanRgb(v),
         pageWidth: document.documentElement.scrollWidth, viewport: window.innerWidth };";

/// Runs `body` (one of the scripts above) in the page, with `meanRgb` defined.
async fn in_page(chrome: &common::browser::Driven, body: &str) -> Value {
    chrome.script(&format!("{MEAN_RGB_JS}{body}")).await
}

netns_test!(
    a_phone_watches_every_camera_at_once_and_picks_one_to_call,
    Net::LoopbackOnly,
    {
        let name = "barn-page";
        let (barn, _) = barn(
            name,
            "",
            &[
                camera("red", "red"),
                camera("green", "green"),
                camera("blue", "blue"),
            ],
        );
        // A phone's screen: 390×844.
        let chrome = common::browser::Driven::start().await;
        chrome.emulate_screen(390, 844).await;
        chrome
            .open(&format!("http://{}/?id=phone&token={VIEW}", barn.addr))
            .await;
        // Idle: the picker and the grid's button, no call controls.
        let idle = wait_for("the camera picker", Duration::from_secs(20), || async {
            let v = in_page(&chrome, PAGE_JS).await;
            (v["picker"] == true).then_some(v)
        })
        .await;
        assert_eq!(idle["options"], json!(["red", "green", "blue"]), "{idle}");
        assert_eq!(idle["gridButton"], true, "{idle}");
        assert_eq!(idle["bar"], false, "no call controls while idle: {idle}");
        assert_eq!(idle["hangup"], false, "{idle}");

        // The grid: every camera at once, each tile its own colour, all within the screen.
        chrome.click("#grid-open").await;
        let tiles = wait_for("every tile to play", Duration::from_secs(30), || async {
            let tiles = in_page(&chrome, TILES_JS).await;
            let list = tiles.as_array()?.clone();
            (list.len() == 3
                && list
                    .iter()
                    .all(|t| t["t"].as_f64() > Some(1.0) && t["rgb"].is_array()))
            .then_some(list)
        })
        .await;
        let png = chrome.screenshot().await;
        std::fs::write(artifacts_dir().join("page-grid-phone.png"), &png).expect("screenshot");
        let page = in_page(&chrome, PAGE_JS).await;
        eprintln!("the grid on a phone: {page}");
        for tile in &tiles {
            let rgb = numbers(&tile["rgb"]);
            assert_eq!(
                colour(&rgb),
                tile["camera"].as_str(),
                "a tile shows its own camera: {tile}"
            );
            let (left, right) = (tile["left"].as_f64(), tile["right"].as_f64());
            let (Some(left), Some(right)) = (left, right) else {
                panic!("no place on the screen: {tile}");
            };
            assert!(
                left >= 0.0 && right <= 390.0,
                "within a phone's width: {tile}"
            );
        }
        let bottom = tiles
            .iter()
            .map(|t| t["bottom"].as_f64().expect("a tile's bottom"))
            .fold(0.0, f64::max);
        assert!(bottom <= 844.0, "every tile on one phone screen: {tiles:?}");
        let (width, viewport) = (page["pageWidth"].as_u64(), page["viewport"].as_u64());
        assert!(
            width.is_some() && viewport == Some(390) && width <= viewport,
            "no sideways scrolling on a 390 wide screen: {page}"
        );
        assert_eq!(page["bar"], false, "the grid is no call: {page}");
        let viewers = admin_json(&barn, "/api/cameras").await;
        for camera in viewers["cameras"].as_array().expect("cameras") {
            assert_eq!(camera["viewers"], 1, "one WHEP session each: {viewers}");
        }
        // Closing it lets every session go.
        chrome.click("#grid-close").await;
        wait_for(
            "the grid's sessions to end",
            Duration::from_secs(10),
            || async {
                admin_json(&barn, "/api/calls")
                    .await
                    .as_array()
                    .is_some_and(Vec::is_empty)
                    .then_some(())
            },
        )
        .await;

        // The picker: a call to the device watches the camera picked, with its controls.
        chrome
            .script("document.getElementById('camera').value = 'blue'; return true;")
            .await;
        chrome
            .click(&format!("#peers button[data-peer='{name}']"))
            .await;
        let playing = wait_for("blue in the call", Duration::from_secs(30), || async {
            let v = in_page(&chrome, PAGE_JS).await;
            (v["t"].as_f64() > Some(1.0) && v["rgb"].is_array()).then_some(v)
        })
        .await;
        let rgb = numbers(&playing["rgb"]);
        assert_eq!(colour(&rgb), Some("blue"), "{playing}");
        assert_eq!(
            playing["bar"], true,
            "call controls during the call: {playing}"
        );
        chrome.click("#hangup").await;
        let after = wait_for("the controls to go", Duration::from_secs(10), || async {
            let v = in_page(&chrome, PAGE_JS).await;
            (v["bar"] == false).then_some(v)
        })
        .await;
        assert_eq!(after["hangup"], false, "{after}");
    }
);
