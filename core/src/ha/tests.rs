//! Tests of the pure HA decision core.
//!
//! * **Unit tests** pin every branch of [`decide`] on a hand-built [`World`].
//! * **Property tests** generate whole clusters (1–7 nodes, a DCS view, and one [`World`] per
//!   node as that node sees it), run [`decide`] for every node and check cross-node invariants.
//! * **Simulation**: a 3-node cluster where the actions are applied abstractly (leader key CAS,
//!   leases expiring as time passes, partitions, crashes), checking that no two primaries can
//!   accept writes at the same time and that a leaderless cluster with an eligible replica gets
//!   a leader within a bounded number of loops.
//!
//! Known bugs in the core are reproduced by `#[ignore = "bug: ..."]` tests (`bug_*`); the
//! always-on properties tolerate exactly those bugs (see [`Tolerate`]) and nothing else.

use super::*;
use crate::dcs::{Cluster, HistoryLine, Leader, Member, MemberData};
use policy::{DefaultPolicy, ElectionView, Health, Policy, Ranked, Ranking};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value};
use std::cmp::Reverse;
use std::collections::BTreeMap;

// ═══════════════════════════════════════════════════════════════════════════════════════════
// Fixtures for the unit tests
// ═══════════════════════════════════════════════════════════════════════════════════════════

const SYSID: &str = "7268616322854375442";
const OTHER_SYSID: &str = "7000000000000000001";
const NOW: u64 = 1_000_000;
const MY_LEASE: i64 = 11;
const OLD_LEASE: i64 = 7;
const OTHER_LEASE: i64 = 22;
/// 2026-12-01T17:30:00Z
const UNIX_NOW: u64 = 1_796_146_200_000;

fn settings() -> Settings {
    Settings {
        ttl_ms: 30_000,
        maximum_lag_on_failover: 1_048_576,
        check_timeline: false,
        use_pg_rewind: true,
        nofailover: false,
        failover_priority: 1,
        tags: BTreeMap::new(),
        race_backoff_ms: 5_000,
        synchronous_mode: false,
        paused: false,
        loop_wait_ms: 10_000,
        failed_loops_before_handover: 2,
    }
}

fn leader(name: &str, lease: i64) -> Leader {
    Leader {
        name: name.into(),
        lease,
        mod_revision: 1,
    }
}

fn member(name: &str, role: &str, wal: u64) -> Member {
    Member {
        name: name.into(),
        data: MemberData {
            role: Some(role.into()),
            state: Some("running".into()),
            xlog_location: Some(wal),
            timeline: Some(1),
            ..MemberData::default()
        },
        lease: 99,
        mod_revision: 1,
    }
}

/// An initialized cluster (`initialize` = [`SYSID`]) with the given leader key.
fn cluster(leader: Option<Leader>) -> Cluster {
    Cluster {
        initialize: Some(SYSID.into()),
        leader,
        ..Cluster::default()
    }
}

fn initialized(was_primary: bool) -> DataDir {
    DataDir::Initialized {
        sysid: SYSID.into(),
        was_primary,
    }
}

fn pg_primary(wal: u64) -> PgView {
    PgView {
        data_dir: initialized(true),
        running: true,
        in_recovery: Some(false),
        timeline: Some(1),
        wal_position: Some(wal),
        received_lsn: None,
        replayed_lsn: None,
        upstream: None,
        streaming: Vec::new(),
        former_primary: false,
    }
}

fn pg_replica(wal: u64, upstream: Option<&str>) -> PgView {
    PgView {
        data_dir: initialized(false),
        running: true,
        in_recovery: Some(true),
        timeline: Some(1),
        wal_position: Some(wal),
        received_lsn: None,
        replayed_lsn: None,
        upstream: upstream.map(str::to_string),
        streaming: Vec::new(),
        former_primary: false,
    }
}

fn pg_stopped(was_primary: bool) -> PgView {
    PgView {
        data_dir: initialized(was_primary),
        running: false,
        in_recovery: None,
        timeline: None,
        wal_position: None,
        received_lsn: None,
        replayed_lsn: None,
        upstream: None,
        streaming: Vec::new(),
        former_primary: false,
    }
}

fn pg_empty() -> PgView {
    PgView {
        data_dir: DataDir::Empty,
        ..pg_stopped(false)
    }
}

/// Node `me` on lease [`MY_LEASE`], write deadline 20 s in the future, no peers.
fn world(me: &str, cluster: Option<Cluster>, pg: PgView) -> World {
    World {
        now_ms: NOW,
        me: me.into(),
        cluster,
        pg,
        peers: BTreeMap::new(),
        settings: settings(),
        health: Health::Healthy,
        now_unix_ms: UNIX_NOW,
        memory: Memory {
            our_lease: Some(MY_LEASE),
            write_deadline_ms: Some(NOW + 20_000),
            unlocked_since_ms: Some(NOW),
            ..Memory::default()
        },
    }
    .with_known_lock()
}

impl World {
    /// Fill `known_lock_lease` from the cluster view, as the supervisor does after a read.
    fn with_known_lock(mut self) -> World {
        if let Some(c) = &self.cluster {
            self.memory.known_lock_lease = c
                .leader
                .as_ref()
                .filter(|l| l.name == self.me)
                .map(|l| l.lease);
        }
        self
    }
}

fn peer(in_recovery: bool, running: bool, wal: u64) -> Option<PeerState> {
    Some(PeerState {
        role: if in_recovery { "replica" } else { "primary" }.into(),
        state: if running { "running" } else { "stopped" }.into(),
        in_recovery,
        wal_position: wal,
        received_lsn: None,
        replayed_lsn: None,
        timeline: Some(1),
        nofailover: false,
        failover_priority: 1,
        tags: BTreeMap::new(),
        healthy: true,
    })
}

fn peer_replica(wal: u64) -> Option<PeerState> {
    peer(true, true, wal)
}

fn decide_default(w: &World) -> Decision {
    decide(w, &DefaultPolicy)
}

fn actions(w: &World) -> Vec<Action> {
    decide_default(w).actions
}

fn immediate() -> Action {
    Action::Demote {
        mode: DemoteMode::Immediate,
    }
}

fn offline() -> Action {
    Action::Demote {
        mode: DemoteMode::Offline,
    }
}

fn acquire() -> Action {
    Action::AcquireLeader {
        reason: AcquireReason::LeaderMissing,
    }
}

fn acquire_requested() -> Action {
    Action::AcquireLeader {
        reason: AcquireReason::RequestedFailover,
    }
}

fn acquire_paused() -> Action {
    Action::AcquireLeader {
        reason: AcquireReason::PausedTakeover,
    }
}

fn handover(to: &str, reason: HandOverReason) -> Action {
    Action::HandOver {
        to: to.into(),
        reason,
    }
}

/// The request in the world's `failover` key (the memory remembers when it first saw it).
fn request_in(w: &World) -> crate::dcs::Failover {
    w.cluster
        .as_ref()
        .and_then(|c| c.failover.as_ref())
        .map(|(f, _)| f.clone())
        .unwrap_or_default()
}

/// Me = `b`, a healthy running replica with `me_wal`; no leader key; `/status` optime 1000;
/// members a, b, c in the DCS (a is the former primary).
fn election_world(me_wal: u64, peers: Vec<(&str, Option<PeerState>)>) -> World {
    let mut c = cluster(None);
    c.members = vec![
        member("a", "primary", 1_000),
        member("b", "replica", me_wal),
        member("c", "replica", 900),
    ];
    c.status.optime = Some(1_000);
    let mut w = world("b", Some(c), pg_replica(me_wal, Some("a")));
    w.peers = peers.into_iter().map(|(n, p)| (n.to_string(), p)).collect();
    w
}

/// A policy with a fixed answer, to check that `decide` follows the policy's ranking.
struct Fixed(Ranking);

impl Policy for Fixed {
    fn name(&self) -> String {
        "fixed".into()
    }
    fn rank(&self, _view: &ElectionView) -> Ranking {
        self.0.clone()
    }
    fn health(&self, _facts: &policy::HealthFacts) -> Health {
        Health::Healthy
    }
}

fn ranked(names: &[&str]) -> Ranking {
    Ranking::Candidates(
        names
            .iter()
            .map(|n| Ranked {
                name: n.to_string(),
                reason: "fixed".into(),
            })
            .collect(),
    )
}

// ═══════════════════════════════════════════════════════════════════════════════════════════
// Unit tests: one per branch of `decide`
// ═══════════════════════════════════════════════════════════════════════════════════════════

// ── empty data directory ──────────────────────────────────────────────────────────────────

