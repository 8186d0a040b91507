//! The supervisor: the thin async shell around the decision core. Each loop it observes the
//! world (lease renewal, the DCS, the local PostgreSQL, peers during an election), asks
//! [`crate::ha::decide`] what to do, carries the actions out, publishes its member key and the
//! REST view, and sleeps until `loop_wait` passes or the DCS watch reports a change.

use crate::api::{self, NodeView};
use crate::config::{Config, DynamicConfig, SyncMode, split_host_port};
use crate::dcs::{Cluster, EtcdDcs, HistoryLine, MemberData, Status, tag_bool};
use crate::fence::{GuardFiles, GuardState, instant_to_mono_ms, mono_ms};
use crate::ha::policy::{DefaultPolicy, Health, HealthFacts, Policy};
use crate::ha::sync;
use crate::ha::{Action, DataDir, DemoteMode, PeerState, PgView, Settings, World, decide};
use crate::policy::PolicySet;
use crate::postgres::{PgSettings, PgState, Postgres, StopMode, Upstream};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Reported as `version` in the member key: Patroni peers and patronictl parse it and switch
/// behaviour below 4.0, so Regent speaks the 4.x protocol.
pub const PATRONI_COMPAT_VERSION: &str = "4.1.4";

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("{0}")]
    Fatal(String),
    #[error(transparent)]
    Dcs(#[from] crate::dcs::DcsError),
    #[error(transparent)]
    Pg(#[from] crate::postgres::PgError),
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
        }
    }
}

pub struct Supervisor {
    cfg: Config,
    dcs: EtcdDcs,
    pg: Postgres,
    guard: GuardFiles,
    policy: Arc<dyn Policy>,
    /// The WebAssembly policies (`regent.policies`), if any; also reachable through `policy`.
    policies: Option<Arc<PolicySet>>,
    _policy_watcher: Option<crate::policy::WatcherHandle>,
    view_tx: watch::Sender<NodeView>,
    http: api::PeerClient,
    dynamic: DynamicConfig,
    write_deadline_ms: Option<u64>,
    our_lease: Option<i64>,
    known_lock_lease: Option<i64>,
    unlocked_since_ms: Option<u64>,
    rewind_failed: bool,
    dcs_last_seen: Option<u64>,
    phase: PgPhase,
    role: &'static str,
    sysid: Option<String>,
    last_pg: Option<PgState>,
    last_cluster: Option<Cluster>,
    guard_child: Option<std::process::Child>,
    control: Option<crate::control::ControlReceiver>,
    /// The configuration file, re-read on `POST /reload` and SIGHUP.
    config_path: Option<std::path::PathBuf>,
    /// The running REST API's reloadable part (credentials, allowlist, certificate).
    api_reloader: Option<crate::api::Reloader>,
    /// Consecutive loops in which the policies judged this node failed.
    failed_health_loops: u32,
    /// Shutting down as a synchronous standby: the member key says `nosync` so that the leader
    /// stops waiting for this node before its PostgreSQL stops.
    leaving_sync: bool,
    /// Synchronous standbys not yet published in the `sync` key, with the flush LSN each must
    /// reach first ([`sync::SyncPlan::Apply`]).
    sync_catching_up: BTreeMap<String, u64>,
    /// A restart requested for later (`POST /restart` with `schedule`).
    scheduled_restart: Option<ScheduledRestart>,
    /// A re-initialization requested by `POST /reinitialize`, run at the start of the next loop.
    reinit: Option<bool>,
    /// The revision of a `/config` value that could not be decoded (reported once).
    bad_config_rev: Option<i64>,
    /// The `failover` key's request as first seen, and when (monotonic ms).
    request_seen: Option<(crate::dcs::Failover, u64)>,
    /// The last leader seen, with the tags of its member key.
    last_leader: Option<(String, BTreeMap<String, String>)>,
    /// The queue of the thread that delivers events to the policies.
    events: std::sync::mpsc::Sender<(Arc<PolicySet>, crate::policy::Event)>,
    /// Consecutive failed starts as a replica.
    replica_start_failures: u32,
    /// When the last hand-over was aborted (monotonic ms).
    handover_aborted_ms: Option<u64>,
    /// The PostgreSQL phase the health check last saw, and since when.
    phase_seen: (PgPhase, std::time::Instant),
}

/// A restart requested for later.
#[derive(Debug, Clone)]
struct ScheduledRestart {
    at_unix_ms: u64,
    request: crate::control::RestartRequest,
}

impl ScheduledRestart {
    /// As Patroni shows it in the member key and `/patroni`: the request's fields.
    fn json(&self) -> Value {
        serde_json::to_value(&self.request).unwrap_or(Value::Null)
    }
}

/// Safety margin between the write deadline and the earliest possible lease expiry.
pub fn safety_margin_ms(ttl_ms: u64) -> u64 {
    (ttl_ms / 5).clamp(1000, 5000)
}

impl Supervisor {
    pub async fn new(
        cfg: Config,
        view_tx: watch::Sender<NodeView>,
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
        let timeout = Duration::from_secs(dynamic.retry_timeout.max(1));
        let dcs = EtcdDcs::connect(&cfg.etcd_endpoints(), &cfg.dcs_prefix(), timeout)
            .await
            .map_err(|e| {
                SupervisorError::Fatal(format!(
                    "cannot reach etcd at {}: {e}; check etcd3.hosts and that etcd is running",
                    cfg.etcd_endpoints().join(",")
                ))
            })?;
        let guard = GuardFiles::new(&cfg.run_dir(), &cfg.name, &cfg.postgresql.data_dir);
        let (policy, policies, watcher) = load_policies(&cfg).await?;
        let http = api::PeerClient::from_config(&cfg)
            .map_err(|e| SupervisorError::Fatal(e.to_string()))?;
        attach_prober(policies.as_deref(), &pg)?;
        Ok(Supervisor {
            cfg,
            dcs,
            pg,
            guard,
            policy,
            policies,
            _policy_watcher: watcher,
            view_tx,
            http,
            dynamic,
            write_deadline_ms: None,
            our_lease: None,
            known_lock_lease: None,
            unlocked_since_ms: None,
            rewind_failed: false,
            dcs_last_seen: None,
            phase: PgPhase::Stopped,
            role: "uninitialized",
            sysid: None,
            last_pg: None,
            last_cluster: None,
            guard_child: None,
            control: Some(control),
            config_path: None,
            api_reloader: None,
            failed_health_loops: 0,
            sync_catching_up: BTreeMap::new(),
            leaving_sync: false,
            scheduled_restart: None,
            reinit: None,
            phase_seen: (PgPhase::Stopped, std::time::Instant::now()),
            handover_aborted_ms: None,
            replica_start_failures: 0,
            events: event_thread()?,
            last_leader: None,
            request_seen: None,
            bad_config_rev: None,
        })
    }

    /// The file the configuration came from: `POST /reload` and SIGHUP re-read it.
    pub fn set_config_path(&mut self, path: std::path::PathBuf) {
        self.config_path = Some(path);
    }

    /// The REST API that a reload also updates (its credentials, allowlist, headers and
    /// certificate).
    pub fn set_api_reloader(&mut self, reloader: crate::api::Reloader) {
        self.api_reloader = Some(reloader);
    }

    /// The DCS client (cheap to clone), for the REST API.
    pub fn dcs(&self) -> EtcdDcs {
        self.dcs.clone()
    }

    fn ttl_ms(&self) -> u64 {
        self.dynamic.ttl * 1000
    }

