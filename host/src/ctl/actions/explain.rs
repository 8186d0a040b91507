//! `explain`: why the last election (or an earlier one) chose its winner, from the election
//! records the winner or the handing-over leader stored in etcd (`regent/elections/`). It
//! prints the ranking as a person reads it, `-f json`/`yaml` the record itself, and `--view`
//! the view the policy saw, as JSON that `regent policy eval --view` takes.

use super::Session;
use crate::ctl::store::Store;
use crate::ctl::{CtlError, Format, view};
use crate::dcs::ElectionRecord;
use crate::ha::Chosen;
use crate::time::parse_timestamp;

/// Which record: the newest, the `n`th newest (1 = the newest), or the one with this id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Which {
    Last,
    Nth(usize),
    Id(String),
}

impl Which {
    /// `N` (a small number: the Nth newest) or an id (`GET /elections` lists them).
    pub(crate) fn parse(s: &str) -> Result<Which, CtlError> {
        match s.parse::<usize>() {
            Ok(0) => Err(CtlError::Usage(
                "explain 0: elections count from 1 (the last one)".into(),
            )),
            Ok(n) if s.len() < 16 => Ok(Which::Nth(n)),
            Ok(_) => Ok(Which::Id(s.to_string())),
            Err(_) => Err(CtlError::Usage(format!(
                "explain {s}: expected N (1 = the last election, 2 = the one before) or a record id"
            ))),
        }
    }
}

/// The time of day of an RFC 3339 timestamp (`2026-12-05T10:00:01.234567Z` → `10:00:01.234`).
fn clock(t: &str) -> &str {
    let time = t.split_once('T').map_or(t, |(_, time)| time);
    time.get(..12).unwrap_or(time)
}

/// Seconds from `from` to `to`, both RFC 3339, as `+0.25 s`.
fn after(from: &str, to: &str) -> Option<String> {
    let ms = |t: &str| parse_timestamp(t).ok()?.unix_ms();
    let d = (ms(to)? as f64 - ms(from)? as f64) / 1000.0;
    Some(format!("{d:+.2} s"))
}

fn ordinal(n: usize) -> String {
    match n {
        1 => "first".into(),
        2 => "second".into(),
        3 => "third".into(),
        n => format!("#{n}"),
    }
}

/// A record as a person reads it.
pub(crate) fn render(r: &ElectionRecord) -> String {
    let e = &r.election;
    let p = &r.phases;
    let mut out = String::new();
    let how = match e.chosen {
        Chosen::Failover => "failover",
        Chosen::RequestedFailover => "failover requested by an operator",
        Chosen::HandOver => "hand-over",
        Chosen::RequestedSwitchover => "switchover requested by an operator",
    };
    let when = p
        .promoted
        .as_deref()
        .map(|t| format!("promoted at {t}"))
        .or_else(|| {
            p.handed_over
                .as_deref()
                .map(|t| format!("handed the leader key at {t}"))
        })
        .or_else(|| {
            p.lock_acquired
                .as_deref()
                .map(|t| format!("took the leader key at {t} (promotion not recorded)"))
        })
        .unwrap_or_else(|| "chosen".into());
    out.push_str(&format!("election {} ({how}): {} {when}\n", r.id, e.winner));
    let former = match (&e.view.former_leader, &e.view.former_leader_zone) {
        (Some(f), Some(z)) => format!("{f} (zone {z})"),
        (Some(f), None) => format!("{f} (zone unknown)"),
        (None, _) => "none known".into(),
    };
    out.push_str(&format!(
        "  former leader {former}; recorded by {}; policies {}\n",
        r.recorded_by, e.policy
    ));
    let start = p
        .leader_lost
        .as_deref()
        .or(p.requested.as_deref())
        .or(p.decided.as_deref());
    if let Some(start) = start {
        let mut steps = vec![];
        for (name, t) in [
            ("leader lost", &p.leader_lost),
            ("requested", &p.requested),
            ("decided", &p.decided),
            ("lock acquired", &p.lock_acquired),
            ("handed over", &p.handed_over),
            ("promoted", &p.promoted),
        ] {
            if let Some(t) = t {
                if t == start {
                    steps.push(format!("{name} {}", clock(t)));
                } else {
                    steps.push(format!(
                        "{name} {}",
                        after(start, t).unwrap_or_else(|| t.clone())
                    ));
                }
            }
        }
        out.push_str(&format!("  phases: {}\n", steps.join(", ")));
    }
    if let Some(v) = &e.veto {
        out.push_str(&format!("  the policy vetoed: {v}\n"));
    }
    for place in &e.ranked {
        out.push_str(&format!(
            "  ranked {} {}: {}\n",
            place.member,
            ordinal(place.rank),
            place.reason
        ));
    }
    if e.ranked.is_empty() && e.veto.is_none() {
        out.push_str("  no member was ranked\n");
    }
    for x in &e.excluded {
        out.push_str(&format!("  {} excluded: {}\n", x.member, x.reason));
    }
    out
}