#[test]
fn empty_dir_with_leader_clones_from_it() {
    let w = world(
        "b",
        Some(cluster(Some(leader("a", OTHER_LEASE)))),
        pg_empty(),
    );
    assert_eq!(actions(&w), vec![Action::CloneFrom { leader: "a".into() }]);
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
    for lease in [MY_LEASE, OLD_LEASE] {
        let w = world("b", Some(cluster(Some(leader("b", lease)))), pg_empty());
        assert_eq!(actions(&w), vec![Action::ReleaseLeader], "lease {lease}");
    }
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
            leader: Some("a".into())
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
        vec![Action::KeepLeading, Action::StartReplica { leader: None }]
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
    assert_eq!(actions(&w), vec![Action::StartReplica { leader: None }]);
}

#[test]
fn stopped_node_without_leader_starts_read_only() {
    for was_primary in [true, false] {
        let w = world("b", Some(cluster(None)), pg_stopped(was_primary));
        assert_eq!(actions(&w), vec![Action::StartReplica { leader: None }]);
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
            vec![Action::Follow { leader: "a".into() }],
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

#[test]
fn dcs_unreachable_non_primary_does_nothing() {
    for pg in [pg_replica(10, Some("a")), pg_stopped(true), pg_empty()] {
        let w = world("b", None, pg.clone());
        assert_eq!(actions(&w), vec![], "{pg:?}");
    }
}

// ── known bugs ────────────────────────────────────────────────────────────────────────────

/// `decide_primary` checks "leader key has my name on another lease" before the write
/// deadline, so a primary whose deadline passed keeps running (only `ReattachLeader`).
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

// ── operators: switchover, failover, pause; a failed leader hands over ─────────────────────

/// b leads on its lease; c is a healthy replica just behind; a switchover request in the key.
fn switchover_world(
    leader_field: Option<&str>,
    candidate: Option<&str>,
    at: Option<&str>,
) -> World {
    let mut c = cluster(Some(leader("b", MY_LEASE)));
    c.members = vec![member("b", "primary", 1_000), member("c", "replica", 990)];
    c.status.optime = Some(1_000);
    c.failover = Some((
        crate::dcs::Failover {
            leader: leader_field.map(str::to_string),
            member: candidate.map(str::to_string),
            scheduled_at: at.map(str::to_string),
        },
        3,
    ));
    let mut w = world("b", Some(c), pg_primary(1_000));
    w.pg.streaming = vec!["c".into()];
    w.peers = [("c".to_string(), peer_replica(990))].into();
    w
}

/// As [`switchover_world`] without a request; b's policy has judged it failed for `loops`.
fn failed_leader_world(loops: u32) -> World {
    let mut w = switchover_world(None, None, None);
    if let Some(c) = w.cluster.as_mut() {
        c.failover = None;
    }
    w.health = Health::Failed("canary write failed".into());
    w.memory.failed_health_loops = loops;
    w
}

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

/// The policy (and `Member::nofailover`) treat `failover_priority <= 0` as nofailover, but
/// `decide_empty` only checks `settings.nofailover` before racing to bootstrap.
#[test]
fn regression_failover_priority_zero_does_not_bootstrap() {
    let mut c = cluster(None);
    c.initialize = None;
    let mut w = world("b", Some(c), pg_empty());
    w.settings.failover_priority = 0;
    assert_eq!(actions(&w), vec![]);
}

// ═══════════════════════════════════════════════════════════════════════════════════════════
// Generators: a whole cluster, and every node's World
// ═══════════════════════════════════════════════════════════════════════════════════════════

/// A leader-key name that can never be a generated member name.
const GHOST: &str = "Ghost_0";
const LEASE_BASE: i64 = 1_000;
const STALE_LEASE_BASE: i64 = 5_000;
const GHOST_LEASE: i64 = 9_999;

#[derive(Debug, Clone)]
enum DirGen {
    Empty,
    Match { was_primary: bool },
    Mismatch { was_primary: bool },
    Unusable,
}

#[derive(Debug, Clone)]
enum UpstreamGen {
    None,
    Leader,
    Node(Index),
}

/// The write deadline relative to `now`.
#[derive(Debug, Clone)]
enum DeadlineGen {
    Never,
    /// `now - x` (`x = 0` is exactly at the deadline: already invalid).
    Past(u64),
    /// `now + 1 + x`.
    Future(u64),
}

#[derive(Debug, Clone)]
enum LeaderGen {
    Absent,
    /// Held by a node on its current lease (or a stale one if it has none).
    OnLease(Index),
    /// A node's name on a lease it no longer holds (a previous supervisor run).
    Stale(Index),
    /// A name that is no node of this cluster.
    Ghost,
}

#[derive(Debug, Clone)]
enum InitGen {
    Absent,
    InProgress,
    Sysid,
}

#[derive(Debug, Clone)]
struct NodeGen {
    dir: DirGen,
    running: bool,
    in_recovery: bool,
    wal: u64,
    timeline: u32,
    upstream: UpstreamGen,
    rewind_failed: bool,
    has_lease: bool,
    deadline: DeadlineGen,
    dcs_reachable: bool,
    /// Bit j: this node can reach peer j's REST API.
    reach_mask: u8,
    unlocked_ago: Option<u64>,
    health: Health,
    nofailover: bool,
    priority: i64,
    /// Has a `members/<name>` key.
    in_dcs: bool,
    /// What the member key says about its WAL position (`None`: the current one).
    member_wal: Option<u64>,
    /// Consecutive loops its policy judged it failed (counts only when `health` is failed).
    failed_loops: u32,
    /// A running replica on a former primary's data directory (not rewound since).
    former_primary: bool,
}

/// A request in the `failover` key.
#[derive(Debug, Clone)]
struct RequestGen {
    /// `None`: no `leader` field; `Some(None)`: the leader key's holder; else that node.
    leader: Option<Option<Index>>,
    candidate: Option<Index>,
    when: WhenGen,
}

/// `scheduled_at` relative to [`UNIX_NOW`] (2026-12-01T17:30:00Z).
#[derive(Debug, Clone, Copy)]
enum WhenGen {
    Unscheduled,
    /// Five minutes from now.
    Future,
    /// One second ago: due.
    JustPassed,
    /// Half an hour ago: stale.
    Stale,
    Invalid,
}

impl WhenGen {
    fn text(self) -> Option<String> {
        match self {
            WhenGen::Unscheduled => None,
            WhenGen::Future => Some("2026-12-01T17:35:00+00:00".into()),
            WhenGen::JustPassed => Some("2026-12-01T18:29:59+01:00".into()),
            WhenGen::Stale => Some("2026-12-01T17:00:00Z".into()),
            WhenGen::Invalid => Some("after lunch".into()),
        }
    }
}

#[derive(Debug, Clone)]
struct CommonGen {
    now: u64,
    ttl: u64,
    max_lag: u64,
    check_timeline: bool,
    use_pg_rewind: bool,
    backoff: u64,
    initialize: InitGen,
    optime: Option<u64>,
    history: Vec<Option<Index>>,
    leader: LeaderGen,
    ghost_member: bool,
    paused: bool,
    request: Option<RequestGen>,
}

#[derive(Debug, Clone)]
struct ClusterGen {
    names: Vec<String>,
    nodes: Vec<NodeGen>,
    common: CommonGen,
}

/// The true DCS state and the world as each node sees it.
#[derive(Debug, Clone)]
struct Scenario {
    truth: Cluster,
    worlds: Vec<World>,
}

/// WAL positions from a small range so that ties and `maximum_lag_on_failover` edges are common.
fn arb_wal() -> impl Strategy<Value = u64> {
    prop_oneof![(0..12u64).prop_map(|k| k * 500), 0..6_000u64]
}

/// Offsets from `now`, often right at the boundary.
fn arb_offset() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(1u64), 0..40_000u64]
}

fn arb_health() -> impl Strategy<Value = Health> {
    prop_oneof![
        8 => Just(Health::Healthy),
        1 => Just(Health::Degraded("slow".into())),
        1 => Just(Health::Failed("down".into())),
    ]
}

