//! Proptest generators of whole clusters: the true DCS state and one [`World`] per node as
//! that node sees it ([`build`] turns a [`ClusterGen`] into a [`Scenario`]), and the
//! narrower shapes the properties need (unlocked, locked, a manual failover).

use super::fixtures::*;
use crate::dcs::{Cluster, HistoryLine, Leader, Member, MemberData};
use crate::ha::policy::Health;
use crate::ha::{DataDir, Memory, PeerState, PgView, Settings, World};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A leader-key name that can never be a generated member name.
const GHOST: &str = "Ghost_0";
const LEASE_BASE: i64 = 1_000;
const STALE_LEASE_BASE: i64 = 5_000;
const GHOST_LEASE: i64 = 9_999;

#[derive(Debug, Clone)]
enum DirGen {
    Empty,
    Match {
        was_primary: bool,
    },
    Mismatch {
        was_primary: bool,
    },
    Unusable,
    /// Could not be read this loop (EMFILE, an I/O error).
    Unknown,
}

#[derive(Debug, Clone)]
enum UpstreamGen {
    None,
    Leader,
    Node(Index),
    /// A standby cluster's remote primary.
    Remote,
}

/// The write deadline relative to `now`.
#[derive(Debug, Clone)]
enum DeadlineGen {
    Never,
    /// `now - x` (`x = 0` is exactly at the deadline: already invalid).
    Past(u64),
    /// `now + 1 + x`.
    Future(u64),
}

#[derive(Debug, Clone)]
enum LeaderGen {
    Absent,
    /// Held by a node on its current lease (or a stale one if it has none).
    OnLease(Index),
    /// A node's name on a lease it no longer holds (a previous supervisor run).
    Stale(Index),
    /// A name that is no node of this cluster.
    Ghost,
}

#[derive(Debug, Clone)]
enum InitGen {
    Absent,
    InProgress,
    Sysid,
}

#[derive(Debug, Clone)]
struct NodeGen {
    dir: DirGen,
    running: bool,
    in_recovery: bool,
    wal: u64,
    timeline: u32,
    upstream: UpstreamGen,
    rewind_failed: bool,
    has_lease: bool,
    deadline: DeadlineGen,
    dcs_reachable: bool,
    /// Bit j: this node can reach peer j's REST API.
    reach_mask: u8,
    unlocked_ago: Option<u64>,
    health: Health,
    nofailover: bool,
    priority: i64,
    /// Has a `members/<name>` key.
    in_dcs: bool,
    /// What the member key says about its WAL position (`None`: the current one).
    member_wal: Option<u64>,
    /// Consecutive loops its policy judged it failed (counts only when `health` is failed).
    failed_loops: u32,
    /// A running replica on a former primary's data directory (not rewound since).
    former_primary: bool,
    /// Its last lease renewal failed.
    renewal_failed: bool,
    /// Its topology tag: 0-4 none, 5 `replicatefrom` the node at the index, 6 `nostream`,
    /// 7 `clonefrom`.
    topology: (u8, usize),
    /// Failsafe mode: its last round of `POST /failsafe` (ms ago, all accepted), the last ping
    /// it accepted (ms ago), when its supervisor started (ms ago).
    failsafe: (Option<(u64, bool)>, Option<u64>, Option<u64>),
}

/// A request in the `failover` key.
#[derive(Debug, Clone)]
struct RequestGen {
    /// `None`: no `leader` field; `Some(None)`: the leader key's holder; else that node.
    leader: Option<Option<Index>>,
    candidate: Option<Index>,
    when: WhenGen,
}

/// `scheduled_at` relative to [`UNIX_NOW`] (2026-12-01T17:30:00Z).
#[derive(Debug, Clone, Copy)]
enum WhenGen {
    Unscheduled,
    /// Five minutes from now.
    Future,
    /// One second ago: due.
    JustPassed,
    /// Half an hour ago: stale.
    Stale,
    Invalid,
}

impl WhenGen {
    fn text(self) -> Option<String> {
        match self {
            WhenGen::Unscheduled => None,
            WhenGen::Future => Some("2026-12-01T17:35:00+00:00".into()),
            WhenGen::JustPassed => Some("2026-12-01T18:29:59+01:00".into()),
            WhenGen::Stale => Some("2026-12-01T17:00:00Z".into()),
            WhenGen::Invalid => Some("after lunch".into()),
        }
    }
}

