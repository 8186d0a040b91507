//! One loaded policy version: its compiled component, its single reused instance, its faults.
//!
//! This module holds [`WasmPolicy`] itself (what it keeps, what it reports for `GET /policy`
//! and `regent policy check`) and what a policy describes about itself. The rest has its own
//! file: `load.rs` compiles, instantiates, describes, configures and self-tests a version;
//! `call.rs` runs the hooks on the reused instance and falls back to the built-in rules;
//! `fault.rs` says what a failed call was and records it; `optimize.rs` swaps in the
//! optimized code.

mod call;
mod fault;
mod load;
mod optimize;

pub use fault::Fault;
pub(crate) use fault::FaultKind;

use super::compile::Origin;
use super::guest::{self, PolicyPre, State};
use super::manifest::{Hook, Manifest};
use super::runtime::{InstanceConfig, Live, Tier};
use super::{Report, SelfTestResult, WIT_PACKAGE};
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a policy says about itself (`describe`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct PolicyInfo {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) hooks: Vec<Hook>,
    /// The member tags `rank-candidates` is given.
    pub(crate) tags: TagKeys,
}

/// Which member tags a policy reads (`describe`'s `tags`); a member in its view carries only
/// those.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum TagKeys {
    All,
    Only(Vec<String>),
}

impl fmt::Display for TagKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagKeys::All => f.write_str("all"),
            TagKeys::Only(keys) if keys.is_empty() => f.write_str("none"),
            TagKeys::Only(keys) => f.write_str(&keys.join(", ")),
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The name and leadership of the local node, for `check-health`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct LocalNode {
    pub(crate) name: String,
    pub(crate) is_leader: bool,
}

/// What the host lends every policy of a set: the SQL prober and the local node's identity.
#[derive(Clone, Default)]
pub(crate) struct HostContext {
    pub(crate) prober: guest::ProberCell,
    pub(crate) local: Arc<Mutex<LocalNode>>,
}

#[derive(Debug, Default, Clone, Serialize)]
struct Stats {
    rank_calls: u64,
    health_calls: u64,
    event_calls: u64,
    faults: u64,
    instantiations: u64,
    last_fault: Option<Fault>,
}

/// The compiled code a policy version runs.
struct Code {
    tier: Tier,
    pre: PolicyPre<State>,
    origin: Origin,
    compile_time: Duration,
}

/// A loaded, self-tested policy version. Calls reuse one instance; a fault drops it and the next
/// call instantiates again.
///
/// A version loaded with quick code ([`Tier::Quick`]) is optimized in the background: the
/// optimized code, instantiated and configured, then replaces the quick code and its instance
/// between two calls.
pub struct WasmPolicy {
    manifest: Manifest,
    digest: String,
    info: PolicyInfo,
    /// Hooks in the manifest (or all described ones) that the policy describes.
    active: Vec<Hook>,
    /// Locked after `live` when both are.
    code: Arc<Mutex<Code>>,
    /// How the first code was compiled, for the record.
    first: (Tier, Origin, Duration),
    /// Why the background optimization failed, if it did.
    optimize_error: Arc<Mutex<Option<String>>>,
    icfg: InstanceConfig,
    deadline_ticks: u64,
    /// The settings JSON, once `configure` accepted it: every new instance gets it too.
    settings: Option<String>,
    live: Arc<Mutex<Option<Live>>>,
    stats: Arc<Mutex<Stats>>,
    host: HostContext,
    loaded_at: SystemTime,
    self_test: Vec<SelfTestResult>,
}

impl WasmPolicy {
    /// Drop the instance and the counts: tests that count instances or events start from a
    /// fresh instance of the code that serves, whether or not quick code served before.
    #[cfg(test)]
    pub(crate) fn reset_instance(&self) {
        *lock(&self.live) = None;
        *lock(&self.stats) = Stats::default();
    }

    /// The tier of the code that serves now.
    pub fn tier(&self) -> Tier {
        lock(&self.code).tier
    }

    pub(crate) fn is_active(&self, hook: Hook) -> bool {
        self.active.contains(&hook)
    }

