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
    /// credentials (`ctl.authentication`, else `restapi.authentication`). Without it (and
    /// REGENT_CONFIG): PATRONICTL_CONFIG_FILE, else ~/.config/patroni/patronictl.yaml if present.
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
    /// Tab-separated values with a header line (`list`, `topology`, `history`, `query`).
    Tsv,
    Json,
    #[value(alias = "yml")]
    Yaml,
}

impl Format {
    /// Pretty and TSV: progress lines go to stdout and no JSON/YAML document is printed.
    pub(crate) fn is_text(self) -> bool {
        matches!(self, Format::Pretty | Format::Tsv)
    }
}

/// patronictl's `-W` and `-w/--watch SECONDS`: print again every few seconds.
#[derive(Args, Debug, Clone, Copy, Default)]
pub(crate) struct WatchArgs {
    /// Print again every 2 seconds.
    #[arg(short = 'W')]
    pub(crate) every_2s: bool,
    /// Print again every SECONDS seconds.
    #[arg(short = 'w', long = "watch", value_name = "SECONDS")]
    pub(crate) watch: Option<f64>,
}

impl WatchArgs {
    /// The interval, if watching: `-w` wins over `-W`; `-w 0` does not watch (as patronictl).
    pub(crate) fn interval(self) -> Result<Option<Duration>, CtlError> {
        match self.watch {
            Some(s) if !(0.0..=86_400.0).contains(&s) => Err(CtlError::Usage(format!(
                "-w/--watch {s}: expected a number of seconds between 0 and 86400"
            ))),
            Some(s) if s > 0.0 => Ok(Some(Duration::from_secs_f64(s))),
            Some(_) => Ok(None),
            None => Ok(self.every_2s.then_some(Duration::from_secs(2))),
        }
    }
}