impl<S: Store> Session<'_, S> {
    pub(crate) async fn explain(&mut self, which: Which, view_only: bool) -> Result<(), CtlError> {
        let records = self.store.elections().await?;
        let none = || {
            CtlError::Failed(format!(
                "no election has been recorded in cluster {} yet: Regent records each failover and hand-over once it happens (the records are under regent/elections/ in etcd)",
                self.scope
            ))
        };
        let record = match &which {
            Which::Last => records.first().ok_or_else(none)?,
            Which::Nth(n) => records.get(n - 1).ok_or_else(|| {
                if records.is_empty() {
                    none()
                } else {
                    CtlError::Usage(format!(
                        "explain {n}: only {} election(s) are recorded (the last {} are kept)",
                        records.len(),
                        crate::dcs::ELECTIONS_KEPT
                    ))
                }
            })?,
            Which::Id(id) => records.iter().find(|r| &r.id == id).ok_or_else(|| {
                CtlError::Usage(format!(
                    "explain {id}: no such record; the ids kept are {}",
                    records
                        .iter()
                        .map(|r| r.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?,
        };
        let text = if view_only {
            let v = serde_json::to_string_pretty(&record.election.view)
                .map_err(|e| CtlError::Failed(format!("cannot encode the view: {e}")))?;
            format!("{v}\n")
        } else if self.format == Format::Json || self.format == Format::Yaml {
            let v = serde_json::to_value(record)
                .map_err(|e| CtlError::Failed(format!("cannot encode the record: {e}")))?;
            view::machine(&v, self.format)
        } else {
            render(record)
        };
        self.write(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dcs::Phases;
    use crate::ha::Election;
    use crate::ha::policy::{ElectionReason, ElectionView, Ranked, Ranking};

    fn record() -> ElectionRecord {
        let view = ElectionView {
            members: vec![],
            former_leader: Some("node1".into()),
            former_leader_zone: Some("a".into()),
            reason: ElectionReason::LeaderLost,
            leader_optime: None,
            maximum_lag_on_failover: 1 << 20,
            cluster_timeline: 1,
            check_timeline: false,
            sync_members: None,
            now_ms: 0,
        };
        let ranking = Ranking::Candidates(vec![
            Ranked {
                name: "node3".into(),
                reason: "in the former leader's zone a".into(),
            },
            Ranked {
                name: "node2".into(),
                reason: "cross-zone".into(),
            },
        ]);
        ElectionRecord {
            id: ElectionRecord::id_at(1_796_460_913_986),
            recorded_by: "node3".into(),
            phases: Phases {
                leader_lost: Some("2026-12-05T08:55:13.962762+00:00".into()),
                decided: Some("2026-12-05T08:55:13.962776+00:00".into()),
                lock_acquired: Some("2026-12-05T08:55:13.986782+00:00".into()),
                promoted: Some("2026-12-05T08:55:14.122250+00:00".into()),
                ..Phases::default()
            },
            election: Election::new(
                &view,
                "zone-aware@914f1b11".into(),
                &ranking,
                "node3",
                Chosen::Failover,
            ),
        }
    }

    #[test]
    fn a_record_reads_as_sentences() {
        let text = render(&record());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "election 0001796460913986 (failover): node3 promoted at 2026-12-05T08:55:14.122250+00:00",
                "  former leader node1 (zone a); recorded by node3; policies zone-aware@914f1b11",
                "  phases: leader lost 08:55:13.962, decided +0.00 s, lock acquired +0.02 s, promoted +0.16 s",
                "  ranked node3 first: in the former leader's zone a",
                "  ranked node2 second: cross-zone",
            ]
        );
    }

    #[test]
    fn which_election_is_read_from_the_argument() {
        assert_eq!(Which::parse("2").ok(), Some(Which::Nth(2)));
        assert_eq!(
            Which::parse("0001796460913986").ok(),
            Some(Which::Id("0001796460913986".into()))
        );
        assert!(Which::parse("0").is_err());
        assert!(Which::parse("last-one").is_err());
    }

    #[test]
    fn a_record_survives_its_json() {
        let r = record();
        let json = serde_json::to_string(&r).expect("encode");
        let back: ElectionRecord = serde_json::from_str(&json).expect("decode");
        assert_eq!(back, r);
    }
}
