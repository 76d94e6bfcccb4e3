//! Starting and stopping the daemon and the standalone relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::config::Config;
use super::http::{self, RelayState};
use crate::media::shared::Encoders;
use crate::media::{self, profile::Profile};
use crate::relay::Relay;
use crate::relay::link::{self, LinkEvent};
use crate::session::identity::DtlsIdentity;
use crate::session::{CallManager, CallSettings};

/// How long shutdown waits for calls to end before exiting anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

fn relay_state(relay: &Arc<Relay>, config: &Config) -> RelayState {
    RelayState {
        relay: Arc::clone(relay),
        keepalive: Duration::from_secs(config.keepalive_secs.max(1)),
        tokens: Arc::new(config.tokens.clone()),
        connections: Arc::new(Semaphore::new(config.max_connections.max(1))),
    }
}

/// Binds and announces the listener: tests and scripts read the `listening on` line.
async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    println!("{what} listening on http://{local}");
    tracing::info!("{what} listening on http://{local}");
    Ok(listener)
}

pub async fn run_daemon(config: Config) -> anyhow::Result<()> {
    media::init()?;
    let profile = Arc::new(Profile::load(&config.profile)?);
    profile.check_devices(&config.profile)?;
    tracing::info!(profile = %profile.name, file = %config.profile.display(), "profile loaded");
    let identity = DtlsIdentity::load_or_create(&config.state_dir())?;
    tracing::info!(fingerprint = %identity.fingerprint(), "DTLS identity (ECDSA P-256)");
    let warm_up = tokio::task::spawn_blocking(crate::session::identity::warm_up_dtls);
    // Probing runs short real encodes: off the async threads, before we say we are ready.
    let probe_profile = Arc::clone(&profile);
    let (encoders, _) = tokio::task::spawn_blocking(move || Encoders::probe(probe_profile))
        .await
        .context("encoder probing")??;
    let settings = CallSettings {
        identity: Arc::new(identity),
        encoders: Arc::clone(&encoders),
        profile,
        ice_addresses: config.ice.addresses.clone(),
        stun_server: config.ice.stun_server.clone(),
        turn_servers: config.ice.turn_servers.clone(),
    };
    let relay = Relay::new();
    let link = match &config.relay {
        Some(url) => link::remote(url.clone(), config.id.clone()),
        None => link::embedded(&relay, config.id.clone()),
    };
    let calls = CallManager::new(settings, link.outgoing.clone());
    tokio::spawn(pump_signaling(link.incoming, Arc::clone(&calls)));

    // Ready only once the DTLS default certificate exists: the first call must not pay for it.
    let _ = warm_up.await;
    let listener = bind(config.listen, "webrtcd").await?;
    let app = http::daemon_router(relay_state(&relay, &config), Arc::clone(&calls), encoders);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;

    tracing::info!("shutting down: ending {} calls", calls.session_count());
    calls.hangup_all("shutdown");
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while (calls.session_count() > 0 || media::live_pipelines() > 0)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the last hangups leave the signaling queue.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}

async fn pump_signaling(
    mut incoming: tokio::sync::mpsc::Receiver<LinkEvent>,
    calls: Arc<CallManager>,
) {
    while let Some(event) = incoming.recv().await {
        match event {
            LinkEvent::Message(msg) => calls.on_signaling(msg),
            LinkEvent::Down => calls.on_signaling_down(),
        }
    }
}

pub async fn run_relay(config: Config) -> anyhow::Result<()> {
    let relay = Relay::new();
    let listener = bind(config.listen, "webrtcd relay").await?;
    let app = http::relay_router(relay_state(&relay, &config));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
