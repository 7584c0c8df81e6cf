//! The `kmsim` binary: parses the command line, sets up logging, opens the state
//! ([`kmsim_server::open`]), then binds the listener and runs [`kmsim_server::serve_kms`]
//! until SIGINT or SIGTERM.

use clap::Parser;
use kmsim_server::config::{Cli, Command, LogFormat, ServeArgs};

/// How long a shutdown waits for open connections to finish.
const GRACE_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KMSIM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into files or pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
}

async fn run(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    init_logging(args.log_format);
    if args.dev {
        tracing::warn!(
            file = %args.dev_secrets_path().display(),
            "DEVELOPMENT MODE: the HSM master key and PINs are stored IN PLAINTEXT in this file. \
             Anyone who can read it can read every key. Never use --dev outside tests."
        );
    }
    let address = args.listen_address()?;
    if let Some(warning) = args.check_exposure(address)? {
        tracing::warn!("{warning}");
    }
    let config = args.to_config()?;
    let options = config.serve.clone();
    // Open (and seed) everything before listening: a start-up that fails (a bad seed file,
    // the wrong master key) exits without ever accepting a connection.
    let kms = tokio::task::spawn_blocking(move || kmsim_server::open(&config)).await??;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| format!("cannot listen on {address}: {error}"))?;
    tracing::info!(address = %listener.local_addr()?, data_dir = %args.data_dir.display(), "kmsim listening");
    let rest = match args.rest_listen {
        Some(address) => {
            let rest = tokio::net::TcpListener::bind(address).await?;
            tracing::info!(address = %rest.local_addr()?, "Key Protect REST facade listening");
            Some(rest)
        }
        None => None,
    };
    // On a signal, stop accepting and drain in-flight calls; clients that keep idle
    // connections open get GRACE_PERIOD before the process exits anyway (every acknowledged
    // write is already on disk).
    let stopping = std::sync::Arc::new(tokio::sync::Notify::new());
    let signalled = {
        let stopping = std::sync::Arc::clone(&stopping);
        async move {
            shutdown_signal().await;
            stopping.notify_waiters();
        }
    };
    tokio::select! {
        result = kmsim_server::serve_with_rest(listener, rest, kms, &options, signalled) => result?,
        () = async {
            stopping.notified().await;
            tokio::time::sleep(GRACE_PERIOD).await;
        } => tracing::warn!("grace period over: exiting with connections still open"),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kmsim: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
