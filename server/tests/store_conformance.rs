//! The store conformance suite, run against the real `kmsim` binary for every store backend
//! that ships (today one: redb):
//!
//! - **crash**: concurrent writers of every mutation kind, `SIGKILL` at random moments, then a
//!   restart that must succeed with every acknowledged write there (keys, states, rotations,
//!   aliases, clock moves) and every acknowledged ciphertext unwrapping;
//! - **corruption**: one byte flipped at a random offset of a store file of a stopped server:
//!   it either starts with every acknowledged write intact (and no fresh bootstrap) or refuses
//!   to start with an error naming the damaged file;
//! - **full disk**: the data directory on a small tmpfs (mounted by the test when it runs as
//!   root): writes fail with `RESOURCE_EXHAUSTED` / `STORAGE_FULL_ERR`, health turns
//!   NOT_SERVING, nothing acknowledged is lost, and once space is freed writes work again
//!   without a restart.
//!
//! CI runs short variants; `cargo test -p kmsim-server --test store_conformance -- --ignored`
//! runs the long ones (100 crash cycles, 300 corruption trials). Every run prints its figures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kmsim_proto::v1 as pb;
use pb::instance_service_client::InstanceServiceClient;
use pb::key_service_client::KeyServiceClient;
use pb::simulator_service_client::SimulatorServiceClient;
use support::{Server, channel_retry, dev_token, start_command};
use tonic::Code;
use tonic::transport::Channel;

/// The store files of a data directory, which the corruption trials damage.
const STORE_FILES: [&str; 2] = ["kmsim.redb", "kmsim.redb.commit"];

fn command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kmsim"));
    command.args(["serve", "--dev", "--clock", "simulated"]);
    command
}

fn serve(dir: &Path) -> Server {
    start_command(command(), dir)
}

type Keys = KeyServiceClient<
    tonic::service::interceptor::InterceptedService<
        Channel,
        fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>,
    >,
>;

fn keys(channel: Channel) -> Keys {
    KeyServiceClient::with_interceptor(channel, dev_token as fn(_) -> _)
}

