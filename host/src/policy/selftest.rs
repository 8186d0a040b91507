//! Recorded cluster views every policy must answer validly, within its deadline, before it
//! serves; also used by the benchmarks.

use crate::ha::policy::{CandidateView, ElectionReason, ElectionView, HealthFacts};
use std::collections::BTreeMap;

const MIB: u64 = 1024 * 1024;
const OPTIME: u64 = 0x3_0000_0000;

fn member(name: &str, zone: &str, wal: Option<u64>) -> CandidateView {
    let mut tags = BTreeMap::new();
    tags.insert("zone".to_string(), zone.to_string());
    CandidateView {
        name: name.into(),
        role: "replica".into(),
        state: "running".into(),
        timeline: Some(3),
        wal_position: wal,
        in_recovery: true,
        reachable: true,
        nofailover: false,
        failover_priority: 1,
        tags,
        healthy: true,
    }
}

fn unreachable(mut m: CandidateView, role: &str) -> CandidateView {
    m.role = role.into();
    m.state = "unreachable".into();
    m.reachable = false;
    m.healthy = false;
    m
}

fn view(members: Vec<CandidateView>, former_leader: Option<&str>) -> ElectionView {
    ElectionView {
        members,
        former_leader: former_leader.map(str::to_string),
        former_leader_zone: None,
        reason: ElectionReason::LeaderLost,
        leader_optime: Some(OPTIME),
        maximum_lag_on_failover: MIB,
        cluster_timeline: 3,
        check_timeline: true,
        sync_members: None,
        now_ms: 86_400_000,
    }
}

/// The recorded views, by name: a healthy 3-node cluster that lost its leader, one with a
/// lagging replica, one whose primary still runs, a new cluster, and a 9-member cluster over
/// three zones in synchronous mode.
pub fn sample_views() -> Vec<(&'static str, ElectionView)> {
    let leader_lost = view(
        vec![
            unreachable(member("pg-a", "eu-1", Some(OPTIME)), "primary"),
            member("pg-b", "eu-1", Some(OPTIME - 4096)),
            member("pg-c", "eu-2", Some(OPTIME - 8192)),
        ],
        Some("pg-a"),
    );

    let mut lagging = leader_lost.clone();
    lagging.members[1].wal_position = Some(OPTIME - 64 * MIB);

    let mut primary = leader_lost.clone();
    primary.members[0] = member("pg-a", "eu-1", Some(OPTIME));
    primary.members[0].role = "primary".into();
    primary.members[0].in_recovery = false;

    let mut fresh = view(
        vec![
            member("node1", "dc1", Some(0x100_0060)),
            member("node2", "dc2", Some(0x100_0060)),
        ],
        None,
    );
    fresh.reason = ElectionReason::NoLeader;
    fresh.leader_optime = None;
    fresh.cluster_timeline = 1;
    for m in &mut fresh.members {
        m.timeline = Some(1);
    }

    vec![
        ("leader-lost-3", leader_lost),
        ("lagging-replica", lagging),
        ("primary-running", primary),
        ("new-cluster", fresh),
        ("sync-9-zones", nine_members()),
    ]
}

/// Nine members in three zones, synchronous mode, one `nofailover`, one unreachable, the former
/// leader gone.
pub fn nine_members() -> ElectionView {
    let zones = ["eu-1", "eu-2", "eu-3"];
    let mut members = Vec::new();
    for i in 0..9u64 {
        let mut m = member(
            &format!("pg-{}", i + 1),
            zones[(i % 3) as usize],
            Some(OPTIME - i * 1000),
        );
        m.tags.insert("rack".into(), format!("r{}", i % 4));
        m.failover_priority = 1 + (i % 2) as i64;
        members.push(m);
    }
    members[0] = unreachable(members[0].clone(), "primary");
    members[4].nofailover = true;
    members[7].wal_position = Some(OPTIME - 2 * MIB);
    let mut v = view(members, Some("pg-1"));
    v.sync_members = Some(vec!["pg-2".into(), "pg-3".into(), "pg-6".into()]);
    v
}

/// Health facts the self-test asks a `check-health` policy about.
pub(crate) fn sample_facts() -> Vec<(&'static str, HealthFacts)> {
    vec![
        (
            "replica-running",
            HealthFacts {
                role: "replica".into(),
                state: "running".into(),
                timeline: Some(3),
                wal_position: Some(OPTIME),
                replication_connections: 0,
                lag_bytes: Some(0),
                seconds_in_state: 600,
            },
        ),
        (
            "primary-stopped",
            HealthFacts {
                role: "primary".into(),
                state: "stopped".into(),
                timeline: Some(3),
                wal_position: None,
                replication_connections: 0,
                lag_bytes: None,
                seconds_in_state: 5,
            },
        ),
    ]
}
