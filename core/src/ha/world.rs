//! The snapshot one decision is made from: the local PostgreSQL, the cluster as read from the
//! DCS, the peers' answers during an election, the settings, and the decision memory. Also the
//! views a [`Policy`](super::policy::Policy) ranks, built from that snapshot.

use super::memory::Memory;
use super::policy::{CandidateView, ElectionReason, ElectionView, Health};
use crate::dcs::{Cluster, json_scalar};
use std::collections::BTreeMap;

/// What is known about the local data directory.
#[derive(Debug, Clone, PartialEq)]
pub enum DataDir {
    /// Missing or empty: a new node.
    Empty,
    /// A PostgreSQL data directory.
    Initialized {
        /// The database system identifier (pg_controldata).
        sysid: String,
        /// pg_controldata says it last ran as a primary (`in production`, `shut down`).
        was_primary: bool,
    },
    /// Not empty and not a usable data directory: never touched automatically.
    Unusable(String),
    /// Could not be read this loop (out of file descriptors, an I/O error): what it holds is
    /// unknown, so nothing that depends on it is decided; the next loop reads it again. Never
    /// taken for [`DataDir::Unusable`], which stops the supervisor.
    Unknown(String),
}

/// The local PostgreSQL as observed this cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct PgView {
    /// What the data directory holds.
    pub data_dir: DataDir,
    /// PostgreSQL runs and answers queries.
    pub running: bool,
    /// PostgreSQL is in recovery (a replica); known when running.
    pub in_recovery: Option<bool>,
    /// The timeline PostgreSQL is on, when known.
    pub timeline: Option<u32>,
    /// The flush LSN on a primary, the larger of the received and replayed LSNs on a replica.
    pub wal_position: Option<u64>,
    /// A replica's last received WAL position (for the policies' view).
    pub received_lsn: Option<u64>,
    /// A replica's last replayed WAL position (for the policies' view).
    pub replayed_lsn: Option<u64>,
    /// The member the replica is configured to stream from.
    pub upstream: Option<String>,
    /// Members streaming from this node (`pg_stat_replication`, state `streaming`): only
    /// they can receive a hand-over's last WAL at once.
    pub streaming: Vec<String>,
    /// The data directory was a primary's (or a replica start failed) and has not been
    /// rewound, cloned or promoted since: it may have diverged from any other leader, so it
    /// must be rewound (or re-cloned) before it follows one.
    pub former_primary: bool,
    /// A replica's WAL receiver is streaming from its upstream right now.
    pub receiving: bool,
    /// The replica is configured to stream from the remote primary of a standby cluster
    /// (`standby_cluster`), not from a member.
    pub follows_remote: bool,
}

impl PgView {
    /// PostgreSQL runs and is not in recovery.
    pub fn is_primary(&self) -> bool {
        self.running && self.in_recovery == Some(false)
    }

    /// PostgreSQL runs in recovery.
    pub fn is_replica(&self) -> bool {
        self.running && self.in_recovery == Some(true)
    }
}

/// A peer's answer to `GET /patroni` during an election (`None` = unreachable).
#[derive(Debug, Clone, PartialEq)]
pub struct PeerState {
    /// The role it reports: `primary`, `replica`, ...
    pub role: String,
    /// Its PostgreSQL's state: `running`, `stopped`, ...
    pub state: String,
    /// Its PostgreSQL is in recovery (a replica).
    pub in_recovery: bool,
    /// Its WAL position: a primary's flush LSN, a replica's larger of received and replayed.
    pub wal_position: u64,
    /// A replica's last received WAL position.
    pub received_lsn: Option<u64>,
    /// A replica's last replayed WAL position.
    pub replayed_lsn: Option<u64>,
    /// The timeline it is on, when it says.
    pub timeline: Option<u32>,
    /// Tagged `nofailover`: never promoted.
    pub nofailover: bool,
    /// Its `failover_priority` tag (0 or less: never promoted).
    pub failover_priority: i64,
    /// Its tags, as text.
    pub tags: BTreeMap<String, String>,
    /// The peer's own policy has not judged it `failed` (peers that publish no verdict, such
    /// as Patroni nodes, count as healthy).
    pub healthy: bool,
}

