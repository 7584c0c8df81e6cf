//! Seeding (`--seed-file`) and deterministic runs (`--deterministic`): two servers with the
//! same seed answer byte for byte alike; a seed file creates its objects with fixed ids and
//! material, idempotently, across data directories, and a bad or conflicting file stops the
//! start-up with an error naming it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kmsim_proto::v1 as pb;
use kmsim_server::clock::{SimulatedClock, Timestamp};
use kmsim_server::kms::keystore::HsmCredentials;
use kmsim_server::{Config, ServeError};
use kmsim_tests::{TestServer, assert_error, key_path, persistent_config};
use prost::Message;
use tonic::Code;

const START: i64 = 1_767_225_600_000;
const INSTANCE: &str = "3f1c2a9e-7b4d-4e21-9c5a-1d2e3f4a5b6c";
const ORDERS_ROOT: &str = "8a2b4c6d-1e3f-4a5b-8c7d-9e0f1a2b3c4d";
const ORDERS_VERSION: &str = "5d6e7f80-9a1b-4c2d-8e3f-4a5b6c7d8e9f";
const AUDIT_ROOT: &str = "1b2c3d4e-5f60-4718-99aa-bbccddeeff00";
const APP_SECRET: &str = "2c3d4e5f-6071-4829-aabb-ccddeeff0011";
const ALICE: &str = "4d5e6f70-8192-4a3b-bccd-deeff0011223";
const ALICE_KEY: &str = "kmsim-ak-0a1b2c3d4e5f40718293a4b5c6d7e8f9-alice-test-key-0123456789";
const POSTGRES: &str = "5e6f7081-92a3-4b4c-8dde-eff001122334";
const POSTGRES_KEY: &str = "kmsim-ak-1b2c3d4e5f6041829304b5c6d7e8f9a0-postgres-test-key-0123456789";
const POLICY: &str = "6f708192-a3b4-4c5d-9eef-f00112233445";
const AUTHORIZATION: &str = "708192a3-b4c5-4d6e-8ff0-011223344556";

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/seed-example.yaml")
}

fn clock() -> Arc<SimulatedClock> {
    Arc::new(SimulatedClock::new(Timestamp::from_millis(START)))
}

async fn start_deterministic(seed: u64) -> TestServer {
    let clock = clock();
    let mut config = Config::ephemeral(clock.clone());
    config.deterministic = Some(seed);
    TestServer::start_with(config, clock).await
}

async fn start_seeded(file: &Path) -> TestServer {
    let clock = clock();
    let mut config = Config::ephemeral(clock.clone());
    config.seed_file = Some(file.to_path_buf());
    TestServer::start_with(config, clock).await
}

/// A persistent configuration over `dir` seeded from `file` (a fresh master key each time:
/// seeded material must not depend on it).
fn seeded_dir(dir: &Path, file: &Path) -> (Config, Arc<SimulatedClock>) {
    let clock = clock();
    // One master key per directory, the same at every start.
    let tag = dir.as_os_str().len().to_le_bytes()[0];
    let master: [u8; 32] = std::array::from_fn(|i| tag ^ (i.to_le_bytes()[0]));
    let credentials = HsmCredentials {
        so_pin: sim_hsm::Zeroizing::new(b"seeding-so-pin".to_vec()),
        user_pin: sim_hsm::Zeroizing::new(b"seeding-user-pin".to_vec()),
    };
    let mut config = persistent_config(dir, master, &credentials, clock.clone());
    config.seed_file = Some(file.to_path_buf());
    (config, clock)
}

async fn open_error(config: Config) -> String {
    let result = tokio::task::spawn_blocking(move || kmsim_server::open(&config).map(|_| ()))
        .await
        .unwrap();
    match result {
        Ok(()) => panic!("the start-up should fail"),
        Err(error @ ServeError::Seed(_)) => error.to_string(),
        Err(other) => panic!("expected a seed error, got {other}"),
    }
}

