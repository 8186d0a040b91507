//! # sync-only
//!
//! Never promotes a member that could have lost an acknowledged write: rather no failover than
//! a lossy one.
//!
//! - **Veto** while a reachable member still runs as primary (as Patroni).
//! - **Safe** candidates pass Patroni's rules (see `regent_policy_sdk::patroni`) and, besides:
//!   - in synchronous mode: are `synchronous` (named by the `sync` key; Patroni's rules already
//!     require it);
//!   - otherwise: are known to have everything the leader had: lag 0 against the last leader
//!     optime. With the optime unknown, nobody is provably safe.
//! - No safe candidate: **veto** `no candidate is safe: waiting ...`, with each member's reason;
//!   the election is held again next loop.
//! - **Order**: WAL position (highest first), `failover_priority` (highest first), name.
//!
//! Settings (the manifest's `[settings]`):
//! - `check_timeline` (bool, default `false`): refuse candidates behind the cluster timeline.
//!
//! Hooks: `rank-candidates`.

use regent_policy_sdk::patroni::{Ineligible, Limits};
use regent_policy_sdk::prelude::*;
use regent_policy_sdk::settings::Table;
use std::fmt;

const NAME: &str = "sync-only";

/// The manifest's `[settings]`.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub check_timeline: bool,
}

impl Settings {
    pub fn parse(json: &str) -> Result<Settings, String> {
        regent_policy_sdk::settings::read(NAME, json, Settings::read)
    }

    /// Read the settings from the manifest's table (the SDK refuses unknown keys afterwards).
    pub fn read(table: &mut Table) -> Result<Settings, String> {
        let settings = Settings {
            check_timeline: table.bool("check_timeline")?.unwrap_or(false),
        };
        Ok(settings)
    }
}

/// Why promoting a member could lose an acknowledged write (displayed as the reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsafe<'a> {
    /// Patroni's rules refuse it.
    Ineligible(Ineligible<'a>),
    /// This many bytes behind the last leader optime.
    Behind(u64),
    /// The last leader optime is unknown.
    OptimeUnknown,
}

impl fmt::Display for Unsafe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsafe::Ineligible(why) => why.fmt(f),
            Unsafe::Behind(lag) => write!(f, "{lag} bytes behind the last leader optime"),
            Unsafe::OptimeUnknown => {
                f.write_str("the last leader optime is unknown: lag cannot be proven 0")
            }
        }
    }
}

/// Why promoting `m` could lose an acknowledged write, or `None` if it cannot.
pub fn unsafe_because<'a>(
    view: &ClusterView,
    m: &'a Member,
    limits: &Limits,
) -> Option<Unsafe<'a>> {
    if let Some(why) = patroni::ineligible(view, m, limits) {
        return Some(Unsafe::Ineligible(why));
    }
    if view.synchronous_mode {
        return None; // Patroni's rules admitted it: it is a synchronous standby.
    }
    match patroni::lag(view, m) {
        Some(0) => None,
        Some(lag) => Some(Unsafe::Behind(lag)),
        None => Some(Unsafe::OptimeUnknown),
    }
}

pub fn rank(view: &ClusterView, settings: &Settings) -> Ranking {
    if let Some(primary) = patroni::live_primary(view) {
        return Ranking::Veto(patroni::primary_alive(primary));
    }
    let limits = Limits::of(view, settings.check_timeline);
    let mut safe = Vec::new();
    let mut refused = Vec::new();
    for m in &view.members {
        match unsafe_because(view, m, &limits) {
            None => safe.push(m),
            Some(why) => refused.push((m, why)),
        }
    }
    let why_safe = if view.synchronous_mode {
        "a synchronous standby"
    } else {
        "no lag behind the last leader optime"
    };
    if safe.is_empty() {
        let sync: Vec<&str> = view
            .members
            .iter()
            .filter(|m| m.synchronous)
            .map(|m| m.name.as_str())
            .collect();
        let waiting = match (view.synchronous_mode, sync.is_empty()) {
            (true, true) => {
                "waiting for a synchronous standby (the sync key names no member)".to_string()
            }
            (true, false) => format!(
                "waiting for a synchronous standby ({}) to be eligible",
                sync.join(", ")
            ),
            (false, _) => {
                "waiting for a replica with no lag behind the last leader optime".to_string()
            }
        };
        let details = if refused.is_empty() {
            "no members".to_string()
        } else {
            let each: Vec<String> = refused
                .iter()
                .map(|(m, why)| format!("{}: {why}", m.name))
                .collect();
            each.join("; ")
        };
        return Ranking::Veto(format!("no candidate is safe: {waiting} ({details})"));
    }
    safe.sort_by(|a, b| patroni::order(a, b));
    Ranking::Candidates(
        safe.iter()
            .map(|m| Candidate {
                name: m.name.clone(),
                reason: reason!("safe: {why_safe}; {}", patroni::position(view, m)),
            })
            .collect(),
    )
}

