//! The conventions operators expect, against the real binary: settings from flags, variables and
//! a config file in that order; the bootstrap token from a file; invalid values refused at
//! start-up; JSON log lines with the request id the answer carries; `--version`, `healthcheck`,
//! `completions` and `config check`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use support::binary::BIN;

fn latchkey() -> Command {
    let mut command = Command::new(BIN);
    command
        .env_remove("LATCHKEY_BOOTSTRAP_TOKEN")
        .env_remove("LATCHKEY_CONFIG")
        .env_remove("LATCHKEY_LISTEN");
    command
}

/// The server as a child with its stderr lines on a channel.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Server {
    fn start(command: &mut Command) -> Server {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Server { child, lines }
    }

    /// The next line that contains `needle`.
    fn line_with(&self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    fn base(&self) -> String {
        let line = self.line_with("listening on http://");
        let at = line.find("http://").unwrap();
        line[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || ":/.".contains(*c))
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn flags_beat_variables_beat_the_file_and_config_check_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "latchkey.toml",
        "listen = \"127.0.0.1:7001\"\ncall-timeout = \"7s\"\ncheck_queue = 9\nlog = \"warn\"\n",
    );
    let out = latchkey()
        .args(["config", "check", "--config", &file, "--call-timeout", "3s"])
        .env("LATCHKEY_LISTEN", "127.0.0.1:7002")
        .env("LATCHKEY_BOOTSTRAP_TOKEN", "secret-never-printed")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
            .to_owned()
    };
    assert!(line("listen").contains("127.0.0.1:7002") && line("listen").contains("(environment)"));
    assert!(line("call-timeout").contains("3s") && line("call-timeout").contains("(command line)"));
    assert!(line("check-queue").contains('9') && line("check-queue").contains("(config file)"));
    assert!(line("durability").contains("(default)"));
    assert!(!stdout.contains("secret-never-printed"), "{stdout}");
    assert!(stdout.contains("configuration is valid"));

    // the file's own values are validated like flags
    let bad = write(dir.path(), "bad.toml", "durability = \"eventually\"\n");
    let out = latchkey()
        .args(["config", "check", "--config", &bad])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("eventually"));
}

#[test]
fn invalid_values_are_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in [
        (&["--log", "verbose"][..], "names no log level"),
        (&["--log-format", "xml"], "xml"),
        (&["--listen", "somewhere"], "somewhere"),
        (
            &["--bootstrap-token-file", "/no/such/token"],
            "/no/such/token",
        ),
    ] {
        let out = latchkey()
            .args(args)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(
                ["--listen", "127.0.0.1:0"]
                    .iter()
                    .filter(|_| args[0] != "--listen"),
            )
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// JSON logs: every line parses; at debug, one line per request carries the request id that the
/// answer's `x-request-id` header returns. The admin token came from a file.
#[tokio::test]
async fn json_log_lines_carry_the_request_id_the_answer_returns() {
    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "token", "token-from-a-file\n");
    let server = Server::start(
        latchkey()
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--log", "info,tower_http=debug"])
            .args(["--bootstrap-token-file", &token])
            .arg("--data-dir")
            .arg(dir.path().join("data")),
    );
    let base = server.base();
    let http = reqwest::Client::new();
    let answer = http
        .get(format!("{base}/v2/users/nobody"))
        .bearer_auth("token-from-a-file")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404, "authenticated with the file's token");
    let id = answer.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let line = server.line_with(&id);
    let parsed: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(parsed["span"]["request_id"], id.as_str(), "{parsed}");
    assert_eq!(parsed["span"]["path"], "/v2/users/nobody", "{parsed}");
    assert_eq!(parsed["status"], 404, "{parsed}");
    assert!(
        parsed["level"].is_string() && parsed["timestamp"].is_string(),
        "{parsed}"
    );
    // a client's own id is kept
    let answer = http
        .get(format!("{base}/healthz"))
        .header("x-request-id", "client-chose-this")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.headers()["x-request-id"], "client-chose-this");
    let line = server.line_with("client-chose-this");
    serde_json::from_str::<Value>(&line).unwrap();

    // healthcheck: ready → 0; nothing there → 1
    let out = latchkey()
        .args(["healthcheck", "--url", &base])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = latchkey()
        .args(["healthcheck", "--url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn version_and_completions() {
    let out = latchkey().arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        version.starts_with("latchkey 0.") && version.contains("commit"),
        "{version}"
    );
    let out = latchkey().args(["completions", "bash"]).output().unwrap();
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && script.contains("_latchkey()"),
        "{script}"
    );
    assert!(script.contains("--data-dir") && script.contains("restore"));
}

