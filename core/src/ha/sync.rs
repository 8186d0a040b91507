//! Synchronous replication on the leader, decided without I/O: which standbys PostgreSQL waits
//! for (`synchronous_standby_names`) and which the `sync` key names as safe to promote.
//!
//! The one rule everything here serves: **the key never names a standby PostgreSQL is not
//! waiting for**, because the election promotes only members the key names, believing each has
//! every acknowledged commit. So the key shrinks before the setting drops a standby, and grows
//! only after PostgreSQL reports the newly listed standby as `sync` *and* that standby has
//! flushed what the primary had flushed once it was `sync`: commits acknowledged before the
//! setting named it (by the standby it replaced) may not have reached it yet. The supervisor
//! (`regent::supervisor`) reads `pg_stat_replication` and the key, calls [`plan`] and carries
//! out the [`SyncPlan`].

use crate::dcs::SyncState;
use std::collections::BTreeMap;

/// `synchronous_mode`: Patroni accepts booleans and the strings `on`/`off`/`quorum`; it is
/// written as Patroni writes it: `false`, `true` or `"quorum"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Asynchronous replication: commits wait for no standby.
    #[default]
    Off,
    /// Commits wait for the synchronous standbys, and only they may be promoted.
    On,
    /// Patroni's quorum commit: commits wait for any `synchronous_node_count` of the listed
    /// standbys, and a replica is promoted only once it proves it holds every acknowledged
    /// commit ([`super::quorum`] plans it; [`plan`] handles only [`SyncMode::On`]).
    Quorum,
}

impl serde::Serialize for SyncMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SyncMode::Off => s.serialize_bool(false),
            SyncMode::On => s.serialize_bool(true),
            SyncMode::Quorum => s.serialize_str("quorum"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for SyncMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SyncMode;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("one of on, off, quorum, true, false")
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<SyncMode, E> {
                Ok(if b { SyncMode::On } else { SyncMode::Off })
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<SyncMode, E> {
                match s.trim().to_ascii_lowercase().as_str() {
                    // YAML 1.1 (Patroni's PyYAML) reads yes/no/on/off as booleans.
                    "on" | "true" | "yes" => Ok(SyncMode::On),
                    "off" | "false" | "no" => Ok(SyncMode::Off),
                    "quorum" => Ok(SyncMode::Quorum),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// One row of the leader's `pg_stat_replication`, as far as synchronous mode cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standby {
    /// `application_name`: the member name.
    pub name: String,
    /// `state = 'streaming'`.
    pub streaming: bool,
    /// `sync_state = 'sync'`: PostgreSQL waits for this standby's flush before a commit returns.
    pub sync: bool,
    /// `flush_lsn`: how far the standby has flushed WAL to disk.
    pub flush_lsn: u64,
}

/// What the leader knows this loop.
#[derive(Debug, Clone)]
pub struct SyncInputs<'a> {
    /// The leader's own member name.
    pub me: &'a str,
    /// `synchronous_mode`.
    pub mode: SyncMode,
    /// `synchronous_node_count` (at least 1).
    pub node_count: usize,
    /// `synchronous_mode_strict`: with no standby to wait for, block commits instead of
    /// accepting them unreplicated.
    pub strict: bool,
    /// The leader's `pg_stat_replication`.
    pub standbys: &'a [Standby],
    /// Member names that may be synchronous standbys (known in the DCS, without `nosync`).
    pub eligible: &'a [String],
    /// Members tagged `nofailover`: synchronous only when no other standby is at hand.
    pub no_failover: &'a [String],
    /// `maximum_lag_on_syncnode`: a standby whose flush LSN is further than this behind the
    /// primary's is not synchronous (commits would wait for it); `None`: no limit.
    pub max_lag: Option<u64>,
    /// The `sync` key, if there is one.
    pub key: Option<&'a SyncState>,
    /// The primary's flush LSN, read after `standbys` (`None`: not known this loop, so nobody
    /// new is published).
    pub primary_flush: Option<u64>,
    /// Standbys seen as `sync` but not yet published, each with the flush LSN it must reach
    /// first (what the last [`SyncPlan::Apply`] returned).
    pub catching_up: &'a BTreeMap<String, u64>,
}

/// `synchronous_standby_names`, as Regent sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standbys {
    /// Empty: commits wait for nobody.
    Nobody,
    /// `*` (strict mode with no candidate): commits wait until some standby connects.
    AnyOne,
    /// `N ("a","b")` with N the number of names: commits wait for every one of them.
    All(Vec<String>),
    /// `ANY n ("a","b")` (quorum commit): commits wait for any `count` of the names.
    Any {
        /// How many of the names must have flushed a commit before it returns.
        count: usize,
        /// The standbys PostgreSQL counts, sorted.
        names: Vec<String>,
    },
}

impl Standbys {
    /// The value for `synchronous_standby_names`.
    pub fn setting(&self) -> String {
        match self {
            Standbys::Nobody => String::new(),
            Standbys::AnyOne => "*".into(),
            Standbys::All(names) => format!("{} ({})", names.len(), quoted(names)),
            Standbys::Any { count, names } => format!("ANY {count} ({})", quoted(names)),
        }
    }

    /// The standbys named (none for [`Standbys::Nobody`] and [`Standbys::AnyOne`]).
    pub fn names(&self) -> &[String] {
        match self {
            Standbys::All(n) | Standbys::Any { names: n, .. } => n,
            _ => &[],
        }
    }
}

/// Names as `synchronous_standby_names` lists them: double-quoted, `"` doubled.
fn quoted(names: &[String]) -> String {
    let quoted: Vec<String> = names
        .iter()
        .map(|n| format!("\"{}\"", n.replace('"', "\"\"")))
        .collect();
    quoted.join(",")
}

/// What the leader does this loop.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncPlan {
    /// Synchronous mode is off: wait for nobody, and delete the key if there is one.
    Off {
        /// There is a `sync` key to delete.
        delete_key: bool,
    },
    /// Write this key (compare-and-swap on its revision) and change nothing else this loop:
    /// the key takes over from another leader or drops standbys before the setting does.
    WriteKey(SyncState),
    /// Set `synchronous_standby_names`; then, if `publish` is set, write it as the key: the
    /// standbys PostgreSQL reports as `sync` that have caught up join the ones already named.
    /// `catching_up` is handed to the next loop's [`SyncInputs`].
    Apply {
        /// What PostgreSQL is to wait for.
        standbys: Standbys,
        /// The key to write once the setting is in place, when it changes.
        publish: Option<SyncState>,
        /// Standbys seen as `sync` but not published yet, each with the flush LSN it must
        /// reach first.
        catching_up: BTreeMap<String, u64>,
    },
}

