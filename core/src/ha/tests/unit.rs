//! Unit tests, one per branch of [`decide`](crate::ha::decide) by the state of the local
//! PostgreSQL: an empty or foreign data directory, stopped, primary, replica, elections, the
//! DCS out of reach; and regression tests for bugs found in those branches.

use super::fixtures::*;
use crate::dcs::HistoryLine;
use crate::ha::policy::{DefaultPolicy, Health, Ranking};
use crate::ha::{Action, DataDir, decide};

// ── empty data directory ──────────────────────────────────────────────────────────────────

#[test]
fn empty_dir_with_leader_clones_from_it() {
    let w = world(
        "b",
        Some(cluster(Some(leader("a", OTHER_LEASE)))),
        pg_empty(),
    );
    assert_eq!(actions(&w), vec![Action::CloneFrom { source: "a".into() }]);
}

#[test]
fn empty_dir_without_leader_or_initialize_bootstraps() {
    let mut c = cluster(None);
    c.initialize = None;
    let w = world("b", Some(c), pg_empty());
    assert_eq!(actions(&w), vec![Action::Bootstrap]);
}

#[test]
fn empty_dir_waits_when_initialized_or_bootstrap_in_progress() {
    for init in [Some(SYSID.to_string()), Some(String::new())] {
        let mut c = cluster(None);
        c.initialize = init.clone();
        let d = decide_default(&world("b", Some(c), pg_empty()));
        assert_eq!(d.actions, vec![], "initialize = {init:?}");
        assert!(d.summary.contains("waiting"), "{}", d.summary);
    }
}

#[test]
fn empty_dir_nofailover_never_bootstraps() {
    let mut c = cluster(None);
    c.initialize = None;
    let mut w = world("b", Some(c), pg_empty());
    w.settings.nofailover = true;
    assert_eq!(actions(&w), vec![]);
}

#[test]
fn empty_dir_with_my_name_on_leader_key_releases_it() {
    let w = world("b", Some(cluster(Some(leader("b", MY_LEASE)))), pg_empty());
    assert_eq!(actions(&w), vec![Action::ReleaseLeader]);
    // On another lease the key is another process's (a node started with a copy of this
    // one's configuration, say): never touched; it expires with that process's lease.
    let w = world("b", Some(cluster(Some(leader("b", OLD_LEASE)))), pg_empty());
    let d = decide_default(&w);
    assert_eq!(d.actions, vec![], "{}", d.summary);
}

// ── fatal conditions ──────────────────────────────────────────────────────────────────────

#[test]
fn sysid_mismatch_is_fatal_whatever_the_state() {
    for pg in [pg_primary(10), pg_replica(10, Some("a")), pg_stopped(true)] {
        let mut c = cluster(Some(leader("b", MY_LEASE)));
        c.initialize = Some(OTHER_SYSID.into());
        let d = decide_default(&world("b", Some(c), pg.clone()));
        assert_eq!(d.actions.len(), 1, "{pg:?}: {:?}", d.actions);
        let Action::Fatal(msg) = &d.actions[0] else {
            panic!("expected Fatal, got {:?}", d.actions);
        };
        assert!(msg.contains(SYSID) && msg.contains(OTHER_SYSID), "{msg}");
    }
}

#[test]
fn bootstrap_in_progress_or_missing_initialize_is_not_a_mismatch() {
    for init in [None, Some(String::new())] {
        let mut c = cluster(Some(leader("a", OTHER_LEASE)));
        c.initialize = init;
        let acts = actions(&world("b", Some(c), pg_replica(10, Some("a"))));
        assert!(
            !acts.iter().any(|a| matches!(a, Action::Fatal(_))),
            "{acts:?}"
        );
    }
}