/// Settings the core needs (from the dynamic config and local tags).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The cluster's `ttl` in ms: how long a candidate an operator named is waited for.
    pub ttl_ms: u64,
    /// `maximum_lag_on_failover`: how many bytes a candidate may be behind the last leader's
    /// optime.
    pub maximum_lag_on_failover: u64,
    /// `check_timeline`: a candidate must be on the cluster's timeline.
    pub check_timeline: bool,
    /// `postgresql.use_pg_rewind`: a former primary is rewound before it follows another
    /// leader; without it, its data is moved aside and cloned anew.
    pub use_pg_rewind: bool,
    /// This node is tagged `nofailover`: it is never promoted.
    pub nofailover: bool,
    /// This node's `failover_priority` tag (0 or less: never promoted).
    pub failover_priority: i64,
    /// This node's other tags, as text.
    pub tags: BTreeMap<String, String>,
    /// How long a non-top candidate waits for the top-ranked one before racing itself.
    pub race_backoff_ms: u64,
    /// `synchronous_mode` is on: only members in the `sync` key may be promoted.
    pub synchronous_mode: bool,
    /// `synchronous_mode: quorum` (with `synchronous_mode` set too): a candidate must prove it
    /// holds every acknowledged commit by the `sync` key's quorum ([`super::quorum::proves`]).
    pub quorum_commit: bool,
    /// Maintenance mode (`pause: true` in the cluster config): no automatic promotion,
    /// demotion, start or stop; only an operator's switchover to a named candidate.
    pub paused: bool,
    /// `loop_wait` in ms: a scheduled switchover runs in the first loop after its time, and
    /// one more than 1.5 loops late is dropped as stale.
    pub loop_wait_ms: u64,
    /// A leader whose policy judged it `failed` for this many consecutive loops hands over to
    /// a healthy candidate.
    pub failed_loops_before_handover: u32,
    /// A replica method works without a member to copy from (`no_leader`, e.g. a restore
    /// from a backup repository): a new node may create its data while there is no leader.
    pub clone_without_leader: bool,
    /// `failsafe_mode` is on: a leader without the DCS stays primary while every member in
    /// the `failsafe` key accepts its `POST /failsafe` (see `failsafe.rs`).
    pub failsafe_mode: bool,
    /// The cluster is a standby cluster (`standby_cluster` in the cluster config): its leader
    /// is a `standby_leader` that replicates from a remote primary and is never promoted.
    pub standby_cluster: bool,
}

/// The whole snapshot one decision is made from.
#[derive(Debug, Clone, PartialEq)]
pub struct World {
    /// Monotonic milliseconds: every deadline and wait is measured on this clock.
    pub now_ms: u64,
    /// This node's member name.
    pub me: String,
    /// `None`: the DCS could not be read this cycle.
    pub cluster: Option<Cluster>,
    /// The local PostgreSQL.
    pub pg: PgView,
    /// Peers polled for an election, by name.
    pub peers: BTreeMap<String, Option<PeerState>>,
    /// The settings in force this loop.
    pub settings: Settings,
    /// The policies' verdict on this node this loop.
    pub health: Health,
    /// Wall clock, ms since the Unix epoch: only for the time of a scheduled switchover.
    pub now_unix_ms: u64,
    /// What the loop remembers from earlier loops: our lease and write deadline, since when
    /// there has been no leader, the last leader, ...
    pub memory: Memory,
}

impl World {
    /// We hold the leader key on our own lease, this loop renewed that lease, and our write
    /// deadline has not passed. Only then may PostgreSQL start or stay writable.
    pub fn holds_lock(&self) -> bool {
        let Some(cluster) = &self.cluster else {
            return false;
        };
        matches!(&cluster.leader, Some(l) if l.name == self.me && Some(l.lease) == self.memory.our_lease)
            && self.lease_valid()
            && !self.memory.renewal_failed
    }

    /// Our write deadline has not passed: our PostgreSQL may still accept writes.
    pub fn lease_valid(&self) -> bool {
        self.memory
            .write_deadline_ms
            .is_some_and(|d| self.now_ms < d)
    }