/// Decide this loop's synchronous-replication step.
///
/// The standbys kept, up to `node_count`: streaming candidates, those that may be promoted
/// before `nofailover` ones; within each, those the key already names (in its order), then the
/// most advanced others (name breaks ties). A named standby is not replaced by a more advanced
/// one while it streams, so a steady cluster does not churn its setting.
pub fn plan(i: &SyncInputs) -> SyncPlan {
    if i.mode == SyncMode::Off {
        return SyncPlan::Off {
            delete_key: i.key.is_some(),
        };
    }
    let count = i.node_count.max(1);
    // A key written in quorum mode (a quorum above 0) does not promise that each standby it
    // names holds every commit: it is replaced by one naming nobody before anything else.
    let quorum_key = i.key.is_some_and(|k| k.quorum.unwrap_or(0) > 0);
    let mine = i.key.is_some_and(|k| k.leader.as_deref() == Some(i.me)) && !quorum_key;
    let listed: Vec<String> = match i.key {
        Some(k) if mine => k.members(),
        _ => Vec::new(),
    };
    // Preferred: members that may be promoted (a `nofailover` standby protects commits but
    // cannot take over); among those, the ones already named, in the key's order (no churn);
    // then the most advanced, name breaking ties.
    let mut cands: Vec<&Standby> = i
        .standbys
        .iter()
        .filter(|s| s.streaming && s.name != i.me && i.eligible.contains(&s.name))
        .filter(|s| match (i.max_lag, i.primary_flush) {
            (Some(max), Some(p)) => s.flush_lsn.saturating_add(max) >= p,
            _ => true,
        })
        .collect();
    cands.sort_by_key(|c| {
        (
            i.no_failover.contains(&c.name),
            listed
                .iter()
                .position(|n| *n == c.name)
                .unwrap_or(usize::MAX),
            std::cmp::Reverse(c.flush_lsn),
            c.name.clone(),
        )
    });
    let mut desired: Vec<String> = Vec::new();
    for c in &cands {
        if desired.len() >= count {
            break;
        }
        if !desired.contains(&c.name) {
            desired.push(c.name.clone());
        }
    }
    let keep: Vec<String> = listed
        .iter()
        .filter(|n| desired.contains(n))
        .cloned()
        .collect();
    if !mine || keep.len() != listed.len() {
        return SyncPlan::WriteKey(key_of(i.me, &keep));
    }
    let standbys = waiting_for(desired, i.strict);
    let mut published = listed.clone();
    let mut catching_up = BTreeMap::new();
    for n in standbys.names() {
        if published.contains(n) {
            continue;
        }
        let Some(row) = i.standbys.iter().find(|s| &s.name == n && s.sync) else {
            continue;
        };
        // Seen as `sync` now: commits from here on wait for it. Those acknowledged before are
        // at or below the primary's flush LSN read after this observation.
        let Some(target) = i.catching_up.get(n).copied().or(i.primary_flush) else {
            continue;
        };
        if row.flush_lsn >= target {
            published.push(n.clone());
        } else {
            catching_up.insert(n.clone(), target);
        }
    }
    let publish = (published != listed).then(|| key_of(i.me, &published));
    SyncPlan::Apply {
        standbys,
        publish,
        catching_up,
    }
}

