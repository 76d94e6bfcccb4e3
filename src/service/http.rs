//! The HTTP listener: the page at `/`, the JSON API under `/api`, `/metrics`, `/healthz`,
//! and `/signaling` (the embedded relay). The standalone relay serves `/signaling` and
//! `/healthz`. Every request first passes the Host/Origin/Content-Type guard, then the
//! token check: the page is public, `/signaling` needs a `view` token, everything else an
//! `admin` one (with no token configured, everything is open).

use std::sync::Arc;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::tungstenite::handshake::server::create_response;
use async_tungstenite::tungstenite::protocol::Role as WsRole;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::path::PathBuf;

use crate::relay::{Access, Relay, ws};
use crate::session::manager::DecideError;
use crate::session::{CallManager, PlaceCallError};

use super::auth::{Scope, Tokens};
use super::guard::{self, Guard};
use super::health::Health;
use super::ice_servers::IceServers;
use super::listener::Slot;

/// What `/signaling` needs: the relay, each connection's bounds, tokens, and where the
/// connections' tasks are tracked (shutdown waits for them).
#[derive(Clone)]
pub struct RelayState {
    pub relay: Arc<Relay>,
    pub limits: ws::ConnectionLimits,
    pub tokens: Arc<Tokens>,
    pub guard: Arc<Guard>,
    pub tracker: TaskTracker,
    /// Cancelled when the daemon shuts down: every WebSocket closes.
    pub shutdown: CancellationToken,
}

#[derive(Clone)]
struct DaemonState {
    calls: Arc<CallManager>,
    health: Arc<Health>,
    /// Serve the web client from here instead of the built-in copy.
    web_dir: Option<Arc<PathBuf>>,
    /// The HTTPS address's port, for the page's hint when it is loaded over plain HTTP.
    https_port: Option<u16>,
    ice: Arc<IceServers>,
    publishing: Arc<super::whip::Publishing>,
    /// Cancelled when the daemon shuts down: event streams end.
    shutdown: CancellationToken,
}

/// The standalone relay: `/signaling`, and `/healthz` (200 while its registry answers).
pub fn relay_router(state: RelayState) -> Router {
    let guard = Arc::clone(&state.guard);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(signaling_router(state.clone()))
        .layer(axum::middleware::from_fn_with_state(
            state.tokens,
            require_scope,
        ))
        .layer(axum::middleware::from_fn_with_state(guard, guard::guard))
}

fn signaling_router(state: RelayState) -> Router {
    Router::new()
        .route("/signaling", get(signaling))
        .with_state(state)
}

/// What the daemon's routes answer from.
pub struct DaemonParts {
    pub calls: Arc<CallManager>,
    pub health: Arc<Health>,
    pub publishing: Arc<super::whip::Publishing>,
    /// WHEP sessions at once from one address.
    pub whep_max_per_address: usize,
    /// The recorders and motion watchers.
    pub watching: Arc<super::watching::Watching>,
}

pub fn daemon_router(
    relay: RelayState,
    parts: DaemonParts,
    web_dir: Option<PathBuf>,
    https_port: Option<u16>,
    ice: IceServers,
) -> Router {
    let DaemonParts {
        calls,
        health,
        publishing,
        whep_max_per_address,
        watching,
    } = parts;
    let ice = Arc::new(ice);
    let whep = super::whep::Sessions::new(
        Arc::clone(&calls),
        whep_max_per_address,
        relay.tracker.clone(),
    );
    let cameras = super::cameras::router(Arc::clone(&calls), Arc::clone(&watching.motions));
    let state = DaemonState {
        calls,
        health,
        web_dir: web_dir.map(Arc::new),
        https_port,
        ice: Arc::clone(&ice),
        publishing,
        shutdown: relay.shutdown.clone(),
    };
    let tokens = Arc::clone(&relay.tokens);
    let guard = Arc::clone(&relay.guard);
    Router::new()
        .route("/api/status", get(status))
        .route("/api/ice-servers", get(ice_servers))
        .route("/api/calls", get(list_calls).post(place_call))
        .route("/api/calls/{session}", delete(hang_up))
        .route("/api/calls/{session}/accept", post(accept_call))
        .route("/api/calls/{session}/reject", post(reject_call))
        .route("/api/events", get(events))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/", get(page))
        .route("/app.js", get(script))
        .route("/cameras.js", get(cameras_script))
        .route("/recordings.js", get(recordings_script))
        .route("/style.css", get(style))
        .with_state(state)
        .merge(cameras)
        .merge(super::recordings::router(watching.recorders.clone()))
        .merge(signaling_router(relay))
        .merge(super::whep::http::router(whep, ice))
        .layer(axum::middleware::from_fn_with_state(tokens, require_scope))
        .layer(axum::middleware::from_fn_with_state(guard, guard::guard))
}

