//! The supervisor: the thin async shell around the decision core, as quinn is around
//! quinn-proto. Each loop it observes the world, asks [`crate::ha::decide`] what to do, carries
//! the actions out, publishes its member key and the REST view, and sleeps until `loop_wait`
//! passes or the DCS watch reports a change.
//!
//! One file per job:
//! - `cycle.rs`: the loop (`run`, `cycle`) and the order of its steps;
//! - `observe.rs`: the lease renewal, the DCS read, PostgreSQL's state, health, peers;
//! - `act.rs`: each `ha::Action` on the DCS and PostgreSQL, the guard, bootstrap;
//! - `leader.rs`: the leader's duties (status, slots, synchronous mode, history);
//! - `handover.rs`: the planned hand-over, shutdown, leaving the `sync` key;
//! - `commands.rs`: operators' commands from the REST API (restart, reinitialize);
//! - `reload.rs`: reloading the configuration, the policies, PostgreSQL's parameters;
//! - `publish.rs`: the member key, the REST view, the policies' events;
//! - `rollout.rs`: following the policies pushed to the cluster (`regent ctl policy push`);
//! - `callbacks.rs`: the script callbacks, `pre_promote` and `before_stop`;
//! - `bounded.rs`: waiting for the policies no longer than the loop's share of the lease.
//!
//! What the loop remembers between decisions is the core's [`Memory`], updated through its
//! methods; this struct keeps only what the shell itself needs (handles, caches, the phase).

mod act;
mod bounded;
mod callbacks;
mod commands;
mod cycle;
mod elections;
mod failsafe;
mod handover;
mod leader;
mod observe;
mod publish;
mod reload;
mod rollout;
mod slots;
mod standby;

use crate::api::{self, LocalSnapshot};
use crate::config::{Config, DynamicConfig, split_host_port};
use crate::dcs::{Cluster, EtcdDcs};
use crate::fence::GuardFiles;
use crate::ha::Memory;
use crate::ha::policy::Policy;
use crate::plugin::PolicySet;
use crate::postgres::{PgState, Postgres};
use commands::ScheduledRestart;
use publish::event_thread;
use reload::{attach_prober, load_policies, pg_settings};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Regent's version, as the REST API and the member key report it.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Reported as `version` in the member key: Patroni peers and patronictl parse it and switch
/// behaviour below 4.0, so Regent speaks the 4.x protocol.
pub(crate) const PATRONI_COMPAT_VERSION: &str = "4.1.4";

/// Why an action or the loop failed.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// Something an operator must fix: the supervisor stops.
    #[error("{0}")]
    Fatal(String),
    /// A DCS request failed (the loop goes on).
    #[error(transparent)]
    Dcs(#[from] crate::dcs::DcsError),
    /// A PostgreSQL operation failed (the loop goes on).
    #[error(transparent)]
    Pg(#[from] crate::postgres::PgError),
    /// Anything else that failed (the loop goes on).
    #[error("{0}")]
    Io(String),
}

/// Patroni's PostgreSQL state strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PgPhase {
    Running,
    Starting,
    Stopped,
    Stopping,
    Crashed,
    CreatingReplica,
    Initializing,
    Restarting,
    RestartFailed,
    StartFailed,
}

impl PgPhase {
    fn as_str(self) -> &'static str {
        match self {
            PgPhase::Running => "running",
            PgPhase::Starting => "starting",
            PgPhase::Stopped => "stopped",
            PgPhase::Stopping => "stopping",
            PgPhase::Crashed => "crashed",
            PgPhase::CreatingReplica => "creating replica",
            PgPhase::Initializing => "initializing new cluster",
            PgPhase::Restarting => "restarting",
            PgPhase::RestartFailed => "restart failed",
            PgPhase::StartFailed => "start failed",
        }
    }
}

