//! Act: carry out one `ha::Action` on the DCS and PostgreSQL, keep the fencing guard armed
//! with the write deadline while PostgreSQL may be a primary under our lock, and bootstrap a
//! new cluster.
//!
//! May touch: the DCS (leader key, `initialize`, `failover`), PostgreSQL (start, stop, promote,
//! clone, rewind, move a data directory aside), the guard's state file.

use super::{NodeRole, PgPhase, Supervisor, SupervisorError};
use crate::api::LocalSnapshot;
use crate::config::split_host_port;
use crate::dcs::Cluster;
use crate::fence::{GuardState, mono_ms};
use crate::ha::{Action, DataDir, DemoteMode, World};
use crate::postgres::{StopMode, Upstream};
use std::time::Duration;
use tokio::sync::watch;

impl Supervisor {
    /// Carry out one action. `Ok(true)`: run the next loop at once (something changed that
    /// the next decision should see without waiting for `loop_wait`).
    pub(super) async fn act(
        &mut self,
        action: &Action,
        w: &World,
    ) -> Result<bool, SupervisorError> {
        match action {
            Action::KeepLeading => {
                if w.holds_lock() && w.pg.is_primary() {
                    self.leader_duties(w).await?;
                } else if w.holds_lock() && w.pg.is_replica() && w.settings.standby_cluster {
                    self.standby_leader_duties(w).await?;
                }
                Ok(false)
            }
            Action::AcquireLeader { reason } => {
                // Failsafe mode: never race after accepting a leader's POST /failsafe less
                // than ttl ago, and accept none from now on while racing or leading.
                if *reason == crate::ha::AcquireReason::FailsafeRetake {
                    self.failsafe_gate.set_closed(true);
                } else if let Err(leader) = self
                    .failsafe_gate
                    .close_for_race(Duration::from_millis(self.ttl_ms()))
                {
                    tracing::info!(
                        %leader,
                        "not racing: accepted {leader}'s POST /failsafe less than ttl ago"
                    );
                    return Ok(false);
                }
                let acquired = self.dcs.acquire_leader(&self.cfg.name).await;
                if !matches!(acquired, Ok(true)) {
                    self.failsafe_gate.set_closed(false);
                }
                if acquired? {
                    tracing::info!("acquired the leader lock");
                    let e = self.deciding.take();
                    self.election_won(e, w);
                    crate::metrics::failover(reason.failover_label());
                    self.event(crate::plugin::Event::FailoverCompleted(
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
                let Some(from) = w
                    .cluster
                    .as_ref()
                    .and_then(|c| c.leader.as_ref())
                    .map(|l| l.lease)
                else {
                    return Ok(true);
                };
                let ok = self.dcs.reattach_leader(&self.cfg.name, from).await?;
                tracing::info!(ok, "re-attached the leader key to this process's lease");
                Ok(true)
            }
            Action::ReleaseLeader => {
                self.dcs.release_leader(&self.cfg.name).await?;
                Ok(true)
            }
            Action::Bootstrap => {
                // A required watchdog that cannot be armed: no bootstrap (not even the race);
                // the node counts as unable to lead for a while, and another may bootstrap.
                let ttl = self.dynamic.ttl;
                let trial = match self.watchdog.lock() {
                    Ok(mut w) => w.trial(ttl).map_err(|e| e.to_string()),
                    Err(_) => Err("the watchdog's lock is poisoned".into()),
                };
                if let Err(why) = trial {
                    tracing::error!(reason = %why, "watchdog.mode is required but the watchdog could not be armed: not bootstrapping");
                    return Ok(false);
                }
                self.bootstrap().await
            }
            Action::BootstrapStandby => self.bootstrap_standby().await,
            Action::StartStandbyLeader => self.start_standby_leader().await,
            Action::FollowRemote => self.follow_remote(),
            Action::CloneFrom { source } => {
                let up = self.upstream_for(w, source)?;
                self.phase = PgPhase::CreatingReplica;
                self.role = NodeRole::Replica;
                let _ = self.touch_member().await;
                tracing::info!(from = %source, "creating a replica");
                busy(
                    &self.view_tx,
                    "creating replica",
                    self.pg.create_replica(Some(&up)),
                )
                .await?;
                self.sysid = None;
                self.start_replica(Some(&up)).await?;
                Ok(true)
            }
            Action::RestoreReplica => {
                self.phase = PgPhase::CreatingReplica;
                self.role = NodeRole::Replica;
                let _ = self.touch_member().await;
                tracing::info!("creating a replica without a leader (no_leader method)");
                busy(
                    &self.view_tx,
                    "creating replica",
                    self.pg.create_replica(None),
                )
                .await?;
                self.sysid = None;
                self.start_replica(None).await?;
                Ok(true)
            }
            Action::Reclone { leader } => {
                self.mem.rewinding_or_recloning();
                let up = self.upstream_for(w, leader)?;
                self.stop_postgres(StopMode::Fast, Duration::from_secs(30))
                    .await?;
                self.pg.move_aside()?;
                self.mem.rewind_failed = false;
                self.sysid = None;
                self.phase = PgPhase::CreatingReplica;
                busy(
                    &self.view_tx,
                    "creating replica",
                    self.pg.create_replica(Some(&up)),
                )
                .await?;
                self.start_replica(Some(&up)).await?;
                Ok(true)
            }
            Action::StartPrimary => {
                self.mem.quorum_barrier = None;
                self.pg.preset_sync_standbys(&self.sync_at_start(w));
                self.start_primary_or_read_only(self.start_patience())
                    .await?;
                Ok(true)
            }
            Action::StartReplica { upstream } => {
                let up = match upstream {
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
                    Ok(()) => {}
                    Err(e) => {
                        if self.mem.replica_start_failures >= 2
                            && up.is_some()
                            && !self.mem.recloned_after_start_failures
                        {
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
                // A leader whose PostgreSQL does not answer (it just crashed, say) is no
                // source: try again next loop rather than count the rewind as failed, which
                // would move this data directory aside.
                if let Err(e) = self.pg.remote_received_lsn(&up.host, up.port).await {
                    return Err(SupervisorError::Io(format!(
                        "not rewinding from {leader} now: its PostgreSQL does not answer ({e})"
                    )));
                }
                tracing::info!(from = %leader, "rewinding the former primary with pg_rewind");
                self.mem.rewinding_or_recloning();
                // A postmaster still starting up (crash recovery) must be down for pg_rewind.
                self.stop_postgres(StopMode::Fast, Duration::from_secs(30))
                    .await?;
                match busy(&self.view_tx, "stopped", self.pg.rewind(&up)).await {
                    Ok(()) => {
                        self.pg.set_former_primary(false)?;
                        self.sysid = None;
                        self.start_replica(Some(&up)).await?;
                        Ok(true)
                    }
                    Err(e)
                        if self
                            .pg
                            .remote_received_lsn(&up.host, up.port)
                            .await
                            .is_err() =>
                    {
                        tracing::warn!(error = %e, "pg_rewind failed while {leader} stopped answering: trying again later");
                        Ok(true)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "pg_rewind failed: the data directory will be moved aside and re-cloned");
                        self.mem.rewind_failed = true;
                        Ok(true)
                    }
                }
            }
            Action::Promote => {
                if !self.lock_held_now() {
                    return Err(SupervisorError::Io(
                        "not promoting: the leader key is no longer ours on a live lease".into(),
                    ));
                }
                if !self.pre_promote().await? {
                    return Ok(true);
                }
                self.prepare_sync_for_promotion(w).await?;
                self.arm_watchdog().await?;
                // Never writable unless the guard enforces this deadline.
                self.arm_guard()?;
                tracing::info!("promoting PostgreSQL");
                self.pg.promote().await?;
                self.mem.quorum_barrier = None;
                self.role = NodeRole::Primary;
                self.election_promoted();
                // In strict mode, commits wait from the first moment, not from the next loop.
                if let Err(e) = self.pg.set_sync_standbys(&self.sync_at_start(w)) {
                    tracing::warn!(error = %e, "could not set synchronous_standby_names after the promotion");
                }
                self.event(crate::plugin::Event::RoleChanged {
                    from: crate::plugin::Role::Replica,
                    to: crate::plugin::Role::Primary,
                });
                if let Err(e) = self.pg.checkpoint().await {
                    tracing::warn!(error = %e, "post-promote checkpoint failed");
                }
                if let Err(e) = self.write_history(w).await {
                    tracing::warn!(error = %e, "could not update /history");
                }
                Ok(true)
            }
            Action::Demote {
                mode: DemoteMode::ToStandbyLeader,
            } => self.demote_to_standby_leader().await,
            Action::Demote { mode } => {
                let (stop, why) = match mode {
                    DemoteMode::Immediate => (StopMode::Immediate, "lost the leader lock"),
                    DemoteMode::Offline | DemoteMode::ToStandbyLeader => (
                        StopMode::Fast,
                        "the lease could not be renewed, or the DCS is unreachable past the lease deadline",
                    ),
                };
                tracing::warn!(reason = why, "demoting: stopping PostgreSQL");
                self.phase = PgPhase::Stopping;
                self.stop_postgres(stop, Duration::from_secs(5)).await?;
                self.phase = PgPhase::Stopped;
                self.event(crate::plugin::Event::Stopped(crate::plugin::Role::Primary));
                self.role = NodeRole::Demoted;
                self.sysid = None;
                self.event(crate::plugin::Event::RoleChanged {
                    from: crate::plugin::Role::Primary,
                    to: crate::plugin::Role::Replica,
                });
                let _ = self.guard.write(GuardState::Disarmed {
                    owner: std::process::id() as i32,
                });
                if *mode == DemoteMode::Offline {
                    // Keep serving reads, as Patroni does: read-only with no upstream. The data
                    // is a former primary's: it is rewound before it follows anybody.
                    self.pg.set_former_primary(true)?;
                    self.start_replica(None).await?;
                }
                Ok(true)
            }
            Action::Follow { upstream } => {
                let up = match upstream {
                    Some(u) => Some(self.upstream_for(w, u)?),
                    None => None,
                };
                self.pg.configure(true, up.as_ref())?;
                self.pg.reload()?;
                match upstream {
                    Some(u) => tracing::info!(upstream = %u, "now following"),
                    None => tracing::info!("streaming from nobody: WAL from the archive only"),
                }
                Ok(false)
            }
            Action::WriteInitialize { sysid } => {
                self.dcs.write_initialize(sysid).await?;
                Ok(false)
            }
            Action::HandOver { to, reason } => self.hand_over(w, to, *reason).await,
            Action::ClearFailover => {
                self.dcs.clear_failover().await?;
                Ok(false)
            }
            Action::Fatal(m) => Err(SupervisorError::Fatal(m.clone())),
        }
    }

    /// Start PostgreSQL read-only, streaming from `up` when given.
    pub(super) async fn start_replica(
        &mut self,
        up: Option<&Upstream>,
    ) -> Result<(), SupervisorError> {
        self.phase = PgPhase::Starting;
        self.pg.configure(true, up)?;
        if up.is_some() {
            self.register_member().await;
        }
        match self.pg.start(self.start_patience()).await {
            Ok(started) => {
                if started {
                    self.mem.replica_started();
                }
                self.role = NodeRole::Replica;
                Ok(())
            }
            Err(e) => {
                self.phase = PgPhase::StartFailed;
                let n = self.mem.replica_start_failed(mono_ms(), e.to_string());
                tracing::error!(failures = n, error = %e, "PostgreSQL failed to start");
                Err(e.into())
            }
        }
    }

    /// Make our member key live before a replica start blocks this loop. The leader keeps our
    /// replication slot only while that key exists, and the key dies with our lease (a partition
    /// longer than ttl, say). A replica that must stream to become consistent (after pg_rewind)
    /// would otherwise wait in `start` for a slot that appears only once the loop runs again.
    pub(super) async fn register_member(&mut self) {
        if let Err(e) = self.renew_lease().await {
            tracing::warn!(error = %e, "could not renew the etcd lease before starting the replica");
        }
        if let Err(e) = self.touch_member().await {
            tracing::warn!(error = %e, "could not publish the member key before starting the replica");
        }
    }

    /// Arm the guard with our deadline while PostgreSQL may be a primary under our lock;
    /// disarm it once PostgreSQL is certainly not a primary.
    pub(super) fn update_guard(&self, w: &World, actions: &[Action]) {
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
            w.memory.write_deadline_ms.map(|d| GuardState::Armed {
                deadline_ms: d,
                owner,
            })
        } else if w.failsafe_covers() && w.pg.is_primary() {
            // Failsafe mode: every member accepted a round sent before the deadline passed.
            w.memory.write_deadline_ms.map(|d| GuardState::Armed {
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
        // The watchdog follows the guard: kept alive while the guard is armed, disarmed
        // with it.
        if let Ok(mut wd) = self.watchdog.lock() {
            match st {
                Some(GuardState::Armed { .. }) => wd.keepalive(),
                Some(GuardState::Disarmed { .. }) => wd.disable(),
                Some(GuardState::Fenced { .. }) | None => {}
            }
        }
    }

    /// `watchdog.mode: required` and no usable device: this node may not lead.
    pub(super) fn watchdog_failed(&self) -> bool {
        self.watchdog
            .lock()
            .map(|w| w.required_but_unusable())
            .unwrap_or(true)
    }

    /// Arm the watchdog before PostgreSQL becomes writable. In `required` mode a device that
    /// cannot be armed safely releases the leader key (another node may lead) and stops the
    /// promotion or start as primary.
    pub(super) async fn arm_watchdog(&mut self) -> Result<(), SupervisorError> {
        let ttl = self.dynamic.ttl;
        let armed = match self.watchdog.lock() {
            Ok(mut w) => w.activate(ttl).map(|_| ()).map_err(|e| e.to_string()),
            Err(_) => Err("the watchdog's lock is poisoned".to_string()),
        };
        let Err(why) = armed else { return Ok(()) };
        tracing::error!(
            reason = %why,
            "watchdog.mode is required but the watchdog could not be armed: releasing the leader key, not becoming writable"
        );
        if let Err(e) = self.dcs.release_leader(&self.cfg.name).await {
            tracing::warn!(error = %e, "could not release the leader key");
        }
        Err(SupervisorError::Io(format!("watchdog: {why}")))
    }

    /// Hand the guard the current write deadline (before a promotion or a start as primary).
    /// An error when there is no deadline or the guard's file cannot be written: then nothing
    /// may become writable.
    pub(super) fn arm_guard(&self) -> Result<(), SupervisorError> {
        let d = self.mem.write_deadline_ms.ok_or_else(|| {
            SupervisorError::Io("no write deadline to arm the fencing guard with".into())
        })?;
        self.guard
            .write(GuardState::Armed {
                deadline_ms: d,
                owner: std::process::id() as i32,
            })
            .map_err(|e| {
                SupervisorError::Io(format!(
                    "cannot arm the fencing guard ({}): {e}",
                    self.guard.state.display()
                ))
            })
    }

    /// Whether PostgreSQL may be writable now: the leader key, as last read, holds our name on
    /// our lease, the last renewal of that lease succeeded, and the write deadline it earned
    /// lies ahead. (Nobody can take a key on our lease before that lease expires, and it cannot
    /// expire before the deadline.)
    pub(super) fn lock_held_now(&self) -> bool {
        let now = mono_ms();
        self.last_cluster
            .as_ref()
            .and_then(|c| c.leader.as_ref())
            .is_some_and(|l| l.name == self.cfg.name && Some(l.lease) == self.mem.our_lease)
            && !self.mem.renewal_failed
            && self.mem.write_deadline_ms.is_some_and(|d| now < d)
    }

    /// The one way PostgreSQL starts on a primary's data directory (outside bootstrap):
    /// writable only while [`Self::lock_held_now`] and with the guard armed for the deadline
    /// first; otherwise read-only (`standby.signal`, no upstream, marked a former primary), and
    /// the next loop decides. Returns whether PostgreSQL accepts connections yet.
    pub(super) async fn start_primary_or_read_only(
        &mut self,
        patience: Duration,
    ) -> Result<bool, SupervisorError> {
        self.phase = PgPhase::Starting;
        // Checked afresh: this may run long after the loop read the cluster (a hand-over gave
        // up after waiting), and the key may be gone although the deadline is not (revoked,
        // deleted by hand).
        match self.renew_lease().await {
            Ok(_) => match self.dcs.read_cluster().await {
                Ok(c) => self.last_cluster = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the leader key before starting");
                    self.mem.lease_renewal_failed();
                }
            },
            Err(e) => tracing::warn!(error = %e, "could not renew the lease before starting"),
        }
        let armed = if self.lock_held_now() {
            match self.arm_watchdog().await {
                Ok(()) => self.arm_guard(),
                Err(e) => Err(e),
            }
        } else {
            Err(SupervisorError::Io(
                "the leader key is not ours on a live lease".into(),
            ))
        };
        match armed {
            Ok(()) => {
                self.pg.set_former_primary(false)?;
                self.pg.configure(false, None)?;
                let started = self.pg.start(patience).await?;
                self.role = NodeRole::Primary;
                Ok(started)
            }
            Err(why) => {
                tracing::warn!(reason = %why, "starting PostgreSQL read-only, not as primary");
                self.pg.set_former_primary(true)?;
                self.pg.configure(true, None)?;
                let started = self.pg.start(patience).await?;
                self.role = NodeRole::Replica;
                Ok(started)
            }
        }
    }

    /// Where to stream from when following `leader` (the leader or another member).
    pub(super) fn upstream_for(
        &self,
        w: &World,
        leader: &str,
    ) -> Result<Upstream, SupervisorError> {
        upstream_in(w.cluster.as_ref(), leader)
    }

    /// Race for `initialize`; the winner runs initdb, starts, and takes the leader key.
    pub(super) async fn bootstrap(&mut self) -> Result<bool, SupervisorError> {
        if !self.dcs.race_initialize().await? {
            tracing::info!("another node is bootstrapping the cluster");
            return Ok(false);
        }
        tracing::info!("won the bootstrap race: initializing a new cluster");
        self.phase = PgPhase::Initializing;
        self.role = NodeRole::Uninitialized;
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

    /// initdb, start, create the roles, take the leader key, publish `initialize` and the
    /// cluster's `config`.
    pub(super) async fn bootstrap_inner(&mut self) -> Result<(), SupervisorError> {
        let custom = self.pg.s.methods.bootstrap.clone();
        match &custom {
            None => busy(&self.view_tx, "initializing new cluster", self.pg.initdb()).await?,
            Some(m) => {
                busy(
                    &self.view_tx,
                    "running custom bootstrap script",
                    self.pg.custom_bootstrap(m),
                )
                .await?
            }
        }
        self.pg.configure(false, None)?;
        if !self.pg.start(Duration::from_secs(120)).await? {
            return Err(SupervisorError::Fatal(
                "the new cluster did not accept connections within 120 s".into(),
            ));
        }
        if custom.is_some() {
            busy(
                &self.view_tx,
                "waiting for end of recovery after bootstrap",
                self.pg.wait_recovery_end(),
            )
            .await?;
            // The recovery settings served their one start.
            self.pg.set_recovery_params(Default::default());
            self.pg.configure(false, None)?;
            self.pg.ensure_superuser().await?;
        }
        self.pg.create_roles().await?;
        self.pg.post_bootstrap().await?;
        // initdb may have outlasted the lease (a slow disk, a busy machine): renew (or replace)
        // it before taking the leader key with it.
        self.renew_lease().await?;
        if !self.dcs.acquire_leader(&self.cfg.name).await? {
            return Err(SupervisorError::Fatal(
                "the leader key was taken during bootstrap".into(),
            ));
        }
        self.arm_watchdog().await?;
        self.arm_guard()?;
        let sysid = self.publish_new_cluster().await?;
        self.role = NodeRole::Primary;
        tracing::info!(%sysid, "bootstrapped a new cluster");
        Ok(())
    }

    /// After a bootstrap took the leader key: publish the data directory's system identifier
    /// in `initialize` and the cluster's `config`. Returns the identifier.
    pub(super) async fn publish_new_cluster(&mut self) -> Result<String, SupervisorError> {
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
        crate::metrics::failover("bootstrap");
        Ok(sysid)
    }
}

/// Run a long action (a clone, initdb, pg_rewind) while keeping the REST view alive: the HA
/// loop is busy, not stuck, so `/liveness` keeps answering 200 and the status document shows
/// what the node is doing.
pub(super) async fn busy<T>(
    view: &watch::Sender<LocalSnapshot>,
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
pub(super) fn upstream_in(
    cluster: Option<&Cluster>,
    leader: &str,
) -> Result<Upstream, SupervisorError> {
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
        remote: false,
    })
}

/// `host` and `port` of a `postgres://[user@]host:port/db` URL.
pub(super) fn conn_url_host_port(url: &str) -> Option<(String, u16)> {
    let hostport = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .unwrap_or(url);
    let hostport = hostport.split('/').next().unwrap_or(hostport);
    let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
    split_host_port(hostport)
}
