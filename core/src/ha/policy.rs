//! The `Policy` trait: who may be promoted and what counts as healthy.
//!
//! The decision core asks the policy to rank the candidates of an election; the built-in
//! [`DefaultPolicy`] follows Patroni's rules. WebAssembly policies implement the same trait.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why an election is being held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ElectionReason {
    /// The leader key expired or was deleted.
    LeaderLost,
    /// A fresh cluster with no leader yet.
    NoLeader,
    /// The leader hands over because its policy judged it failed; the leader is not in the
    /// view's members.
    LeaderUnhealthy,
    /// An operator asked the leader to hand over; the leader is not in the view's members.
    Switchover,
}

/// One member as the election sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateView {
    /// The member's name.
    pub name: String,
    /// `primary`, `replica`, ...
    pub role: String,
    /// Patroni's state string (`running`, ...).
    pub state: String,
    /// The timeline it is on, when known.
    pub timeline: Option<u32>,
    /// `max(received, replayed)` or the flush LSN of a primary.
    pub wal_position: Option<u64>,
    /// A replica's last received (written) WAL position, when known.
    #[serde(default)]
    pub received_lsn: Option<u64>,
    /// A replica's last replayed WAL position, when known.
    #[serde(default)]
    pub replayed_lsn: Option<u64>,
    /// Whether PostgreSQL on the member is in recovery (a replica).
    pub in_recovery: bool,
    /// Whether the member answered this round (always true for the local node).
    pub reachable: bool,
    /// Tagged `nofailover`: never promoted.
    pub nofailover: bool,
    /// Its `failover_priority` tag (0 or less: never promoted); among equally advanced
    /// candidates, the higher wins.
    pub failover_priority: i64,
    /// Its tags, as text (such as `zone`).
    pub tags: BTreeMap<String, String>,
    /// The policy's own health verdict on the member, if known.
    pub healthy: bool,
}

/// The whole view handed to the policy: every node computes the same ranking from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElectionView {
    /// The members, sorted by name: this node, the peers polled and the other member keys (a
    /// hand-over leaves the leader out).
    pub members: Vec<CandidateView>,
    /// The leader this election replaces, when known.
    pub former_leader: Option<String>,
    /// The former leader's `zone` tag, when the former leader is not among the members (a
    /// hand-over) or its tags are known.
    #[serde(default)]
    pub former_leader_zone: Option<String>,
    /// Why the election is held.
    pub reason: ElectionReason,
    /// `/status` optime of the last leader.
    pub leader_optime: Option<u64>,
    /// How many bytes behind `leader_optime` a candidate may be.
    pub maximum_lag_on_failover: u64,
    /// Patroni's cluster timeline (from `/history`).
    pub cluster_timeline: u32,
    /// Candidates must be on `cluster_timeline`.
    pub check_timeline: bool,
    /// Synchronous mode: only these members (the `sync` key's leader and standbys; under quorum
    /// commit those whose votes prove they hold every acknowledged commit, see
    /// [`super::quorum::proves`]) may be promoted. `None` when synchronous mode is off or has
    /// not published a `sync` key yet.
    #[serde(default)]
    pub sync_members: Option<Vec<String>>,
    /// Monotonic milliseconds (for policies that reason about time).
    pub now_ms: u64,
}

/// A ranked candidate with the policy's reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    /// The candidate's member name.
    pub name: String,
    /// Why the policy ranked it so, for the logs.
    pub reason: String,
}

/// The policy's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Ranking {
    /// Eligible candidates, best first.
    Candidates(Vec<Ranked>),
    /// No candidate is safe: nobody may take the leader key now.
    Veto(String),
}

/// Health verdict on the local node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// Nothing is wrong.
    Healthy,
    /// Something is wrong, but not enough to act on: reported, nothing more.
    Degraded(String),
    /// The node must not lead: it is not promoted, and a leader failed for
    /// [`failed_loops_before_handover`](super::Settings::failed_loops_before_handover) loops in
    /// a row hands over.
    Failed(String),
}

