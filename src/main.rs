//! The `mdgate` command: parse arguments, load the configuration, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use mdgate::config::{self, LogFormat};

/// Exit status for an invalid configuration (EX_CONFIG is 78; sysexits'
/// EX_USAGE, 64, is what admins' tooling around nginx -t expects).
const EXIT_BAD_CONFIG: u8 = 64;
const EXIT_FAILURE: u8 = 1;

#[derive(Parser)]
#[command(
    name = "mdgate",
    version,
    about = "Federation sidecar for access.md servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar.
    Serve {
        /// Configuration file.
        #[arg(
            short = 'c',
            long = "config",
            default_value = "/etc/mdgate/mdgate.toml"
        )]
        config: PathBuf,
        /// Log format, overriding `[log] format`.
        #[arg(long)]
        log_format: Option<LogFormatArg>,
    },
    /// Check a configuration file and exit (0 when valid).
    CheckConfig {
        #[arg(
            short = 'c',
            long = "config",
            default_value = "/etc/mdgate/mdgate.toml"
        )]
        config: PathBuf,
    },
    /// Apply pending store migrations and exit.
    Migrate {
        #[arg(
            short = 'c',
            long = "config",
            default_value = "/etc/mdgate/mdgate.toml"
        )]
        config: PathBuf,
    },
    /// Run a demonstration on this machine: two access.md emulators, each
    /// with an mdgate in front, federating through keys published in a DNS
    /// server on loopback; walks through the access flow once.
    Demo {
        /// Where to write the demo's certificates, configuration and store
        /// (a temporary directory by default).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Exit after the scripted walk-through instead of staying up.
        #[arg(long)]
        once: bool,
    },
    /// Create this server's keys: an Ed25519 signing key and a P-256 TLS
    /// key with a self-signed certificate for the FQDN. Never overwrites a
    /// file; prints the configuration lines (and no secret).
    Keygen {
        /// This server's DNS name: the certificate's only subjectAltName.
        #[arg(long)]
        fqdn: String,
        /// Directory for the key files (created with mode 0700 if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Put before the selectors: "hq-" gives hq-sig2026a, hq-tls2026a.
        #[arg(long, default_value = "")]
        selector_prefix: String,
        /// These are the next keys of a rotation: print the next_* lines and
        /// the steps to publish them before use.
        #[arg(long)]
        next: bool,
    },
    /// Print the DNS records to publish for this server's keys (zone-file
    /// lines), or with --check, look up what is live and compare.
    DnsRecords {
        #[arg(
            short = 'c',
            long = "config",
            default_value = "/etc/mdgate/mdgate.toml"
        )]
        config: PathBuf,
        /// Look the records up through the [dns] resolvers and compare them
        /// with this server's keys; exit 0 only when every current key is
        /// visible.
        #[arg(long)]
        check: bool,
        /// With --check: print the report as JSON.
        #[arg(long, requires = "check")]
        json: bool,
        /// The federation port peers reach (fp=, TLSA), if not the one
        /// [federation] listens on (NAT, port forwarding).
        #[arg(long)]
        federation_port: Option<u16>,
        /// The HTTPS port of the key document (wp=), if not the one
        /// [public] listens on.
        #[arg(long)]
        web_port: Option<u16>,
        /// Keep this selector listed in the index although the
        /// configuration no longer names it (a previous key after a switch,
        /// or a revoked one). Repeatable.
        #[arg(long, value_name = "SELECTOR")]
        keep: Vec<String>,
        /// TTL of the records, in seconds.
        #[arg(long, default_value_t = mdgate::admin::dnsrecords::DEFAULT_TTL)]
        ttl: u32,
        /// Print the records of the [keys] previous_* keys revoked (empty
        /// key): the last step of a rotation.
        #[arg(long)]
        revoke_previous: bool,
    },
    /// Check a peer as this server sees it: its DNS records (DNSSEC,
    /// SERVFAIL, timeouts told apart), its federation port (TLS, the
    /// certificate's name and key against DNS and TLSA, whether it admits
    /// us), its clock, and its key document against DNS. Exit 0 when no
    /// check failed. Give this server's own FQDN to see what peers see.
    CheckPeer {
        #[arg(
            short = 'c',
            long = "config",
            default_value = "/etc/mdgate/mdgate.toml"
        )]
        config: PathBuf,
        /// The peer's server name.
        fqdn: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Seconds allowed for each network step (connect, handshake,
        /// response).
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Check, export or print the head of the hash-chained audit log.
    Audit {
        #[command(subcommand)]
        action: AuditCommand,
    },
    /// Patient transfers on this server, and what is left to do upstream.
    Transfers {
        #[command(subcommand)]
        action: TransfersCommand,
    },
}

