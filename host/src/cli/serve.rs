//! `host serve`.

use super::{ApiArgs, RuntimeArgs};
use crate::control::{Catalog, Control, ControlConfig};
use crate::plugins::Registry;
use crate::server::{AppState, router};
use crate::store::Store;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, env = "HOST_PORT", default_value_t = 4200)]
    port: u16,
    /// Where the embedded database lives (default: the user's data dir).
    #[arg(long, env = "HOST_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Keep everything in PostgreSQL instead (`postgres://user:password@host:port/db`),
    /// so several `host serve` replicas can share it. Without it, the embedded
    /// redb file in the data dir.
    #[arg(long, env = "HOST_DATABASE_URL", conflicts_with = "data_dir")]
    database_url: Option<String>,
    /// With --database-url: where the other replicas reach this one's API, so
    /// that while it leads they forward their writes here and one writer
    /// batches them all. Default: http(s)://HOST:PORT as bound (none when bound
    /// to every interface); empty: never forward here.
    #[arg(long, env = "HOST_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// SCHEDULED runs this many seconds past their time are marked Late.
    #[arg(long, default_value_t = 15)]
    late_after_seconds: u64,
    /// Seconds a silent worker's runs stay DISCONNECTED (outcome unknown,
    /// still the worker's to report) before they are marked CRASHED. Only
    /// time this server was up and sweeping counts.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    worker_lost_after: u64,
    /// Writes are refused (HTTP 507) while the data dir's disk has less free
    /// space than this, so the database never fills the disk mid-commit.
    #[arg(long, default_value_t = crate::store::DEFAULT_MIN_FREE_BYTES >> 20)]
    min_free_disk_mb: u64,
    /// Seconds a connection has to send a request's headers, counted from
    /// when it opened or its previous answer ended: slow and idle
    /// connections are closed after it. Long answers (claims' long-polls,
    /// event streams) are not cut.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_timeout_seconds: u64,
    /// Connections served at once; past it a new one is answered 503 and
    /// closed. Default: 4096, or half the open-file limit if that is lower.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: Option<u64>,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs
    /// --tls-key. Reloaded on SIGHUP and when the file changes.
    #[arg(long, env = "HOST_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "HOST_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Log lines kept per flow run (workers have their own, smaller, limits).
    #[arg(long, default_value_t = crate::control::ControlConfig::default().max_log_lines_per_run)]
    max_log_lines_per_run: u64,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("host")
}