#[derive(Debug, Clone)]
struct CommonGen {
    now: u64,
    ttl: u64,
    max_lag: u64,
    check_timeline: bool,
    use_pg_rewind: bool,
    backoff: u64,
    initialize: InitGen,
    optime: Option<u64>,
    history: Vec<Option<Index>>,
    leader: LeaderGen,
    ghost_member: bool,
    paused: bool,
    request: Option<RequestGen>,
    /// `None`: failsafe mode off; else on, with the nodes whose bit is set in the `failsafe`
    /// key (0: no key).
    failsafe: Option<u8>,
    /// `None`: synchronous mode off; else on or quorum, with a `sync` key.
    sync: Option<SyncGen>,
    /// `standby_cluster` is set: the cluster replicates from a remote primary.
    standby_cluster: bool,
}

/// Synchronous mode and its `sync` key.
#[derive(Debug, Clone)]
struct SyncGen {
    /// `synchronous_mode: quorum` (else `on`).
    quorum_mode: bool,
    /// The key's leader (`None`: a name of no node).
    leader: Option<Index>,
    /// Bit i: node i is a listed standby.
    voters: u8,
    /// The key's `quorum` (left by quorum mode when above 0 in `on` mode).
    quorum: u32,
}

#[derive(Debug, Clone)]
pub(super) struct ClusterGen {
    names: Vec<String>,
    nodes: Vec<NodeGen>,
    common: CommonGen,
}

/// The true DCS state and the world as each node sees it.
#[derive(Debug, Clone)]
pub(super) struct Scenario {
    pub(super) truth: Cluster,
    pub(super) worlds: Vec<World>,
}

/// WAL positions from a small range so that ties and `maximum_lag_on_failover` edges are common.
pub(super) fn arb_wal() -> impl Strategy<Value = u64> {
    prop_oneof![(0..12u64).prop_map(|k| k * 500), 0..6_000u64]
}

/// Offsets from `now`, often right at the boundary.
fn arb_offset() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(1u64), 0..40_000u64]
}

fn arb_health() -> impl Strategy<Value = Health> {
    prop_oneof![
        8 => Just(Health::Healthy),
        1 => Just(Health::Degraded("slow".into())),
        1 => Just(Health::Failed("down".into())),
    ]
}

fn arb_node() -> impl Strategy<Value = NodeGen> {
    let dir = prop_oneof![
        16 => any::<bool>().prop_map(|was_primary| DirGen::Match { was_primary }),
        2 => Just(DirGen::Empty),
        1 => any::<bool>().prop_map(|was_primary| DirGen::Mismatch { was_primary }),
        1 => Just(DirGen::Unusable),
        1 => Just(DirGen::Unknown),
    ];
    let upstream = prop_oneof![
        Just(UpstreamGen::None),
        Just(UpstreamGen::Leader),
        any::<Index>().prop_map(UpstreamGen::Node),
        Just(UpstreamGen::Remote),
    ];
    let deadline = prop_oneof![
        1 => Just(DeadlineGen::Never),
        3 => arb_offset().prop_map(DeadlineGen::Past),
        6 => arb_offset().prop_map(DeadlineGen::Future),
    ];
    let pg = (
        dir,
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.7),
        arb_wal(),
        1..4u32,
        upstream,
        prop::bool::weighted(0.1),
    );
    let lease = (
        prop::bool::weighted(0.9),
        deadline,
        prop::bool::weighted(0.85),
        prop_oneof![Just(0xffu8), any::<u8>()],
        prop::option::of(0..20_000u64),
        arb_health(),
    );
    let member = (
        prop::bool::weighted(0.15),
        -1..=3i64,
        prop::bool::weighted(0.85),
        prop::option::of(arb_wal()),
        0..4u32,
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
        (0..8u8, 0..7usize),
    );
    let failsafe = (
        prop::option::weighted(0.3, (0..20_000u64, prop::bool::weighted(0.7))),
        prop::option::weighted(0.3, 0..60_000u64),
        prop::option::weighted(0.3, 0..60_000u64),
    );
    (pg, lease, member, failsafe).prop_map(
        |(
            (dir, running, in_recovery, wal, timeline, upstream, rewind_failed),
            (has_lease, deadline, dcs_reachable, reach_mask, unlocked_ago, health),
            (
                nofailover,
                priority,
                in_dcs,
                member_wal,
                failed_loops,
                former_primary,
                renewal_failed,
                topology,
            ),
            failsafe,
        )| NodeGen {
            dir,
            running,
            in_recovery,
            wal,
            timeline,
            upstream,
            rewind_failed,
            has_lease,
            deadline,
            dcs_reachable,
            reach_mask,
            unlocked_ago,
            health,
            nofailover,
            priority,
            in_dcs,
            member_wal,
            failed_loops,
            former_primary,
            renewal_failed,
            topology,
            failsafe,
        },
    )
}

