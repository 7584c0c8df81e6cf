//! The real `kmsim` binary as a process: durability across SIGKILL, no key plaintext
//! anywhere in the data directory, and the bootstrap admin (API key file, development token
//! only with --dev, no secret in the log).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kmsim_proto::v1 as pb;
use pb::instance_service_client::InstanceServiceClient;
use pb::key_service_client::KeyServiceClient;
use tonic::transport::Channel;

struct Server {
    child: Child,
    endpoint: String,
    /// Every log line so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    /// A failing test must not leave a server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Adds the development token to every request.
fn dev_token(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    request
        .metadata_mut()
        .insert("authorization", "Bearer kmsim-dev-token".parse().unwrap());
    Ok(request)
}

/// Starts `kmsim serve --dev` on an ephemeral port over `dir` and waits for its address.
fn start(dir: &Path) -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kmsim"));
    command.args(["serve", "--dev"]);
    start_command(command, dir)
}

/// Starts `kmsim serve <flags already in command>` over `dir`.
fn start_command(mut command: Command, dir: &Path) -> Server {
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
fn wait_for_log(server: &Server, needle: &str) {
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

async fn channel(endpoint: &str) -> Channel {
    Channel::from_shared(endpoint.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[derive(Debug, Clone)]
struct Acknowledged {
    crn: String,
    ciphertext: Vec<u8>,
    plaintext: Vec<u8>,
}

#[tokio::test]
async fn every_acknowledged_key_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let channel = channel(&server.endpoint).await;
    let instance = InstanceServiceClient::with_interceptor(channel.clone(), dev_token)
        .create_instance(pb::CreateInstanceRequest {
            name: "durable".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap()
        .id;

    // Create keys as fast as possible from a background task; kill the server mid-stream.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Acknowledged>();
    let writer = {
        let channel = channel.clone();
        let instance = instance.clone();
        tokio::spawn(async move {
            let mut keys = KeyServiceClient::with_interceptor(channel, dev_token);
            for n in 0.. {
                let created = keys
                    .create_key(pb::CreateKeyRequest {
                        instance: instance.clone(),
                        name: format!("key-{n}"),
                        r#type: pb::KeyType::Root as i32,
                        ..Default::default()
                    })
                    .await;
                let Ok(created) = created else { break };
                let key = created.into_inner().key.unwrap();
                let Ok(wrapped) = keys
                    .wrap_key(pb::WrapKeyRequest {
                        key: key.crn.clone(),
                        ..Default::default()
                    })
                    .await
                else {
                    // The key itself was acknowledged: it must survive, with no ciphertext to check.
                    let _ = tx.send(Acknowledged {
                        crn: key.crn,
                        ciphertext: vec![],
                        plaintext: vec![],
                    });
                    break;
                };
                let wrapped = wrapped.into_inner();
                if tx
                    .send(Acknowledged {
                        crn: key.crn,
                        ciphertext: wrapped.ciphertext,
                        plaintext: wrapped.plaintext,
                    })
                    .is_err()
                {
                    break;
                }
            }
        })
    };
    let mut acknowledged = Vec::new();
    while acknowledged.len() < 25 {
        acknowledged.push(rx.recv().await.expect("the writer keeps creating keys"));
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    writer.await.unwrap();
    while let Ok(item) = rx.try_recv() {
        acknowledged.push(item);
    }

    let mut server = start(dir.path());
    let mut keys =
        KeyServiceClient::with_interceptor(channel_retry(&server.endpoint).await, dev_token);
    for item in &acknowledged {
        let key = keys
            .get_key(pb::GetKeyRequest {
                key: item.crn.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .key
            .unwrap();
        assert_eq!(key.state, pb::KeyState::Active as i32);
        if !item.ciphertext.is_empty() {
            let unwrapped = keys
                .unwrap_key(pb::UnwrapKeyRequest {
                    key: item.crn.clone(),
                    ciphertext: item.ciphertext.clone(),
                    aad: vec![],
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(unwrapped.plaintext, item.plaintext);
        }
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

async fn channel_retry(endpoint: &str) -> Channel {
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

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test]
async fn no_key_plaintext_anywhere_in_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let channel = channel(&server.endpoint).await;
    let instance = InstanceServiceClient::with_interceptor(channel.clone(), dev_token)
        .create_instance(pb::CreateInstanceRequest {
            name: "scan".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap()
        .id;
    let mut keys = KeyServiceClient::with_interceptor(channel, dev_token);
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    for n in 0u8..6 {
        // Distinctive imported material for root and standard keys.
        let material: Vec<u8> = (0..32).map(|i| i ^ (0xA5u8.wrapping_add(n * 17))).collect();
        let kind = if n % 2 == 0 {
            pb::KeyType::Root
        } else {
            pb::KeyType::Standard
        };
        let key = keys
            .create_key(pb::CreateKeyRequest {
                instance: instance.clone(),
                name: format!("scan-{n}"),
                r#type: kind as i32,
                material: Some(pb::create_key_request::Material::Payload(material.clone())),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .key
            .unwrap();
        secrets.push(material);
        if kind == pb::KeyType::Root {
            let dek = keys
                .wrap_key(pb::WrapKeyRequest {
                    key: key.crn.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            secrets.push(dek.plaintext);
        }
    }
    // A generated standard key's payload is known to the client.
    let generated = keys
        .create_key(pb::CreateKeyRequest {
            instance: instance.clone(),
            name: "generated".into(),
            r#type: pb::KeyType::Standard as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    secrets.push(generated.payload);
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let mut paths = Vec::new();
    files(dir.path(), &mut paths);
    assert!(paths.len() > 1, "the data directory holds the database");
    let mut scanned = 0;
    for path in paths {
        let bytes = std::fs::read(&path).unwrap();
        scanned += bytes.len();
        for secret in &secrets {
            assert!(secret.len() >= 16);
            let hex = hex::encode(secret);
            let forms: [&[u8]; 2] = [secret, hex.as_bytes()];
            for form in forms {
                assert!(
                    !bytes.windows(form.len()).any(|w| w == form),
                    "{} contains key plaintext",
                    path.display()
                );
            }
        }
    }
    assert!(scanned > 0);
}

/// Without --dev: the first start creates the bootstrap admin and writes its API key to
/// `<data-dir>/admin-api-key` (mode 0600), logs the path but never the key; the key exchanges
/// for a working token; the development token is refused; a restart keeps the same admin.
#[tokio::test]
async fn bootstrap_admin_key_file_without_dev() {
    use pb::iam_service_client::IamServiceClient;
    use tonic_types::StatusExt;

    let dir = tempfile::tempdir().unwrap();
    let master = dir.path().join("master.key");
    std::fs::write(&master, "11".repeat(32)).unwrap();
    let data = dir.path().join("data");
    let launch = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kmsim"));
        command
            .args(["serve", "--master-key-file"])
            .arg(&master)
            .env("KMSIM_HSM_SO_PIN", "so-pin-for-tests")
            .env("KMSIM_HSM_USER_PIN", "user-pin-for-tests");
        start_command(command, &data)
    };
    let mut server = launch();
    wait_for_log(&server, "created the bootstrap admin identity");
    let key_file = data.join("admin-api-key");
    let api_key = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(!api_key.is_empty());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the admin key file is private");
    }

    let channel = channel(&server.endpoint).await;
    // The development token is refused without --dev.
    let refused = InstanceServiceClient::with_interceptor(channel.clone(), dev_token)
        .list_instances(pb::ListInstancesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        refused.get_error_details().error_info().unwrap().reason,
        "UNAUTHORIZED_ERR"
    );

    // The admin API key exchanges for a token that works.
    let token = IamServiceClient::new(channel.clone())
        .create_token(pb::CreateTokenRequest {
            api_key: api_key.clone(),
            expires_in_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let header: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    let with_token = move |mut request: tonic::Request<()>| {
        request
            .metadata_mut()
            .insert("authorization", header.clone());
        Ok(request)
    };
    InstanceServiceClient::with_interceptor(channel.clone(), with_token.clone())
        .create_instance(pb::CreateInstanceRequest {
            name: "bootstrap".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let log = server.log.lock().unwrap().join("\n");
    assert!(
        log.contains(key_file.to_str().unwrap()),
        "the log names the file"
    );
    assert!(!log.contains(&api_key), "the API key is never logged");
    assert!(!log.contains(&token), "the token is never logged");
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    // A restart keeps the admin (the same key still works) and does not rewrite the file.
    let mut server = launch();
    let channel = channel_retry(&server.endpoint).await;
    IamServiceClient::new(channel)
        .create_token(pb::CreateTokenRequest {
            api_key: api_key.clone(),
            expires_in_seconds: 0,
        })
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap().trim(),
        api_key,
        "the key file is written once"
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully_and_keeps_state() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut instances =
        InstanceServiceClient::with_interceptor(channel(&server.endpoint).await, dev_token);
    let created = instances
        .create_instance(pb::CreateInstanceRequest {
            name: "graceful".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Keep the client's connection open (and serviced) while the server shuts down: the
    // server must still exit, after at most its grace period.
    let mut server = server;
    let exit = tokio::task::spawn_blocking(move || server.child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "kmsim exits 0 on SIGTERM, got {exit:?}");
    drop(instances);

    let server = start(dir.path());
    let mut instances =
        InstanceServiceClient::with_interceptor(channel_retry(&server.endpoint).await, dev_token);
    let listed = instances
        .list_instances(pb::ListInstancesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.instances.len(), 1);
    assert_eq!(listed.instances[0].id, created.id);
}
