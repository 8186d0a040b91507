//! WebAssembly failover policies: the host side of `wit/policy.wit` (`regent:policy@0.1.0`).
//!
//! A policy is a component plus a manifest (`policies/NAME.toml`, see [`manifest`]). Loading one
//! compiles it (or takes the compiled artifact from the cache), checks that it was built against
//! this WIT version, asks it to `describe` itself, hands it its `settings`, and runs a self-test
//! on recorded cluster views. Only a policy that passes all of that serves; a failed (re)load
//! leaves the previous version in place.
//!
//! At run time every call has a deadline (epoch interruption) and the instance a memory limit.
//! A call that traps, runs late, runs out of memory or answers something invalid is a *fault*:
//! it is logged and counted, the instance is dropped (re-instantiated on the next call), and
//! [`DefaultPolicy`](crate::ha::policy::DefaultPolicy) answers that call instead.
//!
//! The decision core stays pure: the supervisor hands a [`PolicySet`] to `ha::decide` as a
//! `&dyn Policy`. Calls take microseconds, but a runaway plugin holds the calling thread until
//! its deadline (50 ms by default), and a guest blocked in a host call (a WASI clock sleep, a
//! `sql-probe`) or slow probes longer: the deadline interrupts only the guest's own code. So
//! the supervisor waits no longer than the loop's share of the lease ([`LoopBudget`]) and
//! manifests whose bounds cannot fit it are refused (`budget.rs`).
//!
//! - [`PolicySet`]: the policies a node runs, in configured order; implements `Policy`.
//! - [`WasmPolicy`]: one loaded policy version; implements `Policy`.
//! - [`Shadow`] and [`Shadowed`]: a set pushed with `--shadow`, run beside the serving one on
//!   a thread of its own, its divergences counted; it never decides.
//! - [`check`] and [`eval`]: the `regent policy check` / `regent policy eval` subcommands.
//! - [`scaffold`]: `regent policy new` / `regent policy build`, a new policy crate on the SDK.

mod budget;
mod compile;
mod convert;
mod guest;
pub(crate) mod manifest;
mod reload;
mod runtime;
pub mod scaffold;
mod selftest;
mod set;
mod shadow;
mod wasm;

#[cfg(test)]
mod tests;

pub use budget::LoopBudget;
pub(crate) use compile::open_cache_dir;
pub use compile::{COMPILE_SUBCOMMAND, compile_child, compile_in_subprocess};
pub(crate) use manifest::{Hook, Manifest, with_component};
pub use reload::{DEBOUNCE, WatcherHandle};
pub use runtime::Tier;
pub(crate) use runtime::digest;
pub use selftest::{nine_members, sample_views};
pub use set::PolicySet;
#[cfg(test)]
pub(crate) use set::ReloadOutcome;
pub use shadow::{QUEUE as SHADOW_QUEUE, Shadow, Shadowed};
#[cfg(test)]
pub(crate) use wasm::FaultKind;
pub(crate) use wasm::TagKeys;
pub use wasm::{Fault, WasmPolicy};

use crate::ha::policy::{DefaultPolicy, ElectionView, Policy, Ranked, Ranking};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The WIT package this host implements. Components built against another version are refused.
pub(crate) const WIT_PACKAGE: &str = "regent:policy@0.1.0";

/// Call deadline when the manifest sets none.
pub(crate) const DEFAULT_DEADLINE: Duration = Duration::from_millis(50);
/// Memory limit of one policy instance when the manifest sets none.
pub(crate) const DEFAULT_MEMORY_MB: u64 = 32;
/// Statement timeout of a manifest probe without `timeout_ms`.
pub(crate) const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_millis(1000);
/// How much longer than its timeout a caller waits for a SQL probe (connecting, the round
/// trip after the server's statement timeout).
pub(crate) const PROBE_ALLOWANCE: Duration = Duration::from_millis(200);