fn arb_node() -> impl Strategy<Value = NodeGen> {
    let dir = prop_oneof![
        16 => any::<bool>().prop_map(|was_primary| DirGen::Match { was_primary }),
        2 => Just(DirGen::Empty),
        1 => any::<bool>().prop_map(|was_primary| DirGen::Mismatch { was_primary }),
        1 => Just(DirGen::Unusable),
    ];
    let upstream = prop_oneof![
        Just(UpstreamGen::None),
        Just(UpstreamGen::Leader),
        any::<Index>().prop_map(UpstreamGen::Node),
    ];
    let deadline = prop_oneof![
        1 => Just(DeadlineGen::Never),
        3 => arb_offset().prop_map(DeadlineGen::Past),
        6 => arb_offset().prop_map(DeadlineGen::Future),
    ];
    let pg = (
        dir,
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.7),
        arb_wal(),
        1..4u32,
        upstream,
        prop::bool::weighted(0.1),
    );
    let lease = (
        prop::bool::weighted(0.9),
        deadline,
        prop::bool::weighted(0.85),
        prop_oneof![Just(0xffu8), any::<u8>()],
        prop::option::of(0..20_000u64),
        arb_health(),
    );
    let member = (
        prop::bool::weighted(0.15),
        -1..=3i64,
        prop::bool::weighted(0.85),
        prop::option::of(arb_wal()),
        0..4u32,
        prop::bool::weighted(0.1),
    );
    (pg, lease, member).prop_map(
        |(
            (dir, running, in_recovery, wal, timeline, upstream, rewind_failed),
            (has_lease, deadline, dcs_reachable, reach_mask, unlocked_ago, health),
            (nofailover, priority, in_dcs, member_wal, failed_loops, former_primary),
        )| NodeGen {
            dir,
            running,
            in_recovery,
            wal,
            timeline,
            upstream,
            rewind_failed,
            has_lease,
            deadline,
            dcs_reachable,
            reach_mask,
            unlocked_ago,
            health,
            nofailover,
            priority,
            in_dcs,
            member_wal,
            failed_loops,
            former_primary,
        },
    )
}

fn arb_request() -> impl Strategy<Value = RequestGen> {
    let when = prop_oneof![
        4 => Just(WhenGen::Unscheduled),
        1 => Just(WhenGen::Future),
        1 => Just(WhenGen::JustPassed),
        1 => Just(WhenGen::Stale),
        1 => Just(WhenGen::Invalid),
    ];
    (
        prop::option::weighted(0.6, prop::option::weighted(0.3, any::<Index>())),
        prop::option::weighted(0.8, any::<Index>()),
        when,
    )
        .prop_map(|(leader, candidate, when)| RequestGen {
            leader,
            candidate,
            when,
        })
}

fn arb_common() -> impl Strategy<Value = CommonGen> {
    let settings = (
        1_000_000..2_000_000u64,
        1_000..60_000u64,
        prop_oneof![Just(0u64), 0..3_000u64, Just(1_048_576u64)],
        any::<bool>(),
        any::<bool>(),
        0..10_000u64,
    );
    let dcs = (
        prop_oneof![
            1 => Just(InitGen::Absent),
            1 => Just(InitGen::InProgress),
            4 => Just(InitGen::Sysid),
        ],
        prop::option::of(arb_wal()),
        prop::collection::vec(prop::option::of(any::<Index>()), 0..4),
        prop_oneof![
            3 => Just(LeaderGen::Absent),
            3 => any::<Index>().prop_map(LeaderGen::OnLease),
            1 => any::<Index>().prop_map(LeaderGen::Stale),
            1 => Just(LeaderGen::Ghost),
        ],
        prop::bool::weighted(0.2),
    );
    let operator = (
        prop::bool::weighted(0.15),
        prop::option::weighted(0.25, arb_request()),
    );
    (settings, dcs, operator).prop_map(
        |(
            (now, ttl, max_lag, check_timeline, use_pg_rewind, backoff),
            (initialize, optime, history, leader, ghost_member),
            (paused, request),
        )| CommonGen {
            now,
            ttl,
            max_lag,
            check_timeline,
            use_pg_rewind,
            backoff,
            initialize,
            optime,
            history,
            leader,
            ghost_member,
            paused,
            request,
        },
    )
}

fn arb_cluster() -> impl Strategy<Value = ClusterGen> {
    prop::collection::btree_set("[a-z][a-z0-9-]{0,7}", 1..=7).prop_flat_map(|names| {
        let n = names.len();
        (
            Just(names.into_iter().collect::<Vec<_>>()),
            prop::collection::vec(arb_node(), n),
            arb_common(),
        )
            .prop_map(|(names, nodes, common)| ClusterGen {
                names,
                nodes,
                common,
            })
    })
}

/// Everybody sees the same unlocked cluster, reaches every peer, and nobody has waited for
/// the backoff yet. `keep_primaries`: otherwise every running node is a replica, so that the
/// election is not always vetoed by a primary that is still alive.
fn unlocked_all_reachable(mut g: ClusterGen, keep_primaries: bool) -> ClusterGen {
    g.common.leader = LeaderGen::Absent;
    g.common.initialize = InitGen::Sysid;
    g.common.paused = false;
    g.common.request = None;
    g.common.backoff = g.common.backoff.max(1);
    let backoff = g.common.backoff;
    for n in &mut g.nodes {
        n.dir = match n.dir {
            DirGen::Match { was_primary } | DirGen::Mismatch { was_primary } => {
                DirGen::Match { was_primary }
            }
            DirGen::Empty | DirGen::Unusable => DirGen::Match { was_primary: false },
        };
        n.dcs_reachable = true;
        n.reach_mask = 0xff;
        n.unlocked_ago = n.unlocked_ago.map(|a| a % backoff);
        if !keep_primaries {
            n.in_recovery = true;
        }
    }
    g
}

fn node_lease(g: &NodeGen, i: usize) -> Option<i64> {
    g.has_lease.then_some(LEASE_BASE + i as i64)
}

fn build_pg(g: &ClusterGen, i: usize, leader: Option<&Leader>) -> PgView {
    let n = &g.nodes[i];
    let data_dir = match n.dir {
        DirGen::Empty => DataDir::Empty,
        DirGen::Unusable => DataDir::Unusable("not a PostgreSQL data directory".into()),
        DirGen::Match { was_primary } => DataDir::Initialized {
            sysid: SYSID.into(),
            was_primary,
        },
        DirGen::Mismatch { was_primary } => DataDir::Initialized {
            sysid: OTHER_SYSID.into(),
            was_primary,
        },
    };
    // Only an initialized data directory can run; a running PostgreSQL's state is known.
    let running = n.running && matches!(data_dir, DataDir::Initialized { .. });
    let upstream = match &n.upstream {
        UpstreamGen::None => None,
        UpstreamGen::Leader => leader.map(|l| l.name.clone()),
        UpstreamGen::Node(ix) => Some(g.names[ix.index(g.names.len())].clone()),
    };
    PgView {
        data_dir,
        running,
        in_recovery: running.then_some(n.in_recovery),
        timeline: running.then_some(n.timeline),
        wal_position: running.then_some(n.wal),
        received_lsn: None,
        replayed_lsn: None,
        upstream: if running && n.in_recovery {
            upstream
        } else {
            None
        },
        streaming: Vec::new(),
        former_primary: running && n.in_recovery && n.former_primary,
    }
}

/// A primary's streaming replicas: the running replicas whose upstream it is.
fn fill_streaming(names: &[String], pgs: &mut [PgView]) {
    for i in 0..pgs.len() {
        if !pgs[i].is_primary() {
            continue;
        }
        let streaming = (0..pgs.len())
            .filter(|&j| {
                j != i && pgs[j].is_replica() && pgs[j].upstream.as_deref() == Some(&names[i])
            })
            .map(|j| names[j].clone())
            .collect();
        pgs[i].streaming = streaming;
    }
}

fn tags_json(nofailover: bool, priority: i64) -> Map<String, Value> {
    let mut tags = Map::new();
    if nofailover {
        tags.insert("nofailover".into(), Value::Bool(true));
    }
    tags.insert("failover_priority".into(), Value::from(priority));
    tags
}

/// What `GET /patroni` on a node answers.
fn report(pg: &PgView, nofailover: bool, priority: i64) -> PeerState {
    PeerState {
        role: if pg.is_primary() {
            "primary"
        } else {
            "replica"
        }
        .into(),
        state: if pg.running { "running" } else { "stopped" }.into(),
        in_recovery: pg.in_recovery.unwrap_or(true),
        wal_position: pg.wal_position.unwrap_or(0),
        received_lsn: None,
        replayed_lsn: None,
        timeline: pg.timeline,
        nofailover,
        failover_priority: priority,
        tags: BTreeMap::new(),
        healthy: true,
    }
}

