//! One run's timeline: per node, when it took writes, answered, held the leader key, changed
//! role or was fenced by its guard, with the election record and the phases of the decision,
//! all in milliseconds relative to the fault (and the fault's wall-clock time).
//!
//! [`build`] is pure: it turns what the run recorded (the split-brain monitor's probe rounds,
//! the watcher's samples and fences, the first acknowledged write after the fault, the
//! election record) into a [`Timeline`]. Invariants: a node's segments are in time order,
//! do not overlap and cover the run from the first observation on; every change the records
//! show is one [`Event`] (nothing that did not change is an event); `Instant`s stay in
//! here, the serialized timeline holds only offsets and wall-clock strings.

use super::fault::Injected;
use super::measure::Round;
use super::ops::Lab;
use super::spec::node_name;
use super::watch::{self, Sample, Watched};
use crate::dcs::ElectionRecord;
use serde::Serialize;
use std::time::{Duration, Instant};

/// What a node was doing in a stretch of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum NodeState {
    /// Its PostgreSQL accepted the monitor's probe write.
    Writable,
    /// It answered but refused the probe write (a replica, a demoted primary).
    ReadOnly,
    /// Its REST API did not answer, or its PostgreSQL was not running.
    Down,
    /// Its fencing guard stopped its PostgreSQL (until it runs again as a replica).
    Fenced,
}

impl NodeState {
    pub(crate) fn word(self) -> &'static str {
        match self {
            NodeState::Writable => "writable",
            NodeState::ReadOnly => "read-only",
            NodeState::Down => "down",
            NodeState::Fenced => "fenced",
        }
    }
}

/// A stretch of one state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Segment {
    pub(crate) from_ms: f64,
    pub(crate) to_ms: f64,
    pub(crate) state: NodeState,
}

/// A stretch in which the node held the leader key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct KeyHeld {
    pub(crate) from_ms: f64,
    pub(crate) to_ms: f64,
}

/// One node's lane.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Lane {
    pub(crate) node: String,
    pub(crate) segments: Vec<Segment>,
    pub(crate) leader_key: Vec<KeyHeld>,
}

/// Something that happened, on a node (or the cluster: `node` is `None`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Event {
    pub(crate) at_ms: f64,
    pub(crate) node: Option<String>,
    /// `fault`, `writes-stopped`, `writes-accepted`, `down`, `up`, `role`, `state`,
    /// `leader-key`, `fenced`.
    pub(crate) kind: &'static str,
    pub(crate) text: String,
}

/// The phases of the decision, each an offset from the fault (absent: not seen).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Phases {
    /// A node first read the cluster without a leader (or the operator's request appeared).
    pub(crate) detected_ms: Option<f64>,
    /// The winner's loop ranked the candidates and chose it.
    pub(crate) candidate_chosen_ms: Option<f64>,
    /// The winner took the free leader key, or the leader handed it over.
    pub(crate) key_taken_ms: Option<f64>,
    /// The winner's PostgreSQL was promoted.
    pub(crate) promoted_ms: Option<f64>,
    /// Where `promoted_ms` comes from: `election record`, or `status document` (the first
    /// sample in which the winner's role was primary, when the record has no promotion time).
    pub(crate) promoted_from: Option<&'static str>,
    /// The first write a node other than the old leader acknowledged.
    pub(crate) first_write_ms: Option<f64>,
    pub(crate) first_write_node: Option<String>,
}

/// The fault that opened the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct FaultMark {
    pub(crate) name: String,
    pub(crate) what: String,
    pub(crate) target: Option<String>,
    /// Wall-clock time of the fault, RFC 3339: offset 0 of every `_ms` value.
    pub(crate) wall: String,
    /// When the fault was over (a freeze's end, the switchover's answer).
    pub(crate) ended_ms: f64,
}

