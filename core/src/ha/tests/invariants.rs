//! The invariants the properties and the simulation check: on one node's decision
//! ([`check_node`]), across the nodes of one cluster ([`check_cluster`]), and for elections,
//! hand-overs and manual failovers. Lock ownership, deadlines and eligibility are derived here
//! again rather than with the code under test's helpers.

use super::generators::*;
use super::sync_oracle::{may_be_requested, may_race, may_take_over};
use crate::dcs::Cluster;
use crate::ha::policy::{DefaultPolicy, Health};
use crate::ha::{AcquireReason, Action, Chosen, DataDir, Decision, DemoteMode, World, decide};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::cmp::Reverse;

/// The decision has an action that `pred` accepts.
fn has(d: &Decision, pred: impl Fn(&Action) -> bool) -> bool {
    d.actions.iter().any(pred)
}

/// The leader an action points the node at, if any.
fn named_leader(a: &Action) -> Option<&str> {
    match a {
        Action::CloneFrom { source: leader }
        | Action::Reclone { leader }
        | Action::Rewind { leader } => Some(leader),
        Action::Follow { upstream } | Action::StartReplica { upstream } => upstream.as_deref(),
        _ => None,
    }
}

/// The write deadline has not passed (written here rather than calling `World::lease_valid`,
/// so that the oracle does not share the code under test).
fn deadline_valid(w: &World) -> bool {
    matches!(w.memory.write_deadline_ms, Some(d) if w.now_ms < d)
}

/// In the true DCS state, the leader key carries this node's name and current lease, and its
/// write deadline has not passed.
fn truly_holds_lock(w: &World, truth: &Cluster) -> bool {
    truth
        .leader
        .as_ref()
        .is_some_and(|l| l.name == w.me && Some(l.lease) == w.memory.our_lease)
        && deadline_valid(w)
}

/// Eligibility by Patroni's rules, written independently of `policy.rs`.
fn eligible(w: &World, truth: &Cluster) -> bool {
    let s = &w.settings;
    w.pg.running
        && w.pg.in_recovery == Some(true)
        && !s.nofailover
        && s.failover_priority > 0
        && !matches!(w.health, Health::Failed(_))
        && w.pg.wal_position.is_some_and(|wal| {
            truth
                .status
                .optime
                .is_none_or(|o| o.saturating_sub(wal) <= s.maximum_lag_on_failover)
        })
        && (!s.check_timeline || w.pg.timeline.is_some_and(|t| t >= truth.timeline()))
}

fn sysid_mismatch(w: &World, truth: &Cluster) -> bool {
    match &w.pg.data_dir {
        DataDir::Initialized { sysid, .. } => truth
            .initialize
            .as_deref()
            .is_some_and(|i| !i.is_empty() && i != sysid),
        _ => false,
    }
}

