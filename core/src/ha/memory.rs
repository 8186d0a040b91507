//! What the HA loop remembers between two decisions.
//!
//! A [`World`](super::World) is one loop's snapshot; [`Memory`] is the part of it that is not
//! observed afresh but carried over: the lease this process holds and the write deadline its
//! renewals earned, since when the cluster has had no leader, the last leader seen, how many
//! loops in a row the policy judged this node failed, and so on. The supervisor and the
//! simulation in this crate's tests update it through the same methods, one per thing that
//! happened (a lease renewed, the cluster read, a replica start failed), so that the simulation
//! exercises the production rules, the write deadline formula among them.
//!
//! Pure: every time is a millisecond count the caller read from its clock.

use super::failsafe::{FailsafePing, FailsafeRound};
use crate::dcs::{Cluster, Failover};
use std::collections::BTreeMap;

/// The safety margin between the write deadline and the earliest moment the lease can expire
/// in etcd: a fifth of the ttl, at least 1 s and at most 5 s.
pub fn safety_margin_ms(ttl_ms: u64) -> u64 {
    (ttl_ms / 5).clamp(1000, 5000)
}

/// Until when a primary may accept writes after a lease renewal that was *sent* at `sent_ms`
/// (monotonic ms) for a lease of `ttl_ms`: the lease cannot expire in etcd before
/// `sent_ms + ttl_ms`, and the margin absorbs clock rate differences and the guard's reaction.
pub fn write_deadline_ms(sent_ms: u64, ttl_ms: u64) -> u64 {
    (sent_ms + ttl_ms).saturating_sub(safety_margin_ms(ttl_ms))
}

/// The longest wait between two attempts to start a PostgreSQL that keeps failing to start.
pub const MAX_START_BACKOFF_MS: u64 = 300_000;

/// The decision memory: carried from one loop to the next, read by [`decide`](super::decide)
/// through [`World::memory`](super::World::memory).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Memory {
    /// The lease this process holds in the DCS (the last one a renewal reported).
    pub our_lease: Option<i64>,
    /// Until when our PostgreSQL may accept writes: the latest [`write_deadline_ms`] earned
    /// on `our_lease` (monotonic ms). `None` if this process never renewed that lease.
    pub write_deadline_ms: Option<u64>,
    /// The lease the leader key was on, with our name, at the last successful DCS read
    /// (carried over loops in which the DCS cannot be read).
    pub known_lock_lease: Option<i64>,
    /// Since when (monotonic ms) this node has seen the cluster without a leader.
    pub unlocked_since_ms: Option<u64>,
    /// The request in the `failover` key as first seen, and when (monotonic ms): a leader
    /// waits a while for a requested candidate that does not stream yet.
    pub request_seen: Option<(Failover, u64)>,
    /// The last leader this node saw, with the tags of its member key: a crashed leader's
    /// key expires with its lease, and an election still wants to know its zone.
    pub last_leader: Option<(String, BTreeMap<String, String>)>,
    /// How many consecutive loops, the current one included, the policies judged this node
    /// `failed`.
    pub failed_health_loops: u32,
    /// Consecutive failed starts of PostgreSQL.
    pub replica_start_failures: u32,
    /// When (monotonic ms) the last start failed, and why (the end of PostgreSQL's log).
    pub start_failed: Option<(u64, String)>,
    /// The data directory was already rewound or re-cloned during this run of failed starts:
    /// the data is not the cause, so it is not moved aside again.
    pub recloned_after_start_failures: bool,
    /// When (monotonic ms) this node last gave up a hand-over because the target did not
    /// confirm its last WAL: a failed leader waits before it tries again.
    pub handover_aborted_ms: Option<u64>,
    /// A rewind against the current leader failed: the data directory is re-cloned instead.
    pub rewind_failed: bool,
    /// The last attempt to renew the lease failed (within `retry_timeout`): a primary stops
    /// taking writes at once.
    pub renewal_failed: bool,
    /// Synchronous standbys not yet published in the `sync` key, with the flush LSN each
    /// must reach first ([`sync::SyncPlan::Apply`](super::sync::SyncPlan::Apply)).
    pub sync_catching_up: BTreeMap<String, u64>,
    /// Quorum commit: the primary's flush position read once the setting in force took effect
    /// ([`quorum::QuorumPlan::barrier`](super::quorum::QuorumPlan::barrier)); cleared when this
    /// node becomes primary.
    pub quorum_barrier: Option<super::quorum::Barrier>,
    /// When (monotonic ms) the `pre_promote` script last vetoed this node's promotion: the
    /// node releases the leader key and stays out of elections for a `ttl` from then.
    pub promotion_vetoed_ms: Option<u64>,
    /// The last round of `POST /failsafe` this node sent as the leader without the DCS
    /// (cleared once the leader key is read on our lease again).
    pub failsafe_round: Option<FailsafeRound>,
    /// The last leader's `POST /failsafe` this node accepted.
    pub failsafe_ping: Option<FailsafePing>,
    /// When (monotonic ms) this supervisor started.
    pub started_ms: Option<u64>,
}

