//! Runs a version's hooks (`rank-candidates`, `check-health`, `on-event`) on its one reused
//! instance, under the deadline, instantiating again after a fault; as a `Policy`, answers
//! with the built-in rules when the call faults.

use super::{Fault, FaultKind, TagKeys, WasmPolicy, hook_list, lock};
use crate::ha::policy::{DefaultPolicy, ElectionView, Health, HealthFacts, Policy, Ranking};
use crate::plugin::Event;
use crate::plugin::convert;
use crate::plugin::guest::wit;
use crate::plugin::manifest::{Capability, Hook};
use crate::plugin::runtime::{self, Live};
use std::time::{Duration, Instant};

impl WasmPolicy {
    /// Run `f` on the live instance (instantiating first if needed) under the deadline. Any
    /// error drops the instance: a trapped instance cannot be entered again.
    pub(super) fn call<R>(
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

    /// Rank through the policy; `Err` on any fault (nothing recorded, no fallback).
    pub(crate) fn rank_checked(&self, view: &ElectionView) -> Result<Ranking, Fault> {
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
    pub(crate) fn health_checked(&self, facts: &HealthFacts) -> Result<Health, Fault> {
        self.health_with(facts, None)
    }

    /// `probes`: results to hand over instead of running the manifest's probes (self-test).
    pub(super) fn health_with(
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
    pub(crate) fn event_checked(&self, event: &Event) -> Result<(), Fault> {
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
    pub(crate) fn on_event(&self, event: &Event) {
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