#[derive(Subcommand)]
enum TransfersCommand {
    /// List every transfer (both directions), newest first.
    List {
        #[arg(
            short = 'c',
            long = "config",
            default_value = "/etc/mdgate/mdgate.toml"
        )]
        config: PathBuf,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the whole chain; exit 0 when intact, 1 with where and why it
    /// breaks.
    Verify {
        #[arg(
            short = 'c',
            long = "config",
            default_value = "/etc/mdgate/mdgate.toml"
        )]
        config: PathBuf,
        /// A head recorded earlier (`mdgate audit head`), to also detect a
        /// deleted tail or a rewritten chain.
        #[arg(long, value_name = "SEQ:HASH", value_parser = mdgate::audit::parse_head)]
        head: Option<mdgate::store::AuditHead>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the entries as JSON, one object per line, to stdout.
    Export {
        #[arg(
            short = 'c',
            long = "config",
            default_value = "/etc/mdgate/mdgate.toml"
        )]
        config: PathBuf,
        /// Only this patient's entries (their federation id).
        #[arg(long, value_name = "UUID")]
        patient: Option<uuid::Uuid>,
        /// Start at this sequence number.
        #[arg(long, value_name = "SEQ", default_value_t = 1)]
        from: i64,
    },
    /// Print the chain's head as SEQ:HASH, to record outside the database.
    Head {
        #[arg(
            short = 'c',
            long = "config",
            default_value = "/etc/mdgate/mdgate.toml"
        )]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match config::check(&config) {
            Ok(summary) => {
                println!("mdgate: {summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{}", e.report());
                ExitCode::from(EXIT_BAD_CONFIG)
            }
        },
        Command::Serve { config, log_format } => {
            let mut cfg = match config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{}", e.report());
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            };
            if let Some(f) = log_format {
                cfg.log.format = match f {
                    LogFormatArg::Text => LogFormat::Text,
                    LogFormatArg::Json => LogFormat::Json,
                };
            }
            mdgate::logging::init(&cfg.log);
            for warning in cfg.warnings() {
                tracing::warn!("{warning}");
            }
            run_async(async move { mdgate::serve::run(cfg).await.map_err(|e| e.to_string()) })
        }
        Command::Migrate { config } => {
            let cfg = match config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{}", e.report());
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            };
            run_async(async move {
                let report = mdgate::store::migrate(&cfg.store)
                    .await
                    .map_err(|e| e.to_string())?;
                for (version, description) in &report.applied {
                    println!("mdgate: applied migration {version}: {description}");
                }
                println!("mdgate: store schema is at version {}", report.current);
                Ok(())
            })
        }
        Command::Keygen {
            fqdn,
            dir,
            selector_prefix,
            next,
        } => {
            let args = mdgate::admin::keygen::KeygenArgs {
                fqdn,
                dir,
                selector_prefix,
                next,
            };
            match mdgate::admin::keygen::run(&args, std::time::SystemTime::now()) {
                Ok(generated) => {
                    print!("{}", generated.report());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("mdgate: keygen: {e}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        Command::DnsRecords {
            config,
            check,
            json,
            federation_port,
            web_port,
            keep,
            ttl,
            revoke_previous,
        } => {
            let cfg = match config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{}", e.report());
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            };
            let args = mdgate::admin::dnsrecords::DnsRecordsArgs {
                federation_port,
                web_port,
                keep,
                ttl,
                revoke_previous,
            };
            dns_records(&cfg, &args, check, json)
        }
        Command::CheckPeer {
            config,
            fqdn,
            json,
            timeout,
        } => {
            let cfg = match config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{}", e.report());
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            };
            let args = mdgate::admin::checkpeer::CheckPeerArgs {
                fqdn,
                timeout: std::time::Duration::from_secs(timeout.max(1)),
            };
            check_peer(&cfg, &args, json)
        }
        Command::Audit { action } => audit(action),
        Command::Transfers { action } => transfers(action),
        Command::Demo { dir, once } => {
            // Quiet by default; MDGATE_LOG (a tracing filter) to see more.
            mdgate::logging::init(&config::Log {
                format: LogFormat::Text,
                filter: std::env::var("MDGATE_LOG").unwrap_or_else(|_| "warn".into()),
            });
            run_async(async move {
                mdgate::demo::run(dir, once)
                    .await
                    .map_err(|e| e.to_string())
            })
        }
    }
}

/// `mdgate dns-records`: the zone lines, or with `check` the report.
fn dns_records(
    cfg: &config::Config,
    args: &mdgate::admin::dnsrecords::DnsRecordsArgs,
    check: bool,
    json: bool,
) -> ExitCode {
    use mdgate::admin::dnsrecords;
    let plan = match dnsrecords::plan(cfg, args) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("mdgate: dns-records: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    for warning in &plan.warnings {
        eprintln!("mdgate: warning: {warning}");
    }
    if !check {
        print!("{}", plan.zone_text());
        return ExitCode::SUCCESS;
    }
    let mut ok = false;
    let status = run_async(async {
        let report = dnsrecords::check_config(cfg, &plan)
            .await
            .map_err(|e| format!("dns-records --check: {e}"))?;
        if json {
            println!("{}", report.to_json());
        } else {
            println!(
                "mdgate dns-records --check {} (resolvers: {}; DNSSEC {})\n",
                report.fqdn,
                mdgate::admin::checks::resolvers(&cfg.dns),
                match cfg.dns.dnssec {
                    config::DnssecMode::Off => "off",
                    config::DnssecMode::Validate => "validate",
                }
            );
            print!("{}", report.human("Next keys (rotation):"));
            println!("\n{}", dnsrecords::summary(&report).trim_end());
        }
        ok = report.ok;
        Ok(())
    });
    if status == ExitCode::SUCCESS && !ok {
        ExitCode::from(EXIT_FAILURE)
    } else {
        status
    }
}

