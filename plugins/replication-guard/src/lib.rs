//! # replication-guard
//!
//! A health policy: the node's health fails after N consecutive failures of a SQL probe from
//! the manifest (`[[probes]]`, with the `sql-probe` capability). Regent runs the probes and
//! hands their results to `check-health` in `health-facts.probes`.
//!
//! - PostgreSQL not `running`: `degraded("PostgreSQL is <state>")`, as the built-in check.
//! - A probe **fails** when it errors (or times out), returns no rows, or its first value is
//!   NULL, `f`/`false` or `0`. So `SELECT 1`, `SELECT count(*) FROM pg_stat_replication` and
//!   `SELECT bool_and(...)` all work as canaries.
//! - The first failures make the node `degraded` (still eligible); `failures_before_failed`
//!   consecutive failures make it `failed` (a failed replica is not promoted; a failed leader
//!   hands over). One success resets the count.
//!
//! The count lives in the instance's memory, so it needs Regent to keep the instance between
//! `check-health` calls.
//!
//! Settings (the manifest's `[settings]`):
//! - `failures_before_failed` (whole number >= 1, default 3).
//! - `probe` (string, optional): the probe to watch, by its name in `[[probes]]`; default: all.
//! - `role` (`"any"`, `"primary"` or `"replica"`, default `"any"`): where to watch. On a node in
//!   the other role the guard says `healthy` and forgets past failures.
//!
//! Hooks: `check-health`.

use regent_policy_sdk::names;
use regent_policy_sdk::prelude::*;
use regent_policy_sdk::settings::Table;
use regent_policy_sdk::types::ProbeResult;

const NAME: &str = "replication-guard";

/// The manifest's `[settings]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub failures_before_failed: u32,
    pub probe: Option<String>,
    /// `None`: any role.
    pub role: Option<Role>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            failures_before_failed: 3,
            probe: None,
            role: None,
        }
    }
}

impl Settings {
    pub fn parse(json: &str) -> Result<Settings, String> {
        regent_policy_sdk::settings::read(NAME, json, Settings::read)
    }

    /// Read the settings from the manifest's table (the SDK refuses unknown keys afterwards).
    pub fn read(table: &mut Table) -> Result<Settings, String> {
        let failures_before_failed = table.u32("failures_before_failed")?.unwrap_or(3);
        if failures_before_failed == 0 {
            return Err(format!(
                "{NAME}: setting `failures_before_failed` must be at least 1"
            ));
        }
        let probe = table.string("probe")?;
        let role = match table
            .choice("role", &["any", "primary", "replica"])?
            .as_deref()
        {
            Some("primary") => Some(Role::Primary),
            Some("replica") => Some(Role::Replica),
            _ => None,
        };
        Ok(Settings {
            failures_before_failed,
            probe,
            role,
        })
    }
}

/// Why a probe result counts as a failure, or `None` if it is a success.
pub fn probe_failure(p: &ProbeResult) -> Option<String> {
    if let Some(e) = &p.error {
        return Some(format!("probe {} failed: {e}", p.name));
    }
    let Some(row) = p.rows.first() else {
        return Some(format!("probe {} returned no rows", p.name));
    };
    match row.first() {
        None => Some(format!("probe {} returned no columns", p.name)),
        Some(None) => Some(format!("probe {} returned NULL", p.name)),
        Some(Some(v)) if matches!(v.as_str(), "f" | "false" | "0") => {
            Some(format!("probe {} returned {v}", p.name))
        }
        Some(Some(_)) => None,
    }
}

/// The guard's memory: consecutive failures so far.
#[derive(Debug, Default)]
pub struct Guard {
    pub failures: u32,
}

impl Guard {
    pub const fn new() -> Guard {
        Guard { failures: 0 }
    }

