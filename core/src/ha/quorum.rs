//! Quorum commit (`synchronous_mode: quorum`), decided without I/O: which standbys PostgreSQL
//! waits for (`synchronous_standby_names = 'ANY n (...)'`), what the `sync` key says (its
//! voters and `quorum`), and whether a replica may be promoted.
//!
//! A commit returns once the primary and any `n` of the listed standbys flushed it, so no single
//! standby is known to hold every acknowledged commit. The `sync` key makes the promise instead
//! about a *set*: of the voting set (the key's `sync_standby` names plus its `leader`), at most
//! `quorum` members may lack any acknowledged commit. A candidate that has reached or passed
//! the WAL position of `quorum + 1` members of the voting set, itself included when it is one
//! of them, therefore holds every acknowledged commit ([`proves`]).
//!
//! **The invariant this module keeps**: at every moment, for every acknowledged commit, at
//! most `quorum` members of the key's voting set lack it. The leader changes the key and the
//! setting one step at a time ([`plan`]), and every step is checked against the commits that
//! may have been acknowledged so far (`KeyCheck`):
//!
//! - commits acknowledged under the setting in force (`ANY n (S)`): on `n` members of `S`, so
//!   at most `|V| - (n - |S \ V|)` voters `V` lack one;
//! - older commits: the key in force keeps its promise for them, so a new key may drop voters
//!   but must raise `quorum` by one for each voter it adds that may lack them; a standby that
//!   has flushed the *barrier* (the primary's flush position read once the setting was in
//!   force, [`Barrier`]) holds all of them.
//!
//! So the key grows before the setting does, and shrinks only after the standbys have caught
//! up; when a step cannot keep the promise with fewer than every voter, the key names nobody
//! (only the leader may then be promoted, as in `synchronous_mode: on`). The supervisor reads
//! `pg_stat_replication`, the setting and the key, calls [`plan`] and carries out the steps in
//! order, stopping at the first that fails.

use super::policy::CandidateView;
use super::sync::{Standby, Standbys, SyncInputs};
use crate::dcs::SyncState;
use std::collections::BTreeSet;

/// What the leader knows this loop: what synchronous mode knows (its `mode` and
/// `catching_up` unused), what PostgreSQL waits for now, and the barrier.
#[derive(Debug, Clone)]
pub struct QuorumInputs<'a> {
    /// The standbys, the tags, the key, the primary's flush position, the settings.
    pub sync: SyncInputs<'a>,
    /// What PostgreSQL waits for now (`synchronous_standby_names` as the server reports it).
    pub setting: &'a Standbys,
    /// The barrier the last [`QuorumPlan`] returned.
    pub barrier: Option<&'a Barrier>,
}

/// The primary's flush position read once `setting` was in force: every commit acknowledged
/// before that setting is at or below `lsn`, so a standby that flushed `lsn` holds them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Barrier {
    /// The primary's flush position.
    pub lsn: u64,
    /// The setting in force when it was read; the barrier is void once another is.
    pub setting: Standbys,
}

/// One change, in the order the supervisor makes them.
#[derive(Debug, Clone, PartialEq)]
pub enum QuorumStep {
    /// Write the `sync` key (compare-and-swap on the revision read); a failed write ends the
    /// loop's steps.
    WriteKey(SyncState),
    /// Set `synchronous_standby_names`.
    Set(Standbys),
}

/// What the leader does this loop.
#[derive(Debug, Clone, PartialEq)]
pub struct QuorumPlan {
    /// The changes, in order (none in a steady cluster).
    pub steps: Vec<QuorumStep>,
    /// The barrier to hand to the next loop's [`QuorumInputs`].
    pub barrier: Option<Barrier>,
}

/// What a `sync` key promises, as the leader `me` that writes the next one reads it: at most
/// `quorum` of `voters` lack any acknowledged commit. The key's own leader is one of the
/// voters; `me`, the primary, holds every commit and is left out.
#[derive(Debug, Clone, PartialEq)]
struct Promise {
    /// At most this many of `voters` lack any acknowledged commit.
    quorum: usize,
    voters: BTreeSet<String>,
}

