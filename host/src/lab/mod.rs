//! `regent lab`: a whole cluster as local processes (etcd, N `regent run` nodes with their
//! PostgreSQL, optionally HAProxy) in one directory, with fault injection and a comparison of
//! failover policies by measured failover time, acknowledged writes lost and split-brain
//! windows.
//!
//! - [`spec`]: the settings, ports and directory layout; the generated node YAML, etcd
//!   arguments and HAProxy configuration (pure).
//! - [`state`]: the state file `lab.json` and the directory lock.
//! - [`procs`]: detached, marked processes; finding, signalling and reaping them.
//! - [`ops`]: a lab's life: prepare, start, stop, remove; `up` and `down`.
//! - [`observe`]: the nodes' views, health, the waits on them; `status`.
//! - [`measure`]: the writer (acknowledged writes by id), the split-brain probes, and the
//!   analysis of what they recorded.
//! - [`fault`]: the faults and their reports.
//! - [`compare`]: runs of one fault under each policy, and their table and JSON.
//! - [`patroni`]: Patroni in place of `regent run` on every node, the baseline of `compare
//!   --supervisor patroni`.
//! - [`watch`]: the watcher of a run: each node's role, answer and fencing, the leader key.
//! - [`timeline`]: one run's timeline (per node, relative to the fault) from what it recorded.
//! - [`report`]: the HTML report (`--report`) of a comparison or a fault.
//! - [`progress`]: the progress of a comparison on stderr (a bar on a terminal).

/// `println!` onto [`out`]: a closed stdout is not an error.
macro_rules! outln {
    ($($t:tt)*) => {
        $crate::lab::out(format!("{}\n", format_args!($($t)*)))
    };
}

pub(crate) mod compare;
pub(crate) mod fault;
pub(crate) mod measure;
pub(crate) mod observe;
pub(crate) mod ops;
pub(crate) mod patroni;
pub mod procs;
pub(crate) mod progress;
pub(crate) mod report;
pub mod spec;
pub(crate) mod state;
pub(crate) mod timeline;
pub(crate) mod watch;

use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Why a `regent lab` command failed. Every message names the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Bad input: nothing was started, changed or removed.
    #[error("{0}")]
    Usage(String),
    /// Something did not work out while the lab ran.
    #[error("{0}")]
    Failed(String),
}

impl LabError {
    /// 2 for bad input, 1 for a failed operation.
    pub fn exit_code(&self) -> u8 {
        match self {
            LabError::Usage(_) => 2,
            LabError::Failed(_) => 1,
        }
    }
}

/// `regent lab`'s arguments.
#[derive(Args, Debug)]
pub struct LabArgs {
    /// The lab's directory: node configurations, data, logs and the state file lab.json
    /// [default: <temp dir>/regent-lab].
    #[arg(long, env = "REGENT_LAB_DIR", global = true)]
    pub(crate) dir: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) cmd: LabCmd,
}

