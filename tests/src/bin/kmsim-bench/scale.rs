//! `--scale N`: creates N root keys in one instance and measures what that costs the server
//! (durable create throughput, resident memory and data-directory bytes per key), what it
//! costs later calls (one ListKeys page, AdvanceClock of 100 days) and, for a server the
//! bench started itself, the start-up time to SERVING after a restart.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kmsim_client::BearerAuth;
use kmsim_proto::v1 as pb;
use pb::key_service_client::KeyServiceClient;
use tonic::transport::Channel;

use crate::calls;
use crate::procfs::{self, Process};
use crate::report::ScaleReport;
use crate::spawn::SpawnedServer;

/// The jump of the AdvanceClock figure.
const ADVANCE: Duration = Duration::from_secs(100 * 86_400);
/// ListKeys is timed this many times; the fastest and the median are reported.
const LIST_SAMPLES: usize = 5;

/// Where the scale run operates.
pub struct Target<'a> {
    /// A connection to the server.
    pub channel: Channel,
    /// The admin's token.
    pub auth: BearerAuth,
    /// The server's pid, for its memory.
    pub pid: Option<u32>,
    /// The server's data directory, for its size.
    pub data_dir: Option<&'a Path>,
    /// The server, when the bench started it (for the restart).
    pub spawned: Option<&'a mut SpawnedServer>,
    /// The API key, to authenticate again after a restart.
    pub api_key: &'a str,
}

/// Runs the scale measurement for `keys` keys created by `streams` concurrent streams.
pub async fn run(
    target: Target<'_>,
    keys: usize,
    streams: usize,
    list_page_size: i32,
) -> Result<ScaleReport, String> {
    let Target {
        mut channel,
        mut auth,
        pid,
        data_dir,
        spawned,
        api_key,
    } = target;
    let rss_before = pid
        .map(|pid| procfs::resident_bytes(Process::Pid(pid)))
        .transpose()?;
    let instance = calls::create_instance(&channel, &auth)
        .await
        .map_err(|status| format!("CreateInstance failed: {status}"))?;

    let started = Instant::now();
    let (created, create_errors) = create_keys(&channel, &auth, &instance, keys, streams).await;
    let elapsed = started.elapsed().as_secs_f64();
    let per_key = |bytes: u64| bytes as f64 / keys as f64;
    let mut report = ScaleReport {
        keys: created,
        create_errors,
        creates_per_sec: created as f64 / elapsed,
        list_page_size,
        ..ScaleReport::default()
    };
    if let Some(pid) = pid {
        let rss = procfs::resident_bytes(Process::Pid(pid))?;
        report.rss_bytes_per_key = Some(per_key(rss));
        report.rss_growth_bytes_per_key =
            rss_before.map(|before| per_key(rss.saturating_sub(before)));
    }
    if let Some(dir) = data_dir {
        report.data_dir_bytes_per_key = Some(per_key(procfs::directory_bytes(dir)?));
    }

    if let Some(server) = spawned {
        // An open connection would hold the graceful stop for the server's grace period.
        drop(channel);
        report.restart_to_serving_ms = Some(server.restart().await?.as_secs_f64() * 1e3);
        if let Some(pid) = server.pid() {
            report.rss_after_restart_bytes_per_key =
                Some(per_key(procfs::resident_bytes(Process::Pid(pid))?));
        }
        channel = crate::load::endpoint(&server.endpoint())?
            .connect()
            .await
            .map_err(|error| format!("cannot reconnect after the restart: {error}"))?;
        auth = calls::authenticate(&channel, api_key).await?;
    }

    let mut samples = Vec::with_capacity(LIST_SAMPLES);
    let mut keys_client = KeyServiceClient::with_interceptor(channel.clone(), auth.clone());
    let mut simulator = calls::simulator(&channel, &auth);
    drop(channel);
    for _ in 0..LIST_SAMPLES {
        let started = Instant::now();
        let page = keys_client
            .list_keys(pb::ListKeysRequest {
                instance: instance.clone(),
                page_size: list_page_size,
                ..Default::default()
            })
            .await
            .map_err(|status| format!("ListKeys failed: {status}"))?
            .into_inner();
        samples.push(started.elapsed().as_secs_f64() * 1e3);
        if page.keys.is_empty() {
            return Err("ListKeys answered an empty page for an instance with keys".into());
        }
    }
    samples.sort_by(f64::total_cmp);
    report.list_page_ms_min = samples[0];
    report.list_page_ms_median = samples[LIST_SAMPLES / 2];

    let started = Instant::now();
    simulator
        .advance_clock(pb::AdvanceClockRequest {
            duration: Some(
                prost_types::Duration::try_from(ADVANCE)
                    .map_err(|_| "100 days is a protobuf Duration".to_owned())?,
            ),
        })
        .await
        .map_err(|status| {
            format!("AdvanceClock failed (the server needs --clock simulated): {status}")
        })?;
    report.advance_100_days_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(report)
}

/// Creates `keys` root keys with `streams` concurrent calls; returns how many were created
/// and the failures by code.
async fn create_keys(
    channel: &Channel,
    auth: &BearerAuth,
    instance: &str,
    keys: usize,
    streams: usize,
) -> (usize, BTreeMap<String, u64>) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(streams);
    for _ in 0..streams.min(keys) {
        let next = Arc::clone(&next);
        let mut client = KeyServiceClient::with_interceptor(channel.clone(), auth.clone());
        let instance = instance.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut created = 0;
            let mut errors = BTreeMap::<String, u64>::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= keys {
                    break;
                }
                match calls::create_root_key(&mut client, &instance, index as u64).await {
                    Ok(_) => created += 1,
                    Err(status) => {
                        *errors.entry(format!("{:?}", status.code())).or_default() += 1;
                    }
                }
            }
            (created, errors)
        }));
    }
    let mut created = 0;
    let mut errors = BTreeMap::<String, u64>::new();
    for task in tasks {
        match task.await {
            Ok((count, failed)) => {
                created += count;
                for (code, count) in failed {
                    *errors.entry(code).or_default() += count;
                }
            }
            Err(_) => *errors.entry("BenchTaskFailed".into()).or_default() += 1,
        }
    }
    (created, errors)
}
