//! One loaded policy version: its compiled component, its single reused instance, its faults.

use super::convert;
use super::manifest::{Capability, Hook, Manifest};
use super::runtime::{self, EPOCH_TICK, InstanceConfig, Live, Origin, PolicyPre, State, Tier, wit};
use super::selftest;
use super::{Event, PolicyError, Report, SelfTestResult, WIT_PACKAGE};
use crate::ha::policy::{DefaultPolicy, ElectionView, Health, HealthFacts, Policy, Ranking};
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What a policy says about itself (`describe`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyInfo {
    pub name: String,
    pub version: String,
    pub hooks: Vec<Hook>,
    /// The member tags `rank-candidates` is given.
    pub tags: TagKeys,
}

/// Which member tags a policy reads (`describe`'s `tags`); a member in its view carries only
/// those.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TagKeys {
    All,
    Only(Vec<String>),
}

impl TagKeys {
    pub fn wants(&self, key: &str) -> bool {
        match self {
            TagKeys::All => true,
            TagKeys::Only(keys) => keys.iter().any(|k| k == key),
        }
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// The guest trapped (a panic, `unreachable`, ...).
    Trap,
    /// The call ran past its deadline.
    Deadline,
    /// The instance hit its memory limit.
    OutOfMemory,
    /// The answer broke the contract (unknown member, empty reason, ...).
    InvalidAnswer,
    /// The hook is not active for this policy.
    MissingHook,
    /// The instance could not be created.
    Instantiate,
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultKind::Trap => "trap",
            FaultKind::Deadline => "deadline exceeded",
            FaultKind::OutOfMemory => "out of memory",
            FaultKind::InvalidAnswer => "invalid answer",
            FaultKind::MissingHook => "missing hook",
            FaultKind::Instantiate => "cannot instantiate",
        })
    }
}

/// A call that did not produce a usable answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    pub hook: Hook,
    pub kind: FaultKind,
    pub message: String,
    /// What the guest wrote to stderr during the call (a panic message, typically).
    pub stderr: String,
    pub elapsed_ms: f64,
    /// Wall clock, ms since the Unix epoch.
    pub at_unix_ms: u64,
}

impl Fault {
    fn new(
        hook: Hook,
        kind: FaultKind,
        message: String,
        stderr: String,
        elapsed: Duration,
    ) -> Fault {
        Fault {
            hook,
            kind,
            message,
            stderr,
            elapsed_ms: elapsed.as_secs_f64() * 1000.0,
            at_unix_ms: unix_ms(SystemTime::now()),
        }
    }

    pub(crate) fn with_note(mut self, note: String) -> Fault {
        self.message = format!("{}; {note}", self.message);
        self
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} after {:.1} ms: {}",
            self.hook.as_str(),
            self.kind,
            self.elapsed_ms,
            self.message
        )?;
        if !self.stderr.is_empty() {
            write!(f, "\nstderr:\n{}", self.stderr)?;
        }
        Ok(())
    }
}

impl std::error::Error for Fault {}

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
pub struct LocalNode {
    pub name: String,
    pub is_leader: bool,
}

/// What the host lends every policy of a set: the SQL prober and the local node's identity.
#[derive(Clone, Default)]
pub(crate) struct HostContext {
    pub prober: runtime::ProberCell,
    pub local: Arc<Mutex<LocalNode>>,
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
    /// Read the manifest's component and load it (see [`WasmPolicy::load_bytes`]).
    pub(crate) fn load(
        manifest: &Manifest,
        cache_dir: Option<&Path>,
        host: HostContext,
    ) -> Result<WasmPolicy, PolicyError> {
        WasmPolicy::load_as(manifest, cache_dir, host, Tier::Quick)
    }