/// Invariants on one node's decision. `truth` is the real DCS state (`w.cluster`, when
/// present, is that same state).
pub(super) fn check_node(w: &World, truth: &Cluster, d: &Decision) -> Result<(), TestCaseError> {
    let ctx = || {
        format!(
            "node {} (pg running={} in_recovery={:?}, lease={:?}, deadline={:?}, now={}, dcs={}) \
             got {:?}: {}",
            w.me,
            w.pg.running,
            w.pg.in_recovery,
            w.memory.our_lease,
            w.memory.write_deadline_ms,
            w.now_ms,
            w.cluster.is_some(),
            d.actions,
            d.summary
        )
    };
    let dcs = w.cluster.is_some();
    let holder = truly_holds_lock(w, truth);
    let promote = has(d, |a| matches!(a, Action::Promote));
    let start_primary = has(d, |a| matches!(a, Action::StartPrimary));
    let demote = has(d, |a| matches!(a, Action::Demote { .. }));
    let renew = has(d, |a| matches!(a, Action::KeepLeading));
    let fatal = has(d, |a| matches!(a, Action::Fatal(_)));

    prop_assert!(!d.summary.is_empty(), "empty summary: {}", ctx());
    prop_assert_eq!(
        &decide(w, &DefaultPolicy),
        d,
        "not deterministic: {}",
        ctx()
    );

    // An election that moves the leader key is explained: it carries its record, naming the
    // winner the action names, ranked first unless an operator named it.
    for a in &d.actions {
        let winner = match a {
            Action::AcquireLeader {
                reason: AcquireReason::LeaderMissing | AcquireReason::RequestedFailover,
            } => w.me.as_str(),
            Action::HandOver { to, .. } => to.as_str(),
            _ => continue,
        };
        let e = d.election.as_ref();
        prop_assert!(
            e.is_some_and(|e| e.winner == winner),
            "unexplained: {}",
            ctx()
        );
        if let Some(e) = e
            && matches!(e.chosen, Chosen::Failover | Chosen::HandOver)
        {
            prop_assert!(
                e.ranked.iter().any(|p| p.member == winner),
                "the winner is not in the recorded ranking: {}",
                ctx()
            );
        }
    }

    // A standby cluster is never writable: nothing promotes, starts a primary or runs initdb;
    // only the lock holder follows the remote primary.
    if w.settings.standby_cluster {
        prop_assert!(
            !promote && !start_primary && !has(d, |a| matches!(a, Action::Bootstrap)),
            "a standby cluster makes a writable primary: {}",
            ctx()
        );
    } else {
        prop_assert!(
            !has(d, |a| matches!(
                a,
                Action::BootstrapStandby | Action::StartStandbyLeader | Action::FollowRemote
            ) || matches!(
                a,
                Action::Demote {
                    mode: DemoteMode::ToStandbyLeader
                }
            )),
            "standby-cluster action outside a standby cluster: {}",
            ctx()
        );
    }
    if has(d, |a| {
        matches!(a, Action::StartStandbyLeader | Action::FollowRemote)
    }) {
        prop_assert!(
            dcs && holder,
            "follows the remote primary without the lock: {}",
            ctx()
        );
    }

    // Never both ways at once.
    prop_assert!(!(promote && demote), "Promote and Demote: {}", ctx());
    prop_assert!(
        !(start_primary && demote),
        "StartPrimary and Demote: {}",
        ctx()
    );

    // Only the true lock holder becomes primary.
    if promote || start_primary {
        prop_assert!(dcs && holder, "promoted without the lock: {}", ctx());
        prop_assert!(!w.pg.is_primary(), "promoting a primary: {}", ctx());
    }
    if promote {
        prop_assert!(w.pg.is_replica(), "promoting a non-replica: {}", ctx());
    }
    if start_primary {
        prop_assert!(!w.pg.running, "StartPrimary while running: {}", ctx());
    }

    // RenewLease: the holder, or a primary without the DCS within its write deadline.
    // Failsafe mode: only a round every member accepted, sent before the deadline passed,
    // keeps a primary without a renewal (see `failsafe_invariants`).
    let failsafe = w.failsafe_covers()
        && w.pg.is_primary()
        && w.cluster
            .as_ref()
            .and_then(|c| c.leader_name())
            .is_none_or(|l| l == w.me);
    if renew && failsafe && (w.memory.renewal_failed || !dcs) {
        prop_assert!(
            deadline_valid(w),
            "failsafe KeepLeading past the deadline: {}",
            ctx()
        );
    } else if renew {
        prop_assert!(
            !w.memory.renewal_failed,
            "KeepLeading after a failed lease renewal: {}",
            ctx()
        );
        if dcs {
            prop_assert!(holder, "RenewLease without the lock: {}", ctx());
        } else {
            prop_assert!(
                w.pg.is_primary() && deadline_valid(w),
                "RenewLease without DCS: {}",
                ctx()
            );
            prop_assert!(
                holder,
                "keeps running as primary without the DCS although the leader key is {:?}: {}",
                truth.leader,
                ctx()
            );
        }
    }

    // Only eligible members race for the lock; an operator's failover names one, a paused
    // cluster lets only a running primary take a free lock.
    let paused = w.settings.paused;
    let request = truth
        .failover
        .as_ref()
        .map(|(f, _)| f)
        .filter(|f| !f.is_empty());
    let failover_to_me = request.is_some_and(|f| {
        f.member.as_deref() == Some(w.me.as_str())
            && f.scheduled_at.as_deref().is_none_or(|at| {
                crate::dcs::parse_iso8601_ms(at)
                    .is_some_and(|t| t <= w.now_unix_ms && w.now_unix_ms - t <= 1_500)
            })
    });
    if has(d, |a| matches!(a, Action::AcquireLeader { .. })) {
        prop_assert!(
            dcs && truth.leader.is_none(),
            "racing while locked: {}",
            ctx()
        );
        prop_assert!(
            matches!(&w.pg.data_dir, DataDir::Initialized { .. }) && !sysid_mismatch(w, truth),
            "racing with a foreign data directory: {}",
            ctx()
        );
        if w.pg.is_primary() {
            prop_assert!(
                paused
                    || (failsafe
                        && has(d, |a| matches!(
                            a,
                            Action::AcquireLeader {
                                reason: AcquireReason::FailsafeRetake
                            }
                        ))),
                "a primary races outside pause and failsafe: {}",
                ctx()
            );
        } else if failover_to_me {
            prop_assert!(
                w.pg.is_replica() && !w.settings.nofailover && w.settings.failover_priority > 0,
                "requested candidate races although it cannot be promoted: {}",
                ctx()
            );
            prop_assert!(
                may_be_requested(w, truth, &w.me),
                "requested candidate races without the proof synchronous mode needs: {}",
                ctx()
            );
        } else {
            prop_assert!(!paused, "racing in a paused cluster: {}", ctx());
            failsafe_may_race(w).map_err(|e| TestCaseError::fail(format!("{e}: {}", ctx())))?;
            prop_assert!(eligible(w, truth), "ineligible node races: {}", ctx());
            prop_assert!(
                may_race(w, truth),
                "races although synchronous mode does not let it be promoted: {}",
                ctx()
            );
            prop_assert!(
                !w.peers
                    .values()
                    .flatten()
                    .any(|p| !p.in_recovery && p.state == "running"),
                "racing while a reachable primary is alive: {}",
                ctx()
            );
        }
    }

    // Maintenance mode: nothing is started, stopped, demoted or rewound automatically.
    if paused {
        for a in &d.actions {
            prop_assert!(
                !matches!(
                    a,
                    Action::Demote { .. }
                        | Action::Rewind { .. }
                        | Action::Reclone { .. }
                        | Action::StartPrimary
                        | Action::StartReplica { .. }
                        | Action::Bootstrap
                ),
                "{:?} in a paused cluster: {}",
                a,
                ctx()
            );
        }
    }

    // A hand-over: only by the lock holder running as primary, to a reachable, healthy,
    // running replica; for a due request, or after enough failed health verdicts.
    if let Some(to) = d.actions.iter().find_map(|a| match a {
        Action::HandOver { to, .. } => Some(to),
        _ => None,
    }) {
        prop_assert!(holder && w.pg.is_primary(), "HandOver: {}", ctx());
        prop_assert_ne!(to.as_str(), w.me.as_str(), "HandOver to myself: {}", ctx());
        prop_assert!(
            w.pg.streaming.contains(to),
            "HandOver to a non-streaming member: {}",
            ctx()
        );
        prop_assert!(
            w.peers
                .get(to)
                .and_then(Option::as_ref)
                .is_some_and(|p| p.in_recovery
                    && p.state == "running"
                    && p.healthy
                    && !p.nofailover),
            "HandOver to a member that cannot take over: {}",
            ctx()
        );
        prop_assert!(
            may_take_over(w, truth, to),
            "HandOver to a member synchronous mode does not allow: {}",
            ctx()
        );
        match request {
            Some(f) => {
                prop_assert!(
                    f.leader.as_deref().is_none_or(|l| l == w.me),
                    "HandOver for a request naming another leader: {}",
                    ctx()
                );
                if let Some(c) = f.member.as_deref() {
                    prop_assert_eq!(to.as_str(), c, "HandOver to another than asked: {}", ctx());
                }
                if paused {
                    prop_assert!(
                        f.member.is_some(),
                        "paused HandOver without a candidate: {}",
                        ctx()
                    );
                }
            }
            None => prop_assert!(
                !paused
                    && matches!(w.health, Health::Failed(_))
                    && w.memory.failed_health_loops >= w.settings.failed_loops_before_handover,
                "HandOver without a request or a failed health: {}",
                ctx()
            ),
        }
    }
    if has(d, |a| matches!(a, Action::ClearFailover)) {
        // The leader answers requests; a candidate whose pre_promote script vetoed its
        // promotion declines one naming it.
        let declined = request.is_some_and(|f| f.member.as_deref() == Some(w.me.as_str()))
            && w.memory
                .promotion_veto_in_force(w.now_ms, w.settings.ttl_ms);
        prop_assert!(
            (holder && request.is_some()) || declined,
            "ClearFailover: {}",
            ctx()
        );
    }

    // A lost lease always leads to demotion.
    if demote {
        prop_assert!(w.pg.is_primary(), "demoting a non-primary: {}", ctx());
    }
    if w.pg.is_primary() && !fatal && paused {
        prop_assert!(!demote, "demoted in a paused cluster: {}", ctx());
    } else if w.pg.is_primary() && !fatal {
        let key = truth.leader.as_ref();
        let stale_key_with_my_name =
            key.is_some_and(|l| l.name == w.me && Some(l.lease) != w.memory.our_lease);
        let unknown_dir = matches!(w.pg.data_dir, DataDir::Unknown(_));
        if failsafe && (!dcs || (w.memory.renewal_failed && !unknown_dir)) {
            // Failsafe mode: every member accepted a round sent in time.
            prop_assert_eq!(
                &d.actions,
                &vec![Action::KeepLeading],
                "failsafe mode covers this primary: {}",
                ctx()
            );
        } else if failsafe && key.is_none() && !unknown_dir {
            prop_assert_eq!(
                &d.actions,
                &vec![Action::AcquireLeader {
                    reason: AcquireReason::FailsafeRetake
                }],
                "failsafe leader does not take the free key again: {}",
                ctx()
            );
        } else if w.memory.renewal_failed {
            // The lease could not be renewed within retry_timeout: stop taking writes now,
            // whatever the deadline says.
            prop_assert_eq!(
                &d.actions,
                &vec![Action::Demote {
                    mode: DemoteMode::Offline
                }],
                "a primary whose lease renewal failed keeps taking writes: {}",
                ctx()
            );
        } else if !dcs {
            if deadline_valid(w)
                && w.memory.our_lease.is_some()
                && w.memory.known_lock_lease == w.memory.our_lease
            {
                prop_assert!(!demote, "demoted within the write deadline: {}", ctx());
            } else {
                prop_assert_eq!(
                    &d.actions,
                    &vec![Action::Demote {
                        mode: DemoteMode::Offline
                    }],
                    "past the deadline without DCS: {}",
                    ctx()
                );
            }
        } else if holder
            && w.settings.standby_cluster
            && !paused
            && !matches!(w.pg.data_dir, DataDir::Unknown(_))
        {
            // The section was added: the primary comes back as the standby leader, keeping
            // the key.
            prop_assert_eq!(
                &d.actions,
                &vec![
                    Action::KeepLeading,
                    Action::Demote {
                        mode: DemoteMode::ToStandbyLeader
                    }
                ],
                "a standby cluster's lock holder runs as primary: {}",
                ctx()
            );
        } else if holder {
            prop_assert!(!demote, "lock holder demoted: {}", ctx());
        } else if stale_key_with_my_name {
            // A previous run of this supervisor holds the key under our name: nobody else can
            // hold the lock, re-attaching it is allowed, but not past the write deadline.
            prop_assert!(
                demote || has(d, |a| matches!(a, Action::ReattachLeader)),
                "stale key with my name, neither re-attached nor demoted: {}",
                ctx()
            );
            if !deadline_valid(w) {
                prop_assert!(demote, "past the write deadline, not demoted: {}", ctx());
            }
        } else {
            prop_assert!(
                d.actions.contains(&Action::Demote {
                    mode: DemoteMode::Immediate
                }),
                "running as primary without the lock (leader key {:?}), not demoted: {}",
                key,
                ctx()
            );
        }
    }

    // Fatal exactly for an unusable or foreign data directory (with a DCS view to compare).
    let should_be_fatal =
        dcs && (matches!(w.pg.data_dir, DataDir::Unusable(_)) || sysid_mismatch(w, truth));
    prop_assert_eq!(fatal, should_be_fatal, "Fatal: {}", ctx());
    if fatal {
        prop_assert_eq!(d.actions.len(), 1, "Fatal with other actions: {}", ctx());
    }

    // A data directory that could not be read this loop (EMFILE, an I/O error) never stops the
    // supervisor, and nothing that depends on it is decided: no start, clone, rewind, race or
    // key change. Only a primary without the lock stops taking writes (checked above).
    if matches!(w.pg.data_dir, DataDir::Unknown(_)) {
        prop_assert!(!fatal, "Fatal for an unreadable data directory: {}", ctx());
        prop_assert!(
            d.actions.iter().all(|a| matches!(a, Action::Demote { .. })
                || (!dcs && matches!(a, Action::KeepLeading))),
            "acting on a data directory that could not be read: {}",
            ctx()
        );
    }

    // Actions pointing at a member name the current leader key holder, never myself; only
    // the topology tags point elsewhere: a replica follows the member its `replicatefrom`
    // names, and clones from a running replica tagged `clonefrom`.
    for a in &d.actions {
        if let Some(l) = named_leader(a) {
            prop_assert!(dcs, "{:?} without DCS: {}", a, ctx());
            prop_assert_ne!(l, w.me.as_str(), "{:?} from myself: {}", a, ctx());
            let elsewhere = match a {
                Action::Follow { .. } | Action::StartReplica { .. } => {
                    w.settings.tags.get("replicatefrom").map(String::as_str) == Some(l)
                }
                Action::CloneFrom { .. } => truth.member(l).is_some_and(|m| {
                    crate::dcs::tag_bool(&m.data.tags, "clonefrom")
                        && m.data.state.as_deref() == Some("running")
                }),
                _ => false,
            };
            if !elsewhere {
                prop_assert_eq!(truth.leader_name(), Some(l), "{:?}: {}", a, ctx());
            } else {
                prop_assert!(
                    truth.leader_name().is_some(),
                    "{:?} without a leader: {}",
                    a,
                    ctx()
                );
            }
        }
    }
    // A restore without a leader: only into an empty data directory, only with a method that
    // needs no leader, and only when this node sees no leader to copy from.
    if has(d, |a| matches!(a, Action::RestoreReplica)) {
        prop_assert!(
            matches!(w.pg.data_dir, DataDir::Empty),
            "RestoreReplica on data: {}",
            ctx()
        );
        prop_assert!(
            w.settings.clone_without_leader,
            "RestoreReplica without a no_leader method: {}",
            ctx()
        );
        prop_assert!(
            w.cluster.as_ref().is_some_and(|c| c.leader.is_none()),
            "RestoreReplica while a leader key exists: {}",
            ctx()
        );
    }
    // A replica tagged `nostream` is never pointed at anyone.
    if w.settings.tags.get("nostream").is_some_and(|v| v == "true") {
        prop_assert!(
            !d.actions.iter().any(|a| matches!(
                a,
                Action::Follow { upstream: Some(_) } | Action::StartReplica { upstream: Some(_) }
            )),
            "a nostream replica streams: {}",
            ctx()
        );
    }
    // Rewind only a former primary that may be rewound; re-clone only when it may not.
    let was_primary = matches!(
        w.pg.data_dir,
        DataDir::Initialized {
            was_primary: true,
            ..
        }
    );
    // A running replica counts as a former primary until rewound: it may have diverged. So
    // does a replica past the new timeline's fork point.
    let past_fork = w.diverged_from_cluster().is_some();
    let diverged = was_primary || w.pg.former_primary || past_fork;
    if has(d, |a| matches!(a, Action::Rewind { .. })) {
        prop_assert!(
            (!w.pg.running || w.pg.former_primary || past_fork)
                && diverged
                && w.settings.use_pg_rewind
                && !w.memory.rewind_failed,
            "Rewind: {}",
            ctx()
        );
    }
    if has(d, |a| matches!(a, Action::Reclone { .. })) {
        prop_assert!(
            (!w.pg.running || w.pg.former_primary || past_fork)
                && (w.memory.rewind_failed || (diverged && !w.settings.use_pg_rewind)),
            "Reclone: {}",
            ctx()
        );
    }
    if has(d, |a| matches!(a, Action::Follow { .. })) {
        prop_assert!(w.pg.is_replica(), "Follow on a non-replica: {}", ctx());
        prop_assert!(
            !w.pg.former_primary,
            "Follow on a former primary's data, without a rewind: {}",
            ctx()
        );
    }
    if has(d, |a| {
        matches!(a, Action::StartReplica { upstream: Some(_) })
    }) {
        prop_assert!(
            !diverged,
            "a former primary starts following without a rewind: {}",
            ctx()
        );
    }
    if has(d, |a| matches!(a, Action::ReattachLeader)) {
        prop_assert!(
            dcs && truth
                .leader
                .as_ref()
                .is_some_and(|l| l.name == w.me && Some(l.lease) != w.memory.our_lease),
            "ReattachLeader: {}",
            ctx()
        );
    }
    if has(d, |a| matches!(a, Action::ReleaseLeader)) {
        prop_assert!(
            dcs && truth
                .leader
                .as_ref()
                .is_some_and(|l| l.name == w.me && Some(l.lease) == w.memory.our_lease),
            "ReleaseLeader of a key not on my lease: {}",
            ctx()
        );
    }
    if has(d, |a| matches!(a, Action::Bootstrap)) {
        prop_assert!(
            dcs && w.pg.data_dir == DataDir::Empty
                && truth.initialize.is_none()
                && truth.leader.is_none()
                && !w.settings.nofailover,
            "Bootstrap: {}",
            ctx()
        );
        prop_assert!(
            w.settings.failover_priority > 0,
            "failover_priority <= 0 bootstraps: {}",
            ctx()
        );
    }
    if let Some(sysid) = d.actions.iter().find_map(|a| match a {
        Action::WriteInitialize { sysid } => Some(sysid),
        _ => None,
    }) {
        prop_assert!(
            holder && renew && truth.initialize.as_deref().is_none_or(str::is_empty),
            "WriteInitialize: {}",
            ctx()
        );
        prop_assert!(
            matches!(&w.pg.data_dir, DataDir::Initialized { sysid: s, .. } if s == sysid),
            "WriteInitialize with another sysid: {}",
            ctx()
        );
    }
    if !dcs && !paused {
        prop_assert!(
            d.actions.iter().all(|a| matches!(
                a,
                Action::KeepLeading
                    | Action::Demote {
                        mode: DemoteMode::Offline
                    }
            )),
            "acting on the cluster without the DCS: {}",
            ctx()
        );
    }
    Ok(())
}

