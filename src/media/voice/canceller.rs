//! The capture side: the microphone's buffers through AEC3 on the canceller's own thread.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::time::Duration;

use gst::prelude::*;

use super::{CANCELLERS, CAPTURE_TAP, FRAME, REFERENCE_QUEUE, reference};
use crate::media::MediaError;
use crate::media::profile::AudioSend;
use crate::sync::lock;

/// What the profile asks of the microphone besides removing the echo.
#[derive(Debug, Clone, Copy)]
pub(super) struct Settings {
    pub(super) noise_suppression: bool,
    pub(super) gain_control: bool,
}

/// AEC3's delay estimator's filters (see [`run`]).
const DELAY_FILTERS: usize = 10;

/// How long a microphone buffer waits for the canceller before it goes on as it was (the
/// reply, when it comes, is thrown away; the next buffers are cancelled again).
const REPLY_WITHIN: Duration = Duration::from_millis(500);

/// Attaches a canceller to `bin`'s [`CAPTURE_TAP`] (48 kHz mono F32LE), if it has one. The
/// canceller lives as long as the tap's probe: it ends with the pipeline.
pub fn attach_capture(bin: &gst::Bin, audio: &AudioSend) -> Result<(), MediaError> {
    let Some(tap) = bin.by_name(CAPTURE_TAP) else {
        return Ok(());
    };
    let settings = Settings {
        noise_suppression: audio.noise_suppression,
        gain_control: audio.gain_control,
    };
    let pad = tap
        .static_pad("src")
        .ok_or_else(|| MediaError::Build(format!("{CAPTURE_TAP} has no src pad")))?;
    let worker = Worker::start(settings)?;
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(buffer) = info.buffer_mut() {
            worker.process(buffer.make_mut());
        }
        gst::PadProbeReturn::Ok
    });
    Ok(())
}

/// The probe's end of a canceller thread.
pub(super) struct Worker {
    link: Mutex<Link>,
    /// The thread has ended: pass the microphone through.
    gone: AtomicBool,
    id: u64,
}

/// Microphone samples to the thread, and the cancelled samples back (as many).
struct Link {
    jobs: SyncSender<Vec<f32>>,
    done: Receiver<Vec<f32>>,
    /// Replies that came too late for their buffer (thrown away when they come).
    owed: usize,
    /// Buffers passed through uncancelled so far (for the log).
    late: u64,
}

/// Counts a running canceller thread, however it ends.
struct Running;

