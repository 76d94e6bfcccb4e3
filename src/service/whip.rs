//! WHIP publishing: the shared stream (no extra encode) pushed to WHIP endpoints — an SFU's
//! ingest that serves audiences larger than the device's uplink. Per `[[publish]]` target, a
//! task keeps one publication up: a call (role `whip`) offers, its candidates gathered into
//! the offer (not every endpoint takes trickled ones; those found later are trickled with
//! PATCH where the endpoint takes them), the offer is POSTed, the endpoint's answer goes back
//! to the call. When the call ends (the endpoint went quiet, refused, or
//! hung up) it publishes again with backoff; on shutdown it DELETEs the session.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use secrecy::ExposeSecret;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::PublishTarget;
use super::http_client;
use super::whep::frag;
use crate::backoff::Backoff;
use crate::protocol::{EndReason, Route, Signal};
use crate::session::CallManager;
use crate::session::manager::WHIP_PEER;
use crate::sync::lock;

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long the call may take to offer (media start included) and gather.
const OFFER_WITHIN: Duration = Duration::from_secs(10);
const GATHER_WITHIN: Duration = Duration::from_secs(2);
/// How long the endpoint may take to answer the POST (and the DELETE).
const HTTP_WITHIN: Duration = Duration::from_secs(10);
/// A publication up this long counts as established: the next retry starts from the
/// shortest backoff. (An endpoint that takes the POST but whose media never flows must not
/// be hammered every second.)
const ESTABLISHED_AFTER: Duration = Duration::from_secs(10);
/// Late candidates waiting for their PATCH; more are dropped (the endpoint has enough).
const TRICKLE_QUEUE: usize = 32;

/// What `GET /api/status` says of one target.
#[derive(Debug, Clone, Serialize)]
pub struct PublishStatus {
    /// The URL without credentials or query.
    pub url: String,
    /// `connecting`, `publishing`, `retrying` or `stopped`.
    pub state: &'static str,
    /// Since when (seconds since the Unix epoch).
    pub since: u64,
    pub last_error: Option<String>,
    pub session: Option<String>,
}

