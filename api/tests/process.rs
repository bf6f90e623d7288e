//! The real `latchkey` binary: start-up errors, bootstrap, and durability across graceful stops
//! and SIGKILL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::binary::{self, post, BIN, TOKEN};

fn start(dir: &Path, durability: &str) -> binary::Running {
    binary::start(dir, durability, &[])
}

async fn get_user(client: &reqwest::Client, base: &str, id: &str) -> Value {
    client
        .get(format!("{base}/v2/users/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

/// Creates users and drives acknowledged commands; returns (id, state, sequence) as acknowledged.
async fn drive(
    client: &reqwest::Client,
    base: &str,
    tag: &str,
    n: usize,
) -> Vec<(String, String, String)> {
    let mut acknowledged = Vec::new();
    for i in 0..n {
        let (status, created) = post(
            client,
            base,
            "/v2/users/human",
            json!({
                "profile": {"givenName": "P", "familyName": "Q"},
                "email": {"email": format!("p{i}-{tag}@example.com")},
                "hashedPassword": {"hash": "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"},
            }),
        )
        .await;
        assert_eq!(status, 200, "{created}");
        let id = created["userId"].as_str().unwrap().to_owned();
        let mut last = created["details"]["sequence"].as_str().unwrap().to_owned();
        let mut state = "USER_STATE_ACTIVE";
        for action in ["lock", "unlock", "lock"].iter().take(1 + i % 3) {
            let (status, reply) =
                post(client, base, &format!("/v2/users/{id}/{action}"), json!({})).await;
            assert_eq!(status, 200, "{reply}");
            last = reply["details"]["sequence"].as_str().unwrap().to_owned();
            state = if *action == "lock" {
                "USER_STATE_LOCKED"
            } else {
                "USER_STATE_ACTIVE"
            };
        }
        acknowledged.push((id, state.to_owned(), last));
    }
    acknowledged
}

async fn verify(client: &reqwest::Client, base: &str, acknowledged: &[(String, String, String)]) {
    for (id, state, sequence) in acknowledged {
        let user = get_user(client, base, id).await;
        assert_eq!(user["user"]["state"], state.as_str(), "{id}: {user}");
        assert_eq!(
            user["details"]["sequence"],
            sequence.as_str(),
            "{id}: {user}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_keeps_everything_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut server = start(dir.path(), "sync");
    let acknowledged = drive(&client, &server.base, "graceful", 12).await;
    server.sigterm();
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");

    let mut server = start(dir.path(), "sync");
    verify(&client, &server.base, &acknowledged).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_right_after_a_2xx_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut acknowledged = Vec::new();
    for round in 0..3 {
        let mut server = start(dir.path(), "sync");
        verify(&client, &server.base, &acknowledged).await;
        acknowledged.extend(drive(&client, &server.base, &format!("r{round}"), 6 + round).await);
        server.child.kill().unwrap(); // SIGKILL, immediately after the last 2xx
        server.child.wait().unwrap();
    }
    let mut server = start(dir.path(), "sync");
    verify(&client, &server.base, &acknowledged).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// `binary::start` puts its flags before the extra arguments and `--data-dir` after them: with
/// `serve` in between, one flag stands on each side of the subcommand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_before_and_after_the_subcommand_both_count() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut server = binary::start(dir.path(), "sync", &["serve"]);
    assert!(
        !server.base.ends_with(":8080"),
        "--listen before `serve` was ignored: {}",
        server.base
    );
    let acknowledged = drive(&client, &server.base, "flags", 1).await;
    assert!(
        dir.path().join("wal").is_dir(),
        "--data-dir after `serve` was ignored"
    );
    verify(&client, &server.base, &acknowledged).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[test]
fn a_locked_or_foreign_data_dir_is_refused_with_one_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = start(dir.path(), "sync");
    assert_refused(dir.path(), "locked by another process");
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    // a directory holding something that is not a Latchkey store
    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(foreign.path().join("notes.txt"), b"someone else's files").unwrap();
    assert_refused(foreign.path(), "not a Latchkey data directory");

    // a store written by a build with another schema version
    let future = tempfile::tempdir().unwrap();
    {
        let backend = latchkey_storage::SledBackend::open(future.path()).unwrap();
        let config = latchkey_engine::Config::default().data_dir(future.path());
        let mut batch = latchkey_storage::WriteBatch::default();
        batch.put(
            latchkey_engine::store_config(&config).layout.schema_key,
            99u32.to_be_bytes().to_vec(),
        );
        latchkey_storage::Backend::apply(&backend, batch).unwrap();
        latchkey_storage::Backend::flush(&backend).unwrap();
    }
    assert_refused(future.path(), "unknown schema version 99");
}

fn assert_refused(dir: &Path, why: &str) {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!(
                "latchkey started on {} instead of refusing it",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or("");
    assert!(last.starts_with("latchkey: "), "{stderr}");
    assert!(last.contains(&dir.display().to_string()), "{stderr}");
    assert!(last.contains(why), "{stderr}");
}

#[test]
fn bootstrap_writes_a_private_token_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let run = |dir: &Path| {
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env_remove("LATCHKEY_BOOTSTRAP_TOKEN")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        for line in BufReader::new(stderr).lines() {
            if line.unwrap().contains("listening on") {
                break;
            }
        }
        let server = binary::Running {
            child,
            base: String::new(),
        };
        server.sigterm();
        let status = server.wait();
        assert!(status.success(), "{status:?}");
    };
    run(dir.path());
    let pat = dir.path().join("admin.pat");
    let token = std::fs::read_to_string(&pat).unwrap();
    assert!(token.trim().len() >= 40);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&pat).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    run(dir.path());
    assert_eq!(
        std::fs::read_to_string(&pat).unwrap(),
        token,
        "later starts never change it"
    );
}