/// One run's timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Timeline {
    pub(crate) fault: FaultMark,
    /// The span observed.
    pub(crate) from_ms: f64,
    pub(crate) to_ms: f64,
    pub(crate) nodes: Vec<Lane>,
    pub(crate) events: Vec<Event>,
    pub(crate) phases: Phases,
    pub(crate) probe_rounds: usize,
    /// Probe rounds after the fault in which more than one node accepted a write.
    pub(crate) split_brain_rounds: usize,
    /// The last election record (`GET /elections/last`) if it was decided after the fault.
    pub(crate) election: Option<ElectionRecord>,
}

/// What a run recorded, for [`build`].
pub(crate) struct Recorded<'a> {
    pub(crate) nodes: Vec<String>,
    pub(crate) fault: FaultMark,
    pub(crate) at: Instant,
    pub(crate) ended: Instant,
    pub(crate) rounds: &'a [Round],
    pub(crate) watched: &'a Watched,
    /// The first write acknowledged after the fault by another node than the old leader.
    pub(crate) first_write: Option<(Instant, usize)>,
    pub(crate) election: Option<ElectionRecord>,
}

/// Milliseconds from `t0` to `t` (negative before it), to 0.1 ms.
fn off(t0: Instant, t: Instant) -> f64 {
    let ms = if t >= t0 {
        t.duration_since(t0).as_secs_f64() * 1000.0
    } else {
        -(t0.duration_since(t).as_secs_f64() * 1000.0)
    };
    (ms * 10.0).round() / 10.0
}

/// The offset of an RFC 3339 time from the fault's wall-clock time.
fn wall_off(fault_wall: &str, t: Option<&String>) -> Option<f64> {
    let us = |s: &str| {
        let ts = crate::time::parse_timestamp(s).ok()?;
        Some(ts.unix as f64 * 1e6 + f64::from(ts.micros))
    };
    let d = (us(t?)? - us(fault_wall)?) / 1000.0;
    Some((d * 10.0).round() / 10.0)
}

fn is_primary(role: Option<&str>) -> bool {
    matches!(role, Some("primary" | "master" | "standby_leader"))
}

/// The state of node `i` at `t`, from the latest round and sample at or before it.
fn state_at(i: usize, t: Instant, rounds: &[Round], w: &Watched) -> Option<NodeState> {
    // Before the first probe round, whether the node took writes is unknown.
    let round = rounds.iter().rev().find(|r| r.at <= t)?;
    let sample = w.samples.iter().rev().find(|s| s.at <= t);
    let writable = |r: &Round| r.writable.get(i).copied().unwrap_or(false);
    let fenced = w
        .fences
        .iter()
        .filter(|(n, f)| *n == i && *f <= t)
        .map(|f| f.1)
        .max();
    if let Some(f) = fenced {
        // Fenced until the node runs as a replica again or takes writes.
        let cleared = w
            .samples
            .iter()
            .filter(|s| s.at > f && s.at <= t)
            .any(|s| s.nodes[i].running() && !is_primary(s.nodes[i].role.as_deref()))
            || rounds.iter().any(|r| r.at > f && r.at <= t && writable(r));
        if !cleared {
            return Some(NodeState::Fenced);
        }
    }
    if writable(round) {
        return Some(NodeState::Writable);
    }
    // Not writable: down or read-only, which only a sample tells.
    if sample?.nodes[i].running() {
        Some(NodeState::ReadOnly)
    } else {
        Some(NodeState::Down)
    }
}

fn lane(i: usize, name: &str, r: &Recorded, times: &[Instant]) -> Lane {
    let t0 = r.at;
    let mut segments: Vec<Segment> = Vec::new();
    for (k, &t) in times.iter().enumerate() {
        let Some(state) = state_at(i, t, r.rounds, r.watched) else {
            continue;
        };
        let end = off(t0, times.get(k + 1).copied().unwrap_or(t));
        match segments.last_mut() {
            Some(s) if s.state == state => s.to_ms = end,
            _ => segments.push(Segment {
                from_ms: off(t0, t),
                to_ms: end,
                state,
            }),
        }
    }
    // A sample in which no node answered says nothing: the holder seen before it stays.
    let known = known_holders(&r.watched.samples);
    let mut leader_key: Vec<KeyHeld> = Vec::new();
    for (k, (at, holder)) in known.iter().enumerate() {
        if *holder != Some(name) {
            continue;
        }
        let end = off(t0, known.get(k + 1).map_or(*at, |n| n.0));
        match leader_key.last_mut() {
            Some(h) if k > 0 && known[k - 1].1 == *holder => h.to_ms = end,
            _ => leader_key.push(KeyHeld {
                from_ms: off(t0, *at),
                to_ms: end,
            }),
        }
    }
    Lane {
        node: name.to_string(),
        segments,
        leader_key,
    }
}

