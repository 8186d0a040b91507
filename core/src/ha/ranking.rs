//! The filters every ranking passes through, whatever a policy answered: in synchronous mode
//! only the `sync` key's members (under quorum commit, those proving themselves by votes), and
//! for a hand-over only replicas that stream from the leader.

use super::World;
use super::policy::{ElectionView, Ranking};

/// In synchronous mode only the view's `sync_members` may be promoted (the `sync` key's
/// members, or under quorum commit the replicas that prove themselves by votes), whatever a
/// policy answers: a (buggy) policy cannot promote a replica that may lack acknowledged commits.
pub(super) fn sync_only(view: &ElectionView, r: Ranking) -> Ranking {
    match (r, &view.sync_members) {
        (Ranking::Candidates(list), Some(sync)) => Ranking::Candidates(
            list.into_iter()
                .filter(|c| sync.contains(&c.name))
                .collect(),
        ),
        (r, _) => r,
    }
}

/// The candidates of a ranking that stream from this node (the leader): a hand-over waits
/// for its target to receive the last WAL, which only a streaming replica does at once.
pub(super) fn streaming_only(w: &World, r: Ranking) -> Ranking {
    match r {
        Ranking::Candidates(list) => Ranking::Candidates(
            list.into_iter()
                .filter(|c| w.pg.streaming.contains(&c.name))
                .collect(),
        ),
        veto => veto,
    }
}
