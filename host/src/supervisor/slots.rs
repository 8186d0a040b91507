//! Which replication slots this node keeps, each loop: on the leader, a physical slot for
//! every member that streams ([`topology::slots_kept_by`]) and the permanent slots of the
//! `slots` setting, physical and logical; on a replica, the slots of the members cascading
//! from it and (unless it is tagged `nofailover`) the permanent physical slots, advanced to
//! the positions the leader publishes in `/status`, so that a replica promoted later already
//! holds them. `ignore_slots` are never dropped; an unwanted slot goes after
//! `member_slots_ttl`.
//!
//! May touch: PostgreSQL (slots), through `postgres::Postgres`.

use super::Supervisor;
use crate::dcs::{Cluster, slot_name};
use crate::ha::World;
use crate::ha::topology;
use crate::postgres::SlotPlan;
use std::collections::BTreeMap;
use std::time::Duration;

impl Supervisor {
    /// The physical slots this node keeps in cluster `c`; `leading`: as the leader.
    fn slot_plan(&self, c: &Cluster, leading: bool) -> SlotPlan {
        let mut want: Vec<(String, Option<u64>)> = topology::slots_kept_by(c, &self.cfg.name)
            .into_iter()
            .map(|k| {
                (
                    slot_name(&k.member),
                    k.reported_lsn.filter(|_| !k.streams_here),
                )
            })
            .collect();
        let member_slots: Vec<String> = c.members.iter().map(|m| slot_name(&m.name)).collect();
        let d = &self.dynamic;
        if leading || !self.cfg.tags.nofailover {
            for (name, def) in &d.slots {
                let logical = def.as_ref().and_then(|d| d.logical()).is_some();
                if logical || d.ignore_slots.iter().any(|i| i.matches_physical(name)) {
                    continue;
                }
                if member_slots.contains(name) || *name == slot_name(&self.cfg.name) {
                    tracing::warn!(slot = %name, "permanent slot has a member's slot name: ignored; rename it in slots");
                    continue;
                }
                // A replica follows the leader's position; the leader's own copy is its
                // consumer's business.
                let target = (!leading)
                    .then(|| c.status.slots.get(name).copied())
                    .flatten();
                want.push((name.clone(), target));
            }
        }
        SlotPlan {
            want,
            ignore: d.ignore_slots.clone(),
            retention: Duration::from_secs(d.member_slots_ttl),
        }
    }

    /// The leader's slots: physical (members', permanent) and the permanent logical ones.
    /// Returns each slot's position for `/status` (empty with `use_slots` off).
    pub(super) async fn leader_slots(&mut self, c: &Cluster) -> BTreeMap<String, u64> {
        let mut slots = BTreeMap::new();
        if !self.dynamic.postgresql.use_slots {
            return slots;
        }
        match self.pg.sync_slots(&self.slot_plan(c, true)).await {
            Ok(s) => slots = s,
            Err(e) => tracing::warn!(error = %e, "replication slot maintenance failed"),
        }
        let logical: Vec<(String, String, String)> = self
            .dynamic
            .slots
            .iter()
            .filter_map(|(n, d)| {
                let (db, plugin) = d.as_ref()?.logical()?;
                Some((n.clone(), db.to_string(), plugin.to_string()))
            })
            .collect();
        if !logical.is_empty() {
            match self.pg.ensure_logical_slots(&logical).await {
                Ok(l) => slots.extend(l),
                Err(e) => tracing::warn!(error = %e, "permanent logical slot maintenance failed"),
            }
        }
        slots
    }

    /// A running replica's slots: those of the members cascading from it and the permanent
    /// physical ones. Called every loop, also with neither: a former primary's slots, which
    /// nobody streams through any more, would hold WAL back here; they are dropped after
    /// `member_slots_ttl`.
    pub(super) async fn replica_slots(&mut self, w: &World) {
        let Some(c) = &w.cluster else { return };
        if !self.dynamic.postgresql.use_slots || !w.pg.running || !w.pg.is_replica() {
            return;
        }
        if let Err(e) = self.pg.sync_slots(&self.slot_plan(c, false)).await {
            tracing::warn!(error = %e, "replication slot maintenance on this replica failed");
        }
    }
}