/// Invariants over the decisions of every node for the same cluster state.
pub(super) fn check_cluster(s: &Scenario, ds: &[Decision]) -> Result<(), TestCaseError> {
    for (w, d) in s.worlds.iter().zip(ds) {
        check_node(w, &s.truth, d)?;
    }
    // Never two nodes told to become primary, and never two (DCS-connected) nodes that are
    // primary after this decision.
    let promoted: Vec<(&str, Option<i64>)> = s
        .worlds
        .iter()
        .zip(ds)
        .filter(|(_, d)| has(d, |a| matches!(a, Action::Promote | Action::StartPrimary)))
        .map(|(w, _)| (w.me.as_str(), w.memory.our_lease))
        .collect();
    prop_assert!(promoted.len() <= 1, "several promoted: {:?}", promoted);
    let primaries: Vec<&str> = s
        .worlds
        .iter()
        .zip(ds)
        .filter(|(w, d)| {
            // A paused cluster demotes nobody: the operator resolves two primaries there.
            w.cluster.is_some()
                && !w.settings.paused
                && (has(d, |a| matches!(a, Action::Promote | Action::StartPrimary))
                    || (w.pg.is_primary()
                        && !has(d, |a| matches!(a, Action::Demote { .. } | Action::Fatal(_)))))
        })
        .map(|(w, _)| w.me.as_str())
        .collect();
    prop_assert!(
        primaries.len() <= 1,
        "several primaries after one round: {:?}",
        primaries
    );
    Ok(())
}

