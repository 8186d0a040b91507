//! Who synchronous mode lets be promoted, derived again for the invariants (not with the
//! code under test's helpers): with `synchronous_mode: on`, the `sync` key's members and its
//! leader; under quorum commit (or a key written by it), a candidate that has reached or passed
//! `quorum + 1` members of the voting set (the key's members and leader), itself counting.

use crate::dcs::{Cluster, SyncState};
use crate::ha::World;

/// The key that restricts promotions on `w`, if any.
fn key<'a>(w: &World, truth: &'a Cluster) -> Option<&'a SyncState> {
    if !w.settings.synchronous_mode {
        return None;
    }
    truth.sync.as_ref().map(|(k, _)| k)
}

fn quorum_rule(w: &World, k: &SyncState) -> bool {
    w.settings.quorum_commit || k.quorum.unwrap_or(0) > 0
}

/// The WAL position `name` vouches for as `w` sees it: its received WAL while it answers and
/// runs (`w`'s own while its PostgreSQL runs).
fn vouched(w: &World, name: &str) -> Option<u64> {
    if name == w.me {
        return if w.pg.running {
            w.pg.received_lsn.or(w.pg.wal_position)
        } else {
            None
        };
    }
    let p = w.peers.get(name)?.as_ref()?;
    (p.state == "running").then(|| p.received_lsn.unwrap_or(p.wal_position))
}

/// Members of the voting set at or behind `cand` (itself included), leaving `silent` out.
fn votes(w: &World, k: &SyncState, cand: &str, silent: Option<&str>) -> usize {
    let mut set = k.members();
    if let Some(l) = k.leader.clone().filter(|l| !l.is_empty())
        && !set.contains(&l)
    {
        set.push(l);
    }
    let mine = vouched(w, cand);
    set.iter()
        .filter(|v| {
            *v == cand
                || (Some(v.as_str()) != silent
                    && matches!((vouched(w, v), mine), (Some(t), Some(m)) if t <= m))
        })
        .count()
}

fn enough(k: &SyncState, n: usize) -> bool {
    n > k.quorum.unwrap_or(0) as usize
}

fn named(k: &SyncState, who: &str) -> bool {
    k.members().iter().any(|m| m == who) || k.leader.as_deref() == Some(who)
}

/// `w`'s node may race in an ordinary election.
pub(super) fn may_race(w: &World, truth: &Cluster) -> bool {
    match key(w, truth) {
        None => true,
        Some(k) if quorum_rule(w, k) => enough(k, votes(w, k, &w.me, None)),
        Some(k) => named(k, &w.me),
    }
}

/// `cand` may be promoted at an operator's request, as `w` sees it.
pub(super) fn may_be_requested(w: &World, truth: &Cluster, cand: &str) -> bool {
    match key(w, truth) {
        None => true,
        Some(k) if quorum_rule(w, k) || k.members().is_empty() => {
            enough(k, votes(w, k, cand, None))
        }
        Some(k) => {
            let listed = k.members();
            listed.iter().any(|m| m == cand)
                || listed.iter().all(|m| {
                    matches!((vouched_any(w, m), vouched_any(w, cand)), (Some(t), Some(c)) if t <= c)
                })
        }
    }
}

/// Positions as `synchronous_mode: on` reads them for a request: any answer counts.
fn vouched_any(w: &World, name: &str) -> Option<u64> {
    if name == w.me {
        return w.pg.received_lsn.or(w.pg.wal_position);
    }
    let p = w.peers.get(name)?.as_ref()?;
    Some(p.received_lsn.unwrap_or(p.wal_position))
}

/// The leader `w` may hand over to `cand`: a voter, or (quorum commit) a replica proving
/// itself among the others, the leader left out.
pub(super) fn may_take_over(w: &World, truth: &Cluster, cand: &str) -> bool {
    match key(w, truth) {
        None => true,
        Some(k) if quorum_rule(w, k) => {
            k.members().iter().any(|m| m == cand) || enough(k, votes(w, k, cand, Some(&w.me)))
        }
        Some(k) => named(k, cand),
    }
}