impl Promise {
    /// The promise of `key` for a leader `me` that holds every acknowledged commit (it is the
    /// primary). `None`: no key (or one without a leader), which promises nothing.
    fn of(key: Option<&SyncState>, me: &str) -> Option<Promise> {
        let k = key?;
        let leader = k.leader.as_deref().filter(|l| !l.is_empty())?;
        let mut voters: BTreeSet<String> = k.members().into_iter().collect();
        voters.insert(leader.to_string());
        voters.remove(me);
        let quorum = usize::try_from(k.quorum.unwrap_or(0)).unwrap_or(usize::MAX);
        Some(Promise { quorum, voters }.normalized())
    }

    /// A promise that every voter may break (`quorum` at least the number of voters) says only
    /// that the leader holds everything: it is written as the key naming nobody.
    fn normalized(self) -> Promise {
        if self.quorum >= self.voters.len() {
            Promise {
                quorum: 0,
                voters: BTreeSet::new(),
            }
        } else {
            self
        }
    }

    fn key(&self, me: &str) -> SyncState {
        SyncState {
            leader: Some(me.to_string()),
            quorum: Some(u32::try_from(self.quorum).unwrap_or(u32::MAX)),
            sync_standby: (!self.voters.is_empty())
                .then(|| self.voters.iter().cloned().collect::<Vec<_>>().join(",")),
        }
    }
}

/// A setting as the commits it acknowledges: on `need` standbys of `names` (`None`: of any).
struct Regime {
    need: usize,
    names: Option<BTreeSet<String>>,
}

impl Regime {
    fn of(s: &Standbys) -> Regime {
        match s {
            Standbys::Nobody => Regime {
                need: 0,
                names: Some(BTreeSet::new()),
            },
            Standbys::AnyOne => Regime {
                need: 1,
                names: None,
            },
            Standbys::All(n) => Regime {
                need: n.len(),
                names: Some(n.iter().cloned().collect()),
            },
            Standbys::Any { count, names } => Regime {
                need: *count,
                names: Some(names.iter().cloned().collect()),
            },
        }
    }

    /// How many of `voters` may lack a commit acknowledged under this setting.
    fn may_lack(&self, voters: &BTreeSet<String>) -> usize {
        let Some(names) = &self.names else {
            return voters.len();
        };
        if self.need > names.len() {
            // PostgreSQL can never count that many: no commit returns.
            return 0;
        }
        let outside = names.difference(voters).count();
        voters.len() - self.need.saturating_sub(outside).min(voters.len())
    }
}

/// What a new key must promise so that it holds for every commit acknowledged so far and every
/// commit the setting in force acknowledges from now on.
struct KeyCheck<'a> {
    /// The key in force (its promise holds).
    current: &'a Promise,
    /// The setting in force.
    regime: Regime,
    /// Standbys known to hold every commit acknowledged before the setting was in force.
    past_barrier: BTreeSet<String>,
}

impl KeyCheck<'_> {
    /// The smallest `quorum` a key with `voters` may carry.
    fn least_quorum(&self, voters: &BTreeSet<String>) -> usize {
        let kept = self
            .current
            .quorum
            .min(voters.intersection(&self.current.voters).count());
        let added: Vec<&String> = voters.difference(&self.current.voters).collect();
        let added_behind = added
            .iter()
            .filter(|n| !self.past_barrier.contains(**n))
            .count();
        // Commits acknowledged before the barrier: the old promise with the newcomers that may
        // lack them, or simply the voters that have not flushed the barrier.
        let before = (kept + added_behind).min(voters.difference(&self.past_barrier).count());
        // Commits of the setting in force: the old promise with every newcomer, or the setting.
        let since = (kept + added.len()).min(self.regime.may_lack(voters));
        before.max(since)
    }

    /// The promise of a key naming `voters`: `quorum`, or more when this check needs more.
    fn promise(&self, voters: BTreeSet<String>, quorum: usize) -> Promise {
        let quorum = quorum.max(self.least_quorum(&voters));
        Promise { quorum, voters }.normalized()
    }
}

