//! WHEP's HTTP side: `POST /whep`, `PATCH` and `DELETE /whep/{session}`, and `OPTIONS` for
//! CORS preflights (which also lists the ICE servers in `Link` headers).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::{Sessions, WhepError};
use crate::service::auth::Scope;
use crate::service::ice_servers::IceServers;

pub const SDP: &str = "application/sdp";
pub const SDP_FRAGMENT: &str = "application/trickle-ice-sdpfrag";

#[derive(Clone)]
struct WhepState {
    sessions: Arc<Sessions>,
    ice: Arc<IceServers>,
}

/// The WHEP routes (the caller layers the guard and the token check on them).
pub fn router(sessions: Arc<Sessions>, ice: Arc<IceServers>) -> Router {
    Router::new()
        .route("/whep", post(open).options(preflight))
        .route(
            "/api/cameras/{camera}/whep",
            post(open_camera).options(preflight),
        )
        .route(
            "/whep/{session}",
            axum::routing::patch(patch).delete(close).options(preflight),
        )
        .with_state(WhepState { sessions, ice })
}

fn text(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

fn content_type_is(headers: &HeaderMap, wanted: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(wanted))
}

fn etag(session: &str, answers: u32) -> String {
    format!("\"{session}.{answers}\"")
}

/// For a page of an allowed origin (the guard has refused the others): CORS headers.
fn cors(request: &HeaderMap, response: &mut Response) {
    let Some(origin) = request.get(header::ORIGIN).cloned() else {
        return;
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, Accept-Patch"),
    );
}

/// `Link` headers for the ICE servers (RFC 9725 §4.6); TURN credentials only for a request
/// that carried a token (`with_credentials`).
fn ice_links(ice: &IceServers, with_credentials: bool, response: &mut Response) {
    let mut links = Vec::new();
    for server in ice.for_browser("whep", with_credentials) {
        for url in &server.urls {
            links.push(match &server.credentials {
                Some((username, password)) => format!(
                    "<{url}>; rel=\"ice-server\"; username=\"{username}\"; \
                     credential=\"{password}\"; credential-type=\"password\""
                ),
                None => format!("<{url}>; rel=\"ice-server\""),
            });
        }
    }
    for link in links {
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().append(header::LINK, value);
        }
    }
}

fn failure(err: &WhepError) -> Response {
    let status = match err {
        WhepError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        WhepError::Refused(_) => StatusCode::BAD_REQUEST,
        WhepError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
        WhepError::NotFound | WhepError::NoSuchCamera(_) => StatusCode::NOT_FOUND,
    };
    text(status, &err.to_string())
}

/// `POST /whep`: an SDP offer in for the first camera, `201 Created` with the answer
/// (candidates gathered in).
async fn open(State(state): State<WhepState>, request: Request) -> Response {
    offered(state, None, request).await
}

/// `POST /api/cameras/{camera}/whep`: the same, for that camera (404 for one there is not).
async fn open_camera(
    State(state): State<WhepState>,
    Path(camera): Path<String>,
    request: Request,
) -> Response {
    offered(state, Some(camera), request).await
}

async fn offered(state: WhepState, camera: Option<String>, request: Request) -> Response {
    let headers = request.headers().clone();
    let authenticated = request.extensions().get::<Scope>().is_some();
    let from = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    if !content_type_is(&headers, SDP) {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be application/sdp",
        );
    }
    let Ok(body) = axum::body::to_bytes(request.into_body(), MAX_OFFER_BYTES).await else {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "the offer is too large");
    };
    let Ok(offer) = String::from_utf8(body.to_vec()) else {
        return text(StatusCode::BAD_REQUEST, "the offer is not text");
    };
    if !offer.trim_start().starts_with("v=0") {
        return text(StatusCode::BAD_REQUEST, "the body is not an SDP offer");
    }
    let (session, answer) = match state.sessions.open(offer, from, camera.as_deref()).await {
        Ok(opened) => opened,
        Err(err) => {
            tracing::info!("WHEP offer not answered: {err}");
            let mut response = failure(&err);
            cors(&headers, &mut response);
            return response;
        }
    };
    let answers = state.sessions.answers(&session).unwrap_or(1);
    let mut response = (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, SDP.to_string()),
            (header::LOCATION, format!("/whep/{session}")),
            (header::ETAG, etag(&session, answers)),
            (
                header::HeaderName::from_static("accept-patch"),
                SDP_FRAGMENT.to_string(),
            ),
        ],
        answer,
    )
        .into_response();
    ice_links(&state.ice, authenticated, &mut response);
    cors(&headers, &mut response);
    response
}

/// An offer larger than this is not one a player makes.
const MAX_OFFER_BYTES: usize = 64 * 1024;

/// `PATCH /whep/{session}`: trickled candidates (204), or an ICE restart (200 with the
/// daemon's new credentials and candidates).
async fn patch(
    State(state): State<WhepState>,
    Path(session): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut response = patched(&state, &session, &headers, body).await;
    cors(&headers, &mut response);
    response
}

async fn patched(state: &WhepState, session: &str, headers: &HeaderMap, body: Bytes) -> Response {
    if !content_type_is(headers, SDP_FRAGMENT) {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be application/trickle-ice-sdpfrag",
        );
    }
    let Some(answers) = state.sessions.answers(session) else {
        return failure(&WhepError::NotFound);
    };
    if let Some(wanted) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok())
        && wanted != "*"
        && wanted != etag(session, answers)
    {
        return text(StatusCode::PRECONDITION_FAILED, "the session has changed");
    }
    let Ok(fragment) = std::str::from_utf8(&body) else {
        return text(StatusCode::BAD_REQUEST, "the fragment is not text");
    };
    match state.sessions.patch(session, fragment).await {
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Ok(Some(answer)) => {
            let answers = state.sessions.answers(session).unwrap_or(answers + 1);
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, SDP_FRAGMENT.to_string()),
                    (header::ETAG, etag(session, answers)),
                ],
                answer,
            )
                .into_response()
        }
        Err(err) => failure(&err),
    }
}

/// `DELETE /whep/{session}`: the player leaves.
async fn close(
    State(state): State<WhepState>,
    Path(session): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut response = if state.sessions.close(&session) {
        StatusCode::OK.into_response()
    } else {
        failure(&WhepError::NotFound)
    };
    cors(&headers, &mut response);
    response
}

/// `OPTIONS`: the CORS preflight of a page from an allowed origin (others were refused by
/// the guard), and the ICE servers.
async fn preflight(State(state): State<WhepState>, request: Request) -> Response {
    let authenticated = request.extensions().get::<Scope>().is_some();
    let mut response = (
        StatusCode::NO_CONTENT,
        [
            (header::HeaderName::from_static("accept-post"), SDP),
            (header::ALLOW, "OPTIONS, POST, PATCH, DELETE"),
        ],
    )
        .into_response();
    if request.headers().contains_key(header::ORIGIN) {
        let allowed = response.headers_mut();
        allowed.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, PATCH, DELETE"),
        );
        allowed.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, Content-Type, If-Match"),
        );
        allowed.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    ice_links(&state.ice, authenticated, &mut response);
    cors(request.headers(), &mut response);
    response
}
