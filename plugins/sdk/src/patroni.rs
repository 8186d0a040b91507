//! Patroni's failover rules on the WIT view: the same rules as Regent's built-in
//! `DefaultPolicy` (`host/src/ha/policy.rs`).
//!
//! A member is **eligible** when it is reachable, not `nofailover` (nor `failover_priority` <= 0),
//! not `failed` by its health check (`degraded` is still eligible), a replica, `running`, has a
//! known WAL position, is within the lag limit of the last leader optime (when that is known), is
//! `synchronous` (in synchronous mode), and, when `check_timeline` is on, is on the cluster
//! timeline or later.
//!
//! A reachable member that is `running` and not a replica (a live primary) **vetoes** the
//! election: `primary X is still alive`.
//!
//! The **order** is WAL position (highest first), then `failover-priority` (highest first), then
//! name (ascending), so every node computes the same ranking.

use crate::host;
use crate::lsn::Lsn;
use crate::names;
use crate::types::{ClusterView, Health, LogLevel, Member, PgState, Role};
use std::cmp::Ordering;
use std::fmt;

/// The limits an eligibility check applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes a candidate may be behind the last leader optime.
    pub maximum_lag: u64,
    /// Where `maximum_lag` comes from, for the reason strings (`maximum_lag_on_failover`, or a
    /// policy setting that overrides it).
    pub maximum_lag_source: &'static str,
    /// Refuse candidates whose timeline is unknown or behind the cluster timeline.
    pub check_timeline: bool,
}

impl Limits {
    /// The cluster's own limits: `maximum_lag_on_failover`; `check_timeline` as given (the view
    /// does not carry it: it is a policy setting).
    pub fn of(view: &ClusterView, check_timeline: bool) -> Limits {
        Limits {
            maximum_lag: view.maximum_lag_on_failover,
            maximum_lag_source: "maximum_lag_on_failover",
            check_timeline,
        }
    }

    /// Replace the lag limit by a policy setting named `source` (e.g. `max_lag_bytes`).
    pub fn with_maximum_lag(self, maximum_lag: Option<u64>, source: &'static str) -> Limits {
        match maximum_lag {
            Some(maximum_lag) => Limits {
                maximum_lag,
                maximum_lag_source: source,
                ..self
            },
            None => self,
        }
    }
}

/// A reachable member that runs as a primary (`running` and not in recovery): while there is
/// one, nobody may be promoted.
pub fn live_primary(view: &ClusterView) -> Option<&Member> {
    view.members
        .iter()
        .find(|m| m.reachable && m.role != Role::Replica && m.state == PgState::Running)
}

/// The veto reason for a live primary.
pub fn primary_alive(primary: &Member) -> String {
    format!("primary {} is still alive", primary.name)
}

/// Bytes `m` is behind the last leader optime, when both are known.
pub fn lag(view: &ClusterView, m: &Member) -> Option<u64> {
    match (view.leader_optime, m.wal_position) {
        (Some(optime), Some(wal)) => Some(optime.saturating_sub(wal)),
        _ => None,
    }
}

