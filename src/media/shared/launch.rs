//! Starting a shared stream (on a blocking thread: a camera may take seconds), restarting it
//! with backoff after its source fails, and giving up past the restart limit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gst::prelude::*;

use super::RAW_TAP;
use super::stream::{Life, Running, SharedStream};
use crate::backoff::Backoff;
use crate::media::{MediaError, send};
use crate::sync::lock;

/// Source failures counted towards the restart limit are those within this window.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// The pause before a restart, by the failures within [`FAILURE_WINDOW`].
const RESTART_BACKOFF: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(4));
/// A microphone that delivers nothing for this long has failed, error or not: a sound
/// server that lost its device (PulseAudio's ALSA plugin) stalls the read without one.
const QUIET_FOR: Duration = Duration::from_secs(2);
/// How often a microphone's stream is looked at for that.
const LOOK_EVERY: Duration = Duration::from_millis(500);

impl SharedStream {
    /// The first start. Blocks until the pipeline runs or fails.
    pub(super) fn start(self: &Arc<Self>) -> Result<(), MediaError> {
        let _serial = lock(&self.starting);
        if self.retries_for_ever() {
            self.watch_for_quiet();
        }
        self.launch()?;
        tracing::info!(codec = ?self.codec, "shared encoder started");
        Ok(())
    }

    /// Every [`LOOK_EVERY`] until the stream stops: a running source that has delivered
    /// nothing for [`QUIET_FOR`] is failed (and restarted) as if it had said so.
    fn watch_for_quiet(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        crate::media::work::after(LOOK_EVERY, self.runtime.as_ref(), move || {
            let Some(stream) = weak.upgrade() else {
                return;
            };
            let quiet = match &*lock(&stream.life) {
                Life::Stopped => return,
                Life::Running(_) => lock(&stream.last_progress).elapsed() > QUIET_FOR,
                Life::Starting | Life::Restarting(_) => false,
            };
            if quiet {
                stream.on_source_failure(format!(
                    "nothing from the {} for {} s",
                    stream.device(),
                    QUIET_FOR.as_secs()
                ));
            }
            stream.watch_for_quiet();
        });
    }