#[test]
fn unusable_data_dir_is_fatal() {
    let mut pg = pg_empty();
    pg.data_dir = DataDir::Unusable("PG_VERSION missing".into());
    let w = world("b", Some(cluster(Some(leader("a", OTHER_LEASE)))), pg);
    assert_eq!(
        actions(&w),
        vec![Action::Fatal("PG_VERSION missing".into())]
    );
}

/// Item 10 of the safety review: a data directory that could not be read this loop (EMFILE,
/// an I/O error) is no foreign directory. Whatever else the node sees, it decides nothing that
/// depends on the directory and never stops the supervisor.
#[test]
fn unreadable_data_dir_decides_nothing_and_is_never_fatal() {
    let unknown = |mut pg: crate::ha::PgView| {
        pg.data_dir =
            DataDir::Unknown("cannot read data: Too many open files (os error 24)".into());
        pg
    };
    let mut no_init = cluster(None);
    no_init.initialize = None;
    let cases = [
        // Stopped, another leader: no clone, rewind or start.
        world(
            "b",
            Some(cluster(Some(leader("a", OTHER_LEASE)))),
            unknown(pg_stopped(true)),
        ),
        // Stopped, no cluster yet: no bootstrap.
        world("b", Some(no_init), unknown(pg_empty())),
        // Stopped with the lock: no start as primary.
        world(
            "b",
            Some(cluster(Some(leader("b", MY_LEASE)))),
            unknown(pg_stopped(true)),
        ),
        // A replica without a leader: no race.
        world("b", Some(cluster(None)), unknown(pg_replica(10, None))),
        // A replica with the lock: no promotion.
        world(
            "b",
            Some(cluster(Some(leader("b", MY_LEASE)))),
            unknown(pg_replica(10, None)),
        ),
        // The leader, running as primary with the lock: keeps it (nothing to do).
        world(
            "b",
            Some(cluster(Some(leader("b", MY_LEASE)))),
            unknown(pg_primary(10)),
        ),
    ];
    for w in cases {
        let d = decide_default(&w);
        assert_eq!(d.actions, vec![], "{}", d.summary);
        assert!(d.summary.contains("Too many open files"), "{}", d.summary);
    }
}

/// Writable only under the lock, even when the data directory cannot be read: a primary
/// without the lock demotes.
#[test]
fn unreadable_data_dir_on_a_primary_without_the_lock_demotes() {
    let mut pg = pg_primary(10);
    pg.data_dir = DataDir::Unknown("cannot read data: Input/output error (os error 5)".into());
    let w = world(
        "b",
        Some(cluster(Some(leader("a", OTHER_LEASE)))),
        pg.clone(),
    );
    assert_eq!(actions(&w), vec![immediate()]);
    let mut w = world("b", Some(cluster(Some(leader("b", MY_LEASE)))), pg);
    w.memory.renewal_failed = true;
    assert_eq!(actions(&w), vec![offline()]);
}

// ── PostgreSQL stopped ────────────────────────────────────────────────────────────────────

#[test]
fn stopped_former_primary_with_other_leader_rewinds() {
    let mut c = cluster(Some(leader("a", OTHER_LEASE)));
    c.members = vec![member("a", "primary", 100)];
    let w = world("b", Some(c), pg_stopped(true));
    assert_eq!(actions(&w), vec![Action::Rewind { leader: "a".into() }]);
}

/// A leader that has taken the key but is still promoting is on the old timeline: pg_rewind
/// against it would find "no rewind required" for a former primary that has diverged, which
/// would then never stream. The former primary waits until the leader runs as primary.
#[test]
fn former_primary_waits_for_a_promoting_leader_before_rewinding() {
    for running in [false, true] {
        for leader_member in [None, Some(member("a", "replica", 100))] {
            let mut c = cluster(Some(leader("a", OTHER_LEASE)));
            c.members = leader_member.into_iter().collect();
            let mut pg = if running {
                pg_replica(90, Some("a"))
            } else {
                pg_stopped(true)
            };
            pg.former_primary = running;
            let w = world("b", Some(c.clone()), pg.clone());
            let d = decide(&w, &DefaultPolicy);
            assert!(d.actions.is_empty(), "{:?}", d.actions);
            assert!(d.summary.contains("waiting for leader a"), "{}", d.summary);
            c.members = vec![member("a", "primary", 100)];
            let w = world("b", Some(c), pg);
            assert_eq!(actions(&w), vec![Action::Rewind { leader: "a".into() }]);
        }
    }
}