/// TLS: HTTPS on the main port with HTTP/1.1 and h2 by ALPN, a self-signed certificate; health
/// and metrics on the plain management port only.
#[tokio::test]
async fn tls_on_the_main_port_and_health_on_the_management_port() {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let identity =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = write(dir.path(), "cert.pem", &identity.cert.pem());
    let key = write(dir.path(), "key.pem", &identity.signing_key.serialize_pem());
    let server = Server::start(
        latchkey()
            .args([
                "--listen",
                "127.0.0.1:0",
                "--management-listen",
                "127.0.0.1:0",
            ])
            .args(["--tls-cert", &cert, "--tls-key", &key])
            .env("LATCHKEY_BOOTSTRAP_TOKEN", "tls-token")
            .arg("--data-dir")
            .arg(dir.path().join("data")),
    );
    let management = server.base(); // the management line comes first
    let line = server.line_with("listening on https://");
    let at = line.find("https://").unwrap() + "https://".len();
    let addr: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || ".:".contains(*c))
        .collect();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(identity.cert.der().clone()).unwrap();
    let connect = |alpn: &[&[u8]]| {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let addr = addr.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            connector.connect(name, tcp).await.unwrap()
        }
    };

    // HTTP/1.1 over TLS, authenticated
    let mut tls = connect(&[b"http/1.1"]).await;
    tls.write_all(
        b"GET /v2/users/nobody HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer tls-token\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("USER-NOT-FOUND"), "{answer}");

    // h2 by ALPN (what gRPC clients ask for)
    let tls = connect(&[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::get("https://localhost/v2/users/nobody")
        .header("authorization", "Bearer tls-token")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 404);

    // management: plain HTTP, health and metrics there and not on the main port
    let http = reqwest::Client::new();
    for path in ["/readyz", "/healthz", "/metrics"] {
        let answer = http
            .get(format!("{management}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{path}");
    }
    let mut tls = connect(&[b"http/1.1"]).await;
    tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let out = latchkey()
        .args(["healthcheck", "--management-listen"])
        .arg(management.trim_start_matches("http://"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // a key that does not match is refused at start-up
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let wrong = write(dir.path(), "wrong.pem", &other.signing_key.serialize_pem());
    let out = latchkey()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &wrong,
        ])
        .arg("--data-dir")
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TLS identity"));
}

/// The example configuration in `deploy/` is valid as shipped.
#[test]
fn the_example_config_file_checks() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/latchkey.toml");
    let out = latchkey()
        .args(["config", "check", "--config", file])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("management-listen  = 127.0.0.1:9000"),
        "{stdout}"
    );
}

/// The files in `deploy/` name only settings the binary has: every `LATCHKEY_*` variable of the
/// Dockerfile and the systemd unit is one `--help` lists (an unknown one would be ignored
/// silently), the unit's command line parses, and the container's health check command runs
/// against a server started with the image's settings.
#[test]
fn deploy_files_name_only_real_settings() {
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    let help = latchkey().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let dockerfile = std::fs::read_to_string(format!("{deploy}/Dockerfile")).unwrap();
    let unit = std::fs::read_to_string(format!("{deploy}/latchkey.service")).unwrap();
    let mut image_env = Vec::new();
    for text in [&dockerfile, &unit] {
        for word in text.split(|c: char| c.is_whitespace() || c == '\\') {
            let word = word.trim_start_matches("Environment=");
            if let Some((name, value)) = word.split_once('=') {
                if name.starts_with("LATCHKEY_") {
                    let known = help.contains(&format!("[env: {name}="))
                        || help.contains(&format!("[env: {name}]"));
                    assert!(known, "unknown setting {name}");
                    if std::ptr::eq(text, &dockerfile) {
                        image_env.push((name.to_owned(), value.to_owned()));
                    }
                }
            }
        }
    }
    assert!(image_env.len() >= 4, "{image_env:?}");
    // the unit's command line, as systemd runs it
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    assert_eq!(args[0], "serve");
    let example = format!("{deploy}/latchkey.toml");
    let args: Vec<&str> = args
        .iter()
        .map(|a| {
            if a.ends_with(".toml") {
                example.as_str()
            } else {
                a
            }
        })
        .collect();
    let out = latchkey()
        .args(["config", "check"])
        .args(&args[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // the image's settings (ports made free, the volume a temp dir), then its health check
    let dir = tempfile::tempdir().unwrap();
    let mut command = latchkey();
    for (name, value) in &image_env {
        command.env(name, value);
    }
    let server = Server::start(
        command
            .env("LATCHKEY_LISTEN", "127.0.0.1:0")
            .env("LATCHKEY_MANAGEMENT_LISTEN", "127.0.0.1:0")
            .env("LATCHKEY_DATA_DIR", dir.path()),
    );
    let management = server.base();
    let check = dockerfile
        .lines()
        .find(|l| l.contains("CMD [\"latchkey\", \"healthcheck\""))
        .unwrap();
    let check_args: Vec<String> = check
        .split('[')
        .nth(1)
        .unwrap()
        .trim_end_matches(']')
        .split(", ")
        .map(|a| {
            a.trim_matches('"')
                .replace("http://127.0.0.1:9000", &management)
        })
        .skip(1)
        .collect();
    let out = latchkey().args(&check_args).output().unwrap();
    assert!(
        out.status.success(),
        "{check_args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
