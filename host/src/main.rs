//! The `regent` binary: `run`, `validate-config`, `ctl`, `lab`, `policy check|eval|new|build`,
//! and the internal `guard` and `compile-policy`.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use regent::{api, config, ctl, fence, lab, plugin, supervisor};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "regent",
    version,
    about = "PostgreSQL high-availability supervisor"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Supervise the PostgreSQL node described by CONFIG and the PATRONI_* environment
    /// variables.
    ///
    /// As Patroni: CONFIG is a YAML file, or a directory whose *.yml/*.yaml files are merged in
    /// name order (later files win); the PATRONI_* variables (PATRONI_SCOPE, PATRONI_NAME,
    /// PATRONI_RESTAPI_LISTEN, PATRONI_ETCD3_HOSTS, PATRONI_SUPERUSER_PASSWORD, ...) are merged
    /// on top (the environment wins). Without CONFIG, or when it does not exist: the YAML text of
    /// PATRONI_CONFIGURATION, else the PATRONI_* variables alone. The variables read are removed
    /// from the environment: PostgreSQL and the other programs Regent starts do not see them.
    Run {
        /// A YAML file or a directory of YAML files.
        config: Option<PathBuf>,
    },
    /// Check a configuration without starting anything (read as `run` reads it: CONFIG, the
    /// PATRONI_* variables, PATRONI_CONFIGURATION).
    ValidateConfig {
        /// A YAML file or a directory of YAML files.
        config: Option<PathBuf>,
    },
    /// Manage a cluster (patronictl's commands): list, switchover, edit-config, ...
    Ctl(ctl::CtlArgs),
    /// A cluster of local processes to try things on: up, status, fault, compare, down.
    Lab(lab::LabArgs),
    /// Check or try out a failover policy plugin.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// The fencing guard (started by `regent run`; not for direct use).
    #[command(hide = true)]
    Guard {
        #[arg(long)]
        state: PathBuf,
        #[arg(long)]
        pidfile: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Compile a policy component from stdin to stdout (started by `regent run`; not for
    /// direct use).
    #[command(name = plugin::COMPILE_SUBCOMMAND, hide = true)]
    CompilePolicy {
        #[arg(long)]
        tier: String,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Load a policy (a `.toml` manifest or a `.wasm` component): check that it was built
    /// against this Regent's WIT version, describe it and run its self-test.
    Check { file: PathBuf },
    /// Rank an election view (JSON, as `ElectionView` serializes) with a policy and show the
    /// ranking with its reasons.
    Eval {
        manifest: PathBuf,
        /// The view as JSON (`-` for stdin).
        #[arg(long)]
        view: PathBuf,
    },
    /// Write a new policy crate DIR/NAME on the policy SDK (a working example: prefer the
    /// replicas tagged `dc: primary-dc`), with its manifest, unit tests and README.
    New {
        /// The policy's name: lowercase letters, digits and `-`.
        name: String,
        /// Where to create the crate's directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Build a policy crate for wasm32-wasip2 into DIR/NAME.wasm and check it with
    /// DIR/NAME.toml (as `policy check` does).
    Build {
        /// The crate's directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("REGENT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

fn main() -> ExitCode {
    // Patroni's configuration variables: read them once, then remove them so that no child
    // (PostgreSQL, pg_basebackup, pg_rewind, the guard, an edit-config editor) inherits a secret.
    let patroni_env = config::EnvConfig::capture();
    // SAFETY: this is the first thing `main` does: no runtime, logger or other thread has been
    // started yet, so nothing else can read or write the environment meanwhile.
    unsafe { config::remove_consumed(&patroni_env) };
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::CompilePolicy { tier } => ExitCode::from(plugin::compile_child(&tier)),
        Cmd::Guard {
            state,
            pidfile,
            data_dir,
        } => {
            let files = fence::GuardFiles {
                state,
                pid: pidfile,
                data_dir,
            };
            match fence::run_guard(&files) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("regent guard: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::ValidateConfig { config } => match validate(config.as_deref(), patroni_env) {
            Ok((source, warnings)) => {
                for w in warnings {
                    eprintln!("warning: {w}");
                }
                println!("{source}: configuration is valid");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
        Cmd::Ctl(args) => ExitCode::from(ctl::main(args, patroni_env)),
        Cmd::Policy { cmd } => {
            init_logs(cli.log_format);
            match policy_cmd(cmd) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Lab(args) => {
            let Some(rt) = runtime() else {
                return ExitCode::FAILURE;
            };
            match rt.block_on(lab::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
        Cmd::Run { config } => {
            init_logs(cli.log_format);
            // Policies compile in a child process: the compiler's code and memory stay out of
            // the supervisor (and a compiler crash with it).
            match std::env::current_exe() {
                Ok(exe) => plugin::compile_in_subprocess(exe),
                Err(e) => tracing::warn!(error = %e,
                    "cannot locate the regent executable; policies compile in this process"),
            }
            let Some(rt) = runtime() else {
                return ExitCode::FAILURE;
            };
            match rt.block_on(run(config, patroni_env)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The multi-threaded runtime of `regent run` and `regent lab` (two workers).
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

fn policy_cmd(cmd: PolicyCmd) -> anyhow::Result<String> {
    match cmd {
        PolicyCmd::Check { file } => Ok(plugin::check(&file)?.to_string()),
        PolicyCmd::Eval { manifest, view } => {
            let json = if view.as_os_str() == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                    .context("cannot read the view from stdin")?;
                s
            } else {
                std::fs::read_to_string(&view)
                    .with_context(|| format!("cannot read the view {}", view.display()))?
            };
            Ok(plugin::eval(&manifest, &json)?)
        }
        PolicyCmd::New { name, dir } => Ok(plugin::scaffold::new(&name, &dir)?.to_string()),
        PolicyCmd::Build { dir } => Ok(plugin::scaffold::build(&dir)?.to_string()),
    }
}

/// The source, as named in messages, and the warnings.
fn validate(
    path: Option<&std::path::Path>,
    env: config::EnvConfig,
) -> anyhow::Result<(String, Vec<String>)> {
    let source = config::ConfigSource::choose(path, env)?;
    let loaded = source.load()?;
    config::check_environment(&loaded.config)?;
    // The REST API's TLS files and the client's certificates must load, too.
    api::tls::server_config(&loaded.config.restapi)?;
    api::PeerClient::from_config(&loaded.config)?;
    Ok((source.to_string(), loaded.warnings))
}

/// SIGHUP re-reads the configuration, like `POST /reload`.
fn spawn_sighup_reload(control: regent::control::ControlHandle) {
    tokio::spawn(async move {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install the SIGHUP handler");
                return;
            }
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            let reply = control.send(regent::control::Command::Reload).await;
            if reply.status >= 400 {
                tracing::error!(
                    status = reply.status,
                    "reload on SIGHUP failed: {}",
                    reply.body
                );
            }
        }
    });
}

async fn run(path: Option<PathBuf>, env: config::EnvConfig) -> anyhow::Result<()> {
    let source = config::ConfigSource::choose(path.as_deref(), env)?;
    let loaded = source.load()?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let cfg = loaded.config;
    config::check_environment(&cfg)?;
    let listener = tokio::net::TcpListener::bind(&cfg.restapi.listen)
        .await
        .with_context(|| {
            format!(
                "restapi.listen: cannot bind {}; is another process using the port?",
                cfg.restapi.listen
            )
        })?;
    let tls = api::tls::server_config(&cfg.restapi)?.map(api::tls::TlsCell::new);
    let peers = api::PeerClient::from_config(&cfg)?;
    let settings = api::ApiSettings::from_config(&cfg);
    let (view_tx, view_rx) = tokio::sync::watch::channel(api::LocalSnapshot::default());
    let (control, control_rx) = regent::control::channel();
    let mut sup = supervisor::Supervisor::new(cfg, view_tx, control_rx).await?;
    sup.set_config_source(source);
    sup.set_failsafe_gate(control.failsafe_gate());
    spawn_sighup_reload(control.clone());
    let ctx = api::ApiContext::new(settings, view_rx, control, Some(sup.dcs()), peers);
    sup.set_api_reloader(api::Reloader::new(ctx.clone(), tls.clone()));
    let (stop_api_tx, stop_api_rx) = tokio::sync::oneshot::channel::<()>();
    let api_task = tokio::spawn(api::serve(listener, ctx, tls, async move {
        let _ = stop_api_rx.await;
    }));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot install the SIGTERM handler");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutdown requested");
        let _ = stop_tx.send(());
    });
    let res = sup.run(stop_rx).await;
    let _ = stop_api_tx.send(());
    let _ = api_task.await;
    res.map_err(anyhow::Error::from)
}
