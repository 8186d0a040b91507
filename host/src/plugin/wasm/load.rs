//! Loads a policy version: reads and compiles its component (or takes the compiled code from
//! the cache), instantiates it, asks it to `describe` itself, checks that against the
//! manifest, hands it its settings and runs its self-test. Touches no serving version.

use super::{
    Code, FaultKind, HostContext, PolicyInfo, Stats, TagKeys, WasmPolicy, hook_list, lock,
};
use crate::plugin::compile;
use crate::plugin::guest::wit;
use crate::plugin::manifest::{Capability, Hook, Manifest};
use crate::plugin::runtime::{self, EPOCH_TICK, InstanceConfig, Tier};
use crate::plugin::selftest;
use crate::plugin::{PolicyError, SelfTestResult};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

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
            match compile::lookup(optimized, &digest, cache_dir) {
                Some(found) => (optimized, found),
                None => {
                    let rt = runtime::runtime(first)?;
                    let compiled =
                        compile::compile(rt, &manifest.component, bytes, &digest, cache_dir)?;
                    (rt, compiled)
                }
            };
        let pre = compile::prepare(rt, &manifest.component, &component)?;
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
        compile::release_freed_memory();
        Ok(policy)
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
                    answer: crate::plugin::ranking_text(&first)
                        .trim_end()
                        .replace('\n', " | "),
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
}
