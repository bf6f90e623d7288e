//! The command line: `latchkey [serve|backup|restore|verify|config check|healthcheck|completions|
//! users|orgs] [flags]`. Every setting is a flag with an environment variable and a default (`--help` lists
//! all three), may also come from the configuration file (`config_file.rs`: flag, then variable,
//! then file, then default), and may stand before or after the subcommand (`latchkey --data-dir X
//! serve` and `latchkey serve --data-dir X` are the same). Invalid values are refused at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use latchkey_engine::{Config, Durability, Medium};

#[derive(Debug, Parser)]
#[command(
    name = "latchkey",
    version = crate::VERSION,
    about = "Latchkey: a ZITADEL v2-compatible user lifecycle engine"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The server's settings: global, so they are read wherever they stand on the line.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Write a backup: online from a running server (--server), or from a stopped --data-dir.
    Backup(crate::operate::BackupArgs),
    /// Restore a backup into an empty --data-dir.
    Restore(crate::operate::RestoreArgs),
    /// Check a stopped --data-dir: snapshots against event logs, indexes against records
    /// (exit 3 when problems are found).
    Verify,
    /// Move a stopped embedded data directory (or a backup) into a new, empty cluster, before
    /// its nodes start (docs/cluster.md).
    Migrate(crate::migrate::MigrateArgs),
    /// The configuration: `latchkey config check` shows every setting, its value and where it
    /// came from, and fails on an invalid one.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Exit 0 when the server at --url answers /readyz with 200 (for container health checks).
    Healthcheck {
        /// The server's base URL; by default the --management-listen address, else --listen.
        #[arg(long)]
        url: Option<String>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Users on a running server: list, get, lock, unlock (exit 4 when the server refuses).
    Users {
        #[command(subcommand)]
        action: crate::admin_cli::UsersAction,
        #[command(flatten)]
        client: crate::admin_cli::ClientArgs,
    },
    /// Organizations on a running server: create.
    Orgs {
        #[command(subcommand)]
        action: crate::admin_cli::OrgsAction,
        #[command(flatten)]
        client: crate::admin_cli::ClientArgs,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum ConfigAction {
    /// Validate the settings and print them with their sources.
    Check,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log pipelines).
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// A 2xx means the change is fsync'd (group commit).
    Sync,
    /// Acknowledge once applied; flush every --flush-interval (a crash may lose that window).
    Async,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreArg {
    /// sled 0.34 (the default): its open and its memory grow with the store.
    Sled,
    /// redb 4: opens in a millisecond at any size; its memory is its cache (--cache-mb).
    Redb,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the log says which).
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// Where the store lives.
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_DATA_DIR",
        default_value = "./latchkey-data"
    )]
    pub data_dir: PathBuf,
    /// The embedded store the write-ahead log checkpoints into, chosen when the data directory
    /// is created: a directory of the other store is refused (move it with backup and restore).
    /// redb opens at once at any size and its memory is its cache; sled recovers its log and
    /// loads a page table that grow with the store (docs/storage-engines.md).
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_STORE",
        value_enum,
        default_value = "sled"
    )]
    pub store: StoreArg,
    /// When a write is acknowledged.
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_DURABILITY",
        value_enum,
        default_value = "sync"
    )]
    pub durability: DurabilityArg,
    /// Flush interval in async mode (e.g. 10ms).
    #[arg(long, global = true, env = "LATCHKEY_FLUSH_INTERVAL", default_value = "10ms", value_parser = humantime::parse_duration)]
    pub flush_interval: Duration,
    /// Passivate a user's actor after this much idleness (e.g. 60s, 5m).
    #[arg(long, global = true, env = "LATCHKEY_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// How long a request waits for a user's actor before DeadlineExceeded.
    #[arg(long, global = true, env = "LATCHKEY_CALL_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub call_timeout: Duration,
    /// How long a graceful shutdown waits for the store to close (sync, checkpoint, flush) before
    /// it gives up and exits; the next start then replays the log, as after a crash.
    #[arg(long, global = true, env = "LATCHKEY_CLOSE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub close_timeout: Duration,
    /// Bound of the store's page cache, in MiB (kept roughly by sled, exactly by redb): with the
    /// active users, what a server's memory grows to on a large store.
    #[arg(long, global = true, env = "LATCHKEY_CACHE_MB", default_value_t = 1024)]
    pub cache_mb: u64,
    /// Keys the write-ahead log keeps in memory before it checkpoints them into sled: more means
    /// fewer checkpoints, more memory, and a longer log to replay at start.
    #[arg(long, global = true, env = "LATCHKEY_CHECKPOINT_ENTRIES", default_value_t = latchkey_engine::DEFAULT_CHECKPOINT_ENTRIES)]
    pub checkpoint_entries: usize,
    /// Threads that verify password hashes (0 = one per core). Fewer leaves cores to everything
    /// else while a wave of wrong passwords keeps them busy; logins are bounded by them.
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_CHECK_THREADS",
        default_value_t = 0
    )]
    pub check_threads: usize,
    /// Password verifications that may wait for a thread beyond those running; a check beyond
    /// them is refused at once (PASSWORD-CHECKS-BUSY, 429).
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_CHECK_QUEUE",
        default_value_t = 64
    )]
    pub check_queue: usize,
    /// Log filter: a level (error, warn, info, debug, trace, off) or tracing directives
    /// (`info,latchkey_engine=debug`). At debug, one line per request with its request id.
    #[arg(long, global = true, env = "LATCHKEY_LOG", default_value = "info", value_parser = log_filter)]
    pub log: String,
    /// Log line format.
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// The admin token of the first start (a random one is written to <data-dir>/admin.pat
    /// otherwise). Ignored once the data directory is bootstrapped.
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_BOOTSTRAP_TOKEN",
        hide_env_values = true,
        conflicts_with = "bootstrap_token_file"
    )]
    pub bootstrap_token: Option<String>,
    /// A file holding that token (e.g. a mounted secret).
    #[arg(long, global = true, env = "LATCHKEY_BOOTSTRAP_TOKEN_FILE")]
    pub bootstrap_token_file: Option<PathBuf>,
    /// A separate plain-HTTP listener for /healthz, /readyz and /metrics (which then leave the
    /// main port), e.g. 127.0.0.1:9000 — for probes and scrapers, and for health checks when
    /// the main port speaks TLS.
    #[arg(long, global = true, env = "LATCHKEY_MANAGEMENT_LISTEN")]
    pub management_listen: Option<SocketAddr>,
    /// A PEM certificate chain: with --tls-key, the listener speaks TLS (HTTP/2 by ALPN for gRPC).
    #[arg(long, global = true, env = "LATCHKEY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, global = true, env = "LATCHKEY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A TOML file of these settings, keys named as the flags (below flags and variables).
    #[arg(long, global = true, env = "LATCHKEY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Cluster mode: the NATS servers (comma-separated URLs, e.g. nats://10.0.0.1:4222). Users
    /// are spread over the nodes, their state kept in JetStream; the data directory holds this
    /// node's view of it (docs/cluster.md). Needs --node-id.
    #[arg(long, global = true, env = "LATCHKEY_CLUSTER", requires = "node_id")]
    pub cluster: Option<String>,
    /// Cluster mode: this node's name, unique in the cluster and stable across its restarts.
    #[arg(long, global = true, env = "LATCHKEY_NODE_ID", value_parser = node_id)]
    pub node_id: Option<String>,
    /// Cluster mode: the number of partitions, fixed when the cluster is first started.
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_CLUSTER_PARTITIONS",
        default_value_t = 16
    )]
    pub cluster_partitions: u32,
    /// Cluster mode: replicas of each partition's stream (3 survives the loss of one NATS server).
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_CLUSTER_REPLICAS",
        default_value_t = 3
    )]
    pub cluster_replicas: usize,
}

