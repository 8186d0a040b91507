//! Failsafe mode's rules (`ha/failsafe.rs`): unit tests of each branch and properties of the
//! write deadline a sequence of rounds earns, and two scripted runs of the simulation
//! (`simulation.rs`, which also runs random etcd outages with `failsafe_mode` on in half of
//! its cases): an outage longer than the ttl, and one with a member unreachable.

use super::fixtures::*;
use super::generators::proptest_config;
use super::simulation::{Ev, Sim, SimSetup, deterministic_setup};
use crate::ha::{AcquireReason, Action, Memory, write_deadline_ms};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::collections::BTreeMap;

const TTL: u64 = 30_000;

fn topology(names: &[&str]) -> Option<BTreeMap<String, String>> {
    Some(
        names
            .iter()
            .map(|n| (n.to_string(), format!("http://{n}:8008/patroni")))
            .collect(),
    )
}

/// A primary whose renewal just failed, with failsafe mode on.
fn cut_off_leader() -> crate::ha::World {
    let mut w = world("a", None, pg_primary(100));
    w.settings.failsafe_mode = true;
    w.memory.known_lock_lease = Some(MY_LEASE);
    w.memory.lease_renewal_failed();
    w
}

#[test]
fn an_accepted_round_keeps_the_leader_and_extends_the_deadline_from_its_send_time() {
    let mut w = cut_off_leader();
    let before = w.memory.write_deadline_ms;
    w.memory.failsafe_round_done(NOW - 500, TTL, true);
    assert_eq!(
        w.memory.write_deadline_ms,
        Some(write_deadline_ms(NOW - 500, TTL)),
        "from {before:?}"
    );
    assert_eq!(actions(&w), vec![Action::KeepLeading]);
    assert!(w.failsafe_covers());
}

#[test]
fn a_refused_round_demotes_at_once_and_extends_nothing() {
    let mut w = cut_off_leader();
    let before = w.memory.write_deadline_ms;
    w.memory.failsafe_round_done(NOW - 500, TTL, false);
    assert_eq!(w.memory.write_deadline_ms, before);
    assert_eq!(actions(&w), vec![offline()]);
    // An earlier accepted round does not outlive a refused one.
    let mut w = cut_off_leader();
    w.memory.failsafe_round_done(NOW - 3_000, TTL, true);
    w.memory.failsafe_round_done(NOW - 500, TTL, false);
    assert_eq!(actions(&w), vec![offline()]);
    assert!(!w.failsafe_covers());
}

#[test]
fn without_failsafe_mode_an_accepted_round_changes_nothing_in_the_decision() {
    let mut w = cut_off_leader();
    w.settings.failsafe_mode = false;
    w.memory.failsafe_round_done(NOW - 500, TTL, true);
    assert_eq!(actions(&w), vec![offline()]);
}

#[test]
fn a_round_sent_after_the_deadline_passed_extends_nothing() {
    let mut m = Memory {
        our_lease: Some(MY_LEASE),
        write_deadline_ms: Some(NOW),
        ..Memory::default()
    };
    m.failsafe_round_done(NOW, TTL, true);
    assert_eq!(m.write_deadline_ms, Some(NOW));
    assert!(m.failsafe_round.is_some_and(|r| !r.accepted));
    // Nor without any deadline (never renewed).
    let mut m = Memory::default();
    m.failsafe_round_done(NOW, TTL, true);
    assert_eq!(m.write_deadline_ms, None);
}

#[test]
fn the_leader_takes_the_expired_key_again_while_its_failsafe_deadline_lies_ahead() {
    let mut w = world("a", Some(cluster(None)), pg_primary(100));
    w.settings.failsafe_mode = true;
    w.memory.failsafe_round_done(NOW - 1_000, TTL, true);
    // etcd is back: a new lease was granted (the old one expired with the key on it).
    w.memory.lease_renewed(MY_LEASE + 1, NOW, TTL);
    assert_eq!(
        actions(&w),
        vec![Action::AcquireLeader {
            reason: AcquireReason::FailsafeRetake
        }]
    );
    // Once the round's deadline passed, it demotes as without failsafe.
    w.now_ms = write_deadline_ms(NOW - 1_000, TTL) + 1;
    assert_eq!(actions(&w), vec![immediate()]);
    // Another node holding the key: demote.
    let mut w2 = world(
        "a",
        Some(cluster(Some(leader("b", OTHER_LEASE)))),
        pg_primary(100),
    );
    w2.settings.failsafe_mode = true;
    w2.memory.failsafe_round_done(NOW - 1_000, TTL, true);
    assert_eq!(actions(&w2), vec![immediate()]);
}

