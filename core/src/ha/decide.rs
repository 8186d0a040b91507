//! [`decide`]: one decision from one [`World`], by the state of the local data directory and
//! PostgreSQL (empty, stopped, primary, replica) and whether the DCS could be read.

use super::elect::elect;
use super::election::{Chosen, Election};
use super::failsafe;
use super::policy::{ElectionReason, Health, Policy, Ranking};
use super::ranking::{streaming_only, sync_only};
use super::request::leader_request;
use super::standby;
use super::{AcquireReason, Action, DataDir, Decision, DemoteMode, HandOverReason, World};
use crate::dcs::Cluster;

/// After an aborted hand-over, a failed leader waits this long before it tries again.
pub const HANDOVER_RETRY_MS: u64 = 60_000;

/// Decide what to do this cycle.
pub fn decide(w: &World, policy: &dyn Policy) -> Decision {
    let Some(cluster) = &w.cluster else {
        return decide_without_dcs(w);
    };
    match &w.pg.data_dir {
        DataDir::Unusable(why) => Decision::new(
            format!("refusing to touch the data directory: {why}"),
            vec![Action::Fatal(why.clone())],
        ),
        DataDir::Unknown(why) => decide_unknown(w, why),
        DataDir::Empty => decide_empty(w, cluster),
        DataDir::Initialized { sysid, was_primary } => {
            if let Some(init) = cluster.initialize.as_deref()
                && !init.is_empty()
                && init != sysid
            {
                let msg = format!(
                    "the data directory's system identifier {sysid} differs from the cluster's {init} in the DCS: \
                     this data directory belongs to another cluster; move it aside or fix `scope`"
                );
                return Decision::new(msg.clone(), vec![Action::Fatal(msg)]);
            }
            if !w.pg.running {
                decide_stopped(w, *was_primary)
            } else if w.pg.is_primary() {
                decide_primary(w, cluster, sysid, policy)
            } else {
                decide_replica(w, policy)
            }
        }
    }
}

fn decide_without_dcs(w: &World) -> Decision {
    if w.pg.is_primary() && w.settings.paused {
        return Decision::new(
            "DCS is not accessible; the cluster is paused: not demoting",
            vec![],
        );
    }
    if w.pg.is_primary() {
        if w.memory.renewal_failed {
            if let Some(d) = failsafe::leading_without_dcs(w) {
                return d;
            }
            return match failsafe::refused_reason(w) {
                Some(why) => Decision::new(
                    why,
                    vec![Action::Demote {
                        mode: DemoteMode::Offline,
                    }],
                ),
                None => renewal_failed(),
            };
        }
        // Only a deadline renewed on the lease that carries the leader key counts.
        if w.lease_valid()
            && w.memory.our_lease.is_some()
            && w.memory.known_lock_lease == w.memory.our_lease
        {
            Decision::new(
                format!(
                    "DCS is not accessible; lease valid for {} ms more, still the leader",
                    w.memory
                        .write_deadline_ms
                        .unwrap_or(0)
                        .saturating_sub(w.now_ms)
                ),
                vec![Action::KeepLeading],
            )
        } else if let Some(d) = failsafe::leading_without_dcs(w) {
            d
        } else {
            Decision::new(
                "DCS is not accessible and the lease may have expired: demoting to read-only",
                vec![Action::Demote {
                    mode: DemoteMode::Offline,
                }],
            )
        }
    } else {
        Decision::new("DCS is not accessible", vec![])
    }
}

/// The data directory could not be read this loop: decide nothing that depends on it (no
/// start, clone, rewind, race or key change) and never stop the supervisor; the next loop
/// reads it again. A primary without the lock still stops taking writes, which needs nothing
/// from the directory; a primary with the lock keeps its lease (renewed before `decide`).
fn decide_unknown(w: &World, why: &str) -> Decision {
    if w.pg.is_primary() && !w.settings.paused {
        if w.memory.renewal_failed {
            return renewal_failed();
        }
        if !w.holds_lock() {
            return Decision::new(
                format!(
                    "demoting: running as primary without the lock (the data directory could not be read: {why})"
                ),
                vec![Action::Demote {
                    mode: DemoteMode::Immediate,
                }],
            );
        }
    }
    Decision::new(
        format!(
            "the data directory could not be read this loop ({why}): deciding nothing until it can"
        ),
        vec![],
    )
}

