//! Motion (`[camera.motion]`): a camera whose picture moves raises `motion-start` on
//! `/api/events`, to a hook and in `GET /api/cameras`; a camera whose picture stands still
//! raises nothing; once the picture stops moving (the camera reloaded with a still picture),
//! `motion-end`.

mod common;

use std::time::Duration;

use common::browser::Net;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
        // The event stream, read raw as it comes.
        let mut stream = tokio::net::TcpStream::connect(&daemon.addr)
            .await
            .expect("connect");
        stream
            .write_all(
                format!(
                    "GET /api/events HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
                    daemon.addr
                )
                .as_bytes(),
            )
            .await
            .expect("write");
        let streamed = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = std::sync::Arc::clone(&streamed);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(40), stream.read(&mut buf)).await
            {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("lock")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
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
