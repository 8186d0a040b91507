//! # faulty
//!
//! A test fixture for Regent's fault handling (`tests/fixtures/policies/faulty.wasm`): it
//! misbehaves the way its settings ask. Not a policy to deploy.
//!
//! Settings (`configure` JSON):
//! - `mode`:
//!   - `"ok"` (default): behaves like patroni-default (`rank-candidates`), healthy while
//!     PostgreSQL runs (`check-health`), ignores events;
//!   - `"loop"`: an infinite loop (the host's deadline must stop it);
//!   - `"trap"`: a panic, its message printed to stderr first (a trap);
//!   - `"oom"`: allocates without bound (the host's memory limit must stop it);
//!   - `"unknown-member"`: `rank-candidates` ranks `not-a-member`, a name not in the view, first;
//!   - `"empty-reason"`: `rank-candidates` gives its first candidate an empty reason (with no
//!     eligible candidate, it returns one for the first member of the view);
//!   - `"veto"`: `rank-candidates` vetoes (`faulty: veto asked by the settings`).
//! - `hook` (default `"rank-candidates"`): where `loop`, `trap` and `oom` strike:
//!   `"rank-candidates"`, `"check-health"`, `"on-event"` or `"configure"` (then `configure`
//!   itself misbehaves, after parsing the settings). The other hooks behave as `ok`.
//! - `when_member` (optional): arm the mode only for calls about that member: a view that has a
//!   member of that name (`rank-candidates`), facts of that node (`check-health`), an event that
//!   names it (`on-event`: joined, left, decided, completed). Other calls behave as `ok`, so
//!   Regent's load-time self-test passes and a test can trigger the fault in service.
//!
//! Each fault first prints a line to stderr (`faulty: mode=... in <hook>`), so a host test can
//! check that the guest's stderr reaches the fault report.
//!
//! Hooks: all three.

use regent_policy_sdk::names;
use regent_policy_sdk::patroni::Limits;
use regent_policy_sdk::prelude::*;
use regent_policy_sdk::settings::Table;

const NAME: &str = "faulty";

const MODES: &[&str] = &[
    "ok",
    "loop",
    "trap",
    "oom",
    "unknown-member",
    "empty-reason",
    "veto",
];
const HOOKS: &[&str] = &["rank-candidates", "check-health", "on-event", "configure"];

/// The settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub mode: String,
    pub hook: String,
    pub when_member: Option<String>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            mode: "ok".into(),
            hook: "rank-candidates".into(),
            when_member: None,
        }
    }
}

impl Settings {
    pub fn parse(json: &str) -> Result<Settings, String> {
        regent_policy_sdk::settings::read(NAME, json, Settings::read)
    }

    /// Read the settings from the manifest's table: unknown keys are refused before the
    /// combinations are checked.
    pub fn read(table: &mut Table) -> Result<Settings, String> {
        let mode = table.choice("mode", MODES)?.unwrap_or_else(|| "ok".into());
        let hook = table
            .choice("hook", HOOKS)?
            .unwrap_or_else(|| "rank-candidates".into());
        let when_member = table.string("when_member")?;
        table.finish()?;
        if when_member.is_some() && hook == "configure" {
            return Err(format!(
                "{NAME}: `when_member` does not apply to hook \"configure\""
            ));
        }
        if matches!(mode.as_str(), "unknown-member" | "empty-reason" | "veto")
            && hook != "rank-candidates"
        {
            return Err(format!(
                "{NAME}: mode \"{mode}\" only applies to rank-candidates, not to {hook}"
            ));
        }
        Ok(Settings {
            mode,
            hook,
            when_member,
        })
    }

    /// These settings if the call is about `when_member` (or it is not set), else mode `ok`.
    fn armed_if(self, about: impl FnOnce(&str) -> bool) -> Settings {
        match &self.when_member {
            Some(name) if !about(name) => Settings {
                mode: "ok".into(),
                ..self
            },
            _ => self,
        }
    }
}

/// Whether an event names `member`.
fn event_names(e: &Event, member: &str) -> bool {
    match e {
        Event::MemberJoined(n) | Event::MemberLeft(n) | Event::FailoverCompleted(n) => n == member,
        Event::FailoverDecided(c) => c.name == member,
        _ => false,
    }
}

/// Misbehave if the settings say so for `hook`: loop, panic or allocate without bound.
fn strike(s: &Settings, hook: &str) {
    if s.hook != hook {
        return;
    }
    match s.mode.as_str() {
        "loop" => {
            eprintln!("faulty: mode=loop in {hook}: looping forever");
            let mut i: u64 = 0;
            loop {
                i = std::hint::black_box(i.wrapping_add(1));
            }
        }
        "trap" => {
            eprintln!("faulty: mode=trap in {hook}: panicking");
            panic!("faulty policy: deliberate panic in {hook} (mode \"trap\")");
        }
        "oom" => {
            eprintln!("faulty: mode=oom in {hook}: allocating without bound");
            // Large blocks that are never filled: the memory grows by 8 MiB a step and meets
            // the limit within a few steps, however slow the code (a zeroed 1 MiB block a step
            // took over 50 ms on a loaded machine, and the deadline struck first).
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut chunk = Vec::<u8>::with_capacity(8 << 20);
                chunk.push(1);
                hoard.push(std::hint::black_box(chunk));
            }
        }
        _ => {}
    }
}

