//! Recording elections: the decision that takes or hands over the leader key carries an
//! [`Election`]; once its action succeeds, this node stores it in the DCS with the times of its
//! phases ([`ElectionRecord`]). The winner of a failover writes it once its PostgreSQL is
//! promoted; a leader that hands over writes it once the key has moved. The write runs on a
//! task of its own, so that it never delays a promotion; one that fails is logged: a record
//! explains, it decides nothing.
//!
//! May touch: the DCS (the records' folder).

use super::Supervisor;
use crate::dcs::{ElectionRecord, Phases};
use crate::fence::mono_ms;
use crate::ha::{Election, World};
use crate::time::{Timestamp, now};

/// The wall-clock time (RFC 3339) of the monotonic instant `at_ms` ([`mono_ms`]).
fn wall_at(at_ms: u64) -> String {
    let (wall, mono) = (now(), mono_ms());
    let back = mono.saturating_sub(at_ms);
    let micros =
        i128::from(wall.unix) * 1_000_000 + i128::from(wall.micros) - i128::from(back) * 1000;
    Timestamp {
        unix: i64::try_from(micros.div_euclid(1_000_000)).unwrap_or(0),
        micros: u32::try_from(micros.rem_euclid(1_000_000)).unwrap_or(0),
    }
    .to_rfc3339()
}

fn unix_ms() -> u64 {
    now().unix_ms().unwrap_or(0)
}

impl Supervisor {
    /// The record of `e`, decided in the loop of `w`, with the phases known before acting.
    fn new_record(&self, e: Election, w: &World) -> ElectionRecord {
        let phases = Phases {
            leader_lost: w.memory.unlocked_since_ms.map(wall_at),
            requested: w.memory.request_since_ms().map(wall_at),
            decided: Some(wall_at(w.now_ms)),
            ..Phases::default()
        };
        ElectionRecord {
            id: ElectionRecord::id_at(unix_ms()),
            recorded_by: self.cfg.name.clone(),
            phases,
            election: e,
        }
    }

    /// Write `record` on a task of its own.
    fn store_election(&self, record: ElectionRecord) {
        let dcs = self.dcs.clone();
        tokio::spawn(async move {
            match dcs.record_election(&record).await {
                Ok(()) => {
                    tracing::debug!(id = %record.id, winner = %record.election.winner, "recorded the election")
                }
                Err(e) => tracing::warn!(error = %e, "could not record the election in the DCS"),
            }
        });
    }

    /// This node took the free leader key in the election `e`: the promotion completes and
    /// stores the record.
    pub(super) fn election_won(&mut self, e: Option<Election>, w: &World) {
        self.won = e.map(|e| {
            let mut record = self.new_record(e, w);
            record.phases.lock_acquired = Some(now().to_rfc3339());
            record
        });
    }

    /// PostgreSQL was promoted: store the record of the election this node won.
    pub(super) fn election_promoted(&mut self) {
        if let Some(mut record) = self.won.take() {
            record.phases.promoted = Some(now().to_rfc3339());
            self.store_election(record);
        }
    }

    /// This leader moved the key to the winner of `e`: store the record.
    pub(super) fn election_handed_over(&mut self, e: Option<Election>, w: &World) {
        let Some(e) = e else { return };
        let mut record = self.new_record(e, w);
        record.phases.leader_lost = None;
        record.phases.handed_over = Some(now().to_rfc3339());
        self.store_election(record);
    }
}
