//! `kmsim-bench`, the load generator of kmsim (see the README, "Benchmarking"): against a
//! server address, or a `kmsim` it starts itself, it loads each RPC in turn after the
//! health-check baseline, checking every status, and prints calls/s, latency percentiles, CPU
//! per call and ratios to the baseline; `--scale N` measures the cost of N keys instead.
//! Exit status: 0 when every call succeeded, 3 when some failed (the report counts them by
//! code), 1 when the run could not be made, 2 for a command-line error.

mod args;
mod calls;
mod h2;
mod load;
mod procfs;
mod report;
mod scale;
mod spawn;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use args::Args;
use calls::Rpc;
use load::{Phase, Plan};
use procfs::Process;
use report::{Report, RpcReport};
use spawn::SpawnedServer;

/// The environment variable that may hold the API key.
const API_KEY_ENV: &str = "KMSIM_API_KEY";

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(error) = args.check() {
        eprintln!("kmsim-bench: {error}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kmsim-bench: cannot build a runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(error) => {
                        eprintln!("kmsim-bench: cannot encode the report: {error}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report.table());
            }
            let failed = report.rpcs.iter().map(RpcReport::failed).sum::<u64>()
                + report
                    .scale
                    .as_ref()
                    .map_or(0, |scale| scale.create_errors.values().sum());
            if failed > 0 {
                eprintln!("kmsim-bench: {failed} calls failed (see the errors by code)");
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            eprintln!("kmsim-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The API key: --api-key-file, else KMSIM_API_KEY, else the spawned server's admin key.
fn api_key(args: &Args) -> Result<String, String> {
    let file = args.api_key_file.clone().or_else(|| {
        std::env::var_os(API_KEY_ENV)
            .is_none()
            .then(|| args.spawn_server.as_ref().and(args.data_dir.as_ref()))
            .flatten()
            .map(|dir| dir.join(kmsim_server::ADMIN_KEY_FILE))
    });
    let key = match file {
        Some(path) => std::fs::read_to_string(&path)
            .map_err(|error| format!("cannot read the API key file {}: {error}", path.display()))?,
        None => std::env::var(API_KEY_ENV)
            .map_err(|_| format!("no API key: give --api-key-file or set {API_KEY_ENV}"))?,
    };
    let key = key.trim().to_owned();
    if key.is_empty() {
        return Err("the API key is empty".into());
    }
    Ok(key)
}

async fn run(args: &Args) -> Result<Report, String> {
    let mut spawned = match (&args.spawn_server, &args.data_dir) {
        (Some(binary), Some(dir)) => Some(SpawnedServer::start(binary, dir).await?.0),
        _ => None,
    };
    let server = spawned
        .as_ref()
        .map_or_else(|| args.server.clone(), SpawnedServer::endpoint);
    let server_pid = spawned
        .as_ref()
        .and_then(SpawnedServer::pid)
        .or(args.server_pid);
    let api_key = api_key(args)?;
    let channel = load::endpoint(&server)?
        .connect()
        .await
        .map_err(|error| format!("cannot connect to {server}: {error}"))?;
    let auth = calls::authenticate(&channel, &api_key).await?;
    let mut report = Report {
        connections: args.connections,
        streams: args.streams,
        duration_secs: args.duration.as_secs_f64(),
        rate: args.rate,
        ..Report::default()
    };

    if let Some(keys) = args.scale {
        let target = scale::Target {
            channel,
            auth,
            pid: server_pid,
            data_dir: args.data_dir.as_deref(),
            spawned: spawned.as_mut(),
            api_key: &api_key,
        };
        report.scale = Some(scale::run(target, keys, args.streams, args.list_page_size).await?);
    } else {
        let rotation_keys = if args.rpcs.contains(&Rpc::Rotate) {
            args.rotation_keys
        } else {
            0
        };
        let fixture = calls::prepare(
            &channel,
            auth,
            args.list_page_size,
            rotation_keys,
            args.streams,
        )
        .await
        .map_err(|status| format!("setting up the instance and keys failed: {status}"))?;
        // The loaded calls use their own connections; an idle one left open would hold a
        // spawned server's graceful stop for its whole grace period.
        drop(channel);
        let mut rpcs = vec![Rpc::Health];
        rpcs.extend(args.rpcs.iter().filter(|&&rpc| rpc != Rpc::Health));
        for rpc in rpcs {
            let plan = Plan {
                rpc,
                server: server.clone(),
                connections: args.connections,
                streams: args.streams,
                duration: args.duration,
                warmup: args.warmup,
                rate: args.rate,
            };
            let mut row = measure(&plan, &fixture, server_pid)?;
            if rpc == Rpc::Rotate && fixture.rotation_pool.exhausted() {
                row.note = Some(format!(
                    "ended early: all {} --rotation-keys rotated (warm-up included)",
                    args.rotation_keys
                ));
            }
            report.rpcs.push(row);
        }
        if let Some((health, rest)) = report.rpcs.split_first_mut() {
            for row in rest {
                row.relate_to(health);
            }
        }
    }
    if let Some(server) = spawned.as_mut() {
        server.stop()?;
    }
    Ok(report)
}

/// Loads one RPC on the connection threads and reads both processes' CPU around the
/// measured part.
fn measure(
    plan: &Plan,
    fixture: &calls::Fixture,
    server_pid: Option<u32>,
) -> Result<RpcReport, String> {
    let read = |process: Process| procfs::cpu_time(process).ok();
    let mut readings: [(Option<Duration>, Option<Duration>); 2] = [(None, None); 2];
    let outcome = load::run(plan, fixture, &mut |phase| {
        let slot = usize::from(phase == Phase::End);
        readings[slot] = (
            server_pid.and_then(|pid| read(Process::Pid(pid))),
            read(Process::Myself),
        );
    })?;
    let delta = |before: Option<Duration>, after: Option<Duration>| {
        before
            .zip(after)
            .map(|(before, after)| after.saturating_sub(before))
    };
    let [(server_before, bench_before), (server_after, bench_after)] = readings;
    Ok(RpcReport::new(
        plan.rpc,
        outcome,
        delta(server_before, server_after),
        delta(bench_before, bench_after),
    ))
}
