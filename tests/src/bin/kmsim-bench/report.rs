//! The figures of a run and how they are printed: one row per RPC (rate, latency
//! percentiles, errors by code, CPU per call, ratios to the health-check baseline), the scale
//! figures, as a table or as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::calls::Rpc;
use crate::load::Outcome;

/// The figures of one loaded RPC.
#[derive(Debug, Clone, Serialize)]
pub struct RpcReport {
    /// The RPC's name.
    pub rpc: String,
    /// Successful calls measured.
    pub calls: u64,
    /// Successful calls per second.
    pub calls_per_sec: f64,
    /// Latency percentiles of successful calls, in microseconds.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// The slowest call.
    pub max_us: f64,
    /// Failed calls by gRPC code.
    pub errors: BTreeMap<String, u64>,
    /// Server CPU (user + system) per successful call, when its pid is known.
    pub server_cpu_us_per_call: Option<f64>,
    /// `kmsim-bench`'s own CPU per call.
    pub bench_cpu_us_per_call: Option<f64>,
    /// calls/s relative to the health check in the same run.
    pub rate_ratio_to_health: Option<f64>,
    /// Server CPU per call relative to the health check's.
    pub server_cpu_ratio_to_health: Option<f64>,
    /// Why the measured part ended early, if it did.
    pub note: Option<String>,
}

impl RpcReport {
    /// The figures of `outcome`, with the CPU consumed while it was measured.
    pub fn new(
        rpc: Rpc,
        mut outcome: Outcome,
        server_cpu: Option<Duration>,
        bench_cpu: Option<Duration>,
    ) -> Self {
        outcome.latencies_ns.sort_unstable();
        let sorted = &outcome.latencies_ns;
        let calls = sorted.len() as u64;
        let seconds = outcome.elapsed.as_secs_f64();
        let per_call = |cpu: Option<Duration>| {
            cpu.filter(|_| calls > 0)
                .map(|cpu| cpu.as_secs_f64() * 1e6 / calls as f64)
        };
        Self {
            rpc: rpc.to_string(),
            calls,
            calls_per_sec: if seconds > 0.0 {
                calls as f64 / seconds
            } else {
                0.0
            },
            p50_us: percentile_us(sorted, 0.50),
            p90_us: percentile_us(sorted, 0.90),
            p99_us: percentile_us(sorted, 0.99),
            p999_us: percentile_us(sorted, 0.999),
            max_us: sorted.last().map_or(0.0, |&ns| ns as f64 / 1e3),
            errors: outcome.errors,
            server_cpu_us_per_call: per_call(server_cpu),
            bench_cpu_us_per_call: per_call(bench_cpu),
            rate_ratio_to_health: None,
            server_cpu_ratio_to_health: None,
            note: None,
        }
    }

    /// Fills the ratios to `baseline` (the health check of the same run).
    pub fn relate_to(&mut self, baseline: &RpcReport) {
        if baseline.calls_per_sec > 0.0 {
            self.rate_ratio_to_health = Some(self.calls_per_sec / baseline.calls_per_sec);
        }
        if let (Some(cpu), Some(base)) =
            (self.server_cpu_us_per_call, baseline.server_cpu_us_per_call)
            && base > 0.0
        {
            self.server_cpu_ratio_to_health = Some(cpu / base);
        }
    }

    /// Failed calls in total.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The nearest-rank percentile `p` (0 < p <= 1) of sorted nanoseconds, in microseconds.
fn percentile_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1e3
}

