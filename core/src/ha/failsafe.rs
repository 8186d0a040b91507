//! Failsafe mode (`failsafe_mode: true`, Patroni's): while etcd cannot be reached, the leader
//! stays primary as long as every other member listed in the `failsafe` key accepts its
//! `POST /failsafe`, and those members do not race for the leader key for `ttl` after they
//! accepted.
//!
//! Regent keeps its write deadline on top: a round of `POST /failsafe` extends the deadline
//! only when *every* listed member accepted it, only to `write_deadline_ms(round sent, ttl)`,
//! and only when it was sent before the current deadline passed (the chain of deadlines has no
//! gap, so no member can have raced in between). A refused or failed round extends nothing and
//! the leader demotes at once, as after a failed renewal; the guard fences when the extensions
//! stop. A member accepts only when it does not run as primary, and then holds off any race
//! for `ttl` from the moment it accepted (measured from receipt, which is after the send time
//! the leader's deadline counts from). A member that just started holds off for `ttl` too (it
//! may have forgotten an accepted round), and a member missing from a non-empty `failsafe`
//! key never races while failsafe mode is on (Patroni's rule).
//!
//! When etcd answers again and the leader key is gone (its lease expired during the outage),
//! the leader takes it again while its failsafe deadline lies ahead, without restarting
//! PostgreSQL; nobody else races in that time.
//!
//! Pure: the supervisor runs the rounds and reports them through the [`Memory`] methods here.

use super::memory::{Memory, write_deadline_ms};
use super::{AcquireReason, Action, Decision, World};

/// The outcome of one round of `POST /failsafe` by the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailsafeRound {
    /// When (monotonic ms) the round's first request was sent.
    pub sent_ms: u64,
    /// Every other member in the `failsafe` key answered `200 Accepted`, and the round was
    /// sent before the write deadline passed.
    pub accepted: bool,
    /// The write deadline the round earned (`sent_ms` when it earned none).
    pub until_ms: u64,
}

/// A leader's `POST /failsafe` that this member accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailsafePing {
    /// The leader that sent it.
    pub leader: String,
    /// When (monotonic ms) this member accepted it.
    pub received_ms: u64,
    /// The `ttl` in force when it was accepted: the member holds off for at least that long
    /// even if the `ttl` is lowered meanwhile.
    pub ttl_ms: u64,
}

impl FailsafePing {
    /// Until when (monotonic ms) this member must not race: `ttl` after it accepted, the
    /// larger of the `ttl` then and `ttl_ms` now.
    pub fn hold_until_ms(&self, ttl_ms: u64) -> u64 {
        self.received_ms.saturating_add(self.ttl_ms.max(ttl_ms))
    }
}

impl Memory {
    /// A round of `POST /failsafe` sent at `sent_ms` ended: `all_accepted` when every other
    /// member of the `failsafe` key accepted. Extends the write deadline to
    /// `write_deadline_ms(sent_ms, ttl_ms)` only when all accepted and the round was sent
    /// while the current deadline still lay ahead; otherwise records a refused round.
    pub fn failsafe_round_done(&mut self, sent_ms: u64, ttl_ms: u64, all_accepted: bool) {
        let in_time = self.write_deadline_ms.is_some_and(|d| sent_ms < d);
        let round = if all_accepted && in_time {
            let d = write_deadline_ms(sent_ms, ttl_ms);
            let until = self.write_deadline_ms.map_or(d, |old| old.max(d));
            self.write_deadline_ms = Some(until);
            FailsafeRound {
                sent_ms,
                accepted: true,
                until_ms: until,
            }
        } else {
            FailsafeRound {
                sent_ms,
                accepted: false,
                until_ms: sent_ms,
            }
        };
        self.failsafe_round = Some(round);
    }

    /// This member accepted `leader`'s `POST /failsafe` at `received_ms`, with `ttl_ms` in
    /// force.
    pub fn failsafe_ping_accepted(&mut self, leader: String, received_ms: u64, ttl_ms: u64) {
        if self
            .failsafe_ping
            .as_ref()
            .is_none_or(|p| p.received_ms <= received_ms)
        {
            self.failsafe_ping = Some(FailsafePing {
                leader,
                received_ms,
                ttl_ms,
            });
        }
    }

