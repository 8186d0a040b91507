//! Between the decision core's types and the WIT types, and the checks on what a policy answers.

use super::runtime::wit;
use super::{Event, Role};
use crate::ha::policy::{
    CandidateView, ElectionReason, ElectionView, Health, HealthFacts, Ranked, Ranking,
};
use std::collections::HashSet;

/// The member's role as the WIT sees it: `unknown` when it is not reachable or not running,
/// else primary or replica by `in_recovery`.
fn member_role(m: &CandidateView) -> wit::Role {
    if !m.reachable || m.state != "running" {
        wit::Role::Unknown
    } else if m.in_recovery {
        wit::Role::Replica
    } else {
        wit::Role::Primary
    }
}

fn role(r: Role) -> wit::Role {
    match r {
        Role::Primary => wit::Role::Primary,
        Role::Replica => wit::Role::Replica,
        Role::Unknown => wit::Role::Unknown,
    }
}

pub(crate) fn cluster_view(view: &ElectionView) -> wit::ClusterView {
    let former_leader_zone = view.former_leader_zone.clone().or_else(|| {
        view.former_leader
            .as_ref()
            .and_then(|f| view.members.iter().find(|m| &m.name == f))
            .and_then(|m| m.tags.get("zone").cloned())
    });
    let mut members: Vec<wit::Member> = view
        .members
        .iter()
        .map(|m| wit::Member {
            name: m.name.clone(),
            role: member_role(m),
            state: m.state.clone(),
            timeline: m.timeline,
            wal_position: m.wal_position,
            lag: match (view.leader_optime, m.wal_position) {
                (Some(optime), Some(wal)) => Some(optime.saturating_sub(wal)),
                _ => None,
            },
            tags: m
                .tags
                .iter()
                .map(|(k, v)| wit::Tag {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            health: if m.healthy {
                wit::Health::Healthy
            } else {
                wit::Health::Failed("failed its health check".into())
            },
            reachable: m.reachable,
            zone: m.tags.get("zone").cloned(),
            nofailover: m.nofailover || m.failover_priority <= 0,
            failover_priority: m.failover_priority,
        })
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    wit::ClusterView {
        members,
        former_leader: view.former_leader.clone(),
        former_leader_zone,
        reason: match view.reason {
            ElectionReason::LeaderLost => wit::ElectionReason::LeaderLost,
            ElectionReason::NoLeader => wit::ElectionReason::NoLeader,
            // TODO(wit): a `switchover` reason of its own.
            ElectionReason::LeaderUnhealthy | ElectionReason::Switchover => {
                wit::ElectionReason::LeaderUnhealthy
            }
        },
        leader_optime: view.leader_optime,
        maximum_lag_on_failover: view.maximum_lag_on_failover,
        cluster_timeline: view.cluster_timeline,
        sync_members: view.sync_members.clone(),
        now_ms: view.now_ms,
    }
}

/// Check a ranking against the view: every candidate is a reachable member, listed once, with
/// a reason; a veto has a reason.
pub(crate) fn ranking(view: &ElectionView, answer: wit::Ranking) -> Result<Ranking, String> {
    match answer {
        wit::Ranking::Veto(why) => {
            if why.trim().is_empty() {
                return Err("vetoed without a reason".into());
            }
            Ok(Ranking::Veto(why))
        }
        wit::Ranking::Candidates(list) => {
            let mut seen = HashSet::new();
            let mut out = Vec::with_capacity(list.len());
            for c in list {
                let Some(m) = view.members.iter().find(|m| m.name == c.name) else {
                    return Err(format!(
                        "ranked {:?}, which is not a member of the view",
                        c.name
                    ));
                };
                if !seen.insert(c.name.clone()) {
                    return Err(format!("ranked {:?} twice", c.name));
                }
                if c.reason.trim().is_empty() {
                    return Err(format!("ranked {:?} without a reason", c.name));
                }
                if !m.reachable {
                    return Err(format!(
                        "ranked {:?}, which is unreachable (never eligible)",
                        c.name
                    ));
                }
                out.push(Ranked {
                    name: c.name,
                    reason: c.reason,
                });
            }
            Ok(Ranking::Candidates(out))
        }
    }
}

pub(crate) fn health_facts(
    facts: &HealthFacts,
    name: &str,
    is_leader: bool,
    probes: Vec<wit::ProbeResult>,
) -> wit::HealthFacts {
    wit::HealthFacts {
        name: name.to_string(),
        role: role(Role::from_name(&facts.role)),
        state: facts.state.clone(),
        timeline: facts.timeline,
        wal_position: facts.wal_position,
        replication_connections: facts.replication_connections,
        lag: facts.lag_bytes,
        seconds_in_state: facts.seconds_in_state,
        is_leader,
        probes,
    }
}

pub(crate) fn health(h: wit::Health) -> Health {
    fn reason(s: String) -> String {
        if s.trim().is_empty() {
            "(the policy gave no reason)".into()
        } else {
            s
        }
    }
    match h {
        wit::Health::Healthy => Health::Healthy,
        wit::Health::Degraded(s) => Health::Degraded(reason(s)),
        wit::Health::Failed(s) => Health::Failed(reason(s)),
    }
}

pub(crate) fn event(e: &Event) -> wit::Event {
    match e {
        Event::Started(r) => wit::Event::Started(role(*r)),
        Event::Stopped(r) => wit::Event::Stopped(role(*r)),
        Event::Restarted(r) => wit::Event::Restarted(role(*r)),
        Event::Reloaded(r) => wit::Event::Reloaded(role(*r)),
        Event::RoleChanged { from, to } => wit::Event::RoleChanged(wit::RoleChange {
            from: role(*from),
            to: role(*to),
        }),
        Event::FailoverStarted(s) => wit::Event::FailoverStarted(s.clone()),
        Event::FailoverDecided(c) => wit::Event::FailoverDecided(wit::Candidate {
            name: c.name.clone(),
            reason: c.reason.clone(),
        }),
        Event::FailoverCompleted(s) => wit::Event::FailoverCompleted(s.clone()),
        Event::MemberJoined(s) => wit::Event::MemberJoined(s.clone()),
        Event::MemberLeft(s) => wit::Event::MemberLeft(s.clone()),
    }
}
