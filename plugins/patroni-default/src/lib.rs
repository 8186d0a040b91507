//! # patroni-default
//!
//! Regent's built-in failover rules (Patroni's) as a policy plugin: the same candidates, in the
//! same order, as the built-in `DefaultPolicy`, with more detailed reasons. It is the plugin to
//! copy when you write your own (see `plugins/README.md`).
//!
//! - **Veto** while a reachable member still runs as primary: `primary X is still alive`.
//! - **Eligible**: reachable; not `nofailover` (nor `failover_priority` <= 0); health not
//!   `failed`; a replica; `running`; WAL position known; at most `maximum_lag_on_failover` bytes
//!   behind the last leader optime (when known); `synchronous` (in synchronous mode); with
//!   `check_timeline`, on the cluster timeline or later.
//! - **Order**: WAL position (highest first), `failover_priority` (highest first), name.
//!
//! The rules live in the SDK (`regent_policy_sdk::patroni`, `ranking::builtin`), shared with
//! the other plugins.
//!
//! Settings (the manifest's `[settings]`):
//! - `check_timeline` (bool, default `false`): refuse candidates whose timeline is unknown or
//!   behind the cluster timeline (Patroni's `check_timeline`).
//!
//! Hooks: `rank-candidates`.

use regent_policy_sdk::patroni::{Limits, Refused};
use regent_policy_sdk::prelude::*;
use regent_policy_sdk::ranking;

const NAME: &str = "patroni-default";

/// The manifest's `[settings]`.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub check_timeline: bool,
}

impl Settings {
    /// Read the settings from the manifest's table.
    pub fn read(table: &mut regent_policy_sdk::settings::Table) -> Result<Settings, String> {
        Ok(Settings {
            check_timeline: table.bool("check_timeline")?.unwrap_or(false),
        })
    }

    /// Parse the settings JSON; the error names the bad setting (unknown ones included).
    pub fn parse(json: &str) -> Result<Settings, String> {
        regent_policy_sdk::settings::read(NAME, json, Settings::read)
    }
}

/// The ranking, plus the members that are not eligible and why (for the debug log).
pub fn rank<'a>(view: &'a ClusterView, settings: &Settings) -> (Ranking, Refused<'a>) {
    ranking::builtin(view, &Limits::of(view, settings.check_timeline))
}

/// The policy: its settings. `HOOKS` and `TAGS` keep their defaults: it ranks, and reads no
/// tag.
struct PatroniDefault(Settings);

impl Policy for PatroniDefault {
    const NAME: &'static str = NAME;

    fn new(settings: &mut regent_policy_sdk::settings::Table) -> Result<Self, String> {
        Settings::read(settings).map(PatroniDefault)
    }

    fn rank(&self, view: &ClusterView) -> Ranking {
        let (ranking, refused) = rank(view, &self.0);
        patroni::log_refused(&refused);
        ranking
    }
}

export!(PatroniDefault);

#[cfg(test)]
mod tests {
    use super::*;
    use regent_policy_sdk::testing::{member, refused_text, view};
    use regent_policy_sdk::types::{Member, PgState, Role};

    fn names(r: &Ranking) -> Vec<&str> {
        match r {
            Ranking::Candidates(c) => c.iter().map(|c| c.name.as_str()).collect(),
            Ranking::Veto(v) => panic!("unexpected veto: {v}"),
        }
    }

    #[test]
    fn orders_by_wal_then_priority_then_name() {
        let v = view(vec![
            Member {
                wal_position: Some(500),
                failover_priority: 1,
                ..member("pg-b")
            },
            Member {
                wal_position: Some(500),
                failover_priority: 1,
                ..member("pg-a")
            },
            Member {
                wal_position: Some(500),
                failover_priority: 9,
                ..member("pg-z")
            },
            Member {
                wal_position: Some(900),
                failover_priority: 1,
                ..member("pg-y")
            },
            Member {
                reachable: false,
                wal_position: Some(5000),
                ..member("pg-gone")
            },
        ]);
        let (r, refused) = rank(&v, &Settings::default());
        assert_eq!(names(&r), ["pg-y", "pg-z", "pg-a", "pg-b"]);
        assert_eq!(
            refused_text(&refused),
            [("pg-gone".to_string(), "unreachable".to_string())]
        );
    }

    #[test]
    fn reasons_are_informative() {
        let mut v = view(vec![Member {
            wal_position: Some(0x3000060),
            ..member("pg-1")
        }]);
        v.leader_optime = Some(0x3000060 + 16);
        let (r, _) = rank(&v, &Settings::default());
        let Ranking::Candidates(c) = r else { panic!() };
        assert_eq!(
            c[0].reason,
            "1 of 1 eligible: wal position 0/3000060 (16 bytes behind the leader), failover priority 1"
        );
    }

    #[test]
    fn vetoes_while_the_primary_is_alive() {
        let v = view(vec![
            member("pg-1"),
            Member {
                role: Role::Primary,
                ..member("pg-0")
            },
        ]);
        let (r, _) = rank(&v, &Settings::default());
        assert_eq!(r, Ranking::Veto("primary pg-0 is still alive".into()));
    }

    #[test]
    fn check_timeline_setting() {
        let v = view(vec![
            Member {
                timeline: Some(1),
                ..member("pg-1")
            },
            member("pg-2"),
        ]);
        assert_eq!(names(&rank(&v, &Settings::default()).0), ["pg-1", "pg-2"]);
        let s = Settings::parse(r#"{"check_timeline": true}"#).unwrap();
        assert_eq!(names(&rank(&v, &s).0), ["pg-2"]);
    }

    #[test]
    fn settings_errors_name_the_key() {
        assert!(Settings::parse("").is_ok());
        assert_eq!(
            Settings::parse(r#"{"check_timeline": "yes"}"#).unwrap_err(),
            "patroni-default: setting `check_timeline` must be true or false, not a string"
        );
        assert_eq!(
            Settings::parse(r#"{"max_lag_bytes": 1}"#).unwrap_err(),
            "patroni-default: unknown setting `max_lag_bytes` (known settings: check_timeline)"
        );
    }

    #[test]
    fn no_eligible_candidate_is_an_empty_list_not_a_veto() {
        let v = view(vec![Member {
            state: PgState::Stopped,
            ..member("pg-1")
        }]);
        assert_eq!(
            rank(&v, &Settings::default()).0,
            Ranking::Candidates(vec![])
        );
    }

    #[test]
    fn manifest_agrees_with_the_plugin() {
        let m = regent_policy_sdk::testing::Manifest::parse(include_str!(
            "../../../policies/patroni-default.toml"
        ));
        m.check(&PatroniDefault::describe());
        Settings::parse(&m.settings_json).unwrap();
    }
}
