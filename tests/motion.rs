//! Motion (`[camera.motion]`): a camera whose picture moves raises `motion-start` on
//! `/api/events`, to a hook and in `GET /api/cameras`; a camera whose picture stands still
//! raises nothing; once the picture stops moving (the camera reloaded with a still picture),
//! `motion-end`.

mod common;

use std::time::Duration;

use common::browser::Net;
use common::*;
use serde_json::Value;

/// A camera showing `launch`'s picture, watched for motion (ended after 1 s still).
fn camera(name: &str, launch: &str) -> String {
    format!(
        "[[camera]]\nname = '{name}'\n[camera.video]\nsource = 'launch'\n\
         launch = '{launch}'\nwidth = 320\nheight = 240\nframerate = 30\ncodecs = ['vp8']\n\
         [camera.motion]\nenabled = true\nend_after_secs = 1\n"
    )
}

/// The whole picture scrolls sideways: a person crossing the yard, and then some.
const MOVING: &str = "videotestsrc is-live=true pattern=smpte75 horizontal-speed=4";
/// Nothing moves (and no noise patch, unlike `smpte`'s).
const STILL: &str = "videotestsrc is-live=true pattern=pinwheel";

fn profile_text(yard: &str) -> String {
    format!(
        "name = 'motion'\nlinger_ms = 500\n{}{}",
        camera("yard", yard),
        camera("wall", STILL)
    )
}

async fn cameras_now(p: &Proc) -> Vec<Value> {
    get(p, "/api/cameras").await["cameras"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn motion_of<'a>(cameras: &'a [Value], name: &str) -> &'a Value {
    cameras
        .iter()
        .find(|c| c["name"] == name)
        .map(|c| &c["motion"])
        .unwrap_or(&Value::Null)
}

netns_test!(
    a_moving_picture_raises_motion_and_a_still_one_none,
    Net::LoopbackOnly,
    {
        let dir = artifacts_dir().join("motion-hooks");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let hook = dir.join("hook.sh");
        let log = dir.join("events.log");
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh\necho \"$WEBRTCD_EVENT $WEBRTCD_CAMERA\" >> {}\n",
                log.display()
            ),
        )
        .expect("hook");
        let _ = std::process::Command::new("chmod")
            .args(["+x", &hook.to_string_lossy()])
            .status();
        let config = config_file(
            "motion",
            &format!(
                "[[hooks]]\non = ['motion-start', 'motion-end']\nexec = '{}'\n",
                hook.display()
            ),
        );
        let profile = write_profile("motion", &profile_text(MOVING));
        let daemon = Proc::daemon("motion", &profile, &["--config", &config]);
        let (streamed, reader) = event_stream(&daemon, None).await;
        let text = || streamed.lock().expect("lock").clone();
        wait_for(
            "motion-start from the yard",
            Duration::from_secs(15),
            || async {
                let t = text();
                (t.contains("event: motion-start") && t.contains("\"camera\":\"yard\""))
                    .then_some(())
            },
        )
        .await;
        let cameras = cameras_now(&daemon).await;
        let (yard, wall) = (motion_of(&cameras, "yard"), motion_of(&cameras, "wall"));
        eprintln!("yard {yard}, wall {wall}");
        assert_eq!(yard["active"], true, "{yard}");
        assert!(yard["last_start_ms"].as_u64().is_some(), "{yard}");
        // The wall stays still for as long again.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let cameras = cameras_now(&daemon).await;
        let wall = motion_of(&cameras, "wall");
        assert_eq!(wall["active"], false, "{wall}");
        assert!(wall["last_start_ms"].is_null(), "{wall}");
        assert!(!text().contains("\"camera\":\"wall\""), "{}", text());
        let hooked = wait_for("the hook to run", Duration::from_secs(10), || async {
            let log = std::fs::read_to_string(&log).ok()?;
            log.contains("motion-start yard").then_some(log)
        })
        .await;
        assert!(!hooked.contains("wall"), "{hooked}");

        // The yard's picture stops moving (the profile reloaded): motion ends.
        std::fs::write(&profile, profile_text(STILL)).expect("profile");
        daemon.signal("HUP");
        wait_for(
            "motion-end from the yard",
            Duration::from_secs(20),
            || async {
                let t = text();
                t.contains("event: motion-end").then_some(())
            },
        )
        .await;
        let cameras = cameras_now(&daemon).await;
        let yard = motion_of(&cameras, "yard");
        assert_eq!(yard["active"], false, "{yard}");
        assert!(yard["last_end_ms"].as_u64().is_some(), "{yard}");
        let streamed_text = text();
        let starts = streamed_text.matches("event: motion-start").count();
        let ends = streamed_text.matches("event: motion-end").count();
        assert_eq!(
            (starts, ends),
            (1, 1),
            "one motion, not a flicker: {streamed_text}"
        );
        reader.abort();
    }
);