/// A node id is a NATS subject token: letters, digits, `-` and `_`.
fn node_id(value: &str) -> Result<String, String> {
    let valid = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match valid {
        true => Ok(value.to_owned()),
        false => Err("a node id is 1 to 64 letters, digits, '-' or '_'".into()),
    }
}

const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// A log filter whose every directive names a level (`info`, `latchkey_engine=debug`): an
/// unknown word is refused rather than read as a target name that logs nothing.
fn log_filter(value: &str) -> Result<String, String> {
    for directive in value.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, level)| level);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "`{directive}` names no log level (one of {})",
                LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(value)
        .map(|_| value.to_owned())
        .map_err(|e| e.to_string())
}

impl ServeArgs {
    /// The bootstrap token, from the flag/variable or the file; `None` when neither is set.
    pub fn bootstrap_token(&self) -> Result<Option<String>, String> {
        if let Some(token) = self.bootstrap_token.as_deref().map(str::trim) {
            return Ok(Some(token.to_owned()).filter(|t| !t.is_empty()));
        }
        let Some(path) = &self.bootstrap_token_file else {
            return Ok(None);
        };
        let token = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read the bootstrap token file {}: {e}",
                path.display()
            )
        })?;
        match token.trim() {
            "" => Err(format!(
                "the bootstrap token file {} is empty",
                path.display()
            )),
            token => Ok(Some(token.to_owned())),
        }
    }

    pub fn engine_config(&self) -> Config {
        let durability = match self.durability {
            DurabilityArg::Sync => Durability::Sync,
            DurabilityArg::Async => Durability::Async {
                flush_interval: self.flush_interval,
            },
        };
        let config = Config::default();
        let check_threads = match self.check_threads {
            0 => config.check_threads,
            n => n,
        };
        config
            .data_dir(&self.data_dir)
            .medium(match self.store {
                StoreArg::Sled => Medium::Sled,
                StoreArg::Redb => Medium::Redb,
            })
            .durability(durability)
            .idle_timeout(self.idle_timeout)
            .call_timeout(self.call_timeout)
            .close_timeout(self.close_timeout)
            .cache_bytes(self.cache_mb.saturating_mul(1024 * 1024))
            .checkpoint_entries(self.checkpoint_entries)
            .check_threads(check_threads)
            .check_queue(self.check_queue)
            // The bootstrap token file (`run.rs`), and its temporary name while it is written.
            .keep_file(crate::run::ADMIN_TOKEN_FILE)
            .keep_file(format!("{}.tmp", crate::run::ADMIN_TOKEN_FILE))
    }
}