async fn create_instance(channel: Channel) -> String {
    InstanceServiceClient::with_interceptor(channel, dev_token)
        .create_instance(pb::CreateInstanceRequest {
            name: "conformance".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap()
        .id
}

/// What the clients were told, and so what must be found after a restart.
#[derive(Debug, Default, Clone)]
struct Acknowledged {
    /// Per key CRN: what was acknowledged.
    keys: BTreeMap<String, KeyFacts>,
    /// The latest clock time an AdvanceClock acknowledged (ms since the epoch).
    clock_ms: i64,
}

#[derive(Debug, Default, Clone)]
struct KeyFacts {
    /// Acknowledged rotations.
    rotations: i32,
    /// Acknowledged aliases.
    aliases: BTreeSet<String>,
    /// Acknowledged ciphertexts and their plaintexts.
    wraps: Vec<(Vec<u8>, Vec<u8>)>,
    /// A delete was acknowledged.
    deleted: bool,
    /// A delete was sent (it may have happened even if unacknowledged).
    delete_sent: bool,
    /// A disable was sent and no enable acknowledged after it.
    maybe_disabled: bool,
}

/// One writer: creates keys and runs every mutation kind on them until a call fails (the
/// server was killed). Records only what was acknowledged.
async fn writer(
    channel: Channel,
    instance: String,
    id: usize,
    cycle: usize,
    facts: std::sync::Arc<std::sync::Mutex<Acknowledged>>,
) {
    let mut client = keys(channel.clone());
    let mut simulator = SimulatorServiceClient::with_interceptor(channel, dev_token);
    for n in 0.. {
        let created = client
            .create_key(pb::CreateKeyRequest {
                instance: instance.clone(),
                name: format!("w{id}-c{cycle}-{n}"),
                r#type: pb::KeyType::Root as i32,
                ..Default::default()
            })
            .await;
        let Ok(created) = created else { return };
        let crn = created.into_inner().key.unwrap().crn;
        let record = |update: &dyn Fn(&mut KeyFacts)| {
            let mut facts = facts.lock().unwrap();
            update(facts.keys.entry(crn.clone()).or_default());
        };
        record(&|_| {});
        let Ok(wrapped) = client
            .wrap_key(pb::WrapKeyRequest {
                key: crn.clone(),
                ..Default::default()
            })
            .await
        else {
            return;
        };
        let wrapped = wrapped.into_inner();
        record(&|k| {
            k.wraps
                .push((wrapped.ciphertext.clone(), wrapped.plaintext.clone()))
        });
        if client
            .rotate_key(pb::RotateKeyRequest {
                key: crn.clone(),
                ..Default::default()
            })
            .await
            .is_err()
        {
            return;
        }
        record(&|k| k.rotations += 1);
        let alias = format!("a-w{id}-c{cycle}-{n}");
        if client
            .create_key_alias(pb::CreateKeyAliasRequest {
                key: crn.clone(),
                alias: alias.clone(),
            })
            .await
            .is_err()
        {
            return;
        }
        record(&|k| {
            k.aliases.insert(alias.clone());
        });
        if n % 3 == 1 {
            record(&|k| k.maybe_disabled = true);
            if client
                .disable_key(pb::DisableKeyRequest { key: crn.clone() })
                .await
                .is_err()
                || client
                    .enable_key(pb::EnableKeyRequest { key: crn.clone() })
                    .await
                    .is_err()
            {
                return;
            }
            record(&|k| k.maybe_disabled = false);
        }
        if n % 4 == 2 {
            record(&|k| k.delete_sent = true);
            if client
                .delete_key(pb::DeleteKeyRequest {
                    key: crn.clone(),
                    force: true,
                })
                .await
                .is_err()
            {
                return;
            }
            record(&|k| k.deleted = true);
        }
        if id == 0 {
            let Ok(moved) = simulator
                .advance_clock(pb::AdvanceClockRequest {
                    duration: Some(prost_types::Duration {
                        seconds: 60,
                        nanos: 0,
                    }),
                })
                .await
            else {
                return;
            };
            let time = moved.into_inner().time.unwrap();
            let ms = time.seconds * 1000 + i64::from(time.nanos / 1_000_000);
            let mut facts = facts.lock().unwrap();
            facts.clock_ms = facts.clock_ms.max(ms);
        }
    }
}

/// Checks every acknowledged fact against a running server.
async fn verify(channel: Channel, acknowledged: &Acknowledged) {
    let mut client = keys(channel.clone());
    let mut simulator = SimulatorServiceClient::with_interceptor(channel, dev_token);
    let time = simulator
        .get_time(pb::GetTimeRequest {})
        .await
        .unwrap()
        .into_inner()
        .time
        .unwrap();
    assert!(
        time.seconds * 1000 >= acknowledged.clock_ms - 999,
        "the clock went back: {} < {}",
        time.seconds * 1000,
        acknowledged.clock_ms
    );
    for (crn, facts) in &acknowledged.keys {
        let key = client
            .get_key(pb::GetKeyRequest { key: crn.clone() })
            .await
            .unwrap_or_else(|status| panic!("acknowledged key {crn} lost: {status:?}"))
            .into_inner()
            .key
            .unwrap();
        if facts.deleted {
            assert_eq!(
                key.state,
                pb::KeyState::Destroyed as i32,
                "an acknowledged delete of {crn} was rolled back"
            );
            continue;
        }
        if facts.delete_sent {
            continue; // Deleted or not: the delete was never acknowledged.
        }
        if !facts.maybe_disabled {
            assert_eq!(key.state, pb::KeyState::Active as i32, "{crn}");
        }
        assert!(
            key.version_count > facts.rotations,
            "{crn}: {} versions after {} acknowledged rotations",
            key.version_count,
            facts.rotations
        );
        for alias in &facts.aliases {
            assert!(key.aliases.contains(alias), "{crn}: alias {alias} lost");
        }
        if facts.maybe_disabled {
            continue;
        }
        for (ciphertext, plaintext) in &facts.wraps {
            let unwrapped = client
                .unwrap_key(pb::UnwrapKeyRequest {
                    key: crn.clone(),
                    ciphertext: ciphertext.clone(),
                    aad: vec![],
                })
                .await
                .unwrap_or_else(|status| panic!("{crn}: an acknowledged ciphertext: {status:?}"))
                .into_inner();
            assert_eq!(&unwrapped.plaintext, plaintext);
        }
    }
}

/// A small xorshift generator: the trials are random but reproducible from the printed seed.
struct Random(u64);

impl Random {
    fn seeded() -> Self {
        let seed = std::env::var("KMSIM_CONFORMANCE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("conformance seed: {seed} (KMSIM_CONFORMANCE_SEED to repeat)");
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

async fn crash_cycles(cycles: usize, writers: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut random = Random::seeded();
    let mut acknowledged = Acknowledged::default();
    let mut server = serve(dir.path());
    let instance = create_instance(channel_retry(&server.endpoint).await).await;
    let mut calls_before = 0;
    for cycle in 0..cycles {
        let facts = std::sync::Arc::new(std::sync::Mutex::new(acknowledged.clone()));
        let channel = channel_retry(&server.endpoint).await;
        let tasks: Vec<_> = (0..writers)
            .map(|id| {
                tokio::spawn(writer(
                    channel.clone(),
                    instance.clone(),
                    id,
                    cycle,
                    std::sync::Arc::clone(&facts),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100 + random.below(400))).await;
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        for task in tasks {
            task.await.unwrap();
        }
        acknowledged = facts.lock().unwrap().clone();
        server = serve(dir.path());
        verify(channel_retry(&server.endpoint).await, &acknowledged).await;
        let calls: usize = acknowledged
            .keys
            .values()
            .map(|k| {
                1 + k.wraps.len() + k.rotations as usize + k.aliases.len() + usize::from(k.deleted)
            })
            .sum();
        eprintln!(
            "crash cycle {}: {} acknowledged writes so far (+{}), 0 lost, restart ok",
            cycle + 1,
            calls,
            calls - calls_before
        );
        calls_before = calls;
    }
    eprintln!(
        "crash: {cycles} SIGKILLs, {} keys, {calls_before} acknowledged writes, 0 lost, 0 failed restarts",
        acknowledged.keys.len()
    );
}

#[tokio::test]
async fn crash_short() {
    crash_cycles(5, 6).await;
}

#[tokio::test]
#[ignore = "long: 100 SIGKILL cycles (run with --ignored)"]
async fn crash_100_cycles() {
    crash_cycles(100, 6).await;
}

/// Creates a root key named `name` and wraps a generated data key under it; returns the key's
/// CRN and the acknowledged facts (the ciphertext and its plaintext).
async fn create_and_wrap(client: &mut Keys, instance: &str, name: String) -> (String, KeyFacts) {
    let key = client
        .create_key(pb::CreateKeyRequest {
            instance: instance.to_owned(),
            name,
            r#type: pb::KeyType::Root as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    let wrapped = client
        .wrap_key(pb::WrapKeyRequest {
            key: key.crn.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let facts = KeyFacts {
        wraps: vec![(wrapped.ciphertext, wrapped.plaintext)],
        ..Default::default()
    };
    (key.crn, facts)
}

/// Builds a stopped data directory holding `keys` acknowledged keys (some rotated, aliased,
/// deleted) and returns what was acknowledged.
async fn populated(dir: &Path) -> Acknowledged {
    let mut server = serve(dir);
    let channel = channel_retry(&server.endpoint).await;
    let instance = create_instance(channel.clone()).await;
    let mut acknowledged = Acknowledged::default();
    // One writer, stopped after a fixed count: no call is in flight when the server stops.
    let mut client = keys(channel.clone());
    for n in 0..24 {
        let (crn, mut entry) = create_and_wrap(&mut client, &instance, format!("k{n}")).await;
        if n % 2 == 0 {
            client
                .rotate_key(pb::RotateKeyRequest {
                    key: crn.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
            entry.rotations = 1;
        }
        if n % 3 == 0 {
            let alias = format!("alias-{n}");
            client
                .create_key_alias(pb::CreateKeyAliasRequest {
                    key: crn.clone(),
                    alias: alias.clone(),
                })
                .await
                .unwrap();
            entry.aliases.insert(alias);
        }
        if n % 5 == 4 {
            client
                .delete_key(pb::DeleteKeyRequest {
                    key: crn.clone(),
                    force: true,
                })
                .await
                .unwrap();
            entry.deleted = true;
            entry.delete_sent = true;
        }
        acknowledged.keys.insert(crn, entry);
    }
    // A graceful stop (SIGTERM), as an operator stops a server before touching its files.
    Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    server.child.wait().unwrap();
    acknowledged
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// How one start over a damaged directory ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// Started, every acknowledged write intact.
    StartedIntact,
    /// Refused to start, naming the damaged file.
    RefusedNamingFile,
}

/// Starts over `dir`: waits until the server serves or exits.
async fn start_or_refusal(dir: &Path) -> Result<Server, String> {
    let mut command = command();
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
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let lines = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            lines.lock().unwrap().push(line.clone());
            if line.contains("kmsim listening") {
                let value: serde_json::Value = serde_json::from_str(&line).unwrap();
                let _ = tx.send(value["fields"]["address"].as_str().unwrap().to_owned());
            }
        }
    });
    loop {
        if let Some(_status) = child.try_wait().unwrap() {
            // Give the reader a moment to drain the last lines.
            std::thread::sleep(Duration::from_millis(50));
            return Err(log.lock().unwrap().join("\n"));
        }
        if let Ok(address) = rx.try_recv() {
            let endpoint = format!("http://{address}");
            // Serving once the health check answers SERVING (or the process exits).
            for _ in 0..200 {
                if let Some(_status) = child.try_wait().unwrap() {
                    std::thread::sleep(Duration::from_millis(50));
                    return Err(log.lock().unwrap().join("\n"));
                }
                if let Ok(channel) = Channel::from_shared(endpoint.clone())
                    .unwrap()
                    .connect()
                    .await
                {
                    let serving = tonic_health::pb::health_client::HealthClient::new(channel)
                        .check(tonic_health::pb::HealthCheckRequest::default())
                        .await
                        .map(|r| r.into_inner().status)
                        .unwrap_or_default();
                    if serving
                        == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                    {
                        return Ok(Server {
                            child,
                            endpoint,
                            log,
                        });
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("the server neither served nor exited");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn corruption_trials(trials: usize) {
    let base = tempfile::tempdir().unwrap();
    let pristine = base.path().join("pristine");
    let acknowledged = populated(&pristine).await;
    let admin_key = std::fs::read(pristine.join("admin-api-key")).unwrap();
    let mut random = Random::seeded();
    let mut outcomes: BTreeMap<(&str, Outcome), usize> = BTreeMap::new();
    for trial in 0..trials {
        let dir = base.path().join(format!("trial-{trial}"));
        copy_dir(&pristine, &dir);
        let file = STORE_FILES[usize::try_from(random.below(STORE_FILES.len() as u64)).unwrap()];
        let path = dir.join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        let offset = usize::try_from(random.below(bytes.len() as u64)).unwrap();
        let flip = 1u8 << random.below(8);
        bytes[offset] ^= flip;
        std::fs::write(&path, &bytes).unwrap();
        let outcome = match start_or_refusal(&dir).await {
            Ok(mut server) => {
                verify(channel_retry(&server.endpoint).await, &acknowledged).await;
                assert_eq!(
                    std::fs::read(dir.join("admin-api-key")).unwrap(),
                    admin_key,
                    "trial {trial}: a fresh bootstrap over an existing directory"
                );
                server.child.kill().unwrap();
                server.child.wait().unwrap();
                Outcome::StartedIntact
            }
            Err(log) => {
                assert!(
                    log.contains(file),
                    "trial {trial}: {file} byte {offset} ^ {flip:#x}: refused without naming the file:\n{log}"
                );
                Outcome::RefusedNamingFile
            }
        };
        *outcomes.entry((file, outcome)).or_default() += 1;
        std::fs::remove_dir_all(&dir).unwrap();
    }
    eprintln!(
        "corruption: {trials} trials, one flipped bit each: {outcomes:?}; 0 silent losses, 0 rollbacks, 0 fresh bootstraps"
    );
}

#[tokio::test]
async fn corruption_short() {
    corruption_trials(16).await;
}

#[tokio::test]
#[ignore = "long: 300 corruption trials (run with --ignored)"]
async fn corruption_300_trials() {
    corruption_trials(300).await;
}

/// Whether this process may mount a tmpfs (root on Linux).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Unmounts the tmpfs when the test ends, however it ends.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` with a file until it is full; returns the file.
fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0xA5u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    let small = [0u8; 512];
    while file.write_all(&small).is_ok() {}
    let _ = file.sync_all();
    path
}

fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

/// The correlation ids of every event in the trail whose action starts with `prefix`.
async fn correlation_ids(channel: Channel, prefix: &str) -> BTreeSet<String> {
    let mut events =
        pb::event_service_client::EventServiceClient::with_interceptor(channel, dev_token);
    let mut ids = BTreeSet::new();
    let mut token = String::new();
    loop {
        let page = events
            .list_audit_events(pb::ListAuditEventsRequest {
                filter: Some(pb::AuditEventFilter {
                    action_prefix: prefix.to_owned(),
                    ..Default::default()
                }),
                page_size: 500,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.events.into_iter().map(|e| e.correlation_id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        token = page.next_page_token;
    }
}

#[tokio::test]
async fn full_disk() {
    if !is_root() {
        let required = std::env::var("KMSIM_REQUIRE_FULL_DISK_TEST").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "KMSIM_REQUIRE_FULL_DISK_TEST=1 but this test needs root to mount a tmpfs"
        );
        eprintln!("SKIPPED LOUDLY: full_disk needs root (it mounts an 8 MiB tmpfs)");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(mounted.success(), "cannot mount a tmpfs as root");
    let _mount = Mount(dir.clone());

    let mut server = serve(&dir);
    let channel = channel_retry(&server.endpoint).await;
    let instance = create_instance(channel.clone()).await;
    let mut client = keys(channel.clone());
    let mut acknowledged = Acknowledged::default();
    for n in 0..5 {
        let (crn, facts) = create_and_wrap(&mut client, &instance, format!("before-{n}")).await;
        acknowledged.keys.insert(crn, facts);
    }

    let filler = fill(&dir);
    // Writes fail with a typed, short reason; calls keep failing rather than succeeding
    // unrecorded once the trail cannot be written.
    let mut full_refusals = 0;
    let mut created_while_full = 0;
    for n in 0..40 {
        match client
            .create_key(pb::CreateKeyRequest {
                instance: instance.clone(),
                name: format!("during-{n}"),
                r#type: pb::KeyType::Root as i32,
                ..Default::default()
            })
            .await
        {
            Ok(created) => {
                // Space a commit freed (redb reuses pages) can still take a small write.
                created_while_full += 1;
                acknowledged
                    .keys
                    .insert(created.into_inner().key.unwrap().crn, KeyFacts::default());
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert_eq!(reason(&status), "STORAGE_FULL_ERR");
                assert!(!status.message().contains("os error"), "{status:?}");
                full_refusals += 1;
            }
        }
    }
    assert!(full_refusals > 0, "no write was refused on a full disk");
    // The trail fails closed: a data call is either recorded (its event fits in pages the
    // engine frees and reuses) or refused; never answered OK unrecorded. The ones answered OK
    // are looked up in the trail once space is back, by their correlation ids.
    // A key created before the disk filled (keys created while full have no wraps).
    let (crn, facts) = acknowledged
        .keys
        .iter()
        .find(|(_, facts)| !facts.wraps.is_empty())
        .unwrap();
    let mut answered_ok = Vec::new();
    let mut data_refusals = 0;
    for n in 0..20 {
        let mut request = tonic::Request::new(pb::UnwrapKeyRequest {
            key: crn.clone(),
            ciphertext: facts.wraps[0].0.clone(),
            aad: vec![],
        });
        let correlation = format!("full-disk-unwrap-{n}");
        request
            .metadata_mut()
            .insert("x-correlation-id", correlation.parse().unwrap());
        match client.unwrap_key(request).await {
            Ok(_) => answered_ok.push(correlation),
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert_eq!(reason(&status), "STORAGE_FULL_ERR");
                data_refusals += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status;
    // Health is re-evaluated every 500 ms.
    let mut not_serving =
        health == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    for _ in 0..40 {
        if not_serving {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        not_serving = tonic_health::pb::health_client::HealthClient::new(channel.clone())
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner()
            .status
            == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    }
    assert!(not_serving, "health stayed SERVING on a full disk");

    std::fs::remove_file(filler).unwrap();
    // Writes work again without a restart.
    let mut recovered = None;
    for _ in 0..100 {
        match client
            .create_key(pb::CreateKeyRequest {
                instance: instance.clone(),
                name: "after".into(),
                r#type: pb::KeyType::Root as i32,
                ..Default::default()
            })
            .await
        {
            Ok(created) => {
                recovered = Some(created.into_inner().key.unwrap().crn);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let recovered = recovered.expect("writes never worked again after space was freed");
    acknowledged.keys.insert(recovered, KeyFacts::default());
    verify(channel.clone(), &acknowledged).await;
    let recorded = correlation_ids(channel.clone(), "kms.secrets.unwrap").await;
    for correlation in &answered_ok {
        assert!(
            recorded.contains(correlation),
            "an unwrap answered OK on a full disk is missing from the trail: {correlation}"
        );
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    // And everything acknowledged survives a restart.
    server = serve(&dir);
    verify(channel_retry(&server.endpoint).await, &acknowledged).await;
    eprintln!(
        "full disk: {full_refusals} writes refused with STORAGE_FULL_ERR, {created_while_full} fit; {data_refusals} data calls refused, {} answered OK and all of them in the trail; health NOT_SERVING; writes recovered without a restart; 0 acknowledged lost",
        answered_ok.len()
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