/// `mdgate check-peer`: the report, and exit 1 when a check failed.
fn check_peer(
    cfg: &config::Config,
    args: &mdgate::admin::checkpeer::CheckPeerArgs,
    json: bool,
) -> ExitCode {
    use mdgate::admin::checkpeer;
    let mut ok = false;
    let status = run_async(async {
        let report = checkpeer::check_peer(cfg, args, std::time::SystemTime::now)
            .await
            .map_err(|e| format!("check-peer: {e}"))?;
        if json {
            println!("{}", report.to_json());
        } else {
            println!("{}\n", checkpeer::header(cfg, &report));
            print!("{}", report.human(""));
            println!("\n{}: {}", report.fqdn, report.tally());
        }
        ok = report.ok;
        Ok(())
    });
    if status == ExitCode::SUCCESS && !ok {
        ExitCode::from(EXIT_FAILURE)
    } else {
        status
    }
}

/// `mdgate audit ...`: the store named by the configuration, opened as
/// `serve` opens it.
fn transfers(action: TransfersCommand) -> ExitCode {
    let TransfersCommand::List { config: path, json } = action;
    let cfg = match config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{}", e.report());
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let config::Store::Sqlite { path: db } = &cfg.store;
    if !db.exists() {
        eprintln!(
            "mdgate: transfers: no store at {} (check [store] path)",
            db.display()
        );
        return ExitCode::from(EXIT_FAILURE);
    }
    run_async(async {
        let store = mdgate::store::open(&cfg.store)
            .await
            .map_err(|e| format!("transfers: {e}"))?;
        let rows = mdgate::federation::transfer::admin_list(&*store)
            .await
            .map_err(|e| format!("transfers: {e}"))?;
        for r in &rows {
            if json {
                println!("{r}");
                continue;
            }
            let s = |k: &str| r[k].as_str().unwrap_or("-").to_owned();
            println!(
                "{}  {:6}  {:10}  {}  {} -> {}",
                s("id"),
                s("side"),
                s("state"),
                s("peer"),
                s("old_address"),
                s("new_address")
            );
            let todo = s("todo");
            if !todo.is_empty() {
                println!("    {todo}");
            }
        }
        if rows.is_empty() && !json {
            println!("no transfers");
        }
        Ok(())
    })
}

fn audit(action: AuditCommand) -> ExitCode {
    use mdgate::audit;
    let path = match &action {
        AuditCommand::Verify { config, .. }
        | AuditCommand::Export { config, .. }
        | AuditCommand::Head { config } => config,
    };
    let cfg = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{}", e.report());
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    // Opening creates a missing database: an empty log would then verify.
    let config::Store::Sqlite { path: db } = &cfg.store;
    if !db.exists() {
        eprintln!(
            "mdgate: audit: no store at {} (check [store] path)",
            db.display()
        );
        return ExitCode::from(EXIT_FAILURE);
    }
    let mut intact = true;
    let status = run_async(async {
        // Read only: verifying a copy kept as evidence must not migrate or
        // otherwise write to it.
        let store = mdgate::store::open_read_only(&cfg.store)
            .await
            .map_err(|e| format!("audit: {e}"))?;
        let done = match action {
            AuditCommand::Verify { head, json, .. } => {
                let report = audit::verify(&*store, head)
                    .await
                    .map_err(|e| format!("audit verify: {e}"))?;
                intact = report.ok();
                if json {
                    println!("{}", report.to_json());
                } else if intact {
                    print!("{}", report.human());
                } else {
                    eprint!("{}", report.human());
                }
                Ok(())
            }
            AuditCommand::Export { patient, from, .. } => {
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::new(stdout.lock());
                match audit::export(&*store, patient, from, &mut out).await {
                    Ok(_) => Ok(()),
                    // The reader went away (`| head`): not an error.
                    Err(audit::AuditError::Output(e))
                        if e.kind() == std::io::ErrorKind::BrokenPipe =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(format!("audit export: {e}")),
                }
            }
            AuditCommand::Head { .. } => {
                let head = store
                    .audit_head()
                    .await
                    .map_err(|e| format!("audit head: {e}"))?;
                println!("{}", audit::format_head(head));
                Ok(())
            }
        };
        let _ = store.close().await;
        done
    });
    if status == ExitCode::SUCCESS && !intact {
        ExitCode::from(EXIT_FAILURE)
    } else {
        status
    }
}

/// Runs a future on the main (control-plane) runtime.
fn run_async<F>(fut: F) -> ExitCode
where
    F: std::future::Future<Output = Result<(), String>>,
{
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mdgate: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mdgate: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
