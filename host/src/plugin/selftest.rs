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
        received_lsn: None,
        replayed_lsn: None,
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
/// lagging replica, one whose primary still runs, a new cluster; zones: the former leader's
/// zone with no eligible candidate left (a cross-zone failover), and a member without a zone;
/// synchronous mode: the synchronous standby is eligible, none is (unreachable), the `sync` key
/// names no standby; and a 9-member cluster over three zones in synchronous mode.
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

    // The former leader's zone eu-1 has a replica, but it is tagged nofailover: only the two
    // in eu-2 are eligible.
    let mut cross_zone = leader_lost.clone();
    cross_zone.members[1].nofailover = true;
    cross_zone
        .members
        .push(member("pg-d", "eu-2", Some(OPTIME - 2048)));
    // The most advanced replica has no zone tag.
    let mut zoneless = leader_lost.clone();
    zoneless.members.push(member("pg-d", "", Some(OPTIME)));
    zoneless.members[3].tags.clear();

    // Synchronous mode: pg-c (lagging, other zone) is the synchronous standby.
    let mut sync_eligible = leader_lost.clone();
    sync_eligible.members[2].wal_position = Some(OPTIME - 256 * 1024);
    sync_eligible.sync_members = Some(vec!["pg-a".into(), "pg-c".into()]);
    // The synchronous standby is unreachable: nobody may be promoted without losing a commit.
    let mut sync_gone = sync_eligible.clone();
    sync_gone.members[2] = unreachable(sync_gone.members[2].clone(), "replica");
    // The `sync` key names only the former leader (no standby caught up yet).
    let mut sync_none = sync_eligible.clone();
    sync_none.sync_members = Some(vec!["pg-a".into()]);

    vec![
        ("leader-lost-3", leader_lost),
        ("lagging-replica", lagging),
        ("primary-running", primary),
        ("new-cluster", fresh),
        ("zone-cross", cross_zone),
        ("zone-missing", zoneless),
        ("sync-standby", sync_eligible),
        ("sync-standby-gone", sync_gone),
        ("sync-no-standby", sync_none),
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
                received_lsn: None,
                replayed_lsn: None,
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
                received_lsn: None,
                replayed_lsn: None,
                replication_connections: 0,
                lag_bytes: None,
                seconds_in_state: 5,
            },
        ),
    ]
}
