//! The devices a call's media come from, as the call sees them. A microphone that is lost
//! (unplugged, or silent without an error) is retried by the shared stream
//! (`media::shared`) while the call goes on with its video; the call tells `/api/calls`,
//! `/api/events` and the hooks when it is lost and when it is back.

use std::sync::atomic::Ordering;

use super::Call;
use crate::media::codecs::MediaKind;
use crate::session::DeviceState;

impl Call {
    /// Once a second.
    pub(super) fn watch_devices(&mut self) {
        let Some(audio) = self
            .media
            .subscriptions
            .iter()
            .find(|s| s.codec().kind() == MediaKind::Audio)
        else {
            return;
        };
        let now = if audio.source_lost() {
            DeviceState::Lost
        } else {
            DeviceState::Ok
        };
        let before = DeviceState::from_code(
            self.info
                .microphone
                .swap(DeviceState::code(Some(now)), Ordering::Relaxed),
        );
        match (before, now) {
            (Some(DeviceState::Ok) | None, DeviceState::Lost) => {
                tracing::warn!(session = %self.info.session, "microphone lost: the call goes on without it");
                self.notifier
                    .device("device-lost", &self.info, "microphone");
            }
            (Some(DeviceState::Lost), DeviceState::Ok) => {
                tracing::info!(session = %self.info.session, "microphone back");
                self.notifier
                    .device("device-back", &self.info, "microphone");
            }
            _ => {}
        }
    }
}
