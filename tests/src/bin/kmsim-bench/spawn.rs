//! A `kmsim` server that `kmsim-bench` starts itself (`--spawn-server`): `serve --dev --clock
//! simulated` on a free loopback port over the given data directory; stopped with SIGTERM
//! (graceful, every write flushed) and started again to time a restart.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The longest a start-up may take before the bench gives up.
const START_LIMIT: Duration = Duration::from_secs(300);
/// The longest a graceful stop may take before the process is killed.
const STOP_LIMIT: Duration = Duration::from_secs(30);

/// A running `kmsim` child process.
pub struct SpawnedServer {
    binary: PathBuf,
    data_dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl SpawnedServer {
    /// Starts `binary` over `data_dir` and waits until it answers SERVING; returns the server
    /// and the time from spawn to SERVING.
    pub async fn start(binary: &Path, data_dir: &Path) -> Result<(Self, Duration), String> {
        // A free port, released for the child to bind; kept for restarts.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|error| format!("no free loopback port: {error}"))?
            .port();
        let mut server = Self {
            binary: binary.to_owned(),
            data_dir: data_dir.to_owned(),
            port,
            child: None,
        };
        let took = server.launch().await?;
        Ok((server, took))
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The child's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server gracefully and starts it again; returns the time from spawn to
    /// SERVING.
    pub async fn restart(&mut self) -> Result<Duration, String> {
        self.stop()?;
        self.launch().await
    }

    /// Sends SIGTERM and waits for the exit (SIGKILL after [`STOP_LIMIT`]).
    pub fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .map_err(|error| format!("cannot run kill: {error}"))?;
        if !sent.success() {
            return Err(format!("kill -TERM {} failed", child.id()));
        }
        let deadline = Instant::now() + STOP_LIMIT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) | Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err("the server did not stop on SIGTERM; killed".into());
                }
            }
        }
    }

    async fn launch(&mut self) -> Result<Duration, String> {
        let started = Instant::now();
        let mut child = Command::new(&self.binary)
            .args(["serve", "--dev", "--clock", "simulated", "--listen"])
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("KMSIM_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", self.binary.display()))?;
        let endpoint = self.endpoint();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("the server exited during start-up: {status}"));
            }
            if serving(&endpoint).await {
                self.child = Some(child);
                return Ok(started.elapsed());
            }
            if started.elapsed() > START_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the server was not SERVING within {START_LIMIT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// True when `endpoint` accepts a connection and its health check answers SERVING.
async fn serving(endpoint: &str) -> bool {
    let Ok(endpoint) = crate::load::endpoint(endpoint) else {
        return false;
    };
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .is_ok_and(|answer| answer.into_inner().status == ServingStatus::Serving as i32)
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}
