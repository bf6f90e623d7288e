//! `latchkey`: parse flags, set up logging, run the command (the server by default); exit 1 with
//! one line on failure.

use std::process::ExitCode;

use clap::Parser;

use latchkey_api::config::{Cli, Command};
use latchkey_api::operate;

/// mimalloc: the request path allocates a lot of small, short-lived buffers, and glibc's malloc
/// showed up at ~10% of a load-test profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.clone().unwrap_or(Command::Serve);
    let args = cli.serve_args();
    latchkey_api::run::init_logging(&args.log);
    match command {
        Command::Serve => serve(args),
        Command::Backup(backup) => operate::backup(&backup, &args.engine_config()),
        Command::Restore(restore) => operate::restore(&restore, &args.engine_config()),
        Command::Verify => operate::verify(&args.engine_config()),
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