/// Why a member may not be promoted (see [`ineligible`]). Its `Display` is the reason as
/// operators read it, e.g. `lag 2097152 bytes exceeds maximum_lag_on_failover 1048576`;
/// nothing is formatted until it is displayed, so checking every member of a view is cheap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ineligible<'a> {
    Unreachable,
    /// Tagged `nofailover`, or `failover_priority` <= 0.
    NoFailover {
        nofailover: bool,
        failover_priority: i64,
    },
    /// Its health check failed (the policy's reason, possibly empty).
    Failed(&'a str),
    /// Not a replica (`role` is primary or unknown).
    NotReplica(Role),
    /// PostgreSQL is not `running`.
    NotRunning(&'a PgState),
    WalUnknown,
    /// Too far behind the last leader optime.
    Lagging {
        lag: u64,
        limit: u64,
        /// Where the limit comes from ([`Limits::maximum_lag_source`]).
        source: &'static str,
    },
    /// Synchronous mode is on and the member is not `synchronous`.
    NotSynchronous,
    /// `check_timeline` is on and the timeline is unknown.
    TimelineUnknown,
    /// `check_timeline` is on and the timeline is behind the cluster's.
    TimelineBehind {
        timeline: u32,
        cluster: u32,
    },
}

impl fmt::Display for Ineligible<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Ineligible::Unreachable => f.write_str("unreachable"),
            Ineligible::NoFailover {
                nofailover,
                failover_priority,
            } => write!(
                f,
                "tagged nofailover (nofailover {nofailover}, failover_priority {failover_priority})"
            ),
            // No need to say it twice.
            Ineligible::Failed(why) if why.is_empty() || why.contains("health check") => {
                f.write_str("failed its health check")
            }
            Ineligible::Failed(why) => write!(f, "failed its health check: {why}"),
            Ineligible::NotReplica(role) => {
                write!(f, "not a replica (role {})", names::role(role))
            }
            Ineligible::NotRunning(state) => {
                write!(f, "PostgreSQL is {}", names::pg_state(state))
            }
            Ineligible::WalUnknown => f.write_str("WAL position unknown"),
            Ineligible::Lagging { lag, limit, source } => {
                write!(f, "lag {lag} bytes exceeds {source} {limit}")
            }
            Ineligible::NotSynchronous => {
                f.write_str("not a synchronous standby (synchronous mode is on)")
            }
            Ineligible::TimelineUnknown => f.write_str("timeline unknown (check_timeline is on)"),
            Ineligible::TimelineBehind { timeline, cluster } => write!(
                f,
                "timeline {timeline} is behind the cluster timeline {cluster}"
            ),
        }
    }
}

/// Why `m` may not be promoted, or `None` if it may.
pub fn ineligible<'a>(
    view: &ClusterView,
    m: &'a Member,
    limits: &Limits,
) -> Option<Ineligible<'a>> {
    if !m.reachable {
        return Some(Ineligible::Unreachable);
    }
    if m.nofailover || m.failover_priority <= 0 {
        return Some(Ineligible::NoFailover {
            nofailover: m.nofailover,
            failover_priority: m.failover_priority,
        });
    }
    if let Health::Failed(why) = &m.health {
        return Some(Ineligible::Failed(why));
    }
    if m.role != Role::Replica {
        // Regent reports a member that is not running with role `unknown`: say why.
        if m.role == Role::Unknown && m.state != PgState::Running {
            return Some(Ineligible::NotRunning(&m.state));
        }
        return Some(Ineligible::NotReplica(m.role));
    }
    if m.state != PgState::Running {
        return Some(Ineligible::NotRunning(&m.state));
    }
    let Some(wal) = m.wal_position else {
        return Some(Ineligible::WalUnknown);
    };
    if let Some(optime) = view.leader_optime
        && optime.saturating_sub(wal) > limits.maximum_lag
    {
        return Some(Ineligible::Lagging {
            lag: optime - wal,
            limit: limits.maximum_lag,
            source: limits.maximum_lag_source,
        });
    }
    if view.synchronous_mode && !m.synchronous {
        return Some(Ineligible::NotSynchronous);
    }
    if limits.check_timeline {
        match m.timeline {
            None => return Some(Ineligible::TimelineUnknown),
            Some(t) if t < view.cluster_timeline => {
                return Some(Ineligible::TimelineBehind {
                    timeline: t,
                    cluster: view.cluster_timeline,
                });
            }
            Some(_) => {}
        }
    }
    None
}

/// The members that are not eligible, with the reason.
pub type Refused<'a> = Vec<(&'a Member, Ineligible<'a>)>;