    /// The supervisor started at `now_ms`: it may have forgotten a ping it accepted.
    pub fn supervisor_started(&mut self, now_ms: u64) {
        self.started_ms = Some(now_ms);
    }
}

impl World {
    /// The last failsafe round was accepted by every member and the deadline it earned lies
    /// ahead: the leader may stay writable (and the guard be armed) without the DCS.
    pub fn failsafe_covers(&self) -> bool {
        self.settings.failsafe_mode
            && self
                .memory
                .failsafe_round
                .is_some_and(|r| r.accepted && self.now_ms < r.until_ms)
            && self.lease_valid()
    }
}

/// A primary that could not renew its lease (or read the DCS): it keeps leading when the last
/// failsafe round covers it; `None` otherwise (the caller demotes).
pub(super) fn leading_without_dcs(w: &World) -> Option<Decision> {
    // Another node holding the key, when the DCS could be read, ends it at once.
    if !w.pg.is_primary() || !w.failsafe_covers() || w.other_leader().is_some() {
        return None;
    }
    let left = w
        .memory
        .write_deadline_ms
        .unwrap_or(0)
        .saturating_sub(w.now_ms);
    Some(Decision::new(
        format!(
            "DCS is not accessible; failsafe mode: every member accepted the last POST /failsafe, still the leader for {left} ms more"
        ),
        vec![Action::KeepLeading],
    ))
}

/// Why a failsafe-mode leader demotes without the DCS (the last round, if any, was refused).
pub(super) fn refused_reason(w: &World) -> Option<&'static str> {
    if !w.settings.failsafe_mode {
        return None;
    }
    Some(match w.memory.failsafe_round {
        Some(r) if !r.accepted => {
            "DCS is not accessible and not every member in the failsafe key accepted POST /failsafe: demoting to read-only"
        }
        _ => {
            "DCS is not accessible and failsafe mode cannot keep this leader (no accepted round of POST /failsafe): demoting to read-only"
        }
    })
}

/// A primary that sees the leader key free after an outage it led through in failsafe mode
/// takes the key again, without restarting PostgreSQL, while its failsafe deadline lies ahead.
pub(super) fn retake(w: &World) -> Option<Decision> {
    let c = w.cluster.as_ref()?;
    if !w.pg.is_primary() || c.leader.is_some() || !w.failsafe_covers() {
        return None;
    }
    Some(Decision::new(
        "the leader key expired while the DCS was away and failsafe mode kept me the leader: taking it again",
        vec![Action::AcquireLeader {
            reason: AcquireReason::FailsafeRetake,
        }],
    ))
}

/// Whether this node must stay out of a race for the free leader key because of failsafe
/// mode: it is missing from a non-empty `failsafe` key, it accepted a leader's
/// `POST /failsafe` less than `ttl` ago, or it started less than `ttl` ago (and may have
/// forgotten such a ping). `None`: failsafe mode does not hold it back.
pub(super) fn holds_race(w: &World) -> Option<Decision> {
    if !w.settings.failsafe_mode {
        return None;
    }
    let ttl = w.settings.ttl_ms;
    if let Some(p) = &w.memory.failsafe_ping
        && w.now_ms < p.hold_until_ms(ttl)
    {
        return Some(Decision::new(
            format!(
                "no leader key, but {} is the leader in failsafe mode (its POST /failsafe reached me {} ms ago): not racing",
                p.leader,
                w.now_ms - p.received_ms
            ),
            vec![],
        ));
    }
    let topology = w
        .cluster
        .as_ref()
        .and_then(|c| c.failsafe.as_ref())
        .filter(|f| !f.is_empty())?;
    if !topology.contains_key(&w.me) {
        return Some(Decision::new(
            "no leader key, but failsafe mode is on and I am not in the failsafe key: not racing",
            vec![],
        ));
    }
    if let Some(s) = w.memory.started_ms
        && w.now_ms < s.saturating_add(ttl)
    {
        return Some(Decision::new(
            format!(
                "no leader key, but failsafe mode is on and I started {} ms ago (a leader may still be counting on a POST /failsafe I accepted): not racing for ttl",
                w.now_ms - s
            ),
            vec![],
        ));
    }
    None
}