/// The figures of `--scale`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScaleReport {
    /// Keys created.
    pub keys: usize,
    /// Failed CreateKey calls by code.
    pub create_errors: BTreeMap<String, u64>,
    /// Durable creates per second.
    pub creates_per_sec: f64,
    /// Server resident memory after the creates, per key (whole process / keys).
    pub rss_bytes_per_key: Option<f64>,
    /// Server resident memory growth during the creates, per key.
    pub rss_growth_bytes_per_key: Option<f64>,
    /// Data directory size per key.
    pub data_dir_bytes_per_key: Option<f64>,
    /// Start-up time to SERVING after a restart (with --spawn-server).
    pub restart_to_serving_ms: Option<f64>,
    /// Server resident memory after the restart, per key.
    pub rss_after_restart_bytes_per_key: Option<f64>,
    /// One ListKeys page (the fastest of five, and the median), in milliseconds.
    pub list_page_ms_min: f64,
    /// Median of the five.
    pub list_page_ms_median: f64,
    /// Keys in that page.
    pub list_page_size: i32,
    /// One AdvanceClock of 100 days, in milliseconds.
    pub advance_100_days_ms: f64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The load parameters.
    pub connections: usize,
    /// Concurrent streams.
    pub streams: usize,
    /// Measured seconds per RPC.
    pub duration_secs: f64,
    /// Fixed total rate, if any.
    pub rate: Option<f64>,
    /// One row per RPC, the health check first.
    pub rpcs: Vec<RpcReport>,
    /// The scale figures, with --scale.
    pub scale: Option<ScaleReport>,
}

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        if !self.rpcs.is_empty() {
            let load = match self.rate {
                Some(rate) => format!("fixed rate {rate} calls/s"),
                None => "closed loop".into(),
            };
            let _ = writeln!(
                out,
                "{} streams over {} connections, {} s per RPC, {load}",
                self.streams, self.connections, self.duration_secs
            );
            let _ = writeln!(
                out,
                "{:<13} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9} {:>7} {:>7}  errors",
                "rpc",
                "calls/s",
                "p50 µs",
                "p90 µs",
                "p99 µs",
                "p99.9 µs",
                "srv µs/c",
                "bench µs/c",
                "x health",
                "cpu x",
                "calls"
            );
            for row in &self.rpcs {
                let errors = if row.errors.is_empty() {
                    "none".to_owned()
                } else {
                    row.errors
                        .iter()
                        .map(|(code, count)| format!("{code}={count}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                let _ = writeln!(
                    out,
                    "{:<13} {:>10.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>10} {:>10} {:>9} {:>7} {:>7}  {errors}",
                    row.rpc,
                    row.calls_per_sec,
                    row.p50_us,
                    row.p90_us,
                    row.p99_us,
                    row.p999_us,
                    optional(row.server_cpu_us_per_call, 1),
                    optional(row.bench_cpu_us_per_call, 1),
                    optional(row.rate_ratio_to_health, 2),
                    optional(row.server_cpu_ratio_to_health, 2),
                    row.calls,
                );
                if let Some(note) = &row.note {
                    let _ = writeln!(out, "{:<13} note: {note}", "");
                }
            }
        }
        if let Some(scale) = &self.scale {
            let _ = writeln!(out, "scale: {} keys", scale.keys);
            let mut line = |name: &str, value: String| {
                let _ = writeln!(out, "  {name:<38} {value}");
            };
            line(
                "durable CreateKey/s",
                format!("{:.0}", scale.creates_per_sec),
            );
            line("CreateKey errors", format!("{:?}", scale.create_errors));
            line(
                "server RSS / key (bytes)",
                optional(scale.rss_bytes_per_key, 0),
            );
            line(
                "server RSS growth / key (bytes)",
                optional(scale.rss_growth_bytes_per_key, 0),
            );
            line(
                "data directory / key (bytes)",
                optional(scale.data_dir_bytes_per_key, 0),
            );
            line(
                "restart to SERVING (ms)",
                optional(scale.restart_to_serving_ms, 0),
            );
            line(
                "server RSS / key after restart (bytes)",
                optional(scale.rss_after_restart_bytes_per_key, 0),
            );
            line(
                &format!(
                    "ListKeys page of {} (ms, min / median)",
                    scale.list_page_size
                ),
                format!(
                    "{:.2} / {:.2}",
                    scale.list_page_ms_min, scale.list_page_ms_median
                ),
            );
            line(
                "AdvanceClock 100 days (ms)",
                format!("{:.1}", scale.advance_100_days_ms),
            );
        }
        out
    }
}

fn optional(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        assert_eq!(percentile_us(&sorted, 0.50), 500.0);
        assert_eq!(percentile_us(&sorted, 0.999), 999.0);
        assert_eq!(percentile_us(&[7000], 0.999), 7.0);
        assert_eq!(percentile_us(&[], 0.5), 0.0);
    }

    #[test]
    fn ratios_use_the_baseline_of_the_same_run() {
        let outcome = |calls: u64| Outcome {
            latencies_ns: vec![1000; calls as usize],
            errors: BTreeMap::new(),
            elapsed: Duration::from_secs(1),
        };
        let health = RpcReport::new(
            Rpc::Health,
            outcome(400),
            Some(Duration::from_millis(10)),
            None,
        );
        let mut wrap = RpcReport::new(
            Rpc::Wrap,
            outcome(100),
            Some(Duration::from_millis(10)),
            None,
        );
        wrap.relate_to(&health);
        assert_eq!(wrap.rate_ratio_to_health, Some(0.25));
        assert_eq!(wrap.server_cpu_ratio_to_health, Some(4.0));
        assert_eq!(wrap.bench_cpu_us_per_call, None);
    }
}
