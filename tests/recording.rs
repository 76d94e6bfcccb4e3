//! Recording (`[recording]`): segments of the camera's shared H.264 stream written as
//! fragmented MP4, read back by independent readers (ffprobe, ffmpeg) — each the codec and
//! length asked for, the next starting where the last ended, no second encoder; a `kill -9`
//! loses at most ~2 s and the segment it cut is listed and plays; a small disk keeps the
//! newest and a full one pauses recording while a live viewer plays on.
//!
//! Each test runs in its own network and mount namespace (the small disk is a tmpfs mounted
//! there); the viewer is aiortc over WHEP (aioice needs a non-loopback interface: a dummy one).

mod common;

use std::time::{Duration, Instant};

use common::browser::Net;
use common::http::send;
use common::rtsp::run_tool;
use common::*;
use serde_json::Value;

/// A camera of `pattern` (`ball`: moving; `snow`: as many bits as it is allowed) in H.264.
/// With `audio`, a test tone in Opus too.
fn camera_profile(name: &str, pattern: &str, kbps: u32, audio: bool) -> std::path::PathBuf {
    let audio = if audio {
        "[audio]\nsource = 'test'\ncodecs = ['opus']\n"
    } else {
        ""
    };
    write_profile(
        name,
        &format!(
            "name = '{name}'\nlinger_ms = 500\n[video]\nsource = 'launch'\n\
             launch = 'videotestsrc is-live=true pattern={pattern}'\n\
             width = 640\nheight = 360\nframerate = 30\ncodecs = ['h264']\nbitrate_kbps = {kbps}\n\
             {audio}"
        ),
    )
}

const VIEW: &str = "recording-view-token-0123";
const ADMIN: &str = "recording-admin-token-0123";

/// A daemon recording with `recording` (the keys of `[recording]`), with a view and an admin
/// token.
fn recorder(name: &str, profile: &std::path::Path, recording: &str) -> Proc {
    let cfg = config_file(
        name,
        &format!(
            "tokens = [{{ secret = '{ADMIN}', scope = 'admin' }}, \
             {{ secret = '{VIEW}', scope = 'view' }}]\n[recording]\n{recording}\n"
        ),
    );
    Proc::daemon(name, profile, &["--config", &cfg])
}

