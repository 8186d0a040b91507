//! The policies a node runs, in configured order, each swappable at run time.

use super::budget::{self, LoopBudget};
use super::manifest::{Hook, Manifest};
use super::runtime;
use super::wasm::{HostContext, LocalNode, WasmPolicy};
use super::{Event, PolicyError, SqlProber};
use crate::ha::policy::{DefaultPolicy, ElectionView, Health, HealthFacts, Policy, Ranking};
use arc_swap::ArcSwap;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one reload attempt did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "result")]
pub(crate) enum ReloadOutcome {
    /// The new version serves.
    Reloaded {
        policy: String,
        from: String,
        to: String,
        version: String,
        ms: f64,
    },
    /// Neither the manifest nor the component changed.
    Unchanged { policy: String },
    /// The new files were refused; the previous version keeps serving.
    Failed { policy: String, error: String },
}

#[derive(Debug, Default, Clone, Serialize)]
struct ReloadLog {
    ok: u64,
    failed: u64,
    unchanged: u64,
    last: Option<ReloadOutcome>,
    last_at_unix_ms: Option<u64>,
    /// The last failure, kept after later successes.
    last_error: Option<String>,
}

pub(crate) struct Slot {
    pub(crate) name: String,
    pub(crate) manifest_path: PathBuf,
    pub(crate) current: ArcSwap<WasmPolicy>,
    log: Mutex<ReloadLog>,
    /// One reload of this slot at a time.
    reloading: Mutex<()>,
}

/// The policies a node runs, in configured order:
/// - `rank`: the first policy with an active `rank-candidates` hook (else the built-in rules);
/// - `health`: the worst verdict of every policy with `check-health` (else the built-in rules);
/// - `on_event`: every policy with `on-event`.
///
/// Each policy can be replaced at run time ([`PolicySet::rescan`], [`PolicySet::watch`]); a
/// replacement that fails to load, configure or self-test is refused and the previous version
/// keeps serving.
pub struct PolicySet {
    dir: PathBuf,
    cache_dir: Option<PathBuf>,
    pub(crate) slots: Vec<Slot>,
    host: HostContext,
    /// The loop's time for the policies: loads and reloads that do not fit it are refused.
    budget: Mutex<Option<LoopBudget>>,
    /// The slot in a `rank-candidates` call, and in a `check-health` call ([`NONE`] when none),
    /// to blame a stall on.
    calling: [AtomicUsize; 2],
}

/// No slot is in a call.
const NONE: usize = usize::MAX;

fn hook_index(hook: Hook) -> usize {
    usize::from(hook != Hook::RankCandidates)
}

impl PolicySet {
    /// Load `dir/NAME.toml` for each name, in order. Compiling takes tens of milliseconds per
    /// policy (less with `cache_dir`, where compiled artifacts are kept by digest): call this
    /// off the HA loop. Any failure fails the whole load.
    pub fn load(
        dir: &Path,
        names: &[String],
        cache_dir: Option<&Path>,
    ) -> Result<PolicySet, PolicyError> {
        PolicySet::load_within(dir, names, cache_dir, None)
    }

