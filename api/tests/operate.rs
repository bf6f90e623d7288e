//! The operator's commands against the real binary: an online backup while clients write, its
//! restore and verify; offline backups and their refusals; verify's exit code on a damaged store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::binary::{self, create_human as create, get, post, sequence, BIN, TOKEN};

fn latchkey(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .args(["--log", "warn"])
        .output()
        .expect("run latchkey")
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// What one client did: each acknowledged write with when it was sent and acknowledged.
#[derive(Default)]
struct Client {
    user: String,
    /// (sent, acknowledged, the user's sequence after it)
    toggles: Vec<(Instant, Instant, u64)>,
    /// (sent, acknowledged, the new user's id)
    creations: Vec<(Instant, Instant, String)>,
}

async fn write_until(base: String, n: usize, stop: Arc<AtomicBool>) -> Client {
    let http = reqwest::Client::new();
    let mut client = Client {
        user: create(&http, &base, &format!("toggle{n}@example.com")).await,
        ..Default::default()
    };
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let sent = Instant::now();
        if i % 4 == 0 {
            let id = create(&http, &base, &format!("c{n}-{i}@example.com")).await;
            client.creations.push((sent, Instant::now(), id));
        } else {
            let action = if client.toggles.len().is_multiple_of(2) {
                "lock"
            } else {
                "unlock"
            };
            let path = format!("/v2/users/{}/{action}", client.user);
            let (status, reply) = post(&http, &base, &path, json!({})).await;
            assert_eq!(status, 200, "{reply}");
            client
                .toggles
                .push((sent, Instant::now(), sequence(&reply)));
        }
    }
    client
}