    /// [`WasmPolicy::load`], compiling with `first` (see [`WasmPolicy::load_bytes_as`]).
    pub(crate) fn load_as(
        manifest: &Manifest,
        cache_dir: Option<&Path>,
        host: HostContext,
        first: Tier,
    ) -> Result<WasmPolicy, PolicyError> {
        let bytes = std::fs::read(&manifest.component).map_err(|e| PolicyError::Io {
            path: manifest.component.clone(),
            message: format!(
                "cannot read the policy component{}: {e}",
                manifest
                    .path
                    .as_ref()
                    .map(|p| format!(" named by {} (`component`)", p.display()))
                    .unwrap_or_default()
            ),
        })?;
        WasmPolicy::load_bytes_as(manifest, &bytes, cache_dir, host, first)
    }

    /// Compile (or take from the cache), link against `regent:policy@0.1.0`, instantiate,
    /// `describe`, `configure` and self-test. Nothing here touches a serving version. Unless
    /// the optimized code is at hand (compiled before by this process, or in the artifact
    /// cache), the version serves with quick code until its optimized code is ready.
    pub(crate) fn load_bytes(
        manifest: &Manifest,
        bytes: &[u8],
        cache_dir: Option<&Path>,
        host: HostContext,
    ) -> Result<WasmPolicy, PolicyError> {
        WasmPolicy::load_bytes_as(manifest, bytes, cache_dir, host, Tier::Quick)
    }

