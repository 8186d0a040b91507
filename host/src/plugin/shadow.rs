//! The shadow policies (`regent ctl policy push --shadow`): a second [`PolicySet`] that runs
//! beside the serving policies on every election ranking and every health check, on a thread
//! of its own, and decides nothing. Each call of the serving policies hands the shadow the same
//! question and the serving answer through a bounded queue ([`QUEUE`] calls); the shadow's
//! thread asks its policies and compares: another winner (the first of the ranking, none for a
//! veto) or another health verdict (healthy, degraded, failed) is a divergence, counted and
//! logged with both answers. A full queue skips the call (counted); a fault of a shadow policy
//! is counted and logged, and nothing else happens.
//!
//! Invariant: the serving answer is computed first and returned unchanged; handing it to the
//! shadow never blocks (`try_send`), so the shadow can neither delay nor change a decision.
//!
//! May touch: its own thread, the metrics, the shadow policies (and their SQL probes).

use super::PolicySet;
use super::manifest::Hook;
use super::set::severity;
use crate::ha::policy::{ElectionView, Health, HealthFacts, Policy, Ranking};
use crate::metrics::{ShadowCount, policy_shadow};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

/// The most calls waiting for the shadow's thread; more are skipped.
pub const QUEUE: usize = 4;

/// A question for the shadow, with the serving answer.
enum Job {
    Rank {
        view: Box<ElectionView>,
        serving: Ranking,
    },
    Health {
        facts: Box<HealthFacts>,
        node: String,
        is_leader: bool,
        serving: Health,
    },
}

impl Job {
    fn hook(&self) -> Hook {
        match self {
            Job::Rank { .. } => Hook::RankCandidates,
            Job::Health { .. } => Hook::CheckHealth,
        }
    }
}

/// One hook's counts since the shadow loaded.
#[derive(Debug, Default)]
struct Counts([AtomicU64; 4]);

impl Counts {
    fn add(&self, hook: Hook, what: ShadowCount) {
        self.0[what as usize].fetch_add(1, Ordering::Relaxed);
        policy_shadow(hook.as_str(), what);
    }

    fn get(&self, what: ShadowCount) -> u64 {
        self.0[what as usize].load(Ordering::Relaxed)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "calls": self.get(ShadowCount::Call),
            "divergences": self.get(ShadowCount::Divergence),
            "faults": self.get(ShadowCount::Fault),
            "skipped": self.get(ShadowCount::Skipped),
        })
    }
}

/// What the shadow's thread and its owner share.
#[derive(Debug, Default)]
struct Shared {
    /// `rank-candidates`, `check-health`.
    counts: [Counts; 2],
    /// The last divergence: hook, both answers.
    last: Mutex<Option<serde_json::Value>>,
}

impl Shared {
    fn counts(&self, hook: Hook) -> &Counts {
        &self.counts[usize::from(hook != Hook::RankCandidates)]
    }
}

/// The shadow policies and the thread that runs them. Dropping it ends the thread once it is
/// done with the call in hand.
pub struct Shadow {
    set: Arc<PolicySet>,
    tx: SyncSender<Job>,
    shared: Arc<Shared>,
}

impl Shadow {
    /// Start the thread for `set`.
    pub fn start(set: Arc<PolicySet>) -> std::io::Result<Shadow> {
        let (tx, rx) = sync_channel(QUEUE);
        let shared = Arc::new(Shared::default());
        let (s, sh) = (set.clone(), shared.clone());
        std::thread::Builder::new()
            .name("regent-shadow".into())
            .spawn(move || run(&s, &sh, rx))?;
        Ok(Shadow { set, tx, shared })
    }

    /// The shadow policies.
    pub fn set(&self) -> &Arc<PolicySet> {
        &self.set
    }

    /// `name@digest8,...` of the shadow policies.
    pub fn summary(&self) -> String {
        self.set.digest_summary()
    }

    /// Hand the shadow an election's view and the serving ranking; never blocks.
    pub fn offer_rank(&self, view: &ElectionView, serving: &Ranking) {
        self.offer(Job::Rank {
            view: Box::new(view.clone()),
            serving: serving.clone(),
        });
    }

    /// Hand the shadow a health check's facts and the serving verdict; never blocks.
    pub fn offer_health(&self, facts: &HealthFacts, node: &str, is_leader: bool, serving: &Health) {
        self.offer(Job::Health {
            facts: Box::new(facts.clone()),
            node: node.to_string(),
            is_leader,
            serving: serving.clone(),
        });
    }