pub async fn run(args: ServeArgs, api: &ApiArgs) -> anyhow::Result<ExitCode> {
    let runtime = &args.runtime;
    let open_files = super::raise_open_file_limit();
    crate::server::limit_event_streams(open_files);
    tracing::debug!(open_files, "open-file limit");
    let address = format!("{}:{}", args.host, args.port);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))?;
    let local = listener.local_addr()?;
    let certificate = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::ServerCertificate::load(cert, key)?),
        _ => None,
    };
    let scheme = if certificate.is_some() {
        "https"
    } else {
        "http"
    };
    let store = match (&args.database_url, args.data_dir) {
        (Some(url), _) if !url.is_empty() => {
            let advertised = advertised_url(args.advertise_url.as_deref(), scheme, local)?;
            Store::connect(url, advertised).await
        }
        (_, data_dir) => {
            let data_dir = data_dir.unwrap_or_else(default_data_dir);
            Store::open_with(&data_dir.join("host.redb"), args.min_free_disk_mb << 20)
        }
    }
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let indexed = store
        .upgrade_indexes()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if indexed > 0 {
        tracing::info!(runs = indexed, "indexed the runs an older build stored");
    }
    let location = store.location();
    // The server only needs each plugin's description; the runtime is dropped
    // after loading so it costs no memory while serving.
    let catalog = {
        let plugin_runtime = runtime.runtime()?;
        let registry = Registry::load(&plugin_runtime, runtime.plugin_dir.as_deref()).await?;
        for failure in registry.failures() {
            tracing::warn!(%failure, "plugin not available");
        }
        Catalog::from_registry(&registry)
    };
    release_freed_memory();
    let control = Control::new(
        store,
        catalog,
        ControlConfig {
            late_after: Duration::from_secs(args.late_after_seconds),
            worker_lost_after: Duration::from_secs(args.worker_lost_after),
            max_log_lines_per_run: args.max_log_lines_per_run,
            ..ControlConfig::default()
        },
    );
    let scheduler = control.spawn_scheduler();
    let token = api.token()?;
    // Open beside named tokens, the server would let anybody do what the
    // tokens were made to restrict.
    if token.is_none() && control.has_tokens().map_err(|e| anyhow::anyhow!("{e}"))? {
        anyhow::bail!(
            "the store holds named API tokens (`host token ls`): without its bootstrap token this server would be open to everyone; set HOST_API_TOKEN or --api-token-file"
        );
    }
    if token.is_none() && !local.ip().is_loopback() {
        tracing::warn!(address = %local, "listening beyond loopback without an API token: whoever reaches this address, and any web page through DNS rebinding, can use the API; set --api-token-file");
    }
    let state = AppState::new(control, token)
        .bound_to(local)
        .served_over_tls(certificate.is_some())
        .forwarding_with(&api.client_tls()?);
    let app = router(state);
    let tls = match &certificate {
        Some(certificate) => {
            let _reloader = certificate.spawn_reloader();
            Some(certificate.acceptor()?)
        }
        None => None,
    };
    let mut limits = crate::server::Limits::for_open_files(open_files);
    limits.header_timeout = Duration::from_secs(args.header_timeout_seconds);
    if let Some(max) = args.max_connections {
        limits.max_connections = usize::try_from(max).unwrap_or(usize::MAX);
    }
    // Tests and scripts wait for this line to know the server is up.
    println!("host serve: listening on {scheme}://{local} (data in {location})");
    // Whoever read the first line may have closed the pipe since.
    let _ = writeln!(
        std::io::stdout(),
        "host serve: web UI at {scheme}://{local}/"
    );
    tracing::info!(%local, max_connections = limits.max_connections, header_timeout_seconds = args.header_timeout_seconds, "listening");
    crate::server::serve(listener, app, limits, tls, shutdown_signal()).await;
    scheduler.abort();
    Ok(ExitCode::SUCCESS)
}

/// Where the other replicas reach this one: as given (empty: nowhere), else
/// the bound address (https when serving TLS), unless that is every interface (which one would they
/// use?).
fn advertised_url(
    given: Option<&str>,
    scheme: &str,
    local: std::net::SocketAddr,
) -> anyhow::Result<Option<String>> {
    match given.map(|url| url.trim().trim_end_matches('/')) {
        Some("") => Ok(None),
        Some(url) => match reqwest::Url::parse(url) {
            Ok(parsed) if ["http", "https"].contains(&parsed.scheme()) && parsed.has_host() => {
                Ok(Some(url.to_string()))
            }
            _ => anyhow::bail!(
                "--advertise-url: {url:?} is not an http(s) URL; expected e.g. http://10.0.0.5:4200"
            ),
        },
        None if local.ip().is_unspecified() => {
            tracing::info!(%local, "bound to every interface: not advertising an address, so the other replicas do not forward writes here (set --advertise-url)");
            Ok(None)
        }
        None => Ok(Some(format!("{scheme}://{local}"))),
    }
}

/// SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let signal = tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = terminate => "SIGTERM",
    };
    tracing::info!(signal, "received {signal}; shutting down");
}

/// Gives the heap the plugin runtime used back to the OS; without this the
/// freed arenas stay in the idle server's RSS.
#[allow(unsafe_code)]
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the OS; no pointers change.
    unsafe {
        libc::malloc_trim(0);
    }
}
