//! Elections: who races for a free leader key (the policy's ranking, a requested failover
//! candidate, the backoff for the others), and the filters every ranking passes through
//! (synchronous mode, streaming replicas for a hand-over).

use super::election::{Chosen, Election};
use super::policy::{self, Health, Policy, Ranking};
use super::ranking::sync_only;
use super::request::Due;
use super::{AcquireReason, Action, Decision, World};

/// In synchronous mode, whether `candidate` may be promoted although an operator, not the
/// `sync` key, named it: see [`super::sync::holds_every_acknowledged_commit`], and in quorum
/// mode [`super::quorum::proves`]. The positions are what this node sees this loop (its own,
/// and the peers' live answers).
fn sync_safe(w: &World, candidate: &str) -> Result<(), String> {
    if !w.settings.synchronous_mode {
        return Ok(());
    }
    let Some((key, _)) = w.cluster.as_ref().and_then(|c| c.sync.as_ref()) else {
        return Ok(());
    };
    let position = |name: &str| -> Option<u64> {
        if name == w.me {
            w.pg.received_lsn.or(w.pg.wal_position)
        } else {
            let p = w.peers.get(name)?.as_ref()?;
            Some(p.received_lsn.unwrap_or(p.wal_position))
        }
    };
    // Quorum commit; and a key naming no standby, whose leader alone holds every commit (with
    // nobody listed there is no standby to be compared with).
    if w.settings.quorum_commit || super::quorum::is_quorum_key(key) || key.members().is_empty() {
        let vouched = |name: &str| -> Option<u64> {
            if name == w.me {
                return w.pg.running.then(|| position(name)).flatten();
            }
            let p = w.peers.get(name)?.as_ref()?;
            (p.state == "running").then(|| position(name)).flatten()
        };
        return super::quorum::proves(candidate, vouched(candidate), key, &vouched);
    }
    let standbys: Vec<(String, Option<u64>)> = key
        .members()
        .into_iter()
        .map(|s| {
            let lsn = position(&s);
            (s, lsn)
        })
        .collect();
    super::sync::holds_every_acknowledged_commit(candidate, position(candidate), &standbys)
}

pub(super) fn elect(w: &World, policy: &dyn Policy) -> Decision {
    if let Some(t) = w.memory.promotion_vetoed_ms
        && w.memory
            .promotion_veto_in_force(w.now_ms, w.settings.ttl_ms)
    {
        // A request naming me cannot be carried out now: drop it, so that the others race
        // instead of waiting for me (the REST API reports the switchover failed).
        let named_me = w
            .request()
            .and_then(|r| r.candidate)
            .is_some_and(|c| c == w.me);
        return Decision::new(
            format!(
                "no leader, not racing: the pre_promote script vetoed my promotion {} ms ago (backing off for ttl){}",
                w.now_ms.saturating_sub(t),
                if named_me {
                    "; dropping the failover request naming me"
                } else {
                    ""
                }
            ),
            if named_me {
                vec![Action::ClearFailover]
            } else {
                vec![]
            },
        );
    }
    if let Some(req) = w.request()
        && let Some(c) = req.candidate
        && matches!(req.due(w), Due::Now)
    {
        let safe = sync_safe(w, c);
        if c == w.me
            && !w.settings.nofailover
            && w.settings.failover_priority > 0
            && !matches!(w.health, Health::Failed(_))
        {
            if let Err(why) = &safe {
                return Decision::new(
                    format!("no leader and a failover to me was requested, but {why}: not racing"),
                    vec![],
                );
            }
            let view = w.election_view();
            let ranking = sync_only(&view, policy.rank(&view));
            return Decision::new(
                "no leader and a failover to me was requested: racing for the lock",
                vec![Action::AcquireLeader {
                    reason: AcquireReason::RequestedFailover,
                }],
            )
            .with_election(Election::new(
                &view,
                policy.name(),
                &ranking,
                &w.me,
                Chosen::RequestedFailover,
            ));
        }
        let viable = safe.is_ok()
            && w.peers.get(c).and_then(Option::as_ref).is_some_and(|p| {
                p.in_recovery
                    && p.state == "running"
                    && p.healthy
                    && !p.nofailover
                    && p.failover_priority > 0
            });
        let waited = w
            .memory
            .unlocked_since_ms
            .map(|s| w.now_ms.saturating_sub(s))
            .unwrap_or(0);
        if viable && (w.settings.paused || waited < w.settings.ttl_ms) {
            return Decision::new(
                format!(
                    "no leader: a failover to {c} was requested, waiting for it to take the lock"
                ),
                vec![],
            );
        }
        if w.settings.paused {
            return Decision::new(
                format!(
                    "no leader: a failover to {c} was requested, but {c} cannot take it; the cluster is paused"
                ),
                vec![],
            );
        }
    }
    if w.settings.paused {
        return Decision::new(
            "no leader, but the cluster is paused: not racing for the lock",
            vec![],
        );
    }
    let view = w.election_view();
    let ranking = sync_only(&view, policy.rank(&view));
    let record = || Election::new(&view, policy.name(), &ranking, &w.me, Chosen::Failover);
    match &ranking {
        Ranking::Veto(why) => Decision::new(format!("no leader, not racing: {why}"), vec![]),
        Ranking::Candidates(list) => {
            let Some(pos) = list.iter().position(|c| c.name == w.me) else {
                let why = view
                    .members
                    .iter()
                    .find(|m| m.name == w.me)
                    .and_then(|m| policy::DefaultPolicy::ineligible(&view, m))
                    .unwrap_or_else(|| "the policy does not rank me".into());
                return Decision::new(format!("no leader, I am not eligible: {why}"), vec![]);
            };
            if pos == 0 {
                return Decision::new(
                    format!(
                        "no leader: I am the best candidate ({}), racing for the lock",
                        list[0].reason
                    ),
                    vec![Action::AcquireLeader {
                        reason: AcquireReason::LeaderMissing,
                    }],
                )
                .with_election(record());
            }
            let waited = w
                .memory
                .unlocked_since_ms
                .map(|s| w.now_ms.saturating_sub(s))
                .unwrap_or(0);
            if waited >= w.settings.race_backoff_ms {
                return Decision::new(
                    format!(
                        "no leader for {waited} ms and {} did not take the lock: racing as candidate #{}",
                        list[0].name,
                        pos + 1
                    ),
                    vec![Action::AcquireLeader {
                        reason: AcquireReason::LeaderMissing,
                    }],
                )
                .with_election(record());
            }
            Decision::new(
                format!(
                    "no leader: {} is the better candidate ({}), waiting",
                    list[0].name, list[0].reason
                ),
                vec![],
            )
        }
    }
}