    /// [`WasmPolicy::load_bytes`], compiling with `first` when the optimized code is not at
    /// hand; only `Tier::Quick` starts the background optimization.
    pub(crate) fn load_bytes_as(
        manifest: &Manifest,
        bytes: &[u8],
        cache_dir: Option<&Path>,
        host: HostContext,
        first: Tier,
    ) -> Result<WasmPolicy, PolicyError> {
        let digest = runtime::digest(bytes);
        let optimized = runtime::runtime(Tier::Optimized)?;
        let (rt, (component, origin, compile_time)) =
            match runtime::lookup(optimized, &digest, cache_dir) {
                Some(found) => (optimized, found),
                None => {
                    let rt = runtime::runtime(first)?;
                    let compiled =
                        runtime::compile(rt, &manifest.component, bytes, &digest, cache_dir)?;
                    (rt, compiled)
                }
            };
        let pre = runtime::prepare(rt, &manifest.component, &component)?;
        let name = manifest.name.clone();
        let load_err = |message: String| PolicyError::Load {
            name: name.clone(),
            message,
        };
        let icfg = InstanceConfig {
            policy: Arc::from(manifest.name.as_str()),
            memory_bytes: (manifest.memory_mb as usize).saturating_mul(1024 * 1024),
            sql: manifest
                .grants(Capability::SqlProbe)
                .then(|| host.prober.clone()),
            sql_timeout: manifest.deadline / 2,
        };
        let live = runtime::instantiate(rt, &pre, &icfg)
            .map_err(|e| load_err(format!("cannot instantiate: {e:#}")))?;
        let deadline_ticks = (manifest.deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        let mut policy = WasmPolicy {
            manifest: manifest.clone(),
            digest,
            info: PolicyInfo {
                name: String::new(),
                version: String::new(),
                hooks: Vec::new(),
                tags: TagKeys::Only(Vec::new()),
            },
            active: Vec::new(),
            code: Arc::new(Mutex::new(Code {
                tier: rt.tier,
                pre,
                origin,
                compile_time,
            })),
            first: (rt.tier, origin, compile_time),
            optimize_error: Arc::default(),
            icfg,
            deadline_ticks,
            settings: None,
            live: Arc::new(Mutex::new(Some(live))),
            stats: Arc::new(Mutex::new(Stats::default())),
            host,
            loaded_at: SystemTime::now(),
            self_test: Vec::new(),
        };

        // describe
        let described = policy
            .call(Hook::RankCandidates, |l| {
                l.bindings.call_describe(&mut l.store)
            })
            .map_err(|f| load_err(format!("`describe` failed: {}", f.without_hook())))?;
        let mut hooks = Vec::new();
        for h in &described.hooks {
            let h = match h {
                wit::Hook::RankCandidates => Hook::RankCandidates,
                wit::Hook::CheckHealth => Hook::CheckHealth,
                wit::Hook::OnEvent => Hook::OnEvent,
            };
            if !hooks.contains(&h) {
                hooks.push(h);
            }
        }
        policy.info = PolicyInfo {
            name: described.name,
            version: described.version,
            hooks,
            tags: match described.tags {
                wit::TagKeys::All => TagKeys::All,
                wit::TagKeys::Only(mut keys) => {
                    keys.sort();
                    keys.dedup();
                    TagKeys::Only(keys)
                }
            },
        };
        if manifest.path.is_none() {
            // A bare component: it is called what it says it is.
            policy.manifest.name = policy.info.name.clone();
            policy.icfg.policy = Arc::from(policy.info.name.as_str());
            *lock(&policy.live) = None;
        } else if policy.info.name != manifest.name {
            return Err(PolicyError::Manifest {
                path: manifest.file().to_path_buf(),
                key: "name".into(),
                problem: format!(
                    "is {:?} but {} describes itself as {:?} {}",
                    manifest.name,
                    manifest.component.display(),
                    policy.info.name,
                    policy.info.version
                ),
                fix: "point `component` at the policy's own .wasm (or rename the manifest after \
                      the policy)"
                    .into(),
            });
        }
        policy.active = match &manifest.hooks {
            None => policy.info.hooks.clone(),
            Some(wanted) => {
                for h in wanted {
                    if !policy.info.hooks.contains(h) {
                        return Err(PolicyError::Manifest {
                            path: manifest.file().to_path_buf(),
                            key: "hooks".into(),
                            problem: format!(
                                "lists {}, which the component ({} {}) does not implement (it describes: {})",
                                h.as_str(),
                                policy.info.name,
                                policy.info.version,
                                hook_list(&policy.info.hooks)
                            ),
                            fix: format!("remove {} from `hooks`", h.as_str()),
                        });
                    }
                }
                wanted.clone()
            }
        };

        // configure
        let settings = manifest.settings.to_string();
        let configured = policy
            .call(Hook::RankCandidates, |l| {
                l.bindings.call_configure(&mut l.store, &settings)
            })
            .map_err(|f| load_err(format!("`configure` failed: {}", f.without_hook())))?;
        if let Err(message) = configured {
            return Err(PolicyError::Configure { name, message });
        }
        policy.settings = Some(settings);

        policy.self_test = policy.run_self_test()?;
        // Serve from a fresh (configured) instance: the self-test leaves no state behind.
        *lock(&policy.live) = None;
        *lock(&policy.stats) = Stats::default();
        if rt.tier == Tier::Quick {
            policy.optimize_in_background(bytes.to_vec(), cache_dir.map(Path::to_path_buf));
        }
        runtime::release_freed_memory();
        Ok(policy)
    }

    /// Compile the optimized code on a thread of its own, instantiate and configure it, then
    /// swap it in (with its instance) between two calls. A failure leaves the quick code
    /// serving, and is logged and reported in [`WasmPolicy::info_json`].
    fn optimize_in_background(&self, bytes: Vec<u8>, cache_dir: Option<PathBuf>) {
        let code = Arc::downgrade(&self.code);
        let live = Arc::downgrade(&self.live);
        let error = Arc::downgrade(&self.optimize_error);
        let stats = Arc::downgrade(&self.stats);
        let path = self.manifest.component.clone();
        let digest = self.digest.clone();
        let icfg = self.icfg.clone();
        let deadline = self.deadline_ticks;
        let settings = self.settings.clone();
        let (name, version) = (self.info.name.clone(), self.info.version.clone());
        let policy = self.manifest.name.clone();
        let quick_digest = digest.clone();
        let optimize = move || -> Result<(Code, Live), String> {
            let rt = runtime::runtime(Tier::Optimized).map_err(|e| e.to_string())?;
            let (component, origin, compile_time) =
                runtime::compile(rt, &path, &bytes, &digest, cache_dir.as_deref())
                    .map_err(|e| e.to_string())?;
            let pre = runtime::prepare(rt, &path, &component).map_err(|e| e.to_string())?;
            let mut instance = runtime::instantiate(rt, &pre, &icfg)
                .map_err(|e| format!("cannot instantiate: {e:#}"))?;
            instance.store.set_epoch_deadline(deadline);
            let described = instance
                .bindings
                .call_describe(&mut instance.store)
                .map_err(|e| format!("`describe` failed: {e:#}"))?;
            if (described.name.as_str(), described.version.as_str()) != (&name, &version) {
                return Err(format!(
                    "the optimized code describes itself as {} {}, the quick code as {name}                      {version}",
                    described.name, described.version
                ));
            }
            if let Some(settings) = &settings {
                instance.store.set_epoch_deadline(deadline);
                instance
                    .bindings
                    .call_configure(&mut instance.store, settings)
                    .map_err(|e| format!("`configure` failed: {e:#}"))?
                    .map_err(|e| format!("`configure` refused the settings: {e}"))?;
            }
            Ok((
                Code {
                    tier: Tier::Optimized,
                    pre,
                    origin,
                    compile_time,
                },
                instance,
            ))
        };
        let spawned = std::thread::Builder::new()
            .name("regent-policy-optimize".into())
            .spawn(move || {
                // A version replaced before it was optimized is not worth the work.
                if code.strong_count() == 0 {
                    return;
                }
                let outcome = optimize();
                let (Some(code), Some(live), Some(error), Some(stats)) =
                    (code.upgrade(), live.upgrade(), error.upgrade(), stats.upgrade())
                else {
                    return;
                };
                match outcome {
                    Ok((optimized, instance)) => {
                        let mut live = lock(&live);
                        *lock(&code) = optimized;
                        *live = Some(instance);
                        lock(&stats).instantiations += 1;
                        drop(live);
                        runtime::forget_compiled(&quick_digest, Tier::Quick);
                        runtime::release_freed_memory();
                        tracing::debug!(policy, "policy now runs its optimized code");
                    }
                    Err(e) => {
                        tracing::warn!(policy, error = %e,
                            "cannot optimize the policy; it keeps running its quickly compiled code");
                        *lock(&error) = Some(e);
                    }
                }
            });
        if let Err(e) = spawned {
            *lock(&self.optimize_error) = Some(format!("cannot start a thread: {e}"));
        }
    }

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

    fn run_self_test(&self) -> Result<Vec<SelfTestResult>, PolicyError> {
        let name = &self.manifest.name;
        let fail = |view: &str, message: String| PolicyError::SelfTest {
            name: name.clone(),
            view: view.to_string(),
            message,
        };
        if let Some(live) = lock(&self.live).as_mut() {
            live.store.data_mut().self_test = true;
        }
        let mut results = Vec::new();
        if self.active.contains(&Hook::RankCandidates) {
            for (label, view) in selftest::sample_views() {
                let start = Instant::now();
                // The deadline is wall time: on a busy host a descheduled thread can miss it
                // once. A policy that really runs too long misses it twice.
                let rank = || match self.rank_checked(&view) {
                    Err(f) if f.kind == FaultKind::Deadline => self.rank_checked(&view),
                    r => r,
                };
                let first = rank().map_err(|f| fail(label, f.without_hook()))?;
                let took = start.elapsed();
                let second = rank().map_err(|f| fail(label, f.without_hook()))?;
                if first != second {
                    return Err(fail(
                        label,
                        format!(
                            "ranked the same view differently twice ({first:?} then {second:?}): \
                             a ranking must depend on the view and the settings alone"
                        ),
                    ));
                }
                results.push(SelfTestResult {
                    view: label.to_string(),
                    answer: super::ranking_text(&first).trim_end().replace('\n', " | "),
                    micros: took.as_secs_f64() * 1e6,
                });
            }
        }
        if self.active.contains(&Hook::CheckHealth) {
            for (label, facts) in selftest::sample_facts() {
                let start = Instant::now();
                // The probes are not run (no database traffic from a load): each reports an
                // error, which a policy must handle anyway.
                let probes: Vec<wit::ProbeResult> = self
                    .manifest
                    .probes
                    .iter()
                    .map(|p| wit::ProbeResult {
                        name: p.name.clone(),
                        rows: Vec::new(),
                        error: Some("not run: this is the policy's self-test".into()),
                    })
                    .collect();
                let h = match self.health_with(&facts, Some(probes.clone())) {
                    Err(f) if f.kind == FaultKind::Deadline => {
                        self.health_with(&facts, Some(probes))
                    }
                    r => r,
                }
                .map_err(|f| fail(label, f.without_hook()))?;
                results.push(SelfTestResult {
                    view: format!("health:{label}"),
                    answer: format!("{h:?}"),
                    micros: start.elapsed().as_secs_f64() * 1e6,
                });
            }
        }
        Ok(results)
    }

    /// Run `f` on the live instance (instantiating first if needed) under the deadline. Any
    /// error drops the instance: a trapped instance cannot be entered again.
    fn call<R>(
        &self,
        hook: Hook,
        f: impl FnOnce(&mut Live) -> wasmtime::Result<R>,
    ) -> Result<R, Fault> {
        let mut guard = lock(&self.live);
        if guard.is_none() {
            let start = Instant::now();
            let instantiated = {
                let code = lock(&self.code);
                runtime::runtime(code.tier)
                    .map_err(|e| e.to_string())
                    .and_then(|rt| {
                        runtime::instantiate(rt, &code.pre, &self.icfg)
                            .map_err(|e| format!("{e:#}"))
                    })
            };
            let mut live = instantiated.map_err(|message| {
                Fault::new(
                    hook,
                    FaultKind::Instantiate,
                    message,
                    String::new(),
                    start.elapsed(),
                )
            })?;
            lock(&self.stats).instantiations += 1;
            if let Some(settings) = &self.settings {
                // A new instance starts unconfigured: hand it the settings again.
                live.store.set_epoch_deadline(self.deadline_ticks);
                match live.bindings.call_configure(&mut live.store, settings) {
                    Ok(Ok(())) => {}
                    Ok(Err(message)) => {
                        return Err(Fault::new(
                            hook,
                            FaultKind::Instantiate,
                            format!("a new instance refused the settings: {message}"),
                            live.stderr.since(0),
                            start.elapsed(),
                        ));
                    }
                    Err(e) => {
                        let f = self.classify(hook, &e, live.stderr.since(0), start.elapsed());
                        return Err(f.with_note("while configuring a new instance".into()));
                    }
                }
            }
            *guard = Some(live);
        }
        let Some(live) = guard.as_mut() else {
            return Err(Fault::new(
                hook,
                FaultKind::Instantiate,
                "no instance".into(),
                String::new(),
                Duration::ZERO,
            ));
        };
        live.store.set_epoch_deadline(self.deadline_ticks);
        let mark = live.stderr.mark();
        let start = Instant::now();
        let result = f(live);
        let elapsed = start.elapsed();
        match result {
            Ok(v) => Ok(v),
            Err(e) => {
                let stderr = live.stderr.since(mark);
                *guard = None;
                Err(self.classify(hook, &e, stderr, elapsed))
            }
        }
    }

    fn classify(
        &self,
        hook: Hook,
        e: &wasmtime::Error,
        stderr: String,
        elapsed: Duration,
    ) -> Fault {
        let text = format!("{e:#}");
        let text = runtime::truncate(&text, 4000).to_string();
        let (kind, message) = match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => (
                FaultKind::Deadline,
                format!(
                    "ran past its {} ms deadline and was interrupted",
                    self.manifest.deadline.as_millis()
                ),
            ),
            Some(_) => (FaultKind::Trap, text),
            None if text.contains("growing memory") || text.contains("memory limit") => (
                FaultKind::OutOfMemory,
                format!(
                    "exceeded its memory limit of {} MiB ({text})",
                    self.manifest.memory_mb
                ),
            ),
            None => (FaultKind::Trap, text),
        };
        Fault::new(hook, kind, message, stderr, elapsed)
    }

