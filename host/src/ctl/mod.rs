//! `regent ctl`: the command-line client. Like patronictl, it reads the cluster from etcd
//! (Patroni's key layout) and acts through the members' REST APIs, so it manages Regent and
//! Patroni nodes alike.
//!
//! - [`target`]: where the cluster is (`-c` config file, `--dcs-url`, `--scope`) and the REST
//!   credentials.
//! - [`store`]: the etcd side (read the cluster, CAS the `config` key, write `failover`).
//! - [`rest`]: the REST client and its error texts.
//! - [`view`]: the members table (`list`, `topology`) and `history`, in every output format.
//! - [`table`]: the pretty table renderer.
//! - [`edit`]: `edit-config`: dotted `-s` paths, merge patches, the diff, validation.
//! - [`actions`]: every command, as a [`actions::Session`] over a store, a REST client, an
//!   output and a prompt (unit-tested against an in-memory store and a mock REST server).
//! - [`prompt`]: confirmations on the terminal.

pub(crate) mod actions;
pub(crate) mod edit;
pub(crate) mod prompt;
pub(crate) mod rest;
pub(crate) mod store;
pub(crate) mod table;
pub(crate) mod target;
pub(crate) mod view;

#[cfg(test)]
mod tests;

use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// The version `regent ctl version` reports.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `regent ctl`'s options and command.
#[derive(Args, Debug)]
pub struct CtlArgs {
    /// A Regent or Patroni configuration file: `scope`, `namespace`, `etcd3.hosts` and the REST
    /// credentials (`ctl.authentication`, else `restapi.authentication`).
    #[arg(short = 'c', long = "config", env = "REGENT_CONFIG", global = true)]
    pub(crate) config: Option<PathBuf>,
    /// etcd to read the cluster from: `etcd3://HOST:PORT[,HOST:PORT...][/NAMESPACE]`. Overrides
    /// the config file's etcd section and namespace.
    #[arg(long, env = "REGENT_DCS_URL", global = true)]
    pub(crate) dcs_url: Option<String>,
    /// The cluster name (overrides the config file's `scope`).
    #[arg(long, global = true)]
    pub(crate) scope: Option<String>,
    /// Output format.
    #[arg(short = 'f', long, value_enum, default_value_t = Format::Pretty, global = true)]
    pub(crate) format: Format,
    /// REST API user for the mutating endpoints (overrides `ctl.authentication`).
    #[arg(long, env = "REGENT_CTL_USERNAME", global = true)]
    pub(crate) username: Option<String>,
    /// REST API password (prefer the environment variable: flags show in `ps`).
    #[arg(
        long,
        env = "REGENT_CTL_PASSWORD",
        hide_env_values = true,
        global = true
    )]
    pub(crate) password: Option<String>,
    #[command(subcommand)]
    pub(crate) cmd: CtlCmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Pretty,
    Json,
    #[value(alias = "yml")]
    Yaml,
}

/// Which members a command addresses (patronictl's `--role`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum RoleFilter {
    /// The leader (primary or standby leader).
    Leader,
    /// The leader of a primary cluster.
    Primary,
    /// The leader of a standby cluster.
    StandbyLeader,
    /// Every member but the leader.
    Replica,
    /// Every member but the leader (in a standby cluster).
    Standby,
    /// Every member.
    Any,
}