/// What this node runs as, as the member key's `role` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeRole {
    /// No data directory yet, or bootstrapping one.
    Uninitialized,
    /// PostgreSQL runs writable.
    Primary,
    /// PostgreSQL runs (or is started) read-only.
    Replica,
    /// Stopped after being a primary.
    Demoted,
    /// Leads a standby cluster: read-only, replicating from the remote primary.
    StandbyLeader,
}

impl NodeRole {
    fn as_str(self) -> &'static str {
        match self {
            NodeRole::Uninitialized => "uninitialized",
            NodeRole::Primary => "primary",
            NodeRole::Replica => "replica",
            NodeRole::Demoted => "demoted",
            NodeRole::StandbyLeader => "standby_leader",
        }
    }

    /// The role the policies' events name.
    fn policy_role(self) -> crate::plugin::Role {
        match self {
            NodeRole::Primary => crate::plugin::Role::Primary,
            NodeRole::Replica | NodeRole::StandbyLeader => crate::plugin::Role::Replica,
            NodeRole::Uninitialized | NodeRole::Demoted => crate::plugin::Role::Unknown,
        }
    }
}

/// One node's supervisor: the handles it acts through and what it remembers.
pub struct Supervisor {
    cfg: Config,
    dcs: EtcdDcs,
    pg: Postgres,
    guard: GuardFiles,
    /// The watchdog device, armed while this node is a writable primary (`watchdog.rs`).
    watchdog: std::sync::Mutex<crate::watchdog::Watchdog>,
    policy: Arc<dyn Policy>,
    /// The WebAssembly policies (`regent.policies`), if any; also reachable through `policy`.
    policies: Option<Arc<PolicySet>>,
    _policy_watcher: Option<crate::plugin::WatcherHandle>,
    view_tx: watch::Sender<LocalSnapshot>,
    http: api::PeerClient,
    dynamic: DynamicConfig,
    /// What the loop remembers between decisions (the core's rules update it).
    mem: Memory,
    /// When the DCS was last read (Unix seconds), for the status document.
    dcs_last_seen: Option<u64>,
    phase: PgPhase,
    role: NodeRole,
    sysid: Option<String>,
    last_pg: Option<PgState>,
    last_cluster: Option<Cluster>,
    guard_child: Option<std::process::Child>,
    control: Option<crate::control::ControlReceiver>,
    /// Where the configuration came from (the file or directory with the `PATRONI_*`
    /// variables captured at start), read again on `POST /reload` and SIGHUP.
    config_source: Option<crate::config::ConfigSource>,
    /// The running REST API's reloadable part (credentials, allowlist, certificate).
    api_reloader: Option<crate::api::Reloader>,
    /// Shutting down as a synchronous standby: the member key says `nosync` so that the leader
    /// stops waiting for this node before its PostgreSQL stops.
    leaving_sync: bool,
    /// A restart requested for later (`POST /restart` with `schedule`).
    scheduled_restart: Option<ScheduledRestart>,
    /// A re-initialization requested by `POST /reinitialize`, run at the start of the next loop.
    reinit: Option<bool>,
    /// The revision of a `/config` value that could not be decoded (reported once).
    bad_config_rev: Option<i64>,
    /// The queue of the thread that delivers events to the policies.
    events: std::sync::mpsc::Sender<(Arc<PolicySet>, crate::plugin::Event)>,
    /// The PostgreSQL phase the health check last saw, and since when.
    phase_seen: (PgPhase, std::time::Instant),
    /// As leader, this process made sure the SQL probes' unprivileged role exists.
    probe_role_ready: bool,
    /// A health verdict, and a decision, still running on its blocking thread.
    health_busy: Arc<std::sync::atomic::AtomicBool>,
    decide_busy: Arc<std::sync::atomic::AtomicBool>,
    /// The election the current decision acts on, taken by the action that moves the key.
    deciding: Option<crate::ha::Election>,
    /// The record of the election this node won, completed when PostgreSQL is promoted.
    won: Option<crate::dcs::ElectionRecord>,
    /// The policies pushed to the cluster: what this member last tried, a load in progress.
    rollout: rollout::Rollout,
    /// The script callbacks still running (`postgresql.callbacks`).
    scripts: crate::postgres::callbacks::CallbackExecutor,
    /// A demotion's `on_role_change` fired: the start that follows runs no `on_start`.
    cb_after_demotion: std::sync::atomic::AtomicBool,
    /// The `failsafe` key as last read (failsafe mode's topology, kept through an outage).
    failsafe_topology: Option<std::collections::BTreeMap<String, String>>,
    /// Shared with the REST API's `POST /failsafe` (see [`crate::control::FailsafeGate`]).
    failsafe_gate: crate::control::FailsafeGate,
}