/// `query`'s options, patronictl's: here `-c` is the SQL, `-f` a file of SQL, `-U` the database
/// user and `--password` asks for the database password. The global options they would shadow
/// are given before `query` (`regent ctl -c FILE -f json query -c SQL`) or by their long names
/// (`--config`, `--format`).
#[derive(Args, Debug)]
pub(crate) struct QueryArgs {
    /// The cluster (default: the configured scope).
    pub(crate) cluster: Option<String>,
    /// Run on the first member with this role (default: the leader).
    #[arg(short = 'r', long, value_enum)]
    pub(crate) role: Option<RoleFilter>,
    /// Run on this member.
    #[arg(short = 'm', long)]
    pub(crate) member: Option<String>,
    /// The database (default: PGDATABASE, else the user's name).
    #[arg(short = 'd', long)]
    pub(crate) dbname: Option<String>,
    /// The database user (default: PGUSER, else postgresql.authentication.superuser).
    #[arg(short = 'U', long = "username", value_name = "USER")]
    pub(crate) user: Option<String>,
    /// Ask for the database password.
    #[arg(long = "password")]
    pub(crate) ask_password: bool,
    /// The SQL to run.
    #[arg(short = 'c', long)]
    pub(crate) command: Option<String>,
    /// A file of SQL to run (`-` for stdin).
    #[arg(short = 'f', long)]
    pub(crate) file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Tsv)]
    pub(crate) format: Format,
    /// The column delimiter of the tsv format.
    #[arg(long, default_value = "\t")]
    pub(crate) delimiter: String,
    #[command(flatten)]
    pub(crate) watch: WatchArgs,
    // The same ids as the global options they replace here (clap does not propagate a global
    // option into a subcommand that has an argument of its id): the config file by its long
    // name only, and the REST credentials, which `query` does not use, under hidden names.
    /// The configuration file (the global -c; here -c is the SQL).
    #[arg(long = "config", value_name = "FILE", env = "REGENT_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    #[arg(long = "rest-username", hide = true)]
    pub(crate) username: Option<String>,
    #[arg(long = "rest-password", hide = true)]
    pub(crate) password: Option<String>,
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
        /// The clusters to show (default: the configured scope).
        clusters: Vec<String>,
        /// Always show the pending-restart, scheduled-restart and tags columns.
        #[arg(short = 'e', long)]
        extended: bool,
        /// Print the time (UTC) above each listing.
        #[arg(short = 't', long)]
        timestamp: bool,
        #[command(flatten)]
        watch: WatchArgs,
    },
    /// The members as a replication tree (cascading replicas under their upstream).
    Topology {
        /// The clusters to show (default: the configured scope).
        clusters: Vec<String>,
        #[command(flatten)]
        watch: WatchArgs,
    },
    /// Timeline history: each failover or switchover.
    History {
        /// The cluster (default: the configured scope).
        cluster: Option<String>,
    },
    /// Why an election chose its winner: the ranking, the reasons and the members left out
    /// (the last election by default).
    Explain {
        /// The cluster (default: the configured scope).
        #[arg(long = "cluster")]
        cluster: Option<String>,
        /// Which election: 1 = the last, 2 = the one before, ...; or a record id.
        which: Option<String>,
        /// The last election (the default).
        #[arg(long)]
        last: bool,
        /// Print the view the policy saw, as JSON for `regent policy eval --view`.
        #[arg(long)]
        view: bool,
    },
    /// The address of a member's PostgreSQL (`host=... port=...`): the leader's by default.
    Dsn {
        /// The cluster (default: the configured scope).
        cluster: Option<String>,
        /// The first member with this role.
        #[arg(short = 'r', long, value_enum)]
        role: Option<RoleFilter>,
        /// This member.
        #[arg(short = 'm', long)]
        member: Option<String>,
    },
    /// Run SQL on a member (the leader by default) and print the rows.
    Query(QueryArgs),
    /// Discard a scheduled event: `flush [CLUSTER] [MEMBER...] restart|switchover`.
    Flush {
        /// `[CLUSTER] [MEMBER...] restart|switchover`.
        #[arg(
            required = true,
            value_name = "[CLUSTER] [MEMBER]... restart|switchover"
        )]
        args: Vec<String>,
        /// Flush the scheduled restarts of members with this role only.
        #[arg(short = 'r', long, value_enum, default_value_t = RoleFilter::Any)]
        role: RoleFilter,
        #[arg(long)]
        force: bool,
    },
    /// Delete every key of the cluster from etcd (for a cluster that is gone). Asks for the
    /// cluster's name, "Yes I am aware" and, if it has one, the leader's name, on stdin.
    Remove {
        /// The cluster to remove.
        cluster: String,
    },
    /// Planned switchover: the leader hands over to a replica.
    Switchover {
        /// The cluster (default: the configured scope).
        cluster: Option<String>,
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
        /// The cluster (default: the configured scope).
        cluster: Option<String>,
        #[arg(long)]
        candidate: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// Restart PostgreSQL on members (all members matching --role if none are named).
    Restart {
        /// `[CLUSTER] [MEMBER]...`: a first name equal to the scope is the cluster.
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
        /// `[CLUSTER] MEMBER...`: a first name equal to the scope is the cluster.
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
        /// `[CLUSTER] [MEMBER]...`: a first name equal to the scope is the cluster.
        members: Vec<String>,
        #[arg(short = 'r', long, value_enum, default_value_t = RoleFilter::Any)]
        role: RoleFilter,
        #[arg(long)]
        force: bool,
    },
    /// Maintenance mode: no automatic failover, promotion, start or stop.
    Pause {
        /// The cluster (default: the configured scope).
        cluster: Option<String>,
        /// Wait until every member reports it.
        #[arg(long)]
        wait: bool,
    },
    /// Leave maintenance mode.
    Resume {
        /// The cluster (default: the configured scope).
        cluster: Option<String>,
        #[arg(long)]
        wait: bool,
    },
    /// The cluster-wide configuration (the `config` key).
    ShowConfig {
        /// The cluster (default: the configured scope).
        cluster: Option<String>,
    },
    /// Change the cluster-wide configuration: `-s`/`-p`, --apply, --replace, or $EDITOR.
    EditConfig {
        /// The cluster (default: the configured scope).
        cluster: Option<String>,
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
    Version {
        /// `[CLUSTER] [MEMBER]...`: a first name equal to the scope is the cluster.
        members: Vec<String>,
    },
    /// Failover policies pushed to the cluster through etcd: every member fetches, compiles,
    /// self-tests and swaps them in.
    #[command(subcommand)]
    Policy(PolicyCmd),
}

/// `regent ctl policy ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum PolicyCmd {
    /// Check a policy here (compile, WIT version, self-test, size), store it in etcd and make
    /// it the cluster's (replacing the pushed policy of the same name); wait until the members
    /// serve it.
    Push {
        /// The policy's manifest, NAME.toml (its `component` is read beside it).
        manifest: PathBuf,
        /// Only these members run it; the others keep the previous set until `promote`.
        #[arg(long, num_args = 1..)]
        canary: Vec<String>,
        /// Run it beside the active set on every member without deciding: divergences are
        /// counted (`/metrics`, `policy status`) until `promote` or `rollback`.
        #[arg(long, conflicts_with = "canary")]
        shadow: bool,
        /// Do not wait for the members.
        #[arg(long)]
        no_wait: bool,
    },
    /// Each member's serving policies, the pushed set, and any load error.
    Status,
    /// After a `--shadow` push: the shadow becomes the active set; after a `--canary` push:
    /// every member runs the pushed set.
    Promote {
        /// Do not wait for the members.
        #[arg(long)]
        no_wait: bool,
    },
    /// Drop the shadow set, if any; else return to the set before the last push (again:
    /// forward to it).
    Rollback {
        /// Do not wait for the members.
        #[arg(long)]
        no_wait: bool,
    },
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
    let mut cmd = args.cmd;
    let config = target::config_path(args.config, |k| std::env::var(k).ok());
    let mut stdout = std::io::stdout();
    let mut terminal = prompt::Terminal;
    // `version` without a cluster prints regent ctl's own version only.
    if let CtlCmd::Version { members } = &cmd
        && members.is_empty()
        && config.is_none()
        && args.dcs_url.is_none()
    {
        return actions::print_own_version(&mut stdout, args.format);
    }
    let mut sources = target::Sources {
        config: config.as_ref().map(|(p, _)| p.as_path()),
        config_from: config.as_ref().map(|(_, f)| *f).unwrap_or_default(),
        dcs_url: args.dcs_url.as_deref(),
        scope: args.scope.as_deref(),
        username: args.username.as_deref(),
        password: args.password.as_deref(),
        env: Some(env),
    };
    if matches!(cmd, CtlCmd::Query(_)) {
        // query sends no REST request; -U/--password are the database's.
        (sources.username, sources.password) = (None, None);
    }
    let configured = target::configured_scope(&sources)?;
    let named = cmd.take_clusters(configured.as_deref());
    let differs = named.iter().find(|n| Some(*n) != args.scope.as_ref());
    if let (Some(flag), Some(other)) = (&args.scope, differs) {
        return Err(CtlError::Usage(format!(
            "--scope {flag} and the cluster argument {other} name different clusters: give one"
        )));
    }
    if let Some(first) = named.first() {
        sources.scope = Some(first);
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
        pg_login: target.superuser.clone(),
    };
    session.dispatch(cmd).await
}