fn arb_request() -> impl Strategy<Value = RequestGen> {
    let when = prop_oneof![
        4 => Just(WhenGen::Unscheduled),
        1 => Just(WhenGen::Future),
        1 => Just(WhenGen::JustPassed),
        1 => Just(WhenGen::Stale),
        1 => Just(WhenGen::Invalid),
    ];
    (
        prop::option::weighted(0.6, prop::option::weighted(0.3, any::<Index>())),
        prop::option::weighted(0.8, any::<Index>()),
        when,
    )
        .prop_map(|(leader, candidate, when)| RequestGen {
            leader,
            candidate,
            when,
        })
}

fn arb_common() -> impl Strategy<Value = CommonGen> {
    let settings = (
        1_000_000..2_000_000u64,
        1_000..60_000u64,
        prop_oneof![Just(0u64), 0..3_000u64, Just(1_048_576u64)],
        any::<bool>(),
        any::<bool>(),
        0..10_000u64,
    );
    let dcs = (
        prop_oneof![
            1 => Just(InitGen::Absent),
            1 => Just(InitGen::InProgress),
            4 => Just(InitGen::Sysid),
        ],
        prop::option::of(arb_wal()),
        prop::collection::vec(prop::option::of(any::<Index>()), 0..4),
        prop_oneof![
            3 => Just(LeaderGen::Absent),
            3 => any::<Index>().prop_map(LeaderGen::OnLease),
            1 => any::<Index>().prop_map(LeaderGen::Stale),
            1 => Just(LeaderGen::Ghost),
        ],
        prop::bool::weighted(0.2),
    );
    let operator = (
        prop::bool::weighted(0.15),
        prop::option::weighted(0.25, arb_request()),
        prop::option::weighted(0.4, prop_oneof![Just(0xffu8), any::<u8>()]),
        prop::option::weighted(0.35, arb_sync()),
        prop::bool::weighted(0.15),
    );
    (settings, dcs, operator).prop_map(
        |(
            (now, ttl, max_lag, check_timeline, use_pg_rewind, backoff),
            (initialize, optime, history, leader, ghost_member),
            (paused, request, failsafe, sync, standby_cluster),
        )| CommonGen {
            now,
            ttl,
            max_lag,
            check_timeline,
            use_pg_rewind,
            backoff,
            initialize,
            optime,
            history,
            leader,
            ghost_member,
            paused,
            request,
            failsafe,
            sync,
            standby_cluster,
        },
    )
}

fn arb_sync() -> impl Strategy<Value = SyncGen> {
    (
        any::<bool>(),
        prop::option::weighted(0.85, any::<Index>()),
        any::<u8>(),
        prop_oneof![2 => Just(0u32), 2 => Just(1u32), 1 => 2..4u32],
    )
        .prop_map(|(quorum_mode, leader, voters, quorum)| SyncGen {
            quorum_mode,
            leader,
            voters,
            quorum,
        })
}

pub(super) fn arb_cluster() -> impl Strategy<Value = ClusterGen> {
    prop::collection::btree_set("[a-z][a-z0-9-]{0,7}", 1..=7).prop_flat_map(|names| {
        let n = names.len();
        (
            Just(names.into_iter().collect::<Vec<_>>()),
            prop::collection::vec(arb_node(), n),
            arb_common(),
        )
            .prop_map(|(names, nodes, common)| ClusterGen {
                names,
                nodes,
                common,
            })
    })
}