/// The publishers: their state (shared with the HTTP API), and how to stop them.
#[derive(Default)]
pub struct Publishing {
    statuses: Mutex<Vec<PublishStatus>>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Publishing {
    pub fn statuses(&self) -> Vec<PublishStatus> {
        self.lock().clone()
    }

    /// Ends every publication (each DELETEs its endpoint session) and waits, at most
    /// `grace`, for them. Before the calls are ended: a publisher tells its endpoint itself.
    pub async fn stop(&self, grace: Duration) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("WHIP publishers still stopping after {grace:?}");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PublishStatus>> {
        lock(&self.statuses)
    }

    fn set(&self, index: usize, state: &'static str, error: Option<String>, session: Option<&str>) {
        if let Some(status) = self.lock().get_mut(index) {
            status.state = state;
            status.since = now_secs();
            if error.is_some() {
                status.last_error = error;
            }
            status.session = session.map(str::to_string);
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The URL as it may be shown: scheme, host, port and path.
fn shown(url: &url::Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        &url[url::Position::BeforeHost..url::Position::AfterPort],
        url.path()
    )
}

/// Starts one task per target; [`Publishing::stop`] ends them.
pub fn start(
    targets: &[PublishTarget],
    calls: &Arc<CallManager>,
) -> anyhow::Result<Arc<Publishing>> {
    let publishing = Arc::new(Publishing::default());
    let tls = super::tls::client_config(None)?;
    for (index, target) in targets.iter().enumerate() {
        let url = url::Url::parse(&target.url)?;
        publishing.lock().push(PublishStatus {
            url: shown(&url),
            state: "connecting",
            since: now_secs(),
            last_error: None,
            session: None,
        });
        let publisher = Publisher {
            index,
            url,
            token: target.token.as_ref().map(|t| t.expose_secret().to_string()),
            calls: Arc::clone(calls),
            status: Arc::clone(&publishing),
            tls: Arc::clone(&tls),
        };
        publishing
            .tasks
            .spawn(publisher.run(publishing.stop.clone()));
    }
    Ok(publishing)
}

struct Publisher {
    index: usize,
    url: url::Url,
    token: Option<String>,
    calls: Arc<CallManager>,
    status: Arc<Publishing>,
    tls: Arc<rustls::ClientConfig>,
}

/// How one publication ended.
enum Ended {
    /// The daemon is shutting down: stop.
    Shutdown,
    /// It failed or dropped: why.
    Dropped(String),
}

impl Publisher {
    async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        loop {
            let (ended, established) = self.publish_once(&shutdown).await;
            match ended {
                Ended::Shutdown => {
                    self.status.set(self.index, "stopped", None, None);
                    return;
                }
                Ended::Dropped(why) => {
                    tracing::warn!(url = %shown(&self.url), "WHIP publication ended: {why}");
                    if established {
                        backoff.reset();
                    }
                    self.status.set(self.index, "retrying", Some(why), None);
                }
            }
            if !backoff.wait(&shutdown).await {
                self.status.set(self.index, "stopped", None, None);
                return;
            }
        }
    }

    /// The headers of a request to `target`: the token only goes to the target's own
    /// origin (a `Location` elsewhere gets none).
    fn headers(
        &self,
        target: &url::Url,
        content_type: Option<&str>,
    ) -> Vec<(&'static str, String)> {
        headers(&self.url, self.token.as_deref(), target, content_type)
    }

    /// One publication, from the offer to its end; whether it was established (up for
    /// [`ESTABLISHED_AFTER`]: the next try starts from the shortest backoff, the endpoint is
    /// likely back soon).
    async fn publish_once(&self, shutdown: &CancellationToken) -> (Ended, bool) {
        self.status.set(self.index, "connecting", None, None);
        let mut bytes = [0u8; 8];
        if getrandom::fill(&mut bytes).is_err() {
            return (Ended::Dropped("no randomness".into()), false);
        }
        let session = format!(
            "whip-{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let (to_endpoint, mut from_call) = mpsc::channel(64);
        if self.calls.start_publish(&session, to_endpoint).is_err() {
            return (Ended::Shutdown, false);
        }
        let offer = match gathered_offer(&mut from_call).await {
            Ok(offer) => offer,
            Err(why) => {
                self.calls.hangup(&session);
                return (Ended::Dropped(why), false);
            }
        };
        let credentials = super::whep::credentials_of(&offer);
        let mid = frag::mids(&offer).into_iter().next().unwrap_or_default();
        let posted = tokio::time::timeout(
            HTTP_WITHIN,
            http_client::send(
                "POST",
                &self.url,
                &self.headers(&self.url, Some("application/sdp")),
                offer.into_bytes(),
                Some(&self.tls),
                http_client::MAX_REPLY,
            ),
        )
        .await;
        let reply = match posted {
            Ok(Ok(reply)) if reply.status == 201 => reply,
            Ok(Ok(reply)) => {
                self.calls.hangup(&session);
                return (
                    Ended::Dropped(format!("the endpoint answered {}", reply.status)),
                    false,
                );
            }
            Ok(Err(err)) => {
                self.calls.hangup(&session);
                return (Ended::Dropped(format!("{err:#}")), false);
            }
            Err(_) => {
                self.calls.hangup(&session);
                return (
                    Ended::Dropped(format!("no answer within {HTTP_WITHIN:?}")),
                    false,
                );
            }
        };
        let location = reply
            .headers
            .get(hyper::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| self.url.join(l).ok());
        let etag = reply
            .headers
            .get(hyper::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // Candidates found after the POST (a slow STUN or TURN server) are trickled with
        // PATCH, unless the endpoint says it does not take them; on their own task, so a
        // slow endpoint never holds up the call's messages.
        let mut trickle = match (&location, credentials) {
            (Some(location), Some(credentials)) => {
                let (to_trickle, queue) = mpsc::channel(TRICKLE_QUEUE);
                let headers = self.headers(location, Some("application/trickle-ice-sdpfrag"));
                self.status.tasks.spawn(
                    Trickle {
                        location: location.clone(),
                        credentials,
                        mid,
                        etag,
                        headers,
                        tls: Arc::clone(&self.tls),
                    }
                    .run(queue),
                );
                Some(to_trickle)
            }
            _ => None,
        };
        let answer = String::from_utf8_lossy(&reply.body).into_owned();
        self.calls.from_http_peer(
            WHIP_PEER,
            Signal::Answer {
                route: Route::new("", &session),
                sdp: answer,
            },
        );
        let published_at = tokio::time::Instant::now();
        self.status
            .set(self.index, "publishing", None, Some(&session));
        tracing::info!(url = %shown(&self.url), %session, "publishing over WHIP");
        // Until the call ends (its channel closes after its hangup) or the daemon stops.
        let ended = loop {
            tokio::select! {
                msg = from_call.recv() => match msg {
                    Some(signal @ Signal::Hangup { .. }) if signal.end_reason() == Some(EndReason::Shutdown) => {
                        break Ended::Shutdown;
                    }
                    Some(Signal::Hangup { reason, message, .. }) => {
                        break Ended::Dropped(match message {
                            Some(m) if !m.is_empty() => format!("{reason}: {m}"),
                            _ => reason,
                        });
                    }
                    Some(Signal::Candidate { candidate, sdp_mline_index, .. }) => {
                        if let Some(queue) = &trickle
                            && let Err(mpsc::error::TrySendError::Closed(_)) =
                                queue.try_send((sdp_mline_index.unwrap_or(0), candidate))
                        {
                            trickle = None;
                        }
                    }
                    Some(_) => {}
                    None => break Ended::Dropped("the call ended".into()),
                },
                _ = shutdown.cancelled() => {
                    self.calls.hangup(&session);
                    break Ended::Shutdown;
                }
            }
        };
        drop(trickle);
        let established = published_at.elapsed() >= ESTABLISHED_AFTER;
        // The endpoint's session is gone or going: tell it (best effort, bounded).
        if let Some(location) = location {
            let deleted = tokio::time::timeout(
                HTTP_WITHIN,
                http_client::send(
                    "DELETE",
                    &location,
                    &self.headers(&location, None),
                    Vec::new(),
                    Some(&self.tls),
                    http_client::MAX_REPLY,
                ),
            )
            .await;
            match deleted {
                Ok(Ok(reply)) => tracing::debug!(status = reply.status, "WHIP session deleted"),
                Ok(Err(err)) => tracing::debug!("WHIP DELETE failed: {err:#}"),
                Err(_) => tracing::debug!("WHIP DELETE not answered within {HTTP_WITHIN:?}"),
            }
        }
        (ended, established)
    }
}

/// The headers of a request to `target` for a publication to `url`: the bearer token only
/// for `url`'s own origin.
fn headers(
    url: &url::Url,
    token: Option<&str>,
    target: &url::Url,
    content_type: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut headers = Vec::new();
    if let Some(kind) = content_type {
        headers.push(("content-type", kind.to_string()));
    }
    if let Some(token) = token
        && target.origin() == url.origin()
    {
        headers.push(("authorization", format!("Bearer {token}")));
    }
    headers
}

/// Where and how a publication's late candidates are trickled.
struct Trickle {
    location: url::Url,
    credentials: crate::session::ice::Credentials,
    mid: String,
    etag: Option<String>,
    headers: Vec<(&'static str, String)>,
    tls: Arc<rustls::ClientConfig>,
}

impl Trickle {
    /// PATCHes the queued candidates one by one, until the publication ends (the queue
    /// closes) or the endpoint says it takes no trickled candidates.
    async fn run(self, mut queue: mpsc::Receiver<(u32, String)>) {
        while let Some((mline, candidate)) = queue.recv().await {
            if !self.send(mline, &candidate).await {
                return;
            }
        }
    }

    /// PATCHes one candidate (empty: the end of candidates); false when the endpoint does
    /// not take trickled candidates (405, 501).
    async fn send(&self, mline: u32, candidate: &str) -> bool {
        let body = if candidate.is_empty() {
            frag::fragment(&self.credentials, &self.mid, &[], true)
        } else {
            frag::fragment(
                &self.credentials,
                &self.mid,
                &[(mline, candidate.to_string())],
                false,
            )
        };
        let mut headers = self.headers.clone();
        if let Some(etag) = &self.etag {
            headers.push(("if-match", etag.clone()));
        }
        let sent = tokio::time::timeout(
            HTTP_WITHIN,
            http_client::send(
                "PATCH",
                &self.location,
                &headers,
                body.into_bytes(),
                Some(&self.tls),
                http_client::MAX_REPLY,
            ),
        )
        .await;
        match sent {
            Ok(Ok(reply)) if matches!(reply.status, 405 | 501) => {
                tracing::debug!(status = reply.status, "the WHIP endpoint takes no trickle");
                false
            }
            Ok(Ok(reply)) => {
                tracing::debug!(status = reply.status, "WHIP candidate trickled");
                true
            }
            _ => {
                tracing::debug!("WHIP trickle not answered");
                true
            }
        }
    }
}

/// The call's offer with its candidates gathered in (bounded).
async fn gathered_offer(from_call: &mut mpsc::Receiver<Signal>) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + OFFER_WITHIN;
    let mut offer = None;
    let mut candidates = Vec::new();
    let mut gather_deadline = deadline;
    let complete = loop {
        let msg = match tokio::time::timeout_at(gather_deadline, from_call.recv()).await {
            Ok(Some(msg)) => msg,
            Ok(None) => return Err("the call ended before offering".into()),
            Err(_) if offer.is_some() => break false,
            Err(_) => return Err(format!("no offer within {OFFER_WITHIN:?}")),
        };
        match msg {
            Signal::Offer { sdp, .. } => {
                offer = Some(sdp);
                gather_deadline = tokio::time::Instant::now() + GATHER_WITHIN;
            }
            Signal::Candidate { candidate, .. } if candidate.is_empty() && offer.is_some() => {
                break true;
            }
            Signal::Candidate {
                candidate,
                sdp_mline_index,
                ..
            } if !candidate.is_empty() && candidates.len() < 32 => {
                candidates.push((sdp_mline_index.unwrap_or(0), candidate));
            }
            Signal::Hangup { reason, .. } => return Err(reason),
            _ => {}
        }
    };
    let offer = offer.unwrap_or_default();
    frag::with_candidates(&offer, &candidates, complete)
        .ok_or_else(|| "the offer does not parse".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_goes_only_to_the_endpoints_own_origin() {
        let url = url::Url::parse("https://sfu.example:8443/whip/cam").unwrap();
        let has_token = |target: &str| {
            let target = url::Url::parse(target).unwrap();
            headers(&url, Some("secret"), &target, None)
                .iter()
                .any(|(name, value)| *name == "authorization" && value == "Bearer secret")
        };
        assert!(has_token("https://sfu.example:8443/whip/cam/session/1"));
        assert!(!has_token("https://other.example:8443/session/1"));
        assert!(!has_token("http://sfu.example:8443/session/1"));
        assert!(!has_token("https://sfu.example:9443/session/1"));
    }
}
