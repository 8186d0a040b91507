//! Unit tests of the operators' branches of [`decide`](crate::ha::decide): switchover and
//! failover requests, synchronous mode, pause, and a failed leader handing over.

use super::fixtures::*;
use crate::ha::{Action, HANDOVER_RETRY_MS, HandOverReason, decide};

/// In synchronous mode a policy that ranks a non-synchronous replica first does not get it
/// promoted: the core keeps only the `sync` key's members.
#[test]
fn synchronous_mode_ignores_a_policy_ranking_a_non_synchronous_member() {
    let mut w = election_world(2_000, vec![("a", None), ("c", peer_replica(900))]);
    w.settings.synchronous_mode = true;
    if let Some(c) = w.cluster.as_mut() {
        c.sync = Some((
            crate::dcs::SyncState {
                leader: Some("a".into()),
                quorum: Some(0),
                sync_standby: Some("c".into()),
            },
            4,
        ));
    }
    let d = decide(&w, &Fixed(ranked(&["b", "c"])));
    assert_eq!(d.actions, vec![], "{}", d.summary);
    let mut c = w.clone();
    c.me = "c".into();
    c.pg = pg_replica(900, Some("a"));
    c.peers = [
        ("a".to_string(), None),
        ("b".to_string(), peer_replica(2_000)),
    ]
    .into();
    assert_eq!(
        decide(&c, &Fixed(ranked(&["b", "c"]))).actions,
        vec![acquire()]
    );
}

#[test]
fn switchover_hands_over_to_the_named_candidate() {
    let w = switchover_world(Some("b"), Some("c"), None);
    let d = decide_default(&w);
    assert_eq!(
        d.actions,
        vec![
            Action::KeepLeading,
            handover("c", HandOverReason::Switchover)
        ],
        "{}",
        d.summary
    );
}

#[test]
fn switchover_waits_for_peer_state_before_judging_the_candidate() {
    let mut w = switchover_world(None, Some("c"), None);
    w.peers.clear();
    assert_eq!(actions(&w), vec![Action::KeepLeading]);
}

#[test]
fn switchover_to_an_ineligible_candidate_is_dropped_with_the_reason() {
    let mut w = switchover_world(Some("b"), Some("c"), None);
    if let Some(Some(p)) = w.peers.get_mut("c") {
        p.nofailover = true;
    }
    let d = decide_default(&w);
    assert_eq!(d.actions, vec![Action::KeepLeading, Action::ClearFailover]);
    assert!(d.summary.contains("nofailover"), "{}", d.summary);
}

#[test]
fn scheduled_switchover_waits_for_its_time_and_stale_ones_are_dropped() {
    let later = switchover_world(Some("b"), Some("c"), Some("2026-12-01T17:35:00+00:00"));
    let d = decide_default(&later);
    assert_eq!(d.actions, vec![Action::KeepLeading]);
    assert!(d.summary.contains("scheduled in 300 s"), "{}", d.summary);
    let due = switchover_world(Some("b"), Some("c"), Some("2026-12-01T17:29:59Z"));
    assert!(actions(&due).contains(&handover("c", HandOverReason::Switchover)));
    let stale = switchover_world(Some("b"), Some("c"), Some("2026-12-01T16:00:00Z"));
    assert_eq!(
        actions(&stale),
        vec![Action::KeepLeading, Action::ClearFailover]
    );
}

#[test]
fn switchover_to_a_replica_that_does_not_stream_from_me_waits_then_is_dropped() {
    let mut w = switchover_world(Some("b"), Some("c"), None);
    w.pg.streaming.clear();
    // A while to catch up (it may just have switched upstream), then the request is dropped.
    w.memory.request_seen = Some((request_in(&w), NOW - 1_000));
    assert_eq!(actions(&w), vec![Action::KeepLeading]);
    w.memory.request_seen = Some((request_in(&w), NOW - w.settings.ttl_ms));
    let d = decide_default(&w);
    assert_eq!(d.actions, vec![Action::KeepLeading, Action::ClearFailover]);
    assert!(d.summary.contains("has not streamed"), "{}", d.summary);
}

