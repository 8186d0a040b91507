//! Fixtures for the unit tests: fixed system identifiers, leases and times, and builders of the
//! DCS view, the local PostgreSQL, whole [`World`]s, peers, policies and the actions expected.
//! The generators and the simulation reuse the constants and the basic builders.

use crate::dcs::{Cluster, Leader, Member, MemberData};
use crate::ha::policy::{self, DefaultPolicy, ElectionView, Health, Policy, Ranked, Ranking};
use crate::ha::{
    AcquireReason, Action, DataDir, Decision, DemoteMode, HandOverReason, Memory, PeerState,
    PgView, Settings, World, decide,
};
use std::collections::BTreeMap;

pub(super) const SYSID: &str = "7268616322854375442";
pub(super) const OTHER_SYSID: &str = "7000000000000000001";
pub(super) const NOW: u64 = 1_000_000;
pub(super) const MY_LEASE: i64 = 11;
pub(super) const OLD_LEASE: i64 = 7;
pub(super) const OTHER_LEASE: i64 = 22;
/// 2026-12-01T17:30:00Z
pub(super) const UNIX_NOW: u64 = 1_796_146_200_000;

pub(super) fn settings() -> Settings {
    Settings {
        ttl_ms: 30_000,
        maximum_lag_on_failover: 1_048_576,
        check_timeline: false,
        use_pg_rewind: true,
        nofailover: false,
        failover_priority: 1,
        tags: BTreeMap::new(),
        race_backoff_ms: 5_000,
        synchronous_mode: false,
        quorum_commit: false,
        paused: false,
        loop_wait_ms: 10_000,
        clone_without_leader: false,
        failed_loops_before_handover: 2,
        failsafe_mode: false,
        standby_cluster: false,
    }
}

pub(super) fn leader(name: &str, lease: i64) -> Leader {
    Leader {
        name: name.into(),
        lease,
        mod_revision: 1,
    }
}

pub(super) fn member(name: &str, role: &str, wal: u64) -> Member {
    Member {
        name: name.into(),
        data: MemberData {
            role: Some(role.into()),
            state: Some("running".into()),
            xlog_location: Some(wal),
            timeline: Some(1),
            ..MemberData::default()
        },
        lease: 99,
        mod_revision: 1,
    }
}

/// An initialized cluster (`initialize` = [`SYSID`]) with the given leader key.
pub(super) fn cluster(leader: Option<Leader>) -> Cluster {
    Cluster {
        initialize: Some(SYSID.into()),
        leader,
        ..Cluster::default()
    }
}

fn initialized(was_primary: bool) -> DataDir {
    DataDir::Initialized {
        sysid: SYSID.into(),
        was_primary,
    }
}

pub(super) fn pg_primary(wal: u64) -> PgView {
    PgView {
        data_dir: initialized(true),
        running: true,
        in_recovery: Some(false),
        timeline: Some(1),
        wal_position: Some(wal),
        received_lsn: None,
        replayed_lsn: None,
        upstream: None,
        streaming: Vec::new(),
        former_primary: false,
        receiving: false,
        follows_remote: false,
    }
}

pub(super) fn pg_replica(wal: u64, upstream: Option<&str>) -> PgView {
    PgView {
        data_dir: initialized(false),
        running: true,
        in_recovery: Some(true),
        timeline: Some(1),
        wal_position: Some(wal),
        received_lsn: None,
        replayed_lsn: None,
        upstream: upstream.map(str::to_string),
        streaming: Vec::new(),
        former_primary: false,
        receiving: false,
        follows_remote: false,
    }
}

pub(super) fn pg_stopped(was_primary: bool) -> PgView {
    PgView {
        data_dir: initialized(was_primary),
        running: false,
        in_recovery: None,
        timeline: None,
        wal_position: None,
        received_lsn: None,
        replayed_lsn: None,
        upstream: None,
        streaming: Vec::new(),
        former_primary: false,
        receiving: false,
        follows_remote: false,
    }
}

pub(super) fn pg_empty() -> PgView {
    PgView {
        data_dir: DataDir::Empty,
        ..pg_stopped(false)
    }
}

/// Node `me` on lease [`MY_LEASE`], write deadline 20 s in the future, no peers.
pub(super) fn world(me: &str, cluster: Option<Cluster>, pg: PgView) -> World {
    World {
        now_ms: NOW,
        me: me.into(),
        cluster,
        pg,
        peers: BTreeMap::new(),
        settings: settings(),
        health: Health::Healthy,
        now_unix_ms: UNIX_NOW,
        memory: Memory {
            our_lease: Some(MY_LEASE),
            write_deadline_ms: Some(NOW + 20_000),
            unlocked_since_ms: Some(NOW),
            ..Memory::default()
        },
    }
    .with_known_lock()
}