/// With everybody seeing the same unlocked cluster, reaching every peer, and nobody past the
/// backoff: the policy alone picks the racer, so at most one node races, and exactly the best
/// eligible one if any is eligible and no primary is alive.
pub(super) fn check_unlocked_election(s: &Scenario, ds: &[Decision]) -> Result<(), TestCaseError> {
    let racers: Vec<&str> = s
        .worlds
        .iter()
        .zip(ds)
        .filter(|(_, d)| has(d, |a| matches!(a, Action::AcquireLeader { .. })))
        .map(|(w, _)| w.me.as_str())
        .collect();
    prop_assert!(racers.len() <= 1, "several racers: {:?}", racers);

    let rank_key = |w: &World| {
        (
            w.pg.wal_position,
            w.settings.failover_priority,
            Reverse(w.me.clone()),
        )
    };
    let primary_alive = s.worlds.iter().any(|w| w.pg.is_primary());
    let best = s
        .worlds
        .iter()
        .filter(|w| eligible(w, &s.truth) && may_race(w, &s.truth))
        .max_by_key(|w| rank_key(w));
    let expected: Vec<&str> = match best {
        Some(b) if !primary_alive => vec![b.me.as_str()],
        _ => vec![],
    };
    prop_assert_eq!(
        racers,
        expected,
        "primary alive: {}, decisions: {:?}",
        primary_alive,
        s.worlds
            .iter()
            .zip(ds)
            .map(|(w, d)| (&w.me, &d.summary))
            .collect::<Vec<_>>()
    );
    Ok(())
}