/// Whether, under the key `p`, changing the setting to `s` keeps the promise for the commits
/// `s` will acknowledge.
fn setting_keeps(p: &Promise, s: &Standbys) -> bool {
    Regime::of(s).may_lack(&p.voters) <= p.quorum
}

/// Decide this loop's quorum-commit steps.
///
/// The target: every streaming eligible standby is listed and is a voter (`nofailover` ones
/// only while fewer than `node_count` others stream), `n = min(node_count, listed)`, and
/// `quorum = listed - n`, so that any `n` acknowledging standbys and any `quorum + 1` voters
/// share a member. Each loop takes the steps towards it that keep the promise: a new key
/// first when one is needed (a take-over by a new leader, a key that names more or promises
/// less), then the setting; once the setting is in force and the standbys flushed the barrier,
/// the key that promises only what the target needs.
pub fn plan(i: &QuorumInputs) -> QuorumPlan {
    let mut steps = Vec::new();
    let current = match Promise::of(i.sync.key, i.sync.me) {
        Some(p) => p,
        None => Promise {
            quorum: 0,
            voters: BTreeSet::new(),
        },
    };
    let mut written = i.sync.key.cloned();
    // A key of another leader (a take-over), none at all, or one not in its normal form: the
    // same promise, written as this leader's.
    if written.as_ref() != Some(&current.key(i.sync.me)) {
        let k = current.key(i.sync.me);
        steps.push(QuorumStep::WriteKey(k.clone()));
        written = Some(k);
    }
    let (target_setting, target) = target(i, &current);
    let barrier = i.barrier.filter(|b| &b.setting == i.setting);
    let past_barrier: BTreeSet<String> = match barrier {
        Some(b) => i
            .sync
            .standbys
            .iter()
            .filter(|s| s.flush_lsn >= b.lsn)
            .map(|s| s.name.clone())
            .collect(),
        None => BTreeSet::new(),
    };
    let check = KeyCheck {
        current: &current,
        regime: Regime::of(i.setting),
        past_barrier,
    };
    if &target_setting != i.setting {
        // The key first, promising enough for the commits of both settings; then the setting.
        let next = check.promise(target.voters.clone(), target.quorum);
        let k = next.key(i.sync.me);
        if written.as_ref() != Some(&k) {
            steps.push(QuorumStep::WriteKey(k));
        }
        if setting_keeps(&next, &target_setting) {
            steps.push(QuorumStep::Set(target_setting));
        }
        return QuorumPlan {
            steps,
            barrier: None,
        };
    }
    let next = check.promise(target.voters.clone(), target.quorum);
    let k = next.key(i.sync.me);
    if written.as_ref() != Some(&k) {
        steps.push(QuorumStep::WriteKey(k));
    }
    debug_assert!(setting_keeps(&next, i.setting));
    QuorumPlan {
        steps,
        barrier: barrier.cloned().or_else(|| {
            i.sync.primary_flush.map(|lsn| Barrier {
                lsn,
                setting: i.setting.clone(),
            })
        }),
    }
}

