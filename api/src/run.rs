//! Start-up: open the engine, bootstrap an empty data directory, listen, serve until a signal.

use std::io::Write;
use std::path::Path;

use tokio::net::TcpListener;

use latchkey_engine::Engine;

use latchkey_cluster::partitions::Layout;

use crate::cluster::{ClusterNode, NodeConfig};
use crate::config::{LogFormat, ServeArgs};
use crate::server::{shutdown_signal, AppState};

/// Logs to stderr with `filter` (a level or tracing directives, checked when the flags were
/// parsed) as text or one JSON object per line. Safe to call more than once.
pub fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LossyStderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        // The request's span (its method, path and request id) flattened into each line.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// stderr that drops log lines when stderr is gone (a closed pipe must not kill the server;
/// tracing reports a failed write with `eprintln!`, which panics).
struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// The admin token's file in the data directory, written on the first start when no token is given.
pub const ADMIN_TOKEN_FILE: &str = "admin.pat";

/// Runs the server; the error is the one line `latchkey` prints before exiting with 1.
pub async fn run(args: ServeArgs) -> Result<(), String> {
    crate::metrics::install();
    let token = args.bootstrap_token()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
        _ => None,
    };
    let node = match (&args.cluster, &args.node_id) {
        (Some(nats), Some(node_id)) => Some(std::sync::Arc::new(
            ClusterNode::start(NodeConfig {
                nats: nats.clone(),
                node_id: node_id.clone(),
                layout: Layout {
                    partitions: args.cluster_partitions,
                    replicas: args.cluster_replicas,
                },
                engine: args.engine_config(),
            })
            .await?,
        )),
        _ => None,
    };
    let engine = match &node {
        Some(node) => node.engine.clone(),
        None => Engine::open(args.engine_config())
            .await
            .map_err(|e| open_failure(&e))?,
    };
    bootstrap(&engine, node.as_deref(), &args.data_dir, token).await?;
    let shutdown = shutdown_signal().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    // One signal stops both listeners.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let leaving = node.clone();
    tokio::spawn(async move {
        shutdown.await;
        // A cluster node leaves first: its partitions move while it drains, and calls that
        // reach it meanwhile are retried on their new owner.
        if let Some(node) = leaving {
            if let Err(e) = node.leave().await {
                tracing::warn!("{e}");
            }
        }
        let _ = stop.send(true);
    });
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let management = match args.management_listen {
        Some(at) => {
            let listener = TcpListener::bind(at)
                .await
                .map_err(|e| format!("cannot listen on {at} (management): {e}"))?;
            let bound = listener
                .local_addr()
                .map_err(|e| format!("cannot read the management address: {e}"))?;
            tracing::info!("management (health, metrics) listening on http://{bound}");
            let app = crate::server::management_router(engine.clone());
            let stopping = until_stopped(stopped.clone());
            Some(tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopping)
                    .await
            }))
        }
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        data_dir = %args.data_dir.display(),
        store = ?args.store,
        durability = ?args.durability,
        "latchkey listening on {scheme}://{addr}"
    );
    let state = AppState {
        engine: engine.clone(),
        router: node.as_ref().map(|node| node.router.clone()),
    };
    let app = crate::server::app_for(state, management.is_none());
    let stopping = until_stopped(stopped);
    match tls {
        Some(config) => {
            let listener = crate::tls::TlsListener::new(listener, config)
                .map_err(|e| format!("cannot listen with TLS: {e}"))?;
            crate::server::serve_with(engine, app, listener, stopping).await
        }
        None => {
            let listener = crate::server::nodelay(listener);
            crate::server::serve_with(engine, app, listener, stopping).await
        }
    }
    .map_err(|e| format!("server failed: {e}"))?;
    if let Some(management) = management {
        match management.await {
            Ok(Err(e)) => tracing::warn!("management listener: {e}"),
            Err(e) => tracing::warn!("management listener: {e}"),
            Ok(Ok(())) => {}
        }
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The line for a store that does not open: the store's own message, and — unless the cause is
/// plainly something else (another process holds it, an unknown schema, a foreign directory, the
/// other store engine's directory) —
/// what to do about a damaged one. The server never starts on a store it cannot open.
fn open_failure(e: &latchkey_engine::OpenError) -> String {
    let message = e.to_string();
    let refused = matches!(e, latchkey_engine::OpenError::Store(store) if store.is_refusal());
    if refused {
        return message;
    }
    format!(
        "{message}\nlatchkey: if the store is damaged, keep it for analysis and restore the last backup \
         into a new directory: latchkey restore --from FILE --data-dir NEW_DIR"
    )
}

/// First start only: the admin token is the configured one (`--bootstrap-token`,
/// `LATCHKEY_BOOTSTRAP_TOKEN` or the file of `--bootstrap-token-file`) if set, else a random one
/// written to `<data-dir>/admin.pat` (mode 0600) *before* it is committed, so a crash in between
/// can never leave a token nobody knows.
async fn bootstrap(
    engine: &Engine,
    node: Option<&ClusterNode>,
    data_dir: &Path,
    given: Option<String>,
) -> Result<(), String> {
    if engine.default_org_id().is_some() {
        tracing::info!("data directory already bootstrapped; admin token unchanged");
        return Ok(());
    }
    let token = match given {
        Some(token) => {
            tracing::info!("bootstrapping: admin token taken from the configuration");
            token
        }
        None => {
            let token = latchkey_engine::generate_token();
            let path = data_dir.join(ADMIN_TOKEN_FILE);
            write_secret(&path, &token)
                .map_err(|e| format!("cannot write admin token to {}: {e}", path.display()))?;
            tracing::info!("bootstrapping: admin token written to {}", path.display());
            token
        }
    };
    match node {
        Some(node) => node.bootstrap(Some(token)).await,
        None => engine.bootstrap(Some(token)).await,
    }
    .map_err(|e| format!("bootstrap failed: {e}"))?;
    Ok(())
}

fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Turns transparent huge pages off for this process (Linux). mimalloc asks for huge pages
/// (`MADV_HUGEPAGE`), and with the kernel's common `defrag=madvise` setting a page fault in such a
/// region may compact memory synchronously: measured as 50–100 ms stalls of every request, the
/// whole open-loop p99 (60 ms → 6 ms at 15,500 req/s once off; docs/performance.md). Called first
/// thing by the server binaries; an embedding program decides this for itself.
pub fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with PR_SET_THP_DISABLE takes no pointers; failure only keeps THP on.
        let failed = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0;
        if failed {
            eprintln!(
                "latchkey: could not turn transparent huge pages off (latency spikes possible)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    #[test]
    fn transparent_huge_pages_are_off_afterwards() {
        super::disable_transparent_huge_pages();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        // Kernels since 5.0 report the process's flag; older ones have no such line.
        if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
            assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
        }
    }
}
