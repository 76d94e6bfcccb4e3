//! The shared stream with real encoders: feeding only once running and connected, keyframes
//! asked for as calls connect, keyframe requests reaching the encoder.
//!
//! Built for tests only: `#[cfg(test)] mod tests;` in this folder's `mod.rs`.

use super::*;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

use super::fanout::KEYFRAME_MIN_INTERVAL;
use crate::media::codecs::Codec;
use crate::media::profile::Profile;
use crate::sync::lock;

/// The calls without audio: an appsrc fed before it ran stamped a frame hours in the
/// future, and webrtcbin's `clocksync sync=true` held the track for good (one packet, then
/// nothing). A branch is now fed only once activated, after it runs in its pipeline.
/// Shared encoders for a test tone in Opus.
fn opus_encoders(linger_ms: u64) -> Arc<Encoders> {
    gst::init().unwrap();
    let text =
        format!("name='t'\nlinger_ms={linger_ms}\n[audio]\nsource='test'\ncodecs=['opus']\n");
    let profile = Profile::parse(&text, Path::new("t.toml")).unwrap();
    let chosen = HashMap::from([(Codec::Opus, "opusenc".to_string())]);
    Encoders::new(Arc::new(profile), chosen)
}

/// What a feed gave the call's payloader: (keyframe?, timestamp) per frame, in order.
type Given = Vec<(bool, Option<gst::ClockTime>)>;

/// A call's branch on a 320×240 VP8 test stream, in a running pipeline of its own, and
/// the frames its feed gave it.
struct TestCall {
    encoders: Arc<Encoders>,
    subscription: Subscription,
    pipeline: gst::Pipeline,
    frames: Arc<Mutex<Given>>,
}

impl TestCall {
    fn new() -> TestCall {
        gst::init().unwrap();
        let text = "name='t'\nlinger_ms=0\n[video]\nsource='test'\ncodecs=['vp8']\nwidth=320\nheight=240\n";
        let profile = Profile::parse(text, Path::new("t.toml")).unwrap();
        let chosen = HashMap::from([(Codec::Vp8, "vp8enc".to_string())]);
        let encoders = Encoders::new(Arc::new(profile), chosen);
        let mut branch = encoders.branch(Codec::Vp8, 96, || {}).unwrap();
        let pipeline = gst::Pipeline::new();
        let sink = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()
            .unwrap();
        pipeline
            .add_many([branch.branch.bin.upcast_ref(), &sink])
            .unwrap();
        branch.branch.bin.link(&sink).unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let frames = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&frames);
        branch.branch.bin.static_pad("sink").unwrap().add_probe(
            gst::PadProbeType::BUFFER,
            move |_, info| {
                if let Some(buffer) = info.buffer() {
                    let key = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
                    lock(&seen).push((key, buffer.pts()));
                }
                gst::PadProbeReturn::Ok
            },
        );
        let subscription = branch.subscription.take().unwrap();
        subscription.activate();
        TestCall {
            encoders,
            subscription,
            pipeline,
            frames,
        }
    }

    /// The fakesink at the end of the call's branch.
    fn sink(&self) -> gst::Element {
        self.pipeline
            .iterate_sinks()
            .next()
            .ok()
            .flatten()
            .expect("a sink")
    }

    /// Keyframes forced on the stream so far.
    fn forced(&self) -> u64 {
        self.encoders
            .streams()
            .first()
            .map_or(0, |s| s.keyframes_forced)
    }

    /// Connects the call: ten frames from then on, checked to start at a keyframe, in
    /// order, each once.
    fn connected(&self) -> Given {
        assert!(lock(&self.frames).is_empty(), "fed before connected");
        self.subscription.start_at_keyframe();
        let deadline = Instant::now() + Duration::from_secs(5);
        while lock(&self.frames).len() < 10 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let frames = lock(&self.frames).clone();
        assert!(frames.len() >= 10, "frames held back: {frames:?}");
        assert!(
            frames[0].0,
            "the call did not start at a keyframe: {frames:?}"
        );
        assert!(
            frames.windows(2).all(|w| w[0].1 < w[1].1),
            "frames out of order or twice: {frames:?}"
        );
        frames
    }
}