/// The scripted calls of the determinism test; returns every response, encoded.
async fn script(server: &TestServer) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let instance = server
        .instances()
        .create_instance(pb::CreateInstanceRequest {
            name: "deterministic".into(),
            flavor: pb::InstanceFlavor::KeyProtect as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    out.push(instance.encode_to_vec());
    let instance = instance.instance.unwrap().id;
    let mut keys = server.keys();
    let root = keys
        .create_key(pb::CreateKeyRequest {
            instance: instance.clone(),
            name: "root".into(),
            r#type: pb::KeyType::Root as i32,
            aliases: vec!["det-root".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    out.push(root.encode_to_vec());
    let root = key_path(&instance, &root.key.unwrap().id);
    let standard = keys
        .create_key(pb::CreateKeyRequest {
            instance: instance.clone(),
            name: "standard".into(),
            r#type: pb::KeyType::Standard as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    out.push(standard.encode_to_vec());
    let with_plaintext = keys
        .wrap_key(pb::WrapKeyRequest {
            key: root.clone(),
            plaintext: b"a data key of 32 bytes, exactly!".to_vec(),
            aad: vec!["ctx".into()],
        })
        .await
        .unwrap()
        .into_inner();
    out.push(with_plaintext.encode_to_vec());
    let generated = keys
        .wrap_key(pb::WrapKeyRequest {
            key: root.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(generated.plaintext.len(), 32, "a generated data key");
    out.push(generated.encode_to_vec());
    let rotated = keys
        .rotate_key(pb::RotateKeyRequest {
            key: root.clone(),
            material: None,
        })
        .await
        .unwrap()
        .into_inner();
    out.push(rotated.encode_to_vec());
    let rewrapped = keys
        .rewrap_key(pb::RewrapKeyRequest {
            key: root.clone(),
            ciphertext: generated.ciphertext.clone(),
            aad: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    out.push(rewrapped.encode_to_vec());
    let unwrapped = keys
        .unwrap_key(pb::UnwrapKeyRequest {
            key: root.clone(),
            ciphertext: with_plaintext.ciphertext.clone(),
            aad: vec!["ctx".into()],
        })
        .await
        .unwrap()
        .into_inner();
    out.push(unwrapped.encode_to_vec());
    let import_token = keys
        .create_import_token(pb::CreateImportTokenRequest {
            instance: instance.clone(),
            expiration_seconds: 600,
            max_allowed_retrievals: 1,
        })
        .await
        .unwrap()
        .into_inner();
    out.push(import_token.encode_to_vec());
    let api_key = server
        .iam()
        .create_api_key(pb::CreateApiKeyRequest {
            kind: pb::IdentityKind::User as i32,
            name: "bob".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    out.push(api_key.encode_to_vec());
    let token = server
        .iam()
        .create_token(pb::CreateTokenRequest {
            api_key: api_key.secret.clone(),
            expires_in_seconds: 600,
        })
        .await
        .unwrap()
        .into_inner();
    out.push(token.encode_to_vec());
    let listed = keys
        .list_keys(pb::ListKeysRequest {
            instance: instance.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys.len(), 2);
    out.push(listed.encode_to_vec());
    // The audit trail too, correlation ids the server minted included.
    server.kms.audit().sync().await.unwrap();
    let trail = server
        .events()
        .list_audit_events(pb::ListAuditEventsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(trail.events.len() >= 12, "{}", trail.events.len());
    assert!(
        trail
            .events
            .iter()
            .all(|e| e.correlation_id.starts_with("kmsim-"))
    );
    out.push(trail.encode_to_vec());
    out
}

#[tokio::test]
async fn same_seed_same_calls_give_identical_bytes() {
    let a = start_deterministic(42).await;
    let b = start_deterministic(42).await;
    let c = start_deterministic(43).await;
    let (ra, rb, rc) = (script(&a).await, script(&b).await, script(&c).await);
    assert_eq!(ra.len(), rb.len());
    for (i, (x, y)) in ra.iter().zip(&rb).enumerate() {
        assert_eq!(
            x, y,
            "response {i} differs between two runs with the same seed"
        );
    }
    // A different seed: different ids (the very first response carries the instance id).
    assert_ne!(ra[0], rc[0]);
    let id = |bytes: &[u8]| {
        pb::CreateInstanceResponse::decode(bytes)
            .unwrap()
            .instance
            .unwrap()
            .id
    };
    assert_ne!(id(&ra[0]), id(&rc[0]));
    // Without the flag, two servers mint different ids (OS randomness).
    let d = TestServer::start().await;
    let e = TestServer::start().await;
    assert_ne!(d.instance().await, e.instance().await);
}

async fn wrap(server: &TestServer, key: &str, plaintext: &[u8]) -> Vec<u8> {
    server
        .keys()
        .wrap_key(pb::WrapKeyRequest {
            key: key_path(INSTANCE, key),
            plaintext: plaintext.to_vec(),
            aad: vec!["orders".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .ciphertext
}

async fn unwrap(server: &TestServer, key: &str, ciphertext: &[u8]) -> pb::UnwrapKeyResponse {
    server
        .keys()
        .unwrap_key(pb::UnwrapKeyRequest {
            key: key_path(INSTANCE, key),
            ciphertext: ciphertext.to_vec(),
            aad: vec!["orders".into()],
        })
        .await
        .unwrap()
        .into_inner()
}

async fn get_key(server: &TestServer, key: &str) -> pb::Key {
    server
        .keys()
        .get_key(pb::GetKeyRequest {
            key: key_path(INSTANCE, key),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
}

#[tokio::test]
async fn a_yaml_seed_file_creates_everything_at_start_up() {
    let server = start_seeded(&example()).await;
    let instance = server
        .instances()
        .get_instance(pb::GetInstanceRequest {
            instance: INSTANCE.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert_eq!(
        (
            instance.name.as_str(),
            instance.region.as_str(),
            instance.account_id.as_str()
        ),
        ("orders", "us-south", "acme")
    );

    let orders = get_key(&server, "orders-root").await;
    assert_eq!(orders.id, ORDERS_ROOT);
    assert_eq!(orders.r#type, pb::KeyType::Root as i32);
    assert!(orders.imported);
    assert_eq!(orders.current_version.unwrap().id, ORDERS_VERSION);
    let audit = get_key(&server, AUDIT_ROOT).await;
    assert!(!audit.imported);
    assert_eq!(audit.key_size_bits, 256);
    assert_eq!(audit.description, "generated at first start");
    let app = get_key(&server, "app-secret").await;
    assert_eq!(app.id, APP_SECRET);
    assert_eq!(app.r#type, pb::KeyType::Standard as i32);
    assert_eq!(
        app.payload,
        [
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54,
            0x32, 0x10
        ]
    );
    assert_eq!(app.expiration_time.unwrap().seconds, 1_893_456_000);

    // Alice's seeded API key works, and her Writer policy lets her list and create keys.
    let alice = server.token(ALICE_KEY).await;
    let mut as_alice = server.keys_as(Some(&alice));
    let listed = as_alice
        .list_keys(pb::ListKeysRequest {
            instance: INSTANCE.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys.len(), 3);
    as_alice
        .create_key(pb::CreateKeyRequest {
            instance: INSTANCE.into(),
            name: "alice's key".into(),
            r#type: pb::KeyType::Root as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    // The service identity acts through its authorization (Reader): wrap yes, create no.
    let postgres = server.token(POSTGRES_KEY).await;
    let mut as_postgres = server.keys_as(Some(&postgres));
    as_postgres
        .wrap_key(pb::WrapKeyRequest {
            key: key_path(INSTANCE, ORDERS_ROOT),
            ..Default::default()
        })
        .await
        .unwrap();
    let refused = as_postgres
        .create_key(pb::CreateKeyRequest {
            instance: INSTANCE.into(),
            name: "nope".into(),
            r#type: pb::KeyType::Root as i32,
            ..Default::default()
        })
        .await;
    assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);

    let policies = server
        .iam()
        .list_access_policies(pb::ListAccessPoliciesRequest {
            identity_id: ALICE.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .policies;
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0].id, POLICY);
    assert_eq!(policies[0].roles, vec![pb::Role::Writer as i32]);
    let authorizations = server
        .iam()
        .list_authorizations(pb::ListAuthorizationsRequest {
            target_instance: INSTANCE.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .authorizations;
    assert_eq!(authorizations.len(), 1);
    assert_eq!(authorizations[0].id, AUTHORIZATION);
    assert_eq!(
        authorizations[0].source_instance_crn,
        "crn:v1:bluemix:public:databases-for-postgresql:us-south:a/acme:pg-1::"
    );
    assert!(
        server
            .kms
            .identity_record(POSTGRES.parse().unwrap())
            .is_some()
    );
}

#[tokio::test]
async fn seeded_material_unwraps_across_data_dirs_and_restarts_are_idempotent() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();

    // Run 1, directory A: wrap under the seeded key.
    let (config, clock) = seeded_dir(dir_a.path(), &example());
    let run1 = TestServer::start_with(config, clock).await;
    let ciphertext = wrap(&run1, ORDERS_ROOT, b"the orders table's data key").await;
    let audit_before = get_key(&run1, AUDIT_ROOT).await;
    let audit_ciphertext = wrap(&run1, AUDIT_ROOT, b"audit data key").await;
    run1.stop().await;

    // Run 2, a fresh directory B (another master key), the same file: it unwraps.
    let (config, clock) = seeded_dir(dir_b.path(), &example());
    let run2 = TestServer::start_with(config, clock).await;
    let opened = unwrap(&run2, ORDERS_ROOT, &ciphertext).await;
    assert_eq!(opened.plaintext, b"the orders table's data key");
    assert_eq!(opened.key_version.unwrap().id, ORDERS_VERSION);
    // Generated material is not portable: another directory has other material.
    let refused = run2
        .keys()
        .unwrap_key(pb::UnwrapKeyRequest {
            key: key_path(INSTANCE, AUDIT_ROOT),
            ciphertext: audit_ciphertext.clone(),
            aad: vec!["orders".into()],
        })
        .await;
    assert_error(
        refused,
        Code::InvalidArgument,
        "UNPROCESSABLE_CIPHERTEXT_ERR",
    );
    run2.stop().await;

    // Run 3, directory A again with the same file: nothing changes, nothing fails.
    let (config, clock) = seeded_dir(dir_a.path(), &example());
    let run3 = TestServer::start_with(config, clock).await;
    let audit_after = get_key(&run3, AUDIT_ROOT).await;
    assert_eq!(audit_after.encode_to_vec(), audit_before.encode_to_vec());
    assert_eq!(
        unwrap(&run3, AUDIT_ROOT, &audit_ciphertext).await.plaintext,
        b"audit data key"
    );
    assert_eq!(
        unwrap(&run3, ORDERS_ROOT, &ciphertext).await.plaintext,
        b"the orders table's data key"
    );
    let listed = run3
        .keys()
        .list_keys(pb::ListKeysRequest {
            instance: INSTANCE.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys.len(), 3);
    let policies = run3
        .iam()
        .list_access_policies(pb::ListAccessPoliciesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .policies;
    assert_eq!(
        policies.iter().filter(|p| p.id == POLICY).count(),
        1,
        "the seeded policy exists once"
    );
    run3.token(ALICE_KEY).await;
    run3.stop().await;
}

#[tokio::test]
async fn a_json_seed_file_gives_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("seed.json");
    std::fs::write(
        &json,
        format!(
            r#"{{
  "instances": [{{"id": "{INSTANCE}", "name": "orders", "account": "acme"}}],
  "keys": [{{
    "id": "{ORDERS_ROOT}", "instance": "{INSTANCE}", "name": "orders-root", "kind": "root",
    "aliases": ["orders-root"], "version_id": "{ORDERS_VERSION}",
    "material": {{"base64": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}}
  }}]
}}"#
        ),
    )
    .unwrap();
    let yaml_run = start_seeded(&example()).await;
    let ciphertext = wrap(&yaml_run, ORDERS_ROOT, b"made under the YAML seed").await;
    let json_run = start_seeded(&json).await;
    assert_eq!(
        unwrap(&json_run, "orders-root", &ciphertext)
            .await
            .plaintext,
        b"made under the YAML seed"
    );
    assert_eq!(
        get_key(&json_run, ORDERS_ROOT).await.aliases,
        vec!["orders-root"]
    );
}

#[tokio::test]
async fn conflicting_and_malformed_files_stop_the_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (config, clock) = seeded_dir(&data, &example());
    TestServer::start_with(config, clock).await.stop().await;
    let example_text = std::fs::read_to_string(example()).unwrap();

    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    // The same key id with other material.
    let other_material = write(
        "other-material.yaml",
        &example_text.replace(
            "hex: 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            "hex: ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        ),
    );
    let (config, _) = seeded_dir(&data, &other_material);
    let error = open_error(config).await;
    assert!(error.contains("other-material.yaml"), "{error}");
    assert!(
        error.contains(&format!("keys[0] (id {ORDERS_ROOT})")),
        "{error}"
    );
    assert!(error.contains("different material"), "{error}");

    // The same instance id with another name.
    let renamed = write(
        "renamed.yaml",
        &example_text.replace("name: orders\n", "name: payments\n"),
    );
    let (config, _) = seeded_dir(&data, &renamed);
    let error = open_error(config).await;
    assert!(
        error.contains(&format!("instances[0] (id {INSTANCE})")),
        "{error}"
    );
    assert!(error.contains("different name"), "{error}");

    // The same API key id with another secret.
    let other_secret = write(
        "other-secret.yaml",
        &example_text.replace("alice-test-key-0123456789", "alice-other-key-0123456789"),
    );
    let (config, _) = seeded_dir(&data, &other_secret);
    let error = open_error(config).await;
    assert!(
        error.contains(&format!("identities[0] (id {ALICE})")),
        "{error}"
    );
    assert!(error.contains("another secret"), "{error}");

    // Malformed YAML, a bad entry, an unknown field, a missing instance, a bad extension.
    let cases = [
        ("broken.yaml", "instances: [", "file: not a valid seed file"),
        (
            "bad-alias.yml",
            &example_text.replace("aliases: [orders-root]", "aliases: [\"no spaces\"]"),
            "keys[0]",
        ),
        (
            "typo.yaml",
            &example_text.replace("size_bits: 256", "size_bytes: 32"),
            "unknown field `size_bytes`",
        ),
        (
            "no-instance.json",
            r#"{"keys": [{"id": "9b2b4c6d-1e3f-4a5b-8c7d-9e0f1a2b3c4d", "instance": "9f1c2a9e-7b4d-4e21-9c5a-1d2e3f4a5b6c", "name": "lost", "kind": "root"}]}"#,
            "keys[0] (id 9b2b4c6d-1e3f-4a5b-8c7d-9e0f1a2b3c4d): refused",
        ),
        ("seed.toml", "", "unknown extension"),
    ];
    for (name, text, expected) in cases {
        let path = write(name, text);
        let fresh = dir.path().join(format!("data-{name}"));
        let (config, _) = seeded_dir(&fresh, &path);
        let error = open_error(config).await;
        assert!(error.contains(name), "{name}: {error}");
        assert!(error.contains(expected), "{name}: {error}");
    }
    // A missing file.
    let (config, _) = seeded_dir(&data, &dir.path().join("missing.yaml"));
    let error = open_error(config).await;
    assert!(error.contains("missing.yaml: file: cannot read"), "{error}");

    // After all these refusals the original state is intact.
    let (config, clock) = seeded_dir(&data, &example());
    let server = TestServer::start_with(config, clock).await;
    assert_eq!(get_key(&server, "orders-root").await.id, ORDERS_ROOT);
    server.stop().await;
}

#[test]
fn the_readme_shows_the_tested_example() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let example = std::fs::read_to_string(example()).unwrap();
    assert!(
        readme.contains(&format!("```yaml\n{example}```")),
        "README.md must show tests/data/seed-example.yaml verbatim"
    );
}