/// The page and its script and style are public (they hold no data); the page passes its
/// token on to `/signaling`.
const PUBLIC: [&str; 5] = [
    "/",
    "/app.js",
    "/cameras.js",
    "/recordings.js",
    "/style.css",
];

/// The scope a request needs; `None`: public. A CORS preflight carries no token: WHEP's is
/// public (it says only which methods and headers the routes take, and STUN servers).
pub fn scope_needed(method: &axum::http::Method, path: &str) -> Option<Scope> {
    let whep = path == "/whep"
        || path.starts_with("/whep/")
        || (path.starts_with("/api/cameras/") && path.ends_with("/whep"));
    if PUBLIC.contains(&path) || (whep && method == axum::http::Method::OPTIONS) {
        None
    } else if path == "/signaling"
        || path == "/api/ice-servers"
        || path == "/api/snapshot.jpg"
        || path == "/api/cameras"
        || (path.starts_with("/api/cameras/")
            && (path.ends_with("/snapshot.jpg") || path.ends_with("/playback")))
        || whep
        || (path.starts_with("/api/recordings") && method != axum::http::Method::DELETE)
    {
        Some(Scope::View)
    } else {
        Some(Scope::Admin)
    }
}

/// 401 without an accepted token, 403 with one whose scope is too narrow; otherwise the
/// request goes on carrying its [`Scope`].
async fn require_scope(
    State(tokens): State<Arc<Tokens>>,
    mut req: Request,
    next: axum::middleware::Next,
) -> Response {
    let granted = tokens.scope_of(req.headers(), req.uri().query());
    match (scope_needed(req.method(), req.uri().path()), granted) {
        (None, _) => {}
        (Some(_), None) => {
            return (StatusCode::UNAUTHORIZED, "a token is required\n").into_response();
        }
        (Some(needed), Some(scope)) if !scope.allows(needed) => {
            return (
                StatusCode::FORBIDDEN,
                format!("this needs a token with the {} scope\n", needed.as_str()),
            )
                .into_response();
        }
        (Some(_), Some(_)) => {}
    }
    if let Some(scope) = granted {
        req.extensions_mut().insert(scope);
    }
    next.run(req).await
}

/// One file of the web client: from `web_dir` when configured, else the built-in copy.
async fn web_text(
    state: &DaemonState,
    name: &str,
    builtin: &'static str,
) -> Result<String, Response> {
    match &state.web_dir {
        Some(dir) => tokio::fs::read_to_string(dir.join(name))
            .await
            .map_err(|err| {
                tracing::warn!("web_dir: {name}: {err}");
                StatusCode::NOT_FOUND.into_response()
            }),
        None => Ok(builtin.to_string()),
    }
}

async fn web_file(
    state: &DaemonState,
    name: &str,
    builtin: &'static str,
    content_type: &'static str,
) -> Response {
    match web_text(state, name, builtin).await {
        Ok(body) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(response) => response,
    }
}

/// The page's placeholder for the HTTPS port (empty: none).
const HTTPS_PORT_META: &str = r#"<meta name="webrtcd-https-port" content="">"#;

