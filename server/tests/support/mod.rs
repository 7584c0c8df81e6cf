//! Helpers shared by the tests that run the real `kmsim` binary as a process: start it over a
//! data directory, read its log, connect with the development token.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::Channel;

pub struct Server {
    pub child: Child,
    pub endpoint: String,
    /// Every log line so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    /// A failing test must not leave a server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Adds the development token to every request.
pub fn dev_token(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    request
        .metadata_mut()
        .insert("authorization", "Bearer kmsim-dev-token".parse().unwrap());
    Ok(request)
}

/// Starts `kmsim serve --dev` on an ephemeral port over `dir` and waits for its address.
pub fn start(dir: &Path) -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kmsim"));
    command.args(["serve", "--dev"]);
    start_command(command, dir)
}

/// Starts `kmsim serve <flags already in command>` over `dir`.
pub fn start_command(mut command: Command, dir: &Path) -> Server {
    let mut child = command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(dir)
        .env("KMSIM_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the kmsim binary starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let lines = Arc::clone(&log);
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            lines.lock().unwrap().push(line.clone());
            if !sent && line.contains("kmsim ready") {
                let value: serde_json::Value = serde_json::from_str(&line).unwrap();
                let address = value["fields"]["address"].as_str().unwrap().to_owned();
                let _ = tx.send(address);
                sent = true;
            }
        }
    });
    let address = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("kmsim logs its address");
    Server {
        child,
        endpoint: format!("http://{address}"),
        log,
    }
}

/// Waits until a log line contains `needle`.
pub fn wait_for_log(server: &Server, needle: &str) {
    for _ in 0..600 {
        if server
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the server never logged {needle:?}");
}

pub async fn channel(endpoint: &str) -> Channel {
    Channel::from_shared(endpoint.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub async fn channel_retry(endpoint: &str) -> Channel {
    for _ in 0..100 {
        if let Ok(channel) = Channel::from_shared(endpoint.to_owned())
            .unwrap()
            .connect()
            .await
        {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server at {endpoint} never accepted connections");
}
