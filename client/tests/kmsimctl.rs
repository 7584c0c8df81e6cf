//! `kmsimctl` run as a binary against a real in-process server: exit statuses (2 usage, 1
//! refused by the server, 3 unreachable, including an `https` endpoint that finds no TLS),
//! and `login`, which caches the token in a 0600 file that later commands use, never
//! printing it.

#![cfg(feature = "cli")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use kmsim_client::KmsClient;
use kmsim_client::proto::{CreateAccessPolicyRequest, CreateApiKeyRequest, IdentityKind, Role};
use tokio::sync::oneshot;

const DEV_TOKEN: &str = kmsim_server::auth::DEV_TOKEN;

/// A server on a loopback port: its endpoint and its stop switch.
async fn server() -> (String, oneshot::Sender<()>) {
    let clock = Arc::new(kmsim_server::clock::SimulatedClock::starting_now());
    let config = kmsim_server::Config::ephemeral(clock);
    let kms = tokio::task::spawn_blocking(move || kmsim_server::open(&config))
        .await
        .unwrap()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(kmsim_server::serve_kms(listener, kms, async {
        let _ = stopped.await;
    }));
    (format!("http://{address}"), stop)
}

struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

/// Runs kmsimctl with `args`, no `KMSIM_*` environment but `env`, and `home` as `$HOME`.
async fn kmsimctl(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kmsimctl"));
    for (name, _) in std::env::vars() {
        if name.starts_with("KMSIM_") {
            command.env_remove(name);
        }
    }
    let output = command
        .env("HOME", home)
        .envs(env.iter().copied())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    Run {
        status: output.status.code().unwrap(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_statuses_tell_usage_errors_refusals_and_unreachable_servers_apart() {
    let home = tempfile::tempdir().unwrap();
    let (endpoint, _stop) = server().await;
    let run = |args: &[&str]| {
        let mut all = vec!["--endpoint", endpoint.as_str()];
        all.extend_from_slice(args);
        let all: Vec<String> = all.into_iter().map(str::to_owned).collect();
        let home = home.path().to_path_buf();
        async move {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            kmsimctl(&home, &[], &refs).await
        }
    };

    // Usage: a missing argument, an unreadable CA file, TLS options on http://.
    assert_eq!(run(&["instance", "get"]).await.status, 2);
    let unreadable = run(&["--ca-file", "/no/such/ca.pem", "instance", "list"]).await;
    assert_eq!(unreadable.status, 2, "{}", unreadable.stderr);
    assert!(unreadable.stderr.contains("/no/such/ca.pem"));
    let tls_on_http = run(&["--tls-domain", "kms", "instance", "list"]).await;
    assert_eq!(tls_on_http.status, 2, "{}", tls_on_http.stderr);

    // Refused by the server: the reason is printed.
    let missing = run(&[
        "--token",
        DEV_TOKEN,
        "instance",
        "get",
        "5f0e8b1a-1c2d-4e3f-8a9b-0c1d2e3f4a5b",
    ])
    .await;
    assert_eq!(missing.status, 1, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("INSTANCE_NOT_FOUND_ERR"),
        "{}",
        missing.stderr
    );
    let anonymous = run(&["instance", "list"]).await;
    assert_eq!(anonymous.status, 1);
    assert!(
        anonymous.stderr.contains("Unauthenticated"),
        "{}",
        anonymous.stderr
    );
    assert_eq!(
        run(&["--token", DEV_TOKEN, "instance", "list"])
            .await
            .status,
        0
    );

    // Unreachable: nothing listening, and an https endpoint on the plaintext server (never
    // spoken to in plaintext).
    let nothing = kmsimctl(
        home.path(),
        &[],
        &["--endpoint", "http://127.0.0.1:1", "instance", "list"],
    )
    .await;
    assert_eq!(nothing.status, 3, "{}", nothing.stderr);
    let https = endpoint.replace("http://", "https://");
    let no_tls = kmsimctl(
        home.path(),
        &[],
        &[
            "--endpoint",
            &https,
            "--token",
            DEV_TOKEN,
            "instance",
            "list",
        ],
    )
    .await;
    assert_eq!(no_tls.status, 3, "{}", no_tls.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn login_caches_the_token_in_an_owner_only_file() {
    let home = tempfile::tempdir().unwrap();
    let (endpoint, _stop) = server().await;
    // An administrator identity with an API key.
    let admin = KmsClient::builder(endpoint.clone())
        .bearer_token(DEV_TOKEN)
        .connect()
        .await
        .unwrap();
    let created = admin
        .create_api_key(CreateApiKeyRequest {
            kind: IdentityKind::User as i32,
            name: "operator".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .iam_service()
        .create_access_policy(CreateAccessPolicyRequest {
            identity_id: created.api_key.unwrap().identity.unwrap().id,
            instance: String::new(),
            roles: vec![Role::Administrator as i32],
        })
        .await
        .unwrap();
    let token_file = home.path().join("cache").join("token");
    let token_file_arg = token_file.to_str().unwrap();

    // A wrong key: refused, nothing cached.
    let wrong = kmsimctl(
        home.path(),
        &[("KMSIM_API_KEY", "not-a-key")],
        &[
            "--endpoint",
            &endpoint,
            "--token-file",
            token_file_arg,
            "login",
        ],
    )
    .await;
    assert_eq!(wrong.status, 1, "{}", wrong.stderr);
    assert!(!token_file.exists());

    let login = kmsimctl(
        home.path(),
        &[("KMSIM_API_KEY", &created.secret)],
        &[
            "--endpoint",
            &endpoint,
            "--token-file",
            token_file_arg,
            "login",
        ],
    )
    .await;
    assert_eq!(login.status, 0, "{}", login.stderr);
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(token.starts_with("ey"), "a JWT is cached");
    assert!(!login.stdout.contains(&token) && !login.stderr.contains(&token));
    assert!(login.stdout.contains("operator"), "{}", login.stdout);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Later commands send the cached token.
    let listed = kmsimctl(
        home.path(),
        &[],
        &[
            "--endpoint",
            &endpoint,
            "--token-file",
            token_file_arg,
            "instance",
            "list",
        ],
    )
    .await;
    assert_eq!(listed.status, 0, "{}", listed.stderr);
}

/// Parses kmsimctl's JSON output, after checking it succeeded.
fn json(run: &Run) -> serde_json::Value {
    assert_eq!(run.status, 0, "{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap()
}

/// The README's BYOK walk-through, step by step: an administrator creates an instance and a
/// root key and authorizes the database service; the service logs in with its API key,
/// registers a deployment, sees the rotation event and acknowledges it; the key's plain delete
/// is refused while the deployment is registered and a force delete goes through.
#[tokio::test(flavor = "multi_thread")]
async fn the_byok_walk_through() {
    let home = tempfile::tempdir().unwrap();
    let (endpoint, _stop) = server().await;
    let admin_env = [
        ("KMSIM_ENDPOINT", endpoint.as_str()),
        ("KMSIM_TOKEN", DEV_TOKEN),
    ];
    let pg = "crn:v1:bluemix:public:databases-for-postgresql:us-south:a/kmsim:pg-1::";

    let instance =
        json(&kmsimctl(home.path(), &admin_env, &["instance", "create", "orders"]).await)["id"]
            .as_str()
            .unwrap()
            .to_owned();
    let key = json(
        &kmsimctl(
            home.path(),
            &admin_env,
            &["key", "create", "--instance", &instance, "orders-root"],
        )
        .await,
    );
    let key_crn = key["crn"].as_str().unwrap().to_owned();
    json(
        &kmsimctl(
            home.path(),
            &admin_env,
            &[
                "iam",
                "authorize",
                "--service",
                "databases-for-postgresql",
                "--instance",
                &instance,
            ],
        )
        .await,
    );
    let api_key = json(
        &kmsimctl(
            home.path(),
            &admin_env,
            &[
                "iam",
                "create-api-key",
                "--service",
                "databases-for-postgresql",
                "--source-crn",
                pg,
            ],
        )
        .await,
    )["secret"]
        .as_str()
        .unwrap()
        .to_owned();

    // The database service logs in and registers its deployment.
    let service_token = home.path().join("service-token");
    let service_env = [
        ("KMSIM_ENDPOINT", endpoint.as_str()),
        ("KMSIM_TOKEN_FILE", service_token.to_str().unwrap()),
    ];
    let mut login_env = service_env.to_vec();
    login_env.push(("KMSIM_API_KEY", &api_key));
    json(&kmsimctl(home.path(), &login_env, &["login"]).await);
    let registered = json(
        &kmsimctl(
            home.path(),
            &service_env,
            &["registration", "create", &key_crn, "--resource", pg],
        )
        .await,
    );
    assert_eq!(registered["resource_crn"], pg);

    // Rotation: the service sees the event and acknowledges it.
    let rotated = json(&kmsimctl(home.path(), &admin_env, &["key", "rotate", &key_crn]).await);
    let watched = kmsimctl(
        home.path(),
        &service_env,
        &["event", "watch", "--resource", pg],
    )
    .await;
    assert_eq!(watched.status, 0, "{}", watched.stderr);
    let event: serde_json::Value =
        serde_json::from_str(watched.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(event["kind"], "LIFECYCLE_EVENT_KIND_ROTATE");
    let new_version = event["new_key_version_id"].as_str().unwrap().to_owned();
    assert_ne!(
        rotated["current_version"]["id"].as_str(),
        key["current_version"]["id"].as_str()
    );
    let acked = json(
        &kmsimctl(
            home.path(),
            &service_env,
            &[
                "event",
                "ack",
                event["event_id"].as_str().unwrap(),
                "--state",
                "active",
                "--version",
                &new_version,
            ],
        )
        .await,
    );
    assert_eq!(acked["status"], "LIFECYCLE_DELIVERY_STATUS_ACKNOWLEDGED");

    // Deleting the key: refused while registered, unless forced.
    let refused = kmsimctl(home.path(), &admin_env, &["key", "delete", &key_crn]).await;
    assert_eq!(refused.status, 1);
    assert!(
        refused.stderr.contains("PROTECTED_RESOURCE_ERR"),
        "{}",
        refused.stderr
    );
    let deleted = json(
        &kmsimctl(
            home.path(),
            &admin_env,
            &["key", "delete", &key_crn, "--force"],
        )
        .await,
    );
    assert_eq!(deleted["state"], "KEY_STATE_DESTROYED");
}

#[tokio::test]
async fn completion_scripts_name_the_subcommands() {
    let home = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let run = kmsimctl(home.path(), &[], &["completions", shell]).await;
        assert_eq!(run.status, 0, "{}", run.stderr);
        assert!(run.stdout.contains("kmsimctl"), "{shell}");
        assert!(run.stdout.contains("registration"), "{shell}");
    }
    assert_eq!(
        kmsimctl(home.path(), &[], &["completions", "tcsh"])
            .await
            .status,
        2
    );
}
