//! The dynamic (cluster-wide) configuration: what Patroni keeps in the DCS `config` key and a
//! new cluster starts from `bootstrap.dcs`, with Patroni's defaults and the rule that keys at
//! their default are not written. Pure: data types only, no I/O.

use super::SyncMode;
use super::values::{patroni_bool, patroni_bool_opt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Dynamic (cluster-wide) configuration, stored in the DCS `config` key.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct DynamicConfig {
    /// Seconds the leader lease lasts without renewal (default 30).
    #[serde(default = "d_ttl")]
    pub(crate) ttl: u64,
    /// Seconds the loop sleeps between two cycles (default 10).
    #[serde(default = "d_loop_wait")]
    pub(crate) loop_wait: u64,
    /// Seconds one DCS call may take: the deadline of each etcd request (default 10).
    #[serde(default = "d_retry_timeout")]
    pub(crate) retry_timeout: u64,
    /// Bytes a replica may be behind the last leader and still be promoted (default 1 MiB).
    #[serde(default = "d_max_lag")]
    pub(crate) maximum_lag_on_failover: u64,
    /// Synchronous replication: off (default), on, or quorum.
    #[serde(default)]
    pub(crate) synchronous_mode: SyncMode,
    /// How many standbys the leader keeps synchronous (Patroni's default: 1).
    #[serde(default = "d_sync_count", skip_serializing_if = "is_one")]
    pub(crate) synchronous_node_count: u64,
    /// With no standby to be synchronous, block commits (`synchronous_standby_names = '*'`)
    /// instead of accepting them unreplicated.
    #[serde(
        default,
        deserialize_with = "patroni_bool",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub(crate) synchronous_mode_strict: bool,
    /// Bytes a synchronous standby may lag behind the primary before another replaces it;
    /// negative (Patroni's default, -1): no limit.
    #[serde(default = "d_minus_one", skip_serializing_if = "is_minus_one")]
    pub(crate) maximum_lag_on_syncnode: i64,
    /// A candidate must be on the cluster's timeline to be promoted.
    #[serde(default, deserialize_with = "patroni_bool")]
    pub(crate) check_timeline: bool,
    /// Maintenance mode: no automatic promotion, demotion, start or stop; not set: off.
    #[serde(
        default,
        deserialize_with = "patroni_bool_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) pause: Option<bool>,
    /// Failsafe mode: without etcd, the leader stays primary while every member in the
    /// `failsafe` key accepts its `POST /failsafe`.
    #[serde(
        default,
        deserialize_with = "patroni_bool",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub(crate) failsafe_mode: bool,
    /// The cluster-wide `postgresql` keys.
    #[serde(default)]
    pub(crate) postgresql: DynamicPostgresql,
    /// Permanent replication slots, kept on the leader and (physical ones) on every replica
    /// that may become leader.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) slots: BTreeMap<String, Option<super::slots::SlotDef>>,
    /// Slots Regent never creates, advances or drops.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) ignore_slots: Vec<super::slots::IgnoreSlot>,
    /// How long the slot of a member that left the cluster is kept, in seconds.
    #[serde(
        default = "super::slots::d_member_slots_ttl",
        deserialize_with = "super::slots::de_member_slots_ttl",
        skip_serializing_if = "super::slots::is_default_ttl"
    )]
    pub(crate) member_slots_ttl: u64,
    /// `standby_cluster`: the cluster replicates from a remote primary and is never
    /// writable; removing the section promotes its standby leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) standby_cluster: Option<super::standby::StandbyCluster>,
    /// Set by [`DynamicConfig::fit_timing`] when the timing given broke
    /// `loop_wait + 2 × retry_timeout <= ttl`: what was given and what is used instead.
    #[serde(skip)]
    pub(crate) timing_adjusted: Option<TimingFit>,
}

/// `ttl`, `loop_wait` and `retry_timeout`, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timing {
    /// Seconds the leader lease lasts without renewal.
    pub ttl: u64,
    /// Seconds the loop sleeps between two cycles.
    pub loop_wait: u64,
    /// Seconds one DCS call may take.
    pub retry_timeout: u64,
}

impl DynamicConfig {
    /// The `standby_cluster` section, when it makes this a standby cluster.
    pub(crate) fn standby(&self) -> Option<&super::standby::StandbyCluster> {
        self.standby_cluster.as_ref().filter(|s| s.is_active())
    }
}

/// Timing that broke `loop_wait + 2 × retry_timeout <= ttl`, and what a node runs with instead
/// (see [`DynamicConfig::fit_timing`]). Its `Display` is the note; [`TimingFit::warning`] the
/// one line the node logs, `regent ctl edit-config` prints and `GET /patroni` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimingFit {
    /// The values in the configuration (they stay in the DCS as given).
    pub configured: Timing,
    /// The values the node runs with.
    pub effective: Timing,
}

impl TimingFit {
    /// The warning about the cluster's configuration, as one line.
    pub fn warning(&self) -> String {
        format!("the cluster's configuration: {self}")
    }
}

impl std::fmt::Display for TimingFit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (c, e) = (self.configured, self.effective);
        write!(
            f,
            "loop_wait {} + 2 × retry_timeout {} exceeds ttl {}: running with loop_wait {} and retry_timeout {} (as Patroni does); set them so that loop_wait + 2 × retry_timeout <= ttl to silence this",
            c.loop_wait, c.retry_timeout, c.ttl, e.loop_wait, e.retry_timeout
        )
    }
}