/// Whether a replica outside the `sync` key provably holds every commit the leader
/// acknowledged, so that promoting it loses nothing: every synchronous standby the key names
/// has reported how much WAL it received (`standbys`: name and position, `None` when it did
/// not answer), and the candidate has received at least as much as each of them. A commit was
/// acknowledged only once every listed standby had flushed it. `Err` says why not, naming the
/// standby and the gap in bytes.
pub fn holds_every_acknowledged_commit(
    candidate: &str,
    candidate_lsn: Option<u64>,
    standbys: &[(String, Option<u64>)],
) -> Result<(), String> {
    if standbys.iter().any(|(name, _)| name == candidate) {
        return Ok(());
    }
    let Some(have) = candidate_lsn else {
        return Err(format!(
            "{candidate} reports no WAL position, so nothing proves it holds every acknowledged commit"
        ));
    };
    for (name, lsn) in standbys {
        match lsn {
            None => {
                return Err(format!(
                    "synchronous standby {name} did not report its WAL position, so nothing proves {candidate} holds every acknowledged commit"
                ));
            }
            Some(need) if *need > have => {
                return Err(format!(
                    "{candidate} is {} bytes behind synchronous standby {name} ({have} < {need}) and may lack acknowledged commits",
                    need - have
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// What a primary waits for from its first moment (a start as primary, or a promotion), before
/// its first [`plan`]: the standbys its own key names (they were waited for before a restart),
/// else, in strict mode, any standby; else nobody.
pub fn at_start(me: &str, mode: SyncMode, strict: bool, key: Option<&SyncState>) -> Standbys {
    if mode == SyncMode::Off {
        return Standbys::Nobody;
    }
    // In quorum mode, or under a key quorum mode wrote: the standbys that keep that key true.
    if mode == SyncMode::Quorum || key.is_some_and(|k| k.quorum.unwrap_or(0) > 0) {
        return super::quorum::at_start(me, strict, key);
    }
    let named = match key {
        Some(k) if k.leader.as_deref() == Some(me) => k.members(),
        _ => Vec::new(),
    };
    waiting_for(named, strict)
}

/// The `sync` key a replica writes before it promotes (compare-and-swap; no promotion when it
/// fails), as Patroni does: in `synchronous_mode: on`, when the key names another leader (or
/// was written in quorum mode), a key naming this node alone. Otherwise the key still promises
/// that its members hold every commit, while the new primary acknowledges commits waiting for
/// nobody (or `*`) until its first loop as leader rewrites it. Quorum commit needs no key:
/// [`at_start`] keeps the old one true.
pub fn key_before_promotion(
    me: &str,
    mode: SyncMode,
    key: Option<&SyncState>,
) -> Option<SyncState> {
    if mode != SyncMode::On {
        return None;
    }
    let k = key?;
    let mine = k.leader.as_deref() == Some(me) && k.quorum.unwrap_or(0) == 0;
    (!mine).then(|| key_of(me, &[]))
}

/// Wait for every one of `names`; with none, for any standby in strict mode, else for nobody.
fn waiting_for(names: Vec<String>, strict: bool) -> Standbys {
    if !names.is_empty() {
        Standbys::All(names)
    } else if strict {
        Standbys::AnyOne
    } else {
        Standbys::Nobody
    }
}

fn key_of(me: &str, members: &[String]) -> SyncState {
    SyncState {
        leader: Some(me.to_string()),
        quorum: Some(0),
        sync_standby: (!members.is_empty()).then(|| members.join(",")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn standby(name: &str, streaming: bool, sync: bool, lsn: u64) -> Standby {
        Standby {
            name: name.into(),
            streaming,
            sync,
            flush_lsn: lsn,
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn inputs<'a>(
        standbys: &'a [Standby],
        eligible: &'a [String],
        key: Option<&'a SyncState>,
        node_count: usize,
        strict: bool,
    ) -> SyncInputs<'a> {
        SyncInputs {
            me: "pg1",
            mode: SyncMode::On,
            node_count,
            strict,
            standbys,
            eligible,
            no_failover: &[],
            max_lag: None,
            key,
            primary_flush: Some(0),
            catching_up: &NOTHING_CATCHING_UP,
        }
    }

    /// The plan that sets the standbys to `n`, publishing nobody new.
    fn waits_for(n: &[&str]) -> SyncPlan {
        SyncPlan::Apply {
            standbys: Standbys::All(names(n)),
            publish: None,
            catching_up: BTreeMap::new(),
        }
    }

    static NOTHING_CATCHING_UP: BTreeMap<String, u64> = BTreeMap::new();

    #[test]
    fn the_setting_quotes_every_name_and_counts_them() {
        assert_eq!(Standbys::Nobody.setting(), "");
        assert_eq!(Standbys::AnyOne.setting(), "*");
        assert_eq!(
            Standbys::All(names(&["pg2", "we\"ird"])).setting(),
            "2 (\"pg2\",\"we\"\"ird\")"
        );
    }

    #[test]
    fn off_clears_the_setting_and_deletes_a_key() {
        let key = key_of("pg1", &names(&["pg2"]));
        let mut i = inputs(&[], &[], Some(&key), 1, false);
        i.mode = SyncMode::Off;
        assert_eq!(plan(&i), SyncPlan::Off { delete_key: true });
        i.key = None;
        assert_eq!(plan(&i), SyncPlan::Off { delete_key: false });
    }

    #[test]
    fn a_new_leader_takes_the_key_over_empty_before_it_names_anyone() {
        let rows = [standby("pg2", true, true, 10)];
        let elig = names(&["pg2"]);
        let old = key_of("pg0", &names(&["pg1"]));
        assert_eq!(
            plan(&inputs(&rows, &elig, Some(&old), 1, false)),
            SyncPlan::WriteKey(key_of("pg1", &[]))
        );
        assert_eq!(
            plan(&inputs(&rows, &elig, None, 1, false)),
            SyncPlan::WriteKey(key_of("pg1", &[]))
        );
    }

    #[test]
    fn two_standbys_are_named_once_postgresql_reports_both_as_sync() {
        let elig = names(&["pg2", "pg3", "pg4"]);
        let key = key_of("pg1", &[]);
        let rows = [
            standby("pg2", true, false, 10),
            standby("pg3", true, false, 30),
            standby("pg4", true, false, 20),
        ];
        // The two most advanced are chosen; nobody is published before PostgreSQL waits for them.
        assert_eq!(
            plan(&inputs(&rows, &elig, Some(&key), 2, false)),
            waits_for(&["pg3", "pg4"])
        );
        let rows = [
            standby("pg2", true, false, 10),
            standby("pg3", true, true, 30),
            standby("pg4", true, true, 20),
        ];
        assert_eq!(
            plan(&inputs(&rows, &elig, Some(&key), 2, false)),
            SyncPlan::Apply {
                standbys: Standbys::All(names(&["pg3", "pg4"])),
                publish: Some(key_of("pg1", &names(&["pg3", "pg4"]))),
                catching_up: BTreeMap::new()
            }
        );
    }

    #[test]
    fn a_lost_standby_leaves_the_key_before_the_setting_and_is_replaced() {
        let elig = names(&["pg2", "pg3", "pg4"]);
        let key = key_of("pg1", &names(&["pg3", "pg4"]));
        let rows = [
            standby("pg2", true, false, 10),
            standby("pg3", false, false, 30),
            standby("pg4", true, true, 20),
        ];
        assert_eq!(
            plan(&inputs(&rows, &elig, Some(&key), 2, false)),
            SyncPlan::WriteKey(key_of("pg1", &names(&["pg4"])))
        );
        let key = key_of("pg1", &names(&["pg4"]));
        assert_eq!(
            plan(&inputs(&rows, &elig, Some(&key), 2, false)),
            waits_for(&["pg4", "pg2"])
        );
    }

    #[test]
    fn nosync_members_and_the_leader_itself_are_never_chosen() {
        let rows = [
            standby("pg1", true, false, 99),
            standby("pg2", true, false, 50),
            standby("pg3", true, false, 10),
        ];
        let elig = names(&["pg1", "pg3"]);
        let key = key_of("pg1", &[]);
        assert_eq!(
            plan(&inputs(&rows, &elig, Some(&key), 2, false)),
            waits_for(&["pg3"])
        );
    }

    #[test]
    fn strict_mode_with_no_candidate_waits_for_any_standby() {
        let key = key_of("pg1", &[]);
        let rows = [standby("pg2", false, false, 0)];
        let elig = names(&["pg2"]);
        assert_eq!(
            plan(&inputs(&rows, &elig, Some(&key), 1, true)),
            SyncPlan::Apply {
                standbys: Standbys::AnyOne,
                publish: None,
                catching_up: BTreeMap::new()
            }
        );
        assert_eq!(
            plan(&inputs(&rows, &elig, Some(&key), 1, false)),
            SyncPlan::Apply {
                standbys: Standbys::Nobody,
                publish: None,
                catching_up: BTreeMap::new()
            }
        );
    }

    #[test]
    fn a_named_standby_is_kept_while_it_streams_even_when_another_is_ahead() {
        let elig = names(&["pg2", "pg3"]);
        let key = key_of("pg1", &names(&["pg2"]));
        let rows = [
            standby("pg2", true, true, 10),
            standby("pg3", true, false, 90),
        ];
        assert_eq!(
            plan(&inputs(&rows, &elig, Some(&key), 1, false)),
            waits_for(&["pg2"])
        );
    }

    #[test]
    fn a_starting_primary_waits_for_what_its_key_names_or_in_strict_mode_anyone() {
        let mine = key_of("pg1", &names(&["pg2", "pg3"]));
        let theirs = key_of("pg2", &names(&["pg1"]));
        let empty = key_of("pg1", &[]);
        let on = SyncMode::On;
        assert_eq!(
            at_start("pg1", on, false, Some(&mine)),
            Standbys::All(names(&["pg2", "pg3"]))
        );
        assert_eq!(at_start("pg1", on, false, Some(&theirs)), Standbys::Nobody);
        assert_eq!(at_start("pg1", on, true, Some(&theirs)), Standbys::AnyOne);
        assert_eq!(at_start("pg1", on, true, Some(&empty)), Standbys::AnyOne);
        assert_eq!(at_start("pg1", on, true, None), Standbys::AnyOne);
        assert_eq!(
            at_start("pg1", SyncMode::Off, true, Some(&mine)),
            Standbys::Nobody
        );
        // The plan that follows keeps what the start set while those standbys stream.
        let rows = [standby("pg2", true, true, 5), standby("pg3", true, true, 4)];
        let elig = names(&["pg2", "pg3"]);
        assert_eq!(
            plan(&inputs(&rows, &elig, Some(&mine), 2, false)),
            waits_for(&["pg2", "pg3"])
        );
    }

    #[test]
    fn a_standby_that_may_be_promoted_is_preferred_to_a_nofailover_one() {
        let elig = names(&["pg2", "pg3"]);
        let nofailover = names(&["pg2"]);
        let rows = [
            standby("pg2", true, true, 90),
            standby("pg3", true, false, 10),
        ];
        // Named while it was the only one, pg2 leaves the key for pg3.
        let key = key_of("pg1", &names(&["pg2"]));
        let mut i = inputs(&rows, &elig, Some(&key), 1, false);
        i.no_failover = &nofailover;
        assert_eq!(plan(&i), SyncPlan::WriteKey(key_of("pg1", &[])));
        // Alone, a nofailover standby is still made synchronous: it protects the commits.
        let rows = [
            standby("pg2", true, true, 90),
            standby("pg3", false, false, 10),
        ];
        let key = key_of("pg1", &[]);
        let mut i = inputs(&rows, &elig, Some(&key), 1, false);
        i.no_failover = &nofailover;
        assert!(matches!(
            plan(&i),
            SyncPlan::Apply { standbys: Standbys::All(n), .. } if n == names(&["pg2"])
        ));
    }

    #[test]
    fn a_standby_lagging_past_maximum_lag_on_syncnode_is_replaced() {
        let elig = names(&["pg2", "pg3"]);
        let key = key_of("pg1", &names(&["pg2"]));
        let rows = [
            standby("pg2", true, true, 100),
            standby("pg3", true, false, 990),
        ];
        let mut i = inputs(&rows, &elig, Some(&key), 1, false);
        i.primary_flush = Some(1000);
        i.max_lag = Some(500);
        assert_eq!(plan(&i), SyncPlan::WriteKey(key_of("pg1", &[])));
        // Within the limit (or without one) it stays.
        i.max_lag = Some(900);
        assert!(matches!(plan(&i), SyncPlan::Apply { publish: None, .. }));
        i.max_lag = None;
        assert!(matches!(plan(&i), SyncPlan::Apply { publish: None, .. }));
    }

    #[test]
    fn a_lower_node_count_drops_the_surplus_from_the_key_first() {
        let elig = names(&["pg2", "pg3"]);
        let key = key_of("pg1", &names(&["pg2", "pg3"]));
        let rows = [
            standby("pg2", true, true, 10),
            standby("pg3", true, true, 9),
        ];
        assert_eq!(
            plan(&inputs(&rows, &elig, Some(&key), 1, false)),
            SyncPlan::WriteKey(key_of("pg1", &names(&["pg2"])))
        );
    }

    #[test]
    fn a_standby_newly_sync_is_published_only_once_it_has_what_was_acknowledged_before() {
        // pg2 replaced a lost standby: it is `sync` now, but commits acknowledged before it was
        // (up to the primary's flush LSN, 100) may not have reached it.
        let elig = names(&["pg2"]);
        let key = key_of("pg1", &[]);
        let rows = [standby("pg2", true, true, 80)];
        let mut i = inputs(&rows, &elig, Some(&key), 1, false);
        i.primary_flush = Some(100);
        let SyncPlan::Apply {
            publish,
            catching_up,
            ..
        } = plan(&i)
        else {
            panic!("expected Apply");
        };
        assert_eq!(publish, None);
        assert_eq!(catching_up.get("pg2"), Some(&100));
        // Next loop: the primary has moved on (120), but pg2 need only reach 100.
        let rows = [standby("pg2", true, true, 105)];
        let mut i = inputs(&rows, &elig, Some(&key), 1, false);
        i.primary_flush = Some(120);
        i.catching_up = &catching_up;
        assert_eq!(
            plan(&i),
            SyncPlan::Apply {
                standbys: Standbys::All(names(&["pg2"])),
                publish: Some(key_of("pg1", &names(&["pg2"]))),
                catching_up: BTreeMap::new()
            }
        );
        // Without the primary's flush LSN, nobody new is published.
        let mut i = inputs(&rows, &elig, Some(&key), 1, false);
        i.primary_flush = None;
        assert!(matches!(plan(&i), SyncPlan::Apply { publish: None, .. }));
    }

    // ---- simulation ----------------------------------------------------------------------

    /// A simulated primary with four standbys (`pg2`..`pg5`), its setting, its key, and every
    /// commit it has acknowledged.
    struct Sim {
        setting: Standbys,
        key: Option<SyncState>,
        catching_up: BTreeMap<String, u64>,
        flush: u64,
        standby_flush: [u64; 4],
        /// The highest LSN of a commit acknowledged to a client.
        acked: u64,
    }

    fn name(i: usize) -> String {
        format!("pg{}", i + 2)
    }

    impl Sim {
        fn new() -> Sim {
            Sim {
                setting: Standbys::Nobody,
                key: None,
                catching_up: BTreeMap::new(),
                flush: 0,
                standby_flush: [0; 4],
                acked: 0,
            }
        }

        /// Which standbys PostgreSQL treats as `sync` under the current setting.
        fn sync_states(&self, streaming: &[bool]) -> Vec<bool> {
            match &self.setting {
                Standbys::Nobody => vec![false; 4],
                // `*` is FIRST 1 over every standby: the first streaming one.
                Standbys::AnyOne => {
                    let first = streaming.iter().position(|s| *s);
                    (0..4).map(|i| Some(i) == first).collect()
                }
                Standbys::All(names) | Standbys::Any { names, .. } => (0..4)
                    .map(|i| streaming[i] && names.contains(&name(i)))
                    .collect(),
            }
        }

        /// Commits up to where the setting's standbys have flushed are acknowledged.
        fn acknowledge(&mut self, streaming: &[bool]) {
            let point = match &self.setting {
                Standbys::Nobody => self.flush,
                Standbys::AnyOne => (0..4)
                    .filter(|i| streaming[*i])
                    .map(|i| self.standby_flush[i])
                    .max()
                    .unwrap_or(self.acked),
                // FIRST N of N names: every named standby must have flushed the commit.
                Standbys::All(names) => (0..4)
                    .filter(|i| names.contains(&name(*i)))
                    .map(|i| self.standby_flush[i])
                    .min()
                    .unwrap_or(self.acked),
                Standbys::Any { .. } => unreachable!("synchronous_mode: on never waits for ANY"),
            };
            self.acked = self.acked.max(point.min(self.flush));
        }

        /// One leader loop: the world moves, commits are acknowledged, the leader observes and
        /// carries out its plan (a key write may fail its compare-and-swap).
        fn step(&mut self, s: &Step) -> Result<(), TestCaseError> {
            self.flush += s.writes;
            for i in 0..4 {
                if s.streaming[i] {
                    let target = self.flush.saturating_sub(s.lag[i]);
                    self.standby_flush[i] = self.standby_flush[i].max(target);
                }
            }
            self.acknowledge(&s.streaming);
            let sync = self.sync_states(&s.streaming);
            let rows: Vec<Standby> = (0..4)
                .map(|i| standby(&name(i), s.streaming[i], sync[i], self.standby_flush[i]))
                .collect();
            let elig: Vec<String> = (0..4).filter(|i| !s.nosync[*i]).map(name).collect();
            let no_failover: Vec<String> = (0..4).filter(|i| s.nofailover[*i]).map(name).collect();
            let before = self
                .key
                .as_ref()
                .map(SyncState::members)
                .unwrap_or_default();
            let mut i = inputs(&rows, &elig, self.key.as_ref(), s.node_count, s.strict);
            i.primary_flush = Some(self.flush);
            i.catching_up = &self.catching_up;
            i.no_failover = &no_failover;
            i.max_lag = s.max_lag;
            match plan(&i) {
                SyncPlan::Off { .. } => prop_assert!(false, "mode is on"),
                SyncPlan::WriteKey(k) => {
                    prop_assert!(
                        k.members().iter().all(|m| before.contains(m)),
                        "a key write without a setting change never adds a member"
                    );
                    self.catching_up.clear();
                    if !s.cas_fails {
                        self.key = Some(k);
                    }
                }
                SyncPlan::Apply {
                    standbys,
                    publish,
                    catching_up,
                } => {
                    prop_assert!(standbys.names().len() <= s.node_count);
                    for n in standbys.names() {
                        prop_assert!(elig.contains(n) && n != "pg1", "{n} is not eligible");
                    }
                    for n in &before {
                        prop_assert!(standbys.names().contains(n), "{n} named but dropped");
                    }
                    self.setting = standbys;
                    self.catching_up = catching_up;
                    if let Some(k) = publish
                        && !s.cas_fails
                    {
                        self.key = Some(k);
                    }
                }
            }
            // The key names only standbys PostgreSQL waits for, each holding every
            // acknowledged commit: promoting any of them loses nothing.
            if let Some(k) = &self.key {
                for n in k.members() {
                    prop_assert!(
                        self.setting.names().contains(&n),
                        "the key names {n} but the setting is {:?}",
                        self.setting.setting()
                    );
                    let i = (0..4).find(|i| name(*i) == n).expect("a standby");
                    prop_assert!(
                        self.standby_flush[i] >= self.acked,
                        "{n} is named but has flushed {} of the acknowledged {}",
                        self.standby_flush[i],
                        self.acked
                    );
                }
            }
            Ok(())
        }

        fn named(&self) -> Vec<String> {
            self.key
                .as_ref()
                .map(SyncState::members)
                .unwrap_or_default()
        }
    }

    #[derive(Debug, Clone)]
    struct Step {
        streaming: Vec<bool>,
        nosync: Vec<bool>,
        nofailover: Vec<bool>,
        max_lag: Option<u64>,
        /// How far behind the primary each streaming standby flushes this loop.
        lag: Vec<u64>,
        writes: u64,
        node_count: usize,
        strict: bool,
        /// The key write fails (another writer changed it) this loop.
        cas_fails: bool,
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        (
            proptest::collection::vec(proptest::bool::weighted(0.75), 4),
            proptest::collection::vec(proptest::bool::weighted(0.15), 4),
            proptest::collection::vec(proptest::bool::weighted(0.2), 4),
            proptest::option::weighted(0.3, 0u64..=20),
            proptest::collection::vec(0u64..=30, 4),
            0u64..=20,
            1usize..=3,
            any::<bool>(),
            proptest::bool::weighted(0.1),
        )
            .prop_map(
                |(
                    streaming,
                    nosync,
                    nofailover,
                    max_lag,
                    lag,
                    writes,
                    node_count,
                    strict,
                    cas_fails,
                )| {
                    Step {
                        streaming,
                        nosync,
                        nofailover,
                        max_lag,
                        lag,
                        writes,
                        node_count,
                        strict,
                        cas_fails,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3_000))]

        /// Over random sequences of standbys coming, going and lagging, writes, changes of
        /// `synchronous_node_count` and failed key writes: at every loop, every standby the key
        /// names is one PostgreSQL waits for and holds every acknowledged commit.
        #[test]
        fn prop_the_key_names_only_standbys_holding_every_acknowledged_commit(
            steps in proptest::collection::vec(arb_step(), 1..40)
        ) {
            let mut sim = Sim::new();
            for s in &steps {
                sim.step(s)?;
            }
        }

        /// Once the standbys stop changing and catch up, the key names
        /// `min(count, eligible streaming)` standbys within four loops.
        #[test]
        fn prop_a_steady_cluster_gets_its_synchronous_standbys(
            history in proptest::collection::vec(arb_step(), 0..10),
            streaming in proptest::collection::vec(any::<bool>(), 4),
            nosync in proptest::collection::vec(proptest::bool::weighted(0.2), 4),
            node_count in 1usize..=3,
        ) {
            let mut sim = Sim::new();
            for s in &history {
                sim.step(s)?;
            }
            let steady = Step {
                streaming: streaming.clone(),
                nosync: nosync.clone(),
                nofailover: vec![false, true, false, true],
                max_lag: None,
                lag: vec![0; 4],
                writes: 0,
                node_count,
                strict: false,
                cas_fails: false,
            };
            for _ in 0..4 {
                sim.step(&steady)?;
            }
            let available = (0..4).filter(|i| streaming[*i] && !nosync[*i]).count();
            prop_assert_eq!(sim.named().len(), available.min(node_count), "{:?}", sim.key);
        }
    }
}
