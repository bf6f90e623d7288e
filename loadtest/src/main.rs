//! `latchkey-loadtest`: drives Latchkey embedded (the engine in-process), over HTTP, or a server
//! it spawns itself, and measures a baseline in the same run — the bare HTTP stack for HTTP
//! targets, the bare store for the embedded one — because the ratio, not an absolute figure, is
//! what survives a noisy shared machine. See docs/performance.md for the recorded runs.
//!
//! Code map: `cli.rs` (the command line) → `orchestrate.rs` (one run: target, users, scenario,
//! baseline; `--repeat` and `median.rs`) → `runner.rs` (the scenarios, closed and open loop) over
//! `target.rs` / `connection.rs` / `grpc_target.rs` (what a request goes to) → `recorder.rs` (what is measured) →
//! `report.rs` (table, JSON, HTML); `scrape.rs` reads the server's own metrics; `servers.rs` and
//! `ceiling.rs` are the spawned servers and the store ceiling; `scale.rs` the scale check; `checkpoint_targets.rs` the comparison of stores; `disk_check.rs`
//! the disk's own sync latency, idle and beside busy cores; `cpu_check.rs` how fast the cores
//! run from one moment to the next.

mod ceiling;
mod checkpoint_targets;
mod cli;
mod client_check;
mod connection;
mod cpu_check;
mod disk_check;
mod grpc_baseline;
mod grpc_target;
mod list_timings;
mod login;
mod median;
mod orchestrate;
mod recorder;
mod report;
mod runner;
mod scale;
mod schedule;
mod scrape;
mod servers;
mod target;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Internal};

/// The same allocator as the `latchkey` binary, for the spawned server and the baseline alike.
#[global_allocator]
static GLOBAL: latchkey_api::allocator::Allocator = latchkey_api::allocator::Allocator;

fn main() -> ExitCode {
    // The same process settings as the `latchkey` binary, for every server and client it runs.
    latchkey_api::run::disable_transparent_huge_pages();
    let cli = Cli::parse();
    if !matches!(cli.internal, Some(Internal::ServeLatchkey { .. })) {
        // Every other process — the baselines, the load clients — gets a subscriber too. Without
        // one, `tracing` (its `log` feature is on through axum) hands every span of h2 and tower
        // to `log` to decide: ≈ 12,700 instructions per request on the tonic baseline, which the
        // Latchkey server, having a subscriber, does not pay. A baseline or a client paying them
        // is slower than it should be, and a ratio to it flatters Latchkey.
        let filter = std::env::var("LATCHKEY_LOG").unwrap_or_else(|_| "warn".into());
        latchkey_api::run::init_logging(&filter, latchkey_api::config::LogFormat::Text);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("latchkey-loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.internal {
        Some(Internal::ServeLatchkey { args }) => {
            let line = std::iter::once("latchkey".to_owned()).chain(args);
            match latchkey_api::config::Cli::try_parse_from(line) {
                Ok(server) => {
                    let args = server.serve_args();
                    latchkey_api::run::init_logging(&args.log, args.log_format);
                    runtime
                        .block_on(latchkey_api::run::run(args))
                        .map(|()| true)
                }
                Err(e) => Err(e.to_string()),
            }
        }
        Some(Internal::ServeGrpcBaseline { listen }) => runtime
            .block_on(grpc_baseline::serve(listen))
            .map(|()| true)
            .map_err(|e| e.to_string()),
        Some(Internal::ServeBaseline { listen }) => runtime
            .block_on(servers::serve_baseline(listen))
            .map(|()| true)
            .map_err(|e| e.to_string()),
        Some(Internal::Scale {
            users,
            touched,
            idle_timeout,
            cache_mb,
            store,
            no_backup,
            data_dir,
        }) => runtime.block_on(scale::run(scale::ScaleArgs {
            users,
            touched,
            idle_timeout,
            cache_mb,
            medium: store,
            backup: !no_backup,
            data_dir,
        })),
        Some(Internal::Attack {
            base,
            user,
            connections,
            duration,
        }) => runtime.block_on(login::attacker(base, user, connections, duration)),
        Some(Internal::CheckpointTargets {
            entries,
            checkpoint,
            cache_mb,
            chunk,
            only,
        }) => checkpoint_targets::run(checkpoint_targets::Args {
            entries,
            checkpoint,
            cache_mb,
            chunk: chunk.unwrap_or(latchkey_storage::CHECKPOINT_CHUNK).max(1),
            only,
        }),
        Some(Internal::CpuCheck { every, duration }) => {
            cpu_check::run(every, duration).map(|()| true)
        }
        Some(Internal::DiskCheck { dir, duration }) => {
            disk_check::run(&dir, duration).map(|()| true)
        }
        Some(Internal::ClientCheck {
            rounds,
            rate,
            duration,
            concurrency,
        }) => runtime.block_on(client_check::run(
            rounds.max(1),
            duration,
            concurrency,
            rate,
        )),
        None => runtime.block_on(orchestrate::load_test(&cli)),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("latchkey-loadtest: {e}");
            ExitCode::from(2)
        }
    }
}