impl Supervisor {
    /// Connect to etcd, load the policies and prepare PostgreSQL's settings; nothing runs yet.
    pub async fn new(
        cfg: Config,
        view_tx: watch::Sender<LocalSnapshot>,
        control: crate::control::ControlReceiver,
    ) -> Result<Supervisor, SupervisorError> {
        let bin_dir = crate::config::resolve_bin_dir(&cfg)
            .map_err(|e| SupervisorError::Fatal(e.to_string()))?;
        let (listen_host, port) = split_host_port(&cfg.postgresql.listen).ok_or_else(|| {
            SupervisorError::Fatal(format!(
                "postgresql.listen: `{}` is not host:port",
                cfg.postgresql.listen
            ))
        })?;
        let dynamic = cfg.bootstrap.dcs.clone();
        let pg = Postgres::new(pg_settings(&cfg, &dynamic, bin_dir, listen_host, port))?;
        // A new standby cluster bootstraps from `bootstrap.dcs.standby_cluster` before any
        // `config` key exists; a joining node takes the cluster's from its first read.
        pg.set_standby_cluster(dynamic.standby().cloned())?;
        let timeout = Duration::from_secs(dynamic.retry_timeout.max(1));
        let dcs = EtcdDcs::connect_with(&cfg.etcd_access(), &cfg.dcs_prefix(), timeout)
            .await
            .map_err(|e| {
                SupervisorError::Fatal(format!(
                    "cannot reach etcd at {}: {e}; check etcd3.hosts, etcd3.protocol and the etcd TLS and user settings, and that etcd is running",
                    cfg.etcd_endpoints().join(",")
                ))
            })?;
        let guard = GuardFiles::new(&cfg.run_dir(), &cfg.name, &cfg.postgresql.data_dir);
        // The policies must fit the lease of the cluster this node joins: its `config` key's
        // timing when there is one, else the bootstrap's.
        let timing = match dcs.read_cluster().await.ok().and_then(|c| c.config) {
            Some((v, _)) => serde_json::from_value::<DynamicConfig>(v)
                .map(|d| (d.ttl, d.loop_wait))
                .unwrap_or((dynamic.ttl, dynamic.loop_wait)),
            None => (dynamic.ttl, dynamic.loop_wait),
        };
        let budget = crate::plugin::LoopBudget::new(timing.0, timing.1);
        let (policy, policies, watcher) = load_policies(&cfg, budget).await?;
        let http = api::PeerClient::from_config(&cfg)
            .map_err(|e| SupervisorError::Fatal(e.to_string()))?;
        ensure_unique_name(&dcs, &http, &cfg.name).await?;
        attach_prober(policies.as_deref(), &pg)?;
        let watchdog = std::sync::Mutex::new(crate::watchdog::Watchdog::new(cfg.watchdog.clone()));
        Ok(Supervisor {
            cfg,
            dcs,
            pg,
            guard,
            watchdog,
            policy,
            policies,
            _policy_watcher: watcher,
            view_tx,
            http,
            dynamic,
            mem: {
                let mut m = Memory::default();
                m.supervisor_started(crate::fence::mono_ms());
                m
            },
            probe_role_ready: false,
            dcs_last_seen: None,
            phase: PgPhase::Stopped,
            role: NodeRole::Uninitialized,
            sysid: None,
            last_pg: None,
            last_cluster: None,
            guard_child: None,
            control: Some(control),
            config_source: None,
            api_reloader: None,
            leaving_sync: false,
            scheduled_restart: None,
            reinit: None,
            phase_seen: (PgPhase::Stopped, std::time::Instant::now()),
            deciding: None,
            won: None,
            rollout: rollout::Rollout::default(),
            scripts: Default::default(),
            cb_after_demotion: Default::default(),
            failsafe_topology: None,
            failsafe_gate: crate::control::FailsafeGate::default(),
            events: event_thread()?,
            bad_config_rev: None,
            health_busy: Arc::default(),
            decide_busy: Arc::default(),
        })
    }

