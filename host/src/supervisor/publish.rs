//! Publish what this node is: its member key in the DCS, the view the REST API serves, and
//! events for the policies' `on-event` hooks (delivered on a thread of their own).
//!
//! May touch: the DCS (the member key), the REST view channel, the policy event queue.

use super::{PATRONI_COMPAT_VERSION, Supervisor, SupervisorError, VERSION};
use crate::api::{self, LocalSnapshot};
use crate::dcs::{Cluster, MemberData};
use crate::ha::World;
use crate::ha::policy::Health;
use crate::plugin::PolicySet;
use crate::postgres::PgState;
use serde_json::{Map, Value};
use std::sync::Arc;

impl Supervisor {
    /// This node's member key, as Patroni writes it (plus Regent's own fields).
    pub(super) fn member_data(&self) -> MemberData {
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
        if let Some((_, why)) = &self.mem.start_failed {
            extra.insert("start_failure".into(), Value::from(why.as_str()));
        }
        if let Some(g) = self.rollout.generation {
            extra.insert("policy_generation".into(), Value::from(g));
        }
        if let Some(e) = &self.rollout.error {
            extra.insert("policy_error".into(), Value::from(e.as_str()));
        }
        if let Some(s) = &self.rollout.shadow.running {
            extra.insert("policy_shadow".into(), Value::from(s.summary()));
            extra.insert("policy_shadow_counters".into(), s.totals_json());
        }
        if let Some(e) = &self.rollout.shadow.error {
            extra.insert("policy_shadow_error".into(), Value::from(e.as_str()));
        }
        MemberData {
            conn_url: Some(format!("postgres://{}/postgres", self.cfg.pg_connect())),
            api_url: Some(self.cfg.api_url()),
            state: Some(self.phase.as_str().into()),
            role: Some(self.role.as_str().into()),
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

    /// Write the member key on our lease.
    pub(super) async fn touch_member(&self) -> Result<(), SupervisorError> {
        self.dcs
            .touch_member(&self.cfg.name, &self.member_data())
            .await?;
        Ok(())
    }

    /// Publish the snapshot the REST API answers from.
    pub(super) fn publish(&self, w: &World) {
        let pg = self.last_pg.as_ref();
        let mut tags = self.member_data().tags;
        tags.retain(|_, v| !v.is_null());
        let c = w.cluster.as_ref();
        let view = LocalSnapshot {
            scope: self.cfg.scope.clone(),
            name: self.cfg.name.clone(),
            version: VERSION.into(),
            state: self.phase.as_str().into(),
            role: self.role.as_str().into(),
            holds_lock: w.holds_lock(),
            watchdog_failed: self.watchdog_failed(),
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
            quorum_commit: self.dynamic.synchronous_mode == crate::config::SyncMode::Quorum,
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
                    let shadow = &self.rollout.shadow;
                    if let Some(s) = &shadow.running {
                        m.insert("shadow".into(), s.info());
                    }
                    if let Some(e) = &shadow.error {
                        m.insert("shadow_error".into(), Value::from(e.as_str()));
                    }
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
            scheduled_restart: self
                .scheduled_restart
                .as_ref()
                .map(super::commands::ScheduledRestart::json),
            start_failure: self.mem.start_failed.as_ref().map(|(_, why)| why.clone()),
            write_deadline_ms: w.memory.write_deadline_ms,
            timing_adjusted: self.dynamic.timing_adjusted,
            failsafe_mode: self.dynamic.failsafe_mode,
            failsafe: self.failsafe_topology.clone(),
            failsafe_active: self.dynamic.failsafe_mode
                && (w.failsafe_covers()
                    || w.memory
                        .failsafe_ping
                        .as_ref()
                        .is_some_and(|p| w.now_ms < p.hold_until_ms(w.settings.ttl_ms))),
            diverged: w.pg.is_replica()
                && (w.pg.former_primary || w.diverged_from_cluster().is_some()),
        };
        self.view_tx.send_replace(view);
    }

    /// Hand an event to the policies' `on-event` hooks, in order, on their own thread (a
    /// policy never runs on the async workers, and an event never delays the loop).
    pub(super) fn event(&self, e: crate::plugin::Event) {
        self.script_callback(&e);
        if let Some(set) = &self.policies {
            let _ = self.events.send((set.clone(), e));
        }
    }

    /// `member-joined` / `member-left` for member keys that appeared or vanished.
    pub(super) fn membership_events(&self, old: &Cluster, new: &Cluster) {
        for m in &new.members {
            if old.member(&m.name).is_none() {
                self.event(crate::plugin::Event::MemberJoined(m.name.clone()));
            }
        }
        for m in &old.members {
            if new.member(&m.name).is_none() {
                self.event(crate::plugin::Event::MemberLeft(m.name.clone()));
            }
        }
    }
}

/// The thread that calls the policies' `on-event` hooks, one event after the other.
pub(super) fn event_thread()
-> Result<std::sync::mpsc::Sender<(Arc<PolicySet>, crate::plugin::Event)>, SupervisorError> {
    let (tx, rx) = std::sync::mpsc::channel::<(Arc<PolicySet>, crate::plugin::Event)>();
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

/// The policy verdict as published under `policy.health` in the status document.
pub(crate) fn health_json(h: &Health) -> Value {
    match h {
        Health::Healthy => serde_json::json!({"verdict": "healthy"}),
        Health::Degraded(r) => serde_json::json!({"verdict": "degraded", "reason": r}),
        Health::Failed(r) => serde_json::json!({"verdict": "failed", "reason": r}),
    }
}