impl Cli {
    /// The server's settings (and those the other commands share: the data directory, the log).
    pub fn serve_args(self) -> ServeArgs {
        self.serve
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_filters_must_name_levels() {
        for good in [
            "info",
            "DEBUG",
            "off",
            "info,latchkey_engine=debug",
            "tower_http=trace",
        ] {
            assert!(log_filter(good).is_ok(), "{good}");
        }
        for bad in ["verbose", "info,chatty", "latchkey=loud", ""] {
            if bad.is_empty() {
                continue; // no directive: tracing's default
            }
            let error = log_filter(bad).unwrap_err();
            assert!(error.contains("names no log level"), "{bad}: {error}");
        }
        assert!(Cli::try_parse_from(["latchkey", "--log", "verbose"]).is_err());
    }

    #[test]
    fn the_bootstrap_token_comes_from_the_flag_or_a_file_not_both() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let file = file.to_str().unwrap();
        let args = |line: &[&str]| Cli::try_parse_from(line).map(Cli::serve_args);
        let from_file = args(&["latchkey", "--bootstrap-token-file", file]).unwrap();
        assert_eq!(
            from_file.bootstrap_token().unwrap().as_deref(),
            Some("from-file")
        );
        let from_flag = args(&["latchkey", "--bootstrap-token", "flag"]).unwrap();
        assert_eq!(
            from_flag.bootstrap_token().unwrap().as_deref(),
            Some("flag")
        );
        assert!(args(&[
            "latchkey",
            "--bootstrap-token",
            "a",
            "--bootstrap-token-file",
            file
        ])
        .is_err());
        let missing = args(&["latchkey", "--bootstrap-token-file", "/no/such/token"]).unwrap();
        assert!(missing
            .bootstrap_token()
            .unwrap_err()
            .contains("/no/such/token"));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let empty = args(&[
            "latchkey",
            "--bootstrap-token-file",
            empty.to_str().unwrap(),
        ])
        .unwrap();
        assert!(empty.bootstrap_token().unwrap_err().contains("empty"));
    }