#[test]
fn failed_leader_waits_after_an_aborted_hand_over() {
    let mut w = failed_leader_world(9);
    w.memory.handover_aborted_ms = Some(NOW - 1_000);
    assert_eq!(actions(&w), vec![Action::KeepLeading]);
    w.memory.handover_aborted_ms = Some(NOW - HANDOVER_RETRY_MS);
    assert!(actions(&w).contains(&handover("c", HandOverReason::LeaderUnhealthy)));
}

#[test]
fn switchover_naming_another_leader_is_dropped() {
    let w = switchover_world(Some("a"), Some("c"), None);
    assert_eq!(
        actions(&w),
        vec![Action::KeepLeading, Action::ClearFailover]
    );
}

#[test]
fn failed_leader_hands_over_only_after_enough_failed_loops() {
    let mut w = failed_leader_world(1);
    assert_eq!(actions(&w), vec![Action::KeepLeading]);
    w.memory.failed_health_loops = 2;
    let d = decide_default(&w);
    assert_eq!(
        d.actions,
        vec![
            Action::KeepLeading,
            handover("c", HandOverReason::LeaderUnhealthy)
        ]
    );
    assert!(d.summary.contains("canary write failed"), "{}", d.summary);
    w.settings.paused = true;
    assert_eq!(actions(&w), vec![Action::KeepLeading]);
}

#[test]
fn failed_leader_without_a_healthy_candidate_stays_leader() {
    let mut w = failed_leader_world(5);
    if let Some(Some(p)) = w.peers.get_mut("c") {
        p.healthy = false;
    }
    let d = decide_default(&w);
    assert_eq!(d.actions, vec![Action::KeepLeading]);
    assert!(d.summary.contains("staying leader"), "{}", d.summary);
}

#[test]
fn requested_failover_candidate_races_and_the_others_wait_for_it() {
    // b is the better candidate by WAL, but the operator asked for c.
    let mut b = election_world(1_000, vec![("a", None), ("c", peer_replica(900))]);
    if let Some(cl) = b.cluster.as_mut() {
        cl.failover = Some((
            crate::dcs::Failover {
                member: Some("c".into()),
                ..Default::default()
            },
            3,
        ));
    }
    assert_eq!(actions(&b), vec![]);
    let mut c = b.clone();
    c.me = "c".into();
    c.pg = pg_replica(900, Some("a"));
    c.peers = [
        ("a".to_string(), None),
        ("b".to_string(), peer_replica(1_000)),
    ]
    .into();
    assert_eq!(actions(&c), vec![acquire_requested()]);
    // c's peers stop seeing it: b no longer waits.
    b.peers.insert("c".into(), None);
    assert_eq!(actions(&b), vec![acquire()]);
}

#[test]
fn paused_cluster_starts_stops_and_demotes_nothing() {
    let mut stopped = world(
        "b",
        Some(cluster(Some(leader("a", OTHER_LEASE)))),
        pg_stopped(true),
    );
    stopped.settings.paused = true;
    assert_eq!(actions(&stopped), vec![]);
    let mut orphan = world(
        "b",
        Some(cluster(Some(leader("a", OTHER_LEASE)))),
        pg_primary(10),
    );
    orphan.settings.paused = true;
    assert_eq!(actions(&orphan), vec![]);
    let mut free = world("b", Some(cluster(None)), pg_primary(10));
    free.settings.paused = true;
    assert_eq!(actions(&free), vec![acquire_paused()]);
    let mut replica = election_world(2_000, vec![("a", None), ("c", peer_replica(900))]);
    replica.settings.paused = true;
    assert_eq!(actions(&replica), vec![]);
    let mut offline = world("b", None, pg_primary(10));
    offline.settings.paused = true;
    offline.memory.write_deadline_ms = Some(NOW - 1);
    assert_eq!(actions(&offline), vec![]);
}

