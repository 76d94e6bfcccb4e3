//! Starting and stopping the daemon and the standalone relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::auth::Tokens;
use super::caps::ConnectionCaps;
use super::config::Config;
use super::guard::Guard;
use super::health::Health;
use super::http::{self, RelayState};
use super::listener;
use super::notify::{self, Notifier};
use super::tls::{self, Reloadable};
use crate::media::cameras::Cameras;
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

fn relay_state(
    relay: &Arc<Relay>,
    config: &Config,
    tasks: &Tasks,
    tls: Option<&Arc<Reloadable>>,
) -> RelayState {
    let mut limits = ws::ConnectionLimits::new(keepalive(config));
    limits.register_within = Duration::from_secs(config.client_timeout_secs.max(1));
    RelayState {
        relay: Arc::clone(relay),
        limits,
        tokens: Arc::new(Tokens::new(config.tokens.clone())),
        guard: Arc::new(Guard::new(
            &config.allowed_origins,
            &config.allowed_hosts,
            tls.cloned(),
        )),
        tracker: tasks.connections.clone(),
        shutdown: tasks.shutdown.clone(),
    }
}

/// The listener's certificate when TLS is configured: loaded (or made) now, its fingerprint
/// logged so a user can check what the browser shows before accepting it.
fn load_tls(config: &Config) -> anyhow::Result<Option<Arc<Reloadable>>> {
    let Some(source) = config.cert_source() else {
        return Ok(None);
    };
    let (tls, loaded) = Reloadable::new(source)?;
    tracing::info!(
        fingerprint = %loaded.fingerprint,
        names = %loaded.names.join(", "),
        "TLS certificate (SHA-256)"
    );
    Ok(Some(tls))
}

/// Short-lived TURN credentials, when `turn_secret` is set: for the servers listed without
/// credentials of their own.
pub(super) fn turn_rest(config: &Config) -> Option<crate::session::turn::TurnRest> {
    let secret = config.ice.turn_secret.clone()?;
    let servers = config
        .ice
        .turn_servers
        .iter()
        .map(|s| s.expose().to_string())
        .filter(|s| url::Url::parse(s).is_ok_and(|u| u.username().is_empty()))
        .collect();
    Some(crate::session::turn::TurnRest {
        secret,
        ttl: Duration::from_secs(config.ice.turn_credential_ttl_secs),
        servers,
    })
}

/// The addresses served, and which one speaks TLS.
struct Listeners {
    /// `listen`: HTTPS when TLS is on and there is no `tls_listen`.
    main: (TcpListener, bool),
    /// `tls_listen`, beside a plain-HTTP `listen`.
    extra_tls: Option<TcpListener>,
}

impl Listeners {
    async fn bind(config: &Config, what: &str) -> anyhow::Result<Listeners> {
        let tls = config.tls_enabled();
        let main_is_tls = tls && config.tls_listen.is_none();
        let main = bind(config.listen).await?;
        let extra_tls = match config.tls_listen {
            Some(addr) if tls => Some(bind(addr).await?),
            _ => None,
        };
        // Announced once all are bound: whoever reads the first line may use any of them.
        announce(&main, what, main_is_tls)?;
        if let Some(extra) = &extra_tls {
            announce(extra, what, true)?;
        }
        Ok(Listeners {
            main: (main, main_is_tls),
            extra_tls,
        })
    }

    /// The port HTTPS is served on, if any.
    fn https_port(&self) -> Option<u16> {
        let port = |l: &TcpListener| l.local_addr().ok().map(|a| a.port());
        match (&self.main, &self.extra_tls) {
            (_, Some(extra)) => port(extra),
            ((main, true), None) => port(main),
            _ => None,
        }
    }

    fn serve(
        self,
        app: axum::Router,
        config: &Config,
        tasks: &Tasks,
        tls: Option<&Arc<Reloadable>>,
    ) -> anyhow::Result<()> {
        let server_config = tls.map(|t| t.server_config()).transpose()?;
        let guard = Arc::new(Guard::new(
            &config.allowed_origins,
            &config.allowed_hosts,
            tls.cloned(),
        ));
        let secure = |server_config: Arc<rustls::ServerConfig>| listener::Secure {
            config: server_config,
            guard: Arc::clone(&guard),
        };
        let (main, main_is_tls) = self.main;
        let main_tls = server_config.clone().filter(|_| main_is_tls).map(secure);
        serve(main, app.clone(), config, tasks, main_tls);
        if let Some(extra) = self.extra_tls {
            serve(extra, app, config, tasks, server_config.map(secure));
        }
        Ok(())
    }
}