fn decide_empty(w: &World, cluster: &Cluster) -> Decision {
    if let Some(l) = cluster.leader.as_ref().filter(|l| l.name == w.me) {
        if Some(l.lease) == w.memory.our_lease {
            return Decision::new(
                "data directory is empty but the leader key has my name: releasing it",
                vec![Action::ReleaseLeader],
            );
        }
        return Decision::new(
            "data directory is empty and the leader key has my name on another lease (another process with my name, or my previous run): not touching it until it expires",
            vec![],
        );
    }
    if let Some(leader) = w.other_leader() {
        let source = w.clone_source_under(leader);
        let why = if source == leader {
            format!("cloning a replica from leader {leader}")
        } else {
            format!("cloning a replica from {source}, a replica tagged clonefrom")
        };
        return Decision::new(why, vec![Action::CloneFrom { source }]);
    }
    if w.settings.paused {
        return Decision::new(
            "the cluster is paused: not bootstrapping; waiting for a leader to clone from",
            vec![],
        );
    }
    if cluster.initialize.is_none() && !w.settings.nofailover && w.settings.failover_priority > 0 {
        if w.settings.standby_cluster {
            return standby::bootstrap();
        }
        return Decision::new(
            "no cluster yet: racing to bootstrap",
            vec![Action::Bootstrap],
        );
    }
    if w.settings.clone_without_leader && cluster.initialize.as_deref() != Some("") {
        return Decision::new(
            "no leader to copy from: creating the replica with a method that needs none (no_leader)",
            vec![Action::RestoreReplica],
        );
    }
    Decision::new("waiting for a leader to bootstrap or to clone from", vec![])
}

fn decide_stopped(w: &World, was_primary: bool) -> Decision {
    let was_primary = was_primary || w.pg.former_primary;
    if w.settings.paused {
        if w.cluster
            .as_ref()
            .and_then(|c| c.leader.as_ref())
            .is_some_and(|l| l.name == w.me && Some(l.lease) == w.memory.our_lease)
        {
            return Decision::new(
                "the cluster is paused and PostgreSQL is not running: releasing the leader key",
                vec![Action::ReleaseLeader],
            );
        }
        return Decision::new(
            "the cluster is paused: PostgreSQL is not running and is left stopped",
            vec![],
        );
    }
    if w.holds_lock() && w.settings.standby_cluster {
        return standby::lead_stopped();
    }
    if w.holds_lock() {
        return if was_primary {
            Decision::new(
                "PostgreSQL is not running and I hold the lock: starting as primary",
                vec![Action::KeepLeading, Action::StartPrimary],
            )
        } else {
            Decision::new(
                "PostgreSQL is not running and I hold the lock: starting, then promoting",
                vec![Action::KeepLeading, Action::StartReplica { upstream: None }],
            )
        };
    }
    if w.leader_is_me_other_lease() {
        return Decision::new(
            "the leader key has my name from an earlier run: re-attaching it",
            vec![Action::ReattachLeader],
        );
    }
    if let Some(wait) = w.memory.start_backoff_ms(w.now_ms, w.settings.loop_wait_ms) {
        let why = w
            .memory
            .start_failed
            .as_ref()
            .map(|(_, why)| why.as_str())
            .unwrap_or("unknown");
        return Decision::new(
            format!(
                "PostgreSQL failed to start {} times in a row ({why}): trying again in {} s",
                w.memory.replica_start_failures,
                wait.div_ceil(1000)
            ),
            vec![],
        );
    }
    if let Some(leader) = w.other_leader() {
        let leader = leader.to_string();
        if w.memory.rewind_failed || (was_primary && !w.settings.use_pg_rewind) {
            return Decision::new(
                format!(
                    "former primary cannot rewind: moving the data directory aside and cloning from {leader}"
                ),
                vec![Action::Reclone { leader }],
            );
        }
        if was_primary {
            if !w.leader_runs_as_primary(&leader) {
                return Decision::new(
                    format!(
                        "former primary: waiting for leader {leader} to run as primary before rewinding from it"
                    ),
                    vec![],
                );
            }
            return Decision::new(
                format!("former primary: rewinding from leader {leader} before following it"),
                vec![Action::Rewind { leader }],
            );
        }
        let upstream = w.upstream_under(&leader);
        let why = match upstream.as_deref() {
            Some(u) if u == leader => format!("starting as a replica of {leader}"),
            Some(u) => {
                format!("starting as a replica of {u} (replicatefrom), under leader {leader}")
            }
            None => format!(
                "starting as a replica of {leader} with WAL from the archive only (nostream)"
            ),
        };
        return Decision::new(why, vec![Action::StartReplica { upstream }]);
    }
    Decision::new(
        "no leader: starting PostgreSQL read-only to take part in the election",
        vec![Action::StartReplica { upstream: None }],
    )
}

