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
/// candidates racing, paused primaries taking a free lock) often enough for the properties
/// above to mean something.
#[test]
fn generated_states_reach_the_operator_branches() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = prop_oneof![arb_cluster(), arb_locked_cluster()];
    let (mut handover, mut health_handover, mut clear, mut requested, mut paused_take) =
        (0, 0, 0, 0, 0);
    for _ in 0..3_000 {
        let Ok(tree) = strategy.new_tree(&mut runner) else {
            continue;
        };
        let s = build(&tree.current());
        for d in decide_all(&s) {
            for a in &d.actions {
                match a {
                    Action::HandOver {
                        reason: HandOverReason::Switchover,
                        ..
                    } => handover += 1,
                    Action::HandOver {
                        reason: HandOverReason::LeaderUnhealthy,
                        ..
                    } => health_handover += 1,
                    Action::ClearFailover => clear += 1,
                    Action::AcquireLeader {
                        reason: AcquireReason::PausedTakeover,
                    } => paused_take += 1,
                    Action::AcquireLeader {
                        reason: AcquireReason::RequestedFailover,
                    } => requested += 1,
                    _ => {}
                }
            }
        }
    }
    for (what, n) in [
        ("switchover hand-overs", handover),
        ("health hand-overs", health_handover),
        ("dropped requests", clear),
        ("requested candidates racing", requested),
        ("paused primaries taking the lock", paused_take),
    ] {
        assert!(n >= 5, "only {n} {what} in 3000 generated clusters");
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