/// Every task that serves a connection, and the signal that ends them.
struct Tasks {
    connections: TaskTracker,
    shutdown: CancellationToken,
}

/// Serves `app` on `listener` within the configured connection bounds, until shutdown.
fn serve(
    listener: TcpListener,
    app: axum::Router,
    config: &Config,
    tasks: &Tasks,
    tls: Option<listener::Secure>,
) {
    let admission = listener::Admission::with_reserve(listener::Limits {
        max_connections: ConnectionCaps::of(config).http,
        max_per_address: config.max_connections_per_address,
        header_timeout: Duration::from_secs(config.client_timeout_secs.max(1)),
    });
    tasks.connections.spawn(listener::serve(
        listener,
        app,
        admission,
        tls,
        tasks.shutdown.clone(),
        tasks.connections.clone(),
    ));
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Tests and scripts read the `listening on` line.
fn announce(listener: &TcpListener, what: &str, tls: bool) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let scheme = if tls { "https" } else { "http" };
    println!("{what} listening on {scheme}://{local}");
    tracing::info!("{what} listening on {scheme}://{local}");
    Ok(())
}

pub async fn run_daemon(config: Config) -> anyhow::Result<()> {
    let signals = Signals::install();
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
    if config.ice.turn_secret.is_some()
        && config.tokens.is_empty()
        && !config.listen.ip().is_loopback()
    {
        // /api/ice-servers hands TURN credentials to whoever may use the page.
        tracing::warn!(
            "turn_secret is set and no tokens are: anyone who reaches {} gets TURN credentials; set tokens",
            config.listen
        );
    }
    let tls = load_tls(&config)?;
    let relay_tls = if config.relay.is_empty() {
        None
    } else {
        Some(tls::client_config(config.relay_ca.as_deref())?)
    };
    media::init()?;
    super::logging::route_gstreamer();
    let profile = Arc::new(Profile::load(&config.profile)?);
    profile.check_devices(&config.profile)?;
    tracing::info!(profile = %profile.name, file = %config.profile.display(), "profile loaded");
    let identity = DtlsIdentity::load_or_create(&config.state_dir())?;
    tracing::info!(fingerprint = %identity.fingerprint(), "DTLS identity (ECDSA P-256)");
    let warm_up = tokio::task::spawn_blocking(crate::session::warm_up::warm_up);
    // Probing runs short real encodes: off the async threads, before we say we are ready.
    let probe_profile = Arc::clone(&profile);
    let (cameras, _) = tokio::task::spawn_blocking(move || Cameras::probe(&probe_profile))
        .await
        .context("encoder probing")??;
    let first = cameras.get(None).context("the profile has no camera")?;
    let settings = CallSettings {
        identity: Arc::new(identity),
        encoders: Arc::clone(&first.encoders),
        profile: Arc::clone(&first.profile),
        ice_addresses: config.ice.addresses.clone(),
        stun_server: config.ice.stun_server.clone(),
        turn_servers: config.ice.turn_servers.clone(),
        ice_recovery: Duration::from_secs(config.ice_recovery_secs),
        whep_connect_timeout: Duration::from_secs(config.connect_timeout_secs.max(1)),
        turn_rest: turn_rest(&config),
        relay_only: config.ice_transport_policy == super::config::TransportPolicy::Relay,
    };
    let tasks = Tasks {
        connections: TaskTracker::new(),
        shutdown: CancellationToken::new(),
    };
    // Codecs whose probe ran out of time (a busy start) are probed again later.
    for camera in cameras.all() {
        tasks
            .connections
            .spawn(Arc::clone(&camera.encoders).keep_reprobing(tasks.shutdown.clone()));
    }
    let relay = new_relay(&config);
    // The link stops on its own signal, after the calls: their hangups leave through it.
    let link_tasks = link::LinkTasks {
        tracker: TaskTracker::new(),
        shutdown: CancellationToken::new(),
    };
    let link = match relay_tls {
        Some(tls) => link::remote(
            link::RemoteRelay {
                urls: config.relay.clone(),
                token: config.relay_token.clone(),
                tls,
            },
            config.id.clone(),
            keepalive(&config),
            &link_tasks,
        ),
        None => link::embedded(&relay, config.id.clone(), &link_tasks),
    };
    let calls = CallManager::new(settings, Arc::clone(&cameras), link.outgoing.clone());
    let watching = super::watching::Watching::start(&config, &cameras, &calls).await?;
    // Listening to the calls before the first can start.
    super::hooks::start(
        &config.hooks,
        &calls,
        &tasks.connections,
        tasks.shutdown.clone(),
    );
    if let Some(bridge) = &config.bridge {
        super::bridge::start(
            bridge,
            Arc::clone(&calls),
            &tasks.connections,
            tasks.shutdown.clone(),
        )?;
    }
    tasks
        .connections
        .spawn(pump_signaling(link.incoming, Arc::clone(&calls)));
    let health = Arc::new(Health::new(
        Arc::clone(&relay),
        Arc::clone(&calls),
        Arc::clone(&cameras),
    ));

    // Ready only once webrtcbin is warmed up: the first call must not pay for it.
    let _ = warm_up.await;
    media::release_memory();
    let listeners = Listeners::bind(&config, "webrtcd").await?;
    let publishing = super::whip::start(&config.publish, &calls)?;
    let app = http::daemon_router(
        relay_state(&relay, &config, &tasks, tls.as_ref()),
        http::DaemonParts {
            calls: Arc::clone(&calls),
            health: Arc::clone(&health),
            publishing: Arc::clone(&publishing),
            whep_max_per_address: config.whep_max_per_address,
            watching: Arc::clone(&watching),
        },
        config.web_dir.clone(),
        listeners.https_port(),
        super::ice_servers::IceServers {
            stun: config.ice.stun_server.clone(),
            turn_rest: turn_rest(&config),
            relay_only: config.ice_transport_policy == super::config::TransportPolicy::Relay,
        },
    );
    listeners.serve(app, &config, &tasks, tls.as_ref())?;
    let rtsp_mounts = match config.rtsp_listen {
        Some(listen) => Some(
            super::rtsp::listen(
                &config,
                listen,
                &cameras,
                &tasks.connections,
                &tasks.shutdown,
            )
            .await?,
        ),
        None => None,
    };
    let profile_reload = super::reload::ProfileReload {
        file: config.profile.clone(),
        calls: Arc::clone(&calls),
        rtsp: rtsp_mounts,
        watching: Arc::clone(&watching),
        tracker: tasks.connections.clone(),
        shutdown: tasks.shutdown.clone(),
    };
    tasks.connections.spawn(reload_on_sighup(
        signals.hangup,
        tls.clone(),
        Some(profile_reload),
        tasks.shutdown.clone(),
    ));
    notifier.notify(&format!("READY=1\nSTATUS=serving on {}", config.listen));
    // Stopped as shutdown starts: systemd's stop timeout bounds that, not the watchdog.
    let watchdog_stop = CancellationToken::new();
    if let Some(interval) = notify::watchdog_interval() {
        tracing::info!(?interval, "pinging the systemd watchdog while healthy");
        tasks.connections.spawn(watchdog(
            Arc::clone(&health),
            Arc::clone(&notifier),
            interval,
            watchdog_stop.clone(),
        ));
    }

    signals.shutdown.wait().await;
    watchdog_stop.cancel();
    notifier.notify("STOPPING=1\nSTATUS=hanging up");
    // Publications first: each tells its endpoint (DELETE) before the calls end.
    publishing.stop(SHUTDOWN_GRACE).await;
    tracing::info!("shutting down: ending {} calls", calls.session_count());
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    if !calls.shut_down(EndReason::Shutdown, SHUTDOWN_GRACE).await {
        tracing::warn!("calls still ending after {SHUTDOWN_GRACE:?}; exiting anyway");
    }
    watching.stop().await;
    // Shared encoders would linger for the next viewer; there is none to come.
    cameras.stop_all();
    // Teardowns run on blocking threads; bounded by the same grace.
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    if !media::work::settle(remaining).await {
        tracing::warn!("pipelines still stopping after {SHUTDOWN_GRACE:?}; exiting anyway");
    }
    // The link sends the last hangups on, then leaves the relay; the relay's connections
    // then send what is queued for them as they close.
    link_tasks.shutdown.cancel();
    link_tasks.tracker.close();
    let _ = tokio::time::timeout(LISTENER_GRACE, link_tasks.tracker.wait()).await;
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
async fn watchdog(
    health: Arc<Health>,
    notifier: Arc<Notifier>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
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

/// The standalone relay; with `redis`, one of a cluster sharing that Redis.
pub async fn run_relay(config: Config, redis: Option<String>) -> anyhow::Result<()> {
    let signals = Signals::install();
    let tasks = Tasks {
        connections: TaskTracker::new(),
        shutdown: CancellationToken::new(),
    };
    let relay = new_relay(&config);
    if let Some(url) = redis {
        let node = crate::relay::cluster::start(
            Arc::clone(&relay),
            &url,
            tasks.shutdown.clone(),
            &tasks.connections,
        )?;
        // The URL may hold a password: not printed.
        tracing::info!(%node, "relay cluster member");
    }
    let tls = load_tls(&config)?;
    let listeners = Listeners::bind(&config, "webrtcd relay").await?;
    let app = http::relay_router(relay_state(&relay, &config, &tasks, tls.as_ref()));
    listeners.serve(app, &config, &tasks, tls.as_ref())?;
    tasks.connections.spawn(reload_on_sighup(
        signals.hangup,
        tls.clone(),
        None,
        tasks.shutdown.clone(),
    ));
    signals.shutdown.wait().await;
    tasks.shutdown.cancel();
    tasks.connections.close();
    let _ = tokio::time::timeout(LISTENER_GRACE, tasks.connections.wait()).await;
    Ok(())
}

/// SIGHUP reads the certificate again: the next handshake gets the new one, connections and
/// calls already running are untouched. A certificate that does not load leaves the old one.
/// Without TLS there is nothing to reload, but SIGHUP must still not kill the daemon. The
/// daemon re-reads its profile too (`service::reload`).
async fn reload_on_sighup(
    hangup: Option<Signal>,
    tls: Option<Arc<Reloadable>>,
    profile: Option<super::reload::ProfileReload>,
    shutdown: CancellationToken,
) {
    let Some(mut hangup) = hangup else {
        tracing::warn!("cannot install the SIGHUP handler: certificates will not reload");
        return;
    };
    loop {
        tokio::select! {
            _ = hangup.recv() => {}
            _ = shutdown.cancelled() => return,
        }
        if let Some(profile) = &profile {
            profile.reload().await;
        }
        let Some(tls) = &tls else {
            tracing::info!("SIGHUP: no TLS certificate to reload");
            continue;
        };
        match tls.reload() {
            Ok(loaded) => tracing::info!(
                fingerprint = %loaded.fingerprint,
                names = %loaded.names.join(", "),
                "TLS certificate reloaded (SHA-256)"
            ),
            Err(err) => tracing::error!("TLS certificate not reloaded, keeping the old one: {err}"),
        }
    }
}

/// The signals the daemon and the relay act on, caught from their first moment: one that
/// arrives while they start (a test or systemd stopping them right after `listening on`) must
/// not meet the default action, which kills without a clean exit.
struct Signals {
    shutdown: ShutdownSignal,
    hangup: Option<Signal>,
}

impl Signals {
    fn install() -> Signals {
        Signals {
            shutdown: ShutdownSignal::install(),
            hangup: signal(SignalKind::hangup()).ok(),
        }
    }
}

/// SIGTERM or SIGINT.
struct ShutdownSignal(Option<(Signal, Signal)>);

impl ShutdownSignal {
    fn install() -> ShutdownSignal {
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => ShutdownSignal(Some((term, int))),
            _ => {
                tracing::warn!("cannot install signal handlers");
                ShutdownSignal(None)
            }
        }
    }

    async fn wait(self) {
        let Some((mut term, mut int)) = self.0 else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    }
}
