//! The HTTP listener: the page at `/`, the JSON API under `/api`, and `/signaling` (the
//! embedded relay). The standalone relay serves only `/signaling`.

use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::protocol::Role as WsRole;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::media::shared::Encoders;
use crate::relay::{Relay, ws};
use crate::session::{CallManager, PlaceCallError};

use super::auth;

/// What `/signaling` needs: the relay, its keepalive, tokens and a connection limit.
#[derive(Clone)]
pub struct RelayState {
    pub relay: Arc<Relay>,
    pub keepalive: Duration,
    pub tokens: Arc<Vec<String>>,
    pub connections: Arc<Semaphore>,
}

#[derive(Clone)]
struct DaemonState {
    calls: Arc<CallManager>,
    encoders: Arc<Encoders>,
}

pub fn relay_router(state: RelayState) -> Router {
    Router::new()
        .route("/signaling", get(signaling))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

pub fn daemon_router(
    relay: RelayState,
    calls: Arc<CallManager>,
    encoders: Arc<Encoders>,
) -> Router {
    let state = DaemonState { calls, encoders };
    let api = Router::new()
        .route("/api/status", get(status))
        .route("/api/calls", get(list_calls).post(place_call))
        .route("/api/calls/{session}", delete(hang_up))
        .route("/", get(page))
        .route("/app.js", get(script))
        .route("/style.css", get(style))
        .layer(axum::middleware::from_fn_with_state(
            relay.tokens.clone(),
            require_token,
        ))
        .with_state(state);
    api.merge(relay_router(relay))
}

async fn require_token(
    State(tokens): State<Arc<Vec<String>>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    // The page itself is public (it has no data); it passes its token on to the API.
    if req.uri().path() == "/" || auth::authorized(&tokens, req.headers(), req.uri().query()) {
        return next.run(req).await;
    }
    (StatusCode::UNAUTHORIZED, "a token is required\n").into_response()
}

async fn page() -> Html<&'static str> {
    Html(include_str!("../../web/index.html"))
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../web/app.js"),
    )
        .into_response()
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../web/style.css"),
    )
        .into_response()
}

async fn status(State(state): State<DaemonState>) -> Response {
    let calls = &state.calls;
    axum::Json(json!({
        "id": calls.id(),
        "registered": calls.id().is_some(),
        "peers": calls.peers(),
        "sessions": calls.session_count(),
        "calls_ended": calls.ended.load(std::sync::atomic::Ordering::Relaxed),
        "pipelines": crate::media::live_pipelines(),
        "encoders": crate::media::live_encoders(),
        "shared_streams": state.encoders.streams(),
        "echo_cancellers": {
            "dsp": crate::media::live_elements_of("webrtcdsp"),
            "probe": crate::media::live_elements_of("webrtcechoprobe"),
        },
    }))
    .into_response()
}

async fn list_calls(State(state): State<DaemonState>) -> Response {
    axum::Json(state.calls.calls()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallRequest {
    to: String,
}

async fn place_call(State(state): State<DaemonState>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<CallRequest>(&body) else {
        return error(StatusCode::BAD_REQUEST, "expected {\"to\": \"PEER\"}");
    };
    match state.calls.place_call(&request.to) {
        Ok(session) => (
            StatusCode::CREATED,
            axum::Json(json!({ "session": session })),
        )
            .into_response(),
        Err(err @ PlaceCallError::UnknownPeer(_)) => error(StatusCode::NOT_FOUND, &err.to_string()),
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, &err.to_string()),
    }
}

async fn hang_up(State(state): State<DaemonState>, Path(session): Path<String>) -> Response {
    if state.calls.hangup(&session) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, "no such call")
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// `GET /signaling`: upgrades to a WebSocket served by the relay.
async fn signaling(State(state): State<RelayState>, req: Request) -> Response {
    if !auth::authorized(&state.tokens, req.headers(), req.uri().query()) {
        return (StatusCode::UNAUTHORIZED, "a token is required\n").into_response();
    }
    let is_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return (StatusCode::BAD_REQUEST, "WebSocket upgrade expected\n").into_response();
    };
    if !is_upgrade {
        return (StatusCode::BAD_REQUEST, "WebSocket upgrade expected\n").into_response();
    }
    let Ok(permit) = Arc::clone(&state.connections).try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections\n").into_response();
    };
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let io = TokioAdapter::new(TokioIo::new(upgraded));
                let ws =
                    WebSocketStream::from_raw_socket(io, WsRole::Server, Some(ws::config())).await;
                ws::serve(ws, state.relay, state.keepalive).await;
            }
            Err(err) => tracing::debug!("upgrade failed: {err}"),
        }
        drop(permit);
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "upgrade")
        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
        .body(Body::empty())
        .unwrap_or_default()
}
