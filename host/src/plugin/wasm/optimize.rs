//! Replaces a version's quick code by optimized code: compiles it on a thread of its own,
//! instantiates and configures it, then swaps code and instance between two calls.

use super::{Code, WasmPolicy, lock};
use crate::plugin::compile;
use crate::plugin::runtime::{self, Live, Tier};
use std::path::PathBuf;
use std::sync::Arc;

impl WasmPolicy {
    /// Compile the optimized code on a thread of its own, instantiate and configure it, then
    /// swap it in (with its instance) between two calls. A failure leaves the quick code
    /// serving, and is logged and reported in [`WasmPolicy::info_json`].
    pub(super) fn optimize_in_background(&self, bytes: Vec<u8>, cache_dir: Option<PathBuf>) {
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
                compile::compile(rt, &path, &bytes, &digest, cache_dir.as_deref())
                    .map_err(|e| e.to_string())?;
            let pre = compile::prepare(rt, &path, &component).map_err(|e| e.to_string())?;
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
                        compile::forget_compiled(&quick_digest, Tier::Quick);
                        compile::release_freed_memory();
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
}