/// Every change the samples show, as events.
fn sample_events(r: &Recorded, out: &mut Vec<Event>) {
    let t0 = r.at;
    for w in r.watched.samples.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        for (i, name) in r.nodes.iter().enumerate() {
            let (x, y) = (&a.nodes[i], &b.nodes[i]);
            let ev = |kind, text: String| Event {
                at_ms: off(t0, b.at),
                node: Some(name.clone()),
                kind,
                text,
            };
            match (x.answered, y.answered) {
                (true, false) => out.push(ev("down", "its REST API stopped answering".into())),
                (false, true) => out.push(ev(
                    "up",
                    format!(
                        "its REST API answers again ({})",
                        y.role.as_deref().unwrap_or("no role")
                    ),
                )),
                (true, true) if x.role != y.role => out.push(ev(
                    "role",
                    format!(
                        "role {} → {}",
                        x.role.as_deref().unwrap_or("none"),
                        y.role.as_deref().unwrap_or("none")
                    ),
                )),
                (true, true) if x.state != y.state => out.push(ev(
                    "state",
                    format!(
                        "PostgreSQL {} → {}",
                        x.state.as_deref().unwrap_or("unknown"),
                        y.state.as_deref().unwrap_or("unknown")
                    ),
                )),
                _ => {}
            }
        }
    }
    // The key holder as etcd had it; a sample no node answered says nothing.
    let known = known_holders(&r.watched.samples);
    for w in known.windows(2) {
        let ((_, x), (at, y)) = (w[0], w[1]);
        if x == y {
            continue;
        }
        out.push(Event {
            at_ms: off(t0, at),
            node: y.or(x).map(str::to_string),
            kind: "leader-key",
            text: match (x, y) {
                (_, Some(n)) => format!("{n} holds the leader key"),
                (Some(o), None) => format!("no node holds the leader key ({o} did)"),
                (None, None) => "no node holds the leader key".into(),
            },
        });
    }
}

/// The leader key's holder in each sample in which a node answered.
fn known_holders(samples: &[Sample]) -> Vec<(Instant, Option<&str>)> {
    samples
        .iter()
        .filter_map(|s| Some((s.at, s.leader_key.as_ref()?.as_deref())))
        .collect()
}

/// The timeline of what `r` recorded.
pub(crate) fn build(r: Recorded) -> Timeline {
    let t0 = r.at;
    let w = r.watched;
    let mut times: Vec<Instant> = r
        .rounds
        .iter()
        .map(|x| x.at)
        .chain(w.samples.iter().map(|s| s.at))
        .chain(w.fences.iter().map(|f| f.1))
        .collect();
    times.sort();
    times.dedup();
    let nodes: Vec<Lane> = (0..r.nodes.len())
        .map(|i| lane(i, &r.nodes[i], &r, &times))
        .collect();
    let mut events = vec![Event {
        at_ms: 0.0,
        node: r.fault.target.clone(),
        kind: "fault",
        text: r.fault.what.clone(),
    }];
    for pair in r.rounds.windows(2) {
        for (i, (a, b)) in pair[0].writable.iter().zip(&pair[1].writable).enumerate() {
            if a != b {
                events.push(Event {
                    at_ms: off(t0, pair[1].at),
                    node: Some(r.nodes[i].clone()),
                    kind: if *b {
                        "writes-accepted"
                    } else {
                        "writes-stopped"
                    },
                    text: if *b {
                        "accepts writes".into()
                    } else {
                        "stops accepting writes".into()
                    },
                });
            }
        }
    }
    sample_events(&r, &mut events);
    for (i, f) in &w.fences {
        events.push(Event {
            at_ms: off(t0, *f),
            node: Some(r.nodes[*i].clone()),
            kind: "fenced",
            text: "its guard stopped PostgreSQL: the lease deadline passed without renewal".into(),
        });
    }
    events.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
    let phases = phases(&r);
    let after: Vec<&Round> = r.rounds.iter().filter(|x| x.at >= t0).collect();
    Timeline {
        from_ms: times.first().map_or(0.0, |t| off(t0, *t).min(0.0)),
        to_ms: times.last().map_or(0.0, |t| off(t0, *t).max(0.0)),
        fault: FaultMark {
            ended_ms: off(t0, r.ended),
            ..r.fault.clone()
        },
        nodes,
        events,
        phases,
        probe_rounds: r.rounds.len(),
        split_brain_rounds: after
            .iter()
            .filter(|x| x.writable.iter().filter(|w| **w).count() > 1)
            .count(),
        election: r.election.clone(),
    }
}

