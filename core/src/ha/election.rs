//! What an election decided and why, as data: the view the policy saw, its ranking after the
//! filters every ranking passes through, and each member left out with the reason. A
//! [`Decision`](super::Decision) that takes or hands over the leader key carries one; the
//! supervisor stores it in the DCS with the times of the election's phases, so that "why this
//! node?" can be answered after the fact (`regent ctl explain`).

use super::policy::{DefaultPolicy, ElectionView, Ranking};
use serde::{Deserialize, Serialize};

/// How the winner was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Chosen {
    /// The leader key was free: the policy ranked the members and the winner raced for it.
    Failover,
    /// An operator asked for a failover to a named member, which took the free key.
    RequestedFailover,
    /// The leader handed over to the best candidate (a switchover, or a leader its policies
    /// judged failed).
    HandOver,
    /// An operator's switchover named the member the leader handed over to.
    RequestedSwitchover,
}

/// One ranked candidate, best first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    /// The member's name.
    pub member: String,
    /// 1 for the best.
    pub rank: usize,
    /// The policy's reason.
    pub reason: String,
}

/// A member the election left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Excluded {
    /// The member's name.
    pub member: String,
    /// Why it may not be promoted (the built-in eligibility rules), or that the policy did
    /// not rank it.
    pub reason: String,
}

/// An election: who won, by which rule, and what the policy saw and answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Election {
    /// The member that takes (or is handed) the leader key.
    pub winner: String,
    /// How it was chosen.
    pub chosen: Chosen,
    /// The policies in force, as `name@digest` (`builtin-default` without plugins).
    pub policy: String,
    /// The ranking after synchronous mode's filter (and, for a hand-over, the streaming one).
    pub ranked: Vec<Place>,
    /// The members of the view that are not in `ranked`.
    pub excluded: Vec<Excluded>,
    /// The policy's veto, when it vetoed (an operator's request may still name a winner).
    pub veto: Option<String>,
    /// The view the policy ranked: `regent policy eval --view` replays it.
    pub view: ElectionView,
}

impl Election {
    /// The record of `view` ranked as `ranking` (already filtered) by `policy`, won by
    /// `winner`.
    pub fn new(
        view: &ElectionView,
        policy: String,
        ranking: &Ranking,
        winner: &str,
        chosen: Chosen,
    ) -> Election {
        let (list, veto) = match ranking {
            Ranking::Candidates(list) => (list.as_slice(), None),
            Ranking::Veto(why) => (&[][..], Some(why.clone())),
        };
        let ranked: Vec<Place> = list
            .iter()
            .enumerate()
            .map(|(i, r)| Place {
                member: r.name.clone(),
                rank: i + 1,
                reason: r.reason.clone(),
            })
            .collect();
        let excluded = view
            .members
            .iter()
            .filter(|m| !list.iter().any(|r| r.name == m.name))
            .map(|m| Excluded {
                member: m.name.clone(),
                reason: DefaultPolicy::ineligible(view, m).unwrap_or_else(|| {
                    if matches!(chosen, Chosen::HandOver | Chosen::RequestedSwitchover) {
                        "not ranked: the policy left it out, or it does not stream from the leader"
                            .into()
                    } else {
                        "not ranked: the policy left it out".into()
                    }
                }),
            })
            .collect();
        Election {
            winner: winner.to_string(),
            chosen,
            policy,
            ranked,
            excluded,
            veto,
            view: view.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::policy::{CandidateView, ElectionReason, Ranked};

    fn member(name: &str, wal: u64) -> CandidateView {
        CandidateView {
            name: name.into(),
            role: "replica".into(),
            state: "running".into(),
            timeline: Some(1),
            wal_position: Some(wal),
            received_lsn: None,
            replayed_lsn: None,
            in_recovery: true,
            reachable: true,
            nofailover: false,
            failover_priority: 1,
            tags: Default::default(),
            healthy: true,
        }
    }

    #[test]
    fn left_out_members_carry_the_eligibility_rule_they_fail() {
        let view = ElectionView {
            members: vec![member("a", 100), member("b", 10), member("c", 100)],
            former_leader: Some("x".into()),
            former_leader_zone: None,
            reason: ElectionReason::LeaderLost,
            leader_optime: Some(100),
            maximum_lag_on_failover: 50,
            cluster_timeline: 1,
            check_timeline: false,
            sync_members: None,
            now_ms: 0,
        };
        let ranking = Ranking::Candidates(vec![Ranked {
            name: "a".into(),
            reason: "best".into(),
        }]);
        let e = Election::new(&view, "p@1".into(), &ranking, "a", Chosen::Failover);
        assert_eq!(e.ranked.len(), 1);
        assert_eq!((e.ranked[0].rank, e.ranked[0].reason.as_str()), (1, "best"));
        let reasons: Vec<(&str, &str)> = e
            .excluded
            .iter()
            .map(|x| (x.member.as_str(), x.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 2);
        assert_eq!(reasons[0].0, "b");
        assert!(
            reasons[0].1.contains("maximum_lag_on_failover"),
            "{reasons:?}"
        );
        assert_eq!(reasons[1], ("c", "not ranked: the policy left it out"));
        assert_eq!(e.veto, None);
    }
}
