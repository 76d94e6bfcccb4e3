//! Capture timestamps carried in the picture, to measure capture → decoded-frame latency
//! across processes (the benchmark, and anyone checking a deployment).
//!
//! The sender (`[video] stamp_capture_time = true`) writes the wall-clock time at which a raw
//! frame leaves capture into its luma plane: 64 bits (a 16-bit marker, then microseconds since
//! the Unix epoch, modulo 2^48), one bit per 16×16 block, white or black, left to right and
//! top to bottom. Blocks are macroblock-aligned and flat, so VP8 and H.264 keep them intact
//! at any sensible bitrate. The receiver (`[receive] measure_latency = true`) reads them back
//! from each decoded frame and subtracts from its own clock: both ends must share a clock
//! (the same machine, or NTP-synchronised machines).

use std::time::{SystemTime, UNIX_EPOCH};

use gst::prelude::*;
use gst_video::prelude::*;

const MARKER: u64 = 0xA55A;
const BLOCK: usize = 16;
const BITS: usize = 64;
const WHITE: u8 = 235;
const BLACK: u8 = 16;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn word(us: u64) -> u64 {
    (MARKER << 48) | (us & ((1 << 48) - 1))
}

/// Writes the stamp into a luma plane (`stride` bytes per row).
fn write(luma: &mut [u8], stride: usize, width: usize, height: usize, value: u64) -> bool {
    let per_row = width / BLOCK;
    if per_row == 0 || BITS.div_ceil(per_row) * BLOCK > height {
        return false;
    }
    for bit in 0..BITS {
        let (bx, by) = ((bit % per_row) * BLOCK, (bit / per_row) * BLOCK);
        let level = if value >> (BITS - 1 - bit) & 1 == 1 {
            WHITE
        } else {
            BLACK
        };
        for y in by..by + BLOCK {
            let row = y * stride;
            if let Some(px) = luma.get_mut(row + bx..row + bx + BLOCK) {
                px.fill(level);
            }
        }
    }
    true
}

/// Reads a stamp back; `None` if the frame carries none.
fn read(luma: &[u8], stride: usize, width: usize, height: usize) -> Option<u64> {
    let per_row = width / BLOCK;
    if per_row == 0 || BITS.div_ceil(per_row) * BLOCK > height {
        return None;
    }
    let mut value = 0u64;
    for bit in 0..BITS {
        let (bx, by) = ((bit % per_row) * BLOCK, (bit / per_row) * BLOCK);
        // The block's centre 8×8 pixels, away from edges the codec may blur.
        let mut sum = 0u32;
        for y in by + 4..by + 12 {
            let row = y * stride;
            sum += luma
                .get(row + bx + 4..row + bx + 12)?
                .iter()
                .map(|&p| u32::from(p))
                .sum::<u32>();
        }
        value = (value << 1) | u64::from(sum / 64 > 128);
    }
    (value >> 48 == MARKER).then_some(value & ((1 << 48) - 1))
}

/// Stamps every raw frame passing `pad` (I420 / NV12 / other planar-luma formats).
pub fn stamp_frames(pad: &gst::Pad) {
    pad.add_probe(gst::PadProbeType::BUFFER, |pad, info| {
        let Some(info_caps) = pad
            .current_caps()
            .and_then(|c| gst_video::VideoInfo::from_caps(&c).ok())
        else {
            return gst::PadProbeReturn::Ok;
        };
        if let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data {
            let buffer = buffer.make_mut();
            if let Ok(mut frame) =
                gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, &info_caps)
            {
                let (w, h) = (frame.width() as usize, frame.height() as usize);
                let stride = frame.plane_stride()[0] as usize;
                if let Ok(luma) = frame.plane_data_mut(0) {
                    write(luma, stride, w, h, word(now_us()));
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// Reads the stamp of every decoded frame passing `pad` and hands `on_latency` the
/// microseconds since it was stamped.
pub fn read_frames(pad: &gst::Pad, on_latency: impl Fn(u64) + Send + Sync + 'static) {
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let now = now_us() & ((1 << 48) - 1);
        let Some(video) = pad
            .current_caps()
            .and_then(|c| gst_video::VideoInfo::from_caps(&c).ok())
        else {
            return gst::PadProbeReturn::Ok;
        };
        if let Some(buffer) = info.buffer()
            && let Ok(frame) = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &video)
        {
            let (w, h) = (frame.width() as usize, frame.height() as usize);
            let stride = frame.plane_stride()[0] as usize;
            if let Some(stamped) = frame.plane_data(0).ok().and_then(|l| read(l, stride, w, h))
                && now >= stamped
            {
                on_latency(now - stamped);
            }
        }
        gst::PadProbeReturn::Ok
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_survives_a_round_trip_and_noise() {
        let (w, h) = (640, 480);
        let mut luma = vec![90u8; w * h];
        let stamp = word(123_456_789_012);
        assert!(write(&mut luma, w, w, h, stamp));
        // Codec noise: every pixel off by a little.
        for (i, p) in luma.iter_mut().enumerate() {
            *p = p.saturating_add((i % 7) as u8).saturating_sub(3);
        }
        assert_eq!(read(&luma, w, w, h), Some(123_456_789_012));
    }

    #[test]
    fn an_unstamped_frame_reads_as_none() {
        let (w, h) = (320, 240);
        assert_eq!(read(&vec![128u8; w * h], w, w, h), None);
        assert!(
            !write(&mut [0u8; 16 * 16], 16, 16, 16, 1),
            "too small to hold it"
        );
    }
}
