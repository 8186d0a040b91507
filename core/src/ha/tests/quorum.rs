//! A simulation of quorum commit (`synchronous_mode: quorum`) on a five-node cluster: the
//! leader's commits return when the PostgreSQL setting it runs with is satisfied (`ANY n` of
//! the listed standbys connected and flushed), the leader carries out
//! [`quorum::plan`](crate::ha::quorum::plan) (key writes may lose their compare-and-swap),
//! standbys flush at their own pace or stall, nodes crash and return, tags and
//! `synchronous_node_count` change, and every election, requested failover and switchover is
//! decided by [`decide`](crate::ha::decide) on each node's own view.
//!
//! Checked after every event: no promotion ever loses an acknowledged commit, the `sync` key
//! keeps its promise (at most `quorum` of its voting set lack an acknowledged commit), and
//! every decision passes the node invariants. After the events, a healed cluster elects a
//! leader and reaches the target setting and key.

use super::fixtures::*;
use super::generators::{proptest_config, tags_json};
use super::invariants::check_node;
use crate::dcs::{Cluster, Failover, Member, MemberData, SyncState};
use crate::ha::quorum::{self, Barrier, QuorumInputs, QuorumStep};
use crate::ha::sync::{self, Standby, Standbys, SyncInputs, SyncMode, SyncPlan};
use crate::ha::{Action, PeerState, World};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use std::collections::BTreeMap;

const NODES: usize = 5;
/// WAL bytes per commit.
const COMMIT: u64 = 16;

#[derive(Debug, Clone)]
struct Node {
    name: String,
    /// PostgreSQL runs.
    up: bool,
    /// WAL flushed to disk.
    flush: u64,
    /// The WAL receiver is stopped (SIGSTOP): still connected, flushing nothing.
    stalled: bool,
    nosync: bool,
    nofailover: bool,
    /// The REST API answers.
    api: bool,
}

#[derive(Debug, Clone)]
pub(super) enum QEv {
    /// The leader commits this many transactions.
    Write(u8),
    /// A standby flushes up to this many more commits.
    Flush(usize, u8),
    /// Every streaming standby catches up.
    FlushAll,
    /// The leader's loop: `quorum::plan` carried out (the key write may fail).
    Loop {
        cas_fails: bool,
    },
    Crash(usize),
    Restart(usize),
    Stall(usize),
    Resume(usize),
    ToggleNosync(usize),
    ToggleNofailover(usize),
    ToggleApi(usize),
    Wanted(usize),
    Strict(bool),
    MaxLag(Option<u64>),
    /// An operator switches between `synchronous_mode: quorum` and `on`.
    QuorumMode(bool),
    /// Without a leader: every running node decides; one of those racing wins the key.
    Elect(Index),
    /// An operator's switchover (to a member, or to the best candidate).
    Switchover(Option<usize>),
    /// An operator's failover to a member while there is no leader.
    FailoverTo(usize),
}

pub(super) struct QSim {
    nodes: Vec<Node>,
    leader: Option<usize>,
    key: Option<SyncState>,
    rev: i64,
    /// What the leader's PostgreSQL waits for.
    setting: Standbys,
    barrier: Option<Barrier>,
    /// Commits written, waiting for the setting to be satisfied.
    pending: Vec<u64>,
    /// The highest acknowledged commit.
    acked: u64,
    wanted: usize,
    strict: bool,
    max_lag: Option<u64>,
    failover: Option<Failover>,
    /// What the run went through: promotions with commits at stake, lagging voters kept out,
    /// keys with a quorum ([`simulation_reaches_the_cases_that_matter`]).
    tally: BTreeMap<&'static str, usize>,
    /// `synchronous_mode: quorum` (else `on`).
    quorum_mode: bool,
    /// `synchronous_mode: on`'s standbys seen `sync` but not yet published.
    catching_up: BTreeMap<String, u64>,
    pub(super) log: Vec<String>,
}

