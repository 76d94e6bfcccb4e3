//! Starting and stopping the daemon and the standalone relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::Config;
use super::health::Health;
use super::http::{self, RelayState};
use super::listener;
use super::notify::{self, Notifier};
use crate::media::shared::Encoders;
use crate::media::{self, profile::Profile};
use crate::protocol::EndReason;
use crate::relay::link::{self, LinkEvent};
use crate::relay::registry::RateLimit;
use crate::relay::{Relay, ws};
use crate::session::identity::DtlsIdentity;
use crate::session::{CallManager, CallSettings};

/// How long shutdown waits for calls to end before exiting anyway (systemd and the issue
/// allow 3 s from SIGTERM to exit).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long the HTTP listener gets to close its connections after that.
const LISTENER_GRACE: Duration = Duration::from_millis(300);

/// The relay with the configured rate limit for its clients.
fn new_relay(config: &Config) -> Arc<Relay> {
    Arc::new(Relay::with_rate(RateLimit {
        per_second: config.relay_messages_per_second,
        burst: config.relay_message_burst,
    }))
}

fn keepalive(config: &Config) -> Duration {
    Duration::from_secs(config.keepalive_secs.max(1))
}

fn relay_state(relay: &Arc<Relay>, config: &Config, tasks: &Tasks) -> RelayState {
    let mut limits = ws::ConnectionLimits::new(keepalive(config));
    limits.register_within = Duration::from_secs(config.client_timeout_secs.max(1));
    RelayState {
        relay: Arc::clone(relay),
        limits,
        tokens: Arc::new(config.tokens.clone()),
        tracker: tasks.connections.clone(),
        shutdown: tasks.shutdown.clone(),
    }
}

/// Every task that serves a connection, and the signal that ends them.
struct Tasks {
    connections: TaskTracker,
    shutdown: CancellationToken,
}

/// Serves `app` on `listener` within the configured connection bounds, until shutdown.
fn serve(listener: TcpListener, app: axum::Router, config: &Config, tasks: &Tasks) {
    let fd_limit = listener::raise_fd_limit();
    let admission = listener::Admission::new(listener::Limits {
        max_connections: listener::fit_connections(config.max_connections, fd_limit),
        max_per_address: config.max_connections_per_address,
        header_timeout: Duration::from_secs(config.client_timeout_secs.max(1)),
    });
    tasks.connections.spawn(listener::serve(
        listener,
        app,
        admission,
        tasks.shutdown.clone(),
        tasks.connections.clone(),
    ));
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
    let notifier = Arc::new(Notifier::from_env());
    let problems = config.problems();
    if !problems.is_empty() {
        let file = config
            .file
            .as_ref()
            .map_or("(built-in defaults)".into(), |f| f.display().to_string());
        let lines: Vec<String> = problems.iter().map(|p| format!("{file}: {p}")).collect();
        anyhow::bail!("the config is not valid:\n{}", lines.join("\n"));
    }
    media::init()?;
    super::logging::route_gstreamer();
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
    let tasks = Tasks {
        connections: TaskTracker::new(),
        shutdown: CancellationToken::new(),
    };
    let relay = new_relay(&config);
    let link_tasks = link::LinkTasks {
        tracker: tasks.connections.clone(),
        shutdown: tasks.shutdown.clone(),
    };
    let link = match &config.relay {
        Some(url) => link::remote(
            url.clone(),
            config.id.clone(),
            keepalive(&config),
            &link_tasks,
        ),
        None => link::embedded(&relay, config.id.clone(), &link_tasks),
    };
    let calls = CallManager::new(settings, link.outgoing.clone());
    tasks
        .connections
        .spawn(pump_signaling(link.incoming, Arc::clone(&calls)));
    let health = Arc::new(Health::new(
        Arc::clone(&relay),
        Arc::clone(&calls),
        Arc::clone(&encoders),
    ));

    // Ready only once the DTLS default certificate exists: the first call must not pay for it.
    let _ = warm_up.await;
    media::release_memory();
    let listener = bind(config.listen, "webrtcd").await?;
    let app = http::daemon_router(
        relay_state(&relay, &config, &tasks),
        Arc::clone(&calls),
        Arc::clone(&encoders),
        Arc::clone(&health),
        config.web_dir.clone(),
    );
    serve(listener, app, &config, &tasks);
    notifier.notify(&format!("READY=1\nSTATUS=serving on {}", config.listen));
    if let Some(interval) = notify::watchdog_interval() {
        tracing::info!(?interval, "pinging the systemd watchdog while healthy");
        tokio::spawn(watchdog(
            Arc::clone(&health),
            Arc::clone(&notifier),
            interval,
        ));
    }

    shutdown_signal().await;
    notifier.notify("STOPPING=1\nSTATUS=hanging up");
    tracing::info!("shutting down: ending {} calls", calls.session_count());
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    if !calls.shut_down(EndReason::Shutdown, SHUTDOWN_GRACE).await {
        tracing::warn!("calls still ending after {SHUTDOWN_GRACE:?}; exiting anyway");
    }
    // Shared encoders would linger for the next viewer; there is none to come.
    encoders.stop_all();
    // Teardowns run on blocking threads; bounded by the same grace.
    while media::live_pipelines() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the last hangups leave the signaling queue and the relay's sockets.
    tokio::time::sleep(Duration::from_millis(100)).await;
    tasks.shutdown.cancel();
    tasks.connections.close();
    let _ = tokio::time::timeout(LISTENER_GRACE, tasks.connections.wait()).await;
    tracing::info!(
        calls = calls.session_count(),
        pipelines = media::live_pipelines(),
        "stopped"
    );
    Ok(())
}

/// Pings systemd's watchdog every `interval` while the daemon is healthy; stops pinging
/// (so systemd restarts it) while it is not.
async fn watchdog(health: Arc<Health>, notifier: Arc<Notifier>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = true;
    loop {
        tick.tick().await;
        match health.check(false).await {
            Ok(()) => {
                if !healthy {
                    tracing::info!("healthy again; pinging the watchdog");
                }
                healthy = true;
                notifier.notify("WATCHDOG=1");
            }
            Err(why) => {
                if healthy {
                    tracing::error!("unhealthy, not pinging the systemd watchdog: {why}");
                }
                healthy = false;
            }
        }
    }
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
    // The link is gone for good: nobody can reach us, and /healthz must say so.
    calls.on_signaling_down();
}

pub async fn run_relay(config: Config) -> anyhow::Result<()> {
    let tasks = Tasks {
        connections: TaskTracker::new(),
        shutdown: CancellationToken::new(),
    };
    let relay = new_relay(&config);
    let listener = bind(config.listen, "webrtcd relay").await?;
    let app = http::relay_router(relay_state(&relay, &config, &tasks));
    serve(listener, app, &config, &tasks);
    shutdown_signal().await;
    tasks.shutdown.cancel();
    tasks.connections.close();
    let _ = tokio::time::timeout(LISTENER_GRACE, tasks.connections.wait()).await;
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
