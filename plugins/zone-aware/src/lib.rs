//! # zone-aware
//!
//! Keeps the primary in the former leader's zone (the `zone` tag): a failover never crosses
//! zones while a candidate in that zone is eligible.
//!
//! - **Veto** while a reachable member still runs as primary (as Patroni).
//! - **Eligible**: Patroni's rules (see `regent_policy_sdk::patroni`), with the lag limit taken from
//!   `max_lag_bytes` when set.
//! - If any eligible candidate is in the former leader's zone, **only those** are returned;
//!   otherwise every eligible candidate (a cross-zone failover). When the former leader's zone is
//!   unknown there is no preference.
//! - **Order** within the list: WAL position (highest first, i.e. lowest lag), then
//!   `failover_priority` (highest first), then name.
//!
//! Settings (the manifest's `[settings]`):
//! - `max_lag_bytes` (whole number, optional): overrides `maximum_lag_on_failover`.
//! - `check_timeline` (bool, default `false`): refuse candidates behind the cluster timeline.
//!
//! Hooks: `rank-candidates`.

use regent_policy_sdk::lsn;
use regent_policy_sdk::patroni::{Limits, Refused};
use regent_policy_sdk::prelude::*;
use regent_policy_sdk::settings::Table;

const NAME: &str = "zone-aware";

/// The manifest's `[settings]`.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub max_lag_bytes: Option<u64>,
    pub check_timeline: bool,
}

impl Settings {
    pub fn read(table: &mut Table) -> Result<Settings, String> {
        Ok(Settings {
            max_lag_bytes: table.u64("max_lag_bytes")?,
            check_timeline: table.bool("check_timeline")?.unwrap_or(false),
        })
    }

    pub fn parse(json: &str) -> Result<Settings, String> {
        regent_policy_sdk::settings::read(NAME, json, Settings::read)
    }
}

/// The ranking, plus the members that are not eligible and why (for the debug log).
pub fn rank<'a>(view: &'a ClusterView, settings: &Settings) -> (Ranking, Refused<'a>) {
    if let Some(primary) = patroni::live_primary(view) {
        return (Ranking::Veto(patroni::primary_alive(primary)), Vec::new());
    }
    let limits = Limits::of(view, settings.check_timeline)
        .with_maximum_lag(settings.max_lag_bytes, "max_lag_bytes");
    let (mut eligible, refused) = patroni::partition(view, &limits);

    let zone = view.former_leader_zone.as_deref();
    let in_zone = |m: &Member| zone.is_some() && m.zone.as_deref() == zone;
    let same_zone = eligible.iter().any(|m| in_zone(m));
    if same_zone {
        eligible.retain(|m| in_zone(m));
    }
    eligible.sort_by(|a, b| patroni::order(a, b));

    let total = eligible.len();
    let candidates = eligible
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (n, position) = (i + 1, patroni::position(view, m));
            let reason = match (zone, same_zone) {
                (None, _) => reason!(
                    "{n} of {total}: former leader's zone unknown, no zone preference; {position}"
                ),
                (Some(z), true) => {
                    reason!("{n} of {total}: in the former leader's zone {z}; {position}")
                }
                (Some(z), false) => reason!(
                    "{n} of {total}: cross-zone (zone {}): no eligible candidate in the former \
                     leader's zone {z}; {position}",
                    m.zone.as_deref().unwrap_or("unset")
                ),
            };
            Candidate {
                name: m.name.clone(),
                reason,
            }
        })
        .collect();
    (Ranking::Candidates(candidates), refused)
}

struct ZoneAware(Settings);

impl Policy for ZoneAware {
    const NAME: &'static str = NAME;
    // The zone comes as `Member::zone`; no other tag is read (the default `TAGS`).

    fn new(settings: &mut Table) -> Result<Self, String> {
        let parsed = Settings::read(settings)?;
        if let Some(max) = parsed.max_lag_bytes {
            host::log(
                LogLevel::Info,
                &format!(
                    "max_lag_bytes {max} ({}) overrides maximum_lag_on_failover",
                    lsn::fmt(max)
                ),
            );
        }
        Ok(ZoneAware(parsed))
    }