/// What a DCS read changed that the supervisor reports to the policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The cluster has just become leaderless (it had a leader, or this is the first read):
    /// the name of the last leader seen, if any.
    pub leader_gone: Option<Option<String>>,
}

impl Memory {
    /// A lease renewal sent at `sent_ms` (monotonic ms) succeeded: `lease` is alive for at
    /// least `ttl_ms` from then. A new lease starts a new deadline; on the same lease the
    /// deadline only moves forward.
    pub fn lease_renewed(&mut self, lease: i64, sent_ms: u64, ttl_ms: u64) {
        if self.our_lease != Some(lease) {
            self.write_deadline_ms = None;
        }
        self.our_lease = Some(lease);
        self.renewal_failed = false;
        let d = write_deadline_ms(sent_ms, ttl_ms);
        self.write_deadline_ms = Some(self.write_deadline_ms.map_or(d, |old| old.max(d)));
    }

    /// The lease could not be renewed within `retry_timeout`. The deadline earned earlier
    /// stands (the lease may still be alive), but a primary demotes.
    pub fn lease_renewal_failed(&mut self) {
        self.renewal_failed = true;
    }

    /// The cluster was read from the DCS at `now_ms`: remember the leader and its tags, the
    /// lease the leader key has when it carries our name, since when there has been no
    /// leader, and since when the current `failover` request has been there.
    pub fn cluster_observed(&mut self, me: &str, c: &Cluster, now_ms: u64) -> Observed {
        if let Some(m) = c.leader_name().and_then(|l| c.member(l)) {
            let tags = m
                .data
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), crate::dcs::json_scalar(v)))
                .collect();
            self.last_leader = Some((m.name.clone(), tags));
        }
        self.known_lock_lease = c.leader.as_ref().filter(|l| l.name == me).map(|l| l.lease);
        if self.known_lock_lease.is_some() && self.known_lock_lease == self.our_lease {
            // The key is ours on our lease again: the outage a failsafe round covered is over.
            self.failsafe_round = None;
        }
        let req = c
            .failover
            .as_ref()
            .map(|(f, _)| f)
            .filter(|f| !f.is_empty());
        match (req, &self.request_seen) {
            (None, _) => self.request_seen = None,
            (Some(f), Some((seen, _))) if seen == f => {}
            (Some(f), _) => self.request_seen = Some((f.clone(), now_ms)),
        }
        let mut observed = Observed { leader_gone: None };
        if c.leader.is_none() {
            if self.unlocked_since_ms.is_none() {
                observed.leader_gone = Some(self.last_leader.as_ref().map(|(n, _)| n.clone()));
            }
            self.unlocked_since_ms.get_or_insert(now_ms);
        } else {
            self.unlocked_since_ms = None;
        }
        observed
    }

    /// The cluster could not be read this loop: the leaderless time starts again at the next
    /// read (a node that could not see the DCS has not seen the leader missing).
    pub fn cluster_unreadable(&mut self) {
        self.unlocked_since_ms = None;
    }

    /// Since when (monotonic ms) the current `failover` request has been seen.
    pub fn request_since_ms(&self) -> Option<u64> {
        self.request_seen.as_ref().map(|(_, t)| *t)
    }

    /// The policies judged this node this loop; returns the count of consecutive `failed`
    /// verdicts, this one included.
    pub fn health_judged(&mut self, failed: bool) -> u32 {
        self.failed_health_loops = if failed {
            self.failed_health_loops.saturating_add(1)
        } else {
            0
        };
        self.failed_health_loops
    }

    /// PostgreSQL started.
    pub fn replica_started(&mut self) {
        self.replica_start_failures = 0;
        self.start_failed = None;
        self.recloned_after_start_failures = false;
    }

    /// A start as a replica failed; returns the count of consecutive failures. From the
    /// second one on, a data directory that does not start as this leader's replica (one that
    /// forked off its timeline, say) is treated as a former primary and rewound.
    pub fn replica_start_failed(&mut self, now_ms: u64, cause: String) -> u32 {
        self.replica_start_failures += 1;
        self.start_failed = Some((now_ms, cause));
        self.replica_start_failures
    }

    /// The data directory is rewound or re-cloned now; if that is because starts failed, it
    /// is not done again for the same run of failures (one copy moved aside per cause).
    pub fn rewinding_or_recloning(&mut self) {
        if self.replica_start_failures >= 2 {
            self.recloned_after_start_failures = true;
        }
    }

    /// After two failed starts in a row, how long until the next attempt (from `now_ms`):
    /// `loop_wait` doubling with each further failure, at most five minutes. `None`: start now.
    pub fn start_backoff_ms(&self, now_ms: u64, loop_wait_ms: u64) -> Option<u64> {
        let (at, _) = self.start_failed.as_ref()?;
        let n = self.replica_start_failures.checked_sub(2)?;
        let delay = loop_wait_ms
            .saturating_mul(1u64 << n.min(16))
            .min(MAX_START_BACKOFF_MS);
        let until = at.saturating_add(delay);
        (now_ms < until).then(|| until - now_ms)
    }

    /// The `pre_promote` script exited non-zero (or could not run) at `now_ms`: the promotion
    /// did not happen.
    pub fn promotion_vetoed(&mut self, now_ms: u64) {
        self.promotion_vetoed_ms = Some(now_ms);
    }

    /// Whether a veto of the `pre_promote` script at most `ttl_ms` ago still keeps this node
    /// from leading (Patroni's backoff after a failed `pre_promote`).
    pub fn promotion_veto_in_force(&self, now_ms: u64, ttl_ms: u64) -> bool {
        self.promotion_vetoed_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < ttl_ms)
    }

    /// A hand-over was given up at `now_ms`.
    pub fn handover_aborted(&mut self, now_ms: u64) {
        self.handover_aborted_ms = Some(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dcs::{Leader, Member, MemberData};

    #[test]
    fn margin_bounds() {
        assert_eq!(safety_margin_ms(10_000), 2000);
        assert_eq!(safety_margin_ms(5_000), 1000);
        assert_eq!(safety_margin_ms(60_000), 5000);
    }

    #[test]
    fn a_renewal_moves_the_deadline_forward_and_a_new_lease_starts_over() {
        let mut m = Memory::default();
        m.lease_renewed(1, 10_000, 10_000);
        assert_eq!(m.write_deadline_ms, Some(18_000));
        // A reply that arrives late for an earlier send never moves the deadline back.
        m.lease_renewed(1, 9_000, 10_000);
        assert_eq!(m.write_deadline_ms, Some(18_000));
        m.lease_renewed(1, 12_000, 10_000);
        assert_eq!(m.write_deadline_ms, Some(20_000));
        m.lease_renewed(2, 11_000, 10_000);
        assert_eq!((m.our_lease, m.write_deadline_ms), (Some(2), Some(19_000)));
    }

    #[test]
    fn failed_starts_back_off_doubling_up_to_five_minutes_and_reclone_once() {
        let mut m = Memory::default();
        assert_eq!(m.replica_start_failed(1_000, "boom".into()), 1);
        assert_eq!(
            m.start_backoff_ms(1_000, 1_000),
            None,
            "one failure: retry at once"
        );
        m.replica_start_failed(2_000, "boom".into());
        assert_eq!(m.start_backoff_ms(2_000, 1_000), Some(1_000));
        m.rewinding_or_recloning();
        assert!(m.recloned_after_start_failures);
        m.replica_start_failed(10_000, "boom".into());
        assert_eq!(m.start_backoff_ms(10_500, 1_000), Some(1_500));
        for t in 0..20 {
            m.replica_start_failed(20_000 + t, "boom".into());
        }
        assert_eq!(
            m.start_backoff_ms(20_019, 1_000),
            Some(MAX_START_BACKOFF_MS)
        );
        m.replica_started();
        assert_eq!(
            (
                m.replica_start_failures,
                m.start_failed.is_none(),
                m.recloned_after_start_failures
            ),
            (0, true, false)
        );
    }

    #[test]
    fn a_read_without_leader_starts_the_unlocked_clock_once() {
        let mut m = Memory::default();
        let mut c = Cluster {
            leader: Some(Leader {
                name: "a".into(),
                lease: 5,
                mod_revision: 1,
            }),
            members: vec![Member {
                name: "a".into(),
                data: MemberData::default(),
                lease: 5,
                mod_revision: 1,
            }],
            ..Cluster::default()
        };
        assert_eq!(m.cluster_observed("a", &c, 100).leader_gone, None);
        assert_eq!(m.known_lock_lease, Some(5));
        c.leader = None;
        assert_eq!(
            m.cluster_observed("a", &c, 200).leader_gone,
            Some(Some("a".into()))
        );
        assert_eq!(m.cluster_observed("a", &c, 300).leader_gone, None);
        assert_eq!(m.unlocked_since_ms, Some(200));
        assert_eq!(m.known_lock_lease, None);
    }
}