    /// Builds the pipeline and starts it; on success it is the stream's running pipeline,
    /// on failure it is torn down. Call with `starting` held.
    pub(super) fn launch(self: &Arc<Self>) -> Result<(), MediaError> {
        let codec = self.codec;
        let desc = self.description()?;
        let pipeline = crate::media::new_pipeline(&format!("shared-{codec:?}").to_lowercase());
        let bin = gst::parse::bin_from_description(&desc, false)
            .map_err(|e| MediaError::Build(format!("{desc}: {e}")))?;
        pipeline
            .add(&bin)
            .map_err(|e| MediaError::Build(e.to_string()))?;
        let encodings = self.rungs.len().max(1);
        let sinks = (0..encodings)
            .map(|i| {
                bin.by_name(&format!("out{i}"))
                    .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
                    .ok_or_else(|| MediaError::Build("appsink missing".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let valves: Vec<gst::Element> = (0..self.rungs.len())
            .filter_map(|i| bin.by_name(&format!("valve{i}")))
            .collect();
        let raw_tap = bin.by_name(RAW_TAP).and_then(|e| e.static_pad("src"));
        if self.stamp_capture_time {
            send::stamp_raw(&bin);
        }
        if let Some(audio) = self.profile().audio.as_ref() {
            crate::media::voice::attach_capture(&bin, audio)?;
        }
        if let Some(bus) = pipeline.bus() {
            let weak = Arc::downgrade(self);
            bus.set_sync_handler(move |_, msg| {
                let failure = match msg.view() {
                    gst::MessageView::Error(err) => {
                        Some(format!("{} ({:?})", err.error(), err.debug()))
                    }
                    gst::MessageView::Eos(_) => Some("the source ended".to_string()),
                    _ => None,
                };
                if let (Some(why), Some(stream)) = (failure, weak.upgrade()) {
                    stream.on_source_failure(why);
                }
                gst::BusSyncReply::Drop
            });
        }
        for (rung, sink) in sinks.iter().enumerate() {
            let weak = Arc::downgrade(self);
            sink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        match weak.upgrade() {
                            Some(stream) => {
                                stream.fan_out(rung, &sample);
                                Ok(gst::FlowSuccess::Ok)
                            }
                            None => Err(gst::FlowError::Flushing),
                        }
                    })
                    .build(),
            );
        }
        *lock(&self.last_progress) = Instant::now();
        // The slow part (a camera opening): no lock that async code takes is held here.
        if pipeline.set_state(gst::State::Playing).is_err() {
            // Nothing may stay running (or holding the device) after a failed start.
            stop_now(pipeline);
            return Err(MediaError::WouldNotStart(format!(
                "{codec:?} source/encoder"
            )));
        }
        let mut life = lock(&self.life);
        if matches!(*life, Life::Stopped) {
            // Stopped (shutdown, or the last viewer left) while it started.
            drop(life);
            stop_now(pipeline);
            return Ok(());
        }
        // Running, or Restarting if it already failed while starting (the restart then
        // replaces this pipeline).
        if matches!(*life, Life::Starting) {
            // From now on it must deliver (a device may take seconds to open).
            *lock(&self.last_progress) = Instant::now();
            *life = Life::Running(Running {
                pipeline,
                raw_tap,
                sinks,
                valves,
            });
            drop(life);
            // The calls already on it (a restart) get their rungs back, and the new
            // encoder their loss protection.
            self.update_valves();
            *lock(&self.loss_protection) = crate::media::encoder::FEC_FLOOR_PERCENT;
            self.protect_against_loss();
        } else {
            drop(life);
            stop_now(pipeline);
        }
        Ok(())
    }

    /// Runs on a streaming thread (bus sync handler): only schedules the restart.
    pub(super) fn on_source_failure(self: &Arc<Self>, why: String) {
        {
            let mut life = lock(&self.life);
            if matches!(*life, Life::Stopped | Life::Restarting(_)) {
                return;
            }
            // The failed pipeline stays until the restart takes it down (a state change is
            // not for a streaming thread), so the device is free before it is opened again.
            let failed = match std::mem::replace(&mut *life, Life::Restarting(None)) {
                Life::Running(running) => Some(running.pipeline),
                _ => None,
            };
            *life = Life::Restarting(failed);
            // Under the life lock: a stop (which marks it back after `Stopped`) cannot come
            // in between and leave it counted as down.
            self.mark_lost();
        }
        let recent = {
            let mut failures = lock(&self.failures);
            let now = Instant::now();
            failures.push_back(now);
            while failures
                .front()
                .is_some_and(|t| now.duration_since(*t) > FAILURE_WINDOW)
            {
                failures.pop_front();
            }
            failures.len()
        };
        let backoff = RESTART_BACKOFF.after_failures(recent);
        tracing::warn!(codec = ?self.codec, failures = recent, ?backoff, "shared source failed: {why}");
        let stream = Arc::clone(self);
        let restart = move || stream.restart(recent);
        crate::media::work::after(backoff, self.runtime.as_ref(), restart);
    }

    /// Replaces the failed pipeline, or gives up past the restart limit. Blocking thread.
    pub(super) fn restart(self: &Arc<Self>, recent_failures: usize) {
        let _serial = lock(&self.starting);
        {
            let mut life = lock(&self.life);
            match std::mem::replace(&mut *life, Life::Starting) {
                Life::Stopped => {
                    *life = Life::Stopped;
                    return;
                }
                Life::Restarting(Some(failed)) => {
                    drop(life);
                    stop_now(failed);
                }
                // Started after the failure was seen: that pipeline is replaced too.
                Life::Running(running) => {
                    drop(life);
                    stop_now(running.pipeline);
                }
                Life::Starting | Life::Restarting(None) => {}
            }
        }
        if recent_failures > self.restart_limit && !self.retries_for_ever() {
            self.give_up("it failed too often");
            return;
        }
        match self.launch() {
            Ok(()) => {
                tracing::info!(codec = ?self.codec, "shared source restarted");
                for sub in lock(&self.subscribers).iter() {
                    sub.waiting_for_keyframe.store(true, Ordering::Relaxed);
                }
                for rung in 0..self.rung_frames.len() {
                    self.request_keyframe(rung, true);
                }
            }
            // Still gone (a microphone not plugged back yet): try again later.
            Err(err @ MediaError::WouldNotStart(_)) if self.retries_for_ever() => {
                self.on_source_failure(err.to_string())
            }
            Err(err) => self.give_up(&err.to_string()),
        }
    }

    /// Stops for good and ends every call that used this source.
    pub(super) fn give_up(self: &Arc<Self>, why: &str) {
        tracing::error!(codec = ?self.codec, "shared source given up: {why}");
        self.stop();
        if let Some(owner) = self.owner.upgrade() {
            owner.forget(self);
        }
        for sub in lock(&self.subscribers).iter() {
            (sub.on_failure)();
        }
    }

    pub(super) fn stop(&self) {
        let old = std::mem::replace(&mut *lock(&self.life), Life::Stopped);
        self.mark_back();
        match old {
            Life::Running(Running { pipeline, .. }) | Life::Restarting(Some(pipeline)) => {
                crate::media::teardown(pipeline);
            }
            _ => {}
        }
    }
}

/// Takes a pipeline to NULL on this (blocking) thread.
pub(super) fn stop_now(pipeline: gst::Pipeline) {
    let _ = pipeline.set_state(gst::State::Null);
    if let Some(bus) = pipeline.bus() {
        bus.unset_sync_handler();
    }
}
