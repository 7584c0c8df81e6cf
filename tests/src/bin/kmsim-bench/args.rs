//! The command line of `kmsim-bench`: what to load, how hard, for how long, and where the
//! API key comes from (a file or the environment, never the command line).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::calls::Rpc;

/// Load generator for kmsim: drives key operations and the health-check baseline over real
/// HTTP/2 connections with a real ES256 token, checks every status, and reports rates,
/// latency percentiles and CPU per call (its own and, given the pid, the server's).
#[derive(Debug, Parser)]
#[command(name = "kmsim-bench", version)]
pub struct Args {
    /// The server's gRPC address (ignored with --spawn-server).
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    pub server: String,
    /// File holding the API key exchanged for the bearer token (default with --spawn-server:
    /// `<data-dir>/admin-api-key`). The key may instead come from KMSIM_API_KEY.
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// The RPCs to load, in order, comma-separated: health, wrap, unwrap, rewrap, get, list,
    /// create, rotate. The health check is always measured first, as the baseline.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "health,wrap,unwrap,rewrap,get,list,create,rotate"
    )]
    pub rpcs: Vec<Rpc>,
    /// HTTP/2 connections (each driven by its own single-threaded runtime).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Concurrent streams in total, spread evenly over the connections (at least one each).
    #[arg(long, default_value_t = 32)]
    pub streams: usize,
    /// Measured seconds per RPC.
    #[arg(long, default_value = "5", value_parser = parse_seconds)]
    pub duration: Duration,
    /// Unmeasured warm-up seconds before each RPC's measurement.
    #[arg(long, default_value = "0.5", value_parser = parse_seconds)]
    pub warmup: Duration,
    /// A fixed total rate in calls/s instead of closed-loop load; latency is then counted from
    /// each call's scheduled start (no coordinated omission).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Fresh root keys created before the RotateKey phase (a key rotates at most once an
    /// hour, so each is rotated once); the phase ends early when they run out.
    #[arg(long, default_value_t = 2000)]
    pub rotation_keys: usize,
    /// Page size of the ListKeys calls.
    #[arg(long, default_value_t = 10)]
    pub list_page_size: i32,
    /// The server's process id: reports its CPU per call (and, with --scale, its resident
    /// memory per key).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Scale mode: create this many keys and report durable create throughput, memory and
    /// disk per key, one ListKeys page latency, AdvanceClock of 100 days and (with
    /// --spawn-server) the start-up time after a restart. No load phases.
    #[arg(long)]
    pub scale: Option<usize>,
    /// Start (and for --scale, restart) the `kmsim` binary at this path, `serve --dev --clock
    /// simulated` on a free loopback port over --data-dir.
    #[arg(long, requires = "data_dir")]
    pub spawn_server: Option<PathBuf>,
    /// The server's data directory (created by --spawn-server; measured by --scale).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is not a duration"))
}

impl Args {
    /// Refuses combinations that cannot run, before any connection is made.
    pub fn check(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.streams < self.connections {
            return Err("--streams must be at least --connections".into());
        }
        if self.duration.is_zero() {
            return Err("--duration must be positive".into());
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err("--rate must be a positive number of calls/s".into());
        }
        if !(1..=5000).contains(&self.list_page_size) {
            return Err("--list-page-size must be 1 to 5000".into());
        }
        if self.scale == Some(0) {
            return Err("--scale must be at least 1".into());
        }
        Ok(())
    }
}
