//! Built for tests only: #[cfg(test)] mod tests; the detector's decisions, and the grid read
//! from pictures of each kind of layout.

use std::time::{Duration, Instant};

use super::detect::{Change, Detector, GRID, changed_share, threshold};
use super::grid;
use crate::media::profile::MotionSettings;
use gst_video::VideoFrameExt;

fn settings() -> MotionSettings {
    MotionSettings {
        enabled: true,
        sensitivity: 0.5,
        min_duration_ms: 400,
        end_after_secs: 2,
    }
}

/// A grid with its first `moved` samples at `level`, the rest 0.
fn grid_with(moved: usize, level: u8) -> Vec<u8> {
    let mut g = vec![0u8; GRID.0 * GRID.1];
    for sample in g.iter_mut().take(moved) {
        *sample = level;
    }
    g
}

#[test]
fn sensitivity_sets_how_much_must_change() {
    assert!((threshold(0.0) - 0.1).abs() < 1e-9);
    assert!((threshold(1.0) - 0.005).abs() < 1e-9);
    assert!(threshold(0.5) > threshold(0.9));
    assert_eq!(changed_share(&[0, 0, 0, 0], &[0, 25, 24, 200]), 0.5);
    assert_eq!(changed_share(&[0], &[1, 2]), 0.0, "sizes differ");
}

#[test]
fn motion_starts_once_it_lasts_and_ends_once_still() {
    let mut d = Detector::new(&settings());
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let moving = |i: usize| {
        grid_with(
            GRID.0 * GRID.1 / 10,
            if i.is_multiple_of(2) { 200 } else { 0 },
        )
    };
    assert_eq!(
        d.look(moving(0), at(0)),
        None,
        "the first look compares with nothing"
    );
    assert_eq!(d.look(moving(1), at(200)), None);
    assert_eq!(d.look(moving(2), at(400)), None, "200 ms of motion");
    assert_eq!(d.look(moving(3), at(600)), Some(Change::Start), "400 ms");
    assert!(d.active());
    assert_eq!(d.look(moving(4), at(800)), None, "once");
    // Still from here (the look at 1000 still sees the last change): ends 2 s after it.
    let still = grid_with(GRID.0 * GRID.1 / 10, 0);
    assert_eq!(d.look(still.clone(), at(1000)), None);
    assert_eq!(d.look(still.clone(), at(1200)), None);
    assert_eq!(d.look(still.clone(), at(2800)), None);
    assert_eq!(d.look(still, at(3000)), Some(Change::End));
    assert!(!d.active());
}

#[test]
fn a_flicker_is_no_motion_and_a_camera_that_stops_ends_it() {
    let mut d = Detector::new(&settings());
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let big = grid_with(GRID.0 * GRID.1, 255);
    let dark = grid_with(0, 0);
    d.look(dark.clone(), at(0));
    assert_eq!(d.look(big.clone(), at(200)), None, "one flash");
    assert_eq!(d.look(big.clone(), at(400)), None, "and nothing after it");
    assert_eq!(d.look(big.clone(), at(600)), None);
    // Small changes (under the threshold) never start it.
    let mut d = Detector::new(&settings());
    for i in 0..20u64 {
        let g = grid_with(10, if i.is_multiple_of(2) { 255 } else { 0 });
        assert_eq!(d.look(g, at(i * 200)), None);
    }
    // Motion, then no picture at all: the thread's tick ends it.
    let mut d = Detector::new(&settings());
    for i in 0..5u64 {
        d.look(
            if i.is_multiple_of(2) {
                big.clone()
            } else {
                dark.clone()
            },
            at(i * 200),
        );
    }
    assert!(d.active());
    assert_eq!(d.tick(at(1500)), None);
    assert_eq!(d.tick(at(2900)), Some(Change::End));
}

/// A picture of `format`, `w`×`h`, every byte `fill`, one pixel's brightness set to `mark`.
fn picture(format: gst_video::VideoFormat, w: u32, h: u32) -> (gst::Buffer, gst_video::VideoInfo) {
    gst::init().expect("gst");
    let info = gst_video::VideoInfo::builder(format, w, h)
        .build()
        .expect("info");
    let buffer = gst::Buffer::with_size(info.size()).expect("buffer");
    (buffer, info)
}

#[test]
fn the_grid_reads_brightness_from_planar_packed_and_rgb_pictures() {
    use gst_video::VideoFormat;
    for format in [
        VideoFormat::I420,
        VideoFormat::Nv12,
        VideoFormat::Yuy2,
        VideoFormat::Uyvy,
        VideoFormat::Rgbx,
        VideoFormat::Bgrx,
        VideoFormat::Gray8,
    ] {
        let (mut buffer, info) = picture(format, 128, 96);
        {
            let buffer = buffer.get_mut().expect("writable");
            let mut frame =
                gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, &info).expect("frame");
            let finfo = info.format_info();
            let component = if finfo.is_yuv() || finfo.is_gray() {
                0
            } else {
                1
            };
            let plane = finfo.plane()[component];
            let stride = frame.plane_stride()[plane as usize] as usize;
            let pixel_stride = finfo.pixel_stride()[component] as usize;
            let offset = finfo.poffset()[component] as usize;
            let data = frame.plane_data_mut(plane).expect("plane");
            data.fill(0);
            // The top-left grid sample reads pixel (1, 1): make it bright.
            data[stride + pixel_stride + offset] = 200;
        }
        let g = grid::sample(&buffer, &info).unwrap_or_else(|| panic!("{format:?}"));
        assert_eq!(g.len(), GRID.0 * GRID.1, "{format:?}");
        assert_eq!(g[0], 200, "{format:?}");
        assert!(g[1..].iter().all(|v| *v == 0), "{format:?}");
    }
    // A 10-bit picture is not watched (no panic, no guess).
    let (buffer, info) = picture(gst_video::VideoFormat::I42010le, 64, 48);
    assert!(grid::sample(&buffer, &info).is_none());
}