#[derive(Subcommand, Debug)]
pub(crate) enum LabCmd {
    /// Start etcd, the nodes (and HAProxy) and wait for a leader with streaming replicas.
    Up(UpArgs),
    /// Show the lab's processes, the nodes' roles, and how to reach them.
    Status {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Stop everything of the lab, then remove its files (data included, unless --keep-data).
    Down {
        /// Keep the data and configurations; `regent lab up` starts the same lab again.
        #[arg(long)]
        keep_data: bool,
    },
    /// Inject a fault into the running lab and report how the cluster recovered.
    Fault {
        #[command(subcommand)]
        fault: FaultCmd,
        /// Output format: the report as text, or the run's timeline as JSON.
        #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
        format: Format,
        /// Also write the run's timeline as a self-contained HTML page to this file.
        #[arg(long, global = true, value_name = "FILE.html")]
        report: Option<PathBuf>,
    },
    /// Compare failover policies: the same fault under each, measured.
    Compare(CompareArgs),
}

/// The settings of a new lab (a lab that exists keeps its own; giving other values is refused).
#[derive(Args, Debug, Default, Clone)]
pub(crate) struct LabOptions {
    /// Number of nodes (1 to 9) [default: 3].
    #[arg(long)]
    pub(crate) nodes: Option<usize>,
    /// Leader lease in seconds (5 or more) [default: 10].
    #[arg(long)]
    pub(crate) ttl: Option<u64>,
    /// Seconds between HA loops [default: 1].
    #[arg(long)]
    pub(crate) loop_wait: Option<u64>,
    /// Deadline of every etcd and PostgreSQL call, in seconds [default: 3].
    #[arg(long)]
    pub(crate) retry_timeout: Option<u64>,
    /// Synchronous replication (`synchronous_mode: on`): no acknowledged write may be lost.
    #[arg(long)]
    pub(crate) sync: bool,
    /// The `zone` tag of each node, comma-separated; a shorter list repeats [default: a,b].
    #[arg(long, value_delimiter = ',')]
    pub(crate) zones: Option<Vec<String>>,
    /// The `failover_priority` tag of each node; a shorter list repeats [default: 1].
    #[arg(long, value_delimiter = ',')]
    pub(crate) priorities: Option<Vec<i64>>,
    /// Also run HAProxy: writes to the leader, reads to the replicas.
    #[arg(long)]
    pub(crate) haproxy: bool,
    /// Use fixed ports from this one up (etcd BASE, REST APIs BASE+10.., PostgreSQL BASE+20..,
    /// HAProxy BASE+30..32) instead of free ones.
    #[arg(long)]
    pub(crate) base_port: Option<u16>,
    /// Where the policies are (NAME.toml with its component); the lab runs a copy
    /// [default: ./policies when it exists].
    #[arg(long)]
    pub(crate) policies_dir: Option<PathBuf>,
    /// The PostgreSQL programs [default: the directory of initdb on PATH, else the newest
    /// /usr/lib/postgresql/<version>/bin].
    #[arg(long)]
    pub(crate) bin_dir: Option<PathBuf>,
    /// How long to wait for the cluster to become healthy, in seconds.
    #[arg(long, default_value_t = 120)]
    pub(crate) timeout: u64,
}

impl LabOptions {
    /// The settings asked for (`None`: not given).
    pub(crate) fn requested(&self, policies: Option<Vec<String>>) -> spec::Requested {
        spec::Requested {
            nodes: self.nodes,
            ttl: self.ttl,
            loop_wait: self.loop_wait,
            retry_timeout: self.retry_timeout,
            synchronous_mode: self.sync.then_some(true),
            policies,
            zones: self.zones.clone(),
            priorities: self.priorities.clone(),
            haproxy: self.haproxy.then_some(true),
        }
    }
}

#[derive(Args, Debug)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    pub(crate) opts: LabOptions,
    /// The policies every node runs, in order (names from --policies-dir), or `builtin`
    /// [default: builtin].
    #[arg(long, value_delimiter = ',')]
    pub(crate) policies: Option<Vec<String>>,
}

#[derive(Subcommand, Debug, Clone)]
pub(crate) enum FaultCmd {
    /// SIGKILL the leader's process group (regent, PostgreSQL, fencing guard): a host crash.
    KillLeader {
        /// This node instead of the leader (a number or node name).
        #[arg(long)]
        node: Option<String>,
    },
    /// SIGTERM the leader's regent: a graceful stop, which hands over to a replica.
    StopLeader {
        /// This node instead of the leader.
        #[arg(long)]
        node: Option<String>,
    },
    /// SIGKILL the leader's postmaster only; regent lives on.
    KillPostgres {
        /// This node instead of the leader.
        #[arg(long)]
        node: Option<String>,
    },
    /// SIGSTOP the leader's regent for SECONDS, then SIGCONT (a stalled supervisor).
    FreezeLeader {
        seconds: f64,
        /// This node instead of the leader.
        #[arg(long)]
        node: Option<String>,
    },
    /// SIGSTOP etcd for SECONDS, then SIGCONT.
    FreezeEtcd { seconds: f64 },
    /// A planned switchover through the leader's REST API (POST /switchover).
    Switchover {
        /// The replica to hand over to [default: the one the policy ranks first].
        #[arg(long)]
        candidate: Option<String>,
    },
    /// Cut the leader off from etcd and the other nodes for SECONDS (its clients still reach
    /// it), then heal: it must be fenced and replaced once its lease expires. Needs root
    /// (a cgroup and iptables rules of the lab's own).
    Partition {
        seconds: f64,
        /// This node instead of the leader.
        #[arg(long)]
        node: Option<String>,
    },
    /// Stop a replica's walreceiver (SIGSTOP), write more than maximum_lag_on_failover on
    /// the leader, then crash the leader: the lagging replica must not be promoted.
    LagReplica {
        /// This replica [default: the first streaming one; never the synchronous standby].
        #[arg(long)]
        replica: Option<String>,
    },
    /// Break a replica's replication (its walreceiver terminated, again and again): it must
    /// be reported unhealthy (GET /replica 503); then as lag-replica, the leader writes and
    /// crashes, and the broken replica must not be promoted.
    BreakReplication {
        /// This replica [default: the first streaming one; never the synchronous standby].
        #[arg(long)]
        replica: Option<String>,
    },
    /// Stop a node's regent (SIGTERM) if it runs, start it again, wait until it serves.
    RestartNode { node: String },
}

