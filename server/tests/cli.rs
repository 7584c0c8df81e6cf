//! The `kmsim` binary's start-up errors, run as a process: boolean environment variables
//! accept 1/0/true/false/yes/no, `--dev` refuses a network address, and a busy port is named.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn kmsim(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kmsim"));
    command.arg("serve").args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("KMSIM_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command.output().expect("kmsim runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn boolean_environment_variables_accept_yes_no_one_zero() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    // --dev on 0.0.0.0 is refused: proves KMSIM_DEV was read as true.
    for yes in ["1", "yes", "true"] {
        let output = kmsim(
            &["--listen", "0.0.0.0:0", "--data-dir", data],
            &[("KMSIM_DEV", yes)],
        );
        assert!(!output.status.success());
        assert!(
            stderr(&output).contains("--dev-allow-remote"),
            "KMSIM_DEV={yes}: {}",
            stderr(&output)
        );
    }
    // Not --dev: the plaintext warning, then no master key.
    for no in ["0", "no", "false"] {
        let output = kmsim(
            &["--listen", "0.0.0.0:0", "--data-dir", data],
            &[("KMSIM_DEV", no)],
        );
        let text = stderr(&output);
        assert!(!output.status.success());
        assert!(text.contains("no HSM master key"), "KMSIM_DEV={no}: {text}");
        assert!(text.contains("PLAINTEXT ON A NETWORK ADDRESS"), "{text}");
    }
    let output = kmsim(&["--data-dir", data], &[("KMSIM_DEV", "maybe")]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("maybe"), "{}", stderr(&output));
}

#[test]
fn a_busy_port_names_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = kmsim(
        &[
            "--dev",
            "--listen",
            &address,
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert!(!output.status.success());
    let text = stderr(&output);
    assert!(
        text.contains(&format!("cannot listen on {address}")),
        "{text}"
    );
}

#[test]
fn dev_allow_remote_lets_dev_listen_beyond_loopback_and_warns() {
    // Refused before anything is opened when the flag is missing; with it, the plaintext
    // warning is logged and the server gets as far as binding (a taken port fails there).
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let address = format!("0.0.0.0:{}", taken.local_addr().unwrap().port());
    let output = kmsim(
        &[
            "--dev",
            "--dev-allow-remote",
            "--listen",
            &address,
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[("KMSIM_LOG_FORMAT", "text")],
    );
    let text = stderr(&output);
    assert!(!output.status.success());
    assert!(text.contains("PLAINTEXT ON A NETWORK ADDRESS"), "{text}");
    assert!(
        text.contains(&format!("cannot listen on {address}")),
        "{text}"
    );
    assert!(
        !text.contains("\u{1b}["),
        "no ANSI colours when stderr is not a terminal: {text}"
    );
}