    #[test]
    fn defaults_and_subcommand() {
        let cli = Cli::try_parse_from(["latchkey"]).unwrap();
        let args = cli.serve_args();
        assert_eq!(args.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(args.durability, DurabilityArg::Sync);
        assert_eq!(args.idle_timeout, Duration::from_secs(60));
        let cli = Cli::try_parse_from([
            "latchkey",
            "serve",
            "--durability",
            "async",
            "--flush-interval",
            "5ms",
            "--listen",
            "127.0.0.1:0",
        ])
        .unwrap();
        let config = cli.serve_args().engine_config();
        assert_eq!(
            config.durability,
            Durability::Async {
                flush_interval: Duration::from_millis(5)
            }
        );
        assert_eq!(
            Cli::try_parse_from(["latchkey"])
                .unwrap()
                .serve_args()
                .engine_config()
                .cache_bytes,
            1024 * 1024 * 1024,
            "sled's own default"
        );
        let cores = Cli::try_parse_from(["latchkey"]).unwrap();
        assert_eq!(
            cores.serve_args().engine_config().check_threads,
            Config::default().check_threads,
            "0 means one per core"
        );
        let one = Cli::try_parse_from(["latchkey", "--check-threads", "1", "--check-queue", "8"])
            .unwrap()
            .serve_args()
            .engine_config();
        assert_eq!((one.check_threads, one.check_queue), (1, 8));
        let small = Cli::try_parse_from(["latchkey", "--cache-mb", "64"]).unwrap();
        assert_eq!(
            small.serve_args().engine_config().cache_bytes,
            64 * 1024 * 1024
        );
        assert_eq!(
            Cli::try_parse_from(["latchkey"])
                .unwrap()
                .serve_args()
                .engine_config()
                .checkpoint_entries,
            latchkey_engine::DEFAULT_CHECKPOINT_ENTRIES
        );
        let frequent = Cli::try_parse_from(["latchkey", "--checkpoint-entries", "200"]).unwrap();
        assert_eq!(
            frequent.serve_args().engine_config().checkpoint_entries,
            200
        );
        assert_eq!(
            Cli::try_parse_from(["latchkey"])
                .unwrap()
                .serve_args()
                .engine_config()
                .close_timeout,
            Duration::from_secs(30)
        );
        let patient = Cli::try_parse_from(["latchkey", "--close-timeout", "2m"]).unwrap();
        assert_eq!(
            patient.serve_args().engine_config().close_timeout,
            Duration::from_secs(120)
        );
        assert!(Cli::try_parse_from(["latchkey", "--durability", "maybe"]).is_err());
        assert_eq!(Config::default().medium, Medium::Sled);
        let redb = Cli::try_parse_from(["latchkey", "serve", "--store", "redb"]).unwrap();
        assert_eq!(redb.serve_args().engine_config().medium, Medium::Redb);
        assert!(Cli::try_parse_from(["latchkey", "--store", "rocksdb"]).is_err());
    }

    #[test]
    fn flags_count_before_and_after_the_subcommand() {
        for line in [
            &[
                "latchkey",
                "--data-dir",
                "/x",
                "--listen",
                "127.0.0.1:9",
                "serve",
            ][..],
            &[
                "latchkey",
                "serve",
                "--data-dir",
                "/x",
                "--listen",
                "127.0.0.1:9",
            ],
            &[
                "latchkey",
                "--data-dir",
                "/x",
                "serve",
                "--listen",
                "127.0.0.1:9",
            ],
            &["latchkey", "--data-dir", "/x", "--listen", "127.0.0.1:9"],
        ] {
            let args = Cli::try_parse_from(line).unwrap().serve_args();
            assert_eq!(args.data_dir, PathBuf::from("/x"), "{line:?}");
            assert_eq!(args.listen.to_string(), "127.0.0.1:9", "{line:?}");
        }
    }
}