/// Everybody sees the same unlocked cluster, reaches every peer, and nobody has waited for
/// the backoff yet. `keep_primaries`: otherwise every running node is a replica, so that the
/// election is not always vetoed by a primary that is still alive.
fn unlocked_all_reachable(mut g: ClusterGen, keep_primaries: bool) -> ClusterGen {
    g.common.leader = LeaderGen::Absent;
    g.common.initialize = InitGen::Sysid;
    g.common.paused = false;
    g.common.request = None;
    g.common.failsafe = None;
    g.common.backoff = g.common.backoff.max(1);
    let backoff = g.common.backoff;
    for n in &mut g.nodes {
        n.dir = match n.dir {
            DirGen::Match { was_primary } | DirGen::Mismatch { was_primary } => {
                DirGen::Match { was_primary }
            }
            DirGen::Empty | DirGen::Unusable | DirGen::Unknown => {
                DirGen::Match { was_primary: false }
            }
        };
        n.dcs_reachable = true;
        n.renewal_failed = false;
        n.reach_mask = 0xff;
        n.unlocked_ago = n.unlocked_ago.map(|a| a % backoff);
        if !keep_primaries {
            n.in_recovery = true;
        }
    }
    g
}

fn node_lease(g: &NodeGen, i: usize) -> Option<i64> {
    g.has_lease.then_some(LEASE_BASE + i as i64)
}

fn build_pg(g: &ClusterGen, i: usize, leader: Option<&Leader>) -> PgView {
    let n = &g.nodes[i];
    let data_dir = match n.dir {
        DirGen::Empty => DataDir::Empty,
        DirGen::Unusable => DataDir::Unusable("not a PostgreSQL data directory".into()),
        DirGen::Unknown => DataDir::Unknown("Too many open files (os error 24)".into()),
        DirGen::Match { was_primary } => DataDir::Initialized {
            sysid: SYSID.into(),
            was_primary,
        },
        DirGen::Mismatch { was_primary } => DataDir::Initialized {
            sysid: OTHER_SYSID.into(),
            was_primary,
        },
    };
    // Only an initialized data directory can run; a running PostgreSQL's state is known. One
    // that could not be read this loop may run too (the supervisor reads the directory when it
    // does not know the system identifier yet, e.g. on its first loop next to a running server).
    let running =
        n.running && matches!(data_dir, DataDir::Initialized { .. } | DataDir::Unknown(_));
    let upstream = match &n.upstream {
        UpstreamGen::None | UpstreamGen::Remote => None,
        UpstreamGen::Leader => leader.map(|l| l.name.clone()),
        UpstreamGen::Node(ix) => Some(g.names[ix.index(g.names.len())].clone()),
    };
    PgView {
        data_dir,
        running,
        in_recovery: running.then_some(n.in_recovery),
        timeline: running.then_some(n.timeline),
        wal_position: running.then_some(n.wal),
        received_lsn: None,
        replayed_lsn: None,
        upstream: if running && n.in_recovery {
            upstream
        } else {
            None
        },
        streaming: Vec::new(),
        former_primary: running && n.in_recovery && n.former_primary,
        receiving: false,
        follows_remote: running && n.in_recovery && matches!(n.upstream, UpstreamGen::Remote),
    }
}

/// A primary's streaming replicas: the running replicas whose upstream it is.
fn fill_streaming(names: &[String], pgs: &mut [PgView]) {
    for i in 0..pgs.len() {
        if !pgs[i].is_primary() {
            continue;
        }
        let streaming = (0..pgs.len())
            .filter(|&j| {
                j != i && pgs[j].is_replica() && pgs[j].upstream.as_deref() == Some(&names[i])
            })
            .map(|j| names[j].clone())
            .collect();
        pgs[i].streaming = streaming;
    }
}

pub(super) fn tags_json(nofailover: bool, priority: i64) -> Map<String, Value> {
    let mut tags = Map::new();
    if nofailover {
        tags.insert("nofailover".into(), Value::Bool(true));
    }
    tags.insert("failover_priority".into(), Value::from(priority));
    tags
}