    /// Where the configuration came from: `POST /reload` and SIGHUP read it again.
    pub fn set_config_source(&mut self, source: crate::config::ConfigSource) {
        self.config_source = Some(source);
    }

    /// The REST API that a reload also updates (its credentials, allowlist, headers and
    /// certificate).
    pub fn set_api_reloader(&mut self, reloader: crate::api::Reloader) {
        self.api_reloader = Some(reloader);
    }

    /// The gate the REST API's `POST /failsafe` goes through
    /// ([`ControlHandle::failsafe_gate`](crate::control::ControlHandle::failsafe_gate)).
    pub fn set_failsafe_gate(&mut self, gate: crate::control::FailsafeGate) {
        self.failsafe_gate = gate;
    }

    /// The DCS client (cheap to clone), for the REST API.
    pub fn dcs(&self) -> EtcdDcs {
        self.dcs.clone()
    }

    /// The loop's time for the policies under the cluster's current timing.
    pub(super) fn policy_budget(&self) -> crate::plugin::LoopBudget {
        crate::plugin::LoopBudget::new(self.dynamic.ttl, self.dynamic.loop_wait)
    }

    /// The cluster's `ttl` in milliseconds.
    pub(super) fn ttl_ms(&self) -> u64 {
        self.dynamic.ttl.saturating_mul(1000)
    }

    /// How long one loop waits for PostgreSQL to accept connections after starting it; a
    /// longer start goes on in the background while the loop keeps renewing the lease.
    pub(super) fn start_patience(&self) -> Duration {
        Duration::from_secs(self.dynamic.loop_wait.clamp(2, 10))
    }
}

/// Refuse to start when another running process already is this node: a member key with our
/// name whose REST API answers (as Patroni checks). Two processes with one name would take
/// each other's leader key for their own. A member key left by a previous run of this node,
/// whose process is gone, does not count: its API does not answer (or is our own listener,
/// bound but not serving yet).
async fn ensure_unique_name(
    dcs: &EtcdDcs,
    http: &api::PeerClient,
    name: &str,
) -> Result<(), SupervisorError> {
    let Ok(cluster) = dcs.read_cluster().await else {
        return Ok(());
    };
    let Some(url) = cluster.member(name).and_then(|m| m.data.api_url.clone()) else {
        return Ok(());
    };
    let base = url
        .strip_suffix("/patroni")
        .unwrap_or(&url)
        .trim_end_matches('/');
    let probe = http
        .request(reqwest::Method::GET, &format!("{base}/liveness"))
        .timeout(Duration::from_secs(3))
        .send()
        .await;
    match probe {
        Ok(answer) => Err(SupervisorError::Fatal(format!(
            "Can't start; there is already a node named '{name}' running: its member key names the REST API {base}, which answered HTTP {}. Give this node another `name`, or stop the other process",
            answer.status().as_u16()
        ))),
        Err(_) => Ok(()),
    }
}

/// Wall clock, ms since the Unix epoch.
pub(super) fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Wall clock, seconds since the Unix epoch.
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// ISO-8601 UTC timestamp with offset, as Patroni writes into `/history`.
pub(super) fn iso_now() -> String {
    crate::time::Timestamp::from_unix(unix_now() as i64).to_rfc3339()
}
