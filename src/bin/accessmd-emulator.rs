//! `accessmd-emulator`: runs the in-memory access.md emulator as a process,
//! for tests and demos. It is not part of a production deployment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use mdgate::emulator::{Emulator, EmulatorOptions, Fidelity};

/// A stand-in for an access.md server (HTTP API, sessions, quirks), kept in
/// memory. TEST AND DEMO TOOL ONLY: it stores plaintext passwords, forgets
/// everything on exit and must never face real users or real data.
#[derive(Debug, Parser)]
#[command(name = "accessmd-emulator", version)]
struct Args {
    /// Address to serve the emulated access.md API on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,

    /// Password of the `admin` account. Without it (or a file) a random one
    /// is generated and logged once, as the real server does.
    #[arg(long, conflicts_with = "admin_password_file")]
    admin_password: Option<String>,

    /// Read the `admin` password from this file (trailing newline ignored).
    #[arg(long, value_name = "PATH")]
    admin_password_file: Option<PathBuf>,

    /// First value of the global id sequence (the admin's id).
    #[arg(long, default_value_t = 1)]
    first_id: i64,

    /// Seconds a patient's link code stays valid.
    #[arg(long, default_value_t = 300)]
    code_ttl_secs: u64,

    /// Loopback address for the control API (POST /restart, GET and DELETE
    /// /received, POST /clock/advance?seconds=N, POST /codes/expire).
    /// Enables request recording.
    #[arg(long, value_name = "ADDR")]
    control: Option<SocketAddr>,

    /// Emulate a server without the inferred bugs (boxed-Long ids, R30
    /// detaching questions, profile IDOR, TIME-of-day code expiry, Envers
    /// id gaps).
    #[arg(long)]
    no_quirks: bool,
}

fn admin_password(args: &Args) -> anyhow::Result<Option<String>> {
    if let Some(path) = &args.admin_password_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        return Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()));
    }
    Ok(args.admin_password.clone())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let options = EmulatorOptions {
        admin_password: admin_password(&args)?,
        first_id: args.first_id,
        code_ttl: Duration::from_secs(args.code_ttl_secs),
        record_requests: args.control.is_some(),
        fidelity: if args.no_quirks {
            Fidelity::none()
        } else {
            Fidelity::default()
        },
        ..EmulatorOptions::default()
    };
    let mut emulator = Emulator::bind(args.listen, options).await?;
    if let Some(addr) = args.control {
        if !addr.ip().is_loopback() {
            anyhow::bail!("--control must be a loopback address, not {addr}");
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let bound = emulator.serve_control(listener)?;
        tracing::info!(control.addr = %bound, "control API listening");
    }
    tracing::info!(listen.addr = %emulator.addr(), "access.md emulator listening");
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    emulator.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("accessmd-emulator: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("accessmd-emulator: {error:#}");
            ExitCode::FAILURE
        }
    }
}
