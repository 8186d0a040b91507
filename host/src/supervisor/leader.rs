//! The leader's per-loop duties while it holds the lock: publish `/status` (optime, slots),
//! keep the replication slots (`slots.rs`), synchronous mode (carry out `ha::sync::plan`, or
//! `ha::quorum::plan` for quorum commit), and `/history` after a promotion.
//!
//! May touch: the DCS (`status`, `sync`, `history`), PostgreSQL (slots,
//! `synchronous_standby_names`, reading the timeline history file).

use super::{Supervisor, SupervisorError, iso_now};
use crate::config::SyncMode;
use crate::dcs::{Cluster, HistoryLine, Status, tag_bool};
use crate::ha::World;
use crate::ha::{quorum, sync};
use std::collections::BTreeMap;

/// What synchronous mode knows this loop, but the key and the standbys catching up.
struct SyncFacts {
    me: String,
    mode: SyncMode,
    node_count: usize,
    strict: bool,
    standbys: Vec<sync::Standby>,
    eligible: Vec<String>,
    no_failover: Vec<String>,
    max_lag: Option<u64>,
    primary_flush: Option<u64>,
}

impl SyncFacts {
    fn inputs<'a>(
        &'a self,
        key: Option<&'a crate::dcs::SyncState>,
        catching_up: &'a BTreeMap<String, u64>,
    ) -> sync::SyncInputs<'a> {
        sync::SyncInputs {
            me: &self.me,
            mode: self.mode,
            node_count: self.node_count,
            strict: self.strict,
            standbys: &self.standbys,
            eligible: &self.eligible,
            no_failover: &self.no_failover,
            max_lag: self.max_lag,
            key,
            primary_flush: self.primary_flush,
            catching_up,
        }
    }
}

impl Supervisor {
    /// The leader's per-loop work: publish `/status`, keep member slots.
    pub(super) async fn leader_duties(&mut self, w: &World) -> Result<(), SupervisorError> {
        let Some(c) = &w.cluster else { return Ok(()) };
        self.write_failsafe_key(c).await;
        if !self.probe_role_ready {
            // A cluster bootstrapped before the probes had their own role gets it now (it
            // replicates to the standbys).
            match self.pg.ensure_probe_role().await {
                Ok(()) => self.probe_role_ready = true,
                Err(e) => tracing::warn!(error = %e, "could not create the SQL probes' role"),
            }
        }
        let slots = self.leader_slots(c).await;
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
    pub(super) fn sync_at_start(&self, w: &World) -> sync::Standbys {
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

    /// Synchronous mode, right before a promotion: in `synchronous_mode: on`, the `sync` key
    /// naming this node alone when it named another leader ([`sync::key_before_promotion`];
    /// no promotion when the write fails), and the standbys the new primary waits for, set
    /// before it takes its first commit.
    pub(super) async fn prepare_sync_for_promotion(
        &mut self,
        w: &World,
    ) -> Result<(), SupervisorError> {
        // Synchronous mode does not apply to a standby cluster.
        if self.dynamic.synchronous_mode == SyncMode::Off || self.dynamic.standby().is_some() {
            return Ok(());
        }
        let (key, rev) = match w.cluster.as_ref().and_then(|c| c.sync.as_ref()) {
            Some((k, r)) => (Some(k), *r),
            None => (None, 0),
        };
        if let Some(k) =
            sync::key_before_promotion(&self.cfg.name, self.dynamic.synchronous_mode, key)
            && self.dcs.write_sync(&k, Some(rev)).await?.is_none()
        {
            return Err(SupervisorError::Io(
                "not promoting: the sync key changed under us".into(),
            ));
        }
        self.pg
            .preset_sync_for_promotion(&self.sync_at_start(w))
            .await?;
        Ok(())
    }

    /// Synchronous mode on the leader: carry out [`ha::sync::plan`], which keeps
    /// `synchronous_standby_names` and the `sync` key consistent (the key never names a standby
    /// PostgreSQL is not waiting for).
    pub(super) async fn manage_sync(&mut self, c: &Cluster) -> Result<(), SupervisorError> {
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
                        sync: matches!(r.sync_state.as_str(), "sync" | "quorum"),
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
        let facts = SyncFacts {
            me: self.cfg.name.clone(),
            mode: self.dynamic.synchronous_mode,
            node_count: usize::try_from(self.dynamic.synchronous_node_count).unwrap_or(usize::MAX),
            strict: self.dynamic.synchronous_mode_strict,
            standbys,
            eligible,
            no_failover,
            max_lag: u64::try_from(self.dynamic.maximum_lag_on_syncnode).ok(),
            primary_flush,
        };
        let mode = facts.mode;
        if mode == SyncMode::Quorum {
            self.mem.sync_catching_up.clear();
            // What the server waits for now; unknown (no state read this loop) as `*`, which
            // the plan trusts least.
            let setting = self.last_pg.as_ref().map_or(sync::Standbys::AnyOne, |p| {
                quorum::parse_setting(&p.synchronous_standby_names)
            });
            let plan = quorum::plan(&quorum::QuorumInputs {
                sync: facts.inputs(key.as_ref(), &BTreeMap::new()),
                setting: &setting,
                barrier: self.mem.quorum_barrier.as_ref(),
            });
            return self.carry_out_quorum(plan, rev).await;
        }
        self.mem.quorum_barrier = None;
        // A key write (a take-over or a shrink) is followed at once by the setting change it
        // prepares, so a standby that left stops holding up commits within this loop.
        for _ in 0..3 {
            let plan = sync::plan(&facts.inputs(key.as_ref(), &self.mem.sync_catching_up));
            if !matches!(plan, sync::SyncPlan::Apply { .. }) {
                self.mem.sync_catching_up.clear();
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
                    self.mem.sync_catching_up = catching_up;
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

    /// Quorum commit: carry out [`quorum::plan`]'s steps in order; a key write that loses its
    /// compare-and-swap (another writer changed the key) ends them until the next loop.
    async fn carry_out_quorum(
        &mut self,
        plan: quorum::QuorumPlan,
        mut rev: i64,
    ) -> Result<(), SupervisorError> {
        self.mem.quorum_barrier = plan.barrier;
        for step in plan.steps {
            match step {
                quorum::QuorumStep::WriteKey(k) => {
                    match self.dcs.write_sync(&k, Some(rev)).await? {
                        Some(new) => {
                            rev = new;
                            tracing::info!(
                                quorum = k.quorum.unwrap_or(0),
                                voters = %k.sync_standby.as_deref().unwrap_or(""),
                                "wrote the sync key"
                            );
                        }
                        None => {
                            tracing::warn!("the sync key changed under us; retrying next loop");
                            break;
                        }
                    }
                }
                quorum::QuorumStep::Set(s) => self.pg.set_sync_standbys(&s)?,
            }
        }
        Ok(())
    }

    /// After a promotion: append the timeline switch to `/history`, read from the new
    /// timeline's history file.
    pub(super) async fn write_history(&self, w: &World) -> Result<(), SupervisorError> {
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
}
