//! The command line: targets, scenarios, settings, outputs, and the internal subcommands the
//! harness runs itself with (the servers it spawns, the scale check).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use latchkey_engine::Durability;

use crate::runner::{Scenario, Settings};

#[derive(Debug, Parser)]
#[command(
    name = "latchkey-loadtest",
    about = "Load tests for Latchkey, with a same-run baseline"
)]
pub struct Cli {
    #[command(subcommand)]
    pub internal: Option<Internal>,
    /// `embedded` (the engine in-process) or a running server, e.g. http://127.0.0.1:8080.
    #[arg(long, default_value = "embedded")]
    pub target: String,
    /// An external --target only: create the run's users through this server instead (in cluster
    /// mode another node, so that each request is forwarded to the node serving its user).
    #[arg(long)]
    pub create_on: Option<String>,
    /// Start a Latchkey server on a temp dir for the run (overrides --target).
    #[arg(long)]
    pub spawn: bool,
    /// How requests reach a server (`--spawn` or an http:// target): REST over HTTP/1.1, or gRPC
    /// over h2c with the generated client (its baseline: bare tonic answering the same methods).
    #[arg(long, value_enum, default_value = "rest")]
    pub protocol: ProtocolArg,
    #[arg(long, value_enum, default_value = "uniform")]
    pub scenario: Scenario,
    /// Concurrent clients (closed loop), most requests in flight (open loop), or commands in
    /// flight (`hot`).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Open loop: requests per second, latency from the intended send time.
    #[arg(long)]
    pub rate: Option<f64>,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// `uniform` / `mixed` (and their baseline), closed or open loop: run this long first,
    /// unmeasured, on the same target and users (an open loop at the same rate), so the numbers
    /// are the steady state. A fresh store appends to new log files and zero-fills its first
    /// preallocated ones meanwhile, which makes its first seconds slower.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Users for uniform / mixed / cold.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Locked users the unlock storm races on.
    #[arg(long, default_value_t = 1)]
    pub hot_users: usize,
    /// Share of reads in `mixed`.
    #[arg(long, default_value_t = 0.9)]
    pub read_ratio: f64,
    /// `create`: stop after this many users.
    #[arg(long)]
    pub count: Option<u64>,
    #[arg(long, value_enum, default_value = "sync")]
    pub durability: DurabilityArg,
    /// The store under the log (`--store` of the spawned server, of the embedded engine and of
    /// the store ceiling): sled or redb.
    #[arg(long, default_value = "sled")]
    pub store: latchkey_engine::Medium,
    /// Also measure the baseline (bare axum handler for HTTP, bare store for embedded).
    #[arg(long)]
    pub baseline: bool,
    /// Time a fixed piece of work every 500 ms beside each measured run, on a thread of the
    /// harness (≈ 2 % of one core), and report the medians for Latchkey's run and the
    /// baseline's: on a virtual machine the cores' speed moves between runs
    /// (`latchkey-loadtest cpu-check`), and a ratio made across such a move is off by it.
    #[arg(long)]
    pub cpu_probe: bool,
    /// Run everything this many times, each on a fresh target, and report the run with the
    /// median ratio (every run's ratio is listed): one run's ratio moves by ±0.05–0.1 on a
    /// shared 2-core machine. An open loop (`--rate`) reports the run with the median p99 and
    /// lists every run's. Correctness checks must pass in every run.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Token for an external --target (defaults to $LATCHKEY_TOKEN).
    #[arg(long, env = "LATCHKEY_TOKEN", default_value = "")]
    pub token: String,
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long)]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    Rest,
    Grpc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    Sync,
    Async,
}