/// In a healthy locked cluster: the leader hands over exactly when asked (a due request for
/// it) or when its health failed long enough, and then to the requested candidate if that
/// one is eligible, else to the best eligible replica; nobody else acts on the request.
pub(super) fn check_handover(s: &Scenario, ds: &[Decision]) -> Result<(), TestCaseError> {
    let Some((li, lw)) = s
        .worlds
        .iter()
        .enumerate()
        .find(|(_, w)| truly_holds_lock(w, &s.truth))
    else {
        return Ok(());
    };
    let d = &ds[li];
    if has(d, |a| matches!(a, Action::Fatal(_))) {
        return Ok(());
    }
    let handovers: Vec<&str> = ds
        .iter()
        .flat_map(|d| d.actions.iter())
        .filter_map(|a| match a {
            Action::HandOver { to, .. } => Some(to.as_str()),
            _ => None,
        })
        .collect();
    if lw.settings.standby_cluster && !lw.settings.paused {
        // A standby leader hands nothing over (a primary becoming one keeps the key).
        prop_assert!(
            handovers.is_empty(),
            "a standby cluster hands over to {:?}",
            handovers
        );
        return Ok(());
    }
    let rank_key = |w: &World| {
        (
            w.pg.wal_position,
            w.settings.failover_priority,
            Reverse(w.me.clone()),
        )
    };
    let others_eligible: Vec<&World> = s
        .worlds
        .iter()
        .filter(|w| w.me != lw.me && eligible(w, &s.truth) && lw.pg.streaming.contains(&w.me))
        .filter(|w| may_take_over(lw, &s.truth, &w.me))
        .collect();
    let best = others_eligible
        .iter()
        .max_by_key(|w| rank_key(w))
        .map(|w| w.me.as_str());
    let request = s
        .truth
        .failover
        .as_ref()
        .map(|(f, _)| f)
        .filter(|f| !f.is_empty());
    let paused = lw.settings.paused;
    let expected: Option<&str> = match request {
        Some(f) => {
            let due = f.scheduled_at.as_deref().is_none_or(|at| {
                crate::dcs::parse_iso8601_ms(at)
                    .is_some_and(|t| t <= lw.now_unix_ms && lw.now_unix_ms - t <= 1_500)
            });
            let for_me = f.leader.as_deref().is_none_or(|l| l == lw.me);
            match f.member.as_deref() {
                _ if !due || !for_me => None,
                Some(c) if c == lw.me => None,
                Some(c) => others_eligible.iter().any(|w| w.me == c).then_some(c),
                None if paused => None,
                None => best,
            }
        }
        None if !paused
            && matches!(lw.health, Health::Failed(_))
            && lw.memory.failed_health_loops >= lw.settings.failed_loops_before_handover =>
        {
            best
        }
        None => None,
    };
    prop_assert_eq!(
        handovers.first().copied(),
        expected,
        "leader {}: {:?}: {}",
        lw.me,
        d.actions,
        d.summary
    );
    prop_assert!(handovers.len() <= 1, "several hand-overs: {:?}", handovers);
    if request.is_some() && expected.is_none() {
        // The checks run in this order: the request's leader, its candidate, pause, its time.
        let waits = request.is_some_and(|f| {
            f.leader.as_deref().is_none_or(|l| l == lw.me)
                && f.member.as_deref() != Some(lw.me.as_str())
                && !(paused && f.member.is_none())
                && f.scheduled_at
                    .as_deref()
                    .and_then(crate::dcs::parse_iso8601_ms)
                    .is_some_and(|t| t > lw.now_unix_ms)
        });
        prop_assert_eq!(
            has(d, |a| matches!(a, Action::ClearFailover)),
            !waits,
            "a request that is not carried out is dropped unless it waits for its time: {:?}: {}",
            d.actions,
            d.summary
        );
    }
    Ok(())
}