/// A one-camera profile whose picture always moves, in H.264, its motion watch `enabled` or
/// not.
fn porch_profile(enabled: bool) -> String {
    format!(
        "name = 'porch'\nlinger_ms = 500\n[video]\nsource = 'launch'\nlaunch = '{MOVING}'\n\
         width = 320\nheight = 240\nframerate = 30\ncodecs = ['h264']\n\
         [motion]\nenabled = {enabled}\nend_after_secs = 1\n"
    )
}

/// `time_ms` of the first `event` in the stream's text.
fn event_time(text: &str, event: &str) -> Option<u64> {
    let at = text.find(&format!("event: {event}"))?;
    let data = text[at..].lines().find_map(|l| l.strip_prefix("data: "))?;
    serde_json::from_str::<Value>(data).ok()?["time_ms"].as_u64()
}

fn start_ms(recording: &Value) -> u64 {
    let text = recording["start"].as_str().unwrap_or_default();
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| panic!("not RFC 3339: {text}"));
    (t.unix_timestamp_nanos() / 1_000_000) as u64
}

// `mode = "motion"`: nothing is recorded while nothing moves (here: while the camera's motion
// watch is off, the picture moving all along); motion recorded from `pre_secs` before its
// start (frames held since a keyframe), and until `post_secs` after it ended.
netns_test!(
    motion_mode_records_the_motion_with_what_came_before,
    Net::LoopbackOnly,
    {
        let state = format!("{}/recordings", state_dir("porch").display());
        let _ = std::fs::remove_dir_all(&state);
        let profile = write_profile("porch", &porch_profile(false));
        let config = config_file(
            "porch",
            "[recording]\nmode = 'motion'\npre_secs = 3\npost_secs = 1\nsegment_secs = 60\n",
        );
        let daemon = Proc::daemon("porch", &profile, &["--config", &config]);
        let (streamed, reader) = event_stream(&daemon, None).await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        let idle = get(&daemon, "/api/recordings").await;
        assert_eq!(idle["recordings"], serde_json::json!([]), "{idle}");
        assert_eq!(idle["recorders"][0]["state"], "waiting", "{idle}");

        // Motion is watched from now: it starts at once (the picture moves).
        std::fs::write(&profile, porch_profile(true)).expect("profile");
        daemon.signal("HUP");
        let started = wait_for("motion-start", Duration::from_secs(15), || async {
            event_time(&streamed.lock().expect("lock"), "motion-start")
        })
        .await;
        let recording = wait_for("a recording", Duration::from_secs(10), || async {
            let v = get(&daemon, "/api/recordings").await;
            v["recordings"].as_array()?.first().cloned()
        })
        .await;
        let before = started as i64 - start_ms(&recording) as i64;
        eprintln!("recorded from {before} ms before motion-start: {recording}");
        // From the keyframe at least 3 s back: 3 s, plus up to a keyframe interval (2 s).
        assert!(
            (2950..=5200).contains(&before),
            "{before} ms before the motion"
        );

        // Watching stops: the motion is over, and the recording ends `post_secs` later.
        std::fs::write(&profile, porch_profile(false)).expect("profile");
        let stopped_at = std::time::Instant::now();
        daemon.signal("HUP");
        let done = wait_for("the recording to end", Duration::from_secs(15), || async {
            let v = get(&daemon, "/api/recordings").await;
            let first = v["recordings"].as_array()?.first()?.clone();
            (first["writing"] == false).then_some(first)
        })
        .await;
        eprintln!("ended {:?} after the motion: {done}", stopped_at.elapsed());
        let state_now = get(&daemon, "/api/recordings").await;
        assert_eq!(state_now["recorders"][0]["state"], "standby", "{state_now}");
        assert_eq!(
            state_now["recordings"].as_array().map(Vec::len),
            Some(1),
            "{state_now}"
        );
        let file = format!(
            "{state}/porch/{}.mp4",
            done["id"].as_str().unwrap_or_default()
        );
        let (ok, out) = common::rtsp::run_tool(
            "ffprobe",
            [
                "-v",
                "error",
                "-show_entries",
                "format=duration",
                "-of",
                "csv=p=0",
                &file,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            Duration::from_secs(20),
        )
        .await;
        let probed: f64 = out.trim().parse().unwrap_or(-1.0);
        let listed = done["duration_s"].as_f64().unwrap_or(0.0);
        assert!(
            ok && (probed - listed).abs() < 0.05,
            "ffprobe {out}, listed {listed}"
        );
        reader.abort();
    }
);