/// The setting and the key the leader aims for, given the key in force.
fn target(i: &QuorumInputs, current: &Promise) -> (Standbys, Promise) {
    let wanted = i.sync.node_count.max(1);
    let mut streaming: Vec<&Standby> = i
        .sync
        .standbys
        .iter()
        .filter(|s| s.streaming && s.name != i.sync.me && i.sync.eligible.contains(&s.name))
        .filter(|s| match (i.sync.max_lag, i.sync.primary_flush) {
            (Some(max), Some(p)) => s.flush_lsn.saturating_add(max) >= p,
            _ => true,
        })
        .collect();
    // Promotable standbys first; among the `nofailover` ones the most advanced (name breaks
    // ties), taken only to reach `node_count`.
    streaming.sort_by_key(|s| {
        (
            i.sync.no_failover.contains(&s.name),
            std::cmp::Reverse(s.flush_lsn),
            s.name.clone(),
        )
    });
    let promotable = streaming
        .iter()
        .filter(|s| !i.sync.no_failover.contains(&s.name))
        .count();
    let listed: BTreeSet<String> = streaming
        .iter()
        .take(promotable.max(wanted))
        .map(|s| s.name.clone())
        .collect();
    if listed.is_empty() {
        if !i.sync.strict {
            let nobody = Promise {
                quorum: 0,
                voters: BTreeSet::new(),
            };
            return (Standbys::Nobody, nobody);
        }
        // Strict mode with nobody streaming: keep waiting for the voters (commits block until
        // enough of them return), or for any standby when there are none.
        return (waiting_for(current, 1), current.clone());
    }
    let n = wanted.min(listed.len());
    let setting = Standbys::Any {
        count: n,
        names: listed.iter().cloned().collect(),
    };
    let quorum = listed.len() - n;
    (
        setting,
        Promise {
            quorum,
            voters: listed,
        },
    )
}

/// `ANY n (voters)` with `n` such that the promise `p` holds for its commits (at least
/// `least`); `*` when `p` names nobody and `least` is 1, else nobody.
fn waiting_for(p: &Promise, least: usize) -> Standbys {
    if p.voters.is_empty() {
        return if least > 0 {
            Standbys::AnyOne
        } else {
            Standbys::Nobody
        };
    }
    let count = (p.voters.len() - p.quorum.min(p.voters.len())).max(least);
    if count == 0 {
        return Standbys::Nobody;
    }
    Standbys::Any {
        count: count.min(p.voters.len()),
        names: p.voters.iter().cloned().collect(),
    }
}

/// What a primary waits for from its first moment (a start as primary, or a promotion),
/// before its first [`plan`]: `ANY n` of the key's voting set without itself, with `n` such
/// that the key in force, which still names the former leader, stays true for the commits it
/// acknowledges (in strict mode at least one); without a key, nobody (in strict mode any
/// standby).
pub fn at_start(me: &str, strict: bool, key: Option<&SyncState>) -> Standbys {
    let least = usize::from(strict);
    match Promise::of(key, me) {
        Some(p) => waiting_for(&p, least),
        None if strict => Standbys::AnyOne,
        None => Standbys::Nobody,
    }
}

/// `synchronous_standby_names` as the server reports it, for [`QuorumInputs::setting`]: empty
/// (nobody), `*`, `ANY n (...)`, `FIRST n (...)`, `n (...)` and a bare list (`FIRST 1`),
/// names quoted or not. `FIRST n` of more than `n` names also puts each commit on `n` of them,
/// and is read as `ANY n`; what cannot be read (a `*` among names, a count that does not
/// parse) as `*`, whose commits may be on any one standby: the plan trusts it least.
pub fn parse_setting(s: &str) -> Standbys {
    let t = s.trim();
    if t.is_empty() {
        return Standbys::Nobody;
    }
    let (any, rest) = match t.split_once(char::is_whitespace) {
        Some((w, rest)) if w.eq_ignore_ascii_case("ANY") => (true, rest.trim_start()),
        Some((w, rest)) if w.eq_ignore_ascii_case("FIRST") => (false, rest.trim_start()),
        _ => (false, t),
    };
    let (count, list) = match rest.find('(') {
        Some(open) if rest.ends_with(')') => {
            let Ok(n) = rest[..open].trim().parse::<usize>() else {
                return Standbys::AnyOne;
            };
            (n, &rest[open + 1..rest.len() - 1])
        }
        _ if any => return Standbys::AnyOne,
        _ => (1, rest),
    };
    let Some(mut names) = standby_names(list) else {
        return Standbys::AnyOne;
    };
    if count == 0 || names.is_empty() {
        return Standbys::Nobody;
    }
    if !any && count >= names.len() {
        return Standbys::All(names);
    }
    names.sort();
    Standbys::Any { count, names }
}

