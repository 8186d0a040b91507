//! A deliberately misbehaving policy for the host's tests. It ranks like a simple Patroni
//! policy, but faults on demand:
//! - `rank-candidates`: a member tagged `fault=<kind>` triggers `<kind>`: `loop`, `panic`,
//!   `oom`, `unreachable-instr`, `unknown-member`, `empty-reason`, `duplicate`,
//!   `rank-unreachable` (the invalid answers name the tagged member), or `echo-view` (vetoes
//!   with what it was told of each member: zone, synchronous, and the tags, of which it asks
//!   for `fault`, `zone` and `rack`);
//! - `check-health`: `facts.state` = `fault-<kind>` (`loop`, `panic`, `oom`), `probe-direct`
//!   (calls the host's `sql-probe` itself), `clock`, `events`, `settings` (what `configure`
//!   got), `log-enabled` (whether debug lines are recorded); any probe results are reported
//!   as `degraded`;
//! - `on-event`: `member-joined("fault-<kind>")`;
//! - `configure`: settings containing `"reject"` fail.

#[cfg(not(feature = "wrong-version"))]
wit_bindgen::generate!({ world: "policy", path: "../../../wit" });
#[cfg(feature = "wrong-version")]
wit_bindgen::generate!({ world: "policy", path: "wit-0.2.0" });

use regent::policy::host;
use regent::policy::types::{Candidate, Hook, LogLevel, Member, PgState, Role, TagKeys};
use std::sync::atomic::{AtomicU32, Ordering};

static EVENTS: AtomicU32 = AtomicU32::new(0);
static SETTINGS: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

struct Plugin;

fn fault(kind: &str, hook: &str) {
    match kind {
        "loop" => {
            let mut i: u64 = 0;
            loop {
                i = std::hint::black_box(i.wrapping_add(1));
            }
        }
        "panic" => {
            panic!("deliberate panic in {hook}");
        }
        "oom" => {
            // Large blocks, never filled: the limit is met within a few steps of 8 MiB
            // whatever the machine's load (filling them could outlast the deadline).
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut chunk = Vec::<u8>::with_capacity(8 << 20);
                chunk.push(1);
                hoard.push(std::hint::black_box(chunk));
            }
        }
        "unreachable-instr" => {
            #[cfg(target_arch = "wasm32")]
            core::arch::wasm32::unreachable();
        }
        _ => {}
    }
}

/// The state's name (`running`, `stopped`, ...), or an `other` state as reported.
fn state_name(state: &PgState) -> String {
    match state {
        PgState::Other(s) => s.clone(),
        // Debug prints `PgState::Stopped`.
        known => format!("{known:?}")
            .rsplit("::")
            .next()
            .unwrap_or_default()
            .to_lowercase(),
    }
}

fn eligible(view: &ClusterView, m: &Member) -> bool {
    m.reachable
        && !m.nofailover
        && m.failover_priority > 0
        && matches!(m.health, Health::Healthy | Health::Degraded(_))
        && m.role == Role::Replica
        && matches!(m.state, PgState::Running)
        && m.wal_position.is_some()
        && m.lag.is_none_or(|l| l <= view.maximum_lag_on_failover)
        && (!view.synchronous_mode || m.synchronous)
}

impl Guest for Plugin {
    fn describe() -> PolicyInfo {
        PolicyInfo {
            name: option_env!("GUEST_NAME").unwrap_or("test-guest").into(),
            version: option_env!("GUEST_VERSION").unwrap_or("1.0.0").into(),
            hooks: vec![Hook::RankCandidates, Hook::CheckHealth, Hook::OnEvent],
            tags: TagKeys::Only(vec!["fault".into(), "zone".into(), "rack".into()]),
        }
    }

    fn configure(settings: String) -> Result<(), String> {
        if settings.contains("\"reject\"") {
            return Err("setting `reject`: this test guest refuses it; remove it".into());
        }
        host::log(LogLevel::Debug, &format!("configured with {settings}"));
        *SETTINGS.lock().unwrap() = settings;
        Ok(())
    }

