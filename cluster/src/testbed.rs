//! NATS clusters on loopback, for the tests and the harness.
//!
//! A [`Testbed`] runs `n` pinned `nats-server`s (`nats_server.rs`) clustered over routes on
//! free loopback ports, with JetStream on a temporary directory each, one Go thread each
//! (`GOMAXPROCS=1`: the machines this runs on have two cores, shared with everything else).
//! It answers once JetStream has a meta leader, so a test can create replicated streams at once.
//! The faults a nemesis needs are here too: kill -9, pause (SIGSTOP), resume and restart of one
//! server, which keeps its store directory and ports. Dropping the testbed kills every server.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{nats_server, Error};

/// How long a server may take to accept connections and JetStream to elect a meta leader.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// One server of the testbed.
struct Server {
    name: String,
    client_port: u16,
    config: PathBuf,
    log: PathBuf,
    process: Option<Child>,
}

/// A running NATS cluster on loopback.
pub struct Testbed {
    binary: PathBuf,
    servers: Vec<Server>,
    // Kept for the servers' stores and logs; removed when the testbed is dropped.
    dir: tempfile::TempDir,
}

impl Testbed {
    /// Starts `n` servers (1 for a lone server, 3 for a cluster that survives one fault) and
    /// waits until JetStream answers on every one of them.
    pub async fn start(n: usize) -> Result<Testbed, Error> {
        let binary = tokio::task::spawn_blocking(nats_server::path)
            .await
            .map_err(|e| Error::Testbed(e.to_string()))??;
        let dir = tempfile::tempdir().map_err(|e| Error::Testbed(e.to_string()))?;
        let ports = free_ports(2 * n)?;
        let (client_ports, route_ports) = ports.split_at(n);
        let mut servers = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("n{}", i + 1);
            let store = dir.path().join(&name);
            let mut config = format!(
                "server_name: {name}\nlisten: \"127.0.0.1:{}\"\n\
                 jetstream {{\n  store_dir: {:?}\n  max_memory_store: 64MB\n  max_file_store: 2GB\n}}\n",
                client_ports[i], store
            );
            if n > 1 {
                let routes: Vec<String> = route_ports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, port)| format!("\"nats-route://127.0.0.1:{port}\""))
                    .collect();
                config.push_str(&format!(
                    "cluster {{\n  name: latchkey\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}\n",
                    route_ports[i],
                    routes.join(", ")
                ));
            }
            let config_path = dir.path().join(format!("{name}.conf"));
            std::fs::write(&config_path, config).map_err(|e| Error::Testbed(e.to_string()))?;
            servers.push(Server {
                log: dir.path().join(format!("{name}.log")),
                name,
                client_port: client_ports[i],
                config: config_path,
                process: None,
            });
        }
        let mut testbed = Testbed {
            binary,
            servers,
            dir,
        };
        for i in 0..n {
            testbed.spawn(i)?;
        }
        for i in 0..n {
            testbed.wait_ready(i).await?;
        }
        Ok(testbed)
    }

    /// The client URL of server `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.servers[i].client_port)
    }

    /// Every server's client URL, for a client that may fail over between them.
    pub fn urls(&self) -> Vec<String> {
        (0..self.servers.len()).map(|i| self.url(i)).collect()
    }

    /// The index of the server called `name` (as JetStream names stream leaders).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.name == name)
    }

    /// The index of the server leading `stream` (a partition's, `Layout::stream_name`, or a
    /// bucket's, `KV_<bucket>`), asked until one leads it, for up to 30 s.
    pub async fn leader_of(&self, stream: &str) -> Result<usize, Error> {
        let client = async_nats::connect(self.urls())
            .await
            .map_err(|e| Error::Testbed(e.to_string()))?;
        let js = async_nats::jetstream::new(client);
        let since = Instant::now();
        loop {
            // The stream's info is asked of the meta leader, which may itself be moving: a
            // request that times out is asked again.
            let leader = match js.get_stream(stream).await {
                Ok(mut stream) => stream
                    .info()
                    .await
                    .ok()
                    .and_then(|info| info.cluster.clone())
                    .and_then(|cluster| cluster.leader),
                Err(_) => None,
            };
            if let Some(i) = leader.and_then(|name| self.index_of(&name)) {
                return Ok(i);
            }
            if since.elapsed() > READY_WITHIN {
                return Err(Error::Testbed(format!("{stream} has no leader")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Asks `stream`'s leader to step down in favour of server `to` (a replica of the stream).
    pub async fn move_leader(&self, stream: &str, to: usize) -> Result<(), Error> {
        let client = async_nats::connect(self.urls())
            .await
            .map_err(|e| Error::Testbed(e.to_string()))?;
        let js = async_nats::jetstream::new(client);
        crate::membership::move_leader(&js, stream, &self.servers[to].name)
            .await
            .map_err(|e| Error::Testbed(e.to_string()))
    }

    /// kill -9 of server `i`; its store stays for a restart.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut process) = self.servers[i].process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts server `i` again after a kill, on its ports and store, and waits until it is ready.
    pub async fn restart(&mut self, i: usize) -> Result<(), Error> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_ready(i).await
    }

    /// SIGSTOP of server `i`: it keeps its sockets and state but does nothing, like a process
    /// stuck in a long pause.
    pub fn pause(&self, i: usize) {
        self.signal(i, "STOP");
    }

    /// SIGCONT of a paused server `i`.
    pub fn resume(&self, i: usize) {
        self.signal(i, "CONT");
    }

    /// What server `i` logged so far (for a failing test's message).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.servers[i].log).unwrap_or_default()
    }

    fn signal(&self, i: usize, signal: &str) {
        if let Some(process) = &self.servers[i].process {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(process.id().to_string())
                .status();
        }
    }

    fn spawn(&mut self, i: usize) -> Result<(), Error> {
        let server = &mut self.servers[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&server.log)
            .map_err(|e| Error::Testbed(e.to_string()))?;
        let log_err = log.try_clone().map_err(|e| Error::Testbed(e.to_string()))?;
        let process = Command::new(&self.binary)
            .arg("--config")
            .arg(&server.config)
            .env("GOMAXPROCS", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| Error::Testbed(format!("{}: {e}", self.binary.display())))?;
        server.process = Some(process);
        Ok(())
    }

    /// Waits until server `i` accepts a client and its JetStream answers an account query
    /// (which needs the cluster's meta leader).
    async fn wait_ready(&mut self, i: usize) -> Result<(), Error> {
        let url = self.url(i);
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < READY_WITHIN {
            if let Some(process) = self.servers[i].process.as_mut() {
                if let Ok(Some(status)) = process.try_wait() {
                    return Err(Error::Testbed(format!(
                        "{} exited ({status}): {}",
                        self.servers[i].name,
                        self.log(i)
                    )));
                }
            }
            match async_nats::connect(&url).await {
                // Asked in raw JSON, so any server version's answer is understood.
                Ok(client) => match client.request("$JS.API.INFO", "".into()).await {
                    Ok(answer) => {
                        let answer: serde_json::Value =
                            serde_json::from_slice(&answer.payload).unwrap_or_default();
                        match answer.get("error") {
                            None if answer.is_object() => return Ok(()),
                            error => last = format!("{error:?}"),
                        }
                    }
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::Testbed(format!(
            "{} not ready within {READY_WITHIN:?} ({last}); its log:\n{}",
            self.servers[i].name,
            self.log(i)
        )))
    }

    /// The testbed's directory (stores, configurations, logs).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}

/// `n` distinct loopback ports free at the time of asking (held together, then released).
fn free_ports(n: usize) -> Result<Vec<u16>, Error> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Testbed(e.to_string()))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Testbed(e.to_string()))
}