/// The eligible members, in the view's order (by name), and the others with the reason.
pub fn partition<'a>(view: &'a ClusterView, limits: &Limits) -> (Vec<&'a Member>, Refused<'a>) {
    let mut eligible = Vec::with_capacity(view.members.len());
    let mut refused = Vec::with_capacity(view.members.len());
    for m in &view.members {
        match ineligible(view, m, limits) {
            None => eligible.push(m),
            Some(why) => refused.push((m, why)),
        }
    }
    (eligible, refused)
}

/// Log each refused member at debug level, when Regent records debug lines from this policy
/// (otherwise nothing is formatted).
/// Natively (unit tests) there is no host to log to: nothing happens.
pub fn log_refused(refused: &Refused<'_>) {
    if cfg!(target_arch = "wasm32") && !refused.is_empty() && host::log_enabled(LogLevel::Debug) {
        for (m, why) in refused {
            host::log(
                LogLevel::Debug,
                &format!("{} is not eligible: {why}", m.name),
            );
        }
    }
}

/// Patroni's order: WAL position (highest first), then failover priority (highest first), then
/// name (ascending).
pub fn order(a: &Member, b: &Member) -> Ordering {
    b.wal_position
        .cmp(&a.wal_position)
        .then(b.failover_priority.cmp(&a.failover_priority))
        .then(a.name.cmp(&b.name))
}

/// `"wal position 0/3000060 (0 bytes behind the leader), failover priority 1"`.
pub fn describe_position(view: &ClusterView, m: &Member) -> String {
    position(view, m).to_string()
}

/// Displays as [`describe_position`], without a `String` of its own:
/// `format!("1 of 3: {}", position(view, m))`.
pub fn position<'a>(view: &'a ClusterView, m: &'a Member) -> Position<'a> {
    Position { view, member: m }
}

/// See [`position`].
#[derive(Debug, Clone, Copy)]
pub struct Position<'a> {
    view: &'a ClusterView,
    member: &'a Member,
}

