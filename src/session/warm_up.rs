//! Paying GStreamer's first-call costs at start-up, not in the first call.
//!
//! The first call of a process took 40–150 ms longer to answer (its set-remote-description)
//! than every later one, in release builds too: webrtcbin's first transports, RTP session and
//! SCTP association load their plugins, register their types and start libraries
//! (OpenSSL's DTLS, usrsctp) there. The first caller of a freshly started or restarted daemon
//! waited for that — every Firefox test calls a fresh daemon and saw it (measured
//! 2026-12-03: 87–148 ms before, 13–22 ms after, debug build). At start-up, two webrtcbins in
//! a pipeline of their own now negotiate a call with audio, video and a DataChannel, and are
//! thrown away: they gather host candidates but exchange none, so nothing is sent.

use std::time::{Duration, Instant};

use gst::prelude::*;
use std::str::FromStr;

use gst_webrtc::{WebRTCRTPTransceiverDirection, WebRTCSessionDescription};

/// How long one webrtcbin step may take before the warm-up gives up (it is only a warm-up).
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Creates GStreamer's process-wide default DTLS certificate (every dtlsdec fetches it when
/// constructed, even one then given our `pem`), then negotiates one throw-away call. Blocks
/// (up to a few hundred ms): call from a blocking thread. Best effort: a failure is logged
/// and changes nothing but the first call's speed.
pub fn warm_up() {
    let started = Instant::now();
    if let Err(err) = gst::ElementFactory::make("dtlsdec").build() {
        tracing::warn!("no dtlsdec element (gstreamer1.0-plugins-bad?): {err}");
        return;
    }
    match negotiate() {
        Ok(()) => tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "webrtcbin warmed up"
        ),
        Err(err) => tracing::info!("webrtcbin warm-up: {err}"),
    }
}

fn negotiate() -> Result<(), String> {
    let pipeline = gst::Pipeline::new();
    let make = || {
        gst::ElementFactory::make("webrtcbin")
            .property_from_str("bundle-policy", "max-bundle")
            .build()
            .map_err(|e| e.to_string())
    };
    let (offerer, answerer) = (make()?, make()?);
    pipeline
        .add_many([&offerer, &answerer])
        .map_err(|e| e.to_string())?;
    let result = (|| {
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| e.to_string())?;
        // Both sides send and receive audio and video (with an SSRC each, as a call's send
        // branches give them), so that nothing is left unmatched to warn about.
        for (webrtcbin, ssrc) in [(&offerer, 1u32), (&answerer, 2)] {
            for caps in [
                "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000",
                "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000",
            ] {
                let caps = format!("{caps},ssrc=(uint){ssrc}");
                let caps = gst::Caps::from_str(&caps).map_err(|e| e.to_string())?;
                webrtcbin.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
                    "add-transceiver",
                    &[&WebRTCRTPTransceiverDirection::Sendrecv, &caps],
                );
            }
        }
        offerer.emit_by_name::<Option<gst_webrtc::WebRTCDataChannel>>(
            "create-data-channel",
            &[&"warm-up", &None::<gst::Structure>],
        );
        let offer = description(&offerer, "create-offer", "offer")?;
        set(&offerer, "set-local-description", &offer)?;
        set(&answerer, "set-remote-description", &offer)?;
        let answer = description(&answerer, "create-answer", "answer")?;
        set(&answerer, "set-local-description", &answer)?;
        set(&offerer, "set-remote-description", &answer)
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result
}

/// Runs `signal` (create-offer or create-answer) and waits for its description.
fn description(
    webrtcbin: &gst::Element,
    signal: &str,
    field: &str,
) -> Result<WebRTCSessionDescription, String> {
    let (promise, reply) = promise();
    webrtcbin.emit_by_name::<()>(signal, &[&None::<gst::Structure>, &promise]);
    wait(&reply, signal)?
        .ok_or_else(|| format!("{signal}: empty reply"))?
        .get::<WebRTCSessionDescription>(field)
        .map_err(|e| format!("{signal}: {e}"))
}

/// Sets a description with `signal` and waits until webrtcbin has.
fn set(
    webrtcbin: &gst::Element,
    signal: &str,
    description: &WebRTCSessionDescription,
) -> Result<(), String> {
    let (promise, reply) = promise();
    webrtcbin.emit_by_name::<()>(signal, &[description, &promise]);
    wait(&reply, signal).map(|_| ())
}

type Reply = Result<Option<gst::Structure>, String>;

/// A promise whose reply (webrtcbin's, from its own thread) arrives on the channel.
fn promise() -> (gst::Promise, std::sync::mpsc::Receiver<Reply>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let promise = gst::Promise::with_change_func(move |reply| {
        let reply = match reply {
            Ok(reply) => Ok(reply.map(|s| s.to_owned())),
            Err(err) => Err(format!("{err:?}")),
        };
        let _ = tx.send(reply);
    });
    (promise, rx)
}

/// The reply, at most [`STEP_TIMEOUT`] from now; an `error` in it is an error.
fn wait(reply: &std::sync::mpsc::Receiver<Reply>, what: &str) -> Reply {
    let reply = reply
        .recv_timeout(STEP_TIMEOUT)
        .map_err(|_| format!("{what}: no reply"))??;
    if let Some(err) = reply
        .as_ref()
        .and_then(|r| r.get::<glib::Error>("error").ok())
    {
        return Err(format!("{what}: {err}"));
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_throw_away_call_negotiates() {
        gst::init().unwrap();
        super::negotiate().unwrap();
    }
}
