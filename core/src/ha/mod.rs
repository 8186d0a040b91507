//! The HA decision core: a snapshot of the world in, a list of actions out. No I/O happens here,
//! so every decision can be tested by simulation (see the property tests); the supervisor
//! (`crate::supervisor`) gathers the [`World`] and carries out the [`Action`]s.

pub mod policy;
pub mod sync;

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
    /// A replica's received and replayed WAL positions (for the policies' view).
    pub received_lsn: Option<u64>,
    pub replayed_lsn: Option<u64>,
    /// The member the replica is configured to stream from.
    pub upstream: Option<String>,
    /// A rewind against this leader failed: re-clone instead.
    pub rewind_failed: bool,
    /// Members streaming from this node (`pg_stat_replication`, state `streaming`): only
    /// they can receive a hand-over's last WAL at once.
    pub streaming: Vec<String>,
    /// The data directory was a primary's (or a replica start failed) and has not been
    /// rewound, cloned or promoted since: it may have diverged from any other leader, so it
    /// must be rewound (or re-cloned) before it follows one.
    pub former_primary: bool,
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
    /// A replica's received and replayed WAL positions.
    pub received_lsn: Option<u64>,
    pub replayed_lsn: Option<u64>,
    pub timeline: Option<u32>,
    pub nofailover: bool,
    pub failover_priority: i64,
    pub tags: BTreeMap<String, String>,
    /// The peer's own policy has not judged it `failed` (peers that publish no verdict, such
    /// as Patroni nodes, count as healthy).
    pub healthy: bool,
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
    /// Maintenance mode (`pause: true` in the cluster config): no automatic promotion,
    /// demotion, start or stop; only an operator's switchover to a named candidate.
    pub paused: bool,
    /// `loop_wait` in ms: a scheduled switchover runs in the first loop after its time, and
    /// one more than 1.5 loops late is dropped as stale.
    pub loop_wait_ms: u64,
    /// A leader whose policy judged it `failed` for this many consecutive loops hands over to
    /// a healthy candidate.
    pub failed_loops_before_handover: u32,
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
    /// How many consecutive loops, this one included, the policy has judged this node
    /// `failed` (0 when `health` is not failed).
    pub failed_health_loops: u32,
    /// Wall clock, ms since the Unix epoch: only for the time of a scheduled switchover.
    pub now_unix_ms: u64,
    /// When (monotonic ms) this node last gave up a hand-over because the target did not
    /// confirm its last WAL: a failed leader waits before it tries again.
    pub handover_aborted_ms: Option<u64>,
    /// Since when (monotonic ms) this node has seen the current request in the `failover`
    /// key: a leader waits a while for a requested candidate that does not stream yet.
    pub request_since_ms: Option<u64>,
    /// The last leader this node saw, with its tags from its member key: a crashed leader's
    /// key expires with its lease, and an election still wants to know its zone.
    pub last_leader: Option<(String, BTreeMap<String, String>)>,
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
    /// Graceful hand-over of the leadership to `to` (a switchover, or a leader whose policy
    /// judged it failed): checkpoint, stop PostgreSQL, wait until `to` has received the
    /// shutdown checkpoint, move the leader key onto `to`'s lease, then follow `to`. If `to`
    /// never confirms the checkpoint, start again as primary: nothing is lost.
    HandOver {
        to: String,
    },
    /// Delete the `failover` key: a request that is done, stale or impossible (the REST API
    /// reports "Switchover failed" when the key vanishes without a new leader).
    ClearFailover,
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

    /// Whether `leader`'s member key says it runs as a primary. A leader still promoting is in
    /// recovery on the old timeline, and pg_rewind against it finds "no rewind required" for a
    /// former primary that has diverged: that node would then never stream.
    fn leader_runs_as_primary(&self, leader: &str) -> bool {
        self.cluster
            .as_ref()
            .and_then(|c| c.member(leader))
            .is_some_and(|m| {
                matches!(m.data.role.as_deref(), Some("primary" | "master"))
                    && m.data.state.as_deref() == Some("running")
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
        // The last leader this node saw is the former leader; without one (a node started
        // after the leader was gone), the last promotion in `/history`.
        let former_leader = self
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
                    self.last_leader
                        .as_ref()
                        .filter(|(name, _)| name == f)
                        .and_then(|(_, tags)| tags.get("zone").cloned())
                })
        });
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

    /// The view for a hand-over by the leader (this node): every other member, with this node
    /// as the former leader. The leader itself is left out, so that a policy ranks the
    /// replicas instead of vetoing because "the primary is still alive".
    pub fn handover_view(&self, reason: ElectionReason) -> ElectionView {
        let mut view = self.election_view();
        view.members.retain(|m| m.name != self.me);
        view.former_leader = Some(self.me.clone());
        view.former_leader_zone = self.settings.tags.get("zone").cloned();
        view.reason = reason;
        view
    }

    /// The switchover/failover request in the `failover` key, if any.
    fn request(&self) -> Option<Request<'_>> {
        let (f, _) = self.cluster.as_ref()?.failover.as_ref()?;
        if f.is_empty() {
            return None;
        }
        Some(Request {
            leader: f.leader.as_deref().filter(|l| !l.is_empty()),
            candidate: f.member.as_deref().filter(|m| !m.is_empty()),
            scheduled_at: f.scheduled_at.as_deref().filter(|s| !s.is_empty()),
        })
    }
}