/// A node's topology tag (`NodeGen::topology`) as text, the way `Settings::tags` holds it.
fn topology_tags(node: &NodeGen, names: &[String]) -> BTreeMap<String, String> {
    let (kind, target) = node.topology;
    let mut t = BTreeMap::new();
    match kind {
        5 => {
            t.insert("replicatefrom".into(), names[target % names.len()].clone());
        }
        6 => {
            t.insert("nostream".into(), "true".into());
        }
        7 => {
            t.insert("clonefrom".into(), "true".into());
        }
        _ => {}
    }
    t
}

/// What `GET /patroni` on a node answers.
pub(super) fn report(pg: &PgView, nofailover: bool, priority: i64) -> PeerState {
    PeerState {
        role: if pg.is_primary() {
            "primary"
        } else {
            "replica"
        }
        .into(),
        state: if pg.running { "running" } else { "stopped" }.into(),
        in_recovery: pg.in_recovery.unwrap_or(true),
        wal_position: pg.wal_position.unwrap_or(0),
        received_lsn: None,
        replayed_lsn: None,
        timeline: pg.timeline,
        nofailover,
        failover_priority: priority,
        tags: BTreeMap::new(),
        healthy: true,
    }
}

pub(super) fn build(g: &ClusterGen) -> Scenario {
    let c = &g.common;
    let n = g.names.len();
    let leader = match &c.leader {
        LeaderGen::Absent => None,
        LeaderGen::OnLease(ix) => {
            let i = ix.index(n);
            Some(Leader {
                name: g.names[i].clone(),
                lease: node_lease(&g.nodes[i], i).unwrap_or(STALE_LEASE_BASE + i as i64),
                mod_revision: 3,
            })
        }
        LeaderGen::Stale(ix) => {
            let i = ix.index(n);
            Some(Leader {
                name: g.names[i].clone(),
                lease: STALE_LEASE_BASE + i as i64,
                mod_revision: 3,
            })
        }
        LeaderGen::Ghost => Some(Leader {
            name: GHOST.into(),
            lease: GHOST_LEASE,
            mod_revision: 3,
        }),
    };
    let mut pgs: Vec<PgView> = (0..n).map(|i| build_pg(g, i, leader.as_ref())).collect();
    fill_streaming(&g.names, &mut pgs);

    let mut members: Vec<Member> = Vec::new();
    for (i, node) in g.nodes.iter().enumerate() {
        if !node.in_dcs {
            continue;
        }
        let pg = &pgs[i];
        members.push(Member {
            name: g.names[i].clone(),
            data: MemberData {
                role: Some(
                    if pg.is_primary() {
                        "primary"
                    } else {
                        "replica"
                    }
                    .into(),
                ),
                state: Some(if pg.running { "running" } else { "stopped" }.into()),
                xlog_location: node.member_wal.or(pg.wal_position),
                timeline: pg.timeline,
                tags: {
                    let mut t = tags_json(node.nofailover, node.priority);
                    for (k, v) in topology_tags(node, &g.names) {
                        let v = if v == "true" {
                            Value::Bool(true)
                        } else {
                            Value::String(v)
                        };
                        t.insert(k, v);
                    }
                    t
                },
                ..MemberData::default()
            },
            lease: node_lease(node, i).unwrap_or(STALE_LEASE_BASE + i as i64),
            mod_revision: 2,
        });
    }
    if c.ghost_member {
        members.push(Member {
            name: GHOST.into(),
            data: MemberData {
                role: Some("replica".into()),
                xlog_location: Some(1_000_000),
                ..MemberData::default()
            },
            lease: GHOST_LEASE,
            mod_revision: 2,
        });
    }
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let history = c
        .history
        .iter()
        .enumerate()
        .map(|(k, who)| HistoryLine {
            timeline: k as u32 + 1,
            lsn: 500 * (k as u64 + 1),
            reason: "no recovery target specified".into(),
            timestamp: Some("2026-01-01T00:00:00+00:00".into()),
            new_leader: who.as_ref().map(|ix| g.names[ix.index(n)].clone()),
        })
        .collect();
    let leader_name = leader.as_ref().map(|l| l.name.clone());
    let truth = Cluster {
        initialize: match c.initialize {
            InitGen::Absent => None,
            InitGen::InProgress => Some(String::new()),
            InitGen::Sysid => Some(SYSID.into()),
        },
        leader,
        members,
        status: crate::dcs::Status {
            optime: c.optime,
            ..Default::default()
        },
        history,
        failover: c.request.as_ref().map(|r| {
            (
                crate::dcs::Failover {
                    leader: r.leader.map(|l| match l {
                        Some(ix) => g.names[ix.index(n)].clone(),
                        None => leader_name.clone().unwrap_or_else(|| g.names[0].clone()),
                    }),
                    member: r.candidate.map(|ix| g.names[ix.index(n)].clone()),
                    scheduled_at: r.when.text(),
                },
                5,
            )
        }),
        failsafe: c.failsafe.filter(|m| *m != 0).map(|mask| {
            (0..n)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| {
                    (
                        g.names[i].clone(),
                        format!("http://{}:8008/patroni", g.names[i]),
                    )
                })
                .collect()
        }),
        sync: c.sync.as_ref().map(|sg| {
            let voters: Vec<&str> = (0..n)
                .filter(|i| sg.voters & (1 << i) != 0)
                .map(|i| g.names[i].as_str())
                .collect();
            (
                crate::dcs::SyncState {
                    leader: Some(match &sg.leader {
                        Some(ix) => g.names[ix.index(n)].clone(),
                        None => GHOST.into(),
                    }),
                    quorum: Some(sg.quorum),
                    sync_standby: (!voters.is_empty()).then(|| voters.join(",")),
                },
                8,
            )
        }),
        revision: 42,
        ..Cluster::default()
    };

    let kept_by_failsafe = g
        .nodes
        .iter()
        .position(|n| matches!(n.failsafe.0, Some((_, true))));
    let worlds = (0..n)
        .map(|i| {
            let node = &g.nodes[i];
            let peers = (0..n)
                .filter(|&j| j != i)
                .map(|j| {
                    let reachable = node.reach_mask & (1 << j) != 0;
                    let state = reachable.then(|| {
                        let mut r = report(&pgs[j], g.nodes[j].nofailover, g.nodes[j].priority);
                        r.healthy = !matches!(g.nodes[j].health, Health::Failed(_));
                        r
                    });
                    (g.names[j].clone(), state)
                })
                // The supervisor asks every member key; a member with no node answers nothing.
                .chain(c.ghost_member.then(|| (GHOST.to_string(), None)))
                .collect();
            World {
                now_ms: c.now,
                me: g.names[i].clone(),
                cluster: node.dcs_reachable.then(|| truth.clone()),
                pg: pgs[i].clone(),
                peers,
                settings: Settings {
                    ttl_ms: c.ttl,
                    maximum_lag_on_failover: c.max_lag,
                    check_timeline: c.check_timeline,
                    use_pg_rewind: c.use_pg_rewind,
                    nofailover: node.nofailover,
                    failover_priority: node.priority,
                    tags: topology_tags(node, &g.names),
                    race_backoff_ms: c.backoff,
                    // As the supervisor: synchronous mode does not apply to a standby cluster.
                    synchronous_mode: c.sync.is_some() && !c.standby_cluster,
                    quorum_commit: c.sync.as_ref().is_some_and(|s| s.quorum_mode)
                        && !c.standby_cluster,
                    paused: c.paused,
                    loop_wait_ms: 1_000,
                    failed_loops_before_handover: 2,
                    // One of the topology generator's "no tag" values.
                    clone_without_leader: node.topology.0 == 4,
                    failsafe_mode: c.failsafe.is_some(),
                    standby_cluster: c.standby_cluster,
                },
                health: node.health.clone(),
                now_unix_ms: UNIX_NOW,
                memory: Memory {
                    our_lease: node_lease(node, i),
                    write_deadline_ms: match node.deadline {
                        DeadlineGen::Never => None,
                        DeadlineGen::Past(x) => Some(c.now - x),
                        DeadlineGen::Future(x) => Some(c.now + 1 + x),
                    },
                    unlocked_since_ms: node.unlocked_ago.map(|a| c.now - a),
                    // Its last successful read saw the key as it is now.
                    known_lock_lease: truth
                        .leader
                        .as_ref()
                        .filter(|l| l.name == g.names[i])
                        .map(|l| l.lease),
                    failed_health_loops: if matches!(node.health, Health::Failed(_)) {
                        node.failed_loops
                    } else {
                        0
                    },
                    rewind_failed: node.rewind_failed,
                    renewal_failed: node.renewal_failed,
                    ..Memory::default()
                },
            }
            .with_failsafe_memory(
                // At most one leader runs on its members' acceptance: a member that runs as
                // primary refuses every other's round.
                match node.failsafe {
                    (Some((ago, true)), ping, started) if Some(i) != kept_by_failsafe => {
                        (Some((ago, false)), ping, started)
                    }
                    other => other,
                },
                c.now,
                c.ttl,
            )
        })
        .collect();
    Scenario { truth, worlds }
}

