//! `latchkey`: parse the settings (flags, variables, the config file), set up logging, run the
//! command (the server by default); exit 1 with one line on failure.

use std::process::ExitCode;

use clap::CommandFactory;

use latchkey_api::config::{Cli, Command, ConfigAction};
use latchkey_api::{admin_cli, config_file, operate};

/// mimalloc (`allocator.rs`): the request path allocates a lot of small, short-lived buffers,
/// and glibc's malloc showed up at ~10% of a load-test profile.
#[global_allocator]
static GLOBAL: latchkey_api::allocator::Allocator = latchkey_api::allocator::Allocator;

fn main() -> ExitCode {
    let parsed = match config_file::parse(std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        // Usage errors, --help and --version: clap prints them and picks the exit code.
        Err(error) => error.exit(),
    };
    let command = parsed.cli.command.clone().unwrap_or(Command::Serve);
    let (file, settings) = (parsed.file, parsed.settings);
    let args = parsed.cli.serve_args();
    match command {
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "latchkey",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Command::Config {
            action: ConfigAction::Check,
        } => return operate::config_check(&args, file.as_deref(), &settings),
        Command::Healthcheck { url } => return operate::healthcheck(url.as_deref(), &args),
        Command::Users { action, client } => return admin_cli::users(&action, &client, &args),
        Command::Orgs { action, client } => return admin_cli::orgs(&action, &client, &args),
        _ => {}
    }
    latchkey_api::run::init_logging(&args.log, args.log_format);
    match command {
        Command::Backup(backup) => operate::backup(&backup, &args.engine_config()),
        Command::Restore(restore) => operate::restore(&restore, &args.engine_config()),
        Command::Verify => operate::verify(&args.engine_config()),
        Command::Migrate(migrate) => latchkey_api::migrate::migrate(
            &migrate,
            &args.engine_config(),
            latchkey_cluster::partitions::Layout {
                partitions: args.cluster_partitions,
                replicas: args.cluster_replicas,
            },
        ),
        _ => serve(args),
    }
}

fn serve(args: latchkey_api::config::ServeArgs) -> ExitCode {
    latchkey_api::run::disable_transparent_huge_pages();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("latchkey: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(latchkey_api::run::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("latchkey: {message}");
            ExitCode::from(1)
        }
    }
}