    fn record(&self, fault: Fault) {
        let text = fault.to_string();
        tracing::error!(
            policy = %self.manifest.name,
            version = %self.info.version,
            hook = fault.hook.as_str(),
            kind = %fault.kind,
            "policy fault, the built-in rules decide this call: {text}"
        );
        let kind = match fault.kind {
            FaultKind::Trap => "trap",
            FaultKind::Deadline => "deadline",
            FaultKind::OutOfMemory => "memory",
            FaultKind::InvalidAnswer => "invalid",
            FaultKind::MissingHook => "missing-hook",
            FaultKind::Instantiate => "instantiate",
        };
        crate::metrics::policy_fault(&self.manifest.name, kind);
        let mut s = lock(&self.stats);
        s.faults += 1;
        s.last_fault = Some(fault);
    }

    pub fn is_active(&self, hook: Hook) -> bool {
        self.active.contains(&hook)
    }

    /// Rank through the policy; `Err` on any fault (nothing recorded, no fallback).
    pub fn rank_checked(&self, view: &ElectionView) -> Result<Ranking, Fault> {
        lock(&self.stats).rank_calls += 1;
        if !self.is_active(Hook::RankCandidates) {
            return Err(self.missing(Hook::RankCandidates));
        }
        let start = Instant::now();
        let answer = convert::with_cluster_view(view, &self.info.tags, |wview| {
            self.call(Hook::RankCandidates, |l| l.rank.call(&mut l.store, wview))
        })?;
        convert::ranking(view, answer).map_err(|m| {
            Fault::new(
                Hook::RankCandidates,
                FaultKind::InvalidAnswer,
                m,
                String::new(),
                start.elapsed(),
            )
        })
    }