    fn rank_candidates(view: ClusterView) -> Ranking {
        let fault_tag = view.members.iter().find_map(|m| {
            m.tags
                .iter()
                .find(|t| t.key == "fault")
                .map(|t| (m.name.clone(), t.value.clone()))
        });
        if let Some((tagged, kind)) = fault_tag {
            let kind = kind.as_str();
            fault(kind, "rank-candidates");
            let first = tagged;
            match kind {
                "unknown-member" => {
                    return Ranking::Candidates(vec![Candidate {
                        name: "no-such-member".into(),
                        reason: "made up".into(),
                    }]);
                }
                "empty-reason" => {
                    return Ranking::Candidates(vec![Candidate {
                        name: first,
                        reason: String::new(),
                    }]);
                }
                "duplicate" => {
                    let c = Candidate {
                        name: first,
                        reason: "twice".into(),
                    };
                    return Ranking::Candidates(vec![c.clone(), c]);
                }
                "echo-view" => {
                    let members: Vec<String> = view
                        .members
                        .iter()
                        .map(|m| {
                            let tags: Vec<String> = m
                                .tags
                                .iter()
                                .map(|t| format!("{}={}", t.key, t.value))
                                .collect();
                            format!(
                                "{} zone={} sync={} tags={}",
                                m.name,
                                m.zone.as_deref().unwrap_or("-"),
                                m.synchronous,
                                tags.join(",")
                            )
                        })
                        .collect();
                    return Ranking::Veto(format!(
                        "synchronous-mode={}; {}",
                        view.synchronous_mode,
                        members.join("; ")
                    ));
                }
                "rank-unreachable" => {
                    if let Some(m) = view.members.iter().find(|m| !m.reachable) {
                        return Ranking::Candidates(vec![Candidate {
                            name: m.name.clone(),
                            reason: "unreachable, ranked anyway".into(),
                        }]);
                    }
                }
                _ => {}
            }
        }
        if let Some(p) = view
            .members
            .iter()
            .find(|m| m.reachable && m.role == Role::Primary && matches!(m.state, PgState::Running))
        {
            return Ranking::Veto(format!("primary {} is still alive", p.name));
        }
        let mut eligible: Vec<&Member> =
            view.members.iter().filter(|m| eligible(&view, m)).collect();
        eligible.sort_by(|a, b| {
            b.wal_position
                .cmp(&a.wal_position)
                .then(b.failover_priority.cmp(&a.failover_priority))
                .then(a.name.cmp(&b.name))
        });
        Ranking::Candidates(
            eligible
                .into_iter()
                .map(|m| Candidate {
                    name: m.name.clone(),
                    reason: format!(
                        "lag {} bytes, zone {}",
                        m.lag.unwrap_or(0),
                        m.zone.as_deref().unwrap_or("-")
                    ),
                })
                .collect(),
        )
    }

    fn check_health(facts: HealthFacts) -> Health {
        // The tests' commands arrive as states the host does not know.
        let command = match &facts.state {
            PgState::Other(s) => s.as_str(),
            _ => "",
        };
        if let Some(kind) = command.strip_prefix("fault-") {
            fault(kind, "check-health");
        }
        match command {
            "probe-direct" => {
                return match host::sql_probe("select 1") {
                    Ok(rows) => Health::Degraded(format!("direct probe rows={rows:?}")),
                    Err(e) => Health::Degraded(format!("direct probe error: {e}")),
                };
            }
            "clock" => return Health::Degraded(format!("now={}", host::now_ms())),
            "log-enabled" => {
                return Health::Degraded(format!(
                    "debug={} error={}",
                    host::log_enabled(LogLevel::Debug),
                    host::log_enabled(LogLevel::Error)
                ));
            }
            "settings" => {
                return Health::Degraded(format!("settings={}", SETTINGS.lock().unwrap()));
            }
            "events" => {
                return Health::Degraded(format!("events={}", EVENTS.load(Ordering::Relaxed)));
            }
            _ => {}
        }
        if !facts.probes.is_empty() {
            let text: Vec<String> = facts
                .probes
                .iter()
                .map(|p| format!("{}={:?}/{:?}", p.name, p.rows, p.error))
                .collect();
            return Health::Degraded(text.join(";"));
        }
        if matches!(facts.state, PgState::Running) {
            Health::Healthy
        } else {
            Health::Failed(format!("PostgreSQL is {}", state_name(&facts.state)))
        }
    }

    fn on_event(e: Event) {
        EVENTS.fetch_add(1, Ordering::Relaxed);
        if let Event::MemberJoined(name) = &e
            && let Some(kind) = name.strip_prefix("fault-")
        {
            fault(kind, "on-event");
        }
        host::log(LogLevel::Info, &format!("event {e:?}"));
    }
}

export!(Plugin);