impl RoleFilter {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            RoleFilter::Leader => "leader",
            RoleFilter::Primary => "primary",
            RoleFilter::StandbyLeader => "standby leader",
            RoleFilter::Replica => "replica",
            RoleFilter::Standby => "standby",
            RoleFilter::Any => "member",
        }
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum CtlCmd {
    /// The members table: role, state, timeline, WAL positions and lag, tags, policy.
    List {
        /// Always show the pending-restart, scheduled-restart and tags columns.
        #[arg(short = 'e', long)]
        extended: bool,
    },
    /// The members as a replication tree (cascading replicas under their upstream).
    Topology,
    /// Timeline history: each failover or switchover.
    History,
    /// Planned switchover: the leader hands over to a replica.
    Switchover {
        /// The current leader (a check: refused if another member leads).
        #[arg(long, visible_alias = "primary")]
        leader: Option<String>,
        /// The member to promote; without it the cluster picks the best replica.
        #[arg(long)]
        candidate: Option<String>,
        /// When (ISO 8601 with a time zone, e.g. 2026-05-01T03:00+00:00), or `now`.
        #[arg(long)]
        scheduled: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        force: bool,
    },
    /// Promote a named replica now, also when the cluster has no healthy leader.
    Failover {
        #[arg(long)]
        candidate: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// Restart PostgreSQL on members (all members matching --role if none are named).
    Restart {
        members: Vec<String>,
        #[arg(short = 'r', long, value_enum, default_value_t = RoleFilter::Any)]
        role: RoleFilter,
        /// Restart one of the matching members only.
        #[arg(long = "any")]
        any: bool,
        /// When (ISO 8601 with a time zone), or `now`.
        #[arg(long)]
        scheduled: Option<String>,
        /// Restart only members running an older PostgreSQL than this (e.g. 15.8).
        #[arg(long = "pg-version")]
        pg_version: Option<String>,
        /// Restart only members with a pending restart (a changed parameter that needs one).
        #[arg(long)]
        pending: bool,
        /// Fail the restart (and let the cluster fail over) if it takes longer (e.g. 60, 60s, 2min).
        #[arg(long)]
        timeout: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// Rebuild replicas from scratch (their data directory is moved aside, then cloned).
    Reinit {
        members: Vec<String>,
        /// Clone from the leader (default: any running member).
        #[arg(long)]
        from_leader: bool,
        /// Wait until the members run again.
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        force: bool,
    },
    /// Re-read the local configuration on members (SIGHUP).
    Reload {
        members: Vec<String>,
        #[arg(short = 'r', long, value_enum, default_value_t = RoleFilter::Any)]
        role: RoleFilter,
        #[arg(long)]
        force: bool,
    },
    /// Maintenance mode: no automatic failover, promotion, start or stop.
    Pause {
        /// Wait until every member reports it.
        #[arg(long)]
        wait: bool,
    },
    /// Leave maintenance mode.
    Resume {
        #[arg(long)]
        wait: bool,
    },
    /// The cluster-wide configuration (the `config` key).
    ShowConfig,
    /// Change the cluster-wide configuration: `-s`/`-p`, --apply, --replace, or $EDITOR.
    EditConfig {
        /// Set a value: a dotted path and a YAML value (`-s loop_wait=5`, `-s ttl=` deletes).
        #[arg(short = 's', long = "set")]
        set: Vec<String>,
        /// Set a PostgreSQL parameter (`-p max_connections=200`): `-s postgresql.parameters.…`.
        #[arg(short = 'p', long = "pg")]
        pg: Vec<String>,
        /// Merge a YAML file into the configuration (`-` for stdin); `null` deletes a key.
        #[arg(long)]
        apply: Option<String>,
        /// Replace the configuration with a YAML file (`-` for stdin).
        #[arg(long)]
        replace: Option<String>,
        /// Do not show the diff.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        force: bool,
    },
    /// regent ctl's version, and each member's (from `GET /patroni`).
    Version { members: Vec<String> },
}

/// What went wrong, worded for the operator: what happened and what to do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CtlError {
    /// Bad flags or configuration, an unknown member, a refused confirmation: nothing was done.
    #[error("{0}")]
    Usage(String),
    /// The operation was tried and failed.
    #[error("{0}")]
    Failed(String),
    /// etcd could not be reached or refused a request.
    #[error(
        "cannot {op}: {source}; check that etcd is running at {endpoints} (from {from}), or point regent ctl at the right endpoints with `etcd3: {{hosts: [HOST:PORT]}}` in the config file or --dcs-url etcd3://HOST:PORT"
    )]
    Etcd {
        op: &'static str,
        endpoints: String,
        from: String,
        #[source]
        source: Box<crate::dcs::DcsError>,
    },
    /// A member's REST API answered with an error status.
    #[error("{member}: {method} {url} answered {status}: {body}{hint}")]
    Rest {
        member: String,
        method: String,
        url: String,
        status: u16,
        body: String,
        hint: String,
    },
    /// A member's REST API could not be reached.
    #[error(
        "cannot reach the REST API of {member} at {url}: {reason}; check that its regent runs and that restapi.connect_address is reachable from here"
    )]
    Unreachable {
        member: String,
        url: String,
        reason: String,
    },
}

impl CtlError {
    /// 2 for usage and configuration errors, 1 for failed operations.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// How long one etcd request may take.
const ETCD_TIMEOUT: Duration = Duration::from_secs(5);

/// Run `regent ctl` and return its exit code (0 OK, 1 operation failed, 2 usage/config error).
/// `env`: the `PATRONI_*` variables captured at start (see [`crate::config::EnvConfig`]).
pub fn main(args: CtlArgs, env: crate::config::EnvConfig) -> u8 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(run(args, &env)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

async fn run(args: CtlArgs, env: &crate::config::EnvConfig) -> Result<(), CtlError> {
    let sources = target::Sources {
        config: args.config.as_deref(),
        dcs_url: args.dcs_url.as_deref(),
        scope: args.scope.as_deref(),
        username: args.username.as_deref(),
        password: args.password.as_deref(),
        env: Some(env),
    };
    let mut stdout = std::io::stdout();
    let mut terminal = prompt::Terminal;
    // `version` without a cluster prints regent ctl's own version only.
    if let CtlCmd::Version { members } = &args.cmd
        && members.is_empty()
        && args.config.is_none()
        && args.dcs_url.is_none()
    {
        return actions::print_own_version(&mut stdout, args.format);
    }
    let target = target::resolve(&sources)?;
    let rest = rest::Rest::new(target.auth.clone(), &target.tls)?;
    let store = store::EtcdStore::connect(&target, ETCD_TIMEOUT).await?;
    let mut session = actions::Session {
        store: &store,
        rest: &rest,
        scope: &target.scope,
        format: args.format,
        out: &mut stdout,
        prompt: &mut terminal,
        poll: Duration::from_secs(1),
    };
    session.dispatch(args.cmd).await
}