fn build(g: &ClusterGen) -> Scenario {
    let c = &g.common;
    let n = g.names.len();
    let leader = match &c.leader {
        LeaderGen::Absent => None,
        LeaderGen::OnLease(ix) => {
            let i = ix.index(n);
            Some(Leader {
                name: g.names[i].clone(),
                lease: node_lease(&g.nodes[i], i).unwrap_or(STALE_LEASE_BASE + i as i64),
                mod_revision: 3,
            })
        }
        LeaderGen::Stale(ix) => {
            let i = ix.index(n);
            Some(Leader {
                name: g.names[i].clone(),
                lease: STALE_LEASE_BASE + i as i64,
                mod_revision: 3,
            })
        }
        LeaderGen::Ghost => Some(Leader {
            name: GHOST.into(),
            lease: GHOST_LEASE,
            mod_revision: 3,
        }),
    };
    let mut pgs: Vec<PgView> = (0..n).map(|i| build_pg(g, i, leader.as_ref())).collect();
    fill_streaming(&g.names, &mut pgs);

    let mut members: Vec<Member> = Vec::new();
    for (i, node) in g.nodes.iter().enumerate() {
        if !node.in_dcs {
            continue;
        }
        let pg = &pgs[i];
        members.push(Member {
            name: g.names[i].clone(),
            data: MemberData {
                role: Some(
                    if pg.is_primary() {
                        "primary"
                    } else {
                        "replica"
                    }
                    .into(),
                ),
                state: Some(if pg.running { "running" } else { "stopped" }.into()),
                xlog_location: node.member_wal.or(pg.wal_position),
                timeline: pg.timeline,
                tags: tags_json(node.nofailover, node.priority),
                ..MemberData::default()
            },
            lease: node_lease(node, i).unwrap_or(STALE_LEASE_BASE + i as i64),
            mod_revision: 2,
        });
    }
    if c.ghost_member {
        members.push(Member {
            name: GHOST.into(),
            data: MemberData {
                role: Some("replica".into()),
                xlog_location: Some(1_000_000),
                ..MemberData::default()
            },
            lease: GHOST_LEASE,
            mod_revision: 2,
        });
    }
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let history = c
        .history
        .iter()
        .enumerate()
        .map(|(k, who)| HistoryLine {
            timeline: k as u32 + 1,
            lsn: 500 * (k as u64 + 1),
            reason: "no recovery target specified".into(),
            timestamp: Some("2026-01-01T00:00:00+00:00".into()),
            new_leader: who.as_ref().map(|ix| g.names[ix.index(n)].clone()),
        })
        .collect();
    let leader_name = leader.as_ref().map(|l| l.name.clone());
    let truth = Cluster {
        initialize: match c.initialize {
            InitGen::Absent => None,
            InitGen::InProgress => Some(String::new()),
            InitGen::Sysid => Some(SYSID.into()),
        },
        leader,
        members,
        status: crate::dcs::Status {
            optime: c.optime,
            ..Default::default()
        },
        history,
        failover: c.request.as_ref().map(|r| {
            (
                crate::dcs::Failover {
                    leader: r.leader.map(|l| match l {
                        Some(ix) => g.names[ix.index(n)].clone(),
                        None => leader_name.clone().unwrap_or_else(|| g.names[0].clone()),
                    }),
                    member: r.candidate.map(|ix| g.names[ix.index(n)].clone()),
                    scheduled_at: r.when.text(),
                },
                5,
            )
        }),
        revision: 42,
        ..Cluster::default()
    };

    let worlds = (0..n)
        .map(|i| {
            let node = &g.nodes[i];
            let peers = (0..n)
                .filter(|&j| j != i)
                .map(|j| {
                    let reachable = node.reach_mask & (1 << j) != 0;
                    let state = reachable.then(|| {
                        let mut r = report(&pgs[j], g.nodes[j].nofailover, g.nodes[j].priority);
                        r.healthy = !matches!(g.nodes[j].health, Health::Failed(_));
                        r
                    });
                    (g.names[j].clone(), state)
                })
                // The supervisor asks every member key; a member with no node answers nothing.
                .chain(c.ghost_member.then(|| (GHOST.to_string(), None)))
                .collect();
            World {
                now_ms: c.now,
                me: g.names[i].clone(),
                cluster: node.dcs_reachable.then(|| truth.clone()),
                pg: pgs[i].clone(),
                peers,
                settings: Settings {
                    ttl_ms: c.ttl,
                    maximum_lag_on_failover: c.max_lag,
                    check_timeline: c.check_timeline,
                    use_pg_rewind: c.use_pg_rewind,
                    nofailover: node.nofailover,
                    failover_priority: node.priority,
                    tags: BTreeMap::new(),
                    race_backoff_ms: c.backoff,
                    synchronous_mode: false,
                    paused: c.paused,
                    loop_wait_ms: 1_000,
                    failed_loops_before_handover: 2,
                },
                health: node.health.clone(),
                now_unix_ms: UNIX_NOW,
                memory: Memory {
                    our_lease: node_lease(node, i),
                    write_deadline_ms: match node.deadline {
                        DeadlineGen::Never => None,
                        DeadlineGen::Past(x) => Some(c.now - x),
                        DeadlineGen::Future(x) => Some(c.now + 1 + x),
                    },
                    unlocked_since_ms: node.unlocked_ago.map(|a| c.now - a),
                    // Its last successful read saw the key as it is now.
                    known_lock_lease: truth
                        .leader
                        .as_ref()
                        .filter(|l| l.name == g.names[i])
                        .map(|l| l.lease),
                    failed_health_loops: if matches!(node.health, Health::Failed(_)) {
                        node.failed_loops
                    } else {
                        0
                    },
                    rewind_failed: node.rewind_failed,
                    ..Memory::default()
                },
            }
        })
        .collect();
    Scenario { truth, worlds }
}

// ═══════════════════════════════════════════════════════════════════════════════════════════
// Invariants
// ═══════════════════════════════════════════════════════════════════════════════════════════

/// Which known bugs (reproduced by the `bug_*` tests) an invariant check lets pass.
#[derive(Debug, Clone, Copy)]
struct Tolerate {
    /// Without the DCS, a primary keeps running on its write deadline alone, although that
    /// deadline may come from a lease that does not carry the leader key.
    dcs_loss_trusts_any_renewal: bool,
    /// A primary past its write deadline is not demoted when the key has its name on another lease.
    reattach_ignores_deadline: bool,
    /// Peers cannot tell that a node failed its own health check.
    peer_health_unknown: bool,
    /// `failover_priority <= 0` does not stop a bootstrap race.
    priority_zero_bootstraps: bool,
}

impl Tolerate {
    const KNOWN_BUGS: Tolerate = Tolerate {
        dcs_loss_trusts_any_renewal: false,
        reattach_ignores_deadline: false,
        peer_health_unknown: false,
        priority_zero_bootstraps: false,
    };
}

fn has(d: &Decision, pred: impl Fn(&Action) -> bool) -> bool {
    d.actions.iter().any(pred)
}