impl fmt::Display for Position<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.member;
        match m.wal_position {
            Some(wal) => write!(f, "wal position {}", Lsn(wal))?,
            None => f.write_str("wal position unknown")?,
        }
        match lag(self.view, m) {
            Some(lag) => write!(f, " ({lag} bytes behind the leader)")?,
            None => f.write_str(" (leader optime unknown)")?,
        }
        write!(f, ", failover priority {}", m.failover_priority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{member, view};

    fn why(v: &ClusterView, name: &str, check_timeline: bool) -> Option<String> {
        let m = v.members.iter().find(|m| m.name == name).unwrap();
        ineligible(v, m, &Limits::of(v, check_timeline)).map(|why| why.to_string())
    }

    #[test]
    fn eligibility_rules() {
        let mut v = view(vec![
            member("ok"),
            Member {
                reachable: false,
                ..member("unreachable")
            },
            Member {
                nofailover: true,
                ..member("nofailover")
            },
            Member {
                failover_priority: 0,
                ..member("prio0")
            },
            Member {
                health: Health::Failed("disk".into()),
                ..member("failed")
            },
            Member {
                health: Health::Failed("failed its health check".into()),
                ..member("failed2")
            },
            Member {
                health: Health::Degraded("slow".into()),
                ..member("degraded")
            },
            Member {
                role: Role::Unknown,
                ..member("unknown-role")
            },
            Member {
                state: PgState::Starting,
                ..member("starting")
            },
            Member {
                role: Role::Unknown,
                state: PgState::Stopped,
                ..member("stopped")
            },
            Member {
                wal_position: None,
                ..member("no-wal")
            },
            Member {
                wal_position: Some(1000 - 101),
                ..member("lagging")
            },
            Member {
                wal_position: Some(1000 - 100),
                ..member("at-limit")
            },
            Member {
                timeline: Some(1),
                ..member("old-timeline")
            },
            Member {
                timeline: None,
                ..member("no-timeline")
            },
        ]);
        v.leader_optime = Some(1000);
        v.maximum_lag_on_failover = 100;
        v.cluster_timeline = 2;
        assert_eq!(why(&v, "ok", true), None);
        assert_eq!(why(&v, "unreachable", false).unwrap(), "unreachable");
        assert!(
            why(&v, "nofailover", false)
                .unwrap()
                .starts_with("tagged nofailover")
        );
        assert!(
            why(&v, "prio0", false)
                .unwrap()
                .starts_with("tagged nofailover")
        );
        assert_eq!(
            why(&v, "failed", false).unwrap(),
            "failed its health check: disk"
        );
        assert_eq!(
            why(&v, "failed2", false).unwrap(),
            "failed its health check"
        );
        assert_eq!(why(&v, "degraded", false), None);
        assert_eq!(
            why(&v, "unknown-role", false).unwrap(),
            "not a replica (role unknown)"
        );
        assert_eq!(
            why(&v, "starting", false).unwrap(),
            "PostgreSQL is starting"
        );
        assert_eq!(why(&v, "stopped", false).unwrap(), "PostgreSQL is stopped");
        assert_eq!(why(&v, "no-wal", false).unwrap(), "WAL position unknown");
        assert_eq!(
            why(&v, "lagging", false).unwrap(),
            "lag 101 bytes exceeds maximum_lag_on_failover 100"
        );
        assert_eq!(why(&v, "at-limit", false), None);
        assert_eq!(why(&v, "old-timeline", false), None);
        assert_eq!(
            why(&v, "old-timeline", true).unwrap(),
            "timeline 1 is behind the cluster timeline 2"
        );
        assert_eq!(
            why(&v, "no-timeline", true).unwrap(),
            "timeline unknown (check_timeline is on)"
        );

        // Unknown leader optime: no lag limit.
        v.leader_optime = None;
        assert_eq!(why(&v, "lagging", false), None);

        // Synchronous mode.
        v.synchronous_mode = true;
        v.members
            .iter_mut()
            .for_each(|m| m.synchronous = m.name == "ok");
        assert_eq!(why(&v, "ok", false), None);
        assert_eq!(
            why(&v, "degraded", false).unwrap(),
            "not a synchronous standby (synchronous mode is on)"
        );
    }

    #[test]
    fn lag_override_names_its_source() {
        let mut v = view(vec![Member {
            wal_position: Some(0),
            ..member("a")
        }]);
        v.leader_optime = Some(500);
        v.maximum_lag_on_failover = 1000;
        let limits = Limits::of(&v, false).with_maximum_lag(Some(100), "max_lag_bytes");
        assert_eq!(
            ineligible(&v, &v.members[0], &limits).unwrap().to_string(),
            "lag 500 bytes exceeds max_lag_bytes 100"
        );
        let limits = Limits::of(&v, false).with_maximum_lag(None, "max_lag_bytes");
        assert_eq!(ineligible(&v, &v.members[0], &limits), None);
    }

    #[test]
    fn live_primary_is_reachable_running_and_not_a_replica() {
        let v = view(vec![
            Member {
                role: Role::Primary,
                reachable: false,
                ..member("gone")
            },
            Member {
                role: Role::Primary,
                state: PgState::Stopped,
                ..member("stopped")
            },
            member("replica"),
        ]);
        assert!(live_primary(&v).is_none());
        let v = view(vec![
            member("a"),
            Member {
                role: Role::Primary,
                ..member("b")
            },
        ]);
        assert_eq!(
            primary_alive(live_primary(&v).unwrap()),
            "primary b is still alive"
        );
    }

    #[test]
    fn order_is_wal_then_priority_then_name() {
        let mut ms = [
            Member {
                wal_position: Some(10),
                failover_priority: 1,
                ..member("c")
            },
            Member {
                wal_position: Some(10),
                failover_priority: 1,
                ..member("b")
            },
            Member {
                wal_position: Some(10),
                failover_priority: 5,
                ..member("z")
            },
            Member {
                wal_position: Some(20),
                failover_priority: 1,
                ..member("y")
            },
        ];
        ms.sort_by(order);
        let names: Vec<_> = ms.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["y", "z", "b", "c"]);
    }
}