    /// Run until `shutdown` resolves, then hand over cleanly.
    pub async fn run(
        mut self,
        mut shutdown: tokio::sync::oneshot::Receiver<()>,
    ) -> Result<(), SupervisorError> {
        let exe = std::env::current_exe()
            .map_err(|e| SupervisorError::Io(format!("cannot find own executable: {e}")))?;
        // Claim the state before a guard looks at it: a guard finding a disarmed state whose
        // owner is dead leaves. An armed state from a previous run stays in force until this
        // process renews the lease under which it was armed.
        if !matches!(self.guard.read(), Some(GuardState::Armed { .. })) {
            let _ = self.guard.write(GuardState::Disarmed {
                owner: std::process::id() as i32,
            });
        }
        let guard_pid = self
            .guard
            .ensure_running(&exe, &mut self.guard_child)
            .map_err(|e| SupervisorError::Io(format!("cannot start the fencing guard: {e}")))?;
        tracing::info!(guard_pid, "fencing guard attached");
        // The REST view exists from the start (liveness needs ttl), before the first loop.
        let (ttl, loop_wait) = (self.dynamic.ttl, self.dynamic.loop_wait);
        let (scope, name) = (self.cfg.scope.clone(), self.cfg.name.clone());
        self.view_tx.send_modify(|v| {
            v.ttl = ttl;
            v.loop_wait = loop_wait;
            v.scope = scope;
            v.name = name;
            v.version = VERSION.into();
            v.last_loop = Some(std::time::Instant::now());
        });
        tokio::spawn(self.dcs.clone().watch_forever());
        let changed = self.dcs.changed.clone();
        let mut control = self.control.take();
        loop {
            if let Err(e) = self.guard.ensure_running(&exe, &mut self.guard_child) {
                tracing::error!(error = %e, "cannot restart the fencing guard");
            }
            let rerun = self.cycle().await?;
            if rerun {
                continue;
            }
            let nap = Duration::from_secs(self.dynamic.loop_wait.max(1));
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(nap) => {}
                _ = changed.notified() => {}
                Some((cmd, reply)) = recv_command(&mut control) => {
                    let answer = self.command(cmd).await;
                    let _ = reply.send(answer);
                }
            }
        }
        self.shutdown().await;
        Ok(())
    }

    /// One observe → decide → act round. Returns true when it should run again at once.
    async fn cycle(&mut self) -> Result<bool, SupervisorError> {
        let started = std::time::Instant::now();
        if let Some(from_leader) = self.reinit.take() {
            self.reinitialize(from_leader).await;
        }
        let mut world = self.observe().await;
        world.health = self.judge_health(&world).await;
        self.failed_health_loops = if matches!(world.health, Health::Failed(_)) {
            self.failed_health_loops.saturating_add(1)
        } else {
            0
        };
        world.failed_health_loops = self.failed_health_loops;
        if self.needs_peers(&world)
            && let Some(c) = &world.cluster
        {
            world.peers = self.poll_peers(c).await;
        }
        // The policy runs WebAssembly, whose WASI streams (a guest's stderr) block on tokio:
        // decide on a blocking thread, never on the async workers.
        let decision = {
            let (w, policy) = (world.clone(), self.policy.clone());
            match tokio::task::spawn_blocking(move || decide(&w, policy.as_ref())).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "deciding with the policies panicked; the built-in rules decide this loop");
                    decide(&world, &DefaultPolicy)
                }
            }
        };
        tracing::info!("{}", decision.summary);
        for a in &decision.actions {
            let to = match a {
                Action::AcquireLeader => Some(self.cfg.name.clone()),
                Action::HandOver { to } => Some(to.clone()),
                _ => None,
            };
            match a {
                Action::AcquireLeader if world.pg.is_primary() => {
                    crate::metrics::election("paused_takeover")
                }
                Action::AcquireLeader if decision.summary.contains("failover to me") => {
                    crate::metrics::election("manual_failover")
                }
                Action::AcquireLeader => crate::metrics::election("leader_missing"),
                Action::Bootstrap => crate::metrics::election("bootstrap"),
                _ => {}
            }
            if let Some(name) = to {
                self.event(crate::policy::Event::FailoverDecided(
                    crate::ha::policy::Ranked {
                        name,
                        reason: decision.summary.clone(),
                    },
                ));
            }
        }
        self.update_guard(&world, &decision.actions);
        let mut rerun = false;
        for action in &decision.actions {
            match self.act(action, &world).await {
                Ok(again) => rerun |= again,
                Err(SupervisorError::Fatal(m)) => return Err(SupervisorError::Fatal(m)),
                Err(e) => {
                    tracing::warn!(action = ?action, error = %e, "action failed");
                    break;
                }
            }
        }
        let steady = decision
            .actions
            .iter()
            .all(|a| matches!(a, Action::RenewLease | Action::WriteInitialize { .. }));
        if steady && !rerun {
            rerun |= self.run_scheduled_restart().await;
        }
        if self.last_cluster.is_some() {
            let _ = self.touch_member().await;
        }
        self.publish(&world);
        crate::metrics::ha_loop_seconds().observe(started.elapsed());
        Ok(rerun)
    }

    /// Whether the decision needs the peers' live state: an election, or a leader asked to
    /// hand over (a switchover request, or its own failed health).
    fn needs_peers(&self, w: &World) -> bool {
        let Some(c) = &w.cluster else { return false };
        if c.leader.is_none() {
            return w.pg.is_replica();
        }
        let request = c.failover.as_ref().is_some_and(|(f, _)| !f.is_empty());
        let unhealthy = matches!(w.health, Health::Failed(_))
            && w.failed_health_loops >= self.cfg.regent.failed_loops_before_handover;
        w.holds_lock() && w.pg.is_primary() && (request || unhealthy)
    }

    async fn observe(&mut self) -> World {
        // Renew the lease first: the decision must see a fresh deadline.
        let ttl = self.dynamic.ttl;
        match self.dcs.refresh_lease(ttl).await {
            Ok((id, sent)) => {
                if self.our_lease != Some(id) {
                    self.write_deadline_ms = None;
                }
                self.our_lease = Some(id);
                let d = instant_to_mono_ms(sent) + self.ttl_ms() - safety_margin_ms(self.ttl_ms());
                self.write_deadline_ms = Some(self.write_deadline_ms.map_or(d, |old| old.max(d)));
            }
            Err(e) => tracing::warn!(error = %e, "could not renew the etcd lease"),
        }
        let cluster = match self.dcs.read_cluster().await {
            Ok(c) => {
                self.dcs_last_seen = Some(unix_now());
                if let Some((v, rev)) = &c.config {
                    match serde_json::from_value::<DynamicConfig>(v.clone()) {
                        Ok(d) if d != self.dynamic => {
                            self.dynamic = d;
                            self.apply_parameters();
                        }
                        Ok(_) => {}
                        Err(e) if self.bad_config_rev != Some(*rev) => {
                            self.bad_config_rev = Some(*rev);
                            tracing::error!(
                                revision = rev,
                                "the cluster's config key cannot be used ({e}); keeping the previous settings. Fix it with `regent ctl edit-config`"
                            );
                        }
                        Err(_) => {}
                    }
                }
                Some(c)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the cluster from etcd");
                None
            }
        };
        if let (Some(old), Some(new)) = (&self.last_cluster, &cluster) {
            self.membership_events(old, new);
        }
        self.last_cluster = cluster.clone();
        if let Some(c) = &cluster
            && let Some(m) = c.leader_name().and_then(|l| c.member(l))
        {
            let tags = m
                .data
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), json_scalar(v)))
                .collect();
            self.last_leader = Some((m.name.clone(), tags));
        }
        if let Some(c) = &cluster {
            self.known_lock_lease = c
                .leader
                .as_ref()
                .filter(|l| l.name == self.cfg.name)
                .map(|l| l.lease);
        }
        let now = mono_ms();
        if let Some(c) = &cluster {
            let req = c
                .failover
                .as_ref()
                .map(|(f, _)| f)
                .filter(|f| !f.is_empty());
            match (req, &self.request_seen) {
                (None, _) => self.request_seen = None,
                (Some(f), Some((seen, _))) if seen == f => {}
                (Some(f), _) => self.request_seen = Some((f.clone(), now)),
            }
        }
        if cluster.as_ref().is_some_and(|c| c.leader.is_none()) {
            if self.unlocked_since_ms.is_none() && self.sysid.is_some() {
                let who = self
                    .last_leader
                    .as_ref()
                    .map(|(n, _)| n.clone())
                    .unwrap_or_else(|| "the leader".into());
                self.event(crate::policy::Event::FailoverStarted(format!(
                    "the leader key is gone ({who} no longer holds it)"
                )));
            }
            self.unlocked_since_ms.get_or_insert(now);
        } else {
            self.unlocked_since_ms = None;
        }

        let running = self.pg.is_running().await;
        let mut state = None;
        if running {
            match self.pg.query_state().await {
                Ok(s) => {
                    if self.phase != PgPhase::Running {
                        let role = if s.in_recovery {
                            crate::policy::Role::Replica
                        } else {
                            crate::policy::Role::Primary
                        };
                        self.event(crate::policy::Event::Started(role));
                    }
                    self.phase = PgPhase::Running;
                    state = Some(s);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "PostgreSQL runs but does not answer yet");
                    self.phase = PgPhase::Starting;
                }
            }
        } else if self.phase == PgPhase::Running {
            self.phase = PgPhase::Crashed;
        }
        let data_dir = match (&state, &self.sysid) {
            (Some(s), Some(id)) => DataDir::Initialized {
                sysid: id.clone(),
                was_primary: !s.in_recovery,
            },
            _ => {
                let d = self.pg.data_dir_state().await;
                if let DataDir::Initialized { sysid, .. } = &d {
                    self.sysid = Some(sysid.clone());
                } else {
                    self.sysid = None;
                }
                d
            }
        };
        if let Some(s) = &state {
            self.role = if s.in_recovery { "replica" } else { "primary" };
        }
        self.last_pg = state.clone();

        let replica = state.as_ref().filter(|s| s.in_recovery);
        let pg = PgView {
            data_dir,
            running: running && state.is_some(),
            in_recovery: state.as_ref().map(|s| s.in_recovery),
            timeline: state.as_ref().and_then(|s| s.timeline),
            wal_position: state.as_ref().and_then(PgState::wal_position),
            received_lsn: replica.and_then(|s| s.received_lsn),
            replayed_lsn: replica.and_then(|s| s.replayed_lsn),
            upstream: self.pg.configured_upstream(),
            rewind_failed: self.rewind_failed,
            former_primary: self.pg.former_primary(),
            streaming: state
                .as_ref()
                .filter(|s| !s.in_recovery)
                .map(|s| {
                    s.replication
                        .iter()
                        .filter(|r| r.state == "streaming")
                        .map(|r| r.application_name.clone())
                        .collect()
                })
                .unwrap_or_default(),
        };
        World {
            now_ms: now,
            me: self.cfg.name.clone(),
            cluster,
            our_lease: self.our_lease,
            write_deadline_ms: self.write_deadline_ms,
            pg,
            peers: BTreeMap::new(),
            settings: self.settings(),
            unlocked_since_ms: self.unlocked_since_ms,
            known_lock_lease: self.known_lock_lease,
            health: Health::Healthy,
            failed_health_loops: 0,
            now_unix_ms: unix_now_ms(),
            handover_aborted_ms: self.handover_aborted_ms,
            last_leader: self.last_leader.clone(),
            request_since_ms: self.request_seen.as_ref().map(|(_, t)| *t),
        }
    }

    fn settings(&self) -> Settings {
        let tags = &self.cfg.tags;
        Settings {
            ttl_ms: self.ttl_ms(),
            maximum_lag_on_failover: self.dynamic.maximum_lag_on_failover,
            check_timeline: self.dynamic.check_timeline,
            use_pg_rewind: self.dynamic.postgresql.use_pg_rewind,
            nofailover: tags.nofailover,
            failover_priority: tags.failover_priority.unwrap_or(1),
            tags: tags
                .other
                .iter()
                .map(|(k, v)| (k.clone(), yaml_scalar(v)))
                .collect(),
            race_backoff_ms: 2000,
            synchronous_mode: self.dynamic.synchronous_mode != SyncMode::Off,
            paused: self.dynamic.pause.unwrap_or(false),
            loop_wait_ms: self.dynamic.loop_wait.max(1) * 1000,
            failed_loops_before_handover: self.cfg.regent.failed_loops_before_handover,
        }
    }

    /// Carry out one command from the REST API between two loops.
    async fn command(&mut self, cmd: crate::control::Command) -> crate::control::Reply {
        use crate::control::{Command, Reply};
        match cmd {
            Command::Wake => Reply::new(200, "OK"),
            Command::Restart(r) => self.restart_command(r).await,
            Command::CancelRestart => match self.scheduled_restart.take() {
                Some(_) => Reply::new(200, "scheduled restart deleted"),
                None => Reply::new(404, "no restarts are scheduled"),
            },
            Command::Reinitialize { force, from_leader } => {
                let leader = self
                    .last_cluster
                    .as_ref()
                    .and_then(|c| c.leader_name().map(str::to_string));
                match leader {
                    Some(l) if l == self.cfg.name => {
                        Reply::new(503, "I am the leader, can not reinitialize")
                    }
                    None => Reply::new(503, "Cluster has no leader, can not reinitialize"),
                    Some(_) if self.reinit.is_some() && !force => {
                        Reply::new(503, "reinitialize already in progress")
                    }
                    Some(_) => {
                        self.reinit = Some(from_leader);
                        self.phase = PgPhase::CreatingReplica;
                        self.view_tx
                            .send_modify(|v| v.state = PgPhase::CreatingReplica.as_str().into());
                        Reply::new(200, "reinitialize started")
                    }
                }
            }
            Command::Reload => self.reload().await,
        }
    }

    /// `POST /restart`: check the conditions, then restart now or schedule it.
    async fn restart_command(
        &mut self,
        r: crate::control::RestartRequest,
    ) -> crate::control::Reply {
        use crate::control::Reply;
        if let Some(at) = r.schedule.as_deref() {
            if self.scheduled_restart.is_some() {
                return Reply::new(409, "Another restart is already scheduled");
            }
            let Some(at_unix_ms) = crate::dcs::parse_iso8601_ms(at) else {
                return Reply::new(
                    400,
                    format!("schedule {at:?} is not an ISO 8601 time with a time zone"),
                );
            };
            tracing::info!(schedule = %at, "restart scheduled");
            self.scheduled_restart = Some(ScheduledRestart {
                at_unix_ms,
                request: r,
            });
            return Reply::new(202, "Restart scheduled");
        }
        if let Err(why) = self.restart_conditions(&r) {
            tracing::info!("restart refused: {why}");
            return Reply::new(503, "restart conditions are not satisfied");
        }
        if self.phase == PgPhase::Starting {
            return Reply::new(503, "postgres is still starting");
        }
        match self.restart_postgres(r.timeout).await {
            Ok(true) => Reply::new(200, "restarted successfully"),
            Ok(false) => Reply::new(503, "restart failed: PostgreSQL is still starting"),
            Err(e) => Reply::new(503, format!("restart failed: {e}")),
        }
    }

    /// Why a restart request's conditions (`role`, `postgres_version`, `restart_pending`) do not
    /// hold on this node.
    fn restart_conditions(&self, r: &crate::control::RestartRequest) -> Result<(), String> {
        if let Some(want) = r.role.as_deref() {
            let want = match want {
                "master" | "primary" => "primary",
                "replica" | "standby" => "replica",
                other => other,
            };
            let mine = if self.role == "primary" {
                "primary"
            } else {
                "replica"
            };
            if want != mine {
                return Err(format!("role is {mine}, not {want}"));
            }
        }
        if let Some(v) = r.postgres_version.as_deref() {
            let want = crate::api::postgres_version_number(v)
                .ok_or_else(|| format!("bad version {v:?}"))?;
            let have = self.last_pg.as_ref().map(|p| p.server_version).unwrap_or(0);
            if have >= want {
                return Err(format!("server version {have} is not older than {v}"));
            }
        }
        if r.restart_pending && self.pending_restart().is_empty() {
            return Err("no restart is pending".into());
        }
        Ok(())
    }

    /// Stop PostgreSQL (fast) and start it again in the same role. `Ok(false)`: still starting
    /// after `timeout` seconds (or the loop's patience).
    async fn restart_postgres(&mut self, timeout: Option<u64>) -> Result<bool, SupervisorError> {
        let role = crate::policy::Role::from_name(self.role);
        tracing::info!(role = self.role, "restarting PostgreSQL");
        self.phase = PgPhase::Restarting;
        self.view_tx
            .send_modify(|v| v.state = PgPhase::Restarting.as_str().into());
        self.pg
            .stop(StopMode::Fast, Duration::from_secs(60))
            .await?;
        let patience = timeout.map_or(self.start_patience(), Duration::from_secs);
        match self.pg.start(patience).await {
            Ok(started) => {
                self.phase = if started {
                    PgPhase::Running
                } else {
                    PgPhase::Starting
                };
                self.event(crate::policy::Event::Restarted(role));
                Ok(started)
            }
            Err(e) => {
                self.phase = PgPhase::RestartFailed;
                Err(e.into())
            }
        }
    }

    /// Run a scheduled restart whose time has come. Returns whether it ran.
    async fn run_scheduled_restart(&mut self) -> bool {
        let due = self
            .scheduled_restart
            .as_ref()
            .is_some_and(|s| s.at_unix_ms <= unix_now_ms());
        if !due {
            return false;
        }
        let Some(s) = self.scheduled_restart.take() else {
            return false;
        };
        if let Err(why) = self.restart_conditions(&s.request) {
            tracing::info!("scheduled restart skipped: conditions not satisfied ({why})");
            return false;
        }
        match self.restart_postgres(s.request.timeout).await {
            Ok(_) => tracing::info!("scheduled restart done"),
            Err(e) => tracing::error!(error = %e, "scheduled restart failed"),
        }
        true
    }

    /// Settings waiting for a restart: name → (running value, configured value).
    fn pending_restart(&self) -> BTreeMap<String, (String, String)> {
        self.last_pg
            .as_ref()
            .map(|p| {
                p.pending_restart
                    .iter()
                    .map(|(name, old)| {
                        let new = self.pg.s.parameters.get(name).cloned().unwrap_or_default();
                        (name.clone(), (old.clone(), new))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `POST /reinitialize`: move the data directory aside and clone it again from the leader.
    async fn reinitialize(&mut self, _from_leader: bool) {
        let Some(c) = self.last_cluster.clone() else {
            return;
        };
        let Some(leader) = c.leader_name().filter(|l| *l != self.cfg.name) else {
            tracing::error!("reinitialize: the cluster has no other leader; nothing done");
            return;
        };
        let up = match upstream_in(Some(&c), leader) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "reinitialize: cannot find the leader's address");
                return;
            }
        };
        tracing::info!(from = %leader, "reinitializing: moving the data directory aside and cloning it again");
        self.phase = PgPhase::CreatingReplica;
        let res: Result<(), SupervisorError> = async {
            self.pg
                .stop(StopMode::Fast, Duration::from_secs(60))
                .await?;
            if !matches!(self.pg.data_dir_state().await, DataDir::Empty) {
                let moved = self.pg.move_aside()?;
                tracing::warn!(moved = %moved.display(), "the old data directory was moved aside (delete it when no longer needed)");
            }
            self.sysid = None;
            self.rewind_failed = false;
            self.role = "replica";
            let _ = self.touch_member().await;
            busy(&self.view_tx, "creating replica", self.pg.basebackup(&up)).await?;
            self.start_replica(Some(&up)).await
        }
        .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "reinitialize failed");
        }
    }

    /// `POST /reload`, SIGHUP: re-read the configuration file and apply what may change while
    /// running (tags, PostgreSQL parameters, the policies); rescan the policy files; reload
    /// PostgreSQL.
    async fn reload(&mut self) -> crate::control::Reply {
        use crate::control::Reply;
        if let Some(path) = self.config_path.clone() {
            let loaded = match crate::config::load(&path) {
                Ok(l) => l,
                Err(e) => return reload_refused(e),
            };
            let new = loaded.config;
            let fixed = fixed_keys_changed(&self.cfg, &new);
            if !fixed.is_empty() {
                let msg = format!(
                    "reload failed, the running configuration is unchanged: {} cannot change while regent runs; restart regent to apply them",
                    fixed.join(", ")
                );
                tracing::error!("{msg}");
                return Reply::new(400, msg);
            }
            let peers = match api::PeerClient::from_config(&new) {
                Ok(p) => p,
                Err(e) => return reload_refused(e),
            };
            let api = match self
                .api_reloader
                .as_ref()
                .map(|r| r.prepare(&new, peers.clone()))
            {
                None => None,
                Some(Ok(p)) => Some(p),
                Some(Err(e)) => return reload_refused(e),
            };
            let policies_changed = new.regent.policies != self.cfg.regent.policies
                || new.regent.policies_dir != self.cfg.regent.policies_dir;
            let old = std::mem::replace(&mut self.cfg, new);
            if policies_changed {
                match load_policies(&self.cfg).await {
                    Ok((policy, set, watcher)) => {
                        if let Err(e) = attach_prober(set.as_deref(), &self.pg) {
                            tracing::error!(error = %e, "SQL probes will fail");
                        }
                        self.policy = policy;
                        self.policies = set;
                        self._policy_watcher = watcher;
                        tracing::info!(policies = %self.policy.name(), "policies replaced");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reload refused: the new policies do not load");
                        self.cfg = old;
                        return Reply::new(
                            400,
                            format!("reload failed, the running configuration is unchanged: {e}"),
                        );
                    }
                }
            }
            self.http = peers;
            if let Some(api) = api {
                api.apply();
            }
            self.apply_parameters();
            for w in loaded.warnings {
                tracing::warn!("{w}");
            }
        }
        if let Some(set) = self.policies.clone() {
            let _ = tokio::task::spawn_blocking(move || set.rescan()).await;
        }
        if let Err(e) = self.pg.reload() {
            tracing::warn!(error = %e, "could not reload PostgreSQL");
        }
        self.event(crate::policy::Event::Reloaded(
            crate::policy::Role::from_name(self.role),
        ));
        tracing::info!("configuration reloaded");
        Reply::new(202, "reload scheduled")
    }

    /// Recompute the PostgreSQL parameters from the cluster's and the local configuration and
    /// apply a change (rewrite `regent.conf`, reload the server).
    fn apply_parameters(&mut self) {
        let params = merged_parameters(&self.cfg, &self.dynamic);
        match self.pg.set_parameters(params) {
            Ok(true) => tracing::info!("PostgreSQL parameters changed: configuration reloaded"),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "could not apply the PostgreSQL parameters"),
        }
    }

    /// The policies' verdict on the local node (the built-in rules: healthy while running).
    async fn judge_health(&mut self, w: &World) -> Health {
        let Some(set) = self.policies.clone() else {
            return Health::Healthy;
        };
        if self.phase_seen.0 != self.phase {
            self.phase_seen = (self.phase, std::time::Instant::now());
        }
        set.set_local_node(&self.cfg.name, w.holds_lock());
        let pg = self.last_pg.as_ref();
        let facts = HealthFacts {
            role: self.role.to_string(),
            state: self.phase.as_str().to_string(),
            timeline: w.pg.timeline,
            wal_position: w.pg.wal_position,
            received_lsn: w.pg.received_lsn,
            replayed_lsn: w.pg.replayed_lsn,
            replication_connections: pg
                .map(|p| {
                    p.replication
                        .iter()
                        .filter(|r| r.state == "streaming")
                        .count() as u32
                })
                .unwrap_or(0),
            lag_bytes: w
                .cluster
                .as_ref()
                .and_then(|c| c.status.optime)
                .zip(w.pg.wal_position)
                .filter(|_| w.pg.is_replica())
                .map(|(o, p)| o.saturating_sub(p)),
            seconds_in_state: self.phase_seen.1.elapsed().as_secs(),
        };
        // SQL probes block for up to their timeout: off the async threads.
        let verdict = tokio::task::spawn_blocking(move || set.health(&facts))
            .await
            .unwrap_or_else(|e| Health::Degraded(format!("the health check panicked: {e}")));
        if verdict != Health::Healthy {
            tracing::warn!(?verdict, "policy health verdict");
        }
        verdict
    }

    /// Hand an event to the policies' `on-event` hooks, in order, on their own thread (a
    /// policy never runs on the async workers, and an event never delays the loop).
    fn event(&self, e: crate::policy::Event) {
        if let Some(set) = &self.policies {
            let _ = self.events.send((set.clone(), e));
        }
    }

    /// `member-joined` / `member-left` for member keys that appeared or vanished.
    fn membership_events(&self, old: &Cluster, new: &Cluster) {
        for m in &new.members {
            if old.member(&m.name).is_none() {
                self.event(crate::policy::Event::MemberJoined(m.name.clone()));
            }
        }
        for m in &old.members {
            if new.member(&m.name).is_none() {
                self.event(crate::policy::Event::MemberLeft(m.name.clone()));
            }
        }
    }

    /// Ask every other member for its status, in parallel, with a short timeout.
    async fn poll_peers(&self, c: &Cluster) -> BTreeMap<String, Option<PeerState>> {
        let mut set = tokio::task::JoinSet::new();
        for m in &c.members {
            if m.name == self.cfg.name {
                continue;
            }
            let Some(url) = m.data.api_url.clone() else {
                // A member key without an address (not a Regent or Patroni node): unreachable.
                set.spawn(std::future::ready((m.name.clone(), None)));
                continue;
            };
            let http = self.http.clone();
            let name = m.name.clone();
            set.spawn(async move {
                let r = api::fetch_peer_status(&http, &url, Duration::from_millis(1000)).await;
                (name, r.ok())
            });
        }
        let mut out = BTreeMap::new();
        while let Some(res) = set.join_next().await {
            if let Ok((name, st)) = res {
                out.insert(
                    name,
                    st.map(|p| PeerState {
                        role: p.role,
                        state: p.state,
                        in_recovery: p.in_recovery,
                        wal_position: p.wal_position,
                        received_lsn: p.received_lsn,
                        replayed_lsn: p.replayed_lsn,
                        timeline: p.timeline,
                        nofailover: p.nofailover,
                        failover_priority: p.failover_priority,
                        tags: p
                            .tags
                            .iter()
                            .map(|(k, v)| (k.clone(), json_scalar(v)))
                            .collect(),
                        healthy: p.healthy,
                    }),
                );
            }
        }
        out
    }

    /// Arm the guard with our deadline while PostgreSQL may be a primary under our lock;
    /// disarm it once PostgreSQL is certainly not a primary.
    fn update_guard(&self, w: &World, actions: &[Action]) {
        let owner = std::process::id() as i32;
        let promoting = actions.iter().any(|a| {
            matches!(
                a,
                Action::Promote | Action::StartPrimary | Action::Bootstrap
            )
        });
        let st = if w.settings.paused {
            // Maintenance mode: the operator is in charge, nothing is fenced automatically.
            Some(GuardState::Disarmed { owner })
        } else if w.holds_lock() && (w.pg.is_primary() || promoting) {
            w.write_deadline_ms.map(|d| GuardState::Armed {
                deadline_ms: d,
                owner,
            })
        } else if !w.pg.is_primary() && !promoting {
            Some(GuardState::Disarmed { owner })
        } else {
            // Primary without the lock (about to demote) or re-attaching: leave the last
            // deadline in force.
            None
        };
        if let Some(st) = st
            && self.guard.read() != Some(st)
            && let Err(e) = self.guard.write(st)
        {
            tracing::error!(error = %e, "cannot write the fencing guard state");
        }
    }

    fn arm_guard(&self) {
        if let Some(d) = self.write_deadline_ms {
            let _ = self.guard.write(GuardState::Armed {
                deadline_ms: d,
                owner: std::process::id() as i32,
            });
        }
    }

    fn upstream_for(&self, w: &World, leader: &str) -> Result<Upstream, SupervisorError> {
        upstream_in(w.cluster.as_ref(), leader)
    }

    /// How long one loop waits for PostgreSQL to accept connections after starting it; a
    /// longer start goes on in the background while the loop keeps renewing the lease.
    fn start_patience(&self) -> Duration {
        Duration::from_secs(self.dynamic.loop_wait.clamp(2, 10))
    }

    async fn act(&mut self, action: &Action, w: &World) -> Result<bool, SupervisorError> {
        match action {
            Action::RenewLease => {
                if w.holds_lock() && w.pg.is_primary() {
                    self.leader_duties(w).await?;
                }
                Ok(false)
            }
            Action::AcquireLeader => {
                if self.dcs.acquire_leader(&self.cfg.name).await? {
                    tracing::info!("acquired the leader lock");
                    crate::metrics::failover(
                        if w.cluster
                            .as_ref()
                            .and_then(|c| c.failover.as_ref())
                            .is_some_and(|(f, _)| f.member.as_deref() == Some(&self.cfg.name))
                        {
                            "manual_failover"
                        } else if w.pg.is_primary() {
                            "paused_takeover"
                        } else {
                            "leader_lost"
                        },
                    );
                    self.event(crate::policy::Event::FailoverCompleted(
                        self.cfg.name.clone(),
                    ));
                    if w.cluster
                        .as_ref()
                        .and_then(|c| c.failover.as_ref())
                        .is_some_and(|(f, _)| !f.is_empty())
                    {
                        let _ = self.dcs.clear_failover().await;
                    }
                    Ok(true)
                } else {
                    tracing::info!("another node acquired the leader lock first");
                    Ok(true)
                }
            }
            Action::ReattachLeader => {
                let ok = self.dcs.reattach_leader(&self.cfg.name).await?;
                tracing::info!(ok, "re-attached the leader key to this process's lease");
                Ok(true)
            }
            Action::ReleaseLeader => {
                self.dcs.release_leader(&self.cfg.name).await?;
                Ok(true)
            }
            Action::Bootstrap => self.bootstrap().await,
            Action::CloneFrom { leader } => {
                let up = self.upstream_for(w, leader)?;
                self.phase = PgPhase::CreatingReplica;
                self.role = "replica";
                let _ = self.touch_member().await;
                tracing::info!(from = %leader, "cloning with pg_basebackup");
                busy(&self.view_tx, "creating replica", self.pg.basebackup(&up)).await?;
                self.sysid = None;
                self.start_replica(Some(&up)).await?;
                Ok(true)
            }
            Action::Reclone { leader } => {
                let up = self.upstream_for(w, leader)?;
                self.pg
                    .stop(StopMode::Fast, Duration::from_secs(30))
                    .await?;
                self.pg.move_aside()?;
                self.rewind_failed = false;
                self.sysid = None;
                self.phase = PgPhase::CreatingReplica;
                busy(&self.view_tx, "creating replica", self.pg.basebackup(&up)).await?;
                self.start_replica(Some(&up)).await?;
                Ok(true)
            }
            Action::StartPrimary => {
                self.pg.set_former_primary(false)?;
                self.phase = PgPhase::Starting;
                self.pg.preset_sync_standbys(&self.sync_at_start(w));
                self.pg.configure(false, None)?;
                self.pg.start(self.start_patience()).await?;
                self.role = "primary";
                Ok(true)
            }
            Action::StartReplica { leader } => {
                let up = match leader {
                    Some(l) => Some(self.upstream_for(w, l)?),
                    None => None,
                };
                if matches!(
                    w.pg.data_dir,
                    DataDir::Initialized {
                        was_primary: true,
                        ..
                    }
                ) {
                    // Read-only on a primary's data: it must be rewound before it follows
                    // anybody else (it may hold WAL the next leader never had).
                    self.pg.set_former_primary(true)?;
                }
                match self.start_replica(up.as_ref()).await {
                    Ok(()) => self.replica_start_failures = 0,
                    Err(e) => {
                        self.replica_start_failures += 1;
                        if self.replica_start_failures >= 2 && up.is_some() {
                            // A data directory that does not start as this leader's replica
                            // (e.g. forked off its timeline) gets rewound next.
                            tracing::warn!(
                                "PostgreSQL failed to start as a replica twice: rewinding it next"
                            );
                            self.pg.set_former_primary(true)?;
                        }
                        return Err(e);
                    }
                }
                Ok(true)
            }
            Action::Rewind { leader } => {
                let up = self.upstream_for(w, leader)?;
                tracing::info!(from = %leader, "rewinding the former primary with pg_rewind");
                // A postmaster still starting up (crash recovery) must be down for pg_rewind.
                self.pg
                    .stop(StopMode::Fast, Duration::from_secs(30))
                    .await?;
                match busy(&self.view_tx, "stopped", self.pg.rewind(&up)).await {
                    Ok(()) => {
                        self.pg.set_former_primary(false)?;
                        self.replica_start_failures = 0;
                        self.sysid = None;
                        self.start_replica(Some(&up)).await?;
                        Ok(true)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "pg_rewind failed: the data directory will be moved aside and re-cloned");
                        self.rewind_failed = true;
                        Ok(true)
                    }
                }
            }
            Action::Promote => {
                self.arm_guard();
                tracing::info!("promoting PostgreSQL");
                self.pg.promote().await?;
                self.role = "primary";
                // In strict mode, commits wait from the first moment, not from the next loop.
                if let Err(e) = self.pg.set_sync_standbys(&self.sync_at_start(w)) {
                    tracing::warn!(error = %e, "could not set synchronous_standby_names after the promotion");
                }
                self.event(crate::policy::Event::RoleChanged {
                    from: crate::policy::Role::Replica,
                    to: crate::policy::Role::Primary,
                });
                if let Err(e) = self.pg.checkpoint().await {
                    tracing::warn!(error = %e, "post-promote checkpoint failed");
                }
                if let Err(e) = self.write_history(w).await {
                    tracing::warn!(error = %e, "could not update /history");
                }
                Ok(true)
            }
            Action::Demote { mode } => {
                let (stop, why) = match mode {
                    DemoteMode::Immediate => (StopMode::Immediate, "lost the leader lock"),
                    DemoteMode::Offline => {
                        (StopMode::Fast, "DCS unreachable past the lease deadline")
                    }
                };
                tracing::warn!(reason = why, "demoting: stopping PostgreSQL");
                self.phase = PgPhase::Stopping;
                self.pg.stop(stop, Duration::from_secs(5)).await?;
                self.phase = PgPhase::Stopped;
                self.event(crate::policy::Event::Stopped(crate::policy::Role::Primary));
                self.role = "demoted";
                self.sysid = None;
                self.event(crate::policy::Event::RoleChanged {
                    from: crate::policy::Role::Primary,
                    to: crate::policy::Role::Replica,
                });
                let _ = self.guard.write(GuardState::Disarmed {
                    owner: std::process::id() as i32,
                });
                Ok(true)
            }
            Action::Follow { leader } => {
                let up = self.upstream_for(w, leader)?;
                self.pg.configure(true, Some(&up))?;
                self.pg.reload()?;
                tracing::info!(leader = %leader, "now following");
                Ok(false)
            }
            Action::WriteInitialize { sysid } => {
                self.dcs.write_initialize(sysid).await?;
                Ok(false)
            }
            Action::HandOver { to } => self.hand_over(w, to).await,
            Action::ClearFailover => {
                self.dcs.clear_failover().await?;
                Ok(false)
            }
            Action::Fatal(m) => Err(SupervisorError::Fatal(m.clone())),
        }
    }

    async fn start_replica(&mut self, up: Option<&Upstream>) -> Result<(), SupervisorError> {
        self.phase = PgPhase::Starting;
        self.pg.configure(true, up)?;
        if up.is_some() {
            self.register_member().await;
        }
        self.pg.start(self.start_patience()).await?;
        self.role = "replica";
        Ok(())
    }

    /// Make our member key live before a replica start blocks this loop. The leader keeps our
    /// replication slot only while that key exists, and the key dies with our lease (a partition
    /// longer than ttl, say). A replica that must stream to become consistent (after pg_rewind)
    /// would otherwise wait in `start` for a slot that appears only once the loop runs again.
    async fn register_member(&mut self) {
        if let Err(e) = self.dcs.refresh_lease(self.dynamic.ttl).await {
            tracing::warn!(error = %e, "could not renew the etcd lease before starting the replica");
        }
        if let Err(e) = self.touch_member().await {
            tracing::warn!(error = %e, "could not publish the member key before starting the replica");
        }
    }

    /// The leader's per-loop work: publish `/status`, keep member slots.
    async fn leader_duties(&mut self, w: &World) -> Result<(), SupervisorError> {
        let Some(c) = &w.cluster else { return Ok(()) };
        let mut slots = BTreeMap::new();
        if self.dynamic.postgresql.use_slots {
            let others: Vec<String> = c
                .members
                .iter()
                .filter(|m| m.name != self.cfg.name)
                .map(|m| m.name.clone())
                .collect();
            match self.pg.sync_slots(&others).await {
                Ok(s) => slots = s,
                Err(e) => tracing::warn!(error = %e, "replication slot maintenance failed"),
            }
        }
        let status = Status {
            optime: w.pg.wal_position,
            slots,
            ..Status::default()
        };
        if c.status != status {
            self.dcs.write_status(&status).await?;
        }
        self.manage_sync(c).await
    }

    /// What PostgreSQL waits for from the moment it runs as primary ([`sync::at_start`]).
    fn sync_at_start(&self, w: &World) -> sync::Standbys {
        let key = w
            .cluster
            .as_ref()
            .and_then(|c| c.sync.as_ref())
            .map(|(s, _)| s);
        sync::at_start(
            &self.cfg.name,
            self.dynamic.synchronous_mode,
            self.dynamic.synchronous_mode_strict,
            key,
        )
    }

    /// Synchronous mode on the leader: carry out [`ha::sync::plan`], which keeps
    /// `synchronous_standby_names` and the `sync` key consistent (the key never names a standby
    /// PostgreSQL is not waiting for).
    async fn manage_sync(&mut self, c: &Cluster) -> Result<(), SupervisorError> {
        let (mut key, mut rev) = match &c.sync {
            Some((s, r)) => (Some(s.clone()), *r),
            None => (None, 0),
        };
        let standbys: Vec<sync::Standby> = self
            .last_pg
            .as_ref()
            .map(|p| {
                p.replication
                    .iter()
                    .map(|r| sync::Standby {
                        name: r.application_name.clone(),
                        streaming: r.state == "streaming",
                        sync: r.sync_state == "sync",
                        flush_lsn: r.flush_lsn.unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let names_with = |tag: &str, set: bool| -> Vec<String> {
            c.members
                .iter()
                .filter(|m| tag_bool(&m.data.tags, tag) == set)
                .map(|m| m.name.clone())
                .collect()
        };
        let eligible = names_with("nosync", false);
        let no_failover = names_with("nofailover", true);
        // Read after the walsenders when one reports `sync` (what publishing needs); else the
        // loop's earlier reading, which is enough for `maximum_lag_on_syncnode`.
        let primary_flush = self
            .last_pg
            .as_ref()
            .and_then(|p| p.flush_lsn_after_walsenders.or(p.flush_lsn));
        // A key write (a take-over or a shrink) is followed at once by the setting change it
        // prepares, so a standby that left stops holding up commits within this loop.
        for _ in 0..3 {
            let plan = sync::plan(&sync::SyncInputs {
                me: &self.cfg.name,
                mode: self.dynamic.synchronous_mode,
                node_count: usize::try_from(self.dynamic.synchronous_node_count)
                    .unwrap_or(usize::MAX),
                strict: self.dynamic.synchronous_mode_strict,
                standbys: &standbys,
                eligible: &eligible,
                no_failover: &no_failover,
                max_lag: u64::try_from(self.dynamic.maximum_lag_on_syncnode).ok(),
                key: key.as_ref(),
                primary_flush,
                catching_up: &self.sync_catching_up,
            });
            if !matches!(plan, sync::SyncPlan::Apply { .. }) {
                self.sync_catching_up.clear();
            }
            match plan {
                sync::SyncPlan::Off { delete_key } => {
                    self.pg.set_sync_standbys(&sync::Standbys::Nobody)?;
                    if delete_key {
                        self.dcs.delete_sync().await?;
                    }
                }
                sync::SyncPlan::WriteKey(st) => match self.dcs.write_sync(&st, Some(rev)).await? {
                    Some(new) => {
                        (key, rev) = (Some(st), new);
                        continue;
                    }
                    None => tracing::warn!("the sync key changed under us; retrying next loop"),
                },
                sync::SyncPlan::Apply {
                    standbys,
                    publish,
                    catching_up,
                } => {
                    self.sync_catching_up = catching_up;
                    self.pg.set_sync_standbys(&standbys)?;
                    if let Some(st) = publish
                        && self.dcs.write_sync(&st, Some(rev)).await?.is_some()
                    {
                        let names = st.sync_standby.unwrap_or_default();
                        tracing::info!(standbys = %names, "published the synchronous standbys");
                    }
                }
            }
            break;
        }
        Ok(())
    }

    async fn write_history(&self, w: &World) -> Result<(), SupervisorError> {
        let st = self.pg.query_state().await?;
        let Some(tl) = st.timeline else { return Ok(()) };
        if tl <= 1 {
            return Ok(());
        }
        let c = self.pg.connect().await?;
        let file = format!("pg_wal/{:08X}.history", tl);
        let text: String = c
            .query_one("SELECT pg_read_file($1)", &[&file])
            .await
            .map(|r| r.get(0))
            .unwrap_or_default();
        let mut history = w
            .cluster
            .as_ref()
            .map(|c| c.history.clone())
            .unwrap_or_default();
        history.retain(|h| h.timeline < tl - 1);
        let last = text
            .lines()
            .rfind(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| l.split('\t').map(str::to_string).collect::<Vec<_>>());
        let (lsn, reason) = match last {
            Some(parts) => (
                parts
                    .get(1)
                    .and_then(|s| crate::postgres::parse_lsn(s))
                    .unwrap_or(0),
                parts
                    .get(2)
                    .cloned()
                    .unwrap_or_else(|| "no recovery target specified".into()),
            ),
            None => (0, "no recovery target specified".into()),
        };
        history.push(HistoryLine {
            timeline: tl - 1,
            lsn,
            reason,
            timestamp: Some(iso_now()),
            new_leader: Some(self.cfg.name.clone()),
        });
        self.dcs.write_history(&history).await?;
        Ok(())
    }

    /// Race for `initialize`; the winner runs initdb, starts, and takes the leader key.
    async fn bootstrap(&mut self) -> Result<bool, SupervisorError> {
        if !self.dcs.race_initialize().await? {
            tracing::info!("another node is bootstrapping the cluster");
            return Ok(false);
        }
        tracing::info!("won the bootstrap race: initializing a new cluster");
        self.phase = PgPhase::Initializing;
        self.role = "uninitialized";
        let res = self.bootstrap_inner().await;
        if let Err(e) = &res {
            tracing::error!(error = %e, "bootstrap failed: releasing the initialize key");
            let _ = self
                .pg
                .stop(StopMode::Immediate, Duration::from_secs(5))
                .await;
            let _ = self.dcs.delete_initialize().await;
            if !matches!(self.pg.data_dir_state().await, DataDir::Empty) {
                let _ = self.pg.move_aside();
            }
            return Err(SupervisorError::Fatal(format!(
                "failed to bootstrap the cluster: {e}"
            )));
        }
        Ok(true)
    }

    async fn bootstrap_inner(&mut self) -> Result<(), SupervisorError> {
        busy(&self.view_tx, "initializing new cluster", self.pg.initdb()).await?;
        self.pg.configure(false, None)?;
        if !self.pg.start(Duration::from_secs(120)).await? {
            return Err(SupervisorError::Fatal(
                "the new cluster did not accept connections within 120 s".into(),
            ));
        }
        self.pg.create_roles().await?;
        // initdb may have outlasted the lease (a slow disk, a busy machine): renew (or replace)
        // it before taking the leader key with it.
        let (id, sent) = self.dcs.refresh_lease(self.dynamic.ttl).await?;
        self.our_lease = Some(id);
        self.write_deadline_ms =
            Some(instant_to_mono_ms(sent) + self.ttl_ms() - safety_margin_ms(self.ttl_ms()));
        if !self.dcs.acquire_leader(&self.cfg.name).await? {
            return Err(SupervisorError::Fatal(
                "the leader key was taken during bootstrap".into(),
            ));
        }
        self.arm_guard();
        let cd = self.pg.controldata().await?;
        let sysid = cd
            .get("Database system identifier")
            .cloned()
            .unwrap_or_default();
        self.dcs.write_initialize(&sysid).await?;
        let dynamic = serde_json::to_value(&self.dynamic)
            .map_err(|e| SupervisorError::Io(format!("encode dynamic config: {e}")))?;
        self.dcs.seed_config(&dynamic).await?;
        self.sysid = Some(sysid.clone());
        self.role = "primary";
        tracing::info!(%sysid, "bootstrapped a new cluster");
        crate::metrics::failover("bootstrap");
        Ok(())
    }

    fn member_data(&self) -> MemberData {
        let pg = self.last_pg.as_ref();
        let mut tags = Map::new();
        let t = &self.cfg.tags;
        if t.nofailover {
            tags.insert("nofailover".into(), Value::Bool(true));
        }
        if let Some(p) = t.failover_priority {
            tags.insert("failover_priority".into(), Value::from(p));
        }
        if t.noloadbalance {
            tags.insert("noloadbalance".into(), Value::Bool(true));
        }
        if t.nosync || self.leaving_sync {
            tags.insert("nosync".into(), Value::Bool(true));
        }
        for (k, v) in &t.other {
            tags.insert(k.clone(), serde_json::to_value(v).unwrap_or(Value::Null));
        }
        let mut extra = Map::new();
        extra.insert("regent_version".into(), Value::from(VERSION));
        if self.dynamic.pause == Some(true) {
            extra.insert("pause".into(), Value::Bool(true));
        }
        let pending = self.pending_restart();
        if !pending.is_empty() {
            extra.insert("pending_restart".into(), Value::Bool(true));
            extra.insert(
                "pending_restart_reason".into(),
                Value::Object(
                    pending
                        .into_iter()
                        .map(|(k, (old, new))| {
                            (k, serde_json::json!({"old_value": old, "new_value": new}))
                        })
                        .collect(),
                ),
            );
        }
        if let Some(sr) = &self.scheduled_restart {
            extra.insert("scheduled_restart".into(), sr.json());
        }
        MemberData {
            conn_url: Some(format!("postgres://{}/postgres", self.cfg.pg_connect())),
            api_url: Some(self.cfg.api_url()),
            state: Some(self.phase.as_str().into()),
            role: Some(self.role.into()),
            version: Some(PATRONI_COMPAT_VERSION.into()),
            xlog_location: pg.and_then(PgState::wal_position),
            receive_lsn: pg.filter(|p| p.in_recovery).and_then(|p| p.received_lsn),
            replay_lsn: pg.filter(|p| p.in_recovery).and_then(|p| p.replayed_lsn),
            replication_state: pg
                .filter(|p| p.in_recovery)
                .and_then(|p| p.receiver_status.clone()),
            timeline: pg.and_then(|p| p.timeline),
            tags,
            policy: Some(
                self.policies
                    .as_ref()
                    .map(|p| p.digest_summary())
                    .unwrap_or_else(|| self.policy.name()),
            ),
            extra,
        }
    }

    async fn touch_member(&self) -> Result<(), SupervisorError> {
        self.dcs
            .touch_member(&self.cfg.name, &self.member_data())
            .await?;
        Ok(())
    }

    fn publish(&self, w: &World) {
        let pg = self.last_pg.as_ref();
        let mut tags = self.member_data().tags;
        tags.retain(|_, v| !v.is_null());
        let c = w.cluster.as_ref();
        let view = NodeView {
            scope: self.cfg.scope.clone(),
            name: self.cfg.name.clone(),
            version: VERSION.into(),
            state: self.phase.as_str().into(),
            role: self.role.into(),
            holds_lock: w.holds_lock(),
            postmaster_start_time: pg.and_then(|p| p.postmaster_start_time.clone()),
            server_version: pg.map(|p| p.server_version),
            timeline: pg.and_then(|p| p.timeline),
            wal_flush_lsn: pg.filter(|p| !p.in_recovery).and_then(|p| p.flush_lsn),
            received_lsn: pg.filter(|p| p.in_recovery).and_then(|p| p.received_lsn),
            replayed_lsn: pg.filter(|p| p.in_recovery).and_then(|p| p.replayed_lsn),
            replayed_timestamp: pg.and_then(|p| p.replayed_timestamp.clone()),
            replay_paused: pg.is_some_and(|p| p.replay_paused),
            replication_state: pg.filter(|p| p.in_recovery).map(|p| {
                if p.receiver_status.as_deref() == Some("streaming") {
                    "streaming".to_string()
                } else {
                    "in archive recovery".to_string()
                }
            }),
            replication: pg
                .map(|p| {
                    p.replication
                        .iter()
                        .map(|r| api::ReplicationRow {
                            usename: r.usename.clone(),
                            application_name: r.application_name.clone(),
                            client_addr: r.client_addr.clone(),
                            state: r.state.clone(),
                            sync_state: r.sync_state.clone(),
                            sync_priority: r.sync_priority,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            cluster_unlocked: c.is_none_or(|c| c.leader.is_none()),
            paused: self.dynamic.pause.unwrap_or(false),
            dcs_last_seen: self.dcs_last_seen,
            dcs_reachable: c.is_some(),
            tags,
            system_identifier: self.sysid.clone(),
            leader_optime: c
                .and_then(|c| c.status.optime)
                .max(pg.and_then(|p| p.latest_end_lsn)),
            maximum_lag_on_failover: self.dynamic.maximum_lag_on_failover,
            sync_standby: c
                .and_then(|c| c.sync.as_ref())
                .is_some_and(|(s, _)| s.members().contains(&self.cfg.name)),
            ttl: self.dynamic.ttl,
            loop_wait: self.dynamic.loop_wait,
            last_loop: Some(std::time::Instant::now()),
            policy: Some({
                let mut info = self
                    .policies
                    .as_ref()
                    .map(|p| p.info())
                    .unwrap_or_else(|| serde_json::json!({"name": self.policy.name()}));
                if let Value::Object(m) = &mut info {
                    // Peers read this to leave a failed node out of their elections.
                    m.insert("health".into(), health_json(&w.health));
                }
                info
            }),
            pending_restart: !self.pending_restart().is_empty(),
            pending_restart_reason: {
                let p = self.pending_restart();
                (!p.is_empty()).then(|| {
                    p.into_iter()
                        .map(|(k, (old, new))| {
                            (k, serde_json::json!({"old_value": old, "new_value": new}))
                        })
                        .collect()
                })
            },
            scheduled_restart: self.scheduled_restart.as_ref().map(ScheduledRestart::json),
        };
        self.view_tx.send_replace(view);
    }

    /// SIGTERM: a leader checkpoints, stops PostgreSQL cleanly, waits until a replica has
    /// received the shutdown checkpoint, then deletes the leader key so a replica takes over at
    /// once. Others just stop PostgreSQL.
    async fn shutdown(&mut self) {
        let now = mono_ms();
        let leader = self.role == "primary"
            && self.last_pg.as_ref().is_some_and(|p| !p.in_recovery)
            && self.write_deadline_ms.is_some_and(|d| now < d)
            && self
                .last_cluster
                .as_ref()
                .and_then(|c| c.leader.as_ref())
                .is_some_and(|l| l.name == self.cfg.name && Some(l.lease) == self.our_lease);
        tracing::info!(leader, "shutting down");
        self.event(crate::policy::Event::Stopped(
            crate::policy::Role::from_name(self.role),
        ));
        if leader && let Err(e) = self.pg.checkpoint().await {
            tracing::warn!(error = %e, "checkpoint before shutdown failed");
        }
        if !leader {
            self.leave_sync().await;
        }
        self.phase = PgPhase::Stopping;
        if let Err(e) = self.pg.stop(StopMode::Fast, Duration::from_secs(60)).await {
            tracing::error!(error = %e, "stopping PostgreSQL failed");
        }
        // Peers racing for the lock must not see a stale "running primary" here.
        self.view_tx.send_modify(|v| {
            v.state = PgPhase::Stopped.as_str().into();
            v.holds_lock = false;
            v.wal_flush_lsn = None;
            v.received_lsn = None;
            v.replayed_lsn = None;
            v.replication.clear();
        });
        if leader {
            if let Some(ckpt) = self.wait_shutdown_checkpoint_received().await {
                // Replicas judge their lag against this: the last WAL this primary wrote.
                let _ = self
                    .dcs
                    .write_status(&Status {
                        optime: Some(ckpt),
                        ..Status::default()
                    })
                    .await;
            }
            match self.dcs.release_leader(&self.cfg.name).await {
                Ok(true) => tracing::info!("released the leader key"),
                Ok(false) => tracing::warn!("the leader key was no longer mine"),
                Err(e) => tracing::error!(error = %e, "could not release the leader key"),
            }
        }
        let _ = self.guard.write(GuardState::Disarmed {
            owner: std::process::id() as i32,
        });
        self.phase = PgPhase::Stopped;
        self.last_pg = None;
        let _ = self.touch_member().await;
    }

    /// A synchronous standby about to stop: tag itself `nosync` and wait (up to
    /// 2 × `loop_wait`) until the leader's `sync` key no longer names it, so that commits do
    /// not wait for a standby that is gone until the leader's next loop notices.
    async fn leave_sync(&mut self) {
        let named = |c: &Cluster, me: &str| {
            c.sync.as_ref().is_some_and(|(s, _)| {
                s.leader.as_deref() != Some(me) && s.members().iter().any(|n| n == me)
            })
        };
        if self.dynamic.synchronous_mode == SyncMode::Off {
            return;
        }
        // Fresh: the leader may have named this node since this node's last loop.
        let named_now = match self.dcs.read_cluster().await {
            Ok(c) => named(&c, &self.cfg.name),
            Err(_) => self
                .last_cluster
                .as_ref()
                .is_some_and(|c| named(c, &self.cfg.name)),
        };
        if !named_now {
            return;
        }
        self.leaving_sync = true;
        if let Err(e) = self.touch_member().await {
            tracing::warn!(error = %e, "could not tag the member key nosync before stopping");
            return;
        }
        tracing::info!(
            "a synchronous standby stopping: waiting for the leader to stop waiting for it"
        );
        let patience = Duration::from_secs(self.dynamic.loop_wait.saturating_mul(2).max(2));
        let deadline = tokio::time::Instant::now() + patience;
        while tokio::time::Instant::now() < deadline {
            match self.dcs.read_cluster().await {
                Ok(c) if !named(&c, &self.cfg.name) => {
                    tracing::info!("no longer a synchronous standby");
                    return;
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "reading the sync key"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::warn!(
            waited_s = patience.as_secs(),
            "the leader still names this node as synchronous standby; stopping anyway"
        );
    }

    /// The shutdown checkpoint of a cleanly stopped server: `Latest checkpoint location`.
    async fn shutdown_checkpoint(&self) -> Option<u64> {
        self.pg.controldata().await.ok().and_then(|cd| {
            cd.get("Latest checkpoint location")
                .and_then(|s| crate::postgres::parse_lsn(s))
        })
    }

    /// Wait (up to 5 s) until some replica has received WAL past our shutdown checkpoint, read
    /// live from the replicas' PostgreSQL, so that releasing the lock loses nothing.
    async fn wait_shutdown_checkpoint_received(&self) -> Option<u64> {
        let ckpt = self.shutdown_checkpoint().await;
        let (Some(ckpt), Some(c)) = (ckpt, self.last_cluster.as_ref()) else {
            return ckpt;
        };
        // Only replicas that streamed from us can receive the checkpoint: with none, release
        // the lock at once.
        let streaming: Vec<&str> = self
            .last_pg
            .iter()
            .flat_map(|p| p.replication.iter())
            .filter(|r| r.state == "streaming")
            .map(|r| r.application_name.as_str())
            .collect();
        let targets: Vec<(String, u16)> = c
            .members
            .iter()
            .filter(|m| m.name != self.cfg.name && streaming.contains(&m.name.as_str()))
            .filter_map(|m| conn_url_host_port(m.data.conn_url.as_deref()?))
            .collect();
        if targets.is_empty() {
            tracing::info!("no replica streamed from this leader: releasing the lock at once");
            return Some(ckpt);
        }
        if !self
            .wait_received(&targets, ckpt, Duration::from_secs(5))
            .await
        {
            tracing::warn!(
                "no replica confirmed the shutdown checkpoint within 5 s; releasing the lock anyway"
            );
        }
        Some(ckpt)
    }

    /// Poll the PostgreSQL servers `targets` until one has received WAL past `lsn`; false when
    /// none has within `timeout`.
    async fn wait_received(&self, targets: &[(String, u16)], lsn: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            for (h, p) in targets {
                if let Ok(Some(got)) = self.pg.remote_received_lsn(h, *p).await
                    && got > lsn
                {
                    tracing::info!(replica = %format!("{h}:{p}"), lsn = %crate::postgres::format_lsn(got), "the replica has received the shutdown checkpoint");
                    return true;
                }
            }
            if tokio::time::Instant::now() >= deadline || targets.is_empty() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Hand the leadership to `to` (see [`Action::HandOver`]). Write unavailability runs from
    /// the fast stop (after a checkpoint, so the shutdown checkpoint is quick) until `to` sees
    /// the leader key on its own lease, which wakes it through its watch, and promotes.
    async fn hand_over(&mut self, w: &World, to: &str) -> Result<bool, SupervisorError> {
        let Some(c) = w.cluster.as_ref() else {
            return Ok(false);
        };
        let target = c.member(to).ok_or_else(|| {
            SupervisorError::Io(format!("hand-over target {to} has no member key"))
        })?;
        let addr = target
            .data
            .conn_url
            .as_deref()
            .and_then(conn_url_host_port)
            .ok_or_else(|| {
                SupervisorError::Io(format!("hand-over target {to} has no usable conn_url"))
            })?;
        let up = upstream_in(Some(c), to)?;
        let request = c.failover.as_ref().is_some_and(|(f, _)| !f.is_empty());
        self.event(crate::policy::Event::FailoverStarted(format!(
            "{} hands over to {to}",
            self.cfg.name
        )));
        let started = std::time::Instant::now();
        // A checkpoint while still writable keeps the shutdown checkpoint (and so the
        // unavailability) short.
        if let Err(e) = self.pg.checkpoint().await {
            tracing::warn!(error = %e, "checkpoint before the hand-over failed");
        }
        let stop_at = std::time::Instant::now();
        self.phase = PgPhase::Stopping;
        self.pg
            .stop(StopMode::Fast, Duration::from_secs(60))
            .await?;
        self.view_tx.send_modify(|v| {
            v.state = PgPhase::Stopped.as_str().into();
            v.holds_lock = false;
            v.wal_flush_lsn = None;
            v.replication.clear();
        });
        self.phase = PgPhase::Stopped;
        let ckpt = self.shutdown_checkpoint().await;
        // Keep our lease (and so the leader key) alive while we wait for the target.
        if let Ok((id, sent)) = self.dcs.refresh_lease(self.dynamic.ttl).await
            && Some(id) == self.our_lease
        {
            let d = instant_to_mono_ms(sent) + self.ttl_ms() - safety_margin_ms(self.ttl_ms());
            self.write_deadline_ms = Some(self.write_deadline_ms.map_or(d, |o| o.max(d)));
            self.arm_guard();
        }
        let confirmed = match ckpt {
            Some(lsn) => {
                self.wait_received(std::slice::from_ref(&addr), lsn, Duration::from_secs(5))
                    .await
            }
            None => false,
        };
        if !confirmed {
            tracing::error!(
                candidate = %to,
                "hand-over aborted: {to} did not confirm the shutdown checkpoint within 5 s; starting again as primary"
            );
            if request {
                let _ = self.dcs.clear_failover().await;
            }
            self.handover_aborted_ms = Some(mono_ms());
            self.phase = PgPhase::Starting;
            self.pg.configure(false, None)?;
            self.pg.start(self.start_patience()).await?;
            return Ok(true);
        }
        if let Some(lsn) = ckpt {
            let _ = self
                .dcs
                .write_status(&Status {
                    optime: Some(lsn),
                    ..Status::default()
                })
                .await;
        }
        let moved = match self
            .dcs
            .transfer_leader(&self.cfg.name, to, target.lease)
            .await
        {
            Ok(ok) => ok,
            Err(e) => {
                tracing::warn!(error = %e, "could not move the leader key onto {to}'s lease; releasing it so that {to} races for it");
                if !request {
                    let _ = self.dcs.request_failover(Some(&self.cfg.name), to).await;
                }
                self.dcs.release_leader(&self.cfg.name).await?
            }
        };
        if moved && request {
            let _ = self.dcs.clear_failover().await;
        }
        crate::metrics::failover(if request {
            "switchover"
        } else {
            "leader_unhealthy"
        });
        tracing::info!(
            candidate = %to,
            writes_stopped_ms = stop_at.elapsed().as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "handed the leadership over to {to}"
        );
        let _ = self.guard.write(GuardState::Disarmed {
            owner: std::process::id() as i32,
        });
        self.role = "replica";
        self.sysid = None;
        self.event(crate::policy::Event::RoleChanged {
            from: crate::policy::Role::Primary,
            to: crate::policy::Role::Replica,
        });
        // A clean shutdown whose last WAL the new leader has received: follow it directly,
        // no rewind needed.
        self.start_replica(Some(&up)).await?;
        Ok(true)
    }
}

/// Run a long action (a clone, initdb, pg_rewind) while keeping the REST view alive: the HA
/// loop is busy, not stuck, so `/liveness` keeps answering 200 and the status document shows
/// what the node is doing.
async fn busy<T>(
    view: &watch::Sender<NodeView>,
    state: &str,
    action: impl std::future::Future<Output = T>,
) -> T {
    view.send_modify(|v| {
        v.state = state.into();
        v.last_loop = Some(std::time::Instant::now());
    });
    tokio::pin!(action);
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = &mut action => return r,
            _ = beat.tick() => view.send_modify(|v| v.last_loop = Some(std::time::Instant::now())),
        }
    }
}

/// Where to stream from when following `leader`: its `conn_url` in the DCS.
fn upstream_in(cluster: Option<&Cluster>, leader: &str) -> Result<Upstream, SupervisorError> {
    let m = cluster
        .and_then(|c| c.member(leader))
        .ok_or_else(|| SupervisorError::Io(format!("leader {leader} has no member key yet")))?;
    let url = m
        .data
        .conn_url
        .as_deref()
        .ok_or_else(|| SupervisorError::Io(format!("member {leader} has no conn_url")))?;
    let (host, port) = conn_url_host_port(url)
        .ok_or_else(|| SupervisorError::Io(format!("member {leader} has a bad conn_url {url}")))?;
    Ok(Upstream {
        name: leader.to_string(),
        host,
        port,
    })
}

/// `host` and `port` of a `postgres://[user@]host:port/db` URL.
fn conn_url_host_port(url: &str) -> Option<(String, u16)> {
    let hostport = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .unwrap_or(url);
    let hostport = hostport.split('/').next().unwrap_or(hostport);
    let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
    split_host_port(hostport)
}

/// The next command from the API, or never when there is no channel (or it closed).
async fn recv_command(
    rx: &mut Option<crate::control::ControlReceiver>,
) -> Option<crate::control::Envelope> {
    match rx {
        Some(rx) => match rx.recv().await {
            Some(e) => Some(e),
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// The thread that calls the policies' `on-event` hooks, one event after the other.
fn event_thread()
-> Result<std::sync::mpsc::Sender<(Arc<PolicySet>, crate::policy::Event)>, SupervisorError> {
    let (tx, rx) = std::sync::mpsc::channel::<(Arc<PolicySet>, crate::policy::Event)>();
    std::thread::Builder::new()
        .name("regent-policy-events".into())
        .spawn(move || {
            for (set, e) in rx {
                set.on_event(&e);
            }
        })
        .map_err(|e| SupervisorError::Io(format!("cannot start the policy event thread: {e}")))?;
    Ok(tx)
}

/// Give the policies granted `sql-probe` their connection to the local PostgreSQL.
fn attach_prober(set: Option<&PolicySet>, pg: &Postgres) -> Result<(), SupervisorError> {
    if let Some(set) = set {
        let prober = crate::postgres::Prober::start(pg.probe_target())
            .map_err(|e| SupervisorError::Io(format!("cannot start the SQL probe thread: {e}")))?;
        set.set_sql_prober(Arc::new(prober));
    }
    Ok(())
}

/// Load the configured WebAssembly policies (compiling off the async threads) and watch their
/// directory for hot reloads. No `regent.policies`: the built-in rules.
async fn load_policies(
    cfg: &Config,
) -> Result<
    (
        Arc<dyn Policy>,
        Option<Arc<PolicySet>>,
        Option<crate::policy::WatcherHandle>,
    ),
    SupervisorError,
> {
    let (Some(dir), false) = (
        cfg.regent.policies_dir.clone(),
        cfg.regent.policies.is_empty(),
    ) else {
        return Ok((Arc::new(DefaultPolicy), None, None));
    };
    let names = cfg.regent.policies.clone();
    let cache = cfg.run_dir().join(format!(".{}-policy-cache", cfg.name));
    let _ = std::fs::create_dir_all(&cache);
    let set = tokio::task::spawn_blocking(move || PolicySet::load(&dir, &names, Some(&cache)))
        .await
        .map_err(|e| SupervisorError::Fatal(format!("policy loader panicked: {e}")))?
        .map_err(|e| SupervisorError::Fatal(format!("regent.policies: {e}")))?;
    let set = Arc::new(set);
    let watcher = set
        .watch()
        .map_err(|e| SupervisorError::Fatal(format!("regent.policies_dir: {e}")))?;
    tracing::info!(policies = %set.digest_summary(), "failover policies loaded");
    let policy: Arc<dyn Policy> = set.clone();
    Ok((policy, Some(set), Some(watcher)))
}

fn pg_settings(
    cfg: &Config,
    dynamic: &DynamicConfig,
    bin_dir: std::path::PathBuf,
    listen_host: String,
    port: u16,
) -> PgSettings {
    let parameters = merged_parameters(cfg, dynamic);
    let a = &cfg.postgresql.authentication;
    let creds = |c: &crate::config::Credentials| crate::postgres::Creds {
        user: c.username.clone(),
        password: c.password.clone(),
    };
    let mut pg_hba = cfg.postgresql.pg_hba.clone();
    if pg_hba.is_empty() {
        pg_hba = dynamic.postgresql.pg_hba.clone();
    }
    if pg_hba.is_empty() {
        pg_hba = cfg.bootstrap.pg_hba.clone();
    }
    PgSettings {
        name: cfg.name.clone(),
        scope: cfg.scope.clone(),
        bin_dir,
        data_dir: cfg.postgresql.data_dir.clone(),
        run_dir: cfg.run_dir(),
        listen_host,
        port,
        superuser: creds(&a.superuser),
        replication: creds(&a.replication),
        rewind: a.rewind.as_ref().map(creds),
        parameters,
        pg_hba,
        initdb: cfg
            .bootstrap
            .initdb
            .iter()
            .flat_map(|o| match o {
                crate::config::InitdbOption::Flag(f) => vec![format!("--{f}")],
                crate::config::InitdbOption::Value(m) => m
                    .iter()
                    .map(|(k, v)| format!("--{k}={}", yaml_scalar(v)))
                    .collect(),
            })
            .collect(),
        os_user: cfg.postgresql.os_user.clone(),
    }
}

/// PostgreSQL parameters: Regent's defaults, then the cluster's (`/config`), then the local
/// ones.
fn merged_parameters(cfg: &Config, dynamic: &DynamicConfig) -> BTreeMap<String, String> {
    let mut parameters: BTreeMap<String, String> = [
        ("wal_level", "replica"),
        ("hot_standby", "on"),
        ("max_connections", "100"),
        ("max_wal_senders", "10"),
        ("max_replication_slots", "10"),
        ("wal_log_hints", "on"),
        ("wal_keep_size", "128MB"),
        // A replica whose upstream just changed (a failover) reconnects after 1 s, not 5.
        ("wal_retrieve_retry_interval", "1s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in dynamic
        .postgresql
        .parameters
        .iter()
        .chain(cfg.postgresql.parameters.iter())
    {
        parameters.insert(k.clone(), yaml_scalar(v));
    }
    parameters
}

/// The keys a reload cannot change (they identify the node or are bound at start).
/// The answer to a reload whose new configuration cannot be used: 400, nothing changed.
fn reload_refused(e: impl std::fmt::Display) -> crate::control::Reply {
    tracing::error!(error = %e, "reload refused; the running configuration is unchanged");
    crate::control::Reply::new(
        400,
        format!("reload failed, the running configuration is unchanged: {e}"),
    )
}

fn fixed_keys_changed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.scope != new.scope {
        out.push("scope");
    }
    if old.name != new.name {
        out.push("name");
    }
    if old.dcs_prefix() != new.dcs_prefix() {
        out.push("namespace");
    }
    if old.etcd_endpoints() != new.etcd_endpoints() {
        out.push("etcd3.hosts");
    }
    if old.restapi.listen != new.restapi.listen {
        out.push("restapi.listen");
    }
    // A new certificate or key is loaded; switching between HTTP and HTTPS is not.
    if old.restapi.certfile.is_some() != new.restapi.certfile.is_some() {
        out.push("restapi.certfile (set or unset)");
    }
    if old.postgresql.listen != new.postgresql.listen {
        out.push("postgresql.listen");
    }
    if old.postgresql.data_dir != new.postgresql.data_dir {
        out.push("postgresql.data_dir");
    }
    if old.postgresql.bin_dir != new.postgresql.bin_dir {
        out.push("postgresql.bin_dir");
    }
    if old.regent.run_dir != new.regent.run_dir {
        out.push("regent.run_dir");
    }
    out
}

fn yaml_scalar(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Bool(b) => if *b { "on" } else { "off" }.to_string(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::Null => String::new(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// The policy verdict as published under `policy.health` in the status document.
pub fn health_json(h: &Health) -> Value {
    match h {
        Health::Healthy => serde_json::json!({"verdict": "healthy"}),
        Health::Degraded(r) => serde_json::json!({"verdict": "degraded", "reason": r}),
        Health::Failed(r) => serde_json::json!({"verdict": "failed", "reason": r}),
    }
}

fn json_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// ISO-8601 UTC timestamp with offset, as Patroni writes into `/history`.
pub fn iso_now() -> String {
    crate::time::Timestamp::from_unix(unix_now() as i64).to_rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_bounds() {
        assert_eq!(safety_margin_ms(10_000), 2000);
        assert_eq!(safety_margin_ms(5_000), 1000);
        assert_eq!(safety_margin_ms(60_000), 5000);
    }
}