#[test]
fn stopped_former_primary_without_pg_rewind_reclones() {
    let mut w = world(
        "b",
        Some(cluster(Some(leader("a", OTHER_LEASE)))),
        pg_stopped(true),
    );
    w.settings.use_pg_rewind = false;
    assert_eq!(actions(&w), vec![Action::Reclone { leader: "a".into() }]);
}

#[test]
fn stopped_after_failed_rewind_reclones() {
    for was_primary in [true, false] {
        let mut w = world(
            "b",
            Some(cluster(Some(leader("a", OTHER_LEASE)))),
            pg_stopped(was_primary),
        );
        w.memory.rewind_failed = true;
        assert_eq!(actions(&w), vec![Action::Reclone { leader: "a".into() }]);
    }
}

#[test]
fn stopped_replica_with_other_leader_starts_following_it() {
    let mut w = world(
        "b",
        Some(cluster(Some(leader("a", OTHER_LEASE)))),
        pg_stopped(false),
    );
    w.settings.use_pg_rewind = false; // irrelevant for a former replica
    assert_eq!(
        actions(&w),
        vec![Action::StartReplica {
            upstream: Some("a".into())
        }]
    );
}

#[test]
fn stopped_node_holding_the_lock_starts() {
    let c = cluster(Some(leader("b", MY_LEASE)));
    let w = world("b", Some(c.clone()), pg_stopped(true));
    assert_eq!(actions(&w), vec![Action::KeepLeading, Action::StartPrimary]);
    let w = world("b", Some(c), pg_stopped(false));
    assert_eq!(
        actions(&w),
        vec![Action::KeepLeading, Action::StartReplica { upstream: None }]
    );
}

#[test]
fn stopped_node_with_expired_write_deadline_does_not_start_as_primary() {
    let mut w = world(
        "b",
        Some(cluster(Some(leader("b", MY_LEASE)))),
        pg_stopped(true),
    );
    w.memory.write_deadline_ms = Some(NOW);
    assert_eq!(actions(&w), vec![Action::StartReplica { upstream: None }]);
}

#[test]
fn stopped_node_without_leader_starts_read_only() {
    for was_primary in [true, false] {
        let w = world("b", Some(cluster(None)), pg_stopped(was_primary));
        assert_eq!(actions(&w), vec![Action::StartReplica { upstream: None }]);
    }
}

// ── running primary ───────────────────────────────────────────────────────────────────────

#[test]
fn primary_holding_the_lock_renews_it() {
    let w = world(
        "b",
        Some(cluster(Some(leader("b", MY_LEASE)))),
        pg_primary(10),
    );
    let d = decide_default(&w);
    assert_eq!(d.actions, vec![Action::KeepLeading]);
    assert!(
        d.summary.contains("the leader with the lock"),
        "{}",
        d.summary
    );
}

#[test]
fn primary_holding_the_lock_publishes_initialize_when_missing() {
    for init in [None, Some(String::new())] {
        let mut c = cluster(Some(leader("b", MY_LEASE)));
        c.initialize = init;
        let w = world("b", Some(c), pg_primary(10));
        assert_eq!(
            actions(&w),
            vec![
                Action::KeepLeading,
                Action::WriteInitialize {
                    sysid: SYSID.into()
                }
            ]
        );
    }
}

