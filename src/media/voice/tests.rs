//! The canceller's two halves wired together, without a device: a speaker's frames as the
//! reference, the microphone hearing them later and quieter.

use super::canceller::{Settings, Worker};
use super::{FRAME, reference};

/// Speech-like: noise bursts, on 0.3 s, off 0.1 s (a canceller adapts on what it hears).
fn far_end(samples: usize) -> Vec<f32> {
    let mut seed: u32 = 7;
    (0..samples)
        .map(|i| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = (seed >> 8) as f32 / 16_777_216.0 - 0.5;
            if (i / 4800) % 4 == 3 {
                0.0
            } else {
                0.4 * noise
            }
        })
        .collect()
}

fn buffer(samples: &[f32]) -> gst::Buffer {
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    gst::Buffer::from_mut_slice(bytes)
}

fn samples(buffer: &gst::Buffer) -> Vec<f32> {
    let map = buffer.map_readable().expect("readable"); // ok: test code (a buffer we made)
    map.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn power(x: &[f32]) -> f64 {
    x.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / x.len().max(1) as f64 + 1e-12
}

/// The microphone hears the speaker 120 ms later at −6 dB; buffers of 7 ms (not AEC3's
/// 10): every buffer comes back whole, and after 3 s the echo is 20 dB down or more. With
/// no reference (no speaker) the same microphone passes nearly unchanged: the removal is
/// the reference's doing.
#[test]
fn a_speakers_echo_is_removed_from_the_microphone() {
    gst::init().expect("gst"); // ok: test code
    let seconds = 6;
    let far = far_end(48_000 * seconds);
    let delay = 48 * 120;
    let mic: Vec<f32> = (0..far.len())
        .map(|i| {
            if i >= delay {
                0.5 * far[i - delay]
            } else {
                0.0
            }
        })
        .collect();
    let settings = Settings {
        noise_suppression: false,
        gain_control: false,
    };
    let run = |with_reference: bool| {
        let worker = Worker::start(settings).expect("canceller"); // ok: test code
        let speaker = 1_000_000 + u64::from(with_reference);
        let chunk = 336; // 7 ms
        let mut out = Vec::with_capacity(mic.len());
        let mut played = 0;
        for start in (0..mic.len()).step_by(chunk) {
            let end = (start + chunk).min(mic.len());
            // The speaker's frames reach the canceller before the microphone's buffer.
            while with_reference && played + FRAME <= end {
                reference::deliver(speaker, far[played..played + FRAME].to_vec());
                played += FRAME;
            }
            let mut b = buffer(&mic[start..end]);
            worker.process(b.make_mut());
            let back = samples(&b);
            assert_eq!(back.len(), end - start, "a buffer comes back whole");
            out.extend(back);
        }
        out
    };
    let cancelled = run(true);
    let passed = run(false);
    let from = 48_000 * 3;
    let erle = 10.0 * (power(&mic[from..]) / power(&cancelled[from..])).log10();
    let untouched = 10.0 * (power(&mic[from..]) / power(&passed[from..])).log10();
    assert!(erle >= 20.0, "echo removed by {erle:.1} dB");
    assert!(
        untouched.abs() < 3.0,
        "without a reference: {untouched:.1} dB"
    );
}