/// A switchover (`leader` set) or failover (`leader` unset) request from the `failover` key.
#[derive(Debug, Clone, Copy)]
struct Request<'a> {
    leader: Option<&'a str>,
    candidate: Option<&'a str>,
    scheduled_at: Option<&'a str>,
}

/// When a request may run.
enum Due {
    Now,
    /// Scheduled later (ms from now).
    Later(u64),
    /// More than 1.5 loops past its time: dropped (Patroni does the same).
    Stale,
    /// `scheduled_at` does not parse.
    Invalid,
}

impl Request<'_> {
    fn due(&self, w: &World) -> Due {
        let Some(at) = self.scheduled_at else {
            return Due::Now;
        };
        let Some(at_ms) = crate::dcs::parse_iso8601_ms(at) else {
            return Due::Invalid;
        };
        if at_ms > w.now_unix_ms {
            return Due::Later(at_ms - w.now_unix_ms);
        }
        let late = w.now_unix_ms - at_ms;
        if late > (w.settings.loop_wait_ms * 3 / 2).max(1_500) {
            Due::Stale
        } else {
            Due::Now
        }
    }

    fn describe(&self) -> String {
        match self.candidate {
            Some(c) => format!("to {c}"),
            None => "to the best candidate".into(),
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
                decide_primary(w, cluster, sysid, policy)
            } else {
                decide_replica(w, policy)
            }
        }
    }
}

