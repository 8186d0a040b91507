//! Roles, PostgreSQL states and hooks as the WIT (and Patroni) spell them, for messages.

use crate::types::{Hook, PgState, Role};

/// `primary`, `replica`, `unknown`.
pub fn role(role: Role) -> &'static str {
    match role {
        Role::Primary => "primary",
        Role::Replica => "replica",
        Role::Unknown => "unknown",
    }
}

/// Patroni's name of a PostgreSQL state: `running`, `creating replica`, ... (an `other` state
/// as reported).
pub fn pg_state(state: &PgState) -> &str {
    match state {
        PgState::Running => "running",
        PgState::Starting => "starting",
        PgState::Stopping => "stopping",
        PgState::Stopped => "stopped",
        PgState::Restarting => "restarting",
        PgState::Crashed => "crashed",
        PgState::CreatingReplica => "creating replica",
        PgState::Initializing => "initializing new cluster",
        PgState::Unreachable => "unreachable",
        PgState::Other(s) => s,
    }
}

/// `rank-candidates`, `check-health`, `on-event`: as in a manifest's `hooks`.
pub fn hook(hook: Hook) -> &'static str {
    match hook {
        Hook::RankCandidates => "rank-candidates",
        Hook::CheckHealth => "check-health",
        Hook::OnEvent => "on-event",
    }
}