/// Safety review item 3: in synchronous mode, a requested failover to a replica outside the
/// `sync` key is carried out only when that replica provably holds every acknowledged commit:
/// every synchronous standby answered and it has received at least as much WAL as each.
#[test]
fn requested_failover_in_synchronous_mode_never_promotes_a_replica_missing_commits() {
    // a (the leader) is gone; b is the synchronous standby at 1 000, c the async one at 900.
    let mut c = election_world(900, vec![("a", None), ("b", peer_replica(1_000))]);
    c.me = "c".into();
    c.settings.synchronous_mode = true;
    if let Some(cl) = c.cluster.as_mut() {
        cl.sync = Some((
            crate::dcs::SyncState {
                leader: Some("a".into()),
                quorum: Some(0),
                sync_standby: Some("b".into()),
            },
            4,
        ));
        cl.failover = Some((
            crate::dcs::Failover {
                member: Some("c".into()),
                ..Default::default()
            },
            5,
        ));
    }
    let d = decide_default(&c);
    assert!(
        !d.actions.contains(&acquire_requested()),
        "c lags the synchronous standby, yet races: {}",
        d.summary
    );
    assert!(d.summary.contains("b"), "{}", d.summary);
    // b does not wait for a candidate that may not take over: it races.
    let mut b = c.clone();
    b.me = "b".into();
    b.pg = pg_replica(1_000, Some("a"));
    b.peers = [
        ("a".to_string(), None),
        ("c".to_string(), peer_replica(900)),
    ]
    .into();
    assert_eq!(actions(&b), vec![acquire()]);
    // Caught up with the synchronous standby: c holds every acknowledged commit and races.
    let mut caught_up = c.clone();
    caught_up.pg = pg_replica(1_000, Some("a"));
    assert_eq!(actions(&caught_up), vec![acquire_requested()]);
    // The synchronous standby did not answer: nothing proves c holds every commit.
    let mut unknown = caught_up.clone();
    unknown.peers.insert("b".into(), None);
    assert!(!actions(&unknown).contains(&acquire_requested()));
}

// ── the pre_promote script's veto ──────────────────────────────────────────────────────────

/// A replica holding the lock whose `pre_promote` script vetoed the promotion releases the
/// key instead of promoting, and stays out of the race for a `ttl`; after it, it races again.
#[test]
fn a_vetoed_promotion_releases_the_key_and_backs_off_for_ttl() {
    let mut w = world(
        "b",
        Some(cluster(Some(leader("b", MY_LEASE)))),
        pg_replica(10, None),
    );
    assert_eq!(actions(&w), vec![Action::KeepLeading, Action::Promote]);
    w.memory.promotion_vetoed(NOW - 1_000);
    let d = decide_default(&w);
    assert_eq!(d.actions, vec![Action::ReleaseLeader], "{}", d.summary);
    assert!(d.summary.contains("pre_promote"), "{}", d.summary);

    // The key released: the best candidate does not race while the veto is in force.
    let mut e = election_world(2_000, vec![("a", None), ("c", peer_replica(900))]);
    assert_eq!(actions(&e), vec![acquire()]);
    e.memory.promotion_vetoed(NOW - 1_000);
    let d = decide_default(&e);
    assert_eq!(d.actions, vec![], "{}", d.summary);
    assert!(d.summary.contains("pre_promote"), "{}", d.summary);
    // Still in force one millisecond before the ttl has passed.
    e.memory.promotion_vetoed(NOW - e.settings.ttl_ms + 1);
    assert_eq!(actions(&e), vec![]);
    // One ttl later it races again.
    e.memory.promotion_vetoed(NOW - e.settings.ttl_ms);
    assert_eq!(actions(&e), vec![acquire()]);
}

/// A failover requested to a node whose `pre_promote` vetoed its promotion is dropped by
/// that node, so that the others race instead of waiting for it.
#[test]
fn a_vetoed_candidate_drops_the_request_naming_it() {
    let mut b = election_world(1_000, vec![("a", None), ("c", peer_replica(900))]);
    if let Some(cl) = b.cluster.as_mut() {
        cl.failover = Some((
            crate::dcs::Failover {
                member: Some("b".into()),
                ..Default::default()
            },
            3,
        ));
    }
    assert_eq!(actions(&b), vec![acquire_requested()]);
    b.memory.promotion_vetoed(NOW - 1_000);
    let d = decide_default(&b);
    assert_eq!(d.actions, vec![Action::ClearFailover], "{}", d.summary);
}