    fn rank(&self, view: &ClusterView) -> Ranking {
        let (ranking, refused) = rank(view, &self.0);
        patroni::log_refused(&refused);
        ranking
    }
}

export!(ZoneAware);

#[cfg(test)]
mod tests {
    use super::*;
    use regent_policy_sdk::testing::{member, refused_text, view};
    use regent_policy_sdk::types::Role;

    fn in_zone(name: &str, zone: &str, wal: u64) -> Member {
        Member {
            zone: Some(zone.into()),
            wal_position: Some(wal),
            ..member(name)
        }
    }

    fn names(r: &Ranking) -> Vec<&str> {
        match r {
            Ranking::Candidates(c) => c.iter().map(|c| c.name.as_str()).collect(),
            Ranking::Veto(v) => panic!("unexpected veto: {v}"),
        }
    }

    fn zoned_view() -> ClusterView {
        let mut v = view(vec![
            Member {
                role: Role::Unknown,
                reachable: false,
                ..in_zone("pg-0", "a", 1000)
            },
            in_zone("pg-1", "a", 900),
            in_zone("pg-2", "a", 950),
            in_zone("pg-3", "b", 1000),
        ]);
        v.former_leader = Some("pg-0".into());
        v.former_leader_zone = Some("a".into());
        v.leader_optime = Some(1000);
        v
    }

    #[test]
    fn prefers_the_former_leaders_zone_even_when_behind() {
        let v = zoned_view();
        let (r, refused) = rank(&v, &Settings::default());
        assert_eq!(names(&r), ["pg-2", "pg-1"]);
        assert_eq!(
            refused_text(&refused),
            [("pg-0".to_string(), "unreachable".to_string())]
        );
        let Ranking::Candidates(c) = r else { panic!() };
        assert_eq!(
            c[0].reason,
            "1 of 2: in the former leader's zone a; wal position 0/3B6 (50 bytes behind the \
             leader), failover priority 1"
        );
    }

    #[test]
    fn falls_back_across_zones_when_no_same_zone_candidate_is_eligible() {
        let mut v = zoned_view();
        // pg-1 is too far behind for max_lag_bytes, pg-2 is tagged nofailover.
        v.members[2].nofailover = true;
        let s = Settings::parse(r#"{"max_lag_bytes": 60}"#).unwrap();
        let (r, refused) = rank(&v, &s);
        assert_eq!(names(&r), ["pg-3"]);
        assert!(
            refused_text(&refused)
                .iter()
                .any(|(n, why)| n == "pg-1" && why == "lag 100 bytes exceeds max_lag_bytes 60")
        );
        let Ranking::Candidates(c) = r else { panic!() };
        assert!(
            c[0].reason.starts_with(
                "1 of 1: cross-zone (zone b): no eligible candidate in the former leader's zone a"
            ),
            "{}",
            c[0].reason
        );

        // Without the override, pg-1 (same zone) is within maximum_lag_on_failover.
        assert_eq!(names(&rank(&v, &Settings::default()).0), ["pg-1"]);
    }

    #[test]
    fn no_zone_preference_when_the_former_leaders_zone_is_unknown() {
        let mut v = zoned_view();
        v.former_leader_zone = None;
        assert_eq!(
            names(&rank(&v, &Settings::default()).0),
            ["pg-3", "pg-2", "pg-1"]
        );
    }

    #[test]
    fn vetoes_while_the_primary_is_alive() {
        let mut v = zoned_view();
        v.members[3].role = Role::Primary;
        assert_eq!(
            rank(&v, &Settings::default()).0,
            Ranking::Veto("primary pg-3 is still alive".into())
        );
    }

    #[test]
    fn settings() {
        assert_eq!(Settings::parse("{}").unwrap().max_lag_bytes, None);
        assert_eq!(
            Settings::parse(r#"{"max_lag": 5}"#).unwrap_err(),
            "zone-aware: unknown setting `max_lag` (known settings: max_lag_bytes, check_timeline)"
        );
    }

    #[test]
    fn manifest_agrees_with_the_plugin() {
        let m = regent_policy_sdk::testing::Manifest::parse(include_str!(
            "../../../policies/zone-aware.toml"
        ));
        m.check(&ZoneAware::describe());
        Settings::parse(&m.settings_json).unwrap();
    }
}