    /// Judge one round of facts, counting consecutive failures.
    pub fn check(&mut self, facts: &HealthFacts, settings: &Settings) -> Health {
        if facts.state != PgState::Running {
            return Health::Degraded(format!("PostgreSQL is {}", names::pg_state(&facts.state)));
        }
        if settings.role.is_some_and(|r| r != facts.role) {
            self.failures = 0;
            return Health::Healthy;
        }
        let watched: Vec<&ProbeResult> = facts
            .probes
            .iter()
            .filter(|p| settings.probe.as_ref().is_none_or(|name| *name == p.name))
            .collect();
        if watched.is_empty() {
            // Misconfigured, or Regent did not run the probe: not the database's fault.
            let which = match &settings.probe {
                Some(name) => format!("probe {name} has no result"),
                None => "no probe results".to_string(),
            };
            return Health::Degraded(format!(
                "{which}: list it in the manifest's [[probes]] and grant the sql-probe capability"
            ));
        }
        let Some(why) = watched.iter().find_map(|p| probe_failure(p)) else {
            self.failures = 0;
            return Health::Healthy;
        };
        self.failures = self.failures.saturating_add(1);
        let n = settings.failures_before_failed;
        if self.failures >= n {
            Health::Failed(format!(
                "{why} ({} consecutive failures, failures_before_failed is {n})",
                self.failures
            ))
        } else {
            Health::Degraded(format!(
                "{why} ({} of {n} consecutive failures before failed)",
                self.failures
            ))
        }
    }
}

struct ReplicationGuard {
    settings: Settings,
    guard: Guard,
}

impl Policy for ReplicationGuard {
    const NAME: &'static str = NAME;
    const HOOKS: &'static [Hook] = &[Hook::CheckHealth];

    fn new(settings: &mut Table) -> Result<Self, String> {
        Ok(ReplicationGuard {
            settings: Settings::read(settings)?,
            guard: Guard::new(),
        })
    }

    fn check_health(&mut self, facts: &HealthFacts) -> Health {
        let (settings, guard) = (&self.settings, &mut self.guard);
        let before = guard.failures;
        let health = guard.check(facts, settings);
        match (&health, guard.failures) {
            (Health::Failed(why), n) if n == settings.failures_before_failed => {
                host::log(LogLevel::Error, why)
            }
            (Health::Degraded(why), 1) => host::log(LogLevel::Warn, why),
            (Health::Healthy, 0) if before > 0 => host::log(
                LogLevel::Info,
                &format!("probes succeed again after {before} consecutive failures"),
            ),
            _ => {}
        }
        health
    }
}

