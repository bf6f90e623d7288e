//! Graceful shutdown under load: SIGTERM while many clients drive commands. In-flight requests
//! complete or fail cleanly (a response in the documented shape, or a closed connection — never a
//! 500), the process exits 0 promptly, nothing acknowledged is lost (the whole history, checked
//! for linearizability after the restart, explains every acknowledged answer), and the next start
//! is clean.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::binary::{self, TOKEN};
use support::history::{check, client_loop, create_users, read_users, Outcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_finishes_cleanly_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let clock = Instant::now();
    let server = binary::start(dir.path(), "sync", &[]);
    let users = create_users(&client, &server.base, TOKEN, "term", 6).await;
    let (mut history, initial) = read_users(&client, &server.base, TOKEN, &users, clock).await;
    let users = Arc::new(users);

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|seed| {
            tokio::spawn(client_loop(
                client.clone(),
                server.base.clone(),
                TOKEN,
                users.clone(),
                clock,
                stop.clone(),
                seed,
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let signalled = Instant::now();
    server.sigterm();
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .expect("wait");
    let took = signalled.elapsed();
    let stopped_at = clock.elapsed();
    stop.store(true, Ordering::Relaxed);
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(5), "shut down in {took:?}");

    let mut during = 0;
    for task in clients {
        for mut operation in task.await.expect("client") {
            assert!(
                matches!(operation.status, 0 | 200 | 400 | 503),
                "unclean answer during shutdown: {operation:?}"
            );
            if operation.status == 503 || operation.status == 0 {
                during += 1;
            }
            if operation.outcome == Outcome::Unknown {
                if operation.invoked > stopped_at {
                    continue;
                }
                operation.returned = stopped_at;
            }
            history.push(operation);
        }
    }
    let acknowledged = history
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Ok { .. }))
        .count();
    assert!(
        acknowledged > 20,
        "only {acknowledged} acknowledged commands"
    );

    // The next start is clean and serves at once; every acknowledged command is there.
    let server = binary::start(dir.path(), "sync", &[]);
    let ready = client
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let (reads, _) = read_users(&client, &server.base, TOKEN, &users, clock).await;
    history.extend(reads);
    let checked = check(&initial, &history).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "{checked} operations linearizable; {acknowledged} acknowledged; {during} answered 503 or cut by the shutdown; exit took {took:?}"
    );
    server.kill9();
}
