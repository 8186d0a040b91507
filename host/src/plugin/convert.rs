//! Between the decision core's types and the WIT types, and the checks on what a policy answers.
//!
//! The election view is the one argument that is big and hot: nine members carry some 60
//! strings and lists, and wasmtime copies each into the guest through its allocator. So it is
//! not first copied into the owned types that `bindgen!` generates: [`ViewArg`] mirrors
//! `cluster-view` with fields that borrow from the [`ElectionView`], and is lowered straight
//! from it. wasmtime checks that mirror against the component's own type of
//! `rank-candidates` when an instance is created ([`RankFunc::new`]), so a mismatch with
//! `wit/policy.wit` is an error at load time (and in every test), never a misread view.

use super::guest::{State, wit};
use super::{Event, Role, TagKeys};
use crate::ha::policy::{
    CandidateView, ElectionReason, ElectionView, Health, HealthFacts, Ranked, Ranking,
};
use wasmtime::component::{ComponentType, Func, Lower, TypedFunc};
use wasmtime::{AsContextMut, Store};

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

/// Patroni's state names as the WIT's `pg-state`; any other name as `other`.
pub(crate) fn pg_state(state: &str) -> wit::PgState {
    match state {
        "running" => wit::PgState::Running,
        "starting" => wit::PgState::Starting,
        "stopping" => wit::PgState::Stopping,
        "stopped" => wit::PgState::Stopped,
        "restarting" => wit::PgState::Restarting,
        "crashed" => wit::PgState::Crashed,
        "creating replica" => wit::PgState::CreatingReplica,
        "initializing new cluster" => wit::PgState::Initializing,
        "unreachable" => wit::PgState::Unreachable,
        other => wit::PgState::Other(other.to_string()),
    }
}

/// `cluster-view`, borrowing from an [`ElectionView`] (see the module documentation).
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct ViewArg<'a> {
    members: Vec<MemberArg<'a>>,
    #[component(name = "former-leader")]
    former_leader: Option<&'a str>,
    #[component(name = "former-leader-zone")]
    former_leader_zone: Option<&'a str>,
    reason: wit::ElectionReason,
    #[component(name = "leader-optime")]
    leader_optime: Option<u64>,
    #[component(name = "maximum-lag-on-failover")]
    maximum_lag_on_failover: u64,
    #[component(name = "cluster-timeline")]
    cluster_timeline: u32,
    #[component(name = "synchronous-mode")]
    synchronous_mode: bool,
    #[component(name = "now-ms")]
    now_ms: u64,
}

/// `member`, borrowing from a [`CandidateView`].
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct MemberArg<'a> {
    name: &'a str,
    role: wit::Role,
    state: wit::PgState,
    timeline: Option<u32>,
    #[component(name = "wal-position")]
    wal_position: Option<u64>,
    #[component(name = "received-lsn")]
    received_lsn: Option<u64>,
    #[component(name = "replayed-lsn")]
    replayed_lsn: Option<u64>,
    lag: Option<u64>,
    tags: &'a [TagArg<'a>],
    health: HealthArg,
    reachable: bool,
    zone: Option<&'a str>,
    synchronous: bool,
    nofailover: bool,
    #[component(name = "failover-priority")]
    failover_priority: i64,
}

/// `tag`, borrowing.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct TagArg<'a> {
    key: &'a str,
    value: &'a str,
}

