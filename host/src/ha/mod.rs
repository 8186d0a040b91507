//! The HA decision core: a snapshot of the world in, a list of actions out. No I/O happens here,
//! so every decision can be tested by simulation (see the property tests); the supervisor
//! (`crate::supervisor`) gathers the [`World`] and carries out the [`Action`]s.

pub mod policy;

use crate::dcs::Cluster;
use policy::{CandidateView, ElectionReason, ElectionView, Health, Policy, Ranking};
use std::collections::BTreeMap;

/// What is known about the local data directory.
#[derive(Debug, Clone, PartialEq)]
pub enum DataDir {
    /// Missing or empty: a new node.
    Empty,
    /// A PostgreSQL data directory.
    Initialized {
        sysid: String,
        /// pg_controldata says it last ran as a primary (`in production`, `shut down`).
        was_primary: bool,
    },
    /// Not empty and not a usable data directory: never touched automatically.
    Unusable(String),
}

/// The local PostgreSQL as observed this cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct PgView {
    pub data_dir: DataDir,
    pub running: bool,
    /// Known when running.
    pub in_recovery: Option<bool>,
    pub timeline: Option<u32>,
    pub wal_position: Option<u64>,
    /// The member the replica is configured to stream from.
    pub upstream: Option<String>,
    /// A rewind against this leader failed: re-clone instead.
    pub rewind_failed: bool,
}

impl PgView {
    pub fn is_primary(&self) -> bool {
        self.running && self.in_recovery == Some(false)
    }
    pub fn is_replica(&self) -> bool {
        self.running && self.in_recovery == Some(true)
    }
}

/// A peer's answer to `GET /patroni` during an election (`None` = unreachable).
#[derive(Debug, Clone, PartialEq)]
pub struct PeerState {
    pub role: String,
    pub state: String,
    pub in_recovery: bool,
    pub wal_position: u64,
    pub timeline: Option<u32>,
    pub nofailover: bool,
    pub failover_priority: i64,
    pub tags: BTreeMap<String, String>,
}

/// Settings the core needs (from the dynamic config and local tags).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub ttl_ms: u64,
    pub maximum_lag_on_failover: u64,
    pub check_timeline: bool,
    pub use_pg_rewind: bool,
    pub nofailover: bool,
    pub failover_priority: i64,
    pub tags: BTreeMap<String, String>,
    /// How long a non-top candidate waits for the top-ranked one before racing itself.
    pub race_backoff_ms: u64,
    /// `synchronous_mode` is on: only members in the `sync` key may be promoted.
    pub synchronous_mode: bool,
}

/// The whole snapshot one decision is made from.
#[derive(Debug, Clone, PartialEq)]
pub struct World {
    pub now_ms: u64,
    pub me: String,
    /// `None`: the DCS could not be read this cycle.
    pub cluster: Option<Cluster>,
    /// The lease this process holds in the DCS.
    pub our_lease: Option<i64>,
    /// Until when our PostgreSQL may accept writes: the last successful lease renewal's send
    /// time + ttl − safety margin (monotonic ms). `None` if we never renewed.
    pub write_deadline_ms: Option<u64>,
    pub pg: PgView,
    /// Peers polled for an election, by name.
    pub peers: BTreeMap<String, Option<PeerState>>,
    pub settings: Settings,
    /// Since when this node has seen the cluster without a leader.
    pub unlocked_since_ms: Option<u64>,
    /// The lease the leader key was on, with our name, at the last successful DCS read (carried
    /// over cycles in which the DCS cannot be read).
    pub known_lock_lease: Option<i64>,
    pub health: Health,
}

/// How to stop being a primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoteMode {
    /// Lost the lock: immediate stop, restart as a replica (Patroni's `immediate-nolock`).
    Immediate,
    /// DCS unreachable and the lease deadline passed: fast stop, restart read-only.
    Offline,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Keep the lease alive and the leader key ours; publish `/status`, manage slots.
    RenewLease,
    /// Create the leader key (`create_revision == 0`).
    AcquireLeader,
    /// Move the leader key, still holding our name, onto this process's lease.
    ReattachLeader,
    /// Delete the leader key if it still holds our name.
    ReleaseLeader,
    /// Race for `initialize`, initdb, start, publish, take the leader key.
    Bootstrap,
    /// pg_basebackup from the leader, then start as its replica.
    CloneFrom {
        leader: String,
    },
    /// Move the old data directory aside (never delete) and clone again.
    Reclone {
        leader: String,
    },
    StartPrimary,
    /// Start as a replica of `leader` (or read-only with no upstream).
    StartReplica {
        leader: Option<String>,
    },
    /// Former primary: crash recovery if needed, pg_rewind from the leader, start as its replica.
    Rewind {
        leader: String,
    },
    Promote,
    Demote {
        mode: DemoteMode,
    },
    /// Point an already running replica at a new upstream.
    Follow {
        leader: String,
    },
    /// Publish our system identifier in `initialize`.
    WriteInitialize {
        sysid: String,
    },
    /// Something an operator must fix; the supervisor stops.
    Fatal(String),
}