/// A primary that could not renew its lease within `retry_timeout` stops taking writes at once
/// and runs read-only (as Patroni demotes when the DCS fails outside failsafe mode): the write
/// deadline is the guard's backstop, not the plan, and another node may be elected as soon as
/// the lease expires.
fn renewal_failed() -> Decision {
    Decision::new(
        "could not renew the leader lease within retry_timeout: demoting to read-only",
        vec![Action::Demote {
            mode: DemoteMode::Offline,
        }],
    )
}

fn decide_primary(w: &World, cluster: &Cluster, sysid: &str, policy: &dyn Policy) -> Decision {
    if w.memory.renewal_failed && !w.settings.paused {
        return failsafe::leading_without_dcs(w).unwrap_or_else(renewal_failed);
    }
    if w.holds_lock() && w.settings.standby_cluster && !w.settings.paused {
        return standby::lead_primary();
    }
    if w.holds_lock() {
        let mut actions = vec![Action::KeepLeading];
        if cluster.initialize.as_deref().is_none_or(str::is_empty) {
            actions.push(Action::WriteInitialize {
                sysid: sysid.to_string(),
            });
        }
        if let Some(req) = w.request() {
            let (summary, more, election) = leader_request(w, req, policy);
            actions.extend(more);
            let d = Decision::new(summary, actions);
            return match election {
                Some(e) => d.with_election(e),
                None => d,
            };
        }
        if let Health::Failed(why) = &w.health
            && w.memory.failed_health_loops >= w.settings.failed_loops_before_handover.max(1)
        {
            if w.settings.paused {
                return Decision::new(
                    format!(
                        "my policy judges me failed ({why}), but the cluster is paused: staying leader"
                    ),
                    actions,
                );
            }
            if let Some(at) = w.memory.handover_aborted_ms
                && w.now_ms.saturating_sub(at) < HANDOVER_RETRY_MS
            {
                return Decision::new(
                    format!(
                        "my policy judges me failed ({why}); the last hand-over was aborted {} s ago: staying leader for now",
                        w.now_ms.saturating_sub(at) / 1000
                    ),
                    actions,
                );
            }
            let view = w.handover_view(ElectionReason::LeaderUnhealthy);
            let ranking = streaming_only(w, sync_only(&view, policy.rank(&view)));
            return match &ranking {
                Ranking::Candidates(list) if !list.is_empty() => {
                    let to = list[0].name.clone();
                    actions.push(Action::HandOver {
                        to: to.clone(),
                        reason: HandOverReason::LeaderUnhealthy,
                    });
                    Decision::new(
                        format!(
                            "my policy judged me failed for {} loops ({why}): handing over to {to} ({})",
                            w.memory.failed_health_loops, list[0].reason
                        ),
                        actions,
                    )
                    .with_election(Election::new(
                        &view,
                        policy.name(),
                        &ranking,
                        &to,
                        Chosen::HandOver,
                    ))
                }
                Ranking::Veto(v) => Decision::new(
                    format!(
                        "my policy judges me failed ({why}), but no candidate may take over ({v}): staying leader"
                    ),
                    actions,
                ),
                Ranking::Candidates(_) => Decision::new(
                    format!(
                        "my policy judges me failed ({why}), but no healthy candidate can take over: staying leader"
                    ),
                    actions,
                ),
            };
        }
        return Decision::new(
            format!("no action: I am ({}) the leader with the lock", w.me),
            actions,
        );
    }
    if w.settings.paused {
        return decide_primary_paused(w, cluster);
    }
    if w.leader_is_me_other_lease() {
        if w.lease_valid() && w.memory.our_lease.is_some() {
            return Decision::new(
                "still primary and the leader key has my name from an earlier run: re-attaching it",
                vec![Action::ReattachLeader],
            );
        }
        return Decision::new(
            "the leader key has my name on another lease and my own lease is not valid: demoting",
            vec![Action::Demote {
                mode: DemoteMode::Immediate,
            }],
        );
    }
    if let Some(d) = failsafe::retake(w) {
        return d;
    }
    if cluster.leader_name() == Some(w.me.as_str()) {
        return Decision::new(
            "the lease deadline passed before it could be renewed: demoting",
            vec![Action::Demote {
                mode: DemoteMode::Immediate,
            }],
        );
    }
    match w.other_leader() {
        Some(l) => Decision::new(
            format!("demoting: {l} holds the lock and I am running as primary"),
            vec![Action::Demote {
                mode: DemoteMode::Immediate,
            }],
        ),
        None => Decision::new(
            "demoting: running as primary without the lock",
            vec![Action::Demote {
                mode: DemoteMode::Immediate,
            }],
        ),
    }
}