/// 16 clients write while an online backup is taken. Every write acknowledged before the backup
/// was asked for is in the restored store; none sent after the backup's answer began is; the
/// restored store verifies clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_online_backup_under_writes_holds_exactly_what_came_before_its_point() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    // Small checkpoints: several run while the clients write and while the backup reads.
    let server = binary::start(&live, "sync", &["--checkpoint-entries", "200"]);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|n| tokio::spawn(write_until(server.base.clone(), n, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let asked = Instant::now();
    let response = reqwest::Client::new()
        .get(format!("{}/latchkey/v1/backup", server.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let answered = Instant::now();
    assert_eq!(response.status(), 200);
    let file = response.bytes().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut done = Vec::new();
    for client in clients {
        done.push(client.await.unwrap());
    }
    server.sigterm();
    assert!(server.wait().success());
    let backup = dir.path().join("online.backup");
    std::fs::write(&backup, &file).unwrap();

    let restored = dir.path().join("restored");
    let out = latchkey(&["restore", "--from", backup.to_str().unwrap()], &restored);
    assert!(out.status.success(), "{}", text(&out));
    let out = latchkey(&["verify"], &restored);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no problems found"));

    let server = binary::start(&restored, "sync", &[]);
    let http = reqwest::Client::new();
    let get = |id: String| {
        let (http, base) = (http.clone(), server.base.clone());
        async move {
            let response = http
                .get(format!("{base}/v2/users/{id}"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (mut before, mut after, mut between) = (0, 0, 0);
    for client in &done {
        let (status, user) = get(client.user.clone()).await;
        assert_eq!(status, 200, "{user}");
        let restored = sequence(&user);
        for &(sent, acked, seq) in &client.toggles {
            if acked < asked {
                assert!(
                    restored >= seq,
                    "acknowledged before the backup, lost: {seq} > {restored}"
                );
                before += 1;
            } else if sent > answered {
                assert!(
                    restored < seq,
                    "sent after the backup's point, yet in it: {seq}"
                );
                after += 1;
            } else {
                between += 1;
            }
        }
        for (sent, acked, id) in &client.creations {
            let (status, _) = get(id.clone()).await;
            if *acked < asked {
                assert_eq!(status, 200, "created before the backup, missing: {id}");
            } else if *sent > answered {
                assert_eq!(
                    status, 404,
                    "created after the backup's point, present: {id}"
                );
            }
        }
    }
    eprintln!("writes before the backup {before}, after {after}, concurrent {between}");
    assert!(before > 50 && after > 50, "the clients wrote on both sides");
    server.sigterm();
    assert!(server.wait().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_by_command_online_and_offline_and_their_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let server = binary::start(&live, "sync", &[]);
    let http = reqwest::Client::new();
    let id = create(&http, &server.base, "kept@example.com").await;
    let file = dir.path().join("online.backup");
    let file_arg = file.to_str().unwrap();

    // online, with the token from the environment
    let out = Command::new(BIN)
        .args(["backup", "--to", file_arg, "--server", &server.base])
        .env("LATCHKEY_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("backup written to"));
    assert!(!dir.path().join("online.backup.partial").exists());

    // refusals: no token, a wrong token, the offline path while the server holds the directory
    let out = Command::new(BIN)
        .args(["backup", "--to", file_arg, "--server", &server.base])
        .env_remove("LATCHKEY_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--token"),
        "{}",
        text(&out)
    );
    let out = Command::new(BIN)
        .args([
            "backup",
            "--to",
            file_arg,
            "--server",
            &server.base,
            "--token",
            "wrong",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        text(&out)
    );
    let other = dir.path().join("offline.backup");
    let out = latchkey(&["backup", "--to", other.to_str().unwrap()], &live);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--server"),
        "{}",
        text(&out)
    );
    assert!(!other.exists());

    server.sigterm();
    assert!(server.wait().success());
    // offline, now that the server is gone: the same entries as the online one
    let out = latchkey(&["backup", "--to", other.to_str().unwrap()], &live);
    assert!(out.status.success(), "{}", text(&out));
    let entries = |path: &Path| {
        let file = std::fs::File::open(path).unwrap();
        latchkey_storage::backup::BackupReader::new(file)
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    };
    assert_eq!(entries(&file), entries(&other));

    // a damaged backup is refused and leaves nothing
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    let damaged = dir.path().join("damaged.backup");
    std::fs::write(&damaged, bytes).unwrap();
    let target = dir.path().join("from-damaged");
    let out = latchkey(&["restore", "--from", damaged.to_str().unwrap()], &target);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!target.exists(), "a failed restore leaves nothing");

    // restored elsewhere, the user is there
    let target = dir.path().join("restored");
    let out = latchkey(&["restore", "--from", file_arg], &target);
    assert!(out.status.success(), "{}", text(&out));
    let server = binary::start(&target, "sync", &[]);
    let response = http
        .get(format!("{}/v2/users/{id}", server.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.sigterm();
    assert!(server.wait().success());
}

#[tokio::test]
async fn verify_exits_3_and_names_the_user_of_a_damaged_store() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let server = binary::start(&live, "sync", &[]);
    let id = create(&reqwest::Client::new(), &server.base, "damaged@example.com").await;
    server.sigterm();
    assert!(server.wait().success());
    let out = latchkey(&["verify"], &live);
    assert!(out.status.success(), "{}", text(&out));

    let config = latchkey_engine::Config::default().data_dir(&live);
    let store = latchkey_storage::Store::open(&latchkey_engine::store_config(&config)).unwrap();
    let mut damage = latchkey_storage::WriteBatch::default();
    damage.delete(latchkey_engine::event_key(&id, 1));
    store.submit(b"damage", damage).wait().await.unwrap();
    // Dropped, not closed: the damage stays in the log, as after a crash. (A close would
    // checkpoint it, and a checkpoint writes run entries only once — the store's contract for
    // events, which the engine never deletes.)
    drop(store);

    let out = latchkey(&["verify"], &live);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("problem: {id}:")), "{stdout}");

    // a store sled cannot open: no serving, one line naming the way back
    std::fs::write(live.join("conf"), [0xFFu8; 64]).unwrap();
    let out = latchkey(&["--listen", "127.0.0.1:0"], &live);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("latchkey restore --from FILE"),
        "{}",
        text(&out)
    );
}

/// `--store redb`: a sled directory is refused by a redb server (and the reverse), naming what it
/// holds; it moves by an offline backup and a restore into redb, where the user's state, its
/// unlock, a restart and verify all hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_directory_moves_to_redb_by_backup_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let server = binary::start(&live, "sync", &[]);
    let http = reqwest::Client::new();
    let id = create(&http, &server.base, "moved@example.com").await;
    let (status, reply) = post(
        &http,
        &server.base,
        &format!("/v2/users/{id}/lock"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    server.sigterm();
    assert!(server.wait().success());

    let out = latchkey(&["--store", "redb", "--listen", "127.0.0.1:0"], &live);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds a sled store"),
        "{}",
        text(&out)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("latchkey restore --from FILE"),
        "not named as damage: {}",
        text(&out)
    );
    assert!(!live.join("latchkey.redb").exists(), "nothing written");

    let file = dir.path().join("sled.backup");
    let out = latchkey(&["backup", "--to", file.to_str().unwrap()], &live);
    assert!(out.status.success(), "{}", text(&out));
    let moved = dir.path().join("moved");
    let restore = [
        "--store",
        "redb",
        "restore",
        "--from",
        file.to_str().unwrap(),
    ];
    let out = latchkey(&restore, &moved);
    assert!(out.status.success(), "{}", text(&out));
    assert!(moved.join("latchkey.redb").exists());
    let out = latchkey(&["--store", "redb", "verify"], &moved);
    assert!(out.status.success(), "{}", text(&out));
    let out = latchkey(&["verify"], &moved);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds a redb store"),
        "{}",
        text(&out)
    );

    let state = |base: String, id: String| {
        let http = http.clone();
        async move {
            let (status, reply) = get(&http, &base, &format!("/v2/users/{id}")).await;
            assert_eq!(status, 200, "{reply}");
            reply["user"]["state"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
    };
    let server = binary::start(&moved, "sync", &["--store", "redb"]);
    assert_eq!(
        state(server.base.clone(), id.clone()).await,
        "USER_STATE_LOCKED"
    );
    let (status, reply) = post(
        &http,
        &server.base,
        &format!("/v2/users/{id}/unlock"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let other = create(&http, &server.base, "born-in-redb@example.com").await;
    server.sigterm();
    assert!(server.wait().success());

    let server = binary::start(&moved, "sync", &["--store", "redb"]);
    assert_eq!(
        state(server.base.clone(), id.clone()).await,
        "USER_STATE_ACTIVE"
    );
    assert_eq!(state(server.base.clone(), other).await, "USER_STATE_ACTIVE");
    let (status, listed) = post(&http, &server.base, "/v2/users", json!({})).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        listed["details"]["totalResult"], "3",
        "admin + two: {listed}"
    );
    server.sigterm();
    assert!(server.wait().success());
    let out = latchkey(&["--store", "redb", "verify"], &moved);
    assert!(out.status.success(), "{}", text(&out));
}

/// The admin CLI against a real server: list, get, lock, unlock, orgs create; tables and JSON;
/// exit 4 with the error id when the server refuses, 1 when it cannot be reached.
#[tokio::test]
async fn the_admin_cli_drives_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let server = binary::start(&live, "sync", &[]);
    let id = create(&reqwest::Client::new(), &server.base, "cli@example.com").await;
    let cli = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .args(["--server", &server.base])
            .env("LATCHKEY_TOKEN", TOKEN)
            .output()
            .unwrap()
    };
    let out = cli(&["users", "lock", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("locked {id}")));
    let out = cli(&["users", "lock", &id]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("USER-NOT-ACTIVE-OR-INITIAL"));

    let out = cli(&["users", "list", "--state", "locked"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && table.contains(&id) && table.contains("locked"),
        "{table}"
    );
    assert!(table.contains("1 of 1 users"), "{table}");
    let out = cli(&[
        "users",
        "list",
        "--username-prefix",
        "CLI@",
        "--output",
        "json",
    ]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["result"][0]["userId"], id.as_str(), "{listed}");

    let out = cli(&["users", "unlock", &id, "--output", "json"]);
    let unlocked: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sequence(&unlocked), 3, "{unlocked}");
    let out = cli(&["users", "get", &id]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("state         active") && shown.contains("cli@example.com"),
        "{shown}"
    );
    let out = cli(&["users", "get", "no-such-user"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("USER-NOT-FOUND"));
    let out = cli(&["orgs", "create", "cli-made"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("created organization"));

    let out = Command::new(BIN)
        .args([
            "users",
            "get",
            &id,
            "--server",
            "http://127.0.0.1:9",
            "--token",
            "t",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    server.sigterm();
    assert!(server.wait().success());
}