    /// Judge health through the policy (running the manifest's probes first); `Err` on a fault.
    pub fn health_checked(&self, facts: &HealthFacts) -> Result<Health, Fault> {
        self.health_with(facts, None)
    }

    /// `probes`: results to hand over instead of running the manifest's probes (self-test).
    fn health_with(
        &self,
        facts: &HealthFacts,
        probes: Option<Vec<wit::ProbeResult>>,
    ) -> Result<Health, Fault> {
        lock(&self.stats).health_calls += 1;
        if !self.is_active(Hook::CheckHealth) {
            return Err(self.missing(Hook::CheckHealth));
        }
        let probes = probes.unwrap_or_else(|| self.run_probes());
        let local = lock(&self.host.local).clone();
        let wfacts = convert::health_facts(facts, &local.name, local.is_leader, probes);
        let h = self.call(Hook::CheckHealth, |l| {
            l.bindings.call_check_health(&mut l.store, &wfacts)
        })?;
        Ok(convert::health(h))
    }

    fn run_probes(&self) -> Vec<wit::ProbeResult> {
        if self.manifest.probes.is_empty() || !self.manifest.grants(Capability::SqlProbe) {
            return Vec::new();
        }
        let prober = lock(&self.host.prober).clone();
        self.manifest
            .probes
            .iter()
            .map(|p| {
                let r = match &prober {
                    Some(pr) => pr.probe(&p.sql, p.timeout),
                    None => Err("no database connection for SQL probes".to_string()),
                };
                match r {
                    Ok(rows) => wit::ProbeResult {
                        name: p.name.clone(),
                        rows,
                        error: None,
                    },
                    Err(e) => wit::ProbeResult {
                        name: p.name.clone(),
                        rows: Vec::new(),
                        error: Some(e),
                    },
                }
            })
            .collect()
    }