/// A primary without a valid lock in a paused cluster: never demoted; it takes a free lock.
fn decide_primary_paused(w: &World, cluster: &Cluster) -> Decision {
    if w.leader_is_me_other_lease() {
        return Decision::new(
            "the cluster is paused; the leader key has my name from an earlier run: re-attaching it",
            vec![Action::ReattachLeader],
        );
    }
    match cluster.leader_name() {
        None => Decision::new(
            "the cluster is paused and I run as primary without the leader key: taking it",
            vec![Action::AcquireLeader {
                reason: AcquireReason::PausedTakeover,
            }],
        ),
        Some(l) if l == w.me => Decision::new(
            "the cluster is paused; the lease renewal is late: not demoting",
            vec![],
        ),
        Some(l) => Decision::new(
            format!(
                "the cluster is paused: running as primary while {l} holds the leader key; not demoting"
            ),
            vec![],
        ),
    }
}

pub(super) fn decide_replica(w: &World, policy: &dyn Policy) -> Decision {
    if w.holds_lock() && w.settings.standby_cluster {
        return standby::lead_replica(w);
    }
    if w.holds_lock()
        && w.memory
            .promotion_veto_in_force(w.now_ms, w.settings.ttl_ms)
    {
        return Decision::new(
            "the pre_promote script vetoed my promotion: releasing the leader key",
            vec![Action::ReleaseLeader],
        );
    }
    if w.holds_lock() {
        return Decision::new(
            "I hold the lock: promoting",
            vec![Action::KeepLeading, Action::Promote],
        );
    }
    if w.leader_is_me_other_lease() {
        return Decision::new(
            "the leader key has my name from an earlier run: re-attaching it",
            vec![Action::ReattachLeader],
        );
    }
    if let Some(leader) = w.other_leader() {
        if let Some((tl, fork, at)) = w.diverged_from_cluster()
            && !w.pg.former_primary
        {
            let leader = leader.to_string();
            let why = format!(
                "received WAL up to {at} on timeline {tl}, past the point {fork} where leader {leader}'s timeline forked off it"
            );
            return if w.settings.paused {
                Decision::new(
                    format!("the cluster is paused: this replica {why} and must be rewound"),
                    vec![],
                )
            } else if w.memory.rewind_failed || !w.settings.use_pg_rewind {
                Decision::new(
                    format!("this replica {why}: moving it aside and cloning from {leader}"),
                    vec![Action::Reclone { leader }],
                )
            } else {
                Decision::new(
                    format!("this replica {why}: rewinding before following it"),
                    vec![Action::Rewind { leader }],
                )
            };
        }
        if w.pg.former_primary {
            let leader = leader.to_string();
            if w.settings.paused {
                return Decision::new(
                    format!(
                        "the cluster is paused: running read-only on a former primary's data, which must be rewound before it follows {leader}"
                    ),
                    vec![],
                );
            }
            if w.memory.rewind_failed || !w.settings.use_pg_rewind {
                return Decision::new(
                    format!(
                        "running read-only on a former primary's data, which may have diverged from leader {leader}: moving it aside and cloning from {leader}"
                    ),
                    vec![Action::Reclone { leader }],
                );
            }
            if !w.leader_runs_as_primary(&leader) {
                return Decision::new(
                    format!(
                        "running read-only on a former primary's data: waiting for leader {leader} to run as primary before rewinding from it"
                    ),
                    vec![],
                );
            }
            return Decision::new(
                format!(
                    "running read-only on a former primary's data, which may have diverged from leader {leader}: rewinding before following it"
                ),
                vec![Action::Rewind { leader }],
            );
        }
        let upstream = w.upstream_under(leader);
        if w.pg.upstream != upstream || w.pg.follows_remote {
            let why = match upstream.as_deref() {
                Some(u) if u == leader => format!("following new leader {leader}"),
                Some(u) => format!("following {u} (replicatefrom), under leader {leader}"),
                None => {
                    format!("replaying WAL from the archive only (nostream), under leader {leader}")
                }
            };
            return Decision::new(why, vec![Action::Follow { upstream }]);
        }
        return Decision::new(
            match upstream.as_deref() {
                Some(u) if u == leader => {
                    format!("no action: I am ({}) a replica following {leader}", w.me)
                }
                Some(u) => format!(
                    "no action: I am ({}) a replica following {u} (replicatefrom), under leader {leader}",
                    w.me
                ),
                None => format!(
                    "no action: I am ({}) a replica of {leader} with WAL from the archive only (nostream)",
                    w.me
                ),
            },
            vec![],
        );
    }
    if w.cluster.as_ref().and_then(|c| c.leader.as_ref()).is_some() {
        // The leader key has our name on the right lease, but our write deadline passed: wait.
        return Decision::new("lease renewal is late: not promoting", vec![]);
    }
    if let Some(d) = failsafe::holds_race(w) {
        return d;
    }
    elect(w, policy)
}
