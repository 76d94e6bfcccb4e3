//! The devices a call's media come from and go to, as the call sees them. A microphone that
//! is lost (unplugged, or silent without an error) is retried by the shared stream
//! (`media::shared`), a speaker by `media::speaker`, while the call goes on; the call tells
//! `/api/calls`, `/api/events` and the hooks when one is lost and when it is back.

use std::sync::atomic::{AtomicU8, Ordering};

use super::Call;
use crate::media::codecs::MediaKind;
use crate::media::speaker::SpeakerState;
use crate::session::DeviceState;

impl Call {
    /// Once a second.
    pub(super) fn watch_devices(&mut self) {
        let microphone = self
            .media
            .subscriptions
            .iter()
            .find(|s| s.codec().kind() == MediaKind::Audio)
            .map(|audio| {
                if audio.source_lost() {
                    DeviceState::Lost
                } else {
                    DeviceState::Ok
                }
            });
        if let Some(now) = microphone {
            self.note_device("microphone", &self.info.microphone, now);
        }
        let speaker = self.media.speaker.as_ref().and_then(|s| match s.state() {
            SpeakerState::Opening => None,
            SpeakerState::Playing => Some(DeviceState::Ok),
            SpeakerState::Lost => Some(DeviceState::Lost),
        });
        if let Some(now) = speaker {
            self.note_device("speaker", &self.info.speaker, now);
        }
    }

    fn note_device(&self, device: &'static str, known: &AtomicU8, now: DeviceState) {
        let before =
            DeviceState::from_code(known.swap(DeviceState::code(Some(now)), Ordering::Relaxed));
        match (before, now) {
            (Some(DeviceState::Ok) | None, DeviceState::Lost) => {
                tracing::warn!(session = %self.info.session, device, "device lost: the call goes on without it");
                self.notifier.device("device-lost", &self.info, device);
            }
            (Some(DeviceState::Lost), DeviceState::Ok) => {
                tracing::info!(session = %self.info.session, device, "device back");
                self.notifier.device("device-back", &self.info, device);
            }
            _ => {}
        }
    }
}