// ── the narrower shapes some properties need ──────────────────────────────────────────────

/// A healthy locked cluster: node `leader` holds the key on its lease and runs as primary,
/// every other node runs as a replica, and everybody reaches the DCS and every peer. The
/// request, pause, health and WAL stay as generated.
fn locked_all_reachable(mut g: ClusterGen, leader: Index) -> ClusterGen {
    let l = leader.index(g.nodes.len());
    g.common.leader = LeaderGen::OnLease(leader);
    g.common.initialize = InitGen::Sysid;
    for (i, n) in g.nodes.iter_mut().enumerate() {
        n.dir = DirGen::Match {
            was_primary: i == l,
        };
        n.running = true;
        n.in_recovery = i != l;
        n.dcs_reachable = true;
        n.renewal_failed = false;
        n.reach_mask = 0xff;
        n.has_lease = true;
        n.in_dcs = true;
        n.deadline = DeadlineGen::Future(5_000);
        if i != l {
            n.upstream = UpstreamGen::Leader;
        }
    }
    g
}

pub(super) fn arb_locked_cluster() -> impl Strategy<Value = ClusterGen> {
    (arb_cluster(), any::<Index>()).prop_map(|(g, l)| locked_all_reachable(g, l))
}

/// An unlocked, all-reachable cluster with an unscheduled failover request naming `candidate`,
/// in which nobody has waited for a leader as long as `ttl` yet.
pub(super) fn arb_manual_failover_cluster() -> impl Strategy<Value = ClusterGen> {
    (
        arb_cluster(),
        any::<Index>(),
        prop::option::of(any::<Index>()),
    )
        .prop_map(|(g, candidate, leader)| {
            let mut g = unlocked_all_reachable(g, false);
            g.common.request = Some(RequestGen {
                leader: leader.map(Some),
                candidate: Some(candidate),
                when: WhenGen::Unscheduled,
            });
            let ttl = g.common.ttl;
            for n in &mut g.nodes {
                n.unlocked_ago = n.unlocked_ago.map(|a| a % ttl);
            }
            g
        })
}

/// An unlocked cluster (see [`unlocked_all_reachable`]); three in ten keep their running primaries.
pub(super) fn arb_unlocked_cluster() -> impl Strategy<Value = ClusterGen> {
    (arb_cluster(), prop::bool::weighted(0.3))
        .prop_map(|(g, keep_primaries)| unlocked_all_reachable(g, keep_primaries))
}

/// `cases` cases, and no regression file written on failure.
pub(super) fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

impl World {
    /// The failsafe memory, through the production methods: a round (which may extend the
    /// deadline), an accepted ping, the supervisor's start.
    fn with_failsafe_memory(
        mut self,
        (round, ping, started): (Option<(u64, bool)>, Option<u64>, Option<u64>),
        now: u64,
        ttl: u64,
    ) -> World {
        if let Some((ago, accepted)) = round {
            self.memory.failsafe_round_done(now - ago, ttl, accepted);
        }
        if let Some(ago) = ping {
            self.memory
                .failsafe_ping_accepted("someone".into(), now - ago, ttl);
        }
        if let Some(ago) = started {
            self.memory.supervisor_started(now - ago);
        }
        self
    }
}
