//! A JPEG (a snapshot) decoded by GStreamer's jpegdec: its size and its mean colour.

use gst::prelude::*;

pub struct Picture {
    pub width: usize,
    pub height: usize,
    /// Mean red, green and blue, 0–255.
    pub mean_rgb: Vec<f64>,
}

pub fn decode_jpeg(jpeg: &[u8]) -> Picture {
    gst::init().expect("GStreamer");
    let pipeline = gst::parse::launch(
        "appsrc name=in ! jpegdec ! videoconvert ! video/x-raw,format=RGB ! appsink name=out",
    )
    .expect("pipeline")
    .downcast::<gst::Pipeline>()
    .expect("a pipeline");
    let by_name = |name| pipeline.by_name(name).expect("element");
    let src = by_name("in").downcast::<gst_app::AppSrc>().expect("appsrc");
    let sink = by_name("out")
        .downcast::<gst_app::AppSink>()
        .expect("appsink");
    src.set_caps(Some(&gst::Caps::builder("image/jpeg").build()));
    pipeline.set_state(gst::State::Playing).expect("playing");
    src.push_buffer(gst::Buffer::from_slice(jpeg.to_vec()))
        .expect("push");
    let _ = src.end_of_stream();
    let sample = sink
        .try_pull_sample(gst::ClockTime::from_seconds(5))
        .expect("a decoded picture");
    let _ = pipeline.set_state(gst::State::Null);
    let info = gst_video::VideoInfo::from_caps(sample.caps().expect("caps")).expect("video caps");
    let buffer = sample.buffer().expect("buffer");
    let map = buffer.map_readable().expect("readable");
    let stride = info.stride()[0] as usize;
    let (width, height) = (info.width() as usize, info.height() as usize);
    let mut sums = [0f64; 3];
    for row in 0..height {
        for px in 0..width {
            for (c, sum) in sums.iter_mut().enumerate() {
                *sum += f64::from(map[row * stride + px * 3 + c]);
            }
        }
    }
    let pixels = (width * height).max(1) as f64;
    Picture {
        width,
        height,
        mean_rgb: sums.iter().map(|s| s / pixels).collect(),
    }
}