    /// The manifest name.
    pub(crate) fn policy_name(&self) -> &str {
        &self.manifest.name
    }

    pub(crate) fn info(&self) -> &PolicyInfo {
        &self.info
    }

    pub(crate) fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// sha256 of the component, hex.
    pub(crate) fn digest(&self) -> &str {
        &self.digest
    }

    pub(crate) fn active_hooks(&self) -> &[Hook] {
        &self.active
    }

    /// How many faults this version has had, and the last one.
    #[cfg(test)]
    pub(crate) fn faults(&self) -> (u64, Option<Fault>) {
        let s = lock(&self.stats);
        (s.faults, s.last_fault.clone())
    }

    pub(crate) fn report(&self, file: &Path) -> Report {
        let mut hooks = self.active.clone();
        hooks.sort();
        Report {
            file: file.to_path_buf(),
            name: self.info.name.clone(),
            version: self.info.version.clone(),
            digest: self.digest.clone(),
            wit_package: WIT_PACKAGE,
            hooks,
            tags: self.info.tags.clone(),
            compile_ms: self.first.2.as_secs_f64() * 1000.0,
            cached: self.first.1 != Origin::Compiled,
            deadline_ms: self.manifest.deadline.as_millis() as u64,
            memory_mb: self.manifest.memory_mb,
            self_test: self.self_test.clone(),
        }
    }

    /// The state of this version for `GET /policy`.
    pub(crate) fn info_json(&self) -> serde_json::Value {
        let s = lock(&self.stats).clone();
        serde_json::json!({
            "name": self.manifest.name,
            "describes_as": self.info.name,
            "version": self.info.version,
            "digest": self.digest,
            "wit": WIT_PACKAGE,
            "hooks": self.active,
            "described_hooks": self.info.hooks,
            "tags": self.info.tags,
            "capabilities": self.manifest.capabilities,
            "manifest": self.manifest.path.as_ref().map(|p| p.display().to_string()),
            "component": self.manifest.component.display().to_string(),
            "deadline_ms": self.manifest.deadline.as_millis() as u64,
            "memory_mb": self.manifest.memory_mb,
            "loaded_at_unix_ms": unix_ms(self.loaded_at),
            "compile": self.compile_json(),
            "calls": {
                "rank_candidates": s.rank_calls,
                "check_health": s.health_calls,
                "on_event": s.event_calls,
            },
            "instantiations": s.instantiations,
            "faults": {
                "count": s.faults,
                "last": s.last_fault,
            },
            "self_test": self.self_test,
        })
    }

    /// `{"tier": "optimized", "ms": 80.5, "source": "compiled", "first": {...}, "error": null}`:
    /// the code that serves now, how the first code was compiled, and why the optimization
    /// failed (if it did).
    fn compile_json(&self) -> serde_json::Value {
        fn one(tier: Tier, origin: Origin, took: Duration) -> serde_json::Value {
            serde_json::json!({
                "tier": tier,
                "ms": took.as_secs_f64() * 1000.0,
                "source": match origin {
                    Origin::Compiled => "compiled",
                    Origin::Memory => "memory",
                    Origin::DiskCache => "cache",
                },
            })
        }
        let mut now = {
            let code = lock(&self.code);
            one(code.tier, code.origin, code.compile_time)
        };
        if let serde_json::Value::Object(m) = &mut now {
            m.insert(
                "first".into(),
                one(self.first.0, self.first.1, self.first.2),
            );
            m.insert(
                "optimize_error".into(),
                serde_json::json!(*lock(&self.optimize_error)),
            );
        }
        now
    }

    /// The first 8 hex digits of the digest.
    pub(crate) fn short_digest(&self) -> &str {
        &self.digest[..8.min(self.digest.len())]
    }

    pub(crate) fn component_path(&self) -> &PathBuf {
        &self.manifest.component
    }
}

fn hook_list(hooks: &[Hook]) -> String {
    if hooks.is_empty() {
        return "none".into();
    }
    hooks
        .iter()
        .map(|h| h.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