/// `rank-candidates` per the mode (the faults `loop`, `trap`, `oom` are struck before).
pub fn rank(view: &ClusterView, s: &Settings) -> Ranking {
    if s.mode == "veto" {
        return Ranking::Veto("faulty: veto asked by the settings".into());
    }
    if let Some(primary) = patroni::live_primary(view) {
        return Ranking::Veto(patroni::primary_alive(primary));
    }
    let (mut eligible, _) = patroni::partition(view, &Limits::of(view, false));
    eligible.sort_by(|a, b| patroni::order(a, b));
    let mut candidates: Vec<Candidate> = eligible
        .iter()
        .map(|m| Candidate {
            name: m.name.clone(),
            reason: format!("faulty (mode {}): {}", s.mode, patroni::position(view, m)),
        })
        .collect();
    match s.mode.as_str() {
        "unknown-member" => {
            let mut ghost = "not-a-member".to_string();
            while view.members.iter().any(|m| m.name == ghost) {
                ghost.push('-');
            }
            let reason = "faulty: a name that is not in the view".to_string();
            candidates.insert(
                0,
                Candidate {
                    name: ghost,
                    reason,
                },
            );
        }
        "empty-reason" => match candidates.first_mut() {
            Some(c) => c.reason.clear(),
            None => {
                if let Some(m) = view.members.first() {
                    candidates.push(Candidate {
                        name: m.name.clone(),
                        reason: String::new(),
                    });
                }
            }
        },
        _ => {}
    }
    Ranking::Candidates(candidates)
}

struct Faulty(Settings);

impl Policy for Faulty {
    const NAME: &'static str = NAME;
    const HOOKS: &'static [Hook] = &[Hook::RankCandidates, Hook::CheckHealth, Hook::OnEvent];

    fn new(settings: &mut Table) -> Result<Self, String> {
        let parsed = Settings::read(settings)?;
        strike(&parsed, "configure");
        Ok(Faulty(parsed))
    }

    fn rank(&self, view: &ClusterView) -> Ranking {
        let s = self
            .0
            .clone()
            .armed_if(|n| view.members.iter().any(|m| m.name == n));
        strike(&s, "rank-candidates");
        rank(view, &s)
    }

    fn check_health(&mut self, facts: &HealthFacts) -> Health {
        strike(
            &self.0.clone().armed_if(|n| facts.name == n),
            "check-health",
        );
        if facts.state == PgState::Running {
            Health::Healthy
        } else {
            Health::Degraded(format!("PostgreSQL is {}", names::pg_state(&facts.state)))
        }
    }

    fn on_event(&mut self, event: &Event) {
        strike(
            &self.0.clone().armed_if(|n| event_names(event, n)),
            "on-event",
        );
    }
}

export!(Faulty);

#[cfg(test)]
mod tests {
    use super::*;
    use regent_policy_sdk::testing::{member, view};
    use regent_policy_sdk::types::Member;

    fn s(json: &str) -> Settings {
        Settings::parse(json).unwrap()
    }

    #[test]
    fn settings() {
        assert_eq!(s(""), Settings::default());
        assert_eq!(
            s(r#"{"mode": "trap", "hook": "check-health"}"#).hook,
            "check-health"
        );
        assert!(
            Settings::parse(r#"{"mode": "explode"}"#)
                .unwrap_err()
                .contains("must be one of")
        );
        assert!(Settings::parse(r#"{"mode": "veto", "hook": "on-event"}"#).is_err());
    }

    #[test]
    fn when_member_arms_the_mode_only_for_calls_about_that_member() {
        assert!(
            Settings::parse(r#"{"mode": "trap", "hook": "configure", "when_member": "x"}"#)
                .is_err()
        );
        let settings = s(r#"{"mode": "veto", "when_member": "pg-fault"}"#);
        for (members, vetoed) in [(vec!["a"], false), (vec!["a", "pg-fault"], true)] {
            let v = view(members.iter().map(|n| member(n)).collect());
            let armed = settings
                .clone()
                .armed_if(|n| v.members.iter().any(|m| m.name == n));
            assert_eq!(matches!(rank(&v, &armed), Ranking::Veto(_)), vetoed);
        }
        assert!(event_names(
            &Event::MemberLeft("pg-fault".into()),
            "pg-fault"
        ));
        assert!(!event_names(
            &Event::FailoverStarted("pg-fault".into()),
            "pg-fault"
        ));
    }

    #[test]
    fn ok_ranks_like_patroni_default() {
        let v = view(vec![
            Member {
                wal_position: Some(1),
                ..member("a")
            },
            member("b"),
        ]);
        let Ranking::Candidates(c) = rank(&v, &s("{}")) else {
            panic!()
        };
        let names: Vec<_> = c.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
    }

    #[test]
    fn invalid_answers() {
        let v = view(vec![member("not-a-member"), member("b")]);
        let Ranking::Candidates(c) = rank(&v, &s(r#"{"mode": "unknown-member"}"#)) else {
            panic!()
        };
        assert_eq!(c[0].name, "not-a-member-");
        assert_eq!(c.len(), 3);
        let Ranking::Candidates(c) = rank(&v, &s(r#"{"mode": "empty-reason"}"#)) else {
            panic!()
        };
        assert_eq!(c[0].reason, "");
        let stopped = view(vec![Member {
            state: PgState::Stopped,
            ..member("a")
        }]);
        let Ranking::Candidates(c) = rank(&stopped, &s(r#"{"mode": "empty-reason"}"#)) else {
            panic!()
        };
        assert_eq!((c[0].name.as_str(), c[0].reason.as_str()), ("a", ""));
    }

    #[test]
    fn trap_panics_with_a_message() {
        let r = std::panic::catch_unwind(|| strike(&s(r#"{"mode": "trap"}"#), "rank-candidates"));
        let msg = r.unwrap_err().downcast::<String>().unwrap();
        assert_eq!(
            *msg,
            "faulty policy: deliberate panic in rank-candidates (mode \"trap\")"
        );
        // Another hook is not affected.
        strike(&s(r#"{"mode": "trap"}"#), "check-health");
    }
}