impl World {
    /// Fill `known_lock_lease` from the cluster view, as the supervisor does after a read.
    fn with_known_lock(mut self) -> World {
        if let Some(c) = &self.cluster {
            self.memory.known_lock_lease = c
                .leader
                .as_ref()
                .filter(|l| l.name == self.me)
                .map(|l| l.lease);
        }
        self
    }
}

pub(super) fn peer(in_recovery: bool, running: bool, wal: u64) -> Option<PeerState> {
    Some(PeerState {
        role: if in_recovery { "replica" } else { "primary" }.into(),
        state: if running { "running" } else { "stopped" }.into(),
        in_recovery,
        wal_position: wal,
        received_lsn: None,
        replayed_lsn: None,
        timeline: Some(1),
        nofailover: false,
        failover_priority: 1,
        tags: BTreeMap::new(),
        healthy: true,
    })
}

pub(super) fn peer_replica(wal: u64) -> Option<PeerState> {
    peer(true, true, wal)
}

pub(super) fn decide_default(w: &World) -> Decision {
    decide(w, &DefaultPolicy)
}

pub(super) fn actions(w: &World) -> Vec<Action> {
    decide_default(w).actions
}

pub(super) fn immediate() -> Action {
    Action::Demote {
        mode: DemoteMode::Immediate,
    }
}

pub(super) fn offline() -> Action {
    Action::Demote {
        mode: DemoteMode::Offline,
    }
}

pub(super) fn acquire() -> Action {
    Action::AcquireLeader {
        reason: AcquireReason::LeaderMissing,
    }
}

pub(super) fn acquire_requested() -> Action {
    Action::AcquireLeader {
        reason: AcquireReason::RequestedFailover,
    }
}

pub(super) fn acquire_paused() -> Action {
    Action::AcquireLeader {
        reason: AcquireReason::PausedTakeover,
    }
}

pub(super) fn handover(to: &str, reason: HandOverReason) -> Action {
    Action::HandOver {
        to: to.into(),
        reason,
    }
}

/// The request in the world's `failover` key (the memory remembers when it first saw it).
pub(super) fn request_in(w: &World) -> crate::dcs::Failover {
    w.cluster
        .as_ref()
        .and_then(|c| c.failover.as_ref())
        .map(|(f, _)| f.clone())
        .unwrap_or_default()
}

/// Me = `b`, a healthy running replica with `me_wal`; no leader key; `/status` optime 1000;
/// members a, b, c in the DCS (a is the former primary).
pub(super) fn election_world(me_wal: u64, peers: Vec<(&str, Option<PeerState>)>) -> World {
    let mut c = cluster(None);
    c.members = vec![
        member("a", "primary", 1_000),
        member("b", "replica", me_wal),
        member("c", "replica", 900),
    ];
    c.status.optime = Some(1_000);
    let mut w = world("b", Some(c), pg_replica(me_wal, Some("a")));
    w.peers = peers.into_iter().map(|(n, p)| (n.to_string(), p)).collect();
    w
}

/// A policy with a fixed answer, to check that `decide` follows the policy's ranking.
pub(super) struct Fixed(pub(super) Ranking);

impl Policy for Fixed {
    fn name(&self) -> String {
        "fixed".into()
    }
    fn rank(&self, _view: &ElectionView) -> Ranking {
        self.0.clone()
    }
    fn health(&self, _facts: &policy::HealthFacts) -> Health {
        Health::Healthy
    }
}

pub(super) fn ranked(names: &[&str]) -> Ranking {
    Ranking::Candidates(
        names
            .iter()
            .map(|n| Ranked {
                name: n.to_string(),
                reason: "fixed".into(),
            })
            .collect(),
    )
}

/// b leads on its lease; c is a healthy replica just behind; a switchover request in the key.
pub(super) fn switchover_world(
    leader_field: Option<&str>,
    candidate: Option<&str>,
    at: Option<&str>,
) -> World {
    let mut c = cluster(Some(leader("b", MY_LEASE)));
    c.members = vec![member("b", "primary", 1_000), member("c", "replica", 990)];
    c.status.optime = Some(1_000);
    c.failover = Some((
        crate::dcs::Failover {
            leader: leader_field.map(str::to_string),
            member: candidate.map(str::to_string),
            scheduled_at: at.map(str::to_string),
        },
        3,
    ));
    let mut w = world("b", Some(c), pg_primary(1_000));
    w.pg.streaming = vec!["c".into()];
    w.peers = [("c".to_string(), peer_replica(990))].into();
    w
}

/// As [`switchover_world`] without a request; b's policy has judged it failed for `loops`.
pub(super) fn failed_leader_world(loops: u32) -> World {
    let mut w = switchover_world(None, None, None);
    if let Some(c) = w.cluster.as_mut() {
        c.failover = None;
    }
    w.health = Health::Failed("canary write failed".into());
    w.memory.failed_health_loops = loops;
    w
}