#[test]
fn primary_whose_write_deadline_passed_demotes() {
    for deadline in [Some(NOW), Some(NOW - 1), None] {
        let mut w = world(
            "b",
            Some(cluster(Some(leader("b", MY_LEASE)))),
            pg_primary(10),
        );
        w.memory.write_deadline_ms = deadline;
        assert_eq!(actions(&w), vec![immediate()], "deadline {deadline:?}");
    }
}

#[test]
fn primary_while_another_node_holds_the_leader_key_demotes_immediately() {
    let w = world(
        "b",
        Some(cluster(Some(leader("a", OTHER_LEASE)))),
        pg_primary(10),
    );
    let d = decide_default(&w);
    assert_eq!(d.actions, vec![immediate()]);
    assert!(d.summary.contains("a holds the lock"), "{}", d.summary);
}

#[test]
fn primary_without_any_leader_key_demotes_immediately() {
    let w = world("b", Some(cluster(None)), pg_primary(10));
    assert_eq!(actions(&w), vec![immediate()]);
}

// ── running replica ───────────────────────────────────────────────────────────────────────

#[test]
fn replica_holding_the_lock_promotes() {
    let w = world(
        "b",
        Some(cluster(Some(leader("b", MY_LEASE)))),
        pg_replica(10, None),
    );
    assert_eq!(actions(&w), vec![Action::KeepLeading, Action::Promote]);
}

#[test]
fn replica_with_own_key_but_late_renewal_does_not_promote() {
    let mut w = world(
        "b",
        Some(cluster(Some(leader("b", MY_LEASE)))),
        pg_replica(10, None),
    );
    w.memory.write_deadline_ms = Some(NOW - 1);
    assert_eq!(actions(&w), vec![]);
}

#[test]
fn replica_with_other_leader_and_wrong_upstream_follows() {
    for upstream in [None, Some("c")] {
        let w = world(
            "b",
            Some(cluster(Some(leader("a", OTHER_LEASE)))),
            pg_replica(10, upstream),
        );
        assert_eq!(
            actions(&w),
            vec![Action::Follow {
                upstream: Some("a".into())
            }],
            "upstream {upstream:?}"
        );
    }
}

#[test]
fn replica_already_following_the_leader_does_nothing() {
    let w = world(
        "b",
        Some(cluster(Some(leader("a", OTHER_LEASE)))),
        pg_replica(10, Some("a")),
    );
    assert_eq!(actions(&w), vec![]);
}

// ── leader key with my name on another lease ──────────────────────────────────────────────

#[test]
fn leader_key_with_my_name_on_another_lease_is_reattached() {
    let c = cluster(Some(leader("b", OLD_LEASE)));
    for pg in [pg_replica(10, None), pg_stopped(true), pg_primary(10)] {
        let w = world("b", Some(c.clone()), pg.clone());
        assert_eq!(actions(&w), vec![Action::ReattachLeader], "{pg:?}");
    }
}

// ── elections ─────────────────────────────────────────────────────────────────────────────

#[test]
fn best_candidate_races_for_the_lock() {
    let w = election_world(
        1_000,
        vec![("a", peer_replica(900)), ("c", peer_replica(800))],
    );
    assert_eq!(actions(&w), vec![acquire()]);
}

#[test]
fn worse_candidate_waits_within_the_backoff() {
    let mut w = election_world(
        900,
        vec![("a", peer_replica(1_000)), ("c", peer_replica(800))],
    );
    w.memory.unlocked_since_ms = Some(NOW - 4_999);
    let d = decide_default(&w);
    assert_eq!(d.actions, vec![]);
    assert!(
        d.summary.contains("a is the better candidate"),
        "{}",
        d.summary
    );
    // Never having seen the cluster unlocked counts as not having waited at all.
    w.memory.unlocked_since_ms = None;
    assert_eq!(actions(&w), vec![]);
}

#[test]
fn worse_candidate_races_after_the_backoff() {
    let mut w = election_world(
        900,
        vec![("a", peer_replica(1_000)), ("c", peer_replica(800))],
    );
    w.memory.unlocked_since_ms = Some(NOW - 5_000);
    assert_eq!(actions(&w), vec![acquire()]);
}