/// The faults `compare` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum CompareFault {
    KillLeader,
    StopLeader,
    KillPostgres,
    FreezeLeader,
    FreezeEtcd,
    Switchover,
    Partition,
    LagReplica,
    BreakReplication,
}

impl CompareFault {
    pub(crate) fn name(self) -> &'static str {
        match self {
            CompareFault::KillLeader => "kill-leader",
            CompareFault::StopLeader => "stop-leader",
            CompareFault::KillPostgres => "kill-postgres",
            CompareFault::FreezeLeader => "freeze-leader",
            CompareFault::FreezeEtcd => "freeze-etcd",
            CompareFault::Switchover => "switchover",
            CompareFault::Partition => "partition",
            CompareFault::LagReplica => "lag-replica",
            CompareFault::BreakReplication => "break-replication",
        }
    }
}

#[derive(Args, Debug)]
pub(crate) struct CompareArgs {
    /// The policies to compare, comma-separated: names from the lab's policies directory,
    /// and `builtin` for the built-in rules.
    #[arg(long, value_delimiter = ',', required = true)]
    pub(crate) policies: Vec<String>,
    /// The faults to inject, comma-separated: each runs --runs times under every policy.
    #[arg(
        long = "faults",
        alias = "fault",
        value_enum,
        value_delimiter = ',',
        required = true
    )]
    pub(crate) faults: Vec<CompareFault>,
    /// How long freeze-leader, freeze-etcd and partition last, in seconds [default: the
    /// lab's ttl + loop_wait + 5, so that the leader's lease expires and it is replaced].
    #[arg(long)]
    pub(crate) fault_seconds: Option<f64>,
    /// Also measure Patroni beside the policies, in the same lab with the same faults and
    /// writer: its runs come as one block after the policies' (swapping the supervisor restarts
    /// every node), as the row "patroni". Needs a `patroni` on PATH or --patroni-bin, and a
    /// ttl of 20 s or more (Patroni's least), which a lab that compare starts gets by default.
    #[arg(long, value_enum)]
    pub(crate) supervisor: Option<Baseline>,
    /// The patroni program for --supervisor patroni [default: patroni on PATH].
    #[arg(long)]
    pub(crate) patroni_bin: Option<PathBuf>,
    /// Runs per policy.
    #[arg(long, default_value_t = 3)]
    pub(crate) runs: usize,
    /// Output format of the results.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
    /// Pause between two writes of the writer, in milliseconds.
    #[arg(long, default_value_t = 10)]
    pub(crate) write_interval_ms: u64,
    /// Keep the lab that compare started (by default it is removed afterwards).
    #[arg(long)]
    pub(crate) keep: bool,
    /// Also write the results and every run's timeline as a self-contained HTML page to this
    /// file (after Ctrl-C: the runs completed so far).
    #[arg(long, value_name = "FILE.html")]
    pub(crate) report: Option<PathBuf>,
    /// A target: exit 1 if a run's failover takes longer (seconds).
    #[arg(long)]
    pub(crate) max_failover: Option<f64>,
    /// A target: exit 1 if a run loses more acknowledged writes.
    #[arg(long)]
    pub(crate) max_lost: Option<usize>,
    /// For a new lab (compare uses the lab running in --dir if there is one).
    #[command(flatten)]
    pub(crate) opts: LabOptions,
}

/// Another supervisor `compare` measures beside Regent's policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Baseline {
    /// Patroni, run on the same lab in place of `regent run`.
    Patroni,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    #[default]
    Table,
    Json,
}

/// Run `regent lab` (on a multi-threaded runtime: the probes run concurrently). On error,
/// [`LabError::exit_code`] is the exit code.
pub async fn run(args: LabArgs) -> Result<(), LabError> {
    let dir = state::resolve_dir(args.dir.as_deref())?;
    match args.cmd {
        LabCmd::Up(up) => ops::up(&dir, &up.opts, up.policies).await,
        LabCmd::Status { format } => observe::status(&dir, format).await,
        LabCmd::Down { keep_data } => ops::down(&dir, keep_data).await,
        LabCmd::Fault {
            fault,
            format,
            report,
        } => fault::run(&dir, fault, format, report.as_deref()).await,
        LabCmd::Compare(c) => compare::run(&dir, c).await,
    }
}

/// Results on stdout; a closed pipe (`regent lab status | head`) is not an error.
pub(crate) fn out(text: impl AsRef<str>) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = o
        .write_all(text.as_ref().as_bytes())
        .and_then(|_| o.flush());
}

/// A progress line on stderr (stdout holds the results).
pub(crate) fn say(msg: impl std::fmt::Display) {
    progress::print(&format!("regent lab: {msg}"));
}