#[test]
fn the_key_read_on_our_lease_again_ends_the_failsafe_round() {
    let mut m = Memory {
        our_lease: Some(MY_LEASE),
        write_deadline_ms: Some(NOW + 10_000),
        ..Memory::default()
    };
    m.failsafe_round_done(NOW, TTL, true);
    let c = cluster(Some(leader("a", MY_LEASE)));
    m.cluster_observed("a", &c, NOW + 1);
    assert_eq!(m.failsafe_round, None);
}

fn leaderless_replica() -> crate::ha::World {
    let mut w = election_world(1_000, vec![("a", None), ("c", peer_replica(900))]);
    w.settings.failsafe_mode = true;
    if let Some(c) = w.cluster.as_mut() {
        c.failsafe = topology(&["a", "b", "c"]);
    }
    w
}

#[test]
fn a_replica_races_normally_in_failsafe_mode_when_nothing_holds_it() {
    let w = leaderless_replica();
    assert_eq!(actions(&w), vec![acquire()]);
}

#[test]
fn a_replica_that_accepted_a_ping_does_not_race_for_ttl() {
    let mut w = leaderless_replica();
    w.memory
        .failsafe_ping_accepted("a".into(), NOW - TTL + 1, TTL);
    let d = decide_default(&w);
    assert_eq!(d.actions, vec![], "{}", d.summary);
    assert!(d.summary.contains("failsafe"), "{}", d.summary);
    w.memory.failsafe_ping = None;
    w.memory.failsafe_ping_accepted("a".into(), NOW - TTL, TTL);
    assert_eq!(actions(&w), vec![acquire()]);
    // A ttl lowered after the ping does not shorten the hold.
    w.memory.failsafe_ping = None;
    w.memory
        .failsafe_ping_accepted("a".into(), NOW - 10_000, TTL);
    w.settings.ttl_ms = 5_000;
    assert_eq!(actions(&w), vec![]);
}

#[test]
fn a_member_missing_from_the_failsafe_key_never_races() {
    let mut w = leaderless_replica();
    if let Some(c) = w.cluster.as_mut() {
        c.failsafe = topology(&["a", "c"]);
    }
    assert_eq!(actions(&w), vec![]);
    // An empty key holds nobody back (Patroni discards it).
    if let Some(c) = w.cluster.as_mut() {
        c.failsafe = Some(BTreeMap::new());
    }
    assert_eq!(actions(&w), vec![acquire()]);
}

#[test]
fn a_member_that_just_started_does_not_race_for_ttl() {
    let mut w = leaderless_replica();
    w.memory.supervisor_started(NOW - 1_000);
    assert_eq!(actions(&w), vec![]);
    w.memory.supervisor_started(NOW - TTL);
    assert_eq!(actions(&w), vec![acquire()]);
    // Failsafe mode off: no hold.
    w.memory.supervisor_started(NOW - 1_000);
    w.settings.failsafe_mode = false;
    assert_eq!(actions(&w), vec![acquire()]);
}