fn decide_without_dcs(w: &World) -> Decision {
    if w.pg.is_primary() && w.settings.paused {
        return Decision::new(
            "DCS is not accessible; the cluster is paused: not demoting",
            vec![],
        );
    }
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
    if w.settings.paused {
        return Decision::new(
            "the cluster is paused: not bootstrapping; waiting for a leader to clone from",
            vec![],
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
    let was_primary = was_primary || w.pg.former_primary;
    if w.settings.paused {
        if w.cluster.as_ref().and_then(|c| c.leader_name()) == Some(w.me.as_str()) {
            return Decision::new(
                "the cluster is paused and PostgreSQL is not running: releasing the leader key",
                vec![Action::ReleaseLeader],
            );
        }
        return Decision::new(
            "the cluster is paused: PostgreSQL is not running and is left stopped",
            vec![],
        );
    }
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
            if !w.leader_runs_as_primary(&leader) {
                return Decision::new(
                    format!(
                        "former primary: waiting for leader {leader} to run as primary before rewinding from it"
                    ),
                    vec![],
                );
            }
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

fn decide_primary(w: &World, cluster: &Cluster, sysid: &str, policy: &dyn Policy) -> Decision {
    if w.holds_lock() {
        let mut actions = vec![Action::RenewLease];
        if cluster.initialize.as_deref().is_none_or(str::is_empty) {
            actions.push(Action::WriteInitialize {
                sysid: sysid.to_string(),
            });
        }
        if let Some(req) = w.request() {
            let (summary, more) = leader_request(w, req, policy);
            actions.extend(more);
            return Decision::new(summary, actions);
        }
        if let Health::Failed(why) = &w.health
            && w.failed_health_loops >= w.settings.failed_loops_before_handover.max(1)
        {
            if w.settings.paused {
                return Decision::new(
                    format!(
                        "my policy judges me failed ({why}), but the cluster is paused: staying leader"
                    ),
                    actions,
                );
            }
            if let Some(at) = w.handover_aborted_ms
                && w.now_ms.saturating_sub(at) < HANDOVER_RETRY_MS
            {
                return Decision::new(
                    format!(
                        "my policy judges me failed ({why}); the last hand-over was aborted {} s ago: staying leader for now",
                        w.now_ms.saturating_sub(at) / 1000
                    ),
                    actions,
                );
            }
            let view = w.handover_view(ElectionReason::LeaderUnhealthy);
            return match streaming_only(w, sync_only(&view, policy.rank(&view))) {
                Ranking::Candidates(list) if !list.is_empty() => {
                    let to = list[0].name.clone();
                    actions.push(Action::HandOver { to: to.clone() });
                    Decision::new(
                        format!(
                            "my policy judged me failed for {} loops ({why}): handing over to {to} ({})",
                            w.failed_health_loops, list[0].reason
                        ),
                        actions,
                    )
                }
                Ranking::Veto(v) => Decision::new(
                    format!(
                        "my policy judges me failed ({why}), but no candidate may take over ({v}): staying leader"
                    ),
                    actions,
                ),
                Ranking::Candidates(_) => Decision::new(
                    format!(
                        "my policy judges me failed ({why}), but no healthy candidate can take over: staying leader"
                    ),
                    actions,
                ),
            };
        }
        return Decision::new(
            format!("no action: I am ({}) the leader with the lock", w.me),
            actions,
        );
    }
    if w.settings.paused {
        return decide_primary_paused(w, cluster);
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

/// The leader's answer to a request in the `failover` key: a summary and the actions besides
/// renewing the lease.
fn leader_request(w: &World, req: Request<'_>, policy: &dyn Policy) -> (String, Vec<Action>) {
    let what = req.describe();
    if let Some(l) = req.leader
        && l != w.me
    {
        return (
            format!("dropping the switchover request {what}: it names {l} as leader, but I am"),
            vec![Action::ClearFailover],
        );
    }
    if req.candidate == Some(w.me.as_str()) {
        return (
            format!("dropping the switchover request {what}: I am already the leader"),
            vec![Action::ClearFailover],
        );
    }
    if w.settings.paused && req.candidate.is_none() {
        return (
            "dropping the switchover request: in a paused cluster a switchover needs a named candidate"
                .into(),
            vec![Action::ClearFailover],
        );
    }
    match req.due(w) {
        Due::Now => {}
        Due::Later(ms) => {
            return (
                format!(
                    "I am ({}) the leader; switchover {what} scheduled in {} s",
                    w.me,
                    ms.div_ceil(1000)
                ),
                vec![],
            );
        }
        Due::Stale => {
            return (
                format!(
                    "dropping the switchover {what} scheduled at {}: more than 1.5 loops late",
                    req.scheduled_at.unwrap_or_default()
                ),
                vec![Action::ClearFailover],
            );
        }
        Due::Invalid => {
            return (
                format!(
                    "dropping the switchover {what}: scheduled_at {:?} is not an ISO 8601 time",
                    req.scheduled_at.unwrap_or_default()
                ),
                vec![Action::ClearFailover],
            );
        }
    }
    let others = w
        .cluster
        .as_ref()
        .is_some_and(|c| c.members.iter().any(|m| m.name != w.me));
    if w.peers.is_empty() && others {
        return (
            format!("switchover {what} requested: asking the members for their state"),
            vec![],
        );
    }
    let view = w.handover_view(ElectionReason::Switchover);
    let ranking = sync_only(&view, policy.rank(&view));
    let not_streaming = |c: &str| {
        matches!(&ranking, Ranking::Candidates(l) if l.iter().any(|r| r.name == c))
            && !w.pg.streaming.iter().any(|s| s == c)
    };
    if let Some(c) = req.candidate
        && not_streaming(c)
    {
        let waited = w.request_since_ms.map_or(0, |s| w.now_ms.saturating_sub(s));
        if waited < w.settings.ttl_ms {
            return (
                format!("switchover {what}: waiting for {c} to stream from me"),
                vec![],
            );
        }
        return (
            format!(
                "switchover {what} is not possible: {c} has not streamed from me for {} s",
                waited / 1000
            ),
            vec![Action::ClearFailover],
        );
    }
    let list = match streaming_only(w, ranking) {
        Ranking::Veto(why) => {
            return (
                format!("switchover {what} is not possible: {why}"),
                vec![Action::ClearFailover],
            );
        }
        Ranking::Candidates(list) => list,
    };
    let chosen = match req.candidate {
        Some(c) => list.iter().find(|r| r.name == c),
        None => list.first(),
    };
    match chosen {
        Some(r) => (
            format!(
                "switchover {what}: handing over to {} ({})",
                r.name, r.reason
            ),
            vec![Action::HandOver { to: r.name.clone() }],
        ),
        None => {
            let why = match req.candidate {
                Some(c) => view
                    .members
                    .iter()
                    .find(|m| m.name == c)
                    .map(|m| {
                        policy::DefaultPolicy::ineligible(&view, m)
                            .unwrap_or_else(|| "the policy does not rank it".into())
                    })
                    .unwrap_or_else(|| "it is not a member of the cluster".into()),
                None => "no eligible candidate".into(),
            };
            (
                format!("switchover {what} is not possible: {why}"),
                vec![Action::ClearFailover],
            )
        }
    }
}

/// After an aborted hand-over, a failed leader waits this long before it tries again.
pub const HANDOVER_RETRY_MS: u64 = 60_000;

/// In synchronous mode only the `sync` key's members may be promoted, whatever a policy
/// answers: a (buggy) policy cannot promote a replica that may lack acknowledged commits.
fn sync_only(view: &ElectionView, r: Ranking) -> Ranking {
    match (r, &view.sync_members) {
        (Ranking::Candidates(list), Some(sync)) => Ranking::Candidates(
            list.into_iter()
                .filter(|c| sync.contains(&c.name))
                .collect(),
        ),
        (r, _) => r,
    }
}

/// The candidates of a ranking that stream from this node (the leader): a hand-over waits
/// for its target to receive the last WAL, which only a streaming replica does at once.
fn streaming_only(w: &World, r: Ranking) -> Ranking {
    match r {
        Ranking::Candidates(list) => Ranking::Candidates(
            list.into_iter()
                .filter(|c| w.pg.streaming.contains(&c.name))
                .collect(),
        ),
        veto => veto,
    }
}

/// A primary without a valid lock in a paused cluster: never demoted; it takes a free lock.
fn decide_primary_paused(w: &World, cluster: &Cluster) -> Decision {
    if w.leader_is_me_other_lease() {
        return Decision::new(
            "the cluster is paused; the leader key has my name from an earlier run: re-attaching it",
            vec![Action::ReattachLeader],
        );
    }
    match cluster.leader_name() {
        None => Decision::new(
            "the cluster is paused and I run as primary without the leader key: taking it",
            vec![Action::AcquireLeader],
        ),
        Some(l) if l == w.me => Decision::new(
            "the cluster is paused; the lease renewal is late: not demoting",
            vec![],
        ),
        Some(l) => Decision::new(
            format!(
                "the cluster is paused: running as primary while {l} holds the leader key; not demoting"
            ),
            vec![],
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
        if w.pg.former_primary {
            let leader = leader.to_string();
            if w.settings.paused {
                return Decision::new(
                    format!(
                        "the cluster is paused: running read-only on a former primary's data, which must be rewound before it follows {leader}"
                    ),
                    vec![],
                );
            }
            if w.pg.rewind_failed || !w.settings.use_pg_rewind {
                return Decision::new(
                    format!(
                        "running read-only on a former primary's data, which may have diverged from leader {leader}: moving it aside and cloning from {leader}"
                    ),
                    vec![Action::Reclone { leader }],
                );
            }
            if !w.leader_runs_as_primary(&leader) {
                return Decision::new(
                    format!(
                        "running read-only on a former primary's data: waiting for leader {leader} to run as primary before rewinding from it"
                    ),
                    vec![],
                );
            }
            return Decision::new(
                format!(
                    "running read-only on a former primary's data, which may have diverged from leader {leader}: rewinding before following it"
                ),
                vec![Action::Rewind { leader }],
            );
        }
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
    if let Some(req) = w.request()
        && let Some(c) = req.candidate
        && matches!(req.due(w), Due::Now)
    {
        if c == w.me
            && !w.settings.nofailover
            && w.settings.failover_priority > 0
            && !matches!(w.health, Health::Failed(_))
        {
            return Decision::new(
                "no leader and a failover to me was requested: racing for the lock",
                vec![Action::AcquireLeader],
            );
        }
        let viable = w.peers.get(c).and_then(Option::as_ref).is_some_and(|p| {
            p.in_recovery
                && p.state == "running"
                && p.healthy
                && !p.nofailover
                && p.failover_priority > 0
        });
        let waited = w
            .unlocked_since_ms
            .map(|s| w.now_ms.saturating_sub(s))
            .unwrap_or(0);
        if viable && (w.settings.paused || waited < w.settings.ttl_ms) {
            return Decision::new(
                format!(
                    "no leader: a failover to {c} was requested, waiting for it to take the lock"
                ),
                vec![],
            );
        }
        if w.settings.paused {
            return Decision::new(
                format!(
                    "no leader: a failover to {c} was requested, but {c} cannot take it; the cluster is paused"
                ),
                vec![],
            );
        }
    }
    if w.settings.paused {
        return Decision::new(
            "no leader, but the cluster is paused: not racing for the lock",
            vec![],
        );
    }
    let view = w.election_view();
    match sync_only(&view, policy.rank(&view)) {
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
