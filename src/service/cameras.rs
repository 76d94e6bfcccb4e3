//! The cameras' routes: `GET /api/cameras` (each camera, what it sends and who watches) and
//! its snapshots, `GET /api/cameras/{name}/snapshot.jpg` (and `/api/snapshot.jpg`: the first
//! camera's). View scope.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::http::error;
use crate::media::cameras::Camera;
use crate::media::codecs::MediaKind;
use crate::media::motion::{MotionState, Motions};
use crate::media::shared::SnapshotError;
use crate::session::CallManager;

#[derive(Clone)]
struct CamerasState {
    calls: Arc<CallManager>,
    motions: Arc<Motions>,
    /// Snapshots being taken (each holds a blocking thread while it waits for a picture).
    snapshots: Arc<tokio::sync::Semaphore>,
}

/// Snapshots taken at once, all cameras together; more get 503 (a poller that piles up
/// requests gets no threads).
const MAX_SNAPSHOTS: usize = 4;

/// How long a snapshot may wait for a picture (an idle camera starting included).
const SNAPSHOT_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

pub fn router(calls: Arc<CallManager>, motions: Arc<Motions>) -> Router {
    Router::new()
        .route("/api/cameras", get(list))
        .route("/api/snapshot.jpg", get(first_snapshot))
        .route("/api/cameras/{camera}/snapshot.jpg", get(snapshot))
        .with_state(CamerasState {
            calls,
            motions,
            snapshots: Arc::new(tokio::sync::Semaphore::new(MAX_SNAPSHOTS)),
        })
}

/// A camera as `GET /api/cameras` shows it.
#[derive(Debug, Serialize)]
struct CameraInfo {
    name: String,
    /// `idle` (nobody watches: nothing runs), or its video's shared stream's state
    /// (`starting`, `running`, `restarting`, `stopped`).
    state: &'static str,
    /// Calls and WHEP sessions watching it.
    viewers: usize,
    video: Option<VideoInfo>,
    audio: Option<AudioInfo>,
    /// The encoder element each codec uses (probed at start).
    encoders: std::collections::BTreeMap<String, String>,
    /// Its motion watch (`null`: motion is not enabled).
    motion: Option<MotionState>,
}

#[derive(Debug, Serialize)]
struct VideoInfo {
    width: u32,
    height: u32,
    framerate: u32,
    codecs: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
struct AudioInfo {
    codecs: Vec<&'static str>,
}

fn describe(camera: &Camera, viewers: usize, motion: Option<MotionState>) -> CameraInfo {
    let encoders = &camera.encoders;
    let names = |kind| encoders.codecs(kind).iter().map(|c| c.name()).collect();
    let streams = encoders.streams();
    let video_codecs: Vec<&'static str> = names(MediaKind::Video);
    let state = streams
        .iter()
        .find(|s| video_codecs.contains(&s.codec.as_str()))
        .or_else(|| streams.first())
        .map_or("idle", |s| s.state);
    CameraInfo {
        name: camera.name.to_string(),
        state,
        viewers,
        video: camera.profile.video.as_ref().map(|v| VideoInfo {
            width: v.width,
            height: v.height,
            framerate: v.framerate,
            codecs: video_codecs.clone(),
        }),
        audio: camera.profile.audio.as_ref().map(|_| AudioInfo {
            codecs: names(MediaKind::Audio),
        }),
        encoders: encoders
            .chosen()
            .into_iter()
            .map(|(codec, encoder)| (codec.name().to_string(), encoder))
            .collect(),
        motion,
    }
}

async fn list(State(state): State<CamerasState>) -> Response {
    // Describing a camera may re-probe an encoder that timed out at start: not on a worker.
    let (calls, motions) = (Arc::clone(&state.calls), Arc::clone(&state.motions));
    let described = tokio::task::spawn_blocking(move || {
        let cameras: Vec<CameraInfo> = calls
            .cameras()
            .all()
            .iter()
            .map(|camera| {
                let motion = motions.state(camera.name.as_str());
                describe(camera, calls.viewers(&camera.name), motion)
            })
            .collect();
        cameras
    })
    .await;
    match described {
        Ok(cameras) => axum::Json(json!({ "cameras": cameras })).into_response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "listing the cameras failed",
        ),
    }
}

#[derive(Deserialize)]
struct SnapshotQuery {
    width: Option<u32>,
}

/// `GET /api/snapshot.jpg?width=W`: the first camera's.
async fn first_snapshot(
    State(state): State<CamerasState>,
    Query(query): Query<SnapshotQuery>,
) -> Response {
    take(state, None, query).await
}

/// `GET /api/cameras/{camera}/snapshot.jpg?width=W`: a JPEG of the camera's current picture.
async fn snapshot(
    State(state): State<CamerasState>,
    Path(camera): Path<String>,
    Query(query): Query<SnapshotQuery>,
) -> Response {
    take(state, Some(camera), query).await
}

async fn take(state: CamerasState, camera: Option<String>, query: SnapshotQuery) -> Response {
    let Some(camera) = state.calls.cameras().get(camera.as_deref()) else {
        return error(StatusCode::NOT_FOUND, "no such camera");
    };
    // Held by the blocking thread until it is done (not dropped with a request whose client
    // went away).
    let Ok(taking) = Arc::clone(&state.snapshots).try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many snapshots at once; try again",
        );
    };
    let encoders = Arc::clone(&camera.encoders);
    // Tracked: shutdown waits for a snapshot under way (bounded by SNAPSHOT_WITHIN).
    let taken = crate::media::work::run(move || {
        let _taking = taking;
        encoders.snapshot(query.width, SNAPSHOT_WITHIN)
    })
    .await;
    match taken {
        Ok(Ok(jpeg)) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            jpeg,
        )
            .into_response(),
        Ok(Err(err @ SnapshotError::NoVideo)) => error(StatusCode::NOT_FOUND, &err.to_string()),
        Ok(Err(err @ SnapshotError::Convert(_))) => {
            tracing::warn!(camera = %camera.name, "snapshot: {err}");
            error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string())
        }
        Ok(Err(err)) => error(StatusCode::SERVICE_UNAVAILABLE, &err.to_string()),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the snapshot failed"),
    }
}
