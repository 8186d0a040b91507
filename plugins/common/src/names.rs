//! Roles and hooks as the WIT spells them, for messages.

use crate::types::{Hook, Role};

/// `primary`, `replica`, `unknown`.
pub fn role(role: Role) -> &'static str {
    match role {
        Role::Primary => "primary",
        Role::Replica => "replica",
        Role::Unknown => "unknown",
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