fn phases(r: &Recorded) -> Phases {
    let wall = r.fault.wall.as_str();
    let mut p = Phases::default();
    if let Some(e) = &r.election {
        let ph = &e.phases;
        p.detected_ms = wall_off(wall, ph.leader_lost.as_ref().or(ph.requested.as_ref()));
        p.candidate_chosen_ms = wall_off(wall, ph.decided.as_ref());
        p.key_taken_ms = wall_off(wall, ph.lock_acquired.as_ref().or(ph.handed_over.as_ref()));
        p.promoted_ms = wall_off(wall, ph.promoted.as_ref());
        if p.promoted_ms.is_some() {
            p.promoted_from = Some("election record");
        }
    }
    let winner = r.first_write.map(|(_, n)| n).or_else(|| {
        let w = &r.election.as_ref()?.election.winner;
        r.nodes.iter().position(|n| n == w)
    });
    if p.promoted_ms.is_none()
        && let Some(n) = winner
        && let Some(s) = r
            .watched
            .samples
            .iter()
            .find(|s| s.at >= r.at && is_primary(s.nodes[n].role.as_deref()))
    {
        p.promoted_ms = Some(off(r.at, s.at));
        p.promoted_from = Some("status document");
    }
    if let Some((t, n)) = r.first_write {
        p.first_write_ms = Some(off(r.at, t));
        p.first_write_node = Some(r.nodes[n].clone());
    }
    p
}

/// The timeline of a run on `lab` in which the fault `name` was injected as `inj`: fetches
/// the election record decided since the fault, then [`build`]s.
pub(crate) async fn record(
    lab: &Lab,
    name: &str,
    inj: &Injected,
    rounds: &[Round],
    watched: &Watched,
    first_write: Option<(Instant, usize)>,
) -> Timeline {
    let since = crate::time::parse_timestamp(&inj.wall)
        .ok()
        .and_then(|t| t.unix_ms())
        .unwrap_or(0);
    let election = watch::last_election(lab, since, Duration::from_secs(2)).await;
    build(Recorded {
        nodes: (0..lab.st.settings.nodes).map(node_name).collect(),
        fault: FaultMark {
            name: name.to_string(),
            what: inj.what.clone(),
            target: inj.target.map(node_name),
            wall: inj.wall.clone(),
            ended_ms: 0.0,
        },
        at: inj.at,
        ended: inj.ended,
        rounds,
        watched,
        first_write,
        election,
    })
}

