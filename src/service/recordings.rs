//! Recordings over HTTP: `GET /api/recordings?camera=&from=&to=` lists them (view scope),
//! `GET /api/recordings/{id}` serves one with `Range` (a `<video>` seeks in it; view scope),
//! `DELETE /api/recordings/{id}` deletes one (admin). The recorders themselves are
//! `media::record`'s; this starts them from `[recording]`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use tower::ServiceExt;

use super::config::{Config, RecordingMode};
use super::http::error;
use crate::media::cameras::Cameras;
use crate::media::record::store::StoreError;
use crate::media::record::{MotionMode, Recorders, Segment, Settings, Store, splice};

/// A playback lasts at most this long (its segments' boxes are read for each request).
const MAX_PLAYBACK_SECS: f64 = 3600.0;
/// A playback's body is read in pieces of at most this many bytes.
const PLAYBACK_CHUNK: u64 = 1 << 20;

/// A listing holds at most this many recordings (the oldest in the range first; ask again
/// `from` the last one's end for more).
const MAX_LISTED: usize = 2000;

/// Opens the recordings' directory (repairing what a crash cut short) and starts a recorder
/// per recorded camera: blocking. `None`: recording is off.
pub fn start(
    config: &Config,
    cameras: &Arc<Cameras>,
    on_event: crate::media::camera_events::OnCameraEvent,
    motions: &Arc<crate::media::motion::Motions>,
) -> anyhow::Result<Option<Arc<Recorders>>> {
    let (Some(recording), Some(dir)) = (&config.recording, config.recording_dir()) else {
        return Ok(None);
    };
    if recording.mode == RecordingMode::Off {
        return Ok(None);
    }
    for name in recording.cameras.iter().flatten() {
        if cameras.get(Some(name)).is_none() {
            tracing::warn!(
                camera = name,
                "recording.cameras names a camera the profile lacks"
            );
        }
    }
    let store =
        Store::open(&dir).map_err(|e| anyhow::anyhow!("recording.path: {}: {e}", dir.display()))?;
    tracing::info!(
        path = %dir.display(),
        recordings = store.list(None, None, None).len(),
        "recordings"
    );
    let settings = Settings {
        segment: Duration::from_secs(recording.segment_secs),
        keep: recording
            .keep_days
            .map(|days| Duration::from_secs(u64::from(days) * 86_400)),
        min_free: recording.min_free_mb.saturating_mul(1 << 20),
        cameras: recording.cameras.clone(),
        motion: (recording.mode == RecordingMode::Motion).then(|| MotionMode {
            pre: Duration::from_secs(recording.pre_secs),
            post: Duration::from_secs(recording.post_secs),
        }),
    };
    if recording.mode == RecordingMode::Motion {
        for camera in cameras.all() {
            let watched = camera.profile.motion.as_ref().is_some_and(|m| m.enabled);
            if !watched {
                tracing::warn!(
                    camera = %camera.name,
                    "recording.mode is \"motion\" and the camera's motion is not enabled: \
                     it is recorded only once [motion] enables it"
                );
            }
        }
    }
    Ok(Some(Recorders::start(
        Arc::new(store),
        Arc::clone(cameras),
        settings,
        on_event,
        Some(Arc::clone(motions)),
    )))
}

