//! Property tests over generated cluster states: every node decides, and the invariants
//! hold for each decision and across the cluster; and a check that the generators reach the
//! operator branches often enough for that to mean something.

use super::fixtures::*;
use super::generators::*;
use super::invariants::*;
use crate::ha::{AcquireReason, Action, Decision, HandOverReason};
use proptest::prelude::*;
use proptest::sample::Index;

/// Every node's decision with the built-in policy.
fn decide_all(s: &Scenario) -> Vec<Decision> {
    s.worlds.iter().map(decide_default).collect()
}

proptest! {
    #![proptest_config(proptest_config(3_000))]

    #[test]
    fn prop_every_node_decision_is_safe(g in arb_cluster()) {
        let s = build(&g);
        check_cluster(&s, &decide_all(&s))?;
    }

    #[test]
    fn prop_unlocked_cluster_elects_exactly_the_best_candidate(
        g in arb_unlocked_cluster()
    ) {
        let s = build(&g);
        let ds = decide_all(&s);
        check_cluster(&s, &ds)?;
        check_unlocked_election(&s, &ds)?;
    }

    #[test]
    fn prop_decide_is_deterministic_and_ignores_member_order(
        g in arb_cluster(),
        rot in any::<Index>(),
    ) {
        let s = build(&g);
        for w in &s.worlds {
            let d = decide_default(w);
            prop_assert_eq!(&decide_default(&w.clone()), &d);
            let mut shuffled = w.clone();
            if let Some(c) = shuffled.cluster.as_mut().filter(|c| !c.members.is_empty()) {
                let k = rot.index(c.members.len());
                c.members.rotate_left(k);
                c.members.reverse();
            }
            prop_assert_eq!(&decide_default(&shuffled).actions, &d.actions);
        }
    }
}

/// The generator reaches the operator branches (hand-overs, dropped requests, requested
/// candidates racing, paused primaries taking a free lock, and under quorum commit replicas
/// racing, kept out, and handed over to) often enough for the properties above to mean
/// something.
#[test]
fn generated_states_reach_the_operator_branches() {
    use proptest::strategy::{Strategy, ValueTree};
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut tally: std::collections::BTreeMap<&str, u32> = Default::default();
    let mut count = |g: &ClusterGen| {
        let s = build(g);
        for (w, d) in s.worlds.iter().zip(decide_all(&s)) {
            let quorum = w.settings.quorum_commit;
            if quorum && d.summary.contains("not a synchronous standby") {
                *tally
                    .entry("replicas kept out by quorum commit")
                    .or_default() += 1;
            }
            for a in &d.actions {
                let what = match a {
                    Action::HandOver { .. } if quorum => "hand-overs under quorum commit",
                    Action::AcquireLeader { .. } if quorum && w.pg.is_replica() => {
                        "replicas racing under quorum commit"
                    }
                    Action::HandOver {
                        reason: HandOverReason::Switchover,
                        ..
                    } => "switchover hand-overs",
                    Action::HandOver {
                        reason: HandOverReason::LeaderUnhealthy,
                        ..
                    } => "health hand-overs",
                    Action::ClearFailover => "dropped requests",
                    Action::AcquireLeader {
                        reason: AcquireReason::PausedTakeover,
                    } => "paused primaries taking the lock",
                    Action::AcquireLeader {
                        reason: AcquireReason::RequestedFailover,
                    } => "requested candidates racing",
                    _ => continue,
                };
                *tally.entry(what).or_default() += 1;
            }
        }
    };
    let strategies = [
        (arb_cluster().boxed(), 1_000),
        (arb_locked_cluster().boxed(), 2_000),
        (arb_unlocked_cluster().boxed(), 500),
        (arb_manual_failover_cluster().boxed(), 500),
    ];
    for (strategy, cases) in &strategies {
        for _ in 0..*cases {
            if let Ok(tree) = strategy.new_tree(&mut runner) {
                count(&tree.current());
            }
        }
    }
    for what in [
        "switchover hand-overs",
        "health hand-overs",
        "dropped requests",
        "requested candidates racing",
        "paused primaries taking the lock",
        "replicas racing under quorum commit",
        "replicas kept out by quorum commit",
        "hand-overs under quorum commit",
    ] {
        let n = tally.get(what).copied().unwrap_or(0);
        assert!(
            n >= 5,
            "only {n} {what} in 4000 generated clusters: {tally:?}"
        );
    }
}

proptest! {
    #![proptest_config(proptest_config(3_000))]

    #[test]
    fn prop_leader_hands_over_exactly_when_asked_or_failed(g in arb_locked_cluster()) {
        let s = build(&g);
        let ds = decide_all(&s);
        check_cluster(&s, &ds)?;
        check_handover(&s, &ds)?;
    }

    #[test]
    fn prop_requested_failover_candidate_alone_races(g in arb_manual_failover_cluster()) {
        let s = build(&g);
        let ds = decide_all(&s);
        check_cluster(&s, &ds)?;
        check_manual_failover(&s, &ds)?;
    }
}

proptest! {
    #![proptest_config(proptest_config(2_000))]

    #[test]
    fn regression_prop_failed_top_candidate_does_not_stall_the_election(
        g in arb_unlocked_cluster()
    ) {
        let s = build(&g);
        check_unlocked_election(&s, &decide_all(&s))?;
    }
}