    /// [`PolicySet::load`], refusing policies whose calls do not fit `budget` (see
    /// [`PolicySet::set_budget`]).
    pub fn load_within(
        dir: &Path,
        names: &[String],
        cache_dir: Option<&Path>,
        budget: Option<LoopBudget>,
    ) -> Result<PolicySet, PolicyError> {
        let dir = std::fs::canonicalize(dir).map_err(|e| PolicyError::Io {
            path: dir.to_path_buf(),
            message: format!("cannot open the policy directory: {e}"),
        })?;
        let host = HostContext::default();
        let mut slots = Vec::new();
        for name in names {
            if slots.iter().any(|s: &Slot| &s.name == name) {
                return Err(PolicyError::Load {
                    name: name.clone(),
                    message: "configured twice; list each policy once".into(),
                });
            }
            let manifest_path = dir.join(format!("{name}.toml"));
            let manifest = Manifest::load(&manifest_path)?;
            let policy = WasmPolicy::load(&manifest, cache_dir, host.clone())?;
            tracing::info!(
                policy = %name,
                version = %policy.info().version,
                digest = %policy.short_digest(),
                hooks = ?policy.active_hooks(),
                "policy loaded"
            );
            slots.push(Slot {
                name: name.clone(),
                manifest_path,
                current: ArcSwap::from_pointee(policy),
                log: Mutex::new(ReloadLog::default()),
                reloading: Mutex::new(()),
            });
        }
        let set = PolicySet {
            dir,
            cache_dir: cache_dir.map(Path::to_path_buf),
            slots,
            host,
            budget: Mutex::new(None),
            calling: [AtomicUsize::new(NONE), AtomicUsize::new(NONE)],
        };
        if let Some(b) = budget {
            set.set_budget(b)?;
        }
        for s in &set.slots {
            s.current.load().announce_loaded();
        }
        Ok(set)
    }

    /// Hold the policies to the loop's `budget` from now on: reloads that do not fit it are
    /// refused. `Err` when the serving policies do not fit it (a `ttl` lowered while they
    /// serve); they keep serving, and the supervisor cuts their calls at the budget.
    pub fn set_budget(&self, b: LoopBudget) -> Result<(), PolicyError> {
        *lock(&self.budget) = Some(b);
        self.check_budget(&b, None)
    }

    /// Whether the serving policies, with `replacing` (slot, new version) swapped in, fit `b`.
    fn check_budget(
        &self,
        b: &LoopBudget,
        replacing: Option<(usize, &WasmPolicy)>,
    ) -> Result<(), PolicyError> {
        let current = self.policies();
        let list: Vec<(&Manifest, bool, bool)> = current
            .iter()
            .enumerate()
            .map(|(i, p)| match replacing {
                Some((j, new)) if j == i => new,
                _ => p.as_ref(),
            })
            .map(|p| {
                (
                    p.manifest(),
                    p.is_active(Hook::RankCandidates),
                    p.is_active(Hook::CheckHealth),
                )
            })
            .collect();
        budget::check(&list, b)
    }

    /// The supervisor stopped waiting for a `hook` call after `waited`: record it as a fault of
    /// the policy in that call (if one is: the call may not have started at all), else log it.
    pub(crate) fn record_stall(&self, hook: Hook, waited: std::time::Duration, why: &str) {
        let i = self.calling[hook_index(hook)].load(Ordering::Relaxed);
        match self.slots.get(i) {
            Some(slot) => slot.current.load().record_stall(hook, waited, why),
            None => {
                tracing::error!(
                    hook = hook.as_str(),
                    waited_ms = waited.as_millis() as u64,
                    "no policy answered within the loop's share of the lease, the built-in rules decide this call: {why}"
                );
                crate::metrics::policy_fault("(none started)", "stalled");
            }
        }
    }

    /// The policy directory (canonical).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Provide SQL access for policies granted `sql-probe`.
    pub(crate) fn set_sql_prober(&self, prober: Arc<dyn SqlProber>) {
        *lock(&self.host.prober) = Some(prober);
    }

    /// The local node's name and whether it holds the leader key, for `check-health`. Set it
    /// before each health check (the decision core's `HealthFacts` does not carry them).
    pub(crate) fn set_local_node(&self, name: &str, is_leader: bool) {
        let mut l = lock(&self.host.local);
        if l.name != name {
            l.name = name.to_string();
        }
        l.is_leader = is_leader;
    }

    /// The serving version of each policy, in configured order.
    pub fn policies(&self) -> Vec<Arc<WasmPolicy>> {
        self.slots.iter().map(|s| s.current.load_full()).collect()
    }

    /// Tell every policy with `on-event` what happened (faults are recorded, never returned).
    pub(crate) fn on_event(&self, event: &Event) {
        for s in &self.slots {
            let p = s.current.load();
            if p.is_active(Hook::OnEvent) {
                p.on_event(event);
            }
        }
    }

