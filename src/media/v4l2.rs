//! Choosing a capture format from what a V4L2 camera offers.

/// Raw formats in order of preference (cheapest to convert for the encoders), then MJPG.
const PREFERENCE: &[&str] = &["NV12", "I420", "YUY2", "UYVY", "YV12"];

/// The best format offered at exactly `width`x`height` and at least `fps`: a raw one if any,
/// else MJPG (decoded on the device). `None` when the camera cannot do that size and rate.
pub fn choose_format(caps: &gst::CapsRef, width: u32, height: u32, fps: u32) -> Option<String> {
    let fits = |s: &gst::StructureRef| {
        let dim = |name: &str, want: u32| match s.value(name) {
            Ok(v) => match v.get::<i32>() {
                Ok(x) => x as u32 == want,
                Err(_) => v
                    .get::<gst::IntRange<i32>>()
                    .is_ok_and(|r| (r.min() as u32..=r.max() as u32).contains(&want)),
            },
            Err(_) => false,
        };
        let rate_ok = match s.value("framerate") {
            Ok(v) => {
                if let Ok(f) = v.get::<gst::Fraction>() {
                    f.numer() as f64 / f.denom().max(1) as f64 >= fps as f64 - 0.01
                } else if let Ok(list) = v.get::<gst::List>() {
                    list.iter().any(|x| {
                        x.get::<gst::Fraction>().is_ok_and(|f| {
                            f.numer() as f64 / f.denom().max(1) as f64 >= fps as f64 - 0.01
                        })
                    })
                } else {
                    v.get::<gst::FractionRange>().is_ok_and(|r| {
                        let max = r.max();
                        max.numer() as f64 / max.denom().max(1) as f64 >= fps as f64 - 0.01
                    })
                }
            }
            Err(_) => true,
        };
        dim("width", width) && dim("height", height) && rate_ok
    };
    let raw: Vec<String> = caps
        .iter()
        .filter(|s| s.name() == "video/x-raw" && fits(s))
        .filter_map(|s| s.get::<String>("format").ok())
        .collect();
    if let Some(best) = PREFERENCE.iter().find(|p| raw.iter().any(|r| r == *p)) {
        return Some(best.to_string());
    }
    if let Some(other) = raw.first() {
        return Some(other.clone());
    }
    caps.iter()
        .any(|s| s.name() == "image/jpeg" && fits(s))
        .then(|| "MJPG".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded from a typical USB webcam (`gst-device-monitor-1.0`): YUY2 up to 640x480 at
    /// 30 fps, higher sizes only at 10 fps raw but 30 fps as MJPG.
    const WEBCAM: &str = "video/x-raw, format=(string)YUY2, width=(int)640, height=(int)480, \
        pixel-aspect-ratio=(fraction)1/1, framerate=(fraction){ 30/1, 15/1 }; \
        video/x-raw, format=(string)YUY2, width=(int)1280, height=(int)720, \
        pixel-aspect-ratio=(fraction)1/1, framerate=(fraction)10/1; \
        image/jpeg, width=(int)1280, height=(int)720, pixel-aspect-ratio=(fraction)1/1, \
        framerate=(fraction){ 30/1, 15/1 }; \
        image/jpeg, width=(int)640, height=(int)480, pixel-aspect-ratio=(fraction)1/1, \
        framerate=(fraction){ 30/1, 15/1 }";

    fn caps() -> gst::Caps {
        let _ = gst::init();
        WEBCAM.parse().unwrap()
    }

    #[test]
    fn raw_when_the_camera_can_at_that_size_and_rate() {
        assert_eq!(
            choose_format(&caps(), 640, 480, 30).as_deref(),
            Some("YUY2")
        );
    }

    #[test]
    fn mjpg_when_raw_is_too_slow_at_that_size() {
        assert_eq!(
            choose_format(&caps(), 1280, 720, 30).as_deref(),
            Some("MJPG")
        );
        assert_eq!(
            choose_format(&caps(), 1280, 720, 10).as_deref(),
            Some("YUY2")
        );
    }

    #[test]
    fn the_capture_pipeline_follows_the_choice_and_parses() {
        use crate::media::fragments::video_source;
        use crate::media::profile::Profile;
        let profile = Profile::parse(
            "name='cam'\n[video]\nsource='v4l2'\ndevice='/dev/video0'\nwidth=1280\n\
             height=720\nframerate=30\ncodecs=['h264']",
            std::path::Path::new("camera.toml"),
        )
        .unwrap();
        let video = profile.video.unwrap();
        let caps = caps();
        let desc = video_source(&video, Some(&caps));
        assert!(
            desc.starts_with(
                "v4l2src device=\"/dev/video0\" ! image/jpeg,width=1280,height=720,framerate=30/1 ! jpegdec"
            ),
            "{desc}"
        );
        // Every element exists and the description is well formed (no device is opened
        // before the pipeline starts).
        gst::parse::bin_from_description(&desc, true).unwrap();
        let small = Profile::parse(
            "name='cam'\n[video]\nsource='v4l2'\ndevice='/dev/video0'\ncodecs=['vp8']",
            std::path::Path::new("camera.toml"),
        )
        .unwrap();
        let desc = video_source(&small.video.unwrap(), Some(&caps));
        assert!(
            desc.contains("video/x-raw,format=YUY2,width=640,height=480"),
            "{desc}"
        );
    }

    #[test]
    fn nothing_when_the_camera_cannot() {
        assert_eq!(choose_format(&caps(), 1920, 1080, 30), None);
    }
}
