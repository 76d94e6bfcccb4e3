//! The speaker a call plays its peer's audio on (`[receive] audio = "alsa"`), in a pipeline
//! of its own that the call's pipeline feeds through an appsink. A speaker that is missing,
//! unplugged or failing ends nothing: its errors stay on its own bus, the call goes on (its
//! video, its microphone, the DataChannel that opens the door), and the speaker is tried
//! again every [`RETRY_EVERY`] until it plays.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use gst::prelude::*;

use super::{MediaError, work};
use crate::sync::lock;

/// How long a missing or failed speaker is left before it is opened again.
const RETRY_EVERY: Duration = Duration::from_secs(2);
/// Audio queued for the speaker at most (S16 stereo 48 kHz: 200 ms); older audio is dropped
/// rather than played late.
const QUEUED_BYTES: u64 = 38_400;

/// What [`Speaker::state`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeakerState {
    /// Not opened yet (the first try runs).
    Opening,
    Playing,
    /// Missing or failed: tried again.
    Lost,
}

pub struct Speaker {
    inner: Arc<Inner>,
    /// In the call's pipeline: what the speaker would play.
    sink: gst::Element,
}

struct Inner {
    device: String,
    output: Mutex<Option<Output>>,
    state: Mutex<SpeakerState>,
    /// The call ended: nothing is opened again.
    closed: AtomicBool,
    runtime: Option<tokio::runtime::Handle>,
}

struct Output {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    /// Its pipeline posted an error (possibly before it was the one in use).
    failed: Arc<AtomicBool>,
}

impl Speaker {
    /// Starts opening the ALSA `device` (off the caller's thread: opening a device may
    /// block). The returned sink goes into the call's pipeline.
    pub fn open(device: &str) -> Result<Speaker, MediaError> {
        let sink = gst_app::AppSink::builder()
            .name("speaker")
            .sync(false)
            .async_(false)
            .max_buffers(4)
            .drop(true)
            .build();
        let inner = Arc::new(Inner {
            device: device.to_string(),
            output: Mutex::new(None),
            state: Mutex::new(SpeakerState::Opening),
            closed: AtomicBool::new(false),
            runtime: tokio::runtime::Handle::try_current().ok(),
        });
        let weak = Arc::downgrade(&inner);
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if let Some(inner) = weak.upgrade() {
                        inner.play(&sample);
                    }
                    // Played or not, the call's pipeline goes on.
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let weak = Arc::downgrade(&inner);
        work::off_worker(move || Inner::try_open(&weak));
        Ok(Speaker {
            inner,
            sink: sink.upcast(),
        })
    }

    /// The element to put at the end of the call's audio branch.
    pub fn sink(&self) -> &gst::Element {
        &self.sink
    }

    pub fn state(&self) -> SpeakerState {
        *lock(&self.inner.state)
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        self.inner.close();
        self.inner.replace_output(None);
    }
}

impl Inner {
    /// Streaming thread of the call's pipeline: never blocks (a full queue drops).
    fn play(&self, sample: &gst::Sample) {
        let output = lock(&self.output);
        let Some(output) = output.as_ref() else {
            return;
        };
        let caps = sample.caps_owned();
        if output.appsrc.caps() != caps {
            output.appsrc.set_caps(caps.as_ref());
        }
        if let Some(buffer) = sample.buffer_owned() {
            // Stamped again by the speaker's pipeline as it arrives (do-timestamp).
            let mut buffer = buffer.copy();
            if let Some(b) = buffer.get_mut() {
                b.set_pts(gst::ClockTime::NONE);
                b.set_dts(gst::ClockTime::NONE);
            }
            let _ = output.appsrc.push_buffer(buffer);
        }
    }

    /// Opens the device and plays; on failure, tries again later. Blocking thread.
    fn try_open(weak: &Weak<Inner>) {
        let Some(inner) = weak.upgrade() else {
            return;
        };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        match inner.start() {
            Ok(output) => {
                let (pipeline, failed) = (output.pipeline.clone(), Arc::clone(&output.failed));
                inner.replace_output(Some(output));
                // Closed while it opened: take it down again.
                if inner.closed.load(Ordering::Acquire) {
                    inner.replace_output(None);
                    return;
                }
                // It failed while it opened (its error went by while it was not in use).
                if failed.load(Ordering::Acquire) {
                    inner.failed(&pipeline, "it failed as it opened".into());
                }
            }
            Err(err) => {
                if inner.set_state(SpeakerState::Lost) != SpeakerState::Lost {
                    tracing::warn!(device = %inner.device, "speaker unavailable, tried again every {} s: {err}", RETRY_EVERY.as_secs());
                }
                inner.retry_later();
            }
        }
    }

