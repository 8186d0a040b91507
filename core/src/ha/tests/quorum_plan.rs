//! Unit tests of quorum commit's rules ([`crate::ha::quorum`]): the order of the leader's
//! steps as standbys come and go and `synchronous_node_count` changes, the take-over by a new
//! leader, and the proof a candidate needs.

use crate::dcs::SyncState;
use crate::ha::quorum::{
    Barrier, QuorumInputs, QuorumPlan, QuorumStep, at_start, parse_setting, plan, proves,
};
use crate::ha::sync::{Standby, Standbys, SyncInputs, SyncMode};
use std::collections::BTreeMap;

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn row(name: &str, flush: u64) -> Standby {
    Standby {
        name: name.into(),
        streaming: true,
        sync: false,
        flush_lsn: flush,
    }
}

fn key(leader: &str, quorum: u32, voters: &[&str]) -> SyncState {
    SyncState {
        leader: Some(leader.into()),
        quorum: Some(quorum),
        sync_standby: (!voters.is_empty()).then(|| voters.join(",")),
    }
}

fn any(count: usize, v: &[&str]) -> Standbys {
    Standbys::Any {
        count,
        names: names(v),
    }
}

/// The leader `a` with standbys `rows`, every one eligible, wanting `count`.
struct Case {
    rows: Vec<Standby>,
    count: usize,
    strict: bool,
    key: Option<SyncState>,
    setting: Standbys,
    barrier: Option<Barrier>,
    primary_flush: u64,
    no_failover: Vec<String>,
    max_lag: Option<u64>,
}

impl Case {
    fn new(rows: Vec<Standby>, count: usize, key: SyncState, setting: Standbys) -> Case {
        Case {
            rows,
            count,
            strict: false,
            key: Some(key),
            setting,
            barrier: None,
            primary_flush: 100,
            no_failover: Vec::new(),
            max_lag: None,
        }
    }

    fn plan(&self) -> QuorumPlan {
        let eligible = names(&["b", "c", "d", "e"]);
        plan(&QuorumInputs {
            sync: SyncInputs {
                me: "a",
                mode: SyncMode::Quorum,
                node_count: self.count,
                strict: self.strict,
                standbys: &self.rows,
                eligible: &eligible,
                no_failover: &self.no_failover,
                max_lag: self.max_lag,
                key: self.key.as_ref(),
                primary_flush: Some(self.primary_flush),
                catching_up: &BTreeMap::new(),
            },
            setting: &self.setting,
            barrier: self.barrier.as_ref(),
        })
    }

    /// Carry the plan out, as the supervisor does, and return its steps.
    fn run(&mut self) -> Vec<QuorumStep> {
        let p = self.plan();
        for s in &p.steps {
            match s {
                QuorumStep::WriteKey(k) => self.key = Some(k.clone()),
                QuorumStep::Set(s) => self.setting = s.clone(),
            }
        }
        self.barrier = p.barrier;
        p.steps
    }
}

