//! Following the policies pushed to the cluster (`regent ctl policy push`): once a loop, read
//! `regent/policy-set` (see [`crate::dcs::PolicySetDoc`]); when the policies this member should
//! run differ from what it last tried, fetch their components from etcd, check each against its
//! digest, write them with their manifests into a directory of their own and load them there
//! (compile, self-test, fit the loop's budget), off the loop. A set that loads replaces the
//! serving one; a set that does not leaves the serving one in place, and the member key says
//! why (`policy_error`) until the next change.
//!
//! The shadow set (`push --shadow`) is followed the same way, beside the active one: fetched,
//! digest-checked, loaded and self-tested, then run by a [`Shadow`] on a thread of its own. A
//! shadow that does not load is reported (`policy_shadow_error`) and the node runs without
//! one; nothing else changes. A set without a shadow stops the running one.
//!
//! Invariants: at most one load of each kind (active, shadow) runs at a time; a refused set is
//! not tried again until the pushed set changes; once a set was pushed, it wins over
//! `regent.policies_dir` (a reload of the local configuration no longer replaces it); the
//! shadow never decides: only [`Shadowed`] hands it questions, after the serving answer.
//!
//! May touch: the DCS (reads), `<run_dir>/.<name>-pushed-policies/`, the serving policies, the
//! shadow policies.

use super::Supervisor;
use crate::dcs::{EtcdDcs, PolicyRef, policy_summary};
use crate::ha::policy::{DefaultPolicy, Policy};
use crate::plugin::{LoopBudget, PolicySet, Shadow, Shadowed};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::task::JoinHandle;

/// A load of a pushed set: the set (`None`: the built-in rules), or why it was refused.
type Loading = JoinHandle<Result<Option<Arc<PolicySet>>, String>>;

/// What this member knows of the pushed set.
#[derive(Default)]
pub(super) struct Rollout {
    /// The policies last tried (loaded or refused), once a set was pushed.
    tried: Option<Vec<PolicyRef>>,
    /// The pushed set's generation when this member last matched it.
    pub(super) generation: Option<u64>,
    /// Why the last tried set was refused.
    pub(super) error: Option<String>,
    /// A load in progress, with what it loads and the set's generation.
    loading: Option<(Loading, Vec<PolicyRef>, u64)>,
    /// The shadow set.
    pub(super) shadow: ShadowState,
}

/// What this member knows of the pushed shadow set.
#[derive(Default)]
pub(super) struct ShadowState {
    /// The shadow last tried (loaded or refused).
    tried: Option<Vec<PolicyRef>>,
    /// The running shadow.
    pub(super) running: Option<Arc<Shadow>>,
    /// Why the last tried shadow was refused.
    pub(super) error: Option<String>,
    /// A load in progress, with what it loads.
    loading: Option<(Loading, Vec<PolicyRef>)>,
}

impl Rollout {
    /// A pushed set is in force: the local `regent.policies` no longer apply.
    pub(super) fn in_force(&self) -> bool {
        self.tried.is_some()
    }
}

impl Supervisor {
    /// The policy `decide` asks: the serving one, with the shadow beside it when one runs.
    pub(super) fn deciding_policy(&self) -> Arc<dyn Policy> {
        match &self.rollout.shadow.running {
            Some(shadow) => Arc::new(Shadowed {
                serving: self.policy.clone(),
                shadow: shadow.clone(),
            }),
            None => self.policy.clone(),
        }
    }

