//! The supervisor: the thin async shell around the decision core. Each loop it observes the
//! world (lease renewal, the DCS, the local PostgreSQL, peers during an election), asks
//! [`crate::ha::decide`] what to do, carries the actions out, publishes its member key and the
//! REST view, and sleeps until `loop_wait` passes or the DCS watch reports a change.

use crate::api::{self, NodeView};
use crate::config::{Config, DynamicConfig, SyncMode, split_host_port};
use crate::dcs::{Cluster, EtcdDcs, HistoryLine, MemberData, Status, SyncState, tag_bool};
use crate::fence::{GuardFiles, GuardState, instant_to_mono_ms, mono_ms};
use crate::ha::policy::{DefaultPolicy, Health, HealthFacts, Policy};
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
        })
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
        let mut world = self.observe().await;
        world.health = self.judge_health(&world);
        let decision = decide(&world, self.policy.as_ref());
        tracing::info!("{}", decision.summary);
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
        if self.last_cluster.is_some() {
            let _ = self.touch_member().await;
        }
        self.publish(&world);
        Ok(rerun)
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
                if let Some((v, _)) = &c.config
                    && let Ok(d) = serde_json::from_value::<DynamicConfig>(v.clone())
                {
                    self.dynamic = d;
                }
                Some(c)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the cluster from etcd");
                None
            }
        };
        self.last_cluster = cluster.clone();
        if let Some(c) = &cluster {
            self.known_lock_lease = c
                .leader
                .as_ref()
                .filter(|l| l.name == self.cfg.name)
                .map(|l| l.lease);
        }
        let now = mono_ms();
        if cluster.as_ref().is_some_and(|c| c.leader.is_none()) {
            self.unlocked_since_ms.get_or_insert(now);
        } else {
            self.unlocked_since_ms = None;
        }

        let running = self.pg.is_running().await;
        let mut state = None;
        if running {
            match self.pg.query_state().await {
                Ok(s) => {
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

        let pg = PgView {
            data_dir,
            running: running && state.is_some(),
            in_recovery: state.as_ref().map(|s| s.in_recovery),
            timeline: state.as_ref().and_then(|s| s.timeline),
            wal_position: state.as_ref().and_then(PgState::wal_position),
            upstream: self.pg.configured_upstream(),
            rewind_failed: self.rewind_failed,
        };
        let peers = match &cluster {
            Some(c) if c.leader.is_none() && pg.is_replica() => self.poll_peers(c).await,
            _ => BTreeMap::new(),
        };
        World {
            now_ms: now,
            me: self.cfg.name.clone(),
            cluster,
            our_lease: self.our_lease,
            write_deadline_ms: self.write_deadline_ms,
            pg,
            peers,
            settings: self.settings(),
            unlocked_since_ms: self.unlocked_since_ms,
            known_lock_lease: self.known_lock_lease,
            health: Health::Healthy,
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
        }
    }

    /// Carry out one command from the REST API between two loops.
    async fn command(&mut self, cmd: crate::control::Command) -> crate::control::Reply {
        use crate::control::{Command, Reply};
        match cmd {
            Command::Wake => Reply::new(200, "OK"),
            other => Reply::new(503, format!("not implemented yet: {other:?}")),
        }
    }

    /// The policies' verdict on the local node (the built-in rules: healthy while running).
    fn judge_health(&self, w: &World) -> Health {
        let Some(set) = &self.policies else {
            return Health::Healthy;
        };
        set.set_local_node(&self.cfg.name, w.holds_lock());
        let pg = self.last_pg.as_ref();
        let facts = HealthFacts {
            role: self.role.to_string(),
            state: self.phase.as_str().to_string(),
            timeline: w.pg.timeline,
            wal_position: w.pg.wal_position,
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
            seconds_in_state: 0,
        };
        let verdict = set.health(&facts);
        if verdict != Health::Healthy {
            tracing::warn!(?verdict, "policy health verdict");
        }
        verdict
    }

    fn event(&self, e: crate::policy::Event) {
        if let Some(set) = &self.policies {
            set.on_event(&e);
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
                        timeline: p.timeline,
                        nofailover: p.nofailover,
                        failover_priority: p.failover_priority,
                        tags: p
                            .tags
                            .iter()
                            .map(|(k, v)| (k.clone(), json_scalar(v)))
                            .collect(),
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
        let st = if w.holds_lock() && (w.pg.is_primary() || promoting) {
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
        let m = w
            .cluster
            .as_ref()
            .and_then(|c| c.member(leader))
            .ok_or_else(|| SupervisorError::Io(format!("leader {leader} has no member key yet")))?;
        let url = m
            .data
            .conn_url
            .as_deref()
            .ok_or_else(|| SupervisorError::Io(format!("member {leader} has no conn_url")))?;
        let hostport = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .unwrap_or(url);
        let hostport = hostport.split('/').next().unwrap_or(hostport);
        let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
        let (host, port) = split_host_port(hostport).ok_or_else(|| {
            SupervisorError::Io(format!("member {leader} has a bad conn_url {url}"))
        })?;
        Ok(Upstream {
            name: leader.to_string(),
            host,
            port,
        })
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
                self.pg.basebackup(&up).await?;
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
                self.pg.basebackup(&up).await?;
                self.start_replica(Some(&up)).await?;
                Ok(true)
            }
            Action::StartPrimary => {
                self.phase = PgPhase::Starting;
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
                self.start_replica(up.as_ref()).await?;
                Ok(true)
            }
            Action::Rewind { leader } => {
                let up = self.upstream_for(w, leader)?;
                tracing::info!(from = %leader, "rewinding the former primary with pg_rewind");
                // A postmaster still starting up (crash recovery) must be down for pg_rewind.
                self.pg
                    .stop(StopMode::Fast, Duration::from_secs(30))
                    .await?;
                match self.pg.rewind(&up).await {
                    Ok(()) => {
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

    /// Synchronous mode on the leader: pick one streaming member as synchronous standby and
    /// keep `synchronous_standby_names` and the `sync` key consistent. The key never names a
    /// standby that PostgreSQL is not actually waiting for: it shrinks before the setting
    /// changes, and grows only after PostgreSQL reports the standby as `sync`.
    async fn manage_sync(&mut self, c: &Cluster) -> Result<(), SupervisorError> {
        let me = self.cfg.name.clone();
        let (cur, rev) = match &c.sync {
            Some((s, r)) => (Some(s.clone()), *r),
            None => (None, 0),
        };
        if self.dynamic.synchronous_mode == SyncMode::Off {
            self.pg.set_sync_standbys(&[])?;
            if cur.is_some() {
                self.dcs.delete_sync().await?;
            }
            return Ok(());
        }
        let rows = self
            .last_pg
            .as_ref()
            .map(|p| p.replication.clone())
            .unwrap_or_default();
        let mut cands: Vec<(u64, String)> = rows
            .iter()
            .filter(|r| r.state == "streaming" && r.application_name != me)
            .filter(|r| {
                c.member(&r.application_name)
                    .is_some_and(|m| !tag_bool(&m.data.tags, "nosync"))
            })
            .map(|r| (r.flush_lsn.unwrap_or(0), r.application_name.clone()))
            .collect();
        cands.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mine = cur
            .as_ref()
            .is_some_and(|s| s.leader.as_deref() == Some(&me));
        let listed = if mine {
            cur.as_ref().map(SyncState::members).unwrap_or_default()
        } else {
            Vec::new()
        };
        let desired: Vec<String> = listed
            .iter()
            .find(|n| cands.iter().any(|(_, c)| c == *n))
            .cloned()
            .or_else(|| cands.first().map(|(_, n)| n.clone()))
            .into_iter()
            .collect();
        let keep: Vec<String> = listed
            .iter()
            .filter(|n| desired.contains(n))
            .cloned()
            .collect();
        if !mine || keep.len() != listed.len() {
            let st = SyncState {
                leader: Some(me.clone()),
                quorum: Some(0),
                sync_standby: (!keep.is_empty()).then(|| keep.join(",")),
            };
            if !self.dcs.write_sync(&st, Some(rev)).await? {
                tracing::warn!("the sync key changed under us; retrying next loop");
            }
            return Ok(());
        }
        self.pg.set_sync_standbys(&desired)?;
        if let Some(d) = desired.first()
            && !listed.contains(d)
            && rows
                .iter()
                .any(|r| &r.application_name == d && r.sync_state == "sync")
        {
            let st = SyncState {
                leader: Some(me),
                quorum: Some(0),
                sync_standby: Some(d.clone()),
            };
            if self.dcs.write_sync(&st, Some(rev)).await? {
                tracing::info!(standby = %d, "published the synchronous standby");
            }
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
        self.pg.initdb().await?;
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
        if t.nosync {
            tags.insert("nosync".into(), Value::Bool(true));
        }
        for (k, v) in &t.other {
            tags.insert(k.clone(), serde_json::to_value(v).unwrap_or(Value::Null));
        }
        let mut extra = Map::new();
        extra.insert("regent_version".into(), Value::from(VERSION));
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
            policy: Some(
                self.policies
                    .as_ref()
                    .map(|p| p.info())
                    .unwrap_or_else(|| serde_json::json!({"name": self.policy.name()})),
            ),
            ..NodeView::default()
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
        if leader && let Err(e) = self.pg.checkpoint().await {
            tracing::warn!(error = %e, "checkpoint before shutdown failed");
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

    /// Wait (up to 5 s) until some replica has received WAL past our shutdown checkpoint, read
    /// live from the replicas' PostgreSQL, so that releasing the lock loses nothing.
    async fn wait_shutdown_checkpoint_received(&self) -> Option<u64> {
        let ckpt = self.pg.controldata().await.ok().and_then(|cd| {
            cd.get("Latest checkpoint location")
                .and_then(|s| crate::postgres::parse_lsn(s))
        });
        let (Some(ckpt), Some(c)) = (ckpt, self.last_cluster.as_ref()) else {
            return ckpt;
        };
        let targets: Vec<(String, u16)> = c
            .members
            .iter()
            .filter(|m| m.name != self.cfg.name)
            .filter_map(|m| {
                let url = m.data.conn_url.as_deref()?;
                let hp = url.strip_prefix("postgres://").unwrap_or(url);
                split_host_port(hp.split('/').next().unwrap_or(hp))
            })
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            for (h, p) in &targets {
                if let Ok(Some(lsn)) = self.pg.remote_received_lsn(h, *p).await
                    && lsn > ckpt
                {
                    tracing::info!(replica = %format!("{h}:{p}"), "a replica has received the shutdown checkpoint");
                    return Some(ckpt);
                }
            }
            if tokio::time::Instant::now() >= deadline || targets.is_empty() {
                tracing::warn!(
                    "no replica confirmed the shutdown checkpoint within 5 s; releasing the lock anyway"
                );
                return Some(ckpt);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
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
    let mut parameters: BTreeMap<String, String> = [
        ("wal_level", "replica"),
        ("hot_standby", "on"),
        ("max_connections", "100"),
        ("max_wal_senders", "10"),
        ("max_replication_slots", "10"),
        ("wal_log_hints", "on"),
        ("wal_keep_size", "128MB"),
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

fn json_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// ISO-8601 UTC timestamp with offset, as Patroni writes into `/history`.
pub fn iso_now() -> String {
    crate::api::time::Timestamp::from_unix(unix_now() as i64).to_rfc3339()
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
