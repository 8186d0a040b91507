//! # event-journal
//!
//! Logs every event Regent reports (PostgreSQL started/stopped/restarted/reloaded, role changes,
//! elections, members joining and leaving, policy loads) through the host's `log`, one line per
//! event: `event <kind>: <what happened> (<why / Patroni callback>)`. Stops, departures and
//! elections are logged at `warn`, the rest at `info`.
//!
//! The smallest useful hook to start from when you want to react to events (notify, count,
//! ...): change [`journal_line`].
//!
//! Settings: none.
//!
//! Hooks: `on-event`.

use regent_policy_sdk::names;
use regent_policy_sdk::prelude::*;
use regent_policy_sdk::settings::Table;

const NAME: &str = "event-journal";

fn or_unknown(reason: &str) -> &str {
    if reason.is_empty() {
        "no reason given"
    } else {
        reason
    }
}

/// The log level and line for an event.
pub fn journal_line(e: &Event) -> (LogLevel, String) {
    let (level, kind, what) = match e {
        Event::Started(role) => (
            LogLevel::Info,
            "started",
            format!("PostgreSQL started as {} (on_start)", names::role(*role)),
        ),
        Event::Stopped(role) => (
            LogLevel::Warn,
            "stopped",
            format!(
                "PostgreSQL stopped, it was {} (on_stop)",
                names::role(*role)
            ),
        ),
        Event::Restarted(role) => (
            LogLevel::Info,
            "restarted",
            format!(
                "PostgreSQL restarted as {} (on_restart)",
                names::role(*role)
            ),
        ),
        Event::Reloaded(role) => (
            LogLevel::Info,
            "reloaded",
            format!(
                "configuration reloaded on the {} (on_reload)",
                names::role(*role)
            ),
        ),
        Event::RoleChanged(change) => (
            LogLevel::Info,
            "role-changed",
            format!(
                "role changed from {} to {} (on_role_change)",
                names::role(change.from),
                names::role(change.to)
            ),
        ),
        Event::FailoverStarted(reason) => (
            LogLevel::Warn,
            "failover-started",
            format!("election started ({})", or_unknown(reason)),
        ),
        Event::FailoverDecided(candidate) => (
            LogLevel::Info,
            "failover-decided",
            format!(
                "{} should take the leader key ({})",
                candidate.name,
                or_unknown(&candidate.reason)
            ),
        ),
        Event::FailoverCompleted(name) => (
            LogLevel::Info,
            "failover-completed",
            format!("{name} now holds the leader key"),
        ),
        Event::MemberJoined(name) => (
            LogLevel::Info,
            "member-joined",
            format!("member {name} joined the cluster"),
        ),
        Event::MemberLeft(name) => (
            LogLevel::Warn,
            "member-left",
            format!("member {name} left the cluster"),
        ),
        Event::PolicyLoaded(info) => {
            let hooks: Vec<&str> = info.hooks.iter().map(|h| names::hook(*h)).collect();
            (
                LogLevel::Info,
                "policy-loaded",
                format!(
                    "policy {} {} loaded (hooks: {})",
                    info.name,
                    info.version,
                    if hooks.is_empty() {
                        "none".to_string()
                    } else {
                        hooks.join(", ")
                    }
                ),
            )
        }
    };
    (level, format!("event {kind}: {what}"))
}

struct EventJournal;

impl Policy for EventJournal {
    const NAME: &'static str = NAME;
    const HOOKS: &'static [Hook] = &[Hook::OnEvent];

    fn new(_settings: &mut Table) -> Result<Self, String> {
        Ok(EventJournal) // takes no settings: the SDK refuses any key
    }

    fn on_event(&mut self, event: &Event) {
        let (level, line) = journal_line(event);
        host::log(level, &line);
    }
}

export!(EventJournal);

#[cfg(test)]
mod tests {
    use super::*;
    use regent_policy_sdk::configure;
    use regent_policy_sdk::types::{Candidate, Role, RoleChange};
    use regent_policy_sdk::types::{PolicyInfo, TagKeys};

    #[test]
    fn lines_say_what_and_why() {
        let line = |e: Event| journal_line(&e).1;
        assert_eq!(
            line(Event::Started(Role::Replica)),
            "event started: PostgreSQL started as replica (on_start)"
        );
        assert_eq!(
            line(Event::RoleChanged(RoleChange {
                from: Role::Replica,
                to: Role::Primary
            })),
            "event role-changed: role changed from replica to primary (on_role_change)"
        );
        assert_eq!(
            line(Event::FailoverDecided(Candidate {
                name: "pg-2".into(),
                reason: "1 of 2 eligible".into()
            })),
            "event failover-decided: pg-2 should take the leader key (1 of 2 eligible)"
        );
        assert_eq!(
            line(Event::FailoverStarted(String::new())),
            "event failover-started: election started (no reason given)"
        );
        assert_eq!(
            line(Event::PolicyLoaded(PolicyInfo {
                name: "x".into(),
                version: "1.0".into(),
                hooks: vec![Hook::OnEvent, Hook::CheckHealth],
                tags: TagKeys::All,
            })),
            "event policy-loaded: policy x 1.0 loaded (hooks: on-event, check-health)"
        );
        assert_eq!(
            journal_line(&Event::MemberLeft("pg-3".into())).0,
            LogLevel::Warn
        );
    }

    #[test]
    fn takes_no_settings() {
        assert!(configure::<EventJournal>("{}").is_ok());
        assert_eq!(
            configure::<EventJournal>(r#"{"level": "debug"}"#)
                .err()
                .unwrap(),
            "event-journal: unknown setting `level` (this policy takes no settings)"
        );
    }

    #[test]
    fn manifest_agrees_with_the_plugin() {
        let m = regent_policy_sdk::testing::Manifest::parse(include_str!(
            "../../../policies/event-journal.toml"
        ));
        m.check(&EventJournal::describe());
        configure::<EventJournal>(&m.settings_json).unwrap();
    }
}