impl QSim {
    pub(super) fn new(wanted: usize, strict: bool) -> QSim {
        let nodes = (0..NODES)
            .map(|i| Node {
                name: format!("q{i}"),
                up: true,
                flush: 0,
                stalled: false,
                nosync: false,
                nofailover: false,
                api: true,
            })
            .collect();
        QSim {
            nodes,
            leader: Some(0),
            // Quorum mode is active from the start: the bootstrap leader's key names nobody.
            key: Some(SyncState {
                leader: Some("q0".into()),
                quorum: Some(0),
                sync_standby: None,
            }),
            rev: 1,
            setting: quorum::at_start("q0", strict, None),
            barrier: None,
            pending: Vec::new(),
            acked: 0,
            wanted,
            strict,
            max_lag: None,
            failover: None,
            tally: BTreeMap::new(),
            quorum_mode: true,
            catching_up: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    fn fail(&self, what: String) -> TestCaseError {
        TestCaseError::fail(format!("{what}\n{}", self.log.join("\n")))
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Standbys connected to the running leader (every running replica streams from it).
    fn connected(&self, i: usize) -> bool {
        self.leader
            .is_some_and(|l| l != i && self.nodes[l].up && self.nodes[i].up)
    }

    /// Release the commits the setting is satisfied for, as PostgreSQL's walsenders do.
    fn acknowledge(&mut self) {
        let Some(l) = self.leader.filter(|l| self.nodes[*l].up) else {
            return;
        };
        let flushed = |me: &QSim, names: &[String], c: u64| {
            names
                .iter()
                .filter_map(|n| me.index_of(n))
                .filter(|&j| me.connected(j) && me.nodes[j].flush >= c)
                .count()
        };
        let all: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        let mut still = Vec::new();
        for &c in &self.pending {
            let done = match &self.setting {
                Standbys::Nobody => true,
                Standbys::AnyOne => flushed(self, &all, c) >= 1,
                Standbys::All(names) => flushed(self, names, c) >= names.len(),
                Standbys::Any { count, names } => flushed(self, names, c) >= *count,
            };
            if done {
                self.acked = self.acked.max(c);
            } else {
                still.push(c);
            }
        }
        self.pending = still;
        debug_assert!(self.nodes[l].flush >= self.acked);
    }

    /// The key's promise: at most `quorum` of its voting set lack an acknowledged commit.
    fn check_key(&self) -> Result<(), TestCaseError> {
        let Some(k) = &self.key else { return Ok(()) };
        let lacking: Vec<String> = quorum::voting_set(k)
            .into_iter()
            .filter(|n| {
                self.index_of(n)
                    .is_none_or(|i| self.nodes[i].flush < self.acked)
            })
            .collect();
        if lacking.len() > k.quorum.unwrap_or(0) as usize {
            return Err(self.fail(format!(
                "the sync key {k:?} breaks its promise: {lacking:?} lack the acknowledged commit at {}",
                self.acked
            )));
        }
        Ok(())
    }

    fn cluster(&self) -> Cluster {
        let mut c = cluster(
            self.leader
                .map(|l| leader(&self.nodes[l].name, OTHER_LEASE)),
        );
        c.members = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mut tags = tags_json(n.nofailover, 1);
                if n.nosync {
                    tags.insert("nosync".into(), serde_json::Value::Bool(true));
                }
                Member {
                    name: n.name.clone(),
                    data: MemberData {
                        role: Some(
                            if Some(i) == self.leader {
                                "primary"
                            } else {
                                "replica"
                            }
                            .into(),
                        ),
                        state: Some(if n.up { "running" } else { "stopped" }.into()),
                        xlog_location: Some(n.flush),
                        timeline: Some(1),
                        tags,
                        ..MemberData::default()
                    },
                    lease: 99,
                    mod_revision: 1,
                }
            })
            .collect();
        c.sync = self.key.clone().map(|k| (k, self.rev));
        c.failover = self.failover.clone().map(|f| (f, 7));
        c
    }

    /// Node `i`'s world, as its supervisor gathers it this loop.
    fn world(&self, i: usize) -> World {
        let n = &self.nodes[i];
        let mut c = self.cluster();
        let primary = Some(i) == self.leader;
        if primary && let Some(l) = c.leader.as_mut() {
            l.lease = MY_LEASE;
        }
        let mut pg = if primary {
            pg_primary(n.flush)
        } else {
            let mut pg = pg_replica(n.flush, self.leader.map(|l| self.nodes[l].name.as_str()));
            pg.received_lsn = Some(n.flush);
            pg
        };
        if primary {
            pg.streaming = (0..NODES)
                .filter(|&j| self.connected(j))
                .map(|j| self.nodes[j].name.clone())
                .collect();
        }
        c.status.optime = None;
        let mut w = world(&n.name, Some(c), pg);
        w.settings.synchronous_mode = true;
        w.settings.quorum_commit = self.quorum_mode;
        w.settings.nofailover = n.nofailover;
        // Everybody has waited long enough: every candidate the rules allow races.
        w.memory.unlocked_since_ms = Some(NOW - 10 * w.settings.ttl_ms);
        w.peers = (0..NODES)
            .filter(|&j| j != i)
            .map(|j| {
                let p = &self.nodes[j];
                let answer = p.api.then(|| PeerState {
                    role: if Some(j) == self.leader {
                        "primary"
                    } else {
                        "replica"
                    }
                    .into(),
                    state: if p.up { "running" } else { "stopped" }.into(),
                    in_recovery: Some(j) != self.leader,
                    wal_position: p.flush,
                    received_lsn: (Some(j) != self.leader).then_some(p.flush),
                    replayed_lsn: None,
                    timeline: Some(1),
                    nofailover: p.nofailover,
                    failover_priority: 1,
                    tags: BTreeMap::new(),
                    healthy: true,
                });
                (p.name.clone(), answer)
            })
            .collect();
        w
    }

    /// `to` becomes the leader: it must hold every acknowledged commit. WAL the others wrote
    /// past it was never acknowledged and is rewound away.
    fn promote(&mut self, to: usize, how: &str) -> Result<(), TestCaseError> {
        let name = self.nodes[to].name.clone();
        self.log.push(format!(
            "{name} promoted ({how}) at {}, acknowledged {}",
            self.nodes[to].flush, self.acked
        ));
        if self.nodes[to].flush < self.acked {
            return Err(self.fail(format!(
                "{name} was promoted ({how}) at {} and lost the acknowledged commits up to {}",
                self.nodes[to].flush, self.acked
            )));
        }
        let mode = if self.quorum_mode {
            SyncMode::Quorum
        } else {
            SyncMode::On
        };
        if let Some(k) = sync::key_before_promotion(&name, mode, self.key.as_ref()) {
            self.log
                .push(format!("  {name} writes {k:?} before promoting"));
            self.key = Some(k);
            self.rev += 1;
        }
        let top = self.nodes[to].flush;
        for n in &mut self.nodes {
            n.flush = n.flush.min(top);
        }
        self.pending.clear();
        self.leader = Some(to);
        self.setting = sync::at_start(&name, mode, self.strict, self.key.as_ref());
        self.catching_up.clear();
        self.barrier = None;
        self.failover = None;
        if self.acked > 0 {
            *self
                .tally
                .entry("promotions with acknowledged commits")
                .or_default() += 1;
        }
        self.log
            .push(format!("  {name} waits for {:?}", self.setting.setting()));
        Ok(())
    }

    /// The leader's loop: what `supervisor/leader.rs` does with the plan of its mode.
    fn leader_loop(&mut self, cas_fails: bool) -> Result<(), TestCaseError> {
        let Some(l) = self.leader.filter(|l| self.nodes[*l].up) else {
            return Ok(());
        };
        let me = self.nodes[l].name.clone();
        // PostgreSQL reports `sync` for the standbys of a FIRST setting it waits for.
        let first = (0..NODES).find(|&j| self.connected(j));
        let rows: Vec<Standby> = (0..NODES)
            .filter(|&j| self.connected(j))
            .map(|j| Standby {
                name: self.nodes[j].name.clone(),
                streaming: true,
                sync: match &self.setting {
                    Standbys::All(names) => names.contains(&self.nodes[j].name),
                    Standbys::AnyOne => first == Some(j),
                    Standbys::Nobody | Standbys::Any { .. } => false,
                },
                flush_lsn: self.nodes[j].flush,
            })
            .collect();
        let names = |pred: &dyn Fn(&Node) -> bool| -> Vec<String> {
            self.nodes
                .iter()
                .filter(|n| pred(n))
                .map(|n| n.name.clone())
                .collect()
        };
        let eligible = names(&|n| !n.nosync);
        let no_failover = names(&|n| n.nofailover);
        let catching_up = std::mem::take(&mut self.catching_up);
        let inputs = SyncInputs {
            me: &me,
            mode: if self.quorum_mode {
                SyncMode::Quorum
            } else {
                SyncMode::On
            },
            node_count: self.wanted,
            strict: self.strict,
            standbys: &rows,
            eligible: &eligible,
            no_failover: &no_failover,
            max_lag: self.max_lag,
            key: self.key.as_ref(),
            primary_flush: Some(self.nodes[l].flush),
            catching_up: &catching_up,
        };
        let steps = if self.quorum_mode {
            let plan = quorum::plan(&QuorumInputs {
                sync: inputs,
                setting: &self.setting,
                barrier: self.barrier.as_ref(),
            });
            self.barrier = plan.barrier;
            plan.steps
        } else {
            // `synchronous_mode: on`: the key write, or the setting then the key.
            self.barrier = None;
            match sync::plan(&inputs) {
                SyncPlan::Off { .. } => return Err(self.fail("synchronous mode is on".into())),
                SyncPlan::WriteKey(k) => vec![QuorumStep::WriteKey(k)],
                SyncPlan::Apply {
                    standbys,
                    publish,
                    catching_up,
                } => {
                    self.catching_up = catching_up;
                    let mut steps = vec![QuorumStep::Set(standbys)];
                    steps.extend(publish.map(QuorumStep::WriteKey));
                    steps
                }
            }
        };
        self.log.push(format!("  {me} plans {steps:?}"));
        for step in steps {
            match step {
                QuorumStep::WriteKey(_) if cas_fails => {
                    self.log.push("  the key write fails".into());
                    break;
                }
                QuorumStep::WriteKey(k) => {
                    if k.quorum.unwrap_or(0) > 0 {
                        *self.tally.entry("keys written with a quorum").or_default() += 1;
                    }
                    self.key = Some(k);
                    self.rev += 1;
                }
                QuorumStep::Set(s) => self.setting = s,
            }
            self.acknowledge();
            self.check_key()?;
        }
        Ok(())
    }

    /// Every running node decides on its own view; one of those racing (`pick`) wins.
    fn elect(&mut self, pick: &dyn Fn(usize) -> usize) -> Result<(), TestCaseError> {
        if self.leader.is_some() {
            return Ok(());
        }
        let truth = self.cluster();
        let mut racers = Vec::new();
        for i in (0..NODES).filter(|&i| self.nodes[i].up) {
            let w = self.world(i);
            let d = decide_default(&w);
            self.log
                .push(format!("  {}: {:?} ({})", w.me, d.actions, d.summary));
            check_node(&w, &truth, &d).map_err(|e| self.fail(e.to_string()))?;
            if d.actions
                .iter()
                .any(|a| matches!(a, Action::AcquireLeader { .. }))
            {
                racers.push(i);
            } else if self.nodes[i].flush < self.acked
                && self
                    .key
                    .as_ref()
                    .is_some_and(|k| k.members().contains(&w.me))
            {
                // A voter lacking acknowledged commits: `synchronous_mode: on` would let it race.
                *self.tally.entry("lagging voters kept out").or_default() += 1;
            }
        }
        if racers.is_empty() {
            return Ok(());
        }
        let winner = racers[pick(racers.len()) % racers.len()];
        self.promote(winner, "election")
    }

    /// The leader decides on a switchover request; a hand-over moves all its WAL first.
    fn switchover(&mut self, to: Option<usize>) -> Result<(), TestCaseError> {
        let Some(l) = self.leader.filter(|l| self.nodes[*l].up) else {
            return Ok(());
        };
        self.failover = Some(Failover {
            leader: Some(self.nodes[l].name.clone()),
            member: to.map(|t| self.nodes[t].name.clone()),
            scheduled_at: None,
        });
        let w = self.world(l);
        let d = decide_default(&w);
        self.log
            .push(format!("  {}: {:?} ({})", w.me, d.actions, d.summary));
        let truth = w.cluster.clone().unwrap_or_default();
        check_node(&w, &truth, &d).map_err(|e| self.fail(e.to_string()))?;
        self.failover = None;
        let target = d.actions.iter().find_map(|a| match a {
            Action::HandOver { to, .. } => self.index_of(to),
            _ => None,
        });
        if let Some(t) = target.filter(|&t| self.nodes[t].stalled) {
            // The target never confirms the shutdown checkpoint: the leader starts again.
            self.log.push(format!(
                "  the hand-over to {} is aborted",
                self.nodes[t].name
            ));
            return Ok(());
        }
        if let Some(t) = target {
            // Clean stop: commits still waiting fail; the target receives every WAL record.
            self.pending.clear();
            self.nodes[t].flush = self.nodes[l].flush;
            self.leader = None;
            self.promote(t, "switchover")?;
        }
        Ok(())
    }

    pub(super) fn step(&mut self, ev: &QEv) -> Result<(), TestCaseError> {
        self.log.push(format!(
            "{ev:?}  [leader {:?}, key {:?}, setting {:?}, acked {}, flush {:?}]",
            self.leader.map(|l| &self.nodes[l].name),
            self.key
                .as_ref()
                .map(|k| (&k.leader, k.quorum, &k.sync_standby)),
            self.setting.setting(),
            self.acked,
            self.nodes.iter().map(|n| n.flush).collect::<Vec<_>>()
        ));
        match *ev {
            QEv::Write(k) => {
                if let Some(l) = self.leader.filter(|l| self.nodes[*l].up) {
                    for _ in 0..k {
                        self.nodes[l].flush += COMMIT;
                        self.pending.push(self.nodes[l].flush);
                    }
                }
            }
            QEv::Flush(i, k) => {
                if self.connected(i) && !self.nodes[i].stalled {
                    let top = self.leader.map_or(0, |l| self.nodes[l].flush);
                    let n = &mut self.nodes[i];
                    n.flush = top.min(n.flush + u64::from(k) * COMMIT);
                }
            }
            QEv::FlushAll => {
                for i in 0..NODES {
                    self.step(&QEv::Flush(i, u8::MAX))?;
                }
            }
            QEv::Loop { cas_fails } => self.leader_loop(cas_fails)?,
            QEv::Crash(i) => {
                self.nodes[i].up = false;
                if self.leader == Some(i) {
                    // Commits still waiting never return; the leader key expires.
                    self.pending.clear();
                    self.leader = None;
                }
            }
            QEv::Restart(i) => self.nodes[i].up = true,
            QEv::Stall(i) => self.nodes[i].stalled = true,
            QEv::Resume(i) => self.nodes[i].stalled = false,
            QEv::ToggleNosync(i) => self.nodes[i].nosync ^= true,
            QEv::ToggleNofailover(i) => self.nodes[i].nofailover ^= true,
            QEv::ToggleApi(i) => self.nodes[i].api ^= true,
            QEv::Wanted(n) => self.wanted = n,
            QEv::Strict(s) => self.strict = s,
            QEv::MaxLag(m) => self.max_lag = m,
            QEv::QuorumMode(q) => self.quorum_mode = q,
            QEv::Elect(ref pick) => self.elect(&|n| pick.index(n))?,
            QEv::Switchover(to) => self.switchover(to)?,
            QEv::FailoverTo(c) => {
                if self.leader.is_none() {
                    self.failover = Some(Failover {
                        leader: None,
                        member: Some(self.nodes[c].name.clone()),
                        scheduled_at: None,
                    });
                }
            }
        }
        self.acknowledge();
        self.check_key()
    }

    /// Heal everything, elect a leader, run loops with the standbys catching up: the leader
    /// reaches the target setting and key.
    pub(super) fn settle(&mut self) -> Result<(), TestCaseError> {
        self.log.push("healing".into());
        for n in &mut self.nodes {
            n.up = true;
            n.stalled = false;
            n.api = true;
        }
        self.max_lag = None;
        self.quorum_mode = true;
        for k in 0..NODES {
            self.elect(&|_| k)?;
        }
        if self.leader.is_none() {
            // Only a node tagged `nofailover` may hold the newest WAL then; once the operator
            // removes the tags, the cluster elects.
            let top = self.nodes.iter().map(|n| n.flush).max().unwrap_or(0);
            if self.nodes.iter().any(|n| n.flush == top && !n.nofailover) {
                return Err(self.fail("no leader after healing".into()));
            }
            for n in &mut self.nodes {
                n.nofailover = false;
            }
            for k in 0..NODES {
                self.elect(&|_| k)?;
            }
        }
        let Some(l) = self.leader else {
            return Err(self.fail("no leader after healing and clearing nofailover".into()));
        };
        for _ in 0..4 {
            self.step(&QEv::FlushAll)?;
            self.step(&QEv::Loop { cas_fails: false })?;
        }
        let mut listed: Vec<String> = (0..NODES)
            .filter(|&j| j != l && !self.nodes[j].nosync)
            .filter(|&j| !self.nodes[j].nofailover)
            .map(|j| self.nodes[j].name.clone())
            .collect();
        let mut spare: Vec<String> = (0..NODES)
            .filter(|&j| j != l && !self.nodes[j].nosync && self.nodes[j].nofailover)
            .map(|j| self.nodes[j].name.clone())
            .collect();
        spare.truncate(self.wanted.max(1).saturating_sub(listed.len()));
        listed.extend(spare);
        listed.sort();
        let n = self.wanted.max(1).min(listed.len());
        let (setting, q, voters) = if listed.is_empty() && self.strict {
            // Strict mode keeps waiting for the voters it has (any standby when none).
            let k = self.key.clone().unwrap_or_default();
            let voters = k.members();
            let q = k.quorum.unwrap_or(0);
            let setting = if voters.is_empty() {
                Standbys::AnyOne
            } else {
                Standbys::Any {
                    count: (voters.len() - q as usize).max(1),
                    names: voters.clone(),
                }
            };
            (setting, q, k.sync_standby)
        } else if listed.is_empty() {
            (Standbys::Nobody, 0, None)
        } else {
            (
                Standbys::Any {
                    count: n,
                    names: listed.clone(),
                },
                (listed.len() - n) as u32,
                Some(listed.join(",")),
            )
        };
        let want = SyncState {
            leader: Some(self.nodes[l].name.clone()),
            quorum: Some(q),
            sync_standby: voters,
        };
        if self.setting != setting || self.key.as_ref() != Some(&want) {
            return Err(self.fail(format!(
                "a healed cluster did not reach {:?} and {want:?}: {:?}, {:?}",
                setting.setting(),
                self.setting.setting(),
                self.key
            )));
        }
        Ok(())
    }
}

fn arb_event() -> impl Strategy<Value = QEv> {
    let node = || 0..NODES;
    prop_oneof![
        6 => (1..4u8).prop_map(QEv::Write),
        6 => (node(), 1..4u8).prop_map(|(i, k)| QEv::Flush(i, k)),
        1 => Just(QEv::FlushAll),
        6 => prop::bool::weighted(0.15).prop_map(|cas_fails| QEv::Loop { cas_fails }),
        2 => node().prop_map(QEv::Crash),
        2 => node().prop_map(QEv::Restart),
        1 => node().prop_map(QEv::Stall),
        1 => node().prop_map(QEv::Resume),
        1 => node().prop_map(QEv::ToggleNosync),
        1 => node().prop_map(QEv::ToggleNofailover),
        1 => node().prop_map(QEv::ToggleApi),
        1 => (1..=3usize).prop_map(QEv::Wanted),
        1 => any::<bool>().prop_map(QEv::Strict),
        1 => prop::option::of(Just(2 * COMMIT)).prop_map(QEv::MaxLag),
        1 => prop::bool::weighted(0.7).prop_map(QEv::QuorumMode),
        3 => any::<Index>().prop_map(QEv::Elect),
        1 => prop::option::of(node()).prop_map(QEv::Switchover),
        1 => node().prop_map(QEv::FailoverTo),
    ]
}

proptest! {
    #![proptest_config(proptest_config(4_000))]

    /// Random crashes, returns, stalls, tag and `synchronous_node_count` changes, failed key
    /// writes, elections, failovers and switchovers under quorum commit: no promotion loses an
    /// acknowledged commit, and the key keeps its promise at every step.
    #[test]
    fn prop_quorum_commit_never_loses_an_acknowledged_commit(
        wanted in 1..=3usize,
        strict in any::<bool>(),
        events in prop::collection::vec(arb_event(), 1..120),
    ) {
        let mut sim = QSim::new(wanted, strict);
        for ev in &events {
            sim.step(ev)?;
        }
        sim.settle()?;
    }
}

/// The simulation reaches what the property is about often enough for it to mean something:
/// promotions with acknowledged commits at stake, voters lacking some of them kept out of an
/// election (the rule of `synchronous_mode: on` would let them race), keys with a quorum.
#[test]
fn simulation_reaches_the_cases_that_matter() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let runs = (
        1..=3usize,
        any::<bool>(),
        prop::collection::vec(arb_event(), 1..120),
    );
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    for _ in 0..1_000 {
        let Ok(tree) = runs.new_tree(&mut runner) else {
            continue;
        };
        let (wanted, strict, events) = tree.current();
        let mut sim = QSim::new(wanted, strict);
        for ev in &events {
            sim.step(ev).expect("the property holds");
        }
        for (k, n) in sim.tally {
            *tally.entry(k).or_default() += n;
        }
    }
    for (what, least) in [
        ("promotions with acknowledged commits", 150),
        ("lagging voters kept out", 40),
        ("keys written with a quorum", 300),
    ] {
        let n = tally.get(what).copied().unwrap_or(0);
        assert!(n >= least, "only {n} {what} in 1000 runs: {tally:?}");
    }
}