    /// Reload every policy whose manifest or component changed (SIGHUP, `POST /reload`).
    /// Compiles: call it off the HA loop.
    pub(crate) fn rescan(&self) -> Vec<ReloadOutcome> {
        (0..self.slots.len()).map(|i| self.reload_slot(i)).collect()
    }

    /// Reload one slot: skipped when neither file changed; a refused version leaves the old
    /// one serving.
    pub(crate) fn reload_slot(&self, i: usize) -> ReloadOutcome {
        let slot = &self.slots[i];
        let _one = lock(&slot.reloading);
        let start = Instant::now();
        let outcome = match self.try_reload(slot) {
            Ok(None) => ReloadOutcome::Unchanged {
                policy: slot.name.clone(),
            },
            Ok(Some((old, new))) => {
                let outcome = ReloadOutcome::Reloaded {
                    policy: slot.name.clone(),
                    from: old.short_digest().to_string(),
                    to: new.short_digest().to_string(),
                    version: new.info().version.clone(),
                    ms: start.elapsed().as_secs_f64() * 1000.0,
                };
                new.announce_loaded();
                outcome
            }
            Err(e) => ReloadOutcome::Failed {
                policy: slot.name.clone(),
                error: e.to_string(),
            },
        };
        match &outcome {
            ReloadOutcome::Reloaded {
                policy,
                from,
                to,
                version,
                ms,
            } => tracing::info!(policy, from, to, version, ms, "policy reloaded"),
            ReloadOutcome::Unchanged { policy } => {
                tracing::debug!(policy, "policy files unchanged, not reloaded")
            }
            ReloadOutcome::Failed { policy, error } => tracing::error!(
                policy,
                "policy reload refused, the previous version keeps serving: {error}"
            ),
        }
        let mut log = lock(&slot.log);
        match &outcome {
            ReloadOutcome::Reloaded { .. } => log.ok += 1,
            ReloadOutcome::Unchanged { .. } => log.unchanged += 1,
            ReloadOutcome::Failed { error, .. } => {
                log.failed += 1;
                log.last_error = Some(error.clone());
            }
        }
        log.last = Some(outcome.clone());
        log.last_at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as u64);
        outcome
    }

    #[allow(clippy::type_complexity)]
    fn try_reload(
        &self,
        slot: &Slot,
    ) -> Result<Option<(Arc<WasmPolicy>, Arc<WasmPolicy>)>, PolicyError> {
        let manifest = Manifest::load(&slot.manifest_path)?;
        let bytes = std::fs::read(&manifest.component).map_err(|e| PolicyError::Io {
            path: manifest.component.clone(),
            message: format!(
                "cannot read the policy component named by {} (`component`): {e}",
                slot.manifest_path.display()
            ),
        })?;
        let old = slot.current.load_full();
        if runtime::digest(&bytes) == old.digest() && manifest.source == old.manifest().source {
            return Ok(None);
        }
        let new = Arc::new(WasmPolicy::load_bytes(
            &manifest,
            &bytes,
            self.cache_dir.as_deref(),
            self.host.clone(),
        )?);
        let budget = *lock(&self.budget);
        if let Some(b) = budget {
            let i = self
                .slots
                .iter()
                .position(|s| std::ptr::eq(s, slot))
                .unwrap_or(NONE);
            self.check_budget(&b, Some((i, &new)))?;
        }
        slot.current.store(new.clone());
        Ok(Some((old, new)))
    }

    /// `GET /policy`: every policy with its version, digest, hooks, load time, calls, faults
    /// and reloads.
    pub fn info(&self) -> serde_json::Value {
        let policies: Vec<serde_json::Value> = self
            .slots
            .iter()
            .map(|s| {
                let mut v = s.current.load().info_json();
                if let serde_json::Value::Object(m) = &mut v {
                    let log = lock(&s.log).clone();
                    m.insert(
                        "reloads".into(),
                        serde_json::to_value(log).unwrap_or(serde_json::Value::Null),
                    );
                }
                v
            })
            .collect();
        serde_json::json!({
            "dir": self.dir.display().to_string(),
            "summary": self.digest_summary(),
            "rank_from": self.ranker().map(|(_, p)| p.policy_name().to_string()),
            "policies": policies,
        })
    }

    /// `name@digest8` of each policy, comma-separated (`builtin-default` when none), for the
    /// member key: members whose summaries differ may rank differently.
    pub(crate) fn digest_summary(&self) -> String {
        if self.slots.is_empty() {
            return DefaultPolicy.name();
        }
        self.slots
            .iter()
            .map(|s| {
                let p = s.current.load();
                format!("{}@{}", s.name, p.short_digest())
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// [`Policy::rank`] without the fallback: a fault is returned, not recorded (the shadow
    /// counts its own). No ranking policy: the built-in rules.
    pub(crate) fn rank_checked(&self, view: &ElectionView) -> Result<Ranking, super::Fault> {
        match self.ranker() {
            Some((_, p)) => p.rank_checked(view),
            None => Ok(DefaultPolicy.rank(view)),
        }
    }

    /// [`Policy::health`] without the fallback: the first fault is returned, not recorded.
    pub(crate) fn health_checked(&self, facts: &HealthFacts) -> Result<Health, super::Fault> {
        let mut worst: Option<Health> = None;
        for s in &self.slots {
            let p = s.current.load();
            if !p.is_active(Hook::CheckHealth) {
                continue;
            }
            let h = named(&s.name, p.health_checked(facts)?);
            if worst.as_ref().is_none_or(|w| severity(&h) > severity(w)) {
                worst = Some(h);
            }
        }
        Ok(worst.unwrap_or_else(|| DefaultPolicy.health(facts)))
    }

    fn ranker(&self) -> Option<(usize, Arc<WasmPolicy>)> {
        self.slots
            .iter()
            .map(|s| s.current.load_full())
            .enumerate()
            .find(|(_, p)| p.is_active(Hook::RankCandidates))
    }
}

/// A verdict with the policy's name before its reason.
fn named(name: &str, h: Health) -> Health {
    match h {
        Health::Healthy => Health::Healthy,
        Health::Degraded(r) => Health::Degraded(format!("{name}: {r}")),
        Health::Failed(r) => Health::Failed(format!("{name}: {r}")),
    }
}

pub(crate) fn severity(h: &Health) -> u8 {
    match h {
        Health::Healthy => 0,
        Health::Degraded(_) => 1,
        Health::Failed(_) => 2,
    }
}

impl Policy for PolicySet {
    fn name(&self) -> String {
        self.digest_summary()
    }

    fn rank(&self, view: &ElectionView) -> Ranking {
        match self.ranker() {
            Some((i, p)) => {
                let calling = &self.calling[hook_index(Hook::RankCandidates)];
                calling.store(i, Ordering::Relaxed);
                let r = p.rank(view);
                calling.store(NONE, Ordering::Relaxed);
                r
            }
            None => DefaultPolicy.rank(view),
        }
    }

    fn health(&self, facts: &HealthFacts) -> Health {
        let mut worst: Option<Health> = None;
        let calling = &self.calling[hook_index(Hook::CheckHealth)];
        for (i, s) in self.slots.iter().enumerate() {
            let p = s.current.load();
            if !p.is_active(Hook::CheckHealth) {
                continue;
            }
            calling.store(i, Ordering::Relaxed);
            let answer = p.health(facts);
            calling.store(NONE, Ordering::Relaxed);
            let h = named(&s.name, answer);
            if worst.as_ref().is_none_or(|w| severity(&h) > severity(w)) {
                worst = Some(h);
            }
        }
        worst.unwrap_or_else(|| DefaultPolicy.health(facts))
    }
}

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet")
            .field("dir", &self.dir)
            .field("policies", &self.digest_summary())
            .finish()
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<PolicySet>();
    is::<LocalNode>();
}