    /// Tell the policy what happened; `Err` on a fault.
    pub fn event_checked(&self, event: &Event) -> Result<(), Fault> {
        self.send(&convert::event(event))
    }

    fn send(&self, e: &wit::Event) -> Result<(), Fault> {
        lock(&self.stats).event_calls += 1;
        if !self.is_active(Hook::OnEvent) {
            return Err(self.missing(Hook::OnEvent));
        }
        self.call(Hook::OnEvent, |l| l.bindings.call_on_event(&mut l.store, e))
    }

    /// Fire-and-forget `on-event`: a fault is recorded, nothing else happens.
    pub fn on_event(&self, event: &Event) {
        let started = Instant::now();
        if let Err(f) = self.event_checked(event) {
            self.record(f);
        }
        crate::metrics::policy_call(&self.manifest.name, "on-event", started.elapsed());
    }

    /// Tell a policy with `on-event` that it was loaded.
    pub(crate) fn announce_loaded(&self) {
        if !self.is_active(Hook::OnEvent) {
            return;
        }
        let info = wit::PolicyInfo {
            name: self.info.name.clone(),
            version: self.info.version.clone(),
            hooks: self
                .info
                .hooks
                .iter()
                .map(|h| match h {
                    Hook::RankCandidates => wit::Hook::RankCandidates,
                    Hook::CheckHealth => wit::Hook::CheckHealth,
                    Hook::OnEvent => wit::Hook::OnEvent,
                })
                .collect(),
            tags: match &self.info.tags {
                TagKeys::All => wit::TagKeys::All,
                TagKeys::Only(keys) => wit::TagKeys::Only(keys.clone()),
            },
        };
        if let Err(f) = self.send(&wit::Event::PolicyLoaded(info)) {
            self.record(f);
        }
    }