/// `health` of a member in the view: the decision core knows only healthy or not.
#[derive(ComponentType, Lower)]
#[component(variant)]
pub(crate) enum HealthArg {
    #[component(name = "healthy")]
    Healthy,
    #[allow(dead_code)] // never sent, but the variant must have every case of `health`
    #[component(name = "degraded")]
    Degraded(&'static str),
    #[component(name = "failed")]
    Failed(&'static str),
}

/// Call `f` with the WIT view of `view` (members sorted by name), with the tags `keys` names.
pub(crate) fn with_cluster_view<R>(
    view: &ElectionView,
    keys: &TagKeys,
    f: impl FnOnce(ViewArg<'_>) -> R,
) -> R {
    // The tags of every member in one buffer (each member borrows its slice, up to its end).
    let mut tags: Vec<TagArg<'_>> = Vec::new();
    let mut ends = Vec::with_capacity(view.members.len());
    fn tag<'a>((key, value): (&'a String, &'a String)) -> TagArg<'a> {
        TagArg { key, value }
    }
    for m in &view.members {
        match keys {
            TagKeys::All => tags.extend(m.tags.iter().map(tag)),
            TagKeys::Only(keys) => tags.extend(
                keys.iter()
                    .filter_map(|k| m.tags.get_key_value(k.as_str()))
                    .map(tag),
            ),
        }
        ends.push(tags.len());
    }
    let former_leader_zone = view.former_leader_zone.as_deref().or_else(|| {
        view.former_leader
            .as_ref()
            .and_then(|f| view.members.iter().find(|m| &m.name == f))
            .and_then(|m| m.tags.get("zone"))
            .map(String::as_str)
    });
    let mut start = 0;
    let mut members: Vec<MemberArg<'_>> = view
        .members
        .iter()
        .zip(ends)
        .map(|(m, end)| {
            let own = &tags[start..end];
            start = end;
            MemberArg {
                name: &m.name,
                zone: m.tags.get("zone").map(String::as_str),
                synchronous: view
                    .sync_members
                    .as_ref()
                    .is_some_and(|sync| sync.contains(&m.name)),
                role: member_role(m),
                state: pg_state(&m.state),
                timeline: m.timeline,
                wal_position: m.wal_position,
                received_lsn: m.received_lsn,
                replayed_lsn: m.replayed_lsn,
                lag: match (view.leader_optime, m.wal_position) {
                    (Some(optime), Some(wal)) => Some(optime.saturating_sub(wal)),
                    _ => None,
                },
                tags: own,
                health: if m.healthy {
                    HealthArg::Healthy
                } else {
                    HealthArg::Failed("failed its health check")
                },
                reachable: m.reachable,
                nofailover: m.nofailover || m.failover_priority <= 0,
                failover_priority: m.failover_priority,
            }
        })
        .collect();
    members.sort_by(|a, b| a.name.cmp(b.name));
    f(ViewArg {
        members,
        former_leader: view.former_leader.as_deref(),
        former_leader_zone,
        reason: match view.reason {
            ElectionReason::LeaderLost => wit::ElectionReason::LeaderLost,
            ElectionReason::NoLeader => wit::ElectionReason::NoLeader,
            ElectionReason::LeaderUnhealthy => wit::ElectionReason::LeaderUnhealthy,
            ElectionReason::Switchover => wit::ElectionReason::Switchover,
        },
        leader_optime: view.leader_optime,
        maximum_lag_on_failover: view.maximum_lag_on_failover,
        cluster_timeline: view.cluster_timeline,
        synchronous_mode: view.sync_members.is_some(),
        now_ms: view.now_ms,
    })
}

/// An instance's `rank-candidates`, checked to take a [`ViewArg`].
#[derive(Clone, Copy)]
pub(crate) struct RankFunc(Func);

impl RankFunc {
    /// Check `func` (the instance's `rank-candidates`) against [`ViewArg`] and the generated
    /// `ranking`.
    pub(crate) fn new(store: &Store<State>, func: Func) -> wasmtime::Result<RankFunc> {
        func.typed::<(ViewArg<'_>,), (wit::Ranking,)>(store)?;
        Ok(RankFunc(func))
    }

    pub(crate) fn call(
        self,
        store: impl AsContextMut<Data = State>,
        view: ViewArg<'_>,
    ) -> wasmtime::Result<wit::Ranking> {
        // SAFETY: `new` checked this signature against the function's type.
        let typed = unsafe { TypedFunc::<(ViewArg<'_>,), (wit::Ranking,)>::new_unchecked(self.0) };
        Ok(typed.call(store, (view,))?.0)
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
            let mut out: Vec<Ranked> = Vec::with_capacity(list.len());
            for c in list {
                let Some(m) = view.members.iter().find(|m| m.name == c.name) else {
                    return Err(format!(
                        "ranked {:?}, which is not a member of the view",
                        c.name
                    ));
                };
                if out.iter().any(|r| r.name == c.name) {
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
        state: pg_state(&facts.state),
        timeline: facts.timeline,
        wal_position: facts.wal_position,
        received_lsn: facts.received_lsn,
        replayed_lsn: facts.replayed_lsn,
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