/// The names of a `synchronous_standby_names` list; `None` for a `*` or an unterminated quote.
fn standby_names(list: &str) -> Option<Vec<String>> {
    let mut names = Vec::new();
    let mut chars = list.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut name = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next()? {
                    '"' if chars.next_if_eq(&'"').is_some() => name.push('"'),
                    '"' => break,
                    c => name.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                name.push(c);
            }
            name = name.trim().to_string();
            if name == "*" {
                return None;
            }
        }
        if !name.is_empty() {
            names.push(name);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next().is_none() {
            return Some(names);
        }
    }
}

/// The names of the key's voting set: its standbys and the leader that wrote it.
pub fn voting_set(key: &SyncState) -> BTreeSet<String> {
    let mut set: BTreeSet<String> = key.members().into_iter().collect();
    set.extend(key.leader.clone().filter(|l| !l.is_empty()));
    set
}

/// Whether `candidate`, at WAL position `lsn`, provably holds every commit acknowledged under
/// the quorum key `key`: of the voting set ([`voting_set`]), at least `quorum + 1` members
/// are at or behind it, itself counting when it is one. `position` gives what the others
/// report now (`None`: unreachable, not running, or unknown: no vote). `Err` says how many
/// votes it has and who is ahead or silent.
pub fn proves(
    candidate: &str,
    lsn: Option<u64>,
    key: &SyncState,
    position: &dyn Fn(&str) -> Option<u64>,
) -> Result<(), String> {
    let need = usize::try_from(key.quorum.unwrap_or(0))
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    let mut votes = 0;
    let (mut ahead, mut silent) = (Vec::new(), Vec::new());
    for voter in voting_set(key) {
        if voter == candidate {
            votes += 1;
            continue;
        }
        match (position(&voter), lsn) {
            (Some(theirs), Some(mine)) if theirs <= mine => votes += 1,
            (Some(_), Some(_)) => ahead.push(voter),
            _ => silent.push(voter),
        }
    }
    if votes >= need {
        return Ok(());
    }
    let mut why = format!(
        "{candidate} has {votes} of the {need} votes (quorum {} + 1) that prove it holds every acknowledged commit",
        need - 1
    );
    if lsn.is_none() {
        why.push_str("; its own WAL position is unknown");
    }
    if !ahead.is_empty() {
        why.push_str(&format!("; ahead of it: {}", ahead.join(", ")));
    }
    if !silent.is_empty() {
        why.push_str(&format!("; no position from: {}", silent.join(", ")));
    }
    Err(why)
}

/// The WAL position a member of an election view vouches for: received (flushed) WAL, while
/// it answers and its PostgreSQL runs.
fn vouched(m: &CandidateView) -> Option<u64> {
    (m.reachable && m.state == "running")
        .then(|| m.received_lsn.or(m.wal_position))
        .flatten()
}

/// The members of an election view that [`proves`] lets be promoted under `key`.
pub fn provers(members: &[CandidateView], key: &SyncState) -> Vec<String> {
    let position = |name: &str| members.iter().find(|m| m.name == name).and_then(vouched);
    members
        .iter()
        .filter(|m| proves(&m.name, vouched(m), key, &position).is_ok())
        .map(|m| m.name.clone())
        .collect()
}

/// Who may take over in a hand-over under `key`: the leader hands over only once the target
/// received all its WAL, so every voter may, and so may a replica proving itself among the
/// others (`members` leaves the leader out).
pub fn handover_members(members: &[CandidateView], key: &SyncState) -> Vec<String> {
    let mut who = provers(members, key);
    for v in key.members() {
        if !who.contains(&v) {
            who.push(v);
        }
    }
    who
}

/// Whether a key written in quorum mode: its standbys do not each hold every commit.
pub fn is_quorum_key(key: &SyncState) -> bool {
    key.quorum.unwrap_or(0) > 0
}