/// Facts about the local PostgreSQL the health check sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthFacts {
    /// The node's role: `primary`, `replica`, `demoted`, `uninitialized`.
    pub role: String,
    /// What its PostgreSQL is doing: `running`, `starting`, `stopped`, `crashed`, ...
    pub state: String,
    /// The timeline PostgreSQL is on, when known.
    pub timeline: Option<u32>,
    /// The flush LSN on a primary, the larger of the received and replayed LSNs on a replica.
    pub wal_position: Option<u64>,
    /// A replica's last received WAL position.
    #[serde(default)]
    pub received_lsn: Option<u64>,
    /// A replica's last replayed WAL position.
    #[serde(default)]
    pub replayed_lsn: Option<u64>,
    /// How many standbys stream from this node.
    pub replication_connections: u32,
    /// A replica's distance in bytes behind the leader's last optime (`/status`).
    pub lag_bytes: Option<u64>,
    /// How long PostgreSQL has been in `state`, in seconds.
    pub seconds_in_state: u64,
}

/// The rules a node follows in an election and in judging its own health: the built-in
/// [`DefaultPolicy`], or WebAssembly policies loaded by the supervisor.
pub trait Policy: Send + Sync {
    /// The name the policy goes by in logs and in the member key.
    fn name(&self) -> String;
    /// Rank the eligible candidates of an election.
    fn rank(&self, view: &ElectionView) -> Ranking;
    /// Judge the local node's health.
    fn health(&self, facts: &HealthFacts) -> Health;
}

/// An LSN as PostgreSQL writes it (`0/3000060`).
fn lsn_text(v: u64) -> String {
    format!("{:X}/{:X}", v >> 32, v & 0xffff_ffff)
}

/// Patroni's rules: eligible members are reachable replicas, not `nofailover`, within
/// `maximum_lag_on_failover` of the last leader optime (and on the cluster timeline when
/// `check_timeline` is set); best first by WAL position, then `failover_priority`, then name.
/// A reachable member still running as primary vetoes the election ("primary is still alive").
#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultPolicy;

impl DefaultPolicy {
    /// Why `m` may not be promoted, or `None` if it may.
    pub fn ineligible(view: &ElectionView, m: &CandidateView) -> Option<String> {
        if !m.reachable {
            return Some("unreachable".into());
        }
        if m.nofailover || m.failover_priority <= 0 {
            return Some("tagged nofailover".into());
        }
        if !m.healthy {
            return Some("failed its health check".into());
        }
        if !m.in_recovery {
            return Some("not a replica".into());
        }
        if m.state != "running" {
            return Some(format!("PostgreSQL is {}", m.state));
        }
        let Some(wal) = m.wal_position else {
            return Some("WAL position unknown".into());
        };
        if let Some(optime) = view.leader_optime
            && optime.saturating_sub(wal) > view.maximum_lag_on_failover
        {
            return Some(format!(
                "lag {} bytes exceeds maximum_lag_on_failover {}",
                optime - wal,
                view.maximum_lag_on_failover
            ));
        }
        if let Some(sync) = &view.sync_members
            && !sync.contains(&m.name)
        {
            return Some("not a synchronous standby (synchronous_mode is on)".into());
        }
        if view.check_timeline && m.timeline.is_none_or(|t| t < view.cluster_timeline) {
            return Some(format!(
                "timeline {:?} is behind the cluster timeline {}",
                m.timeline, view.cluster_timeline
            ));
        }
        None
    }
}

impl Policy for DefaultPolicy {
    fn name(&self) -> String {
        "builtin-default".into()
    }

    fn rank(&self, view: &ElectionView) -> Ranking {
        if let Some(p) = view
            .members
            .iter()
            .find(|m| m.reachable && !m.in_recovery && m.state == "running")
        {
            return Ranking::Veto(format!("primary {} is still alive", p.name));
        }
        let mut eligible: Vec<&CandidateView> = view
            .members
            .iter()
            .filter(|m| Self::ineligible(view, m).is_none())
            .collect();
        eligible.sort_by(|a, b| {
            b.wal_position
                .cmp(&a.wal_position)
                .then(b.failover_priority.cmp(&a.failover_priority))
                .then(a.name.cmp(&b.name))
        });
        Ranking::Candidates(
            eligible
                .into_iter()
                .map(|m| Ranked {
                    name: m.name.clone(),
                    reason: format!(
                        "wal position {}, failover priority {}",
                        lsn_text(m.wal_position.unwrap_or(0)),
                        m.failover_priority
                    ),
                })
                .collect(),
        )
    }

    fn health(&self, facts: &HealthFacts) -> Health {
        if facts.state == "running" {
            Health::Healthy
        } else {
            Health::Degraded(format!("PostgreSQL is {}", facts.state))
        }
    }
}