    /// Take the finished loads' outcomes, then start loading the pushed set, or the shadow set,
    /// if this member runs something else. Never waits for a load.
    pub(super) async fn follow_rollout(&mut self) {
        if self
            .rollout
            .loading
            .as_ref()
            .is_some_and(|(t, _, _)| t.is_finished())
            && let Some((task, wanted, generation)) = self.rollout.loading.take()
        {
            let outcome = task
                .await
                .unwrap_or_else(|e| Err(format!("the policy loader stopped: {e}")));
            self.finish_rollout(outcome, wanted, generation);
        }
        if self
            .rollout
            .shadow
            .loading
            .as_ref()
            .is_some_and(|(t, _)| t.is_finished())
            && let Some((task, wanted)) = self.rollout.shadow.loading.take()
        {
            let outcome = task
                .await
                .unwrap_or_else(|e| Err(format!("the policy loader stopped: {e}")));
            self.finish_shadow(outcome, wanted);
        }
        if self.rollout.loading.is_some() && self.rollout.shadow.loading.is_some() {
            return;
        }
        let doc = match self.dcs.read_policy_set().await {
            Ok(Some((doc, _))) => doc,
            Ok(None) => {
                if self.rollout.shadow.loading.is_none() {
                    self.follow_shadow(None);
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the pushed policies; keeping the serving ones");
                return;
            }
        };
        if self.rollout.shadow.loading.is_none() {
            self.follow_shadow(doc.shadow.clone());
        }
        if self.rollout.loading.is_some() {
            return;
        }
        let Some(wanted) = doc.wanted_by(&self.cfg.name).map(<[PolicyRef]>::to_vec) else {
            self.rollout.generation = Some(doc.generation);
            return;
        };
        if self.rollout.tried.as_ref() == Some(&wanted) {
            self.rollout.generation = Some(doc.generation);
            return;
        }
        if wanted.is_empty() {
            self.finish_rollout(Ok(None), wanted, doc.generation);
            return;
        }
        tracing::info!(
            generation = doc.generation,
            policies = %policy_summary(&wanted),
            "loading the policies pushed to the cluster"
        );
        let task = self.start_load(wanted.clone());
        self.rollout.loading = Some((task, wanted, doc.generation));
    }

    /// Load `list` off the loop, waking the loop when done.
    fn start_load(&self, list: Vec<PolicyRef>) -> Loading {
        let root = self
            .cfg
            .run_dir()
            .join(format!(".{}-pushed-policies", self.cfg.name));
        let (dcs, cache, budget) = (
            self.dcs.clone(),
            super::reload::policy_cache(&self.cfg),
            self.policy_budget(),
        );
        let changed = self.dcs.changed.clone();
        tokio::spawn(async move {
            let r = load_pushed(&dcs, list, root, cache, budget).await;
            // Wake the loop: the new set serves from its next round, not after `loop_wait`.
            changed.notify_one();
            r
        })
    }

    /// Start, replace or stop the shadow so that it runs `wanted` (`None`: no shadow).
    fn follow_shadow(&mut self, wanted: Option<Vec<PolicyRef>>) {
        let st = &mut self.rollout.shadow;
        let Some(wanted) = wanted.filter(|w| !w.is_empty()) else {
            if let Some(s) = st.running.take() {
                tracing::info!(policies = %s.summary(), "the shadow policies stop");
            }
            st.tried = None;
            st.error = None;
            return;
        };
        if st.tried.as_ref() == Some(&wanted) {
            return;
        }
        tracing::info!(
            policies = %policy_summary(&wanted),
            "loading the shadow policies pushed to the cluster"
        );
        let task = self.start_load(wanted.clone());
        self.rollout.shadow.loading = Some((task, wanted));
    }

    /// Run a loaded shadow set, or run none and say why.
    fn finish_shadow(
        &mut self,
        outcome: Result<Option<Arc<PolicySet>>, String>,
        wanted: Vec<PolicyRef>,
    ) {
        let summary = policy_summary(&wanted);
        let started = match outcome {
            Ok(Some(set)) => super::reload::attach_prober(Some(&set), &self.pg)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    Shadow::start(set)
                        .map_err(|e| format!("cannot start the shadow policies' thread: {e}"))
                }),
            Ok(None) => Err("the shadow set is empty".to_string()),
            Err(e) => Err(e),
        };
        let st = &mut self.rollout.shadow;
        st.running = None;
        match started {
            Ok(shadow) => {
                tracing::info!(policies = %shadow.summary(), "the shadow policies run beside the serving ones (they decide nothing)");
                st.running = Some(Arc::new(shadow));
                st.error = None;
            }
            Err(e) => {
                tracing::error!(
                    policies = %summary,
                    "the shadow policies are refused; this node runs without a shadow: {e}"
                );
                st.error = Some(format!("{summary}: {e}"));
            }
        }
        st.tried = Some(wanted);
    }

    /// Swap in a loaded set (`None`: the built-in rules), or keep the serving one and say why.
    fn finish_rollout(
        &mut self,
        outcome: Result<Option<Arc<PolicySet>>, String>,
        wanted: Vec<PolicyRef>,
        generation: u64,
    ) {
        let summary = policy_summary(&wanted);
        match outcome {
            Ok(set) => {
                if let Some(s) = &set
                    && let Err(e) = super::reload::attach_prober(Some(s), &self.pg)
                {
                    tracing::error!(error = %e, "SQL probes will fail");
                }
                self.policy = match &set {
                    Some(s) => s.clone() as Arc<dyn Policy>,
                    None => Arc::new(DefaultPolicy),
                };
                self.policies = set;
                // The local directory no longer decides what runs.
                self._policy_watcher = None;
                self.rollout.error = None;
                tracing::info!(generation, policies = %self.policy.name(), "pushed policies serve");
            }
            Err(e) => {
                tracing::error!(
                    generation,
                    policies = %summary,
                    "the pushed policies are refused, the serving ones ({}) stay: {e}",
                    self.policy.name()
                );
                self.rollout.error = Some(format!("{summary}: {e}"));
            }
        }
        self.rollout.tried = Some(wanted);
        self.rollout.generation = Some(generation);
    }
}