impl DynamicConfig {
    /// Fit the timing into Patroni's rule `loop_wait + 2 × retry_timeout <= ttl` as Patroni
    /// does, keeping `ttl`: shorten `loop_wait` (down to 1 s), and if that is not enough, set
    /// `retry_timeout` to `(ttl - 1) / 2`. The values given stay in the DCS; these are the
    /// ones this node runs with, and [`timing_adjusted`](Self::timing_adjusted) says so.
    /// Safety does not rest on the rule (the write deadline comes from the lease etcd
    /// granted); it keeps a healthy leader from losing its lease between two loops.
    pub(crate) fn fit_timing(&mut self) {
        let (ttl, lw, rt) = (self.ttl, self.loop_wait, self.retry_timeout);
        let (new_lw, new_rt) = if 1 + 2 * rt.min(ttl) > ttl {
            (1, ttl.saturating_sub(1) / 2)
        } else if lw.saturating_add(2 * rt) > ttl {
            (ttl - 2 * rt, rt)
        } else {
            self.timing_adjusted = None;
            return;
        };
        self.loop_wait = new_lw;
        self.retry_timeout = new_rt;
        let timing = |loop_wait, retry_timeout| Timing {
            ttl,
            loop_wait,
            retry_timeout,
        };
        self.timing_adjusted = Some(TimingFit {
            configured: timing(lw, rt),
            effective: timing(new_lw, new_rt),
        });
    }
}

impl Default for DynamicConfig {
    fn default() -> Self {
        DynamicConfig {
            ttl: d_ttl(),
            loop_wait: d_loop_wait(),
            retry_timeout: d_retry_timeout(),
            maximum_lag_on_failover: d_max_lag(),
            synchronous_mode: SyncMode::Off,
            synchronous_node_count: d_sync_count(),
            synchronous_mode_strict: false,
            maximum_lag_on_syncnode: d_minus_one(),
            check_timeline: false,
            pause: None,
            failsafe_mode: false,
            postgresql: DynamicPostgresql::default(),
            slots: BTreeMap::new(),
            ignore_slots: Vec::new(),
            member_slots_ttl: super::slots::d_member_slots_ttl(),
            standby_cluster: None,
            timing_adjusted: None,
        }
    }
}

fn d_ttl() -> u64 {
    30
}
fn d_loop_wait() -> u64 {
    10
}
fn d_retry_timeout() -> u64 {
    10
}
fn d_max_lag() -> u64 {
    1_048_576
}
fn d_sync_count() -> u64 {
    1
}
fn is_one(n: &u64) -> bool {
    *n == 1
}
fn d_minus_one() -> i64 {
    -1
}
fn is_minus_one(n: &i64) -> bool {
    *n == -1
}

/// The dynamic configuration's `postgresql` keys, the same on every node.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub(crate) struct DynamicPostgresql {
    /// A former primary is rewound before it follows another leader; off: its data is moved
    /// aside and cloned anew.
    #[serde(default, deserialize_with = "patroni_bool")]
    pub(crate) use_pg_rewind: bool,
    /// The leader keeps a replication slot for every other member (default on).
    #[serde(default = "d_true", deserialize_with = "patroni_bool")]
    pub(crate) use_slots: bool,
    /// PostgreSQL parameters for every node; a node's `postgresql.parameters` override them.
    #[serde(default)]
    pub(crate) parameters: BTreeMap<String, serde_yaml::Value>,
    /// `pg_hba.conf` lines (Patroni's `bootstrap.dcs.postgresql.pg_hba`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) pg_hba: Vec<String>,
}

impl Default for DynamicPostgresql {
    fn default() -> Self {
        DynamicPostgresql {
            use_pg_rewind: false,
            use_slots: true,
            parameters: BTreeMap::new(),
            pg_hba: Vec::new(),
        }
    }
}

fn d_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::config::test_support::*;

    #[test]
    fn dynamic_config_round_trips_through_json() {
        let l = parse(FIXTURE).expect("valid");
        let json = serde_json::to_value(&l.config.bootstrap.dcs).expect("serialize");
        let back: DynamicConfig = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, l.config.bootstrap.dcs);
        // An empty pg_hba is not written (Patroni would replace pg_hba.conf with nothing).
        let empty = serde_json::to_value(DynamicConfig::default()).expect("serialize");
        assert!(empty["postgresql"].get("pg_hba").is_none(), "{empty}");
        // synchronous_mode is written as Patroni writes it, and read back.
        assert_eq!(empty["synchronous_mode"], serde_json::json!(false));
        for (mode, json) in [
            (SyncMode::On, serde_json::json!(true)),
            (SyncMode::Quorum, serde_json::json!("quorum")),
        ] {
            let d = DynamicConfig {
                synchronous_mode: mode,
                ..DynamicConfig::default()
            };
            let v = serde_json::to_value(&d).expect("serialize");
            assert_eq!(v["synchronous_mode"], json);
            let back: DynamicConfig = serde_json::from_value(v).expect("deserialize");
            assert_eq!(back.synchronous_mode, mode);
        }
    }
}
