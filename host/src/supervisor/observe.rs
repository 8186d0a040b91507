//! Observe: renew the lease, read the cluster from the DCS (and apply a changed `config`
//! key), query the local PostgreSQL, ask the policies for their health verdict and, during an
//! election or a hand-over, poll the peers' REST APIs. The result is one `ha::World`, with a
//! copy of the decision memory, which the observations update through its methods.
//!
//! May touch: the DCS (lease renewal and one range read), PostgreSQL (read-only queries),
//! peers (GET), the policies (health); it changes nothing outside this process.

use super::bounded::{Unanswered, bounded};
use super::reload::yaml_scalar;
use super::{NodeRole, PgPhase, Supervisor, unix_now, unix_now_ms};
use crate::api;
use crate::config::SyncMode;
use crate::dcs::{Cluster, DcsError, Renewal, json_scalar};
use crate::fence::{instant_to_mono_ms, mono_ms};
use crate::ha::policy::{DefaultPolicy, Health, HealthFacts, Policy};
use crate::ha::{DataDir, PeerState, PgView, Settings, World};
use crate::plugin::{Hook, PolicySet};
use crate::postgres::PgState;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

impl Supervisor {
    /// One loop's observations, as the snapshot `ha::decide` reads.
    pub(super) async fn observe(&mut self) -> World {
        // Renew the lease first: the decision must see a fresh deadline. When that fails, the
        // DCS did not answer within retry_timeout: the loop decides without it at once (a
        // primary demotes), rather than spend another retry_timeout on a read.
        // A request of the last loop's actions timed out the same way (Patroni demotes when
        // its leader key update fails): decide without the DCS now; the next loop renews.
        let cluster = if std::mem::take(&mut self.dcs_unreachable) {
            tracing::warn!(
                "etcd did not answer the last loop's request within retry_timeout: deciding without the DCS this loop"
            );
            self.mem.lease_renewal_failed();
            None
        } else {
            match self.renew_lease().await {
                Ok(_) => self.read_cluster().await,
                Err(e) => {
                    tracing::warn!(error = %e, "could not renew the etcd lease");
                    None
                }
            }
        };
        if let (Some(old), Some(new)) = (&self.last_cluster, &cluster) {
            self.membership_events(old, new);
        }
        self.last_cluster = cluster.clone();
        if let Some(c) = &cluster {
            self.remember_failsafe_topology(c);
        }
        self.collect_failsafe_ping();
        let now = mono_ms();
        match &cluster {
            Some(c) => {
                let seen = self.mem.cluster_observed(&self.cfg.name, c, now);
                if let Some(who) = seen.leader_gone
                    && self.sysid.is_some()
                {
                    let who = who.unwrap_or_else(|| "the leader".into());
                    self.event(crate::plugin::Event::FailoverStarted(format!(
                        "the leader key is gone ({who} no longer holds it)"
                    )));
                }
            }
            None => self.mem.cluster_unreadable(),
        }

        let running = self.pg.is_running().await;
        let mut state = None;
        if running {
            match self.pg.query_state().await {
                Ok(s) => {
                    if self.phase != PgPhase::Running {
                        let role = if s.in_recovery {
                            crate::plugin::Role::Replica
                        } else {
                            crate::plugin::Role::Primary
                        };
                        self.event(crate::plugin::Event::Started(role));
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
                match &d {
                    DataDir::Initialized { sysid, .. } => self.sysid = Some(sysid.clone()),
                    // Not read this loop: what was known stays known.
                    DataDir::Unknown(why) => {
                        tracing::warn!(reason = %why, "cannot read the data directory this loop")
                    }
                    DataDir::Empty | DataDir::Unusable(_) => self.sysid = None,
                }
                d
            }
        };
        let (upstream, follows_remote) = self.pg.configured_source();
        if let Some(s) = &state {
            self.role = if s.in_recovery && follows_remote {
                NodeRole::StandbyLeader
            } else if s.in_recovery {
                NodeRole::Replica
            } else {
                NodeRole::Primary
            };
        }
        self.last_pg = state.clone();
        // Failsafe mode: a primary that could not renew its lease asks its members to keep it.
        if self.mem.renewal_failed
            && self.dynamic.failsafe_mode
            && state.as_ref().is_some_and(|s| !s.in_recovery)
        {
            self.failsafe_round().await;
        }
        let now = mono_ms();

        let replica = state.as_ref().filter(|s| s.in_recovery);
        let pg = PgView {
            data_dir,
            running: running && state.is_some(),
            in_recovery: state.as_ref().map(|s| s.in_recovery),
            timeline: state.as_ref().and_then(|s| s.timeline),
            wal_position: state.as_ref().and_then(PgState::wal_position),
            received_lsn: replica.and_then(|s| s.received_lsn),
            replayed_lsn: replica.and_then(|s| s.replayed_lsn),
            upstream,
            follows_remote,
            former_primary: self.pg.former_primary(),
            receiving: replica.is_some_and(|s| s.receiver_status.as_deref() == Some("streaming")),
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
        let mut world = World {
            now_ms: now,
            me: self.cfg.name.clone(),
            cluster,
            pg,
            peers: BTreeMap::new(),
            settings: self.settings(),
            health: Health::Healthy,
            now_unix_ms: unix_now_ms(),
            memory: self.mem.clone(),
        };
        self.verify_divergence(&mut world).await;
        world
    }

    /// A replica that seems to have received WAL past the new timeline's fork point is asked
    /// for the timeline it really replays: the reported one can lag (pg_control's), and only a
    /// replica replaying the old timeline past the fork has diverged. When it cannot tell, it
    /// does not claim divergence: a rewind is never started on a guess.
    async fn verify_divergence(&mut self, w: &mut World) {
        let Some((seen, fork, at)) = w.diverged_from_cluster() else {
            return;
        };
        match self.pg.replay_timeline().await {
            Ok(tl) => {
                if tl != seen {
                    tracing::debug!(reported = seen, replays = tl, "replica timeline corrected");
                }
                w.pg.timeline = Some(tl);
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    timeline = seen,
                    fork,
                    at,
                    "cannot tell which timeline this replica replays (IDENTIFY_SYSTEM over a replication connection to itself failed); not treating it as diverged"
                );
                w.pg.timeline = w.cluster.as_ref().map(|c| c.timeline());
            }
        }
    }

    /// Renew our lease and remember the write deadline it earns, computed from the TTL etcd
    /// granted. When the configured ttl changed since the lease was granted, the lease is
    /// replaced by one of the new ttl and the leader key moves onto it first (a keep-alive
    /// renews a lease to its original TTL, so the old one would keep the old expiry).
    pub(super) async fn renew_lease(&mut self) -> Result<Renewal, DcsError> {
        let ttl = self.dynamic.ttl;
        let mut r = match self.dcs.refresh_lease(ttl).await {
            Ok(r) => r,
            Err(e) => {
                self.mem.lease_renewal_failed();
                return Err(e);
            }
        };
        if r.requested_ttl != ttl {
            match self.dcs.replace_lease(ttl, &self.cfg.name).await {
                Ok(new) => {
                    tracing::info!(
                        old_lease = r.lease,
                        new_lease = new.lease,
                        old_ttl = r.requested_ttl,
                        ttl,
                        granted_ttl = new.granted_ttl,
                        "ttl changed: moved this node's keys onto a lease of the new ttl"
                    );
                    r = new;
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    ttl,
                    lease_ttl = r.requested_ttl,
                    "ttl changed but the lease could not be replaced; keeping the old lease (and its deadline)"
                ),
            }
        }
        self.mem.lease_renewed(
            r.lease,
            instant_to_mono_ms(r.sent),
            r.granted_ttl.saturating_mul(1000),
        );
        Ok(r)
    }

    /// Read the whole cluster prefix; a changed `config` key is applied at once (a value that
    /// does not validate is reported once per revision and ignored). `None`: the DCS could
    /// not be read.
    pub(super) async fn read_cluster(&mut self) -> Option<Cluster> {
        let c = match self.dcs.read_cluster().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the cluster from etcd");
                return None;
            }
        };
        self.dcs_last_seen = Some(unix_now());
        if let Some((v, rev)) = &c.config {
            // Validated as a local file is: a value Regent cannot run with safely (a ttl of a
            // billion seconds, broken timing) is reported and the previous settings stay.
            match crate::config::validate_dynamic(v) {
                Ok(d) if d != self.dynamic => {
                    // Once per change of the fitted timing, not at every other change.
                    if let Some(fit) = &d.timing_adjusted
                        && d.timing_adjusted != self.dynamic.timing_adjusted
                    {
                        tracing::warn!("{}", fit.warning());
                    }
                    let timing = (d.ttl, d.loop_wait) != (self.dynamic.ttl, self.dynamic.loop_wait);
                    self.dynamic = d;
                    self.apply_parameters();
                    if timing && let Some(set) = &self.policies {
                        let budget = self.policy_budget();
                        if let Err(e) = set.set_budget(budget) {
                            tracing::error!(
                                limit_ms = budget.limit().as_millis() as u64,
                                "the new ttl leaves the policies less time than their manifests allow; their calls are cut at the limit and the built-in rules answer instead: {e}"
                            );
                        }
                    }
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

    /// The settings the core decides with, from the cluster's and the local configuration.
    pub(super) fn settings(&self) -> Settings {
        let tags = &self.cfg.tags;
        Settings {
            ttl_ms: self.ttl_ms(),
            maximum_lag_on_failover: self.dynamic.maximum_lag_on_failover,
            check_timeline: self.dynamic.check_timeline,
            use_pg_rewind: self.dynamic.postgresql.use_pg_rewind,
            // `watchdog.mode: required` without a usable device: never a candidate (Patroni's
            // `watchdog_failed`).
            nofailover: tags.nofailover || self.watchdog_failed(),
            failover_priority: tags.failover_priority.unwrap_or(1),
            tags: tags
                .other
                .iter()
                .map(|(k, v)| (k.clone(), yaml_scalar(v)))
                .collect(),
            race_backoff_ms: 2000,
            // Synchronous mode does not apply to a standby cluster (as in Patroni).
            synchronous_mode: self.dynamic.synchronous_mode != SyncMode::Off
                && self.dynamic.standby().is_none(),
            quorum_commit: self.dynamic.synchronous_mode == SyncMode::Quorum
                && self.dynamic.standby().is_none(),
            paused: self.dynamic.pause.unwrap_or(false),
            loop_wait_ms: self.dynamic.loop_wait.max(1).saturating_mul(1000),
            failed_loops_before_handover: self.cfg.regent.failed_loops_before_handover,
            clone_without_leader: self.pg.s.methods.can_clone_without_leader(),
            failsafe_mode: self.dynamic.failsafe_mode,
            standby_cluster: self.dynamic.standby().is_some(),
        }
    }

    /// The policies' verdict on the local node (the built-in rules: healthy while running).
    pub(super) async fn judge_health(&mut self, w: &World) -> Health {
        let shadow = self.rollout.shadow.running.clone();
        if self.policies.is_none() && shadow.is_none() {
            return Health::Healthy;
        }
        if self.phase_seen.0 != self.phase {
            self.phase_seen = (self.phase, std::time::Instant::now());
        }
        let pg = self.last_pg.as_ref();
        let facts = HealthFacts {
            role: self.role.as_str().to_string(),
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
        let verdict = match self.policies.clone() {
            Some(set) => self.judge_with(set, w, &facts).await,
            None => Health::Healthy,
        };
        // The shadow judges the same facts on its own thread; it never changes the verdict.
        if let Some(s) = shadow {
            s.offer_health(&facts, &self.cfg.name, w.holds_lock(), &verdict);
        }
        if verdict != Health::Healthy {
            tracing::warn!(?verdict, "policy health verdict");
        }
        verdict
    }

    /// The serving policies' verdict on `facts`.
    async fn judge_with(&self, set: Arc<PolicySet>, w: &World, facts: &HealthFacts) -> Health {
        set.set_local_node(&self.cfg.name, w.holds_lock());
        // SQL probes block for up to their timeout: off the async threads, and waited for no
        // longer than the loop's share of the lease.
        let limit = self.policy_budget().limit();
        let (judge, asked) = (set.clone(), facts.clone());
        match bounded(limit, &self.health_busy, move || judge.health(&asked)).await {
            Ok(v) => v,
            Err(Unanswered::Panicked(e)) => {
                Health::Degraded(format!("the health check panicked: {e}"))
            }
            Err(why) => {
                if matches!(why, Unanswered::TimedOut(_)) {
                    set.record_stall(Hook::CheckHealth, limit, &why.to_string());
                } else {
                    tracing::warn!(
                        "the policies' health check is still running ({why}); the built-in rules judge this loop"
                    );
                }
                DefaultPolicy.health(facts)
            }
        }
    }

    /// Ask every other member for its status, in parallel, with a short timeout.
    pub(super) async fn poll_peers(&self, c: &Cluster) -> BTreeMap<String, Option<PeerState>> {
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
}
