//! The load engine: M connections, each on its own OS thread with a single-threaded tokio
//! runtime (no work stealing, no cross-thread wake-ups: the generator stays cheap on two
//! cores), carrying N streams in total; closed loop or a fixed rate. Every call's status is
//! checked and counted by code; every successful call's latency is kept.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use tonic::transport::{Endpoint, Uri};

use crate::calls::{Clients, Done, Fixture, Rpc};
use crate::h2;

/// The longest a loaded call may take before it counts as failed (`BenchTimeout`).
const CALL_LIMIT: Duration = Duration::from_secs(30);

/// How one RPC is loaded.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The RPC.
    pub rpc: Rpc,
    /// The server's address.
    pub server: String,
    /// HTTP/2 connections.
    pub connections: usize,
    /// Concurrent streams in total.
    pub streams: usize,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// Total calls/s, or `None` for closed loop.
    pub rate: Option<f64>,
}

/// What the measured part of a run saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Latency of every successful call, in nanoseconds.
    pub latencies_ns: Vec<u64>,
    /// Failed calls by gRPC code name.
    pub errors: BTreeMap<String, u64>,
    /// Wall time of the measured part.
    pub elapsed: Duration,
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        self.latencies_ns.extend(other.latencies_ns);
        for (code, count) in other.errors {
            *self.errors.entry(code).or_default() += count;
        }
        self.elapsed = self.elapsed.max(other.elapsed);
    }
}

/// An endpoint with Nagle off and HTTP/2 windows large enough for many streams.
pub fn endpoint(server: &str) -> Result<Endpoint, String> {
    Ok(Endpoint::from_shared(server.to_owned())
        .map_err(|error| format!("bad --server {server:?}: {error}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30)))
}

/// Runs `plan` and returns the measured outcome. `measured` is called once every connection
/// is up, right before the measured part starts and right after it ends (for CPU readings).
pub fn run(
    plan: &Plan,
    fixture: &Fixture,
    measured: &mut dyn FnMut(Phase),
) -> Result<Outcome, String> {
    // Every connection thread plus this one: connect, then warm up, then measure together.
    let start_line = Arc::new(Barrier::new(plan.connections + 1));
    let measure_line = Arc::new(Barrier::new(plan.connections + 1));
    let end_line = Arc::new(Barrier::new(plan.connections + 1));
    let mut threads = Vec::with_capacity(plan.connections);
    for index in 0..plan.connections {
        let streams =
            plan.streams / plan.connections + usize::from(index < plan.streams % plan.connections);
        let thread = Connection {
            plan: plan.clone(),
            fixture: fixture.clone(),
            streams,
            first_stream: index,
            lines: [
                Arc::clone(&start_line),
                Arc::clone(&measure_line),
                Arc::clone(&end_line),
            ],
        };
        threads.push(
            std::thread::Builder::new()
                .name(format!("bench-conn-{index}"))
                .spawn(move || thread.run())
                .map_err(|error| format!("cannot start a connection thread: {error}"))?,
        );
    }
    start_line.wait();
    measure_line.wait();
    measured(Phase::Start);
    end_line.wait();
    measured(Phase::End);
    let mut outcome = Outcome::default();
    for thread in threads {
        let result = thread
            .join()
            .map_err(|_| "a connection thread panicked".to_owned())?;
        outcome.merge(result?);
    }
    Ok(outcome)
}

/// The edges of the measured part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Measurement starts.
    Start,
    /// Measurement ended.
    End,
}

/// One connection's thread.
struct Connection {
    plan: Plan,
    fixture: Fixture,
    streams: usize,
    first_stream: usize,
    /// Connected, measurement start, measurement end.
    lines: [Arc<Barrier>; 3],
}

impl Connection {
    fn run(self) -> Result<Outcome, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| format!("cannot build a runtime: {error}"));
        let origin: Result<Uri, String> = self
            .plan
            .server
            .parse()
            .map_err(|error| format!("bad --server {:?}: {error}", self.plan.server));
        let connected = runtime.as_ref().map_err(Clone::clone).and_then(|runtime| {
            let origin = origin.clone()?;
            runtime.block_on(async {
                let connection = h2::Connection::connect(&origin).await?;
                Ok((connection, origin))
            })
        });
        // Always reach every barrier, even after a failure, so no thread waits forever.
        let [start_line, measure_line, end_line] = &self.lines;
        start_line.wait();
        let (runtime, (connection, origin)) = match (runtime, connected) {
            (Ok(runtime), Ok(connected)) => (runtime, connected),
            (Err(error), _) | (_, Err(error)) => {
                measure_line.wait();
                end_line.wait();
                return Err(error);
            }
        };
        let warm_until = Instant::now() + self.plan.warmup;
        runtime.block_on(self.drive(&connection, &origin, warm_until, true));
        measure_line.wait();
        let started = Instant::now();
        let mut outcome =
            runtime.block_on(self.drive(&connection, &origin, started + self.plan.duration, false));
        outcome.elapsed = started.elapsed();
        end_line.wait();
        Ok(outcome)
    }

    /// Runs every stream of this connection until `until`. A warm-up of RotateKey makes one
    /// call per stream, so that it does not use up the keys the measurement needs.
    async fn drive(
        &self,
        connection: &h2::Connection,
        origin: &Uri,
        until: Instant,
        warm_up: bool,
    ) -> Outcome {
        let max_calls = (warm_up && self.plan.rpc == Rpc::Rotate).then_some(1);
        let local = tokio::task::LocalSet::new();
        let mut tasks = Vec::with_capacity(self.streams);
        let period = self
            .plan
            .rate
            .map(|rate| Duration::from_secs_f64(self.plan.streams as f64 / rate));
        for stream in 0..self.streams {
            let clients = Clients::new(connection.clone(), origin, &self.fixture.auth);
            let fixture = self.fixture.clone();
            let schedule = Schedule {
                rpc: self.plan.rpc,
                until,
                period,
                // Stream numbers interleave across connections so created key names never
                // clash.
                id: (self.first_stream + stream * self.plan.connections) as u64,
                stride: self.plan.streams as u64,
                max_calls,
            };
            tasks.push(local.spawn_local(stream_loop(clients, fixture, schedule)));
        }
        local
            .run_until(async move {
                let mut outcome = Outcome::default();
                for task in tasks {
                    match task.await {
                        Ok(result) => outcome.merge(result),
                        Err(_) => {
                            *outcome.errors.entry("BenchTaskFailed".into()).or_default() += 1;
                        }
                    }
                }
                outcome
            })
            .await
    }
}