#[test]
fn equal_wal_is_decided_by_failover_priority_then_name() {
    // a and b equal: a wins by name.
    let w = election_world(1_000, vec![("a", peer_replica(1_000))]);
    assert_eq!(actions(&w), vec![]);
    // b has the higher failover_priority.
    let mut w = election_world(1_000, vec![("a", peer_replica(1_000))]);
    w.settings.failover_priority = 2;
    assert_eq!(actions(&w), vec![acquire()]);
    // From a's side: a is first by name.
    let mut w = election_world(1_000, vec![("b", peer_replica(1_000))]);
    w.me = "a".into();
    assert_eq!(actions(&w), vec![acquire()]);
}

#[test]
fn reachable_running_primary_vetoes_the_election() {
    let mut w = election_world(
        1_000,
        vec![("a", peer(false, true, 1_000)), ("c", peer_replica(900))],
    );
    w.memory.unlocked_since_ms = Some(0); // waited "forever"
    let d = decide_default(&w);
    assert_eq!(d.actions, vec![]);
    assert!(
        d.summary.contains("primary a is still alive"),
        "{}",
        d.summary
    );
}

#[test]
fn unreachable_or_stopped_former_primary_does_not_veto() {
    for a in [None, peer(false, false, 1_000)] {
        let w = election_world(1_000, vec![("a", a.clone()), ("c", peer_replica(900))]);
        assert_eq!(actions(&w), vec![acquire()], "a = {a:?}");
    }
}

#[test]
fn unreachable_peer_with_more_wal_does_not_block_the_race() {
    // c is not polled at all: the DCS member is used, marked unreachable, not eligible.
    let mut w = election_world(900, vec![("a", None)]);
    if let Some(c) = w.cluster.as_mut() {
        c.members[2].data.xlog_location = Some(5_000);
    }
    assert_eq!(actions(&w), vec![acquire()]);
}

#[test]
fn nofailover_never_races() {
    let mut w = election_world(1_000, vec![("a", None), ("c", None)]);
    w.memory.unlocked_since_ms = Some(0);
    w.settings.nofailover = true;
    let d = decide_default(&w);
    assert_eq!(d.actions, vec![]);
    assert!(d.summary.contains("nofailover"), "{}", d.summary);
    w.settings.nofailover = false;
    for prio in [0, -1] {
        w.settings.failover_priority = prio;
        assert_eq!(actions(&w), vec![], "failover_priority {prio}");
    }
}

#[test]
fn lag_beyond_maximum_lag_on_failover_is_not_eligible() {
    let mut w = election_world(899, vec![("a", None), ("c", None)]);
    w.settings.maximum_lag_on_failover = 100;
    w.memory.unlocked_since_ms = Some(0);
    let d = decide_default(&w);
    assert_eq!(d.actions, vec![]);
    assert!(d.summary.contains("lag 101 bytes"), "{}", d.summary);
    // Exactly at the limit is fine.
    w.pg.wal_position = Some(900);
    assert_eq!(actions(&w), vec![acquire()]);
}

#[test]
fn ineligible_better_peer_does_not_make_me_wait() {
    let mut a = peer_replica(5_000);
    if let Some(p) = a.as_mut() {
        p.nofailover = true;
    }
    let w = election_world(1_000, vec![("a", a), ("c", peer_replica(900))]);
    assert_eq!(actions(&w), vec![acquire()]);
}