impl Running {
    fn start() -> Running {
        CANCELLERS.fetch_add(1, Ordering::Relaxed);
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        CANCELLERS.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Worker {
    pub(super) fn start(settings: Settings) -> Result<Worker, MediaError> {
        let (jobs_tx, jobs) = mpsc::sync_channel::<Vec<f32>>(1);
        let (done, done_rx) = mpsc::sync_channel::<Vec<f32>>(1);
        let (frames_tx, frames) = mpsc::sync_channel::<Vec<f32>>(REFERENCE_QUEUE);
        let (ready_tx, ready) = mpsc::sync_channel::<Result<(), String>>(1);
        std::thread::Builder::new()
            .name("webrtcd-voice".into())
            .spawn(move || {
                let _running = Running::start();
                run(settings, &jobs, &done, &frames, &ready_tx);
            })
            .map_err(|e| MediaError::Build(format!("echo canceller thread: {e}")))?;
        match ready.recv() {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Err(MediaError::Build(format!("echo canceller: {why}"))),
            Err(_) => return Err(MediaError::Build("echo canceller did not start".into())),
        }
        let id = reference::register(frames_tx);
        Ok(Worker {
            link: Mutex::new(Link {
                jobs: jobs_tx,
                done: done_rx,
                owed: 0,
                late: 0,
            }),
            gone: AtomicBool::new(false),
            id,
        })
    }

    /// Replaces the buffer's samples with the cancelled ones.
    pub(super) fn process(&self, buffer: &mut gst::BufferRef) {
        if self.gone.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut map) = buffer.map_writable() else {
            return;
        };
        let samples: Vec<f32> = map
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let mut link = lock(&self.link);
        // A reply that came too late for its buffer is thrown away; while one is still owed
        // the thread is busy with an old buffer, and this one goes on uncancelled.
        while link.owed > 0 {
            match link.done.try_recv() {
                Ok(_) => link.owed -= 1,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return self.stopped(),
            }
        }
        let sent = if link.owed == 0 {
            link.jobs.try_send(samples)
        } else {
            Err(TrySendError::Full(samples))
        };
        let was_sent = sent.is_ok();
        let cancelled = match sent {
            Ok(()) => link.done.recv_timeout(REPLY_WITHIN),
            Err(TrySendError::Full(_)) => Err(RecvTimeoutError::Timeout),
            Err(TrySendError::Disconnected(_)) => Err(RecvTimeoutError::Disconnected),
        };
        match cancelled {
            Ok(cancelled) => {
                for (out, s) in map.chunks_exact_mut(4).zip(cancelled) {
                    out.copy_from_slice(&s.to_le_bytes());
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if was_sent {
                    link.owed += 1;
                }
                link.late += 1;
                if link.late.is_power_of_two() {
                    tracing::warn!(
                        buffers = link.late,
                        "the echo canceller is behind: microphone buffers go on uncancelled"
                    );
                }
            }
            Err(RecvTimeoutError::Disconnected) => self.stopped(),
        }
    }

    fn stopped(&self) {
        tracing::warn!("the echo canceller stopped: the microphone goes on without it");
        self.gone.store(true, Ordering::Relaxed);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // The thread ends when its job channel closes, right after this.
        reference::unregister(self.id);
    }
}

/// The canceller's thread: builds AEC3 (with what `settings` adds), then cancels each
/// microphone buffer against the speaker's frames that came before it.
fn run(
    settings: Settings,
    jobs: &Receiver<Vec<f32>>,
    done: &SyncSender<Vec<f32>>,
    frames: &Receiver<Vec<f32>>,
    ready: &SyncSender<Result<(), String>>,
) {
    // The delay estimator's matched filters each cover ~128 ms and overlap by a quarter:
    // five (the default) reach ~500 ms, about what a door's speaker buffer (alsasink holds
    // 200 ms), a big room and the microphone's buffer add up to; ten reach ~1 s.
    let mut config = aec3::api::config::EchoCanceller3Config::default();
    config.delay.num_filters = DELAY_FILTERS;
    let built = aec3::voip::VoipAec3::builder(48_000, 1, 1)
        .with_config(config)
        .enable_high_pass(true)
        .enable_noise_suppression(settings.noise_suppression)
        .enable_gain_controller2(settings.gain_control)
        .build();
    let mut aec = match built {
        Ok(aec) => {
            let _ = ready.send(Ok(()));
            aec
        }
        Err(e) => {
            let _ = ready.send(Err(format!("{e:?}")));
            return;
        }
    };
    // Buffers need not be 10 ms: samples wait in `pending` for a whole frame, and the output
    // runs one frame behind (`cancelled` starts with one of silence), so every buffer has its
    // full count back.
    let mut pending: VecDeque<f32> = VecDeque::with_capacity(4 * FRAME);
    let mut cancelled: VecDeque<f32> = std::iter::repeat_n(0.0, FRAME).collect();
    let mut input = vec![0.0f32; FRAME];
    let mut output = vec![0.0f32; FRAME];
    while let Ok(samples) = jobs.recv() {
        while let Ok(frame) = frames.try_recv() {
            let _ = aec.handle_render_frame(&frame);
        }
        pending.extend(samples.iter());
        while pending.len() >= FRAME {
            for (slot, s) in input.iter_mut().zip(pending.drain(..FRAME)) {
                *slot = s;
            }
            if aec
                .process_capture_frame(&input, false, &mut output)
                .is_err()
            {
                output.copy_from_slice(&input);
            }
            cancelled.extend(output.iter());
        }
        let n = samples.len().min(cancelled.len());
        if done.send(cancelled.drain(..n).collect()).is_err() {
            return;
        }
    }
}