async fn page(State(state): State<DaemonState>) -> Response {
    let builtin = include_str!("../../web/index.html");
    let mut html = match web_text(&state, "index.html", builtin).await {
        Ok(html) => html,
        Err(response) => return response,
    };
    // The page says where HTTPS is when it was loaded without it (talking needs it).
    if let Some(port) = state.https_port {
        html = html.replace(
            HTTPS_PORT_META,
            &format!(r#"<meta name="webrtcd-https-port" content="{port}">"#),
        );
    }
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

async fn script(State(state): State<DaemonState>) -> Response {
    let js = include_str!("../../web/app.js");
    web_file(&state, "app.js", js, "text/javascript; charset=utf-8").await
}

async fn cameras_script(State(state): State<DaemonState>) -> Response {
    let js = include_str!("../../web/cameras.js");
    web_file(&state, "cameras.js", js, "text/javascript; charset=utf-8").await
}

async fn recordings_script(State(state): State<DaemonState>) -> Response {
    let js = include_str!("../../web/recordings.js");
    web_file(
        &state,
        "recordings.js",
        js,
        "text/javascript; charset=utf-8",
    )
    .await
}

async fn style(State(state): State<DaemonState>) -> Response {
    let css = include_str!("../../web/style.css");
    web_file(&state, "style.css", css, "text/css; charset=utf-8").await
}

async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::get().encode(),
    )
        .into_response()
}

async fn healthz(State(state): State<DaemonState>) -> Response {
    match state.health.check(true).await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
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
        "shared_streams": calls
            .cameras()
            .all()
            .iter()
            .flat_map(|camera| camera.encoders.streams())
            .collect::<Vec<_>>(),
        "publish": state.publishing.statuses(),
        "echo_cancellers": {
            "microphones": crate::media::voice::live().0,
            "speakers": crate::media::voice::live().1,
        },
    }))
    .into_response()
}

/// `GET /api/ice-servers`: an `RTCConfiguration` fragment (`iceServers`,
/// `iceTransportPolicy`) for a page; TURN credentials are made fresh for each request.
async fn ice_servers(State(state): State<DaemonState>) -> Response {
    let ice = &state.ice;
    let servers: Vec<serde_json::Value> = ice
        .for_browser("browser", true)
        .into_iter()
        .map(|server| match server.credentials {
            Some((username, credential)) => json!({
                "urls": server.urls,
                "username": username,
                "credential": credential,
            }),
            None => json!({ "urls": server.urls }),
        })
        .collect();
    let policy = if ice.relay_only { "relay" } else { "all" };
    axum::Json(json!({ "iceServers": servers, "iceTransportPolicy": policy })).into_response()
}