proptest! {
    #![proptest_config(proptest_config(2_000))]

    /// Whatever the sequence of rounds and renewals, the write deadline only ever comes from
    /// a renewal or a round every member accepted that was sent before the deadline then in
    /// force, and equals `write_deadline_ms(sent, ttl)` of one of them: a refused round never
    /// moves it, and it never moves back on the same lease.
    #[test]
    fn prop_only_accepted_rounds_in_time_extend_the_deadline(
        steps in prop::collection::vec((0u64..20_000, any::<bool>(), any::<bool>()), 1..40),
        ttl in 5_000u64..60_000,
    ) {
        let mut m = Memory::default();
        m.lease_renewed(1, 0, ttl);
        let mut now = 0;
        let mut earned = vec![write_deadline_ms(0, ttl)];
        for (dt, renew, accepted) in steps {
            now += dt;
            let before = m.write_deadline_ms;
            if renew {
                m.lease_renewed(1, now, ttl);
                earned.push(write_deadline_ms(now, ttl));
            } else {
                m.failsafe_round_done(now, ttl, accepted);
                let in_time = before.is_some_and(|d| now < d);
                if accepted && in_time {
                    earned.push(write_deadline_ms(now, ttl));
                } else {
                    prop_assert_eq!(m.write_deadline_ms, before, "a refused or late round moved it");
                }
            }
            prop_assert!(m.write_deadline_ms >= before, "moved back");
            let d = m.write_deadline_ms.unwrap_or(0);
            prop_assert!(earned.contains(&d), "deadline {} not earned ({:?})", d, earned);
        }
    }
}

// ── the simulation, with failsafe mode on ──────────────────────────────────────────────

fn failsafe_setup() -> SimSetup {
    let mut s = deterministic_setup();
    s.cfg.failsafe = true;
    s
}

/// An etcd outage longer than the ttl with failsafe mode on: the leader keeps taking writes
/// past the expiry of its lease (every member accepts each round), nobody else races, and when
/// etcd returns the leader takes the expired key again without a restart.
#[test]
fn sim_failsafe_leader_writes_through_an_etcd_outage_and_takes_its_key_again() {
    let mut sim = Sim::new(&failsafe_setup());
    // Two loops each: the leader writes the failsafe key, then reads it back.
    let mut events = vec![Ev::Tick(0), Ev::Tick(1), Ev::Tick(2), Ev::Tick(0)];
    events.push(Ev::DcsOutage);
    // 25 s without etcd (ttl 10 s): a loop per node every second.
    for _ in 0..25 {
        events.extend([Ev::Tick(0), Ev::Tick(1), Ev::Tick(2), Ev::Advance(1_000)]);
    }
    sim.run_events(&events).expect("safe");
    assert!(
        sim.dcs.leader.is_none(),
        "the key expired during the outage"
    );
    assert_eq!(
        sim.writable_primaries(),
        vec!["n0"],
        "{}",
        sim.log.join("\n")
    );
    sim.run(&[], false).expect("settles");
    assert_eq!(sim.dcs.leader.as_ref().map(|l| l.name.as_str()), Some("n0"));
    assert!(
        sim.log.iter().any(|l| l.contains("taking it again")),
        "{}",
        sim.log.join("\n")
    );
    assert!(
        !sim.log.iter().any(|l| l.contains("Demote")),
        "{}",
        sim.log.join("\n")
    );
}

/// The same outage with one replica unreachable: the first round is refused, the leader
/// demotes at once, before the deadline its last renewal earned.
#[test]
fn sim_failsafe_leader_demotes_when_a_member_does_not_answer() {
    let mut sim = Sim::new(&failsafe_setup());
    let deadline = sim.nodes[0].mem.write_deadline_ms;
    let events = [
        Ev::Tick(0),
        Ev::Tick(1),
        Ev::Tick(2),
        Ev::Tick(0),
        Ev::Isolate(2),
        Ev::DcsOutage,
        Ev::Advance(1_000),
        Ev::Tick(0),
    ];
    sim.run_events(&events).expect("safe");
    assert_eq!(
        sim.writable_primaries(),
        Vec::<&str>::new(),
        "{}",
        sim.log.join("\n")
    );
    assert!(sim.now < deadline.unwrap_or(0));
}

impl Sim {
    /// The events only, with the safety check after each (no settling).
    fn run_events(&mut self, events: &[Ev]) -> Result<(), TestCaseError> {
        self.check_safety(false)?;
        for ev in events {
            self.step(ev)?;
            self.check_safety(false)?;
        }
        Ok(())
    }
}