    /// The leader key has our name but another lease: a previous incarnation of this supervisor.
    pub(super) fn leader_is_me_other_lease(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| {
            matches!(&c.leader, Some(l) if l.name == self.me && Some(l.lease) != self.memory.our_lease)
        })
    }

    /// Whether `leader`'s member key says it runs as a primary (in a standby cluster: as the
    /// standby leader, which pg_rewind from PostgreSQL 14 on accepts as its source). A leader
    /// still promoting is in recovery on the old timeline, and pg_rewind against it finds "no
    /// rewind required" for a former primary that has diverged: that node would then never
    /// stream.
    pub(super) fn leader_runs_as_primary(&self, leader: &str) -> bool {
        let standby = self.settings.standby_cluster;
        self.cluster
            .as_ref()
            .and_then(|c| c.member(leader))
            .is_some_and(|m| {
                let leads = match m.data.role.as_deref() {
                    Some("primary" | "master") => true,
                    Some("standby_leader") => standby,
                    _ => false,
                };
                leads && m.data.state.as_deref() == Some("running")
            })
    }

    pub(super) fn other_leader(&self) -> Option<&str> {
        self.cluster
            .as_ref()
            .and_then(|c| c.leader_name())
            .filter(|n| *n != self.me)
    }

    /// Whether this running replica received WAL past the point where the cluster's timeline
    /// forked off its own (from `/history`): that leader never had that WAL, so this replica
    /// can never stream from it and must be rewound (or re-cloned). Returns its timeline, the
    /// fork point and its position.
    pub fn diverged_from_cluster(&self) -> Option<(u32, u64, u64)> {
        let c = self.cluster.as_ref()?;
        // A replica that streams follows its upstream's timeline switch by itself (its
        // received position is already on the new timeline).
        if !self.pg.is_replica() || self.pg.receiving {
            return None;
        }
        let mine = self.pg.timeline?;
        if mine >= c.timeline() {
            return None;
        }
        let fork = c.history.iter().find(|h| h.timeline == mine)?.lsn;
        let at = self
            .pg
            .received_lsn
            .max(self.pg.replayed_lsn)
            .max(self.pg.wal_position)?;
        (at > fork).then_some((mine, fork, at))
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
            received_lsn: self.pg.received_lsn,
            replayed_lsn: self.pg.replayed_lsn,
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
                    received_lsn: p.received_lsn,
                    replayed_lsn: p.replayed_lsn,
                    in_recovery: p.in_recovery,
                    reachable: true,
                    nofailover: p.nofailover,
                    failover_priority: p.failover_priority,
                    tags: p.tags.clone(),
                    healthy: p.healthy,
                },
                None => CandidateView {
                    name: name.clone(),
                    role: dcs_member
                        .and_then(|m| m.data.role.clone())
                        .unwrap_or_else(|| "unknown".into()),
                    state: "unreachable".into(),
                    timeline: dcs_member.and_then(|m| m.data.timeline),
                    wal_position: dcs_member.and_then(|m| m.wal_position()),
                    received_lsn: dcs_member.and_then(|m| m.data.receive_lsn),
                    replayed_lsn: dcs_member.and_then(|m| m.data.replay_lsn),
                    in_recovery: true,
                    reachable: false,
                    nofailover: dcs_member.is_some_and(|m| m.nofailover()),
                    failover_priority: dcs_member.map(|m| m.failover_priority()).unwrap_or(1),
                    tags: dcs_member
                        .map(|m| {
                            m.data
                                .tags
                                .iter()
                                .map(|(k, v)| (k.clone(), json_scalar(v)))
                                .collect()
                        })
                        .unwrap_or_default(),
                    healthy: false,
                },
            };
            members.push(cv);
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        // The last leader this node saw is the former leader; without one (a node started
        // after the leader was gone), the last promotion in `/history`.
        let former_leader = self
            .memory
            .last_leader
            .as_ref()
            .map(|(n, _)| n.clone())
            .or_else(|| cluster.history.last().and_then(|h| h.new_leader.clone()));
        let former_leader_zone = former_leader.as_deref().and_then(|f| {
            members
                .iter()
                .find(|m| m.name == f)
                .and_then(|m| m.tags.get("zone").cloned())
                .or_else(|| {
                    self.memory
                        .last_leader
                        .as_ref()
                        .filter(|(name, _)| name == f)
                        .and_then(|(_, tags)| tags.get("zone").cloned())
                })
        });
        let sync_members = if self.settings.synchronous_mode {
            cluster.sync.as_ref().map(|(s, _)| {
                if self.settings.quorum_commit || super::quorum::is_quorum_key(s) {
                    return super::quorum::provers(&members, s);
                }
                let mut v = s.members();
                v.extend(s.leader.clone());
                v
            })
        } else {
            None
        };
        ElectionView {
            members,
            former_leader,
            former_leader_zone,
            reason: if cluster.history.is_empty() && cluster.initialize.is_none() {
                ElectionReason::NoLeader
            } else {
                ElectionReason::LeaderLost
            },
            leader_optime: cluster.status.optime,
            maximum_lag_on_failover: self.settings.maximum_lag_on_failover,
            cluster_timeline: cluster.timeline(),
            check_timeline: self.settings.check_timeline,
            sync_members,
            now_ms: self.now_ms,
        }
    }

    /// The view for a hand-over by the leader (this node): every other member, with this node
    /// as the former leader. The leader itself is left out, so that a policy ranks the
    /// replicas instead of vetoing because "the primary is still alive".
    pub fn handover_view(&self, reason: ElectionReason) -> ElectionView {
        let mut view = self.election_view();
        view.members.retain(|m| m.name != self.me);
        if let Some(sync) = view.sync_members.as_mut()
            && let Some((key, _)) = self.cluster.as_ref().and_then(|c| c.sync.as_ref())
            && (self.settings.quorum_commit || super::quorum::is_quorum_key(key))
        {
            *sync = super::quorum::handover_members(&view.members, key);
        }
        view.former_leader = Some(self.me.clone());
        view.former_leader_zone = self.settings.tags.get("zone").cloned();
        view.reason = reason;
        view
    }
}