/// A request with the view token.
async fn as_viewer(
    p: &Proc,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> common::http::Reply {
    let bearer = format!("Bearer {VIEW}");
    let mut all = vec![("Authorization", bearer.as_str())];
    all.extend_from_slice(headers);
    send(&p.addr, method, path, &all, "").await
}

async fn recordings(p: &Proc) -> Value {
    let reply = as_viewer(p, "GET", "/api/recordings", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    serde_json::from_str(&reply.body).expect("JSON")
}

fn listed(v: &Value) -> Vec<Value> {
    v["recordings"].as_array().cloned().unwrap_or_default()
}

fn finished(v: &Value) -> Vec<Value> {
    listed(v)
        .into_iter()
        .filter(|r| r["writing"] == false)
        .collect()
}

fn seconds(v: &Value) -> f64 {
    v["duration_s"].as_f64().unwrap_or(-1.0)
}

/// A recording's start, in seconds since the epoch (from its RFC 3339 `start`).
fn start_of(v: &Value) -> f64 {
    let text = v["start"].as_str().unwrap_or_default();
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| panic!("not RFC 3339: {text}"));
    assert!(text.ends_with('Z'), "not UTC: {text}");
    t.unix_timestamp_nanos() as f64 / 1e9
}

fn file_of(p: &Proc, state: &str, v: &Value) -> String {
    let _ = p;
    format!(
        "{state}/{}/{}.mp4",
        v["camera"].as_str().unwrap_or_default(),
        v["id"].as_str().unwrap_or_default()
    )
}

/// ffprobe's codecs (`h264,opus`) and the video's duration.
async fn probe(file: &str) -> (String, f64) {
    let (ok, out) = run_tool(
        "ffprobe",
        [
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,duration",
            "-of",
            "csv=p=0",
            file,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        Duration::from_secs(20),
    )
    .await;
    assert!(ok, "ffprobe {file}: {out}");
    let streams: Vec<(&str, f64)> = out
        .lines()
        .filter_map(|l| {
            let (codec, duration) = l.split_once(',')?;
            Some((codec, duration.trim().parse().unwrap_or(-1.0)))
        })
        .collect();
    let codecs: Vec<&str> = streams.iter().map(|s| s.0).collect();
    let video = streams.iter().find(|s| s.0 == "h264").map_or(-1.0, |s| s.1);
    (codecs.join(","), video)
}

/// ffmpeg decodes every frame of `file` without one error; returns the frames decoded.
async fn decodes_cleanly(file: &str) -> u64 {
    let (ok, out) = run_tool(
        "ffmpeg",
        [
            "-nostdin", "-v", "error", "-stats", "-i", file, "-f", "null", "-",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        Duration::from_secs(30),
    )
    .await;
    let errors: Vec<&str> = out
        .lines()
        .flat_map(|l| l.split('\r'))
        .filter(|l| !l.trim().is_empty() && !l.starts_with("frame="))
        .collect();
    assert!(ok && errors.is_empty(), "ffmpeg decoding {file}: {out}");
    out.rsplit("frame=")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

netns_test!(
    segments_are_as_long_as_asked_and_follow_one_another,
    Net::LoopbackOnly,
    {
        let profile = camera_profile("rec-segments", "ball", 800, true);
        let state = format!("{}/recordings", state_dir("rec-segments").display());
        let _ = std::fs::remove_dir_all(&state);
        let daemon = recorder("rec-segments", &profile, "segment_secs = 3");
        let done = wait_for(
            "four finished segments",
            Duration::from_secs(30),
            || async {
                let v = recordings(&daemon).await;
                (finished(&v).len() >= 4).then_some(v)
            },
        )
        .await;
        let segments = finished(&done);
        // The recorder is the streams' one subscriber: no encoder of its own.
        let status = get_as(&daemon, Some(ADMIN), "/api/status").await;
        let streams = status["shared_streams"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let codecs: Vec<&str> = streams.iter().filter_map(|s| s["codec"].as_str()).collect();
        assert_eq!(codecs.len(), 2, "{status}");
        assert!(
            codecs.contains(&"h264") && codecs.contains(&"opus"),
            "{status}"
        );
        assert!(streams.iter().all(|s| s["subscribers"] == 1), "{status}");
        assert_eq!(status["encoders"]["video"], 1, "{status}");
        assert_eq!(
            metric_as(&daemon, Some(ADMIN), "webrtcd_recording_segments_total", "").await as usize,
            segments.len(),
            "segments counted"
        );
        let mut previous_end: Option<f64> = None;
        for segment in &segments {
            let file = file_of(&daemon, &state, segment);
            let (codec, duration) = probe(&file).await;
            eprintln!(
                "{}: {codec}, {duration:.3} s (listed {:.3} s)",
                segment["id"],
                seconds(segment)
            );
            assert_eq!(codec, "h264,opus", "{file}: video and the microphone");
            assert!((duration - 3.0).abs() <= 0.5, "{file}: {duration} s");
            assert!(
                (duration - seconds(segment)).abs() <= 0.02,
                "{file}: ffprobe says {duration} s, listed {segment}"
            );
            let start = start_of(segment);
            if let Some(end) = previous_end {
                // One frame at 30 fps, and the names' millisecond.
                assert!(
                    (start - end).abs() <= 0.035,
                    "a gap of {:.3} s before {segment}",
                    start - end
                );
            }
            previous_end = Some(start + duration);
            assert!(decodes_cleanly(&file).await >= 80, "{file}");
        }
        // Served with Range: a player seeks.
        let first = &segments[0];
        let path = first["url"].as_str().unwrap_or_default();
        let bytes = std::fs::read(file_of(&daemon, &state, first)).expect("the file");
        let part = as_viewer(&daemon, "GET", path, &[("Range", "bytes=100-1099")]).await;
        assert_eq!(part.status, 206, "{}", part.body);
        assert_eq!(part.header("content-type"), "video/mp4");
        assert_eq!(part.bytes, bytes[100..1100].to_vec());
        let whole = as_viewer(&daemon, "GET", path, &[]).await;
        assert_eq!((whole.status, whole.bytes.len()), (200, bytes.len()));
        assert_eq!(send(&daemon.addr, "GET", path, &[], "").await.status, 401);
        // A time range: the second segment (and the ends of its neighbours), not the fourth.
        let second = &segments[1];
        let at = second["start"].as_str().unwrap_or_default();
        let range = format!("/api/recordings?camera=rec-segments&from={at}&to={at}");
        let only: Value =
            serde_json::from_str(&as_viewer(&daemon, "GET", &range, &[]).await.body).expect("JSON");
        let only_ids: Vec<Value> = listed(&only).into_iter().map(|r| r["id"].clone()).collect();
        assert!(only_ids.contains(&second["id"]), "{only}");
        assert!(!only_ids.contains(&segments[3]["id"]), "{only}");
        let bad = as_viewer(&daemon, "GET", "/api/recordings?from=yesterday", &[]).await;
        assert_eq!(bad.status, 400, "{}", bad.body);
        let other = as_viewer(&daemon, "GET", "/api/recordings?camera=nope", &[]).await;
        assert!(other.body.contains("\"recordings\":[]"), "{}", other.body);
        // Chromium plays it in a <video> (fetched with Range), and seeks in it.
        chromium_plays(&daemon, &format!("{path}?token={VIEW}"), 3.0).await;
        // Three segments as one file (joined, not re-encoded): ffprobe and ffmpeg read it
        // whole, Range answers from it, Chromium plays across the joins.
        let from = segments[0]["start"].as_str().unwrap_or_default();
        let playback = format!("/api/cameras/rec-segments/playback?start={from}&duration=8.5");
        let joined = as_viewer(&daemon, "GET", &playback, &[]).await;
        assert_eq!(joined.status, 200, "{}", joined.body);
        assert_eq!(joined.header("x-webrtcd-segments"), "3");
        let joined_file = artifacts_dir().join("rec-joined.mp4");
        std::fs::write(&joined_file, &joined.bytes).expect("write");
        let joined_file = joined_file.to_string_lossy().into_owned();
        let (codec, duration) = probe(&joined_file).await;
        let listed_sum: f64 = segments[..3].iter().map(seconds).sum();
        eprintln!("joined: {codec}, {duration:.3} s (the three listed: {listed_sum:.3} s)");
        assert!(
            (duration - listed_sum).abs() <= 0.05,
            "{duration} vs {listed_sum}"
        );
        assert!(decodes_cleanly(&joined_file).await >= 3 * 85);
        let part = as_viewer(&daemon, "GET", &playback, &[("Range", "bytes=5000-")]).await;
        assert_eq!(part.status, 206);
        assert_eq!(part.bytes, joined.bytes[5000..].to_vec());
        let unsatisfiable =
            as_viewer(&daemon, "GET", &playback, &[("Range", "bytes=99999999-")]).await;
        assert_eq!(unsatisfiable.status, 416);
        for bad in [
            "/api/cameras/rec-segments/playback?start=never",
            "/api/cameras/rec-segments/playback?start=2020-01-01T00:00:00Z&duration=-1",
            "/api/cameras/rec-segments/playback?start=2020-01-01T00:00:00Z&duration=86400",
        ] {
            assert_eq!(
                as_viewer(&daemon, "GET", bad, &[]).await.status,
                400,
                "{bad}"
            );
        }
        let before = "/api/cameras/rec-segments/playback?start=2020-01-01T00:00:00Z&duration=60";
        assert_eq!(as_viewer(&daemon, "GET", before, &[]).await.status, 404);
        chromium_plays(&daemon, &format!("{playback}&token={VIEW}"), listed_sum).await;
        page_plays_from_its_timeline(&daemon, segments.len()).await;
        // Ids reach no other file.
        for hostile in [
            "/api/recordings/..%2F..%2Fidentity",
            "/api/recordings/rec-segments_20261208T001500.123Z%00",
            "/api/recordings/x",
        ] {
            let reply = as_viewer(&daemon, "GET", hostile, &[]).await;
            assert_eq!(reply.status, 404, "{hostile}: {}", reply.body);
        }
        // Deleting takes the admin token; the one being written is refused, a finished one
        // goes.
        let admin = format!("Bearer {ADMIN}");
        let admin = [("Authorization", admin.as_str())];
        assert_eq!(as_viewer(&daemon, "DELETE", path, &[]).await.status, 403);
        let writing = listed(&recordings(&daemon).await)
            .into_iter()
            .find(|r| r["writing"] == true)
            .expect("a segment being written");
        let url = writing["url"].as_str().unwrap_or_default();
        assert_eq!(
            send(&daemon.addr, "DELETE", url, &admin, "").await.status,
            409
        );
        assert_eq!(
            send(&daemon.addr, "DELETE", path, &admin, "").await.status,
            204
        );
        assert_eq!(as_viewer(&daemon, "GET", path, &[]).await.status, 404);
        assert!(!std::path::Path::new(&file_of(&daemon, &state, first)).exists());
    }
);

/// The page shows today's recordings on its timeline; a click on one plays from there.
async fn page_plays_from_its_timeline(daemon: &Proc, at_least: usize) {
    let chrome = common::browser::Driven::start().await;
    chrome
        .open(&format!("http://{}/?token={VIEW}", daemon.addr))
        .await;
    let shown = wait_for("the timeline", Duration::from_secs(20), || async {
        let v = chrome
            .script(
                "const s = document.getElementById('recordings'); \
                 return {hidden: s.hidden, recs: document.querySelectorAll('#rec-timeline .rec').length, \
                 summary: document.getElementById('rec-summary').textContent, \
                 camera: document.getElementById('rec-camera').value, \
                 state: document.getElementById('rec-state').textContent};",
            )
            .await;
        (v["hidden"] == false && v["recs"].as_u64() >= Some(at_least as u64)).then_some(v)
    })
    .await;
    eprintln!("the page's timeline: {shown}");
    assert_eq!(shown["camera"], "rec-segments", "{shown}");
    assert_eq!(shown["state"], "recording", "{shown}");
    // A click where the first recording is (a few pixels of a day: clicked at its centre).
    chrome
        .script(
            "const r = document.querySelector('#rec-timeline .rec').getBoundingClientRect(); \
             document.getElementById('rec-timeline').dispatchEvent(new MouseEvent('click', \
             {bubbles: true, clientX: r.left + r.width / 2, clientY: r.top + r.height / 2})); \
             return true;",
        )
        .await;
    let playing = wait_for(
        "the clicked recording to play",
        Duration::from_secs(20),
        || async {
            let v = chrome
                .script(
                    "const v = document.getElementById('rec-video'); \
                 return {hidden: v.hidden, t: v.currentTime, src: v.src, \
                 frames: v.getVideoPlaybackQuality().totalVideoFrames, \
                 error: v.error ? String(v.error.code) : null};",
                )
                .await;
            assert!(v["error"].is_null(), "{v}");
            (v["hidden"] == false && v["t"].as_f64() > Some(1.0) && v["frames"].as_u64() > Some(20))
                .then_some(v)
        },
    )
    .await;
    eprintln!("played from the timeline: {playing}");
    chrome
        .script("document.getElementById('recordings').scrollIntoView(); return true;")
        .await;
    let png = chrome.screenshot().await;
    std::fs::write(artifacts_dir().join("page-recordings.png"), &png).expect("screenshot");
    assert!(
        playing["src"]
            .as_str()
            .is_some_and(|s| s.contains("/playback?")),
        "{playing}"
    );
}

/// A `<video>` on the daemon's page plays `src` (`duration` seconds long) to its end: its
/// time advances and frames are decoded; then it seeks back and plays from there.
async fn chromium_plays(daemon: &Proc, src: &str, duration: f64) {
    let chrome = common::browser::Driven::start().await;
    chrome
        .open(&format!("http://{}/?token={VIEW}", daemon.addr))
        .await;
    let js = format!(
        "if (!window.rec) {{ const v = document.createElement('video'); v.muted = true; \
         v.src = '{src}'; document.body.appendChild(v); window.rec = v; \
         window.seeked = 0; v.onseeked = () => window.seeked++; v.play(); }} \
         const v = window.rec; const q = v.getVideoPlaybackQuality(); \
         return {{t: v.currentTime, frames: q.totalVideoFrames, ended: v.ended, \
         error: v.error ? v.error.message || String(v.error.code) : null, \
         duration: v.duration, seeked: window.seeked}};"
    );
    let played = wait_for("the recording to play", Duration::from_secs(30), || async {
        let v = chrome.script(&js).await;
        assert!(v["error"].is_null(), "the <video> failed: {v}");
        (v["ended"] == true).then_some(v)
    })
    .await;
    eprintln!("Chromium played a recording: {played}");
    assert!(
        played["frames"].as_f64().unwrap_or(0.0) >= duration * 25.0,
        "{played}"
    );
    assert!(
        (played["duration"].as_f64().unwrap_or(0.0) - duration).abs() <= 0.5,
        "{played}"
    );
    chrome
        .script("window.rec.currentTime = 1.0; window.rec.play(); return true;")
        .await;
    let again = wait_for("a seek and play again", Duration::from_secs(10), || async {
        let v = chrome.script(&js).await;
        (v["seeked"].as_u64() >= Some(1) && v["ended"] == true).then_some(v)
    })
    .await;
    assert!(
        again["frames"].as_u64() > played["frames"].as_u64(),
        "frames after the seek: {again}"
    );
}

netns_test!(
    a_kill_9_loses_at_most_two_seconds_and_recording_goes_on,
    Net::LoopbackOnly,
    {
        let profile = camera_profile("rec-kill", "ball", 800, true);
        let state = format!("{}/recordings", state_dir("rec-kill").display());
        let _ = std::fs::remove_dir_all(&state);
        let mut daemon = recorder("rec-kill", &profile, "segment_secs = 8");
        // Killed 5 s into a segment.
        let writing = wait_for("a segment 5 s along", Duration::from_secs(30), || async {
            listed(&recordings(&daemon).await)
                .into_iter()
                .find(|r| r["writing"] == true && seconds(r) >= 5.0)
        })
        .await;
        let killed_at = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9;
        daemon.kill();
        let written = killed_at - start_of(&writing);
        let file = file_of(&daemon, &state, &writing);
        let (codec, raw) = probe(&file).await;
        eprintln!(
            "killed {written:.2} s into {}: ffprobe reads {raw:.2} s ({codec})",
            writing["id"]
        );

        let daemon = recorder("rec-kill", &profile, "segment_secs = 8");
        let after = recordings(&daemon).await;
        let cut = listed(&after)
            .into_iter()
            .find(|r| r["id"] == writing["id"])
            .unwrap_or_else(|| panic!("the segment cut short is not listed: {after}"));
        eprintln!("listed after the restart: {cut}");
        assert_eq!(cut["writing"], false, "{cut}");
        let kept = seconds(&cut);
        assert!(
            kept >= written - 2.0 && kept <= written + 0.1,
            "{kept} s kept of {written} s written"
        );
        let (codec, duration) = probe(&file).await;
        assert_eq!(codec, "h264,opus");
        assert!(
            (duration - kept).abs() <= 0.05,
            "ffprobe {duration} s, listed {kept} s"
        );
        assert!(decodes_cleanly(&file).await as f64 >= (kept - 0.1) * 30.0 * 0.95);
        // And a new segment is being written.
        wait_for("a new segment", Duration::from_secs(20), || async {
            listed(&recordings(&daemon).await)
                .into_iter()
                .find(|r| r["writing"] == true && seconds(r) >= 1.0)
        })
        .await;
    }
);

netns_test!(
    a_small_disk_keeps_the_newest_and_a_full_one_pauses_while_a_viewer_plays_on,
    Net::WithDummyRoute,
    {
        let name = "rec-disk";
        let dir = artifacts_dir().join(format!("{name}-disk"));
        let _ = std::fs::create_dir_all(&dir);
        let dir = dir.to_string_lossy().into_owned();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs", &dir])
            .status()
            .is_ok_and(|s| s.success());
        assert!(mounted, "mount a tmpfs on {dir}");
        let profile = camera_profile(name, "snow", 1500, false);
        let daemon = recorder(
            name,
            &profile,
            &format!("path = '{dir}'\nsegment_secs = 2\nmin_free_mb = 3"),
        );
        let (events, _reader) = event_stream(&daemon, Some(ADMIN)).await;
        let seconds_watched = 40;
        let viewer = aiortc::spawn(
            "rec-disk-viewer",
            &[
                "--whep".into(),
                daemon.api("/whep"),
                "--token".into(),
                VIEW.into(),
                "--stay".into(),
                "--seconds".into(),
                seconds_watched.to_string(),
                "--window".into(),
                "30".into(),
            ],
        );
        let started = Instant::now();
        // The disk fills: the oldest segments go first.
        let first_ids: Vec<Value> = wait_for("two segments", Duration::from_secs(20), || async {
            let f = finished(&recordings(&daemon).await);
            (f.len() >= 2).then_some(f.iter().map(|r| r["id"].clone()).collect())
        })
        .await;
        wait_for("deleted for space", Duration::from_secs(30), || async {
            (metric_as(
                &daemon,
                Some(ADMIN),
                "webrtcd_recordings_deleted_total",
                "reason=\"space\"",
            )
            .await
                >= 2)
                .then_some(())
        })
        .await;
        let now = finished(&recordings(&daemon).await);
        assert!(!now.is_empty(), "some segments kept");
        assert!(
            !now.iter().any(|r| first_ids.contains(&r["id"])),
            "the oldest went first: {first_ids:?} vs {now:?}"
        );
        let ids: Vec<&str> = now.iter().filter_map(|r| r["id"].as_str()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "listed oldest first");

        // A full disk (something else filled it): recording pauses; the daemon serves on.
        let filler = format!("{dir}/filler");
        let _ = std::process::Command::new("dd")
            .args(["if=/dev/zero", &format!("of={filler}"), "bs=64k"])
            .stderr(std::process::Stdio::null())
            .status();
        let paused = wait_for("recording paused", Duration::from_secs(20), || async {
            let v = recordings(&daemon).await;
            (v["recorders"][0]["state"] == "paused").then_some(v)
        })
        .await;
        eprintln!("full: {}", paused["recorders"]);
        assert_eq!(
            metric_as(&daemon, Some(ADMIN), "webrtcd_recording_paused", "camera=").await,
            1
        );
        let admin = format!("Bearer {ADMIN}");
        let health = send(
            &daemon.addr,
            "GET",
            "/healthz",
            &[("Authorization", admin.as_str())],
            "",
        )
        .await;
        assert_eq!(health.status, 200, "{}", health.body);
        // Space returns: recording resumes in a new segment.
        let _ = std::fs::remove_file(&filler);
        wait_for("recording resumed", Duration::from_secs(20), || async {
            let v = recordings(&daemon).await;
            (v["recorders"][0]["state"] == "recording"
                && listed(&v)
                    .iter()
                    .any(|r| r["writing"] == true && seconds(r) >= 0.5))
            .then_some(())
        })
        .await;
        assert_eq!(
            metric_as(&daemon, Some(ADMIN), "webrtcd_recording_paused", "camera=").await,
            0
        );
        // Said on /api/events (and so to hooks) too.
        let said = events.lock().map(|t| t.clone()).unwrap_or_default();
        assert!(
            said.contains("event: recording-paused") && said.contains("No space left"),
            "{said}"
        );
        assert!(said.contains("event: recording-resumed"), "{said}");
        let report = aiortc::finished(viewer, &daemon).await;
        eprintln!("viewer over {:?}: {report}", started.elapsed());
        let fps = report["recent_fps"].as_f64().unwrap_or(0.0);
        assert!(
            fps >= 25.0,
            "the viewer's frame rate fell to {fps}: {report}"
        );
        assert_eq!(report["recent_freezes"], 0, "{report}");
        // The tmpfs goes with the test's mount namespace.
    }
);