    fn offer(&self, job: Job) {
        let hook = job.hook();
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.shared.counts(hook).add(hook, ShadowCount::Skipped);
                tracing::debug!(
                    hook = hook.as_str(),
                    "the shadow policies are {QUEUE} calls behind; this call is skipped"
                );
            }
            Err(TrySendError::Disconnected(_)) => {
                self.shared.counts(hook).add(hook, ShadowCount::Skipped);
                tracing::warn!(hook = hook.as_str(), "the shadow policies' thread stopped");
            }
        }
    }

    /// One hook's count since the shadow loaded.
    pub(crate) fn count(&self, hook: Hook, what: ShadowCount) -> u64 {
        self.shared.counts(hook).get(what)
    }

    /// Calls, divergences, faults and skipped calls of both hooks together, for the member key.
    pub fn totals_json(&self) -> serde_json::Value {
        let total = |what| {
            [Hook::RankCandidates, Hook::CheckHealth]
                .iter()
                .map(|h| self.count(*h, what))
                .sum::<u64>()
        };
        serde_json::json!({
            "calls": total(ShadowCount::Call),
            "divergences": total(ShadowCount::Divergence),
            "faults": total(ShadowCount::Fault),
            "skipped": total(ShadowCount::Skipped),
        })
    }

    /// `GET /policy`'s `shadow`: the policies, the counts per hook, the last divergence.
    pub fn info(&self) -> serde_json::Value {
        let set = self.set.info();
        serde_json::json!({
            "summary": self.summary(),
            "queue": QUEUE,
            "counters": {
                "rank-candidates": self.shared.counts(Hook::RankCandidates).json(),
                "check-health": self.shared.counts(Hook::CheckHealth).json(),
            },
            "last_divergence": *self.shared.last.lock().unwrap_or_else(|e| e.into_inner()),
            "policies": set.get("policies").cloned().unwrap_or_default(),
        })
    }
}

impl std::fmt::Debug for Shadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadow")
            .field("policies", &self.summary())
            .finish()
    }
}

/// The shadow's thread: one call after the other until its [`Shadow`] is dropped.
fn run(set: &PolicySet, shared: &Shared, rx: Receiver<Job>) {
    while let Ok(job) = rx.recv() {
        let hook = job.hook();
        let counts = shared.counts(hook);
        counts.add(hook, ShadowCount::Call);
        let compared = match job {
            Job::Rank { view, serving } => set.rank_checked(&view).map(|shadow| {
                (
                    ranking_text(&serving),
                    ranking_text(&shadow),
                    winner(&serving) != winner(&shadow),
                )
            }),
            Job::Health {
                facts,
                node,
                is_leader,
                serving,
            } => {
                set.set_local_node(&node, is_leader);
                set.health_checked(&facts).map(|shadow| {
                    (
                        health_text(&serving),
                        health_text(&shadow),
                        severity(&serving) != severity(&shadow),
                    )
                })
            }
        };
        match compared {
            Ok((serving, shadow, true)) => {
                counts.add(hook, ShadowCount::Divergence);
                tracing::warn!(
                    hook = hook.as_str(),
                    serving = %serving,
                    shadow = %shadow,
                    policies = %set.digest_summary(),
                    "the shadow policies disagree with the serving ones (the serving answer stands)"
                );
                *shared.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(serde_json::json!({
                    "hook": hook.as_str(),
                    "serving": serving,
                    "shadow": shadow,
                    "at_unix_ms": std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0),
                }));
            }
            Ok((_, _, false)) => {}
            Err(fault) => {
                counts.add(hook, ShadowCount::Fault);
                tracing::warn!(
                    policies = %set.digest_summary(),
                    "a shadow policy faulted (nothing changes, the serving answer stands): {fault}"
                );
            }
        }
    }
}

/// Who a ranking makes leader: its first candidate; a veto or an empty list, nobody.
fn winner(r: &Ranking) -> Option<&str> {
    match r {
        Ranking::Candidates(c) => c.first().map(|c| c.name.as_str()),
        Ranking::Veto(_) => None,
    }
}

fn ranking_text(r: &Ranking) -> String {
    match r {
        Ranking::Candidates(c) if c.is_empty() => "no candidate".into(),
        Ranking::Candidates(c) => c
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(" > "),
        Ranking::Veto(why) => format!("veto ({why})"),
    }
}

fn health_text(h: &Health) -> String {
    match h {
        Health::Healthy => "healthy".into(),
        Health::Degraded(r) => format!("degraded ({r})"),
        Health::Failed(r) => format!("failed ({r})"),
    }
}

/// The serving policy with the shadow beside it: every ranking is answered by `serving` and
/// then offered to the shadow.
pub struct Shadowed {
    /// What decides.
    pub serving: Arc<dyn Policy>,
    /// What watches.
    pub shadow: Arc<Shadow>,
}

impl Policy for Shadowed {
    fn name(&self) -> String {
        self.serving.name()
    }

    fn rank(&self, view: &ElectionView) -> Ranking {
        let r = self.serving.rank(view);
        self.shadow.offer_rank(view, &r);
        r
    }

    fn health(&self, facts: &HealthFacts) -> Health {
        self.serving.health(facts)
    }
}

#[cfg(test)]
#[path = "shadow_tests.rs"]
mod tests;