#[derive(Debug, Subcommand)]
pub enum Internal {
    /// (internal) run the Latchkey server: what --spawn starts. Takes exactly the `latchkey`
    /// binary's command line.
    #[command(hide = true)]
    ServeLatchkey {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// (internal) run the bare axum baseline server.
    #[command(hide = true)]
    ServeBaseline {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
    /// The gRPC baseline: tonic alone answering the gRPC scenarios' methods (h2c).
    #[command(hide = true)]
    ServeGrpcBaseline {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
    /// (internal) the login scenario's attacker, in a process of its own so that its 10,000
    /// connections do not share the measuring client's runtime: wrong passwords for one user
    /// from every connection until the time is up; the outcome counts go to stdout as JSON.
    #[command(hide = true)]
    Attack {
        #[arg(long)]
        base: String,
        #[arg(long)]
        user: String,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// Are the harness's clients fast enough to measure with? Drives the bare axum baseline with
    /// the harness's closed loop and with wrk, and the bare tonic baseline with its gRPC client
    /// and h2load (if installed), interleaved; bar: ≥ 0.9 × wrk (h2load). The open loop against
    /// oha (if installed) at --rate: sends ≥ 0.9 × oha's, p99 ≤ oha's / 0.9.
    ClientCheck {
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// The open loop's rate (requests per second) for the comparison with oha.
        #[arg(long, default_value_t = 30_000.0)]
        rate: f64,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// How fast this machine's cores run, probe by probe: two fixed pieces of work (arithmetic,
    /// then dependent reads through 16 MiB; ≈ 10 ms together on a fast core) timed by the
    /// thread's own CPU clock every --every, one line per probe, then each piece's spread. On a virtual machine the same work can take markedly longer from one
    /// second to the next; compare runs made at different moments with that in mind.
    CpuCheck {
        #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
        every: Duration,
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// How long a commit's fdatasync takes on this machine's disk: idle, with a busy thread on
    /// the syncing core, and with one on another core (the floor under sync-mode latencies).
    DiskCheck {
        /// A directory on the disk to check (the server's --data-dir's disk).
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// Scale of state: create --users through the engine, restart the server on them, measure
    /// readiness, memory (ready / many active / after passivation) and a cold first request.
    Scale {
        #[arg(long, default_value_t = 1_000_000)]
        users: usize,
        /// Users read over HTTP to fill the registry before the idle check.
        #[arg(long, default_value_t = 20_000)]
        touched: usize,
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        idle_timeout: Duration,
        /// The server's store cache bound (MiB).
        #[arg(long, default_value_t = 1024)]
        cache_mb: u64,
        /// The server's --store: the embedded store under the log (sled or redb).
        #[arg(long, default_value = "sled")]
        store: latchkey_engine::Medium,
        /// Skip the offline backup, restore and verify at the end (at ten million users they
        /// take longer than everything else together, and need twice the disk).
        #[arg(long)]
        no_backup: bool,
        /// Make the users in this (new or empty) directory and leave them there, to run a
        /// server on afterwards; default: a temporary directory.
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
    },
    /// sled against redb and fjall as the checkpoints' target: fill to --entries by checkpoints,
    /// steady-state checkpoints, reopen, point reads, disk (docs/storage-engines.md).
    CheckpointTargets {
        #[arg(long, default_value_t = 3_000_000)]
        entries: usize,
        /// Entries per checkpoint (the server's --checkpoint-entries).
        #[arg(long, default_value_t = 131_072)]
        checkpoint: usize,
        #[arg(long, default_value_t = 1024)]
        cache_mb: u64,
        /// Ops per write (`apply_each`); by default what the log's checkpoint hands the store
        /// (`CHECKPOINT_CHUNK`, 1,024).
        #[arg(long)]
        chunk: Option<usize>,
        /// Measure only these stores (sled, redb, fjall; repeat the flag); all by default.
        #[arg(long)]
        only: Vec<String>,
    },
}

impl Cli {
    pub fn durability(&self) -> Durability {
        match self.durability {
            DurabilityArg::Sync => Durability::Sync,
            DurabilityArg::Async => Durability::Async {
                flush_interval: Duration::from_millis(10),
            },
        }
    }

    pub fn idle_timeout(&self) -> Duration {
        if self.scenario == Scenario::Cold {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(60)
        }
    }

    pub fn settings(&self) -> Settings {
        Settings {
            scenario: self.scenario,
            concurrency: self.concurrency.max(1),
            duration: self.duration,
            warmup: self.warmup,
            rate: self.rate,
            users: self.users.max(1),
            hot_users: self.hot_users.max(1),
            read_ratio: self.read_ratio.clamp(0.0, 1.0),
            count: self.count,
        }
    }
}
