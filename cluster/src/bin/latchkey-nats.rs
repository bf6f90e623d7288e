//! The pinned NATS server from the command line, for scripts that run a cluster on one machine
//! (`deploy/local-cluster.sh`, `interop/run.sh`).
//!
//! - `latchkey-nats path` installs nats-server 2.15.1 on first use (as the tests do) and prints
//!   the binary's path.
//! - `latchkey-nats testbed [N]` runs N clustered servers on loopback (default 3), JetStream on a
//!   temporary directory, prints `urls nats://…,nats://…` once JetStream answers, and runs until
//!   stdin closes or the process is told to stop (SIGINT/SIGTERM); then the servers go with it.

use std::process::ExitCode;

use latchkey_cluster::nats_server;
use latchkey_cluster::testbed::Testbed;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("path") => nats_server::path()
            .map(|path| println!("{}", path.display()))
            .map_err(|e| e.to_string()),
        Some("testbed") => match args.get(1).map(|n| n.parse::<usize>()) {
            None => testbed(3).await,
            Some(Ok(n)) if n > 0 => testbed(n).await,
            Some(_) => Err(format!("not a server count: {}", args[1])),
        },
        _ => Err("usage: latchkey-nats path | latchkey-nats testbed [N]".to_owned()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("latchkey-nats: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn testbed(n: usize) -> Result<(), String> {
    use std::io::Read;
    use tokio::signal::unix::{signal, SignalKind};
    let testbed = Testbed::start(n).await.map_err(|e| e.to_string())?;
    println!("urls {}", testbed.urls().join(","));
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    // Stdin closed (or any input): the script that started the testbed is done with it.
    let (closed, stdin_closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read(&mut [0u8; 1]);
        let _ = closed.send(());
    });
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
        _ = stdin_closed => {}
    }
    drop(testbed);
    Ok(())
}