/// Fetch `wanted`'s components, check their digests, write them under `root` and load them.
async fn load_pushed(
    dcs: &EtcdDcs,
    wanted: Vec<PolicyRef>,
    root: PathBuf,
    cache: Option<PathBuf>,
    budget: LoopBudget,
) -> Result<Option<Arc<PolicySet>>, String> {
    let mut files = Vec::with_capacity(wanted.len());
    for p in wanted {
        let bytes = dcs
            .get_component(&p.digest)
            .await
            .map_err(|e| format!("policy {}: cannot fetch its component: {e}", p.name))?
            .ok_or_else(|| {
                format!(
                    "policy {}: its component {}{} is not in etcd; push it again with `regent ctl policy push`",
                    p.name,
                    crate::dcs::COMPONENTS,
                    p.digest
                )
            })?;
        let found = crate::plugin::digest(&bytes);
        if found != p.digest {
            return Err(format!(
                "policy {}: the component stored under {} has sha256 {found}; push it again with `regent ctl policy push`",
                p.name, p.digest
            ));
        }
        files.push((p, bytes));
    }
    tokio::task::spawn_blocking(move || {
        let dir = materialize(&root, &files)?;
        let names: Vec<String> = files.iter().map(|(p, _)| p.name.clone()).collect();
        PolicySet::load_within(&dir, &names, cache.as_deref(), Some(budget))
            .map(|s| Some(Arc::new(s)))
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("the policy loader stopped: {e}"))?
}

/// Write each policy's manifest (naming `NAME.wasm`) and component into a directory of the
/// set's own under `root` (mode 0700), named by a digest of the set.
fn materialize(root: &Path, files: &[(PolicyRef, Vec<u8>)]) -> Result<PathBuf, String> {
    let id: String = files
        .iter()
        .map(|(p, _)| format!("{}\n{}\n{}\n", p.name, p.digest, p.manifest))
        .collect();
    let dir = root.join(&crate::plugin::digest(id.as_bytes())[..16]);
    let io = |what: &str, path: &Path, e: std::io::Error| {
        format!(
            "cannot {what} {}: {e}; check that regent.run_dir is writable by regent's user",
            path.display()
        )
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| io("create", &dir, e))?;
    for (p, bytes) in files {
        let component = format!("{}.wasm", p.name);
        let manifest = crate::plugin::with_component(&p.manifest, &component)
            .map_err(|e| format!("policy {}: its pushed manifest: {e}", p.name))?;
        let wasm = dir.join(&component);
        std::fs::write(&wasm, bytes).map_err(|e| io("write", &wasm, e))?;
        let toml = dir.join(format!("{}.toml", p.name));
        std::fs::write(&toml, manifest).map_err(|e| io("write", &toml, e))?;
    }
    Ok(dir)
}