/// The leader an action points the node at, if any.
fn named_leader(a: &Action) -> Option<&str> {
    match a {
        Action::CloneFrom { leader }
        | Action::Reclone { leader }
        | Action::Rewind { leader }
        | Action::Follow { leader } => Some(leader),
        Action::StartReplica { leader } => leader.as_deref(),
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
fn check_node(
    w: &World,
    truth: &Cluster,
    d: &Decision,
    tol: Tolerate,
) -> Result<(), TestCaseError> {
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
    if renew {
        if dcs {
            prop_assert!(holder, "RenewLease without the lock: {}", ctx());
        } else {
            prop_assert!(
                w.pg.is_primary() && deadline_valid(w),
                "RenewLease without DCS: {}",
                ctx()
            );
            if !tol.dcs_loss_trusts_any_renewal {
                prop_assert!(
                    holder,
                    "keeps running as primary without the DCS although the leader key is {:?}: {}",
                    truth.leader,
                    ctx()
                );
            }
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
            prop_assert!(paused, "a primary races outside pause: {}", ctx());
        } else if failover_to_me {
            prop_assert!(
                w.pg.is_replica() && !w.settings.nofailover && w.settings.failover_priority > 0,
                "requested candidate races although it cannot be promoted: {}",
                ctx()
            );
        } else {
            prop_assert!(!paused, "racing in a paused cluster: {}", ctx());
            prop_assert!(eligible(w, truth), "ineligible node races: {}", ctx());
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
        prop_assert!(holder && request.is_some(), "ClearFailover: {}", ctx());
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
        if !dcs {
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
            if !tol.reattach_ignores_deadline && !deadline_valid(w) {
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

    // Actions pointing at a leader name the current leader key holder, never myself.
    for a in &d.actions {
        if let Some(l) = named_leader(a) {
            prop_assert!(dcs, "{:?} without DCS: {}", a, ctx());
            prop_assert_eq!(truth.leader_name(), Some(l), "{:?}: {}", a, ctx());
            prop_assert_ne!(l, w.me.as_str(), "{:?} from myself: {}", a, ctx());
        }
    }
    // Rewind only a former primary that may be rewound; re-clone only when it may not.
    let was_primary = matches!(
        w.pg.data_dir,
        DataDir::Initialized {
            was_primary: true,
            ..
        }
    );
    // A running replica counts as a former primary until rewound: it may have diverged.
    let diverged = was_primary || w.pg.former_primary;
    if has(d, |a| matches!(a, Action::Rewind { .. })) {
        prop_assert!(
            (!w.pg.running || w.pg.former_primary)
                && diverged
                && w.settings.use_pg_rewind
                && !w.memory.rewind_failed,
            "Rewind: {}",
            ctx()
        );
    }
    if has(d, |a| matches!(a, Action::Reclone { .. })) {
        prop_assert!(
            (!w.pg.running || w.pg.former_primary)
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
    if has(d, |a| matches!(a, Action::StartReplica { leader: Some(_) })) {
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
            dcs && truth.leader_name() == Some(w.me.as_str()),
            "ReleaseLeader: {}",
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
        if !tol.priority_zero_bootstraps {
            prop_assert!(
                w.settings.failover_priority > 0,
                "failover_priority <= 0 bootstraps: {}",
                ctx()
            );
        }
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
fn check_cluster(s: &Scenario, ds: &[Decision], tol: Tolerate) -> Result<(), TestCaseError> {
    for (w, d) in s.worlds.iter().zip(ds) {
        check_node(w, &s.truth, d, tol)?;
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
fn check_unlocked_election(
    s: &Scenario,
    ds: &[Decision],
    tol: Tolerate,
) -> Result<(), TestCaseError> {
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
        .filter(|w| eligible(w, &s.truth))
        .max_by_key(|w| rank_key(w));
    // Would a node that failed its own health check (which peers cannot know) outrank it?
    let failed_outranks = s.worlds.iter().any(|w| {
        matches!(w.health, Health::Failed(_))
            && eligible(
                &World {
                    health: Health::Healthy,
                    ..w.clone()
                },
                &s.truth,
            )
            && best.is_none_or(|b| rank_key(w) > rank_key(b))
    });
    if tol.peer_health_unknown && failed_outranks {
        return Ok(());
    }
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

/// A healthy locked cluster: node `leader` holds the key on its lease and runs as primary,
/// every other node runs as a replica, and everybody reaches the DCS and every peer. The
/// request, pause, health and WAL stay as generated.
fn locked_all_reachable(mut g: ClusterGen, leader: Index) -> ClusterGen {
    let l = leader.index(g.nodes.len());
    g.common.leader = LeaderGen::OnLease(leader);
    g.common.initialize = InitGen::Sysid;
    for (i, n) in g.nodes.iter_mut().enumerate() {
        n.dir = DirGen::Match {
            was_primary: i == l,
        };
        n.running = true;
        n.in_recovery = i != l;
        n.dcs_reachable = true;
        n.reach_mask = 0xff;
        n.has_lease = true;
        n.in_dcs = true;
        n.deadline = DeadlineGen::Future(5_000);
        if i != l {
            n.upstream = UpstreamGen::Leader;
        }
    }
    g
}

fn arb_locked_cluster() -> impl Strategy<Value = ClusterGen> {
    (arb_cluster(), any::<Index>()).prop_map(|(g, l)| locked_all_reachable(g, l))
}

/// In a healthy locked cluster: the leader hands over exactly when asked (a due request for
/// it) or when its health failed long enough, and then to the requested candidate if that
/// one is eligible, else to the best eligible replica; nobody else acts on the request.
fn check_handover(s: &Scenario, ds: &[Decision]) -> Result<(), TestCaseError> {
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

/// An unlocked, all-reachable cluster with an unscheduled failover request naming `candidate`,
/// in which nobody has waited for a leader as long as `ttl` yet.
fn arb_manual_failover_cluster() -> impl Strategy<Value = ClusterGen> {
    (
        arb_cluster(),
        any::<Index>(),
        prop::option::of(any::<Index>()),
    )
        .prop_map(|(g, candidate, leader)| {
            let mut g = unlocked_all_reachable(g, false);
            g.common.request = Some(RequestGen {
                leader: leader.map(Some),
                candidate: Some(candidate),
                when: WhenGen::Unscheduled,
            });
            let ttl = g.common.ttl;
            for n in &mut g.nodes {
                n.unlocked_ago = n.unlocked_ago.map(|a| a % ttl);
            }
            g
        })
}

/// A failover to a candidate that can be promoted: only it races, whatever the ranking. A
/// candidate that cannot: the election goes on as without the request.
fn check_manual_failover(s: &Scenario, ds: &[Decision]) -> Result<(), TestCaseError> {
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
    if viable {
        prop_assert_eq!(racers, vec![c.as_str()], "failover to {}", c);
        Ok(())
    } else {
        check_unlocked_election(s, ds, Tolerate::KNOWN_BUGS)
    }
}

fn arb_unlocked_cluster() -> impl Strategy<Value = ClusterGen> {
    (arb_cluster(), prop::bool::weighted(0.3))
        .prop_map(|(g, keep_primaries)| unlocked_all_reachable(g, keep_primaries))
}

fn decide_all(s: &Scenario) -> Vec<Decision> {
    s.worlds.iter().map(decide_default).collect()
}

fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ═══════════════════════════════════════════════════════════════════════════════════════════
// Property tests over generated cluster states
// ═══════════════════════════════════════════════════════════════════════════════════════════

proptest! {
    #![proptest_config(proptest_config(3_000))]

    #[test]
    fn prop_every_node_decision_is_safe(g in arb_cluster()) {
        let s = build(&g);
        check_cluster(&s, &decide_all(&s), Tolerate::KNOWN_BUGS)?;
    }

    #[test]
    fn prop_unlocked_cluster_elects_exactly_the_best_candidate(
        g in arb_unlocked_cluster()
    ) {
        let s = build(&g);
        let ds = decide_all(&s);
        check_cluster(&s, &ds, Tolerate::KNOWN_BUGS)?;
        check_unlocked_election(&s, &ds, Tolerate::KNOWN_BUGS)?;
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
        check_cluster(&s, &ds, Tolerate::KNOWN_BUGS)?;
        check_handover(&s, &ds)?;
    }

    #[test]
    fn prop_requested_failover_candidate_alone_races(g in arb_manual_failover_cluster()) {
        let s = build(&g);
        let ds = decide_all(&s);
        check_cluster(&s, &ds, Tolerate::KNOWN_BUGS)?;
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
        let tol = Tolerate { peer_health_unknown: false, ..Tolerate::KNOWN_BUGS };
        check_unlocked_election(&s, &decide_all(&s), tol)?;
    }

}

// ═══════════════════════════════════════════════════════════════════════════════════════════
// Multi-step simulation of a 3-node cluster
// ═══════════════════════════════════════════════════════════════════════════════════════════

const SIM_NODES: usize = 3;
const LOOP_MS: u64 = 1_000;
/// Quiet loops (all nodes ticking, network healed) run after the random events.
const SETTLE_LOOPS: usize = 15;
/// A leaderless cluster with an eligible running replica must get a leader within this many loops.
const LIVENESS_LOOPS: usize = 4;

#[derive(Debug, Clone)]
struct SimConfig {
    ttl: u64,
    max_lag: u64,
    check_timeline: bool,
    use_pg_rewind: bool,
    backoff: u64,
}

#[derive(Debug, Clone)]
struct SimNode {
    name: String,
    running: bool,
    in_recovery: Option<bool>,
    was_primary: bool,
    wal: u64,
    timeline: u32,
    upstream: Option<String>,
    /// The supervisor's decision memory (its lease, write deadline, ...), updated by the
    /// production code (`Memory::lease_renewed`, `Memory::cluster_observed`).
    mem: Memory,
    dcs_cut: bool,
    peers_cut: bool,
    nofailover: bool,
    priority: i64,
    /// Started read-only on its own former primary data: must rewind before following.
    former_primary: bool,
}

#[derive(Debug, Clone, Default)]
struct SimDcs {
    leader: Option<Leader>,
    /// Lease id → expiry time.
    leases: BTreeMap<i64, u64>,
    members: BTreeMap<String, Member>,
    initialize: Option<String>,
    optime: Option<u64>,
    history: Vec<HistoryLine>,
    revision: i64,
    /// A switchover/failover request (the `failover` key).
    failover: Option<crate::dcs::Failover>,
}

#[derive(Debug, Clone)]
enum Ev {
    /// One HA loop: renew our lease, read the cluster, decide, act.
    Tick(usize),
    /// One HA loop where the lease renewal succeeds but reading the cluster fails.
    TickReadFails(usize),
    Advance(u64),
    /// PostgreSQL dies (the supervisor lives on).
    CrashPg(usize),
    /// Cut from the DCS and from every peer.
    Isolate(usize),
    /// Cut from the DCS only.
    CutDcs(usize),
    Heal(usize),
    /// Every running primary accepts this many bytes of WAL.
    Write(u64),
    /// The supervisor restarts: new process, no lease; PostgreSQL keeps running and the old
    /// lease lives on in the DCS until it expires.
    RestartSupervisor(usize),
    /// An operator asks for a switchover from the current leader to this node (or to the
    /// best candidate).
    Switchover(Option<usize>),
}

#[derive(Debug, Clone)]
struct SimSetup {
    cfg: SimConfig,
    /// (nofailover, failover_priority, initial wal) per node.
    nodes: Vec<(bool, i64, u64)>,
    initial_leader: Option<usize>,
    events: Vec<Ev>,
}

struct Sim {
    now: u64,
    cfg: SimConfig,
    nodes: Vec<SimNode>,
    dcs: SimDcs,
    next_lease: i64,
    log: Vec<String>,
}

impl Sim {
    fn new(setup: &SimSetup) -> Sim {
        let mut sim = Sim {
            now: 1_000_000,
            cfg: setup.cfg.clone(),
            nodes: Vec::new(),
            dcs: SimDcs {
                initialize: Some(SYSID.into()),
                ..SimDcs::default()
            },
            next_lease: 100,
            log: Vec::new(),
        };
        let top_wal = setup.nodes.iter().map(|n| n.2).max().unwrap_or(0);
        for (i, &(nofailover, priority, wal)) in setup.nodes.iter().enumerate() {
            let is_leader = setup.initial_leader == Some(i);
            sim.nodes.push(SimNode {
                name: format!("n{i}"),
                running: true,
                in_recovery: Some(!is_leader),
                was_primary: is_leader,
                wal: if is_leader { top_wal } else { wal },
                timeline: 1,
                upstream: setup
                    .initial_leader
                    .filter(|&l| l != i)
                    .map(|l| format!("n{l}")),
                mem: Memory::default(),
                dcs_cut: false,
                peers_cut: false,
                nofailover,
                priority,
                former_primary: false,
            });
            sim.renew(i);
            sim.publish_member(i);
        }
        if let Some(l) = setup.initial_leader {
            sim.dcs.leader = Some(Leader {
                name: sim.nodes[l].name.clone(),
                lease: sim.nodes[l].mem.our_lease.unwrap_or_default(),
                mod_revision: 1,
            });
            sim.nodes[l].mem.known_lock_lease = sim.nodes[l].mem.our_lease;
            sim.dcs.optime = Some(top_wal);
        }
        sim
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    fn peers_reachable(&self, i: usize, j: usize) -> bool {
        !self.nodes[i].peers_cut && !self.nodes[j].peers_cut
    }

    fn lease_alive(&self, id: Option<i64>) -> bool {
        id.is_some_and(|id| self.dcs.leases.contains_key(&id))
    }

    fn is_primary(n: &SimNode) -> bool {
        n.running && n.in_recovery == Some(false)
    }

    fn cluster_timeline(&self) -> u32 {
        self.dcs.history.last().map(|l| l.timeline + 1).unwrap_or(1)
    }

    fn snapshot(&self) -> Cluster {
        Cluster {
            initialize: self.dcs.initialize.clone(),
            leader: self.dcs.leader.clone(),
            members: self.dcs.members.values().cloned().collect(),
            status: crate::dcs::Status {
                optime: self.dcs.optime,
                ..Default::default()
            },
            history: self.dcs.history.clone(),
            failover: self.dcs.failover.clone().map(|f| (f, self.dcs.revision)),
            revision: self.dcs.revision,
            ..Cluster::default()
        }
    }

    fn pg_view(&self, i: usize) -> PgView {
        let n = &self.nodes[i];
        PgView {
            data_dir: DataDir::Initialized {
                sysid: SYSID.into(),
                was_primary: n.was_primary,
            },
            running: n.running,
            in_recovery: n.in_recovery,
            timeline: n.running.then_some(n.timeline),
            wal_position: n.running.then_some(n.wal),
            received_lsn: None,
            replayed_lsn: None,
            upstream: n.upstream.clone(),
            former_primary: n.former_primary && n.running && n.in_recovery == Some(true),
            streaming: if n.running && n.in_recovery == Some(false) {
                self.nodes
                    .iter()
                    .filter(|o| {
                        o.running
                            && o.in_recovery == Some(true)
                            && o.upstream.as_deref() == Some(n.name.as_str())
                    })
                    .map(|o| o.name.clone())
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    fn world(&self, i: usize, cluster: Option<Cluster>) -> World {
        let n = &self.nodes[i];
        let peers = (0..self.nodes.len())
            .filter(|&j| j != i)
            .map(|j| {
                let p = &self.nodes[j];
                let state = self
                    .peers_reachable(i, j)
                    .then(|| report(&self.pg_view(j), p.nofailover, p.priority));
                (p.name.clone(), state)
            })
            .collect();
        World {
            now_ms: self.now,
            me: n.name.clone(),
            cluster,
            pg: self.pg_view(i),
            peers,
            settings: Settings {
                ttl_ms: self.cfg.ttl,
                maximum_lag_on_failover: self.cfg.max_lag,
                check_timeline: self.cfg.check_timeline,
                use_pg_rewind: self.cfg.use_pg_rewind,
                nofailover: n.nofailover,
                failover_priority: n.priority,
                tags: BTreeMap::new(),
                race_backoff_ms: self.cfg.backoff,
                synchronous_mode: false,
                paused: false,
                loop_wait_ms: LOOP_MS,
                failed_loops_before_handover: 2,
            },
            health: Health::Healthy,
            now_unix_ms: UNIX_NOW + self.now,
            memory: n.mem.clone(),
        }
    }

    /// Keep our lease alive (or get a new one if it expired), like `EtcdDcs::refresh_lease`;
    /// the memory computes the write deadline as the supervisor's does.
    fn renew(&mut self, i: usize) {
        let expiry = self.now + self.cfg.ttl;
        let id = match self.nodes[i].mem.our_lease {
            Some(id) if self.dcs.leases.contains_key(&id) => id,
            _ => {
                self.next_lease += 1;
                self.next_lease
            }
        };
        self.dcs.leases.insert(id, expiry);
        self.nodes[i].mem.lease_renewed(id, self.now, self.cfg.ttl);
    }

    fn publish_member(&mut self, i: usize) {
        let n = &self.nodes[i];
        let member = Member {
            name: n.name.clone(),
            data: MemberData {
                role: Some(
                    if Self::is_primary(n) {
                        "primary"
                    } else {
                        "replica"
                    }
                    .into(),
                ),
                state: Some(if n.running { "running" } else { "stopped" }.into()),
                xlog_location: Some(n.wal),
                timeline: Some(n.timeline),
                tags: tags_json(n.nofailover, n.priority),
                ..MemberData::default()
            },
            lease: n.mem.our_lease.unwrap_or_default(),
            mod_revision: self.dcs.revision,
        };
        self.dcs.revision += 1;
        self.dcs.members.insert(member.name.clone(), member);
    }

    /// A streaming replica catches up with its upstream if that is a reachable running primary.
    fn replicate(&mut self, i: usize) {
        let n = &self.nodes[i];
        if !(n.running && n.in_recovery == Some(true)) {
            return;
        }
        let Some(u) = n.upstream.as_deref().and_then(|u| self.index_of(u)) else {
            return;
        };
        if u != i && Self::is_primary(&self.nodes[u]) && self.peers_reachable(i, u) {
            self.nodes[i].wal = self.nodes[u].wal;
            self.nodes[i].timeline = self.nodes[u].timeline;
        }
    }

    fn advance(&mut self, dt: u64) {
        self.now += dt;
        let now = self.now;
        let expired: Vec<i64> = self
            .dcs
            .leases
            .iter()
            .filter(|&(_, &exp)| exp <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            self.dcs.leases.remove(&id);
            if self.dcs.leader.as_ref().is_some_and(|l| l.lease == id) {
                self.dcs.leader = None;
                self.log
                    .push(format!("t={now}: leader key expired (lease {id})"));
            }
            self.dcs.members.retain(|_, m| m.lease != id);
        }
    }

    fn tick(&mut self, i: usize, read_ok: bool) -> Result<(), TestCaseError> {
        self.replicate(i);
        let connected = !self.nodes[i].dcs_cut;
        if connected {
            self.renew(i);
            self.publish_member(i);
        }
        let truth = self.snapshot();
        let seen = (connected && read_ok).then(|| truth.clone());
        match &seen {
            Some(c) => {
                let me = self.nodes[i].name.clone();
                self.nodes[i].mem.cluster_observed(&me, c, self.now);
            }
            None => self.nodes[i].mem.cluster_unreadable(),
        }
        let w = self.world(i, seen);
        let d = decide_default(&w);
        self.log.push(format!(
            "t={} {}{}: {:?} ({})",
            self.now,
            w.me,
            if w.cluster.is_none() { " [no DCS]" } else { "" },
            d.actions,
            d.summary
        ));
        check_node(&w, &truth, &d, Tolerate::KNOWN_BUGS)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{}", self.log.join("\n"))))?;
        for a in &d.actions {
            self.apply(i, a)?;
        }
        Ok(())
    }

    fn apply(&mut self, i: usize, a: &Action) -> Result<(), TestCaseError> {
        let me = self.nodes[i].name.clone();
        let connected = !self.nodes[i].dcs_cut;
        let lease = self.nodes[i].mem.our_lease;
        let key_is_mine = self.dcs.leader.as_ref().is_some_and(|l| l.name == me);
        match a {
            Action::KeepLeading => {
                // The lease itself was renewed at the start of the loop; the holder publishes
                // its optime.
                if connected
                    && self
                        .dcs
                        .leader
                        .as_ref()
                        .is_some_and(|l| Some(l.lease) == lease)
                {
                    self.dcs.optime = Some(self.nodes[i].wal);
                }
            }
            Action::AcquireLeader { .. } => {
                if connected && self.dcs.leader.is_none() && self.lease_alive(lease) {
                    self.dcs.leader = Some(Leader {
                        name: me,
                        lease: lease.unwrap_or_default(),
                        mod_revision: self.dcs.revision,
                    });
                    self.dcs.revision += 1;
                    // The winner clears a request, as the supervisor does.
                    self.dcs.failover = None;
                }
            }
            Action::ReattachLeader => {
                if connected
                    && key_is_mine
                    && self.lease_alive(lease)
                    && let Some(l) = self.dcs.leader.as_mut()
                {
                    l.lease = lease.unwrap_or_default();
                }
            }
            Action::ReleaseLeader => {
                if connected && key_is_mine {
                    self.dcs.leader = None;
                }
            }
            Action::Promote => {
                let new_tl = self.nodes[i].timeline.max(self.cluster_timeline()) + 1;
                if connected {
                    self.dcs.history.push(HistoryLine {
                        timeline: new_tl - 1,
                        lsn: self.nodes[i].wal,
                        reason: "promoted".into(),
                        timestamp: None,
                        new_leader: Some(me),
                    });
                }
                let n = &mut self.nodes[i];
                n.in_recovery = Some(false);
                n.was_primary = true;
                n.former_primary = false;
                n.timeline = new_tl;
                n.upstream = None;
            }
            Action::StartPrimary => {
                let n = &mut self.nodes[i];
                n.former_primary = false;
                n.running = true;
                n.in_recovery = Some(false);
                n.upstream = None;
            }
            Action::StartReplica { leader } => {
                let n = &mut self.nodes[i];
                if n.was_primary && leader.is_some() {
                    return Err(TestCaseError::fail(format!(
                        "{me}: a former primary follows {leader:?} without a rewind\n{}",
                        self.log.join("\n")
                    )));
                }
                n.former_primary |= n.was_primary;
                n.running = true;
                n.in_recovery = Some(true);
                n.upstream = leader.clone();
            }
            Action::Rewind { leader } | Action::Reclone { leader } => {
                let Some(l) = self.index_of(leader) else {
                    return Err(TestCaseError::fail(format!("{a:?}: unknown leader")));
                };
                let (wal, timeline) = (self.nodes[l].wal, self.nodes[l].timeline);
                let n = &mut self.nodes[i];
                n.running = true;
                n.in_recovery = Some(true);
                n.was_primary = false;
                n.former_primary = false;
                n.upstream = Some(leader.clone());
                n.wal = wal;
                n.timeline = timeline;
            }
            Action::Demote { .. } => {
                let n = &mut self.nodes[i];
                n.running = false;
                n.in_recovery = None;
                n.was_primary = true;
            }
            Action::Follow { leader } => {
                if self.nodes[i].former_primary {
                    return Err(TestCaseError::fail(format!(
                        "{me}: follows {leader} on a former primary's data without a rewind\n{}",
                        self.log.join("\n")
                    )));
                }
                self.nodes[i].upstream = Some(leader.clone())
            }
            Action::HandOver { to, .. } => {
                // Clean stop, then the leader key moves onto the target's lease (or is
                // released when that lease is gone), then follow the target.
                let Some(t) = self.index_of(to) else {
                    return Err(TestCaseError::fail(format!("{a:?}: unknown target")));
                };
                let target_lease = self.nodes[t].mem.our_lease;
                let n = &mut self.nodes[i];
                n.running = true;
                n.in_recovery = Some(true);
                n.was_primary = false;
                n.upstream = Some(to.clone());
                if connected && key_is_mine {
                    self.dcs.failover = None;
                    self.dcs.leader = match target_lease {
                        Some(l) if self.lease_alive(Some(l)) => Some(Leader {
                            name: to.clone(),
                            lease: l,
                            mod_revision: self.dcs.revision,
                        }),
                        _ => None,
                    };
                    self.dcs.revision += 1;
                }
            }
            Action::ClearFailover => {
                if connected {
                    self.dcs.failover = None;
                }
            }
            Action::WriteInitialize { sysid } => {
                if connected {
                    self.dcs.initialize = Some(sysid.clone());
                }
            }
            Action::CloneFrom { .. } | Action::Bootstrap | Action::Fatal(_) => {
                return Err(TestCaseError::fail(format!(
                    "{me}: unexpected {a:?} in an initialized cluster\n{}",
                    self.log.join("\n")
                )));
            }
        }
        Ok(())
    }

    fn step(&mut self, ev: &Ev) -> Result<(), TestCaseError> {
        if !matches!(ev, Ev::Tick(_) | Ev::TickReadFails(_)) {
            self.log.push(format!("t={}: {ev:?}", self.now));
        }
        match *ev {
            Ev::Tick(i) => self.tick(i, true)?,
            Ev::TickReadFails(i) => {
                self.log.push(format!(
                    "t={}: n{i} lease renewed, cluster read fails",
                    self.now
                ));
                self.tick(i, false)?
            }
            Ev::Advance(dt) => self.advance(dt),
            Ev::CrashPg(i) => {
                let n = &mut self.nodes[i];
                if n.running {
                    n.was_primary = n.in_recovery == Some(false);
                    n.running = false;
                    n.in_recovery = None;
                }
            }
            Ev::Isolate(i) => {
                self.nodes[i].dcs_cut = true;
                self.nodes[i].peers_cut = true;
            }
            Ev::CutDcs(i) => self.nodes[i].dcs_cut = true,
            Ev::Heal(i) => {
                self.nodes[i].dcs_cut = false;
                self.nodes[i].peers_cut = false;
            }
            Ev::Write(bytes) => {
                for n in &mut self.nodes {
                    if Self::is_primary(n) {
                        n.wal += bytes;
                    }
                }
            }
            Ev::RestartSupervisor(i) => {
                // A new process: it remembers nothing of the old one.
                self.nodes[i].mem = Memory::default();
            }
            Ev::Switchover(to) => {
                self.dcs.failover = Some(crate::dcs::Failover {
                    leader: self.dcs.leader.as_ref().map(|l| l.name.clone()),
                    member: to.map(|t| self.nodes[t].name.clone()),
                    scheduled_at: None,
                });
            }
        }
        Ok(())
    }

    /// Running primaries that may accept writes (valid write deadline).
    fn writable_primaries(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|n| {
                Self::is_primary(n) && n.mem.write_deadline_ms.is_some_and(|d| self.now < d)
            })
            .map(|n| n.name.as_str())
            .collect()
    }

    /// At most one writable primary; with `lock_backed`, it also holds the leader key on its
    /// own lease.
    fn check_safety(&self, lock_backed: bool) -> Result<(), TestCaseError> {
        let writable = self.writable_primaries();
        prop_assert!(
            writable.len() <= 1,
            "two primaries accept writes at t={}: {:?}\n{}",
            self.now,
            writable,
            self.log.join("\n")
        );
        if lock_backed {
            for name in writable {
                let n = &self.nodes[self.index_of(name).unwrap_or_default()];
                prop_assert!(
                    self.dcs
                        .leader
                        .as_ref()
                        .is_some_and(|l| l.name == n.name && Some(l.lease) == n.mem.our_lease),
                    "{} accepts writes without holding the leader key ({:?})\n{}",
                    name,
                    self.dcs.leader,
                    self.log.join("\n")
                );
            }
        }
        Ok(())
    }

    /// Eligible by Patroni's rules from the cluster's point of view (oracle).
    fn eligible(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        n.running
            && n.in_recovery == Some(true)
            && !n.nofailover
            && n.priority > 0
            && self
                .dcs
                .optime
                .is_none_or(|o| o.saturating_sub(n.wal) <= self.cfg.max_lag)
            && (!self.cfg.check_timeline || n.timeline >= self.cluster_timeline())
    }

    /// Heal the network and run quiet loops: a leaderless cluster with an eligible running
    /// replica must get a leader within [`LIVENESS_LOOPS`], and the cluster must converge to
    /// one primary holding the lock with everybody else following it.
    fn settle(&mut self, lock_backed: bool) -> Result<(), TestCaseError> {
        for n in &mut self.nodes {
            n.dcs_cut = false;
            n.peers_cut = false;
        }
        self.log.push(format!("t={}: network healed", self.now));
        let mut leaderless_with_candidate: Option<usize> = None;
        for round in 0..SETTLE_LOOPS {
            if self.dcs.leader.is_none() && (0..SIM_NODES).any(|i| self.eligible(i)) {
                let since = *leaderless_with_candidate.get_or_insert(round);
                prop_assert!(
                    round - since <= LIVENESS_LOOPS,
                    "no leader after {} loops although a replica is eligible\n{}",
                    round - since,
                    self.log.join("\n")
                );
            } else if self.dcs.leader.is_some() {
                leaderless_with_candidate = None;
            }
            for i in 0..SIM_NODES {
                self.tick(i, true)?;
                self.check_safety(lock_backed)?;
            }
            self.advance(LOOP_MS);
            self.check_safety(lock_backed)?;
        }
        match self.dcs.leader.clone() {
            Some(l) => {
                for n in &self.nodes {
                    if n.name == l.name {
                        prop_assert!(
                            Self::is_primary(n) && Some(l.lease) == n.mem.our_lease,
                            "leader {} is not a running primary on its lease\n{}",
                            n.name,
                            self.log.join("\n")
                        );
                    } else {
                        prop_assert!(
                            n.running
                                && n.in_recovery == Some(true)
                                && n.upstream.as_deref() == Some(l.name.as_str()),
                            "{} does not follow leader {}: {:?}\n{}",
                            n.name,
                            l.name,
                            n,
                            self.log.join("\n")
                        );
                    }
                }
            }
            None => prop_assert!(
                (0..SIM_NODES).all(|i| !self.eligible(i)),
                "no leader at the end although a replica is eligible\n{}",
                self.log.join("\n")
            ),
        }
        Ok(())
    }

    fn run(&mut self, events: &[Ev], lock_backed: bool) -> Result<(), TestCaseError> {
        self.check_safety(lock_backed)?;
        for ev in events {
            self.step(ev)?;
            self.check_safety(lock_backed)?;
        }
        self.settle(lock_backed)
    }
}

fn arb_event(hostile: bool) -> BoxedStrategy<Ev> {
    let node = || 0..SIM_NODES;
    let base = prop_oneof![
        12 => node().prop_map(Ev::Tick),
        2 => (100..2_000u64).prop_map(Ev::Advance),
        2 => (2_000..40_000u64).prop_map(Ev::Advance),
        1 => node().prop_map(Ev::CrashPg),
        1 => node().prop_map(Ev::Isolate),
        1 => node().prop_map(Ev::CutDcs),
        2 => node().prop_map(Ev::Heal),
        2 => (1..2_000u64).prop_map(Ev::Write),
        1 => prop::option::of(node()).prop_map(Ev::Switchover),
    ];
    if hostile {
        prop_oneof![
            10 => base,
            3 => node().prop_map(Ev::TickReadFails),
            1 => node().prop_map(Ev::RestartSupervisor),
        ]
        .boxed()
    } else {
        base.boxed()
    }
}

fn arb_sim(hostile: bool) -> impl Strategy<Value = SimSetup> {
    let cfg = (
        5_000..30_000u64,
        prop_oneof![Just(0u64), 0..3_000u64, Just(1_048_576u64)],
        any::<bool>(),
        any::<bool>(),
        0..=3 * LOOP_MS,
    )
        .prop_map(
            |(ttl, max_lag, check_timeline, use_pg_rewind, backoff)| SimConfig {
                ttl,
                max_lag,
                check_timeline,
                use_pg_rewind,
                backoff,
            },
        );
    let node = (prop::bool::weighted(0.15), -1..=3i64, arb_wal());
    (
        cfg,
        prop::collection::vec(node, SIM_NODES),
        prop::option::weighted(0.7, 0..SIM_NODES),
        prop::collection::vec(arb_event(hostile), 0..60),
    )
        .prop_map(|(cfg, nodes, initial_leader, events)| SimSetup {
            cfg,
            nodes,
            initial_leader,
            events,
        })
}

proptest! {
    #![proptest_config(proptest_config(2_000))]

    /// Crashes, partitions, stalled supervisors (time passing without a loop) and lease
    /// expiry: never two writable primaries, every writable primary holds the leader key on
    /// its own lease, and after healing the cluster elects a leader and converges.
    #[test]
    fn prop_sim_no_split_brain_and_a_leader_is_elected(setup in arb_sim(false)) {
        Sim::new(&setup).run(&setup.events, true)?;
    }
}

proptest! {
    // The split brain this guards against (fixed) needed a specific interleaving; it was
    // typically found within 100–2,000 cases.
    #![proptest_config(proptest_config(5_000))]

    /// As above, plus loops where the lease renewal succeeds but the cluster read fails, and
    /// supervisor restarts (new lease while PostgreSQL keeps running).
    #[test]
    fn prop_sim_partial_dcs_failures_and_restarts_no_split_brain(setup in arb_sim(true)) {
        Sim::new(&setup).run(&setup.events, false)?;
    }
}

/// The simulation catches what it is meant to catch: a primary that keeps writing after its
/// deadline while another one is promoted is a split brain, and the checks see it.
#[test]
fn sim_safety_check_detects_two_writable_primaries() {
    let setup = deterministic_setup();
    let mut sim = Sim::new(&setup);
    sim.nodes[1].in_recovery = Some(false);
    sim.nodes[1].mem.write_deadline_ms = Some(sim.now + 1);
    assert!(sim.check_safety(false).is_err());
    let mut sim = Sim::new(&setup);
    sim.nodes[0].in_recovery = Some(true);
    sim.nodes[1].in_recovery = Some(false);
    assert!(sim.check_safety(false).is_ok(), "a single writable primary");
    assert!(sim.check_safety(true).is_err(), "n1 writes without the key");
}

/// Without partial failures, a failover after the primary is isolated is clean: the old
/// primary stops accepting writes before its lease (and so the leader key) expires.
#[test]
fn sim_isolated_primary_is_replaced_without_overlap() {
    let setup = deterministic_setup();
    let mut sim = Sim::new(&setup);
    let events = [
        Ev::Tick(0),
        Ev::Tick(1),
        Ev::Tick(2),
        Ev::Isolate(0),
        Ev::Advance(8_000), // n0's write deadline passes (ttl 10 s − margin 2 s)
        Ev::Tick(0),        // → Demote Offline
        Ev::Tick(1),
        Ev::Advance(2_000), // n0's lease and the leader key expire
        Ev::Tick(1),        // best candidate → AcquireLeader
        Ev::Tick(1),        // → Promote
        Ev::Tick(2),        // → Follow n1
    ];
    sim.run(&events, true).expect("clean failover");
    assert_eq!(sim.dcs.leader.as_ref().map(|l| l.name.as_str()), Some("n1"));
    assert_eq!(sim.writable_primaries(), vec!["n1"]);
}

fn deterministic_setup() -> SimSetup {
    SimSetup {
        cfg: SimConfig {
            ttl: 10_000,
            max_lag: 1_048_576,
            check_timeline: false,
            use_pg_rewind: true,
            backoff: 0,
        },
        nodes: vec![(false, 1, 1_000), (false, 1, 1_000), (false, 1, 900)],
        initial_leader: Some(0),
        events: Vec::new(),
    }
}

/// A restarted supervisor gets a fresh lease (so a valid write deadline) while the leader key
/// still sits on the previous run's lease. One failed cluster read later it is cut off:
/// `decide_without_dcs` keeps it running as primary until the *new* lease's deadline, which
/// is later than the expiry of the *old* lease carrying the leader key, so another node is
/// elected and promoted while the old primary still accepts writes.
#[test]
fn regression_sim_supervisor_restart_then_partition_no_split_brain() {
    let setup = deterministic_setup();
    let mut sim = Sim::new(&setup);
    let events = [
        Ev::Tick(0), // n0 holds the key on lease L0 (expires t+10 s)
        Ev::Tick(1),
        Ev::Tick(2),
        Ev::Advance(3_000),
        Ev::RestartSupervisor(0),
        Ev::TickReadFails(0), // new lease L1, deadline t+11 s; read fails → "still the leader"
        Ev::Isolate(0),
        Ev::Advance(7_500), // L0 and the leader key expire at t+10 s
        Ev::Tick(0),        // no DCS, deadline valid → keeps running as primary
        Ev::Tick(1),        // n0 unreachable: n1 races
        Ev::Tick(1),        // n1 promotes: n0 and n1 both accept writes until t+11 s
    ];
    let result = sim.run(&events, false);
    assert!(result.is_ok(), "{}", result.unwrap_err());
}