impl Drop for TestCall {
    fn drop(&mut self) {
        self.pipeline.set_state(gst::State::Null).unwrap();
        self.encoders.stop_all();
    }
}

/// Long enough for the stream's last keyframe to be too old to start a call from.
const PAST_ITS_KEYFRAME: Duration = Duration::from_millis(800);

/// The keyframe asked for as the call starts connecting is kept until the connection is
/// up and goes out first: no second keyframe is forced for it, and nothing goes out
/// before.
#[test]
fn a_call_starts_with_the_keyframe_asked_for_while_it_connected() {
    let call = TestCall::new();
    std::thread::sleep(PAST_ITS_KEYFRAME);
    call.subscription.connecting();
    // Long enough for the encoder to make the keyframe, shorter than the hold lasts.
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(call.forced(), 1, "one keyframe asked for while connecting");
    call.connected();
    assert_eq!(call.forced(), 1, "a second keyframe was forced");
}

/// A keyframe request from the call's side (the force-key-unit event webrtcbin sends
/// upstream on a PLI or FIR) reaches the encoder, and is taken without a
/// GStreamer-CRITICAL (it was `gst_mini_object_unref: assertion 'mini_object != NULL'`
/// for every request while the probe returned `Drop`).
#[test]
fn a_keyframe_request_from_the_call_reaches_the_encoder_without_a_critical() {
    let call = TestCall::new();
    let criticals = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&criticals);
    let handler = glib::log_set_handler(
        Some("GStreamer"),
        glib::LogLevels::LEVEL_CRITICAL,
        false,
        false,
        move |_, _, message| {
            if message.contains("gst_mini_object_unref") {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        },
    );
    std::thread::sleep(PAST_ITS_KEYFRAME);
    let pad = call.sink().static_pad("sink").expect("sink pad");
    let request = || {
        gst_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build()
    };
    assert!(pad.push_event(request()), "the request was refused");
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(call.forced(), 1, "the encoder was not asked");
    // Again, past the rate limit.
    std::thread::sleep(KEYFRAME_MIN_INTERVAL);
    assert!(pad.push_event(request()));
    std::thread::sleep(Duration::from_millis(150));
    glib::log_remove_handler(Some("GStreamer"), handler);
    assert_eq!(call.forced(), 2);
    assert_eq!(criticals.load(Ordering::Relaxed), 0, "GStreamer-CRITICAL");
}

/// A callee's encoder is asked for a keyframe on `call` (`Warm::expect_call`); the call
/// starts connecting once the offer comes, after that keyframe (or while it is on its
/// way), and starts from it: no second keyframe is forced.
#[test]
fn a_call_starts_from_the_keyframe_asked_for_when_it_was_expected() {
    for offer_after in [Duration::from_millis(200), Duration::from_millis(5)] {
        let call = TestCall::new();
        std::thread::sleep(PAST_ITS_KEYFRAME);
        let warm = call.encoders.warm(Codec::Vp8).unwrap();
        warm.expect_call();
        assert_eq!(call.forced(), 1);
        std::thread::sleep(offer_after);
        call.subscription.connecting();
        std::thread::sleep(Duration::from_millis(150));
        call.connected();
        assert_eq!(
            call.forced(),
            1,
            "a second keyframe was forced ({offer_after:?})"
        );
    }
}