    fn start(self: &Arc<Self>) -> Result<Output, MediaError> {
        let desc = format!(
            "appsrc name=in is-live=true format=time do-timestamp=true block=false \
             max-bytes={QUEUED_BYTES} leaky-type=downstream ! audioconvert ! audioresample ! \
             alsasink name=out device=\"{}\" sync=false",
            self.device.replace('"', "")
        );
        let pipeline = super::new_pipeline("speaker");
        let bin = gst::parse::bin_from_description(&desc, false)
            .map_err(|e| MediaError::Build(format!("{desc}: {e}")))?;
        pipeline
            .add(&bin)
            .map_err(|e| MediaError::Build(e.to_string()))?;
        let appsrc = bin
            .by_name("in")
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            .ok_or_else(|| MediaError::Build("speaker appsrc missing".into()))?;
        let sink_pad = bin
            .by_name("out")
            .and_then(|e| e.static_pad("sink"))
            .ok_or_else(|| MediaError::Build("speaker sink missing".into()))?;
        // A buffer reaches the device's sink only once the device took its format (ALSA's
        // hardware parameters): from then on it plays.
        let weak = Arc::downgrade(self);
        let playing = pipeline.downgrade();
        sink_pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            if let (Some(inner), Some(pipeline)) = (weak.upgrade(), playing.upgrade()) {
                inner.plays(&pipeline);
            }
            gst::PadProbeReturn::Remove
        });
        let failed = Arc::new(AtomicBool::new(false));
        if let Some(bus) = pipeline.bus() {
            let weak = Arc::downgrade(self);
            let failing = pipeline.downgrade();
            let flag = Arc::clone(&failed);
            bus.set_sync_handler(move |_, msg| {
                if let gst::MessageView::Error(err) = msg.view() {
                    flag.store(true, Ordering::Release);
                    if let (Some(inner), Some(pipeline)) = (weak.upgrade(), failing.upgrade()) {
                        inner.failed(&pipeline, format!("{} ({:?})", err.error(), err.debug()));
                    }
                }
                gst::BusSyncReply::Drop
            });
        }
        if pipeline.set_state(gst::State::Playing).is_err() {
            if let Some(bus) = pipeline.bus() {
                bus.unset_sync_handler();
            }
            let _ = pipeline.set_state(gst::State::Null);
            return Err(MediaError::Build(format!(
                "the speaker {:?} would not open",
                self.device
            )));
        }
        Ok(Output {
            pipeline,
            appsrc,
            failed,
        })
    }

    /// The pipeline in use plays (a streaming thread of it).
    fn plays(&self, pipeline: &gst::Pipeline) {
        // Under the output's lock: a failure of it in between cannot be overwritten.
        let output = lock(&self.output);
        let current = output.as_ref().is_some_and(|o| &o.pipeline == pipeline);
        if current && self.set_state(SpeakerState::Playing) == SpeakerState::Lost {
            tracing::info!(device = %self.device, "speaker back");
        }
    }

    /// `pipeline` posted an error (a streaming thread of it: its teardown runs elsewhere).
    /// If it is the one in use, it is taken down and the speaker opened again later — once
    /// per pipeline, however many errors it posts; one not in use yet is seen by `try_open`.
    fn failed(self: &Arc<Self>, pipeline: &gst::Pipeline, why: String) {
        let taken = {
            let mut output = lock(&self.output);
            if output.as_ref().is_some_and(|o| &o.pipeline == pipeline) {
                output.take()
            } else {
                None
            }
        };
        let Some(taken) = taken else {
            return;
        };
        self.take_down(taken);
        if self.set_state(SpeakerState::Lost) != SpeakerState::Lost {
            tracing::warn!(device = %self.device, "speaker failed, tried again every {} s: {why}", RETRY_EVERY.as_secs());
        }
        self.retry_later();
    }

    fn retry_later(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        work::after(RETRY_EVERY, self.runtime.as_ref(), move || {
            Inner::try_open(&weak)
        });
    }

    /// The output the call's audio goes to now; the one before is taken down off this
    /// thread (which may be one of its streaming threads).
    fn replace_output(&self, output: Option<Output>) {
        let old = std::mem::replace(&mut *lock(&self.output), output);
        if let Some(old) = old {
            self.take_down(old);
        }
    }

    fn take_down(&self, output: Output) {
        // With the runtime entered, the teardown runs on its blocking pool.
        let _on_runtime = self.runtime.as_ref().map(|rt| rt.enter());
        super::teardown(output.pipeline);
    }

    /// Sets the state; gives the one before. Counts losses in the metrics.
    /// Closed and out of the metrics at once, under the state's lock: a retry still opening,
    /// or an error on its way, changes nothing after this.
    fn close(&self) {
        let mut current = lock(&self.state);
        self.closed.store(true, Ordering::Release);
        if *current == SpeakerState::Lost {
            let label = crate::metrics::DeviceLabel {
                device: "speaker",
                camera: String::new(),
            };
            crate::metrics::get()
                .devices_down
                .get_or_create(&label)
                .dec();
        }
        *current = SpeakerState::Opening;
    }

    /// Once closed (the call ended), nothing changes it: it stays out of the metrics.
    fn set_state(&self, state: SpeakerState) -> SpeakerState {
        let mut current = lock(&self.state);
        if self.closed.load(Ordering::Acquire) {
            return *current;
        }
        let before = std::mem::replace(&mut *current, state);
        drop(current);
        let label = crate::metrics::DeviceLabel {
            device: "speaker",
            camera: String::new(),
        };
        let metrics = crate::metrics::get();
        if before != SpeakerState::Lost && state == SpeakerState::Lost {
            metrics.devices_lost.get_or_create(&label).inc();
            metrics.devices_down.get_or_create(&label).inc();
        } else if before == SpeakerState::Lost && state != SpeakerState::Lost {
            metrics.devices_down.get_or_create(&label).dec();
        }
        before
    }
}