#[test]
fn a_new_standby_joins_the_voters_with_a_raised_quorum_before_the_setting_counts_it() {
    let mut c = Case::new(
        vec![row("b", 100), row("c", 10)],
        1,
        key("a", 0, &["b"]),
        any(1, &["b"]),
    );
    assert_eq!(
        c.run(),
        vec![
            QuorumStep::WriteKey(key("a", 1, &["b", "c"])),
            QuorumStep::Set(any(1, &["b", "c"])),
        ]
    );
    // Steady from there on, whoever has caught up.
    assert_eq!(c.run(), vec![]);
    assert_eq!(c.run(), vec![]);
    assert_eq!(c.setting.setting(), r#"ANY 1 ("b","c")"#);
}

#[test]
fn the_first_standby_is_waited_for_before_the_key_names_it_and_named_once_it_caught_up() {
    let mut c = Case::new(vec![row("b", 40)], 1, key("a", 0, &[]), Standbys::Nobody);
    assert_eq!(c.run(), vec![QuorumStep::Set(any(1, &["b"]))]);
    assert_eq!(
        c.barrier, None,
        "the barrier is read once the setting is in force"
    );
    // The next loop reads the barrier: commits before it may be on the primary alone.
    assert_eq!(c.run(), vec![]);
    assert_eq!(c.barrier.as_ref().map(|b| b.lsn), Some(100));
    c.rows = vec![row("b", 99)];
    assert_eq!(c.run(), vec![], "b has not flushed the barrier yet");
    c.rows = vec![row("b", 100)];
    assert_eq!(c.run(), vec![QuorumStep::WriteKey(key("a", 0, &["b"]))]);
}

#[test]
fn a_higher_node_count_changes_the_setting_first_and_lowers_the_quorum_once_caught_up() {
    let rows = vec![row("b", 100), row("c", 100)];
    let mut c = Case::new(rows, 2, key("a", 1, &["b", "c"]), any(1, &["b", "c"]));
    assert_eq!(c.run(), vec![QuorumStep::Set(any(2, &["b", "c"]))]);
    assert_eq!(c.run(), vec![]);
    c.primary_flush = 150;
    c.rows = vec![row("b", 100), row("c", 150)];
    // The barrier is 100: both have flushed it.
    assert_eq!(
        c.run(),
        vec![QuorumStep::WriteKey(key("a", 0, &["b", "c"]))]
    );
}

#[test]
fn a_lower_node_count_raises_the_quorum_before_the_setting_changes() {
    let rows = vec![row("b", 100), row("c", 100)];
    let mut c = Case::new(rows, 1, key("a", 0, &["b", "c"]), any(2, &["b", "c"]));
    assert_eq!(
        c.run(),
        vec![
            QuorumStep::WriteKey(key("a", 1, &["b", "c"])),
            QuorumStep::Set(any(1, &["b", "c"])),
        ]
    );
}

#[test]
fn a_lost_standby_leaves_only_once_the_others_hold_what_it_alone_may_have_acknowledged() {
    // Under ANY 1 (b,c), c alone may have acknowledged the last commits: b and c's removal
    // may not lower the quorum until b has flushed everything acknowledged before.
    let mut c = Case::new(
        vec![row("b", 60)],
        1,
        key("a", 1, &["b", "c"]),
        any(1, &["b", "c"]),
    );
    assert_eq!(
        c.run(),
        vec![
            QuorumStep::WriteKey(key("a", 0, &[])),
            QuorumStep::Set(any(1, &["b"])),
        ],
        "only the leader may be promoted meanwhile"
    );
    assert_eq!(c.run(), vec![]);
    c.rows = vec![row("b", 100)];
    assert_eq!(c.run(), vec![QuorumStep::WriteKey(key("a", 0, &["b"]))]);
}

#[test]
fn a_new_leader_takes_the_key_over_with_the_former_leader_as_a_voter() {
    // b was promoted; the key still names a as leader.
    let old = key("a", 1, &["b", "c"]);
    assert_eq!(at_start("b", false, Some(&old)), any(1, &["a", "c"]));
    assert_eq!(at_start("b", true, None), Standbys::AnyOne);
    assert_eq!(at_start("b", false, None), Standbys::Nobody);
    // A promoted replica outside the voters: one more standby must acknowledge.
    assert_eq!(at_start("d", false, Some(&old)), any(2, &["a", "b", "c"]));
    let eligible = names(&["a", "c"]);
    let rows = [row("c", 100)];
    let p = plan(&QuorumInputs {
        sync: SyncInputs {
            me: "b",
            mode: SyncMode::Quorum,
            node_count: 1,
            strict: false,
            standbys: &rows,
            eligible: &eligible,
            no_failover: &[],
            max_lag: None,
            key: Some(&old),
            primary_flush: Some(100),
            catching_up: &BTreeMap::new(),
        },
        setting: &any(1, &["a", "c"]),
        barrier: None,
    });
    assert_eq!(
        p.steps.first(),
        Some(&QuorumStep::WriteKey(key("b", 1, &["a", "c"])))
    );
}

#[test]
fn strict_mode_without_standbys_keeps_waiting_for_the_voters() {
    let mut c = Case::new(vec![], 1, key("a", 1, &["b", "c"]), any(1, &["b", "c"]));
    c.strict = true;
    assert_eq!(c.run(), vec![]);
    let mut c = Case::new(vec![], 1, key("a", 0, &[]), Standbys::Nobody);
    c.strict = true;
    assert_eq!(c.run(), vec![QuorumStep::Set(Standbys::AnyOne)]);
    // Not strict: nobody to wait for, and nobody in the key.
    let mut c = Case::new(vec![], 1, key("a", 1, &["b", "c"]), any(1, &["b", "c"]));
    assert_eq!(
        c.run(),
        vec![
            QuorumStep::WriteKey(key("a", 0, &[])),
            QuorumStep::Set(Standbys::Nobody)
        ]
    );
}

#[test]
fn nofailover_standbys_are_listed_only_to_reach_the_node_count() {
    let rows = vec![row("b", 100), row("c", 100), row("d", 90)];
    let mut c = Case::new(rows, 2, key("a", 0, &[]), Standbys::Nobody);
    c.no_failover = names(&["c", "d"]);
    assert_eq!(c.run(), vec![QuorumStep::Set(any(2, &["b", "c"]))]);
    c.count = 1;
    c.setting = Standbys::Nobody;
    assert_eq!(c.run(), vec![QuorumStep::Set(any(1, &["b"]))]);
}

#[test]
fn a_standby_past_maximum_lag_on_syncnode_is_not_listed() {
    let rows = vec![row("b", 100), row("c", 10)];
    let mut c = Case::new(rows, 1, key("a", 0, &[]), Standbys::Nobody);
    c.max_lag = Some(50);
    assert_eq!(c.run(), vec![QuorumStep::Set(any(1, &["b"]))]);
}

#[test]
fn a_barrier_read_under_another_setting_is_void() {
    let mut c = Case::new(vec![row("b", 100)], 1, key("a", 0, &[]), any(1, &["b"]));
    c.barrier = Some(Barrier {
        lsn: 50,
        setting: Standbys::Nobody,
    });
    let p = c.plan();
    assert_eq!(p.steps, vec![], "b is not known to hold what came before");
    assert_eq!(p.barrier.map(|b| b.lsn), Some(100));
}

#[test]
fn a_candidate_needs_quorum_plus_one_votes_of_the_voting_set_itself_included() {
    let k = key("a", 1, &["b", "c", "d"]);
    let at = |m: &[(&str, u64)]| {
        let m: BTreeMap<String, u64> = m.iter().map(|(n, l)| (n.to_string(), *l)).collect();
        move |n: &str| m.get(n).copied()
    };
    // b counts itself and c (behind it): two votes.
    assert!(proves("b", Some(50), &k, &at(&[("c", 40), ("d", 60)])).is_ok());
    // c is behind d and b: its own vote alone.
    let e = proves("c", Some(40), &k, &at(&[("b", 50), ("d", 60)])).unwrap_err();
    assert!(
        e.contains("1 of the 2 votes") && e.contains("ahead of it: b, d"),
        "{e}"
    );
    // The former leader votes like any member of the set.
    assert!(proves("b", Some(50), &k, &at(&[("a", 45)])).is_ok());
    // A replica outside the set needs two members of it behind it.
    assert!(proves("e", Some(50), &k, &at(&[("b", 50), ("c", 40)])).is_ok());
    let e = proves("e", Some(50), &k, &at(&[("b", 50)])).unwrap_err();
    assert!(e.contains("no position from: a, c, d"), "{e}");
    // Without its own position, nobody else's counts.
    assert!(proves("b", None, &k, &at(&[("c", 1)])).is_err());
    // The key naming nobody: only the leader, or who has reached it.
    let k = key("a", 0, &[]);
    assert!(proves("a", None, &k, &at(&[])).is_ok());
    assert!(proves("b", Some(50), &k, &at(&[("a", 50)])).is_ok());
    assert!(proves("b", Some(50), &k, &at(&[("a", 51)])).is_err());
}

#[test]
fn the_setting_is_read_back_as_the_server_reports_it() {
    for s in [
        Standbys::Nobody,
        Standbys::AnyOne,
        Standbys::All(names(&["pg-2", "b"])),
        any(2, &["a", "b \"quoted\"", "c,d"]),
    ] {
        assert_eq!(parse_setting(&s.setting()), s, "{}", s.setting());
    }
    assert_eq!(parse_setting("any 1 (b, a)"), any(1, &["a", "b"]));
    assert_eq!(parse_setting("FIRST 1 (a, b)"), any(1, &["a", "b"]));
    assert_eq!(parse_setting("a, b"), any(1, &["a", "b"]));
    assert_eq!(parse_setting("a"), Standbys::All(names(&["a"])));
    assert_eq!(parse_setting("2 (a, b)"), Standbys::All(names(&["a", "b"])));
    assert_eq!(parse_setting("ANY 1 (a, *)"), Standbys::AnyOne);
    assert_eq!(parse_setting("ANY x (a)"), Standbys::AnyOne);
    assert_eq!(parse_setting("ANY 1 (\"a)"), Standbys::AnyOne);
    assert_eq!(parse_setting("  "), Standbys::Nobody);
}
