//! The pinned NATS server from the command line, for scripts that run a cluster on one machine
//! (`deploy/local-cluster.sh`, `interop/run.sh`).
//!
//! - `latchkey-nats path` installs nats-server 2.15.1 on first use (as the tests do) and prints
//!   the binary's path.
//! - `latchkey-nats testbed [N]` runs N clustered servers on loopback (default 3), JetStream on a
//!   temporary directory, prints `urls nats://…,nats://…` once JetStream answers, and runs until
//!   stdin closes or the process is told to stop (SIGINT/SIGTERM); then the servers go with it.
//! - `latchkey-nats leaders URLS` prints, for every stream of the JetStream at URLS, the server
//!   that leads it (and, for a partition's stream, the Latchkey node that owns the partition),
//!   then how many streams each server leads: where appends go, for a load test that asks why
//!   two runs differ.

use std::process::ExitCode;

use latchkey_cluster::partitions::Layout;
use latchkey_cluster::testbed::Testbed;
use latchkey_cluster::{membership, nats_server};

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
        Some("leaders") if args.len() == 2 => leaders(&args[1]).await,
        _ => Err(
            "usage: latchkey-nats path | latchkey-nats testbed [N] | latchkey-nats leaders URLS"
                .to_owned(),
        ),
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

async fn leaders(urls: &str) -> Result<(), String> {
    use futures::TryStreamExt;
    let client = async_nats::connect(urls.split(',').map(str::trim).collect::<Vec<_>>())
        .await
        .map_err(|e| format!("cannot connect to {urls}: {e}"))?;
    let js = async_nats::jetstream::new(client);
    let mut streams: Vec<_> = js
        .streams()
        .try_collect()
        .await
        .map_err(|e| format!("cannot list the streams: {e}"))?;
    streams.sort_by(|a, b| a.config.name.cmp(&b.config.name));
    let table = js.get_key_value(membership::PARTS).await.ok();
    let mut led = std::collections::BTreeMap::<String, usize>::new();
    for stream in &streams {
        let leader = stream
            .cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .unwrap_or_else(|| "-".to_owned());
        let owner = match Layout::partition_of_stream(&stream.config.name) {
            Some(p) => owner(table.as_ref(), p).await,
            None => String::new(),
        };
        println!("{} {leader} {owner}", stream.config.name);
        *led.entry(leader).or_default() += 1;
    }
    let summary: Vec<String> = led.iter().map(|(s, n)| format!("{s}:{n}")).collect();
    println!("leads {}", summary.join(" "));
    Ok(())
}

/// The node that owns partition `p` in the partition `table`, or `-`.
async fn owner(table: Option<&async_nats::jetstream::kv::Store>, p: u32) -> String {
    let Some(table) = table else {
        return "-".to_owned();
    };
    match table.get(membership::table_key(p)).await {
        Ok(Some(value)) => String::from_utf8_lossy(&value).into_owned(),
        _ => "-".to_owned(),
    }
}
