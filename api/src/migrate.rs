//! `latchkey migrate`: an embedded Latchkey's data moved into a new cluster.
//!
//! The source is a stopped data directory (`--from`, read as an offline backup, so a server
//! holding it is refused) or a backup file (`--from-backup`). The engine regroups its entries by
//! the scope it writes each under (`latchkey_engine::migrate`), and the cluster crate appends them
//! to the partitions' streams and claims the unique names (`latchkey_cluster::import`). The nodes
//! started afterwards find the users, organizations, sessions, tokens and policies in their views
//! and do not bootstrap again: the embedded server's admin token keeps working.
//!
//! The target must be empty (no node started yet); a migration interrupted midway is resumed by
//! running it again with the same data. Exit codes: 0 migrated, 1 not (the message says why).

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use latchkey_cluster::partitions::Layout;
use latchkey_engine::Config;

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// The stopped embedded data directory to migrate.
    #[arg(
        long,
        required_unless_present = "from_backup",
        conflicts_with = "from_backup"
    )]
    pub from: Option<PathBuf>,
    /// A backup file (`latchkey backup`) to migrate instead of a data directory.
    #[arg(long)]
    pub from_backup: Option<PathBuf>,
    /// The new cluster's NATS servers (comma-separated URLs). Its partitions are created with
    /// --cluster-partitions and --cluster-replicas: start the nodes with the same values.
    #[arg(long)]
    pub to: String,
}

/// How long one append or name claim retries what is transient.
const APPEND_TIMEOUT: Duration = Duration::from_secs(30);

pub fn migrate(args: &MigrateArgs, config: &Config, layout: Layout) -> ExitCode {
    let started = Instant::now();
    let planned = match (&args.from, &args.from_backup) {
        (Some(dir), _) => latchkey_engine::migrate::plan_data_dir(&config.clone().data_dir(dir)),
        (None, Some(file)) => File::open(file)
            .map_err(|e| {
                latchkey_engine::OpenError::Engine(format!("opening {}: {e}", file.display()))
            })
            .and_then(|f| latchkey_engine::migrate::plan_backup(BufReader::new(f))),
        (None, None) => Err(latchkey_engine::OpenError::Engine(
            "give --from <data dir> or --from-backup <file>".into(),
        )),
    };
    let mut migration = match planned {
        Ok(migration) => migration,
        Err(e) => return failed(format!("cannot read what to migrate: {e}")),
    };
    println!(
        "read {} entries: {} users, {} organizations, {} sessions (source {})",
        migration.entries,
        migration.users,
        migration.organizations,
        migration.sessions,
        migration.source_id
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return failed(format!("cannot start the runtime: {e}")),
    };
    let (source, unique) = (
        std::mem::take(&mut migration.source_id),
        std::mem::take(&mut migration.unique),
    );
    let imported = runtime.block_on(async {
        let client = crate::cluster::connect(&args.to, "latchkey migrate".into()).await?;
        latchkey_cluster::import::import(
            client,
            layout,
            &source,
            migration.into_batches(),
            &unique,
            APPEND_TIMEOUT,
        )
        .await
        .map_err(|e| e.to_string())
    });
    match imported {
        Ok(done) => {
            println!(
                "migrated into {} partitions (R{}) in {:.1?}: {} scopes, {} records appended, {} \
                 found from an earlier run, {} unique names claimed",
                layout.partitions,
                layout.replicas,
                started.elapsed(),
                done.scopes,
                done.appended,
                done.found,
                done.names
            );
            ExitCode::SUCCESS
        }
        Err(e) => failed(format!("migration failed: {e}")),
    }
}

fn failed(message: String) -> ExitCode {
    eprintln!("latchkey migrate: {message}");
    ExitCode::FAILURE
}