pub fn router(recorders: Option<Arc<Recorders>>) -> Router {
    Router::new()
        .route("/api/recordings", get(list))
        .route("/api/recordings/{id}", get(serve).delete(delete))
        .route("/api/cameras/{camera}/playback", get(playback))
        .with_state(recorders)
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    camera: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

#[derive(Debug, Serialize)]
struct Listed {
    id: String,
    camera: String,
    start: String,
    end: String,
    duration_s: f64,
    bytes: u64,
    url: String,
    /// Being written now (it grows).
    writing: bool,
}

#[derive(Debug, Serialize)]
struct Recorder {
    camera: String,
    #[serde(flatten)]
    state: crate::media::record::RecorderState,
}

/// RFC 3339 in UTC with milliseconds: `2026-12-08T00:15:00.123Z`.
pub fn rfc3339(at: OffsetDateTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    at.to_offset(time::UtcOffset::UTC)
        .format(format)
        .unwrap_or_default()
}

fn listed(segment: Segment) -> Listed {
    Listed {
        url: format!("/api/recordings/{}", segment.id),
        start: rfc3339(segment.start),
        end: rfc3339(segment.end()),
        duration_s: (segment.duration.as_secs_f64() * 1000.0).round() / 1000.0,
        bytes: segment.bytes,
        writing: segment.writing,
        camera: segment.camera,
        id: segment.id,
    }
}

async fn list(
    State(recorders): State<Option<Arc<Recorders>>>,
    Query(query): Query<ListQuery>,
) -> Response {
    let Some(recorders) = recorders else {
        return axum::Json(serde_json::json!({"recording": false, "recordings": []}))
            .into_response();
    };
    let time = |text: &Option<String>, key: &str| match text {
        None => Ok(None),
        Some(text) => OffsetDateTime::parse(text, &Rfc3339)
            .map(Some)
            .map_err(|_| format!("{key}: not an RFC 3339 time")),
    };
    let (from, to) = match (time(&query.from, "from"), time(&query.to, "to")) {
        (Ok(from), Ok(to)) => (from, to),
        (Err(why), _) | (_, Err(why)) => return error(StatusCode::BAD_REQUEST, &why),
    };
    let mut segments = recorders.store().list(query.camera.as_deref(), from, to);
    let more = segments.len() > MAX_LISTED;
    segments.truncate(MAX_LISTED);
    let motion = motions_between(&recorders, query.camera.as_deref(), from, to);
    let recorders: Vec<Recorder> = recorders
        .states()
        .into_iter()
        .map(|(camera, state)| Recorder { camera, state })
        .collect();
    axum::Json(serde_json::json!({
        "recording": true,
        "recorders": recorders,
        "recordings": segments.into_iter().map(listed).collect::<Vec<_>>(),
        "more": more,
        "motion": motion,
    }))
    .into_response()
}

/// The motions the watchers remember (since the daemon started) of `camera` (any: `None`)
/// overlapping `from`..`to`: `{"camera", "start", "end"}` (`end` null while it goes on).
fn motions_between(
    recorders: &Recorders,
    camera: Option<&str>,
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
) -> Vec<serde_json::Value> {
    let Some(motions) = recorders.motions() else {
        return Vec::new();
    };
    let at = |ms: u64| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok();
    motions
        .history()
        .into_iter()
        .filter(|(name, _, _)| camera.is_none_or(|c| c == name))
        .filter_map(|(name, start, end)| {
            let (start, end) = (at(start)?, end.and_then(at));
            let overlaps = from.is_none_or(|from| end.is_none_or(|end| end >= from))
                && to.is_none_or(|to| start <= to);
            overlaps.then(|| {
                serde_json::json!({
                    "camera": name,
                    "start": rfc3339(start),
                    "end": end.map(rfc3339),
                })
            })
        })
        .take(MAX_LISTED)
        .collect()
}

/// The file, with `Range` and `If-Modified-Since` (tower-http's `ServeFile`).
async fn serve(
    State(recorders): State<Option<Arc<Recorders>>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let Some((segment, path)) = recorders.and_then(|r| r.store().get(&id)) else {
        return error(StatusCode::NOT_FOUND, "no such recording");
    };
    // Its type from its extension (`.mp4`: video/mp4).
    let _ = segment;
    match tower_http::services::ServeFile::new(path)
        .oneshot(request)
        .await
    {
        Ok(response) => response.into_response(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}

async fn delete(
    State(recorders): State<Option<Arc<Recorders>>>,
    Path(id): Path<String>,
) -> Response {
    let Some(recorders) = recorders else {
        return error(StatusCode::NOT_FOUND, "no such recording");
    };
    let deleted = tokio::task::spawn_blocking(move || recorders.store().delete(&id)).await;
    match deleted {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(StoreError::NotFound)) => error(StatusCode::NOT_FOUND, "no such recording"),
        Ok(Err(err @ StoreError::Writing)) => error(StatusCode::CONFLICT, &err.to_string()),
        Ok(Err(err)) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct PlaybackQuery {
    start: String,
    /// Seconds (default 600).
    duration: Option<f64>,
}

/// `GET /api/cameras/{camera}/playback?start=…&duration=…`: the camera's recordings from
/// `start` for `duration` seconds as one fragmented MP4 (whole segments, joined without
/// re-encoding: `media::record::splice`), with `Range`.
async fn playback(
    State(recorders): State<Option<Arc<Recorders>>>,
    Path(camera): Path<String>,
    Query(query): Query<PlaybackQuery>,
    headers: axum::http::HeaderMap,
) -> Response {
    let Some(recorders) = recorders else {
        return error(StatusCode::NOT_FOUND, "recording is off");
    };
    let Ok(start) = OffsetDateTime::parse(&query.start, &Rfc3339) else {
        return error(StatusCode::BAD_REQUEST, "start: not an RFC 3339 time");
    };
    let seconds = query.duration.unwrap_or(600.0);
    if !(seconds > 0.0 && seconds <= MAX_PLAYBACK_SECS) {
        return error(
            StatusCode::BAD_REQUEST,
            "duration: seconds, more than 0 and at most 3600",
        );
    }
    let Some(end) = start.checked_add(time::Duration::seconds_f64(seconds)) else {
        return error(StatusCode::BAD_REQUEST, "start: too far in the future");
    };
    let store = Arc::clone(recorders.store());
    let segments = store.list(Some(&camera), Some(start), Some(end));
    if segments.is_empty() {
        return error(StatusCode::NOT_FOUND, "no recording of that camera then");
    }
    let files: Vec<std::path::PathBuf> = segments.iter().map(|s| store.path_of(s)).collect();
    let joined = match tokio::task::spawn_blocking(move || splice::join(&files)).await {
        Ok(Ok(joined)) if joined.segments > 0 => joined,
        Ok(Ok(_)) => return error(StatusCode::NOT_FOUND, "no playable recording then"),
        Ok(Err(err)) => return error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    };
    let total = joined.len;
    // A Range that does not parse (another unit, garbage) is ignored, as RFC 9110 says; one
    // that parses but lies outside the file is answered 416. Several ranges: the first.
    let range = headers
        .get(axum::http::header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|text| http_range_header::parse_range_header(text).ok())
        .map(|ranges| {
            ranges
                .validate(total)
                .ok()
                .and_then(|ranges| ranges.into_iter().next())
        });
    let (status, from, to) = match range {
        None => (StatusCode::OK, 0, total),
        Some(Some(range)) => (StatusCode::PARTIAL_CONTENT, *range.start(), range.end() + 1),
        Some(None) => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(
                    axum::http::header::CONTENT_RANGE,
                    format!("bytes */{total}"),
                )],
            )
                .into_response();
        }
    };
    let pieces = Arc::new(joined.pieces);
    let body = futures::stream::unfold(from, move |at| {
        let pieces = Arc::clone(&pieces);
        async move {
            if at >= to {
                return None;
            }
            let next = (at + PLAYBACK_CHUNK).min(to);
            let read =
                tokio::task::spawn_blocking(move || splice::read_range(&pieces, at..next)).await;
            let chunk = match read {
                Ok(Ok(bytes)) => Ok(bytes),
                Ok(Err(err)) => Err(err),
                Err(err) => Err(std::io::Error::other(err)),
            };
            Some((chunk, next))
        }
    });
    let mut response = axum::body::Body::from_stream(body).into_response();
    *response.status_mut() = status;
    let h = response.headers_mut();
    let value = |text: String| {
        axum::http::HeaderValue::from_str(&text).unwrap_or(axum::http::HeaderValue::from_static(""))
    };
    h.insert(axum::http::header::CONTENT_TYPE, value("video/mp4".into()));
    h.insert(axum::http::header::ACCEPT_RANGES, value("bytes".into()));
    h.insert(
        axum::http::header::CONTENT_LENGTH,
        value((to - from).to_string()),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            axum::http::header::CONTENT_RANGE,
            value(format!("bytes {from}-{}/{total}", to - 1)),
        );
    }
    h.insert("x-webrtcd-segments", value(format!("{}", joined.segments)));
    response
}
