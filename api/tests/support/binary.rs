//! The real `latchkey` binary as a child process: start on port 0 over a data dir, read the
//! address from its log, stop it with SIGTERM or SIGKILL (and SIGKILL when its handle is dropped
//! with the process still there, as when a test fails first).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_latchkey");
pub const TOKEN: &str = "process-test-token";

pub struct Running {
    pub child: Child,
    pub base: String,
}

/// Starts the binary over `dir` with `durability` (`sync` / `async`) and extra flags.
pub fn start(dir: &Path, durability: &str, extra: &[&str]) -> Running {
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--durability",
            durability,
            "--log",
            "info",
        ])
        .args(extra)
        .arg("--data-dir")
        .arg(dir)
        .env("LATCHKEY_BOOTSTRAP_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn latchkey");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let base = loop {
        assert!(Instant::now() < deadline, "latchkey did not start");
        let line = lines.next().expect("latchkey exited early").expect("read");
        if let Some(at) = line.find("listening on http://") {
            let rest = &line[at + "listening on ".len()..];
            break rest.split_whitespace().next().expect("address").to_owned();
        }
    };
    // keep draining stderr so the server never blocks on a full pipe
    std::thread::spawn(move || for _ in lines {});
    Running { child, base }
}

impl Running {
    pub fn sigterm(&self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    /// SIGKILL, and reap: the process is gone when this returns.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    pub fn wait(mut self) -> ExitStatus {
        self.child.wait().expect("wait")
    }
}

/// A test that fails before stopping its binary must not leave it running (or stopped, after a
/// SIGSTOP) once the test process is gone: SIGKILL it and reap it. Nothing to do if it exited.
impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A REST POST to a running binary with [`TOKEN`]: the status and the JSON answer (`Null` when
/// there is none); `None` when the request never got an answer (the server was killed).
pub async fn try_post(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    body: serde_json::Value,
) -> Option<(u16, serde_json::Value)> {
    let response = client
        .post(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or_default()))
}

/// [`try_post`] to a server that must answer.
pub async fn post(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    try_post(client, base, path, body).await.expect("request")
}

/// A REST GET to a running binary with [`TOKEN`] that must answer: the status and the JSON
/// answer (`Null` when there is none).
pub async fn get(client: &reqwest::Client, base: &str, path: &str) -> (u16, serde_json::Value) {
    let response = client
        .get(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// The body of AddHumanUser for `email` (as username), with a precomputed password hash.
pub fn human(email: &str) -> serde_json::Value {
    serde_json::json!({
        "profile": {"givenName": "B", "familyName": "R"},
        "email": {"email": email},
        "hashedPassword": {"hash": super::HASH},
    })
}

/// Creates a human user on a running binary; its id.
pub async fn create_human(client: &reqwest::Client, base: &str, email: &str) -> String {
    let (status, created) = post(client, base, "/v2/users/human", human(email)).await;
    assert_eq!(status, 200, "{created}");
    created["userId"].as_str().expect("userId").to_owned()
}

/// `details.sequence` of an answer.
pub fn sequence(reply: &serde_json::Value) -> u64 {
    reply["details"]["sequence"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no sequence in {reply}"))
}