export!(ReplicationGuard);

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(probes: Vec<ProbeResult>) -> HealthFacts {
        HealthFacts {
            name: "pg-1".into(),
            role: Role::Primary,
            state: PgState::Running,
            timeline: Some(2),
            wal_position: Some(1000),
            received_lsn: None,
            replayed_lsn: None,
            replication_connections: 1,
            lag: None,
            seconds_in_state: 60,
            is_leader: true,
            probes,
        }
    }

    fn ok(name: &str) -> ProbeResult {
        ProbeResult {
            name: name.into(),
            rows: vec![vec![Some("1".into())]],
            error: None,
        }
    }

    fn err(name: &str) -> ProbeResult {
        ProbeResult {
            name: name.into(),
            rows: vec![],
            error: Some("canceling statement due to statement timeout".into()),
        }
    }

    #[test]
    fn degraded_then_failed_after_n_consecutive_failures_then_healthy_again() {
        let s = Settings::parse(r#"{"failures_before_failed": 3, "probe": "canary"}"#).unwrap();
        let mut g = Guard::new();
        let bad = facts(vec![err("canary"), ok("other")]);
        assert_eq!(
            g.check(&bad, &s),
            Health::Degraded("probe canary failed: canceling statement due to statement timeout (1 of 3 consecutive failures before failed)".into())
        );
        assert!(matches!(g.check(&bad, &s), Health::Degraded(_)));
        assert_eq!(
            g.check(&bad, &s),
            Health::Failed("probe canary failed: canceling statement due to statement timeout (3 consecutive failures, failures_before_failed is 3)".into())
        );
        assert!(matches!(g.check(&bad, &s), Health::Failed(_)));
        assert_eq!(g.check(&facts(vec![ok("canary")]), &s), Health::Healthy);
        assert_eq!(g.failures, 0);
        assert!(
            matches!(g.check(&bad, &s), Health::Degraded(_)),
            "the count starts over"
        );
    }

    #[test]
    fn what_counts_as_a_failure() {
        let r = |rows: Vec<Vec<Option<&str>>>| ProbeResult {
            name: "p".into(),
            rows: rows
                .into_iter()
                .map(|r| r.into_iter().map(|c| c.map(String::from)).collect())
                .collect(),
            error: None,
        };
        assert_eq!(probe_failure(&r(vec![vec![Some("1")]])), None);
        assert_eq!(probe_failure(&r(vec![vec![Some("t")]])), None);
        assert_eq!(
            probe_failure(&r(vec![vec![Some("3")], vec![Some("0")]])),
            None
        );
        assert_eq!(
            probe_failure(&r(vec![])).unwrap(),
            "probe p returned no rows"
        );
        assert_eq!(
            probe_failure(&r(vec![vec![None]])).unwrap(),
            "probe p returned NULL"
        );
        assert_eq!(
            probe_failure(&r(vec![vec![Some("f")]])).unwrap(),
            "probe p returned f"
        );
        assert_eq!(
            probe_failure(&r(vec![vec![Some("0")]])).unwrap(),
            "probe p returned 0"
        );
    }

    #[test]
    fn watches_only_its_probe_and_role() {
        let s = Settings::parse(
            r#"{"probe": "canary", "role": "replica", "failures_before_failed": 1}"#,
        )
        .unwrap();
        let mut g = Guard::new();
        // A primary: not watched.
        assert_eq!(g.check(&facts(vec![err("canary")]), &s), Health::Healthy);
        let mut f = facts(vec![err("other"), ok("canary")]);
        f.role = Role::Replica;
        assert_eq!(g.check(&f, &s), Health::Healthy);
        f.probes = vec![err("canary")];
        assert!(matches!(g.check(&f, &s), Health::Failed(_)));
    }

    #[test]
    fn missing_probe_results_and_stopped_postgres_do_not_count() {
        let s = Settings::parse(r#"{"probe": "canary"}"#).unwrap();
        let mut g = Guard::new();
        assert_eq!(
            g.check(&facts(vec![ok("other")]), &s),
            Health::Degraded("probe canary has no result: list it in the manifest's [[probes]] and grant the sql-probe capability".into())
        );
        let mut f = facts(vec![err("canary")]);
        f.state = PgState::Stopped;
        assert_eq!(
            g.check(&f, &s),
            Health::Degraded("PostgreSQL is stopped".into())
        );
        assert_eq!(g.failures, 0);
    }

    #[test]
    fn settings() {
        let s = Settings::parse("{}").unwrap();
        assert_eq!((s.failures_before_failed, s.probe, s.role), (3, None, None));
        assert_eq!(
            Settings::parse(r#"{"failures_before_failed": 0}"#).unwrap_err(),
            "replication-guard: setting `failures_before_failed` must be at least 1"
        );
        assert_eq!(
            Settings::parse(r#"{"role": "leader"}"#).unwrap_err(),
            "replication-guard: setting `role` must be one of \"any\", \"primary\", \"replica\", not \"leader\""
        );
    }

    #[test]
    fn manifest_agrees_with_the_plugin() {
        let m = regent_policy_sdk::testing::Manifest::parse(include_str!(
            "../../../policies/replication-guard.toml"
        ));
        m.check(&ReplicationGuard::describe());
        let s = Settings::parse(&m.settings_json).unwrap();
        let probe = s.probe.expect("the manifest names the probe to watch");
        assert!(
            m.probes.contains(&probe),
            "probe {probe} is not in the manifest's [[probes]]"
        );
    }
}