/// A decision: what to do and one sentence saying why (logged once per loop).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub actions: Vec<Action>,
    pub summary: String,
}

impl Decision {
    fn new(summary: impl Into<String>, actions: Vec<Action>) -> Decision {
        Decision {
            actions,
            summary: summary.into(),
        }
    }
}

impl World {
    /// We hold the leader key on our own lease and our write deadline has not passed.
    pub fn holds_lock(&self) -> bool {
        let Some(cluster) = &self.cluster else {
            return false;
        };
        matches!(&cluster.leader, Some(l) if l.name == self.me && Some(l.lease) == self.our_lease)
            && self.lease_valid()
    }

    pub fn lease_valid(&self) -> bool {
        self.write_deadline_ms.is_some_and(|d| self.now_ms < d)
    }

    /// The leader key has our name but another lease: a previous incarnation of this supervisor.
    fn leader_is_me_other_lease(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| {
            matches!(&c.leader, Some(l) if l.name == self.me && Some(l.lease) != self.our_lease)
        })
    }

    fn other_leader(&self) -> Option<&str> {
        self.cluster
            .as_ref()
            .and_then(|c| c.leader_name())
            .filter(|n| *n != self.me)
    }

    /// The view every node hands to the policy for an election.
    pub fn election_view(&self) -> ElectionView {
        let cluster = self.cluster.clone().unwrap_or_default();
        let mut members = Vec::new();
        let me = CandidateView {
            name: self.me.clone(),
            role: if self.pg.is_primary() {
                "primary".into()
            } else {
                "replica".into()
            },
            state: if self.pg.running {
                "running".into()
            } else {
                "stopped".into()
            },
            timeline: self.pg.timeline,
            wal_position: self.pg.wal_position,
            in_recovery: self.pg.in_recovery.unwrap_or(true),
            reachable: true,
            nofailover: self.settings.nofailover,
            failover_priority: self.settings.failover_priority,
            tags: self.settings.tags.clone(),
            healthy: !matches!(self.health, Health::Failed(_)),
        };
        members.push(me);
        let mut names: Vec<&String> = self.peers.keys().collect();
        for m in &cluster.members {
            if !self.peers.contains_key(&m.name) {
                names.push(&m.name);
            }
        }
        for name in names {
            if *name == self.me {
                continue;
            }
            let dcs_member = cluster.member(name);
            let cv = match self.peers.get(name).and_then(Option::as_ref) {
                Some(p) => CandidateView {
                    name: name.clone(),
                    role: p.role.clone(),
                    state: p.state.clone(),
                    timeline: p.timeline,
                    wal_position: Some(p.wal_position),
                    in_recovery: p.in_recovery,
                    reachable: true,
                    nofailover: p.nofailover,
                    failover_priority: p.failover_priority,
                    tags: p.tags.clone(),
                    healthy: true,
                },
                None => CandidateView {
                    name: name.clone(),
                    role: dcs_member
                        .and_then(|m| m.data.role.clone())
                        .unwrap_or_else(|| "unknown".into()),
                    state: "unreachable".into(),
                    timeline: dcs_member.and_then(|m| m.data.timeline),
                    wal_position: dcs_member.and_then(|m| m.wal_position()),
                    in_recovery: true,
                    reachable: false,
                    nofailover: dcs_member.is_some_and(|m| m.nofailover()),
                    failover_priority: dcs_member.map(|m| m.failover_priority()).unwrap_or(1),
                    tags: dcs_member
                        .map(|m| {
                            m.data
                                .tags
                                .iter()
                                .map(|(k, v)| {
                                    let text = match v {
                                        serde_json::Value::String(s) => s.clone(),
                                        other => other.to_string(),
                                    };
                                    (k.clone(), text)
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    healthy: false,
                },
            };
            members.push(cv);
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        ElectionView {
            members,
            former_leader: cluster.history.last().and_then(|h| h.new_leader.clone()),
            reason: if cluster.history.is_empty() && cluster.initialize.is_none() {
                ElectionReason::NoLeader
            } else {
                ElectionReason::LeaderLost
            },
            leader_optime: cluster.status.optime,
            maximum_lag_on_failover: self.settings.maximum_lag_on_failover,
            cluster_timeline: cluster.timeline(),
            check_timeline: self.settings.check_timeline,
            sync_members: if self.settings.synchronous_mode {
                cluster.sync.as_ref().map(|(s, _)| {
                    let mut v = s.members();
                    v.extend(s.leader.clone());
                    v
                })
            } else {
                None
            },
            now_ms: self.now_ms,
        }
    }
}

/// Decide what to do this cycle.
pub fn decide(w: &World, policy: &dyn Policy) -> Decision {
    let Some(cluster) = &w.cluster else {
        return decide_without_dcs(w);
    };
    match &w.pg.data_dir {
        DataDir::Unusable(why) => Decision::new(
            format!("refusing to touch the data directory: {why}"),
            vec![Action::Fatal(why.clone())],
        ),
        DataDir::Empty => decide_empty(w, cluster),
        DataDir::Initialized { sysid, was_primary } => {
            if let Some(init) = cluster.initialize.as_deref()
                && !init.is_empty()
                && init != sysid
            {
                let msg = format!(
                    "the data directory's system identifier {sysid} differs from the cluster's {init} in the DCS: \
                     this data directory belongs to another cluster; move it aside or fix `scope`"
                );
                return Decision::new(msg.clone(), vec![Action::Fatal(msg)]);
            }
            if !w.pg.running {
                decide_stopped(w, *was_primary)
            } else if w.pg.is_primary() {
                decide_primary(w, cluster, sysid)
            } else {
                decide_replica(w, policy)
            }
        }
    }
}

fn decide_without_dcs(w: &World) -> Decision {
    if w.pg.is_primary() {
        // Only a deadline renewed on the lease that carries the leader key counts.
        if w.lease_valid() && w.our_lease.is_some() && w.known_lock_lease == w.our_lease {
            Decision::new(
                format!(
                    "DCS is not accessible; lease valid for {} ms more, still the leader",
                    w.write_deadline_ms.unwrap_or(0).saturating_sub(w.now_ms)
                ),
                vec![Action::RenewLease],
            )
        } else {
            Decision::new(
                "DCS is not accessible and the lease may have expired: demoting to read-only",
                vec![Action::Demote {
                    mode: DemoteMode::Offline,
                }],
            )
        }
    } else {
        Decision::new("DCS is not accessible", vec![])
    }
}

fn decide_empty(w: &World, cluster: &Cluster) -> Decision {
    if cluster.leader_name() == Some(w.me.as_str()) {
        return Decision::new(
            "data directory is empty but the leader key has my name: releasing it",
            vec![Action::ReleaseLeader],
        );
    }
    if let Some(leader) = w.other_leader() {
        return Decision::new(
            format!("cloning a replica from leader {leader}"),
            vec![Action::CloneFrom {
                leader: leader.to_string(),
            }],
        );
    }
    if cluster.initialize.is_none() && !w.settings.nofailover && w.settings.failover_priority > 0 {
        return Decision::new(
            "no cluster yet: racing to bootstrap",
            vec![Action::Bootstrap],
        );
    }
    Decision::new("waiting for a leader to bootstrap or to clone from", vec![])
}

fn decide_stopped(w: &World, was_primary: bool) -> Decision {
    if w.holds_lock() {
        return if was_primary {
            Decision::new(
                "PostgreSQL is not running and I hold the lock: starting as primary",
                vec![Action::RenewLease, Action::StartPrimary],
            )
        } else {
            Decision::new(
                "PostgreSQL is not running and I hold the lock: starting, then promoting",
                vec![Action::RenewLease, Action::StartReplica { leader: None }],
            )
        };
    }
    if w.leader_is_me_other_lease() {
        return Decision::new(
            "the leader key has my name from an earlier run: re-attaching it",
            vec![Action::ReattachLeader],
        );
    }
    if let Some(leader) = w.other_leader() {
        let leader = leader.to_string();
        if w.pg.rewind_failed || (was_primary && !w.settings.use_pg_rewind) {
            return Decision::new(
                format!(
                    "former primary cannot rewind: moving the data directory aside and cloning from {leader}"
                ),
                vec![Action::Reclone { leader }],
            );
        }
        if was_primary {
            return Decision::new(
                format!("former primary: rewinding from leader {leader} before following it"),
                vec![Action::Rewind { leader }],
            );
        }
        return Decision::new(
            format!("starting as a replica of {leader}"),
            vec![Action::StartReplica {
                leader: Some(leader),
            }],
        );
    }
    Decision::new(
        "no leader: starting PostgreSQL read-only to take part in the election",
        vec![Action::StartReplica { leader: None }],
    )
}

fn decide_primary(w: &World, cluster: &Cluster, sysid: &str) -> Decision {
    if w.holds_lock() {
        let mut actions = vec![Action::RenewLease];
        if cluster.initialize.as_deref().is_none_or(str::is_empty) {
            actions.push(Action::WriteInitialize {
                sysid: sysid.to_string(),
            });
        }
        return Decision::new(
            format!("no action: I am ({}) the leader with the lock", w.me),
            actions,
        );
    }
    if w.leader_is_me_other_lease() {
        if w.lease_valid() && w.our_lease.is_some() {
            return Decision::new(
                "still primary and the leader key has my name from an earlier run: re-attaching it",
                vec![Action::ReattachLeader],
            );
        }
        return Decision::new(
            "the leader key has my name on another lease and my own lease is not valid: demoting",
            vec![Action::Demote {
                mode: DemoteMode::Immediate,
            }],
        );
    }
    if cluster.leader_name() == Some(w.me.as_str()) {
        return Decision::new(
            "the lease deadline passed before it could be renewed: demoting",
            vec![Action::Demote {
                mode: DemoteMode::Immediate,
            }],
        );
    }
    match w.other_leader() {
        Some(l) => Decision::new(
            format!("demoting: {l} holds the lock and I am running as primary"),
            vec![Action::Demote {
                mode: DemoteMode::Immediate,
            }],
        ),
        None => Decision::new(
            "demoting: running as primary without the lock",
            vec![Action::Demote {
                mode: DemoteMode::Immediate,
            }],
        ),
    }
}

fn decide_replica(w: &World, policy: &dyn Policy) -> Decision {
    if w.holds_lock() {
        return Decision::new(
            "I hold the lock: promoting",
            vec![Action::RenewLease, Action::Promote],
        );
    }
    if w.leader_is_me_other_lease() {
        return Decision::new(
            "the leader key has my name from an earlier run: re-attaching it",
            vec![Action::ReattachLeader],
        );
    }
    if let Some(leader) = w.other_leader() {
        if w.pg.upstream.as_deref() != Some(leader) {
            return Decision::new(
                format!("following new leader {leader}"),
                vec![Action::Follow {
                    leader: leader.to_string(),
                }],
            );
        }
        return Decision::new(
            format!("no action: I am ({}) a replica following {leader}", w.me),
            vec![],
        );
    }
    if w.cluster.as_ref().and_then(|c| c.leader.as_ref()).is_some() {
        // The leader key has our name on the right lease, but our write deadline passed: wait.
        return Decision::new("lease renewal is late: not promoting", vec![]);
    }
    elect(w, policy)
}

fn elect(w: &World, policy: &dyn Policy) -> Decision {
    let view = w.election_view();
    match policy.rank(&view) {
        Ranking::Veto(why) => Decision::new(format!("no leader, not racing: {why}"), vec![]),
        Ranking::Candidates(list) => {
            let Some(pos) = list.iter().position(|c| c.name == w.me) else {
                let why = view
                    .members
                    .iter()
                    .find(|m| m.name == w.me)
                    .and_then(|m| policy::DefaultPolicy::ineligible(&view, m))
                    .unwrap_or_else(|| "the policy does not rank me".into());
                return Decision::new(format!("no leader, I am not eligible: {why}"), vec![]);
            };
            if pos == 0 {
                return Decision::new(
                    format!(
                        "no leader: I am the best candidate ({}), racing for the lock",
                        list[0].reason
                    ),
                    vec![Action::AcquireLeader],
                );
            }
            let waited = w
                .unlocked_since_ms
                .map(|s| w.now_ms.saturating_sub(s))
                .unwrap_or(0);
            if waited >= w.settings.race_backoff_ms {
                return Decision::new(
                    format!(
                        "no leader for {waited} ms and {} did not take the lock: racing as candidate #{}",
                        list[0].name,
                        pos + 1
                    ),
                    vec![Action::AcquireLeader],
                );
            }
            Decision::new(
                format!(
                    "no leader: {} is the better candidate ({}), waiting",
                    list[0].name, list[0].reason
                ),
                vec![],
            )
        }
    }
}

#[cfg(test)]
mod tests;
