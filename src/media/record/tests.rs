//! Built for tests only: #[cfg(test)] mod tests; segments written by the same elements the
//! recorder uses, then torn as a crash tears them.

use std::io::Write;
use std::time::Duration;

use gst::prelude::*;

use super::mp4::scan_and_repair;
use super::store::SegmentId;

/// A fragmented MP4 of `frames` at 30 fps, as a segment is written.
fn write_segment(path: &std::path::Path, frames: u32) {
    write_sized_segment(path, frames, 160);
}

fn write_sized_segment(path: &std::path::Path, frames: u32, width: u32) {
    gst::init().expect("gst");
    let launch = format!(
        "videotestsrc num-buffers={frames} ! video/x-raw,width={width},height=120,framerate=30/1 \
         ! x264enc key-int-max=30 ! h264parse ! mp4mux fragment-duration=1000 \
         ! filesink location={}",
        path.display()
    );
    let pipeline = gst::parse::launch(&launch).expect("pipeline");
    pipeline.set_state(gst::State::Playing).expect("play");
    let bus = pipeline.bus().expect("bus");
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("finished");
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
    pipeline.set_state(gst::State::Null).expect("stop");
}

fn open(path: &std::path::Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open")
}

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("webrtcd-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir.join(name)
}

#[test]
fn a_whole_segment_reads_its_duration_and_is_left_as_it_is() {
    let path = temp("whole.mp4");
    write_segment(&path, 90);
    let len = std::fs::metadata(&path).expect("len").len();
    let scanned = scan_and_repair(&mut open(&path)).expect("scan");
    assert!(!scanned.repaired);
    assert_eq!(scanned.len, len);
    assert!(
        (scanned.duration.as_secs_f64() - 3.0).abs() < 0.05,
        "{scanned:?}"
    );
}

#[test]
fn a_torn_end_is_cut_after_the_last_whole_fragment_and_its_duration_written() {
    let path = temp("torn.mp4");
    write_segment(&path, 90);
    let whole = std::fs::read(&path).expect("read");
    // The last fragment's mdat is torn in its middle (a kill during a write), with the index
    // (mfra) never written.
    let last_moof = whole
        .windows(4)
        .rposition(|w| w == b"moof")
        .expect("a moof")
        - 4;
    let torn = last_moof + (whole.len() - last_moof) / 2;
    std::fs::write(&path, &whole[..torn]).expect("write");
    let scanned = scan_and_repair(&mut open(&path)).expect("scan");
    assert!(scanned.repaired, "{scanned:?}");
    assert_eq!(
        scanned.len, last_moof as u64,
        "cut where the torn fragment began"
    );
    assert_eq!(
        std::fs::metadata(&path).expect("len").len(),
        last_moof as u64
    );
    assert!(
        scanned.duration >= Duration::from_millis(1900)
            && scanned.duration <= Duration::from_millis(2100),
        "{scanned:?}"
    );
    // Read again: nothing more to cut, the same duration.
    let again = scan_and_repair(&mut open(&path)).expect("scan");
    assert!(!again.repaired);
    assert_eq!(again.duration, scanned.duration);

    // Garbage after the last whole box goes too.
    let mut file = open(&path);
    std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).expect("seek");
    file.write_all(&[0xff; 13]).expect("append");
    let cut = scan_and_repair(&mut open(&path)).expect("scan");
    assert!(cut.repaired);
    assert_eq!(cut.len, last_moof as u64);
}

#[test]
fn what_is_no_segment_of_ours_is_an_error_not_a_panic() {
    let path = temp("garbage.mp4");
    std::fs::write(&path, b"\x00\x00\x00\x10moovgarbage!!!").expect("write");
    assert!(scan_and_repair(&mut open(&path)).is_err());
    std::fs::write(&path, b"").expect("write");
    assert!(scan_and_repair(&mut open(&path)).is_err());
    // A moov that claims more than the file holds: torn before any movie.
    std::fs::write(&path, b"\x7f\x00\x00\x00moov").expect("write");
    assert!(scan_and_repair(&mut open(&path)).is_err());
}

#[test]
fn ids_are_a_camera_and_a_utc_time_and_nothing_else() {
    let id = SegmentId::parse("door_20261208T001500.123Z").expect("an id");
    assert_eq!(id.camera, "door");
    assert_eq!(id.text(), "door_20261208T001500.123Z");
    assert_eq!(id.start.millisecond(), 123);
    let parsed = SegmentId::parse("front_door_20261208T001500.123Z").expect("underscores");
    assert_eq!(parsed.camera, "front_door");
    for bad in [
        "",
        "door",
        "../door_20261208T001500.123Z",
        "door_20261208T001500.123Z/../../x",
        "Door_20261208T001500.123Z",
        "door_20261308T001500.123Z",
        "door_20261208T001500Z",
        "door_20261208T001500.123Z.mp4",
        "door_20261208T001500.123",
    ] {
        assert!(SegmentId::parse(bad).is_none(), "{bad:?}");
    }
}