struct SyncOnly(Settings);

impl Policy for SyncOnly {
    const NAME: &'static str = NAME;

    fn new(settings: &mut Table) -> Result<Self, String> {
        Settings::read(settings).map(SyncOnly)
    }

    fn rank(&self, view: &ClusterView) -> Ranking {
        let ranking = rank(view, &self.0);
        if let Ranking::Veto(why) = &ranking {
            host::log(LogLevel::Warn, why);
        }
        ranking
    }
}

export!(SyncOnly);

#[cfg(test)]
mod tests {
    use super::*;
    use regent_policy_sdk::testing::{member, view};
    use regent_policy_sdk::types::PgState;

    fn names(r: &Ranking) -> Vec<&str> {
        match r {
            Ranking::Candidates(c) => c.iter().map(|c| c.name.as_str()).collect(),
            Ranking::Veto(v) => panic!("unexpected veto: {v}"),
        }
    }

    #[test]
    fn only_zero_lag_replicas_outside_synchronous_mode() {
        let mut v = view(vec![
            Member {
                wal_position: Some(1000),
                ..member("pg-1")
            },
            Member {
                wal_position: Some(999),
                ..member("pg-2")
            },
            Member {
                wal_position: Some(1000),
                failover_priority: 2,
                ..member("pg-3")
            },
        ]);
        v.leader_optime = Some(1000);
        let r = rank(&v, &Settings::default());
        assert_eq!(names(&r), ["pg-3", "pg-1"]);
        let Ranking::Candidates(c) = r else { panic!() };
        assert!(
            c[0].reason
                .starts_with("safe: no lag behind the last leader optime; "),
            "{}",
            c[0].reason
        );
    }

    #[test]
    fn vetoes_when_nobody_is_provably_safe() {
        let mut v = view(vec![
            Member {
                wal_position: Some(990),
                ..member("pg-1")
            },
            member("pg-2"),
        ]);
        v.members[1].reachable = false;
        v.leader_optime = Some(1000);
        assert_eq!(
            rank(&v, &Settings::default()),
            Ranking::Veto(
                "no candidate is safe: waiting for a replica with no lag behind the last leader \
                 optime (pg-1: 10 bytes behind the last leader optime; pg-2: unreachable)"
                    .into()
            )
        );
        // Leader optime unknown: lag cannot be proven 0.
        v.leader_optime = None;
        let Ranking::Veto(why) = rank(&v, &Settings::default()) else {
            panic!()
        };
        assert!(
            why.contains("pg-1: the last leader optime is unknown"),
            "{why}"
        );
    }

    #[test]
    fn synchronous_mode_admits_only_sync_members_even_when_lagging() {
        let mut v = view(vec![
            Member {
                wal_position: Some(1000),
                ..member("pg-1")
            },
            Member {
                wal_position: Some(990),
                ..member("pg-2")
            },
        ]);
        v.leader_optime = Some(1000);
        v.synchronous_mode = true;
        v.members[1].synchronous = true;
        assert_eq!(names(&rank(&v, &Settings::default())), ["pg-2"]);

        v.members[1].state = PgState::Stopped;
        assert_eq!(
            rank(&v, &Settings::default()),
            Ranking::Veto(
                "no candidate is safe: waiting for a synchronous standby (pg-2) to be \
                 eligible (pg-1: not a synchronous standby (synchronous mode is on); pg-2: \
                 PostgreSQL is stopped)"
                    .into()
            )
        );
    }

    #[test]
    fn vetoes_while_the_primary_is_alive() {
        let v = view(vec![Member {
            role: regent_policy_sdk::types::Role::Primary,
            ..member("pg-0")
        }]);
        assert_eq!(
            rank(&v, &Settings::default()),
            Ranking::Veto("primary pg-0 is still alive".into())
        );
    }

    #[test]
    fn manifest_agrees_with_the_plugin() {
        let m = regent_policy_sdk::testing::Manifest::parse(include_str!(
            "../../../policies/sync-only.toml"
        ));
        m.check(&SyncOnly::describe());
        Settings::parse(&m.settings_json).unwrap();
    }
}