/// What one stream calls, and when.
struct Schedule {
    rpc: Rpc,
    /// No call starts at or after this.
    until: Instant,
    /// The interval between calls at a fixed rate; back to back when `None`.
    period: Option<Duration>,
    /// The stream's number: the first created key's sequence number.
    id: u64,
    /// Added to the sequence number at each call (the number of streams).
    stride: u64,
    /// At most this many calls.
    max_calls: Option<usize>,
}

/// One stream: calls back to back (or on a fixed schedule) until the end of `schedule`.
async fn stream_loop(mut clients: Clients, fixture: Fixture, schedule: Schedule) -> Outcome {
    let Schedule {
        rpc,
        until,
        period,
        id,
        stride,
        max_calls,
    } = schedule;
    let mut outcome = Outcome::default();
    let mut sequence = id;
    // A fixed-rate stream starts at a random-ish offset inside its period so the streams do
    // not fire in lockstep.
    let mut scheduled =
        Instant::now() + period.map_or(Duration::ZERO, |p| p.mul_f64((id % 97) as f64 / 97.0));
    loop {
        if let Some(period) = period {
            tokio::time::sleep_until(scheduled.into()).await;
            scheduled += period;
        }
        let started = match period {
            Some(period) => scheduled - period,
            None => Instant::now(),
        };
        let made = outcome.latencies_ns.len() + outcome.errors.values().sum::<u64>() as usize;
        if started >= until || max_calls.is_some_and(|max| made >= max) {
            break;
        }
        // The ids of created keys stay unique across runs of one process and its streams.
        sequence += stride;
        let called = tokio::time::timeout(CALL_LIMIT, clients.call(rpc, &fixture, sequence)).await;
        match called {
            Err(_) => *outcome.errors.entry("BenchTimeout".into()).or_default() += 1,
            Ok(Ok(Done::Exhausted)) => break,
            Ok(Ok(Done::Called)) => outcome
                .latencies_ns
                .push(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX)),
            Ok(Err(status)) => {
                *outcome
                    .errors
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1;
            }
        }
    }
    outcome
}