/// A command's name from its `Debug` form: `KillLeader { node: None }` → `kill-leader`.
pub(crate) fn command_name(cmd: &impl std::fmt::Debug) -> String {
    let text = format!("{cmd:?}");
    let ident = text
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default();
    let mut out = String::new();
    for (i, c) in ident.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('-');
        }
        out.extend(c.to_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::watch::NodeSample;
    use super::*;

    fn node(role: &str) -> NodeSample {
        NodeSample {
            answered: true,
            role: Some(role.into()),
            state: Some("running".into()),
        }
    }

    fn silent() -> NodeSample {
        NodeSample {
            answered: false,
            role: None,
            state: None,
        }
    }

    #[test]
    fn a_crash_and_a_failover_become_lanes_events_and_phases() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let at = |ms: i64| {
            if ms >= 0 {
                t0 + Duration::from_millis(ms as u64)
            } else {
                t0 - Duration::from_millis((-ms) as u64)
            }
        };
        let rounds: Vec<Round> = [
            (-100, [true, false, false]),
            (0, [true, false, false]),
            (100, [false, false, false]),
            (900, [false, true, false]),
            (1000, [false, true, false]),
        ]
        .iter()
        .map(|(ms, w)| Round {
            at: at(*ms),
            writable: w.to_vec(),
        })
        .collect();
        let key = |n: Option<&str>| Some(n.map(str::to_string));
        let samples = vec![
            Sample {
                at: at(-50),
                nodes: vec![node("primary"), node("replica"), node("replica")],
                leader_key: key(Some("node1")),
            },
            Sample {
                at: at(150),
                nodes: vec![silent(), node("replica"), node("replica")],
                leader_key: key(Some("node1")),
            },
            // No node answered the cluster document: the holder seen before stays.
            Sample {
                at: at(400),
                nodes: vec![silent(), node("replica"), node("replica")],
                leader_key: None,
            },
            Sample {
                at: at(700),
                nodes: vec![silent(), node("replica"), node("replica")],
                leader_key: key(None),
            },
            Sample {
                at: at(850),
                nodes: vec![silent(), node("primary"), node("replica")],
                leader_key: key(Some("node2")),
            },
        ];
        let watched = Watched {
            samples,
            fences: vec![],
        };
        let wall = "2026-05-01T08:00:00.000000+00:00".to_string();
        let election: ElectionRecord = serde_json::from_value(serde_json::json!({
            "id": "0000001777622400",
            "recorded_by": "node2",
            "phases": {
                "leader_lost": "2026-05-01T08:00:00.600000+00:00",
                "decided": "2026-05-01T08:00:00.650000+00:00",
                "lock_acquired": "2026-05-01T08:00:00.700000+00:00",
                "promoted": "2026-05-01T08:00:00.820000+00:00"
            },
            "winner": "node2", "chosen": "failover", "policy": "builtin-default",
            "ranked": [{"member": "node2", "rank": 1, "reason": "least lag"}],
            "excluded": [], "veto": null,
            "view": {"members": [], "former_leader": "node1", "reason": "leader-lost",
                "leader_optime": null, "maximum_lag_on_failover": 1048576,
                "cluster_timeline": 1, "check_timeline": false, "now_ms": 0}
        }))
        .expect("an election record");
        let t = build(Recorded {
            nodes: vec!["node1".into(), "node2".into(), "node3".into()],
            fault: FaultMark {
                name: "kill-leader".into(),
                what: "SIGKILL to node1's <group>".into(),
                target: Some("node1".into()),
                wall,
                ended_ms: 0.0,
            },
            at: t0,
            ended: t0,
            rounds: &rounds,
            watched: &watched,
            first_write: Some((at(910), 1)),
            election: Some(election),
        });
        let states = |i: usize| {
            t.nodes[i]
                .segments
                .iter()
                .map(|s| (s.from_ms, s.state))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            states(0),
            vec![
                (-100.0, NodeState::Writable),
                (100.0, NodeState::ReadOnly),
                (150.0, NodeState::Down)
            ]
        );
        // Before the first sample, a node that refused the probe write is neither read-only
        // nor down yet: its lane starts with the sample.
        assert_eq!(
            states(1),
            vec![(-50.0, NodeState::ReadOnly), (900.0, NodeState::Writable)]
        );
        assert_eq!(t.nodes[0].segments.last().map(|s| s.to_ms), Some(1000.0));
        assert_eq!(
            t.nodes[0].leader_key,
            vec![KeyHeld {
                from_ms: -50.0,
                to_ms: 700.0
            }]
        );
        assert_eq!(t.nodes[1].leader_key[0].from_ms, 850.0);
        let kinds: Vec<(&str, Option<&str>)> = t
            .events
            .iter()
            .map(|e| (e.kind, e.node.as_deref()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("fault", Some("node1")),
                ("writes-stopped", Some("node1")),
                ("down", Some("node1")),
                ("leader-key", Some("node1")),
                ("role", Some("node2")),
                ("leader-key", Some("node2")),
                ("writes-accepted", Some("node2")),
            ]
        );
        assert_eq!(t.events[4].text, "role replica → primary");
        assert_eq!(t.phases.detected_ms, Some(600.0));
        assert_eq!(t.phases.candidate_chosen_ms, Some(650.0));
        assert_eq!(t.phases.key_taken_ms, Some(700.0));
        assert_eq!(t.phases.promoted_ms, Some(820.0));
        assert_eq!(t.phases.promoted_from, Some("election record"));
        assert_eq!(t.phases.first_write_ms, Some(910.0));
        assert_eq!((t.from_ms, t.to_ms), (-100.0, 1000.0));
        assert_eq!((t.probe_rounds, t.split_brain_rounds), (5, 0));
        let v = serde_json::to_value(&t).expect("json");
        assert_eq!(v["nodes"][0]["segments"][0]["state"], "writable");
        assert_eq!(v["election"]["ranked"][0]["reason"], "least lag");
        assert_eq!(v["phases"]["first_write_node"], "node2");
    }

    #[test]
    fn command_names_are_kebab_case() {
        #[derive(Debug)]
        #[allow(dead_code)]
        enum Cmd {
            KillLeader { _node: Option<String> },
            FreezeEtcd(f64),
            Switchover,
        }
        assert_eq!(
            command_name(&Cmd::KillLeader { _node: None }),
            "kill-leader"
        );
        assert_eq!(command_name(&Cmd::FreezeEtcd(1.0)), "freeze-etcd");
        assert_eq!(command_name(&Cmd::Switchover), "switchover");
    }

    #[test]
    fn a_fenced_node_stays_fenced_until_it_runs_as_a_replica() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let rounds = vec![
            Round {
                at: at(0),
                writable: vec![true, false],
            },
            Round {
                at: at(300),
                writable: vec![false, true],
            },
        ];
        let watched = Watched {
            samples: vec![
                Sample {
                    at: at(10),
                    nodes: vec![node("primary"), node("replica")],
                    leader_key: None,
                },
                Sample {
                    at: at(400),
                    nodes: vec![node("primary"), node("primary")],
                    leader_key: None,
                },
                Sample {
                    at: at(600),
                    nodes: vec![node("replica"), node("primary")],
                    leader_key: None,
                },
            ],
            fences: vec![(0, at(200))],
        };
        let t = build(Recorded {
            nodes: vec!["node1".into(), "node2".into()],
            fault: FaultMark {
                name: "freeze-leader".into(),
                what: "SIGSTOP".into(),
                target: Some("node1".into()),
                wall: "2026-05-01T08:00:00+00:00".into(),
                ended_ms: 0.0,
            },
            at: t0,
            ended: at(500),
            rounds: &rounds,
            watched: &watched,
            first_write: None,
            election: None,
        });
        let s: Vec<(f64, f64, NodeState)> = t.nodes[0]
            .segments
            .iter()
            .map(|s| (s.from_ms, s.to_ms, s.state))
            .collect();
        assert_eq!(
            s,
            vec![
                (0.0, 200.0, NodeState::Writable),
                (200.0, 600.0, NodeState::Fenced),
                (600.0, 600.0, NodeState::ReadOnly),
            ]
        );
        assert!(t.events.iter().any(|e| e.kind == "fenced"));
        assert_eq!(t.fault.ended_ms, 500.0);
        // No election record: node2's promotion comes from its status document? Only with a
        // winner: none here.
        assert_eq!(t.phases.promoted_ms, None);
    }
}
