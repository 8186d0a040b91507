//! # faulty-wrong-version
//!
//! A test fixture (`tests/fixtures/policies/wrong-version.wasm`): a well-formed policy built
//! against `regent:policy@0.0.9` instead of `0.1.0`. Regent must refuse to load it.
//!
//! `wit/policy.wit` is a copy of `../../wit/policy.wit` with only the version changed;
//! `build.sh` checks that the two do not drift apart otherwise. Standalone on purpose: it does
//! not use the SDK (regent-policy-sdk), whose bindings are those of `0.1.0`.

wit_bindgen::generate!({ world: "policy", path: "wit" });

use regent::policy::host;
use regent::policy::types::{Candidate, Hook, LogLevel, PgState, Role, TagKeys};

struct WrongVersion;

impl Guest for WrongVersion {
    fn describe() -> PolicyInfo {
        PolicyInfo {
            name: "wrong-version".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            hooks: vec![Hook::RankCandidates],
            tags: TagKeys::Only(Vec::new()),
        }
    }

    // Calls the host, so that the component imports `regent:policy/host@0.0.9`: a plain
    // linker of 0.1.0 then fails too. Without any host call the only trace of the version is
    // the type-only import `regent:policy/types@0.0.9`, which wasmtime's linker does not check.
    fn configure(_settings: String) -> Result<(), String> {
        host::log(LogLevel::Info, "wrong-version fixture configured");
        Ok(())
    }

    /// Reachable running replicas, by name: a harmless answer should it ever be called.
    fn rank_candidates(view: ClusterView) -> Ranking {
        Ranking::Candidates(
            view.members
                .into_iter()
                .filter(|m| {
                    m.reachable && m.role == Role::Replica && matches!(m.state, PgState::Running)
                })
                .map(|m| Candidate {
                    name: m.name,
                    reason: "wrong-version fixture".into(),
                })
                .collect(),
        )
    }

    fn check_health(_facts: HealthFacts) -> Health {
        Health::Healthy
    }

    fn on_event(_event: Event) {}
}

export!(WrongVersion);