#[test]
fn timeline_behind_the_cluster_is_not_eligible_with_check_timeline() {
    let mut w = election_world(1_000, vec![("a", None), ("c", None)]);
    if let Some(c) = w.cluster.as_mut() {
        c.history = vec![HistoryLine {
            timeline: 1,
            lsn: 500,
            reason: "no recovery target specified".into(),
            timestamp: None,
            new_leader: Some("a".into()),
        }];
    }
    assert_eq!(actions(&w), vec![acquire()]);
    w.settings.check_timeline = true;
    let d = decide_default(&w);
    assert_eq!(d.actions, vec![]);
    assert!(d.summary.contains("timeline"), "{}", d.summary);
    w.pg.timeline = Some(2);
    assert_eq!(actions(&w), vec![acquire()]);
}

#[test]
fn node_failing_its_own_health_check_does_not_race() {
    let mut w = election_world(1_000, vec![("a", None), ("c", None)]);
    w.health = Health::Failed("disk full".into());
    assert_eq!(actions(&w), vec![]);
    w.health = Health::Degraded("slow".into());
    assert_eq!(actions(&w), vec![acquire()]);
}

#[test]
fn decide_follows_the_policy_ranking_not_the_wal() {
    // b has the most WAL but the policy prefers c.
    let w = election_world(
        5_000,
        vec![("a", peer_replica(1_000)), ("c", peer_replica(900))],
    );
    assert_eq!(decide(&w, &Fixed(ranked(&["c", "b"]))).actions, vec![]);
    assert_eq!(
        decide(&w, &Fixed(ranked(&["b", "c"]))).actions,
        vec![acquire()]
    );
    let d = decide(&w, &Fixed(ranked(&["c"])));
    assert_eq!(d.actions, vec![]);
    assert!(d.summary.contains("not eligible"), "{}", d.summary);
    let d = decide(&w, &Fixed(Ranking::Veto("maintenance window".into())));
    assert_eq!(d.actions, vec![]);
    assert!(d.summary.contains("maintenance window"), "{}", d.summary);
}

// ── DCS unreachable ───────────────────────────────────────────────────────────────────────

#[test]
fn dcs_unreachable_primary_with_valid_lease_keeps_running() {
    let mut w = world("b", None, pg_primary(10));
    w.memory.known_lock_lease = Some(MY_LEASE);
    let d = decide_default(&w);
    assert_eq!(d.actions, vec![Action::KeepLeading]);
    assert!(d.summary.contains("20000 ms"), "{}", d.summary);
}

#[test]
fn dcs_unreachable_primary_past_its_deadline_demotes_offline() {
    for deadline in [Some(NOW), Some(NOW - 1), None] {
        let mut w = world("b", None, pg_primary(10));
        w.memory.write_deadline_ms = deadline;
        assert_eq!(actions(&w), vec![offline()], "deadline {deadline:?}");
    }
}

/// Safety review item 6c: a leader that cannot renew its lease within retry_timeout stops
/// taking writes at once (read-only), whether or not the cluster could be read, although its
/// write deadline has not passed; a stopped one does not start writable.
#[test]
fn a_failed_lease_renewal_demotes_at_once_within_the_deadline() {
    let mut held = world(
        "b",
        Some(cluster(Some(leader("b", MY_LEASE)))),
        pg_primary(10),
    );
    held.memory.renewal_failed = true;
    assert!(held.lease_valid());
    assert_eq!(actions(&held), vec![offline()]);
    let mut cut = world("b", None, pg_primary(10));
    cut.memory.known_lock_lease = Some(MY_LEASE);
    cut.memory.renewal_failed = true;
    assert_eq!(actions(&cut), vec![offline()]);
    let mut stopped = world(
        "b",
        Some(cluster(Some(leader("b", MY_LEASE)))),
        pg_stopped(true),
    );
    stopped.memory.renewal_failed = true;
    assert!(
        !actions(&stopped).contains(&Action::StartPrimary),
        "{:?}",
        actions(&stopped)
    );
    // Paused: the operator is in charge.
    held.settings.paused = true;
    assert!(!actions(&held).contains(&offline()));
}