/// A peer that sends `call` after `call` forces no keyframe after keyframe: expecting a
/// call asks at most once per KEYFRAME_MIN_INTERVAL.
#[test]
fn calls_expected_in_a_burst_force_one_keyframe() {
    let call = TestCall::new();
    std::thread::sleep(PAST_ITS_KEYFRAME);
    let warm = call.encoders.warm(Codec::Vp8).unwrap();
    // 400 ms: past the time a keyframe counts as on its way, or as just made.
    for _ in 0..20 {
        warm.expect_call();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(call.forced(), 1);
}

/// An encoder starts with a keyframe: a call on a stream that has just started asks for
/// none, neither when it is expected nor as it connects.
#[test]
fn a_call_on_a_starting_stream_forces_no_keyframe() {
    let call = TestCall::new();
    // Its first frame (a keyframe) has come, a moment ago.
    std::thread::sleep(Duration::from_millis(100));
    let warm = call.encoders.warm(Codec::Vp8).unwrap();
    warm.expect_call();
    call.subscription.connecting();
    std::thread::sleep(Duration::from_millis(250));
    call.connected();
    assert_eq!(call.forced(), 0);
}

#[test]
fn a_branch_is_fed_only_once_running_and_connected_and_its_frames_pass_a_syncing_clocksync() {
    let encoders = opus_encoders(2000);
    let mut branch = encoders.branch(Codec::Opus, 111, || {}).unwrap();
    let subscribers = |e: &Encoders| e.streams().first().map_or(0, |s| s.subscribers);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(subscribers(&encoders), 0, "fed before it runs");

    // What webrtcbin does with each send stream: a clocksync that waits for each
    // buffer's running time.
    let pipeline = gst::Pipeline::new();
    let clocksync = gst::ElementFactory::make("clocksync")
        .property("sync", true)
        .build()
        .unwrap();
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("async", false)
        .build()
        .unwrap();
    pipeline.add_many([&clocksync, &sink]).unwrap();
    clocksync.link(&sink).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let passed = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&passed);
    sink.static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            count.fetch_add(1, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
    pipeline.add(&branch.branch.bin).unwrap();
    branch
        .branch
        .bin
        .static_pad("src")
        .unwrap()
        .link(&clocksync.static_pad("sink").unwrap())
        .unwrap();
    branch.branch.bin.sync_state_with_parent().unwrap();
    let subscription = branch.subscription.take().unwrap();
    subscription.activate();
    assert_eq!(subscribers(&encoders), 1);
    // A call's branch is fed directly, and only once its connection is up.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(passed.load(Ordering::Relaxed), 0, "fed before connected");
    subscription.start_at_keyframe();
    // 20 ms Opus frames: ~50 in a second, none held back.
    let deadline = Instant::now() + Duration::from_secs(5);
    while passed.load(Ordering::Relaxed) < 25 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(passed.load(Ordering::Relaxed) >= 25, "frames held back");
    drop(subscription);
    pipeline.set_state(gst::State::Null).unwrap();
    encoders.stop_all();
}

/// A call that has built its branch but not yet activated it holds the stream: the
/// last active viewer leaving must not stop it under the new one (found by the soak:
/// a call placed as the linger ran out ended with `source-error`).
#[test]
fn a_branch_not_yet_activated_keeps_the_stream_alive() {
    let encoders = opus_encoders(0);
    let mut first = encoders.branch(Codec::Opus, 111, || {}).unwrap();
    let first = first.subscription.take().unwrap();
    first.activate();
    let failed = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&failed);
    let mut second = encoders
        .branch(Codec::Opus, 111, move || {
            flag.store(true, Ordering::Relaxed)
        })
        .unwrap();
    // No runtime here: the last viewer leaving decides on a thread of its own, once the
    // linger (0 here) has passed, whether to stop.
    drop(first);
    let second = second.subscription.take().unwrap();
    second.activate();
    assert!(
        !failed.load(Ordering::Relaxed),
        "the new call lost its source"
    );
    assert_eq!(encoders.streams().first().map(|s| s.state), Some("running"));
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !encoders.streams().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        encoders.streams().is_empty(),
        "stopped once nobody holds it"
    );
}