impl CtlCmd {
    /// The clusters named on the command line, patronictl's `CLUSTER_NAME` argument(s). Where
    /// the first name may be a cluster or a member (`restart`, `reload`, `reinit`, `version`,
    /// `flush`), it is the cluster when it equals the configured scope, or when no scope is
    /// configured; it is taken off the member list.
    pub(crate) fn take_clusters(&mut self, configured: Option<&str>) -> Vec<String> {
        let one = |c: &Option<String>| c.iter().cloned().collect();
        match self {
            CtlCmd::List { clusters, .. } | CtlCmd::Topology { clusters, .. } => clusters.clone(),
            CtlCmd::History { cluster }
            | CtlCmd::Explain { cluster, .. }
            | CtlCmd::Dsn { cluster, .. }
            | CtlCmd::Switchover { cluster, .. }
            | CtlCmd::Failover { cluster, .. }
            | CtlCmd::Pause { cluster, .. }
            | CtlCmd::Resume { cluster, .. }
            | CtlCmd::ShowConfig { cluster }
            | CtlCmd::EditConfig { cluster, .. } => one(cluster),
            CtlCmd::Query(q) => one(&q.cluster),
            CtlCmd::Remove { cluster } => vec![cluster.clone()],
            CtlCmd::Restart { members, .. }
            | CtlCmd::Reload { members, .. }
            | CtlCmd::Reinit { members, .. }
            | CtlCmd::Version { members } => take_first_if_cluster(members, configured, 1),
            CtlCmd::Policy(_) => Vec::new(),
            // flush's last argument is what to flush.
            CtlCmd::Flush { args, .. } => take_first_if_cluster(args, configured, 2),
        }
    }
}

/// Take `names[0]` off as the cluster name when it equals `configured`, or when nothing is
/// configured and at least `min` names were given.
fn take_first_if_cluster(
    names: &mut Vec<String>,
    configured: Option<&str>,
    min: usize,
) -> Vec<String> {
    let is_cluster = match (names.first(), configured) {
        (Some(first), Some(scope)) => first == scope,
        (Some(_), None) => names.len() >= min,
        (None, _) => false,
    };
    if is_cluster {
        vec![names.remove(0)]
    } else {
        Vec::new()
    }
}