#[test]
fn dcs_unreachable_non_primary_does_nothing() {
    for pg in [pg_replica(10, Some("a")), pg_stopped(true), pg_empty()] {
        let w = world("b", None, pg.clone());
        assert_eq!(actions(&w), vec![], "{pg:?}");
    }
}

// ── regressions: bugs found and fixed ─────────────────────────────────────────────────────

/// `decide_primary` used to check "leader key has my name on another lease" before the write
/// deadline, so a primary whose deadline had passed kept running (only `ReattachLeader`).
#[test]
fn regression_reattach_respects_the_write_deadline() {
    for deadline in [Some(NOW - 1), None] {
        let mut w = world(
            "b",
            Some(cluster(Some(leader("b", OLD_LEASE)))),
            pg_primary(10),
        );
        w.memory.write_deadline_ms = deadline;
        let acts = actions(&w);
        assert!(
            acts.contains(&immediate()),
            "deadline {deadline:?}: expected a Demote, got {acts:?}"
        );
    }
}

/// Peers publish their policy's health verdict: a node that failed its own health check is not
/// ranked first by the others (who would otherwise wait for it while it does not race).
#[test]
fn regression_failed_top_candidate_does_not_stall_the_election() {
    // a: most WAL but failed its own health check. b: healthy, second best.
    let mut a = election_world(2_000, vec![("b", peer_replica(1_000))]);
    a.me = "a".into();
    a.health = Health::Failed("data checksum failures".into());
    let mut a_seen = peer_replica(2_000);
    if let Some(p) = a_seen.as_mut() {
        p.healthy = false;
    }
    let b = election_world(1_000, vec![("a", a_seen)]);
    assert_eq!(actions(&a), vec![], "a is not eligible in its own view");
    assert_eq!(
        actions(&b),
        vec![acquire()],
        "b is the best eligible candidate and should race without waiting"
    );
}

/// The policy (and `Member::nofailover`) treat `failover_priority <= 0` as nofailover, but
/// `decide_empty` used to check only `settings.nofailover` before racing to bootstrap.
#[test]
fn regression_failover_priority_zero_does_not_bootstrap() {
    let mut c = cluster(None);
    c.initialize = None;
    let mut w = world("b", Some(c), pg_empty());
    w.settings.failover_priority = 0;
    assert_eq!(actions(&w), vec![]);
}

/// Safety review item 6b: a replica (not only a former primary) that received WAL past the
/// point where the leader's timeline forked off its own can never stream from that leader: it
/// is rewound (or re-cloned), not left "following" it forever.
#[test]
fn a_replica_past_the_new_timelines_fork_point_is_rewound() {
    let mut c = cluster(Some(leader("a", OTHER_LEASE)));
    c.members = vec![member("a", "primary", 3_000)];
    c.history = vec![crate::dcs::HistoryLine {
        timeline: 1,
        lsn: 1_500,
        reason: "promoted".into(),
        timestamp: None,
        new_leader: Some("a".into()),
    }];
    // b replayed 2 000 on timeline 1: 500 bytes the new leader never had.
    let diverged = world("b", Some(c.clone()), pg_replica(2_000, Some("a")));
    let d = decide_default(&diverged);
    assert_eq!(
        d.actions,
        vec![Action::Rewind { leader: "a".into() }],
        "{}",
        d.summary
    );
    let mut no_rewind = diverged.clone();
    no_rewind.settings.use_pg_rewind = false;
    assert_eq!(
        actions(&no_rewind),
        vec![Action::Reclone { leader: "a".into() }]
    );
    // Up to the fork point it follows the new timeline as is.
    let behind = world("b", Some(c.clone()), pg_replica(1_500, Some("a")));
    assert_eq!(actions(&behind), vec![]);
    // Already on the new timeline: nothing to rewind.
    let mut moved = world("b", Some(c), pg_replica(2_000, Some("a")));
    moved.pg.timeline = Some(2);
    assert_eq!(actions(&moved), vec![]);
}
