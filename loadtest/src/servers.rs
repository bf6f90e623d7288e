//! Servers the harness runs as separate processes by re-executing itself, so Latchkey and the
//! baseline pay the same process and connection costs: `serve-latchkey` runs the real server
//! code (the same `latchkey_api::run::run` as the `latchkey` binary) and `serve-baseline` runs a
//! bare axum handler that answers every Latchkey path with a fixed unlock response.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Router;

pub const TOKEN: &str = "loadtest-admin-token";

const FIXED: &str = r#"{"details":{"sequence":"3","changeDate":"2025-03-05T21:29:22.046Z","resourceOwner":"69629023906488334","creationDate":"2025-03-05T21:29:20.000Z"}}"#;

/// The baseline: what an HTTP stack alone costs for the same requests.
pub async fn serve_baseline(listen: std::net::SocketAddr) -> std::io::Result<()> {
    let fixed = || async { ([("content-type", "application/json")], FIXED) };
    let app = Router::new()
        .route("/v2/users/{id}/{action}", post(fixed))
        .route("/v2/users/{id}", get(fixed))
        .route("/v2/users/human", post(fixed))
        .route("/v2/sessions", post(fixed));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("baseline listening on http://{}", listener.local_addr()?);
    // The same socket settings as Latchkey's server.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}

/// A child server process, killed on drop.
pub struct Spawned {
    child: Child,
    pub base: String,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server gracefully (SIGTERM) and waits.
    pub fn stop(mut self) {
        #[cfg(unix)]
        {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Starts `self <args>` and waits for its "listening on http://ADDR" line.
pub fn spawn_self(args: &[&str], data_dir: Option<&Path>) -> Result<Spawned, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let mut command = Command::new(exe);
    command
        .args(args)
        .env("LATCHKEY_BOOTSTRAP_TOKEN", TOKEN)
        .env("LATCHKEY_LOG", "warn,latchkey_api::run=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(dir) = data_dir {
        command.arg("--data-dir").arg(dir);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start server: {e}"))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    // Read on a thread so a server that never announces itself cannot hang the harness.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("listening on http://") {
                let rest = &line[at + "listening on ".len()..];
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
        }
    });
    let base = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(base) => base,
        Err(_) => {
            let _ = child.kill();
            return Err("server did not start listening within 30 s".into());
        }
    };
    Ok(Spawned { child, base })
}