/// Why a policy cannot be loaded, checked, reloaded or watched.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A file or directory cannot be read.
    #[error("{path}: {message}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A manifest problem: the file, the key, what is wrong and how to fix it.
    #[error("{path}: `{key}`: {problem}; {fix}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// The key at fault.
        key: String,
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// The file is not a WebAssembly component that compiles.
    #[error("{path}: not a valid WebAssembly component: {message}")]
    InvalidComponent {
        /// The component file.
        path: PathBuf,
        /// Why it does not compile.
        message: String,
    },
    /// The compile child failed (could not start, crashed, timed out): the version is refused
    /// rather than compiled in the supervisor's process.
    #[error(
        "{path}: the policy compiler process failed, so this version is not loaded (the previous version keeps serving; a new regent binary needs a restart of regent): {message}"
    )]
    Compiler {
        /// The component file.
        path: PathBuf,
        /// What the child did.
        message: String,
    },
    /// The component was built against another version of the `regent:policy` world.
    #[error(
        "{path}: built against a different regent:policy version{found}; rebuild against wit/policy.wit ({WIT_PACKAGE}) ({message})"
    )]
    WrongVersion {
        /// The component file.
        path: PathBuf,
        /// ` (regent:policy@X)` when the component names its version.
        found: String,
        /// How the mismatch showed.
        message: String,
    },
    /// The policy cannot be loaded; the message says why.
    #[error("policy {name}: {message}")]
    Load {
        /// The policy's name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// The policy's `configure` refused its settings.
    #[error("policy {name}: `configure` refused the settings: {message}")]
    Configure {
        /// The policy's name.
        name: String,
        /// The policy's own message.
        message: String,
    },
    /// The policy failed its self-test on one of the sample views.
    #[error("policy {name}: self-test failed on view `{view}`: {message}")]
    SelfTest {
        /// The policy's name.
        name: String,
        /// The sample view it failed on.
        view: String,
        /// How it failed.
        message: String,
    },
    /// A call into the policy faulted.
    #[error("policy {name}: {fault}")]
    Fault {
        /// The policy's name.
        name: String,
        /// The fault.
        fault: Box<Fault>,
    },
    /// The WebAssembly engine cannot start.
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
    /// A directory cannot be watched for changes.
    #[error("cannot watch {path} for policy changes: {message}")]
    Watch {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The election view given to [`eval`] does not parse.
    #[error("invalid election view JSON: {0}")]
    ViewJson(String),
}

/// Run read-only SQL on the local PostgreSQL for policies granted `sql-probe`. The supervisor
/// provides it ([`PolicySet::set_sql_prober`]); it is called from the thread that calls the
/// policy, so it must bound its own time by `timeout`.
pub(crate) trait SqlProber: Send + Sync {
    fn probe(&self, sql: &str, timeout: Duration) -> Result<Vec<Vec<Option<String>>>, String>;
}

/// A member role as events report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Role {
    Primary,
    Replica,
    Unknown,
}

impl Role {
    /// `primary`/`master` → primary, `replica`/`standby` (any case) → replica, else unknown.
    pub(crate) fn from_name(s: &str) -> Role {
        match s.to_ascii_lowercase().as_str() {
            "primary" | "master" => Role::Primary,
            "replica" | "standby" | "standby_leader" | "standby-leader" => Role::Replica,
            _ => Role::Unknown,
        }
    }
}

/// Something that happened, for the policies' `on-event` hook (names follow Patroni's callbacks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Event {
    Started(Role),
    Stopped(Role),
    Restarted(Role),
    Reloaded(Role),
    RoleChanged { from: Role, to: Role },
    FailoverStarted(String),
    FailoverDecided(Ranked),
    FailoverCompleted(String),
    MemberJoined(String),
    MemberLeft(String),
}

/// What [`check`] found out about a policy.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub(crate) file: PathBuf,
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) digest: String,
    pub(crate) wit_package: &'static str,
    pub(crate) hooks: Vec<Hook>,
    /// The member tags `rank-candidates` is given.
    pub(crate) tags: TagKeys,
    /// How long the component took to compile, or to load from the cache, in milliseconds.
    pub compile_ms: f64,
    pub(crate) cached: bool,
    pub(crate) deadline_ms: u64,
    pub(crate) memory_mb: u64,
    pub(crate) self_test: Vec<SelfTestResult>,
}

