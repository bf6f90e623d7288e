//! `latchkey`: parse flags, set up logging, run the server; exit 1 with one line on failure.

use std::process::ExitCode;

use clap::Parser;

use latchkey_api::config::Cli;

/// mimalloc: the request path allocates a lot of small, short-lived buffers, and glibc's malloc
/// showed up at ~10% of a load-test profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    latchkey_api::run::disable_transparent_huge_pages();
    let args = Cli::parse().serve_args();
    latchkey_api::run::init_logging(&args.log);
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