#[test]
fn the_preroll_keeps_pre_back_from_a_keyframe_and_stays_bounded() {
    use super::preroll::{Held, Preroll};
    gst::init().expect("gst");
    let caps = gst::Caps::builder("video/x-h264").build();
    let t0 = std::time::Instant::now();
    let mut preroll = Preroll::default();
    // 30 fps, a keyframe every 60 frames (2 s), 10 s of it; 3 s wanted.
    for i in 0..300u64 {
        let frame = Held {
            buffer: gst::Buffer::with_size(1000).expect("buffer"),
            keyframe: i % 60 == 0,
            came: t0 + Duration::from_millis(i * 1000 / 30),
        };
        preroll.push(&caps, frame, Duration::from_secs(3));
    }
    let kept = preroll.kept();
    let now = t0 + Duration::from_millis(299 * 1000 / 30);
    let (first_key, first_came) = kept[0];
    assert!(first_key, "from a keyframe");
    let back = now - first_came;
    assert!(back >= Duration::from_secs(3), "{back:?}");
    assert!(
        back <= Duration::from_secs(5),
        "no more than a keyframe interval more: {back:?}"
    );
    // Frames before the first keyframe are not kept; other caps start it over.
    let mut fresh = Preroll::default();
    fresh.push(
        &caps,
        Held {
            buffer: gst::Buffer::with_size(10).expect("buffer"),
            keyframe: false,
            came: t0,
        },
        Duration::from_secs(3),
    );
    assert!(fresh.kept().is_empty());
    let other = gst::Caps::builder("video/x-h264")
        .field("width", 640)
        .build();
    preroll.push(
        &other,
        Held {
            buffer: gst::Buffer::with_size(10).expect("buffer"),
            keyframe: true,
            came: now,
        },
        Duration::from_secs(3),
    );
    assert_eq!(preroll.kept().len(), 1);
    let (taken_caps, frames) = preroll.take().expect("taken");
    assert_eq!((taken_caps, frames.len()), (other, 1));
    // An encoder that never makes another keyframe: bounded, not a minute and more of it.
    let mut endless = Preroll::default();
    for i in 0..5000u64 {
        let frame = Held {
            buffer: gst::Buffer::with_size(100).expect("buffer"),
            keyframe: i == 0,
            came: t0 + Duration::from_millis(i * 33),
        };
        endless.push(&caps, frame, Duration::from_secs(3));
    }
    assert!(endless.kept().len() <= 1800, "{}", endless.kept().len());
}

#[test]
fn segments_join_into_one_file_until_one_differs() {
    use super::splice::{join, read_range};
    let (a, b, c) = (temp("join-a.mp4"), temp("join-b.mp4"), temp("join-c.mp4"));
    write_segment(&a, 60);
    write_segment(&b, 45);
    write_sized_segment(&c, 30, 320);
    let joined = join(&[a.clone(), b.clone(), c.clone()]).expect("joined");
    assert_eq!(joined.segments, 2, "the third has another picture size");
    assert!(
        (joined.duration.as_secs_f64() - 3.5).abs() < 0.05,
        "{:?}",
        joined.duration
    );
    let bytes = read_range(&joined.pieces, 0..joined.len).expect("read");
    assert_eq!(bytes.len() as u64, joined.len);
    let out = temp("joined.mp4");
    std::fs::write(&out, &bytes).expect("write");
    // Read back as any segment is: the whole length, nothing torn.
    let scanned = scan_and_repair(&mut open(&out)).expect("scan");
    assert!(!scanned.repaired);
    assert!(
        (scanned.duration.as_secs_f64() - 3.5).abs() < 0.05,
        "{scanned:?}"
    );
    // A range is the same bytes as the whole file's.
    let part = read_range(&joined.pieces, 1000..5000).expect("range");
    assert_eq!(part, bytes[1000..5000].to_vec());
    // Nothing to join.
    let none = join(&[c]).expect("one");
    assert_eq!(none.segments, 1);
}

#[test]
fn hostile_boxes_are_refused_in_bounded_time() {
    use super::mp4::scan;
    use super::splice::join;
    let path = temp("hostile.mp4");
    write_segment(&path, 60);
    let mut bytes = std::fs::read(&path).expect("read");
    // A trun that claims four billion samples.
    let trun = bytes.windows(4).position(|w| w == b"trun").expect("a trun");
    bytes[trun + 8..trun + 12].copy_from_slice(&u32::MAX.to_be_bytes());
    std::fs::write(&path, &bytes).expect("write");
    let started = std::time::Instant::now();
    let _ = scan(&mut open(&path), false);
    let _ = join(std::slice::from_ref(&path));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // A box whose 64-bit size runs past the end of every file (pos + size overflows).
    let mut boxes = b"\x00\x00\x00\x10ftypisom\x00\x00\x00\x00".to_vec();
    boxes.extend_from_slice(b"\x00\x00\x00\x01free");
    boxes.extend_from_slice(&(u64::MAX - 7).to_be_bytes());
    boxes.extend_from_slice(&[0u8; 64]);
    std::fs::write(&path, &boxes).expect("write");
    let started = std::time::Instant::now();
    assert!(scan(&mut open(&path), false).is_err(), "no moov");
    let joined = join(std::slice::from_ref(&path)).expect("nothing joined");
    assert_eq!(joined.segments, 0);
    assert!(started.elapsed() < Duration::from_secs(2));
}
