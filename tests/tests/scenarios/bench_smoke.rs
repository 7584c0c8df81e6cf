//! `kmsim-bench` runs against a real server: every RPC is loaded with a real ES256 token from
//! an API key file, every status is checked (a fault injected on WrapKey shows up counted by
//! code, with exit status 3), a refused API key stops the run, and `--scale` reports its
//! figures. Rates and timings are reported, never asserted beyond being non-zero.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use kmsim_proto::v1 as pb;
use kmsim_server::clock::{SimulatedClock, Timestamp};
use kmsim_server::config::random_credentials;
use kmsim_tests::TestServer;
use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_kmsim-bench");

/// Runs the bench with `args` (short phases, 2 connections, 4 streams) and returns its exit
/// code, its JSON report (if it printed one) and its stderr.
async fn bench(server: &TestServer, api_key_file: &Path, args: &[&str]) -> (i32, Value, String) {
    let output = tokio::process::Command::new(BENCH)
        .env_remove("KMSIM_API_KEY")
        .arg("--server")
        .arg(&server.endpoint)
        .arg("--api-key-file")
        .arg(api_key_file)
        .args(["--connections", "2", "--streams", "4"])
        .args(["--duration", "0.2", "--warmup", "0.05", "--json"])
        .args(["--server-pid", &std::process::id().to_string()])
        .args(args)
        .output()
        .await
        .expect("kmsim-bench runs");
    let json = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (
        output.status.code().expect("exited, not signalled"),
        json,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn persistent_server(dir: &Path) -> TestServer {
    let clock = Arc::new(SimulatedClock::new(Timestamp::from_millis(
        1_767_225_600_000,
    )));
    TestServer::start_with(
        kmsim_tests::persistent_config(dir, [0x42; 32], &random_credentials(), clock.clone()),
        clock,
    )
    .await
}

fn number(value: &Value, field: &str) -> f64 {
    value[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing in {value}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_loads_every_rpc_and_checks_every_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = persistent_server(dir.path()).await;
    let key_file = dir.path().join(kmsim_server::ADMIN_KEY_FILE);

    let (code, report, stderr) = bench(&server, &key_file, &["--rotation-keys", "40"]).await;
    assert_eq!(code, 0, "{stderr}\n{report}");
    let rows = report["rpcs"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["rpc"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "Health/Check",
            "WrapKey",
            "UnwrapKey",
            "RewrapKey",
            "GetKey",
            "ListKeys",
            "CreateKey",
            "RotateKey"
        ]
    );
    for row in rows {
        assert!(number(row, "calls") > 0.0, "{row}");
        assert!(number(row, "calls_per_sec") > 0.0, "{row}");
        assert!(number(row, "p50_us") > 0.0, "{row}");
        assert!(number(row, "p999_us") >= number(row, "p50_us"), "{row}");
        assert_eq!(row["errors"], serde_json::json!({}), "{row}");
        assert!(number(row, "server_cpu_us_per_call") >= 0.0, "{row}");
        assert!(number(row, "bench_cpu_us_per_call") >= 0.0, "{row}");
        if row["rpc"] != "Health/Check" {
            assert!(number(row, "rate_ratio_to_health") > 0.0, "{row}");
        }
    }

    // A fixed rate.
    let (code, report, stderr) =
        bench(&server, &key_file, &["--rpcs", "get", "--rate", "100"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["rate"], 100.0);
    assert!(number(&report["rpcs"][1], "calls") > 0.0, "{report}");

    // Every second WrapKey fails: the failures are counted by code and the exit status says so.
    server
        .simulator()
        .inject_fault(pb::InjectFaultRequest {
            rule: Some(pb::FaultRule {
                method: "WrapKey".into(),
                kind: pb::FaultKind::Unavailable as i32,
                trigger: Some(pb::fault_rule::Trigger::EveryNth(2)),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let (code, report, stderr) = bench(&server, &key_file, &["--rpcs", "wrap"]).await;
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("calls failed"), "{stderr}");
    let wrap = &report["rpcs"][1];
    assert_eq!(wrap["rpc"], "WrapKey");
    assert!(
        wrap["errors"]["Unavailable"].as_u64().unwrap() > 0,
        "{wrap}"
    );
    assert!(number(wrap, "calls") > 0.0, "{wrap}");
    assert_eq!(report["rpcs"][0]["errors"], serde_json::json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_refuses_a_bad_api_key_and_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let server = persistent_server(dir.path()).await;

    let wrong = dir.path().join("wrong-key");
    std::fs::write(
        &wrong,
        "kmsim-ak-00000000000000000000000000000000-notarealsecret00\n",
    )
    .unwrap();
    let (code, report, stderr) = bench(&server, &wrong, &[]).await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(report, Value::Null);
    assert!(
        stderr.contains("CreateToken refused the API key"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("notarealsecret"),
        "the key is never printed: {stderr}"
    );

    let missing = dir.path().join("no-such-file");
    let (code, _, stderr) = bench(&server, &missing, &[]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot read the API key file"), "{stderr}");

    let key_file = dir.path().join(kmsim_server::ADMIN_KEY_FILE);
    let (code, _, stderr) = bench(&server, &key_file, &["--list-page-size", "0"]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("--list-page-size must be 1 to 5000"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_scale_reports_throughput_memory_disk_listing_and_advance() {
    let dir = tempfile::tempdir().unwrap();
    let server = persistent_server(dir.path()).await;
    let key_file = dir.path().join(kmsim_server::ADMIN_KEY_FILE);
    let data_dir = dir.path().to_str().unwrap();

    let (code, report, stderr) = bench(
        &server,
        &key_file,
        &[
            "--scale",
            "30",
            "--data-dir",
            data_dir,
            "--list-page-size",
            "10",
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}\n{report}");
    let scale = &report["scale"];
    assert_eq!(scale["keys"], 30, "{scale}");
    assert_eq!(scale["create_errors"], serde_json::json!({}));
    for field in [
        "creates_per_sec",
        "rss_bytes_per_key",
        "data_dir_bytes_per_key",
        "list_page_ms_min",
        "list_page_ms_median",
        "advance_100_days_ms",
    ] {
        assert!(number(scale, field) > 0.0, "{field}: {scale}");
    }
    // No restart without --spawn-server.
    assert_eq!(scale["restart_to_serving_ms"], Value::Null);
    assert_eq!(report["rpcs"], serde_json::json!([]));
    // The keys really exist: 30 plus none from elsewhere in a fresh server.
    let instances = server
        .instances()
        .list_instances(pb::ListInstancesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .instances;
    assert_eq!(instances.len(), 1);
    let listed = server
        .keys()
        .list_keys(pb::ListKeysRequest {
            instance: instances[0].id.clone(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys.len(), 30);
}
