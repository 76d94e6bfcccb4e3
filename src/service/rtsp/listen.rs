//! The RTSP listener as the daemon starts it: the server on its own thread, and the front
//! that admits connections (within `rtsp_max_clients`) and hands them over.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Mounts, PATH, front};
use crate::media::cameras::Cameras;
use crate::service::caps::{ConnectionCaps, rtsp_request_within};
use crate::service::config::Config;
use crate::service::listener;

/// Starts serving RTSP on `listen` until `shutdown`; the [`Mounts`] follow reloads.
pub async fn listen(
    config: &Config,
    listen: SocketAddr,
    cameras: &Arc<Cameras>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<Mounts>> {
    let secrets = config
        .tokens
        .iter()
        .map(|t| t.secret().to_string())
        .collect();
    let cameras = Arc::clone(cameras);
    let max_clients = ConnectionCaps::of(config).rtsp;
    let max_sessions = max_clients * front::MAX_SESSIONS_PER_CLIENT;
    let (handoff, mounts) =
        tokio::task::spawn_blocking(move || super::start(&cameras, secrets, max_sessions))
            .await??;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for RTSP on {listen}"))?;
    let bound = listener.local_addr()?;
    let admission = listener::Admission::new(listener::Limits {
        max_connections: max_clients,
        max_per_address: config.rtsp_max_clients_per_address,
        header_timeout: rtsp_request_within(config),
    });
    tracker.spawn(front::serve(
        listener,
        admission,
        rtsp_request_within(config),
        handoff,
        shutdown.clone(),
        tracker.clone(),
    ));
    println!("webrtcd listening on rtsp://{bound}{PATH}");
    tracing::info!("webrtcd listening on rtsp://{bound}{PATH}");
    Ok(mounts)
}
