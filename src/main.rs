use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use webrtcd::service::{self, api_client, config::Config};

#[derive(Parser)]
#[command(
    name = "webrtcd",
    version,
    about = "Turns a Linux device into a WebRTC endpoint"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: HTTP page + API, embedded relay, calls.
    Run(RunArgs),
    /// Run a standalone signaling relay.
    Relay {
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Accept this bearer token with the admin scope (repeatable; also $WEBRTCD_TOKENS,
        /// which other users cannot read in the process list).
        #[arg(long = "token")]
        tokens: Vec<String>,
        /// Accept this bearer token with the view scope: it may only reach peers that came
        /// with an admin token (repeatable).
        #[arg(long = "view-token")]
        view_tokens: Vec<String>,
        /// Serve HTTPS/WSS with this certificate chain (PEM) …
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// … and this private key (PEM). SIGHUP reloads both.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Seconds between pings of idle connections; silent for two intervals: closed.
        #[arg(long, default_value_t = 20)]
        keepalive_secs: u64,
        /// Share one registry with every relay started with the same Redis
        /// (`redis://HOST:6379`): peers on different relays reach each other.
        #[arg(long)]
        redis: Option<String>,
        /// Messages per second one connection may send on average (twice that at once).
        #[arg(long, default_value_t = 200.0)]
        messages_per_second: f64,
    },
    /// List cameras, microphones, speakers and every encoder candidate (works / missing / failed).
    Devices,
    /// Check the config file and its profile; print `file: key: what is wrong` per problem.
    CheckConfig {
        /// Default: $WEBRTCD_CONFIG, else /etc/webrtcd/webrtcd.toml.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Ask a running daemon to call PEER.
    Call {
        peer: String,
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api: String,
        #[arg(long, env = "WEBRTCD_TOKEN")]
        token: Option<String>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Default: $WEBRTCD_CONFIG, else /etc/webrtcd/webrtcd.toml if it exists, else built-in
    /// defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    listen: Option<SocketAddr>,
    #[arg(long)]
    id: Option<String>,
    /// Register with this remote relay (ws://host:port/signaling) instead of the embedded one
    /// (repeatable: the first that answers, then the next when it goes away).
    #[arg(long)]
    relay: Vec<String>,
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Where the DTLS certificate is kept.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Restrict ICE host candidates to this local address (repeatable).
    #[arg(long = "ice-address")]
    ice_addresses: Vec<IpAddr>,
    /// Serve RTSP here (`rtsp_listen`; port 0: any).
    #[arg(long)]
    rtsp_listen: Option<SocketAddr>,
}

impl RunArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut config = Config::load_or_default(Config::locate(self.config).as_deref())?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if self.id.is_some() {
            config.id = self.id;
        }
        if !self.relay.is_empty() {
            config.relay = self
                .relay
                .into_iter()
                .map(webrtcd::redact::SecretUrl::new)
                .collect();
        }
        if let Some(profile) = self.profile {
            config.profile = profile;
        }
        if self.state_dir.is_some() {
            config.state_dir = self.state_dir;
        }
        if !self.ice_addresses.is_empty() {
            config.ice.addresses = self.ice_addresses;
        }
        if self.rtsp_listen.is_some() {
            config.rtsp_listen = self.rtsp_listen;
        }
        Ok(config)
    }
}

/// glibc gives every thread that allocates its own malloc arena and never returns them. Each
/// call starts and stops a few dozen GStreamer streaming threads, so without a cap the RSS of a
/// long-running daemon creeps up by megabytes per call (measured: 55 MiB in a call, 171 MiB
/// after 20 sequential calls; with the cap it levels off near 77 MiB).
fn cap_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator tunable; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn print_devices() -> anyhow::Result<()> {
    use webrtcd::media::{self, encoder::ProbeResult};
    media::init()?;
    let devices = media::devices::list();
    for (title, class) in [
        ("Cameras", "Video/Source"),
        ("Microphones", "Audio/Source"),
        ("Speakers", "Audio/Sink"),
    ] {
        println!("{title}:");
        let found: Vec<_> = devices.iter().filter(|d| d.class.contains(class)).collect();
        if found.is_empty() {
            println!("  (none found)");
        }
        for d in found {
            println!("  {} {}", d.name, d.path.as_deref().unwrap_or(""));
            for f in d.formats.iter().take(12) {
                println!("      {f}");
            }
        }
    }
    println!("Encoders:");
    for p in media::encoder::probe_all() {
        let result = match &p.result {
            ProbeResult::Works => "works".to_string(),
            ProbeResult::Missing => "missing".to_string(),
            ProbeResult::Failed(why) => format!("failed: {why}"),
            ProbeResult::TimedOut => "timed out".to_string(),
        };
        println!(
            "  {:<5} {:<14} {result}",
            format!("{:?}", p.codec).to_lowercase(),
            p.encoder
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    cap_malloc_arenas();
    service::logging::init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => service::run_daemon(args.into_config()?).await,
            Command::Relay {
                listen,
                tokens,
                view_tokens,
                keepalive_secs,
                tls_cert,
                tls_key,
                redis,
                messages_per_second,
            } => {
                use service::auth::{Scope, Token};
                let tokens = tokens
                    .into_iter()
                    .map(|t| Token::new(t, Scope::Admin))
                    .chain(view_tokens.into_iter().map(|t| Token::new(t, Scope::View)))
                    .collect();
                let mut config = Config {
                    listen,
                    tokens,
                    keepalive_secs,
                    tls_cert,
                    tls_key,
                    relay_messages_per_second: messages_per_second,
                    relay_message_burst: (messages_per_second * 2.0).clamp(1.0, 1e9) as u32,
                    ..Config::default()
                };
                config.add_secrets(&service::config::Secrets::from_environment()?);
                let problems = config.problems();
                if !problems.is_empty() {
                    anyhow::bail!("{}", problems.join("\n"));
                }
                service::run_relay(config, redis).await
            }
            Command::CheckConfig { config } => {
                let checked =
                    tokio::task::spawn_blocking(move || service::check_config(config)).await?;
                for problem in &checked.problems {
                    println!("{problem}");
                }
                if !checked.problems.is_empty() {
                    std::process::exit(2);
                }
                println!("{}", checked.summary);
                Ok(())
            }
            Command::Devices => {
                tokio::task::spawn_blocking(print_devices).await??;
                Ok(())
            }
            Command::Call { peer, api, token } => {
                let body = serde_json::json!({ "to": peer }).to_string();
                let url = format!("{}/api/calls", api.trim_end_matches('/'));
                let (status, text) =
                    api_client::request("POST", &url, Some(body), token.as_deref()).await?;
                if status != 201 {
                    anyhow::bail!("{url}: HTTP {status}: {}", text.trim());
                }
                println!("{}", text.trim());
                Ok(())
            }
        }
    });
    // Do not wait for blocking threads still tearing down (they hold no state we need).
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    result
}