    fn missing(&self, hook: Hook) -> Fault {
        Fault::new(
            hook,
            FaultKind::MissingHook,
            format!(
                "{} is not an active hook of this policy (active: {})",
                hook.as_str(),
                hook_list(&self.active)
            ),
            String::new(),
            Duration::ZERO,
        )
    }

    /// The manifest name.
    pub fn policy_name(&self) -> &str {
        &self.manifest.name
    }

    pub fn info(&self) -> &PolicyInfo {
        &self.info
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// sha256 of the component, hex.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn active_hooks(&self) -> &[Hook] {
        &self.active
    }

    /// How many faults this version has had, and the last one.
    pub fn faults(&self) -> (u64, Option<Fault>) {
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
    pub fn info_json(&self) -> serde_json::Value {
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
    pub fn short_digest(&self) -> &str {
        &self.digest[..8.min(self.digest.len())]
    }

    pub(crate) fn component_path(&self) -> &PathBuf {
        &self.manifest.component
    }
}

impl Fault {
    fn without_hook(&self) -> String {
        let mut s = format!("{}: {}", self.kind, self.message);
        if !self.stderr.is_empty() {
            s.push_str(&format!(" (stderr: {})", self.stderr));
        }
        s
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

impl Policy for WasmPolicy {
    fn name(&self) -> String {
        self.manifest.name.clone()
    }

    fn rank(&self, view: &ElectionView) -> Ranking {
        let started = Instant::now();
        let r = match self.rank_checked(view) {
            Ok(r) => r,
            Err(f) => {
                self.record(f);
                DefaultPolicy.rank(view)
            }
        };
        crate::metrics::policy_call(&self.manifest.name, "rank-candidates", started.elapsed());
        r
    }

    fn health(&self, facts: &HealthFacts) -> Health {
        let started = Instant::now();
        let h = match self.health_checked(facts) {
            Ok(h) => h,
            Err(f) => {
                self.record(f);
                DefaultPolicy.health(facts)
            }
        };
        crate::metrics::policy_call(&self.manifest.name, "check-health", started.elapsed());
        h
    }
}