async fn list_calls(State(state): State<DaemonState>) -> Response {
    axum::Json(state.calls.calls()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallRequest {
    to: String,
    /// The camera to send (none: the first).
    #[serde(default)]
    camera: Option<String>,
}

async fn place_call(State(state): State<DaemonState>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<CallRequest>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected {\"to\": \"PEER\"} (and \"camera\": \"NAME\")",
        );
    };
    match state
        .calls
        .place_call(&request.to, request.camera.as_deref())
    {
        Ok(session) => (
            StatusCode::CREATED,
            axum::Json(json!({ "session": session })),
        )
            .into_response(),
        Err(err @ (PlaceCallError::UnknownPeer(_) | PlaceCallError::NoSuchCamera(_))) => {
            error(StatusCode::NOT_FOUND, &err.to_string())
        }
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

/// `GET /api/events`: the calls' lifecycle (`ringing`, `connected`, `ended`) as server-sent
/// events, each named after its event with the JSON a hook gets as data, until the client
/// leaves or the daemon stops. A client that falls behind misses events (and is sent a
/// `lagged` event saying how many), never slows a call.
async fn events(State(state): State<DaemonState>) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let receiver = state.calls.notifier().events();
    let stream = futures::stream::unfold(
        (receiver, state.shutdown.clone()),
        |(mut receiver, shutdown)| async move {
            let received = tokio::select! {
                _ = shutdown.cancelled() => return None,
                received = receiver.recv() => received,
            };
            let sse = match received {
                Ok(event) => {
                    let data = serde_json::to_string(&event).unwrap_or_default();
                    Event::default().event(event.event).data(data)
                }
                // Said, so that a listener knows its picture may be incomplete.
                Err(RecvError::Lagged(missed)) => Event::default()
                    .event("lagged")
                    .data(format!("{{\"missed\":{missed}}}")),
                Err(RecvError::Closed) => return None,
            };
            Some((Ok::<_, std::convert::Infallible>(sse), (receiver, shutdown)))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `POST /api/calls/{session}/accept`: a ringing call answers.
async fn accept_call(State(state): State<DaemonState>, Path(session): Path<String>) -> Response {
    decided(state.calls.accept(&session))
}

/// `POST /api/calls/{session}/reject`: a ringing call ends with `rejected`.
async fn reject_call(State(state): State<DaemonState>, Path(session): Path<String>) -> Response {
    decided(state.calls.reject(&session))
}

fn decided(result: Result<(), DecideError>) -> Response {
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err @ DecideError::NotFound) => error(StatusCode::NOT_FOUND, &err.to_string()),
        Err(err @ (DecideError::NotRinging | DecideError::Decided)) => {
            error(StatusCode::CONFLICT, &err.to_string())
        }
    }
}

/// A JSON `{"error": message}` with `status` (every API route's failure).
pub(super) fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// `GET /signaling`: upgrades to a WebSocket served by the relay. A `view` token may only
/// reach the relay's full members (the device); see [`Access`].
async fn signaling(State(state): State<RelayState>, req: Request) -> Response {
    let access = match req.extensions().get::<Scope>() {
        Some(Scope::Admin) => Access::Full,
        _ => Access::ViewOnly,
    };
    // tungstenite's own server handshake checks the request (GET, `Connection: upgrade`,
    // `Upgrade: websocket`, `Sec-WebSocket-Version: 13`, a key) and makes the 101.
    let switching = match accept_websocket(&req) {
        Ok(response) => response,
        Err(why) => {
            tracing::debug!("not a WebSocket upgrade: {why}");
            return (StatusCode::BAD_REQUEST, "WebSocket upgrade expected\n").into_response();
        }
    };
    // The WebSocket keeps its connection's place under the connection caps while it lives.
    let slot = req.extensions().get::<Slot>().cloned();
    let on_upgrade = hyper::upgrade::on(req);
    state.tracker.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let io = TokioAdapter::new(TokioIo::new(upgraded));
                let ws =
                    WebSocketStream::from_raw_socket(io, WsRole::Server, Some(ws::config())).await;
                ws::serve(ws, state.relay, access, state.limits, state.shutdown).await;
            }
            Err(err) => tracing::debug!("upgrade failed: {err}"),
        }
        drop(slot);
    });
    switching.map(|()| Body::empty())
}

/// The `101 Switching Protocols` for a valid WebSocket upgrade request.
fn accept_websocket(req: &Request) -> Result<axum::http::Response<()>, String> {
    let mut head = axum::http::Request::builder()
        .method(req.method())
        .uri(req.uri())
        .version(req.version())
        .body(())
        .map_err(|e| e.to_string())?;
    *head.headers_mut() = req.headers().clone();
    create_response(&head).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(headers: &[(&str, &str)]) -> Request {
        let mut req = axum::http::Request::builder()
            .method("GET")
            .uri("/signaling");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(Body::empty()).expect("a request")
    }

    const GOOD: [(&str, &str); 4] = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn a_websocket_upgrade_is_answered_with_the_key_rfc_6455_gives() {
        let response = accept_websocket(&upgrade(&GOOD)).expect("an upgrade");
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            response.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn an_upgrade_missing_any_part_is_refused() {
        for (name, _) in GOOD {
            let headers: Vec<_> = GOOD.iter().filter(|h| h.0 != name).copied().collect();
            assert!(
                accept_websocket(&upgrade(&headers)).is_err(),
                "accepted without {name}"
            );
        }
        let old = [("sec-websocket-version", "8"), GOOD[0], GOOD[1], GOOD[3]];
        assert!(accept_websocket(&upgrade(&old)).is_err());
    }
}