/// A failover to a candidate that can be promoted: only it races, whatever the ranking. A
/// candidate that cannot: the election goes on as without the request.
pub(super) fn check_manual_failover(s: &Scenario, ds: &[Decision]) -> Result<(), TestCaseError> {
    let Some(c) = s
        .truth
        .failover
        .as_ref()
        .and_then(|(f, _)| f.member.clone())
    else {
        return Ok(());
    };
    let racers: Vec<&str> = s
        .worlds
        .iter()
        .zip(ds)
        .filter(|(_, d)| has(d, |a| matches!(a, Action::AcquireLeader { .. })))
        .map(|(w, _)| w.me.as_str())
        .collect();
    let cand = s.worlds.iter().find(|w| w.me == c);
    let viable = cand.is_some_and(|w| {
        w.pg.is_replica()
            && !matches!(w.health, Health::Failed(_))
            && !w.settings.nofailover
            && w.settings.failover_priority > 0
    });
    let proven = cand.is_some_and(|w| may_be_requested(w, &s.truth, &c));
    if viable && proven {
        prop_assert_eq!(racers, vec![c.as_str()], "failover to {}", c);
        Ok(())
    } else if cand.is_some_and(|w| {
        !proven
            && !w.settings.nofailover
            && w.settings.failover_priority > 0
            && !matches!(w.health, Health::Failed(_))
    }) {
        // It declines to race without the proof; the others elect as without the request
        // (after the backoff, when it was the best).
        prop_assert!(
            !racers.contains(&c.as_str()),
            "failover to {}: {:?}",
            c,
            racers
        );
        prop_assert!(racers.len() <= 1, "several racers: {:?}", racers);
        Ok(())
    } else {
        check_unlocked_election(s, ds)
    }
}

/// Failsafe mode's promise to a leader: a member that accepted its `POST /failsafe` less than
/// `ttl` ago, or that started less than `ttl` ago, does not race; nor does a member missing
/// from a non-empty `failsafe` key.
pub(super) fn failsafe_may_race(w: &World) -> Result<(), String> {
    if !w.settings.failsafe_mode {
        return Ok(());
    }
    let ttl = w.settings.ttl_ms;
    if let Some(p) = &w.memory.failsafe_ping
        && w.now_ms < p.hold_until_ms(ttl)
    {
        return Err(format!(
            "races {} ms after accepting {}'s POST /failsafe",
            w.now_ms - p.received_ms,
            p.leader
        ));
    }
    if let Some(t) = w
        .cluster
        .as_ref()
        .and_then(|c| c.failsafe.as_ref())
        .filter(|t| !t.is_empty())
    {
        if !t.contains_key(&w.me) {
            return Err("races although missing from the failsafe key".into());
        }
        if w.memory.started_ms.is_some_and(|s| w.now_ms < s + ttl) {
            return Err("races less than ttl after its start".into());
        }
    }
    Ok(())
}