/// One self-test view and the policy's answer.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SelfTestResult {
    pub(crate) view: String,
    pub(crate) answer: String,
    pub(crate) micros: f64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: OK", self.file.display())?;
        writeln!(f, "  policy:    {} {}", self.name, self.version)?;
        writeln!(f, "  world:     {}", self.wit_package)?;
        writeln!(f, "  sha256:    {}", self.digest)?;
        let hooks: Vec<&str> = self.hooks.iter().map(|h| h.as_str()).collect();
        writeln!(f, "  hooks:     {}", hooks.join(", "))?;
        writeln!(f, "  tags:      {}", self.tags)?;
        writeln!(
            f,
            "  limits:    deadline {} ms, memory {} MiB",
            self.deadline_ms, self.memory_mb
        )?;
        writeln!(
            f,
            "  compiled:  {:.1} ms{}",
            self.compile_ms,
            if self.cached { " (from cache)" } else { "" }
        )?;
        writeln!(f, "  self-test:")?;
        for t in &self.self_test {
            writeln!(f, "    {:<22} {:>8.1} µs  {}", t.view, t.micros, t.answer)?;
        }
        Ok(())
    }
}

/// Load a policy from a `.toml` manifest or a bare `.wasm` component (then with every hook it
/// describes and no settings), check its WIT version, describe it and self-test it.
pub fn check(path: &Path) -> Result<Report, PolicyError> {
    let policy = load_for_cli(path)?;
    Ok(policy.report(path))
}

/// Load the policy of `manifest` (or a bare `.wasm`), parse an [`ElectionView`] from
/// `view_json`, and rank it. The text shows the ranking with reasons, and what the built-in
/// rules would answer. A fault is an error (its text includes the built-in answer).
pub fn eval(manifest: &Path, view_json: &str) -> Result<String, PolicyError> {
    let view: ElectionView =
        serde_json::from_str(view_json).map_err(|e| PolicyError::ViewJson(e.to_string()))?;
    let policy = load_for_cli(manifest)?;
    let default = DefaultPolicy.rank(&view);
    let answer = policy
        .rank_checked(&view)
        .map_err(|fault| PolicyError::Fault {
            name: policy.name(),
            fault: Box::new(fault.with_note(format!(
                "the built-in rules would answer: {}",
                ranking_text(&default).trim_end()
            ))),
        })?;
    let mut out = String::new();
    let info = policy.info();
    out.push_str(&format!(
        "policy {} {} (sha256 {})\n",
        info.name,
        info.version,
        &policy.digest()[..16.min(policy.digest().len())]
    ));
    out.push_str(&ranking_text(&answer));
    // The same decision: the same candidates in the same order (reasons may be worded
    // differently), or a veto either way.
    let same = match (&answer, &default) {
        (Ranking::Candidates(a), Ranking::Candidates(b)) => {
            a.iter().map(|c| &c.name).eq(b.iter().map(|c| &c.name))
        }
        (Ranking::Veto(_), Ranking::Veto(_)) => true,
        _ => false,
    };
    if !same {
        out.push_str("the built-in rules would answer differently:\n");
        for line in ranking_text(&default).lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    } else {
        out.push_str("(the built-in rules rank the same)\n");
    }
    Ok(out)
}

fn load_for_cli(path: &Path) -> Result<WasmPolicy, PolicyError> {
    let is_manifest = path.extension().is_some_and(|e| e == "toml");
    let manifest = if is_manifest {
        Manifest::load(path)?
    } else {
        Manifest::for_component(path)
    };
    // A one-off command: the optimized code at once, no background work.
    WasmPolicy::load_as(&manifest, None, Default::default(), Tier::Optimized)
}

/// A ranking as text: one candidate per line with its reason, or the veto.
pub(crate) fn ranking_text(r: &Ranking) -> String {
    match r {
        Ranking::Veto(why) => format!("veto: {why}\n"),
        Ranking::Candidates(list) if list.is_empty() => "no eligible candidate\n".to_string(),
        Ranking::Candidates(list) => {
            let mut s = String::new();
            for (i, c) in list.iter().enumerate() {
                s.push_str(&format!("{:>2}. {:<16} {}\n", i + 1, c.name, c.reason));
            }
            s
        }
    }
}
