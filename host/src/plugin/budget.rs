//! How long one HA loop may wait for the policies, derived from the lease, and the check that
//! a set of manifests fits it.
//!
//! A primary keeps writing until its write deadline, `ttl − margin` after a renewal was sent
//! (`regent_core::ha::memory`). Between two renewals a loop sleeps `loop_wait`; what is left,
//! `ttl − margin − loop_wait`, is split in three equal shares: one for the health verdict, one
//! for the decision (the `rank-candidates` call), one for everything else a loop does (the DCS,
//! PostgreSQL, the actions). The supervisor waits for a verdict or a decision no longer than
//! its share ([`LoopBudget::limit`]); a call still running then is abandoned to its thread and
//! the built-in rules answer. At load, a manifest whose configured bounds (its `deadline_ms`,
//! the probes' `timeout_ms`) do not fit the share is refused.

use super::manifest::{Capability, Hook, Manifest};
use super::{PROBE_ALLOWANCE, PolicyError};
use std::time::Duration;

/// The shortest wait the supervisor allows a policy call, whatever the timing: a share below
/// it (a ttl barely above `loop_wait`) would fault every call.
pub(crate) const MIN_CALL_LIMIT: Duration = Duration::from_millis(100);

/// One loop's time for the policies, from the cluster's `ttl` and `loop_wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopBudget {
    /// `ttl`, seconds.
    pub ttl: u64,
    /// `loop_wait`, seconds.
    pub loop_wait: u64,
    /// The share of one loop that the health verdict, and separately the decision, may take.
    pub share: Duration,
}

impl LoopBudget {
    /// The budget of a cluster with this `ttl` and `loop_wait` (seconds).
    pub fn new(ttl: u64, loop_wait: u64) -> LoopBudget {
        let ttl_ms = ttl.saturating_mul(1000);
        let margin = crate::ha::safety_margin_ms(ttl_ms);
        let left = ttl_ms
            .saturating_sub(margin)
            .saturating_sub(loop_wait.saturating_mul(1000));
        LoopBudget {
            ttl,
            loop_wait,
            share: Duration::from_millis(left / 3),
        }
    }

    /// How long the supervisor waits for a health verdict or a decision.
    pub fn limit(&self) -> Duration {
        self.share.max(MIN_CALL_LIMIT)
    }

    fn describe(&self) -> String {
        format!(
            "{} ms, the share of a loop each of the health verdict and the decision may take \
             with ttl {} and loop_wait {} ((ttl − safety margin − loop_wait) / 3)",
            self.share.as_millis(),
            self.ttl,
            self.loop_wait
        )
    }
}

/// The longest a call of `hook` may take under `m`'s own bounds: the probes (each up to its
/// timeout and the prober's allowance) before `check-health`, the guest's deadline, and one
/// `sql-probe` the guest may start just before its deadline.
pub(crate) fn worst_call(m: &Manifest, hook: Hook) -> Duration {
    let mut d = m.deadline;
    if m.grants(Capability::SqlProbe) {
        d += m.deadline / 2 + PROBE_ALLOWANCE;
        if hook == Hook::CheckHealth {
            for p in &m.probes {
                d += p.timeout + PROBE_ALLOWANCE;
            }
        }
    }
    d
}

/// Check that the policies fit `budget`: every `rank-candidates` policy on its own (one ranks
/// per decision), and the `check-health` policies together (each is asked every loop).
/// `policies`: each manifest with whether its rank and health hooks are active.
pub(crate) fn check(
    policies: &[(&Manifest, bool, bool)],
    budget: &LoopBudget,
) -> Result<(), PolicyError> {
    let ms = |d: Duration| d.as_millis();
    let mut health = Duration::ZERO;
    let mut before: Vec<String> = Vec::new();
    for (m, ranks, judges) in policies {
        if *ranks {
            let worst = worst_call(m, Hook::RankCandidates);
            if worst > budget.share {
                return Err(too_long(
                    m,
                    format!(
                        "rank-candidates may take up to {} ms (deadline_ms {}{}), more than {}",
                        ms(worst),
                        ms(m.deadline),
                        sql_part(m),
                        budget.describe()
                    ),
                    budget,
                ));
            }
        }
        if *judges {
            let worst = worst_call(m, Hook::CheckHealth);
            health += worst;
            if health > budget.share {
                let others = if before.is_empty() {
                    String::new()
                } else {
                    format!(", after {} of the policies before it", before.join(" + "))
                };
                return Err(too_long(
                    m,
                    format!(
                        "check-health may take up to {} ms (deadline_ms {}{}{}){others}, {} ms in \
                         all per loop, more than {}",
                        ms(worst),
                        ms(m.deadline),
                        sql_part(m),
                        probes_part(m),
                        ms(health),
                        budget.describe()
                    ),
                    budget,
                ));
            }
            before.push(format!("{} ms", ms(worst)));
        }
    }
    Ok(())
}

fn sql_part(m: &Manifest) -> String {
    if m.grants(Capability::SqlProbe) {
        format!(
            " + {} ms for a sql-probe the guest may start at its deadline",
            (m.deadline / 2 + PROBE_ALLOWANCE).as_millis()
        )
    } else {
        String::new()
    }
}

fn probes_part(m: &Manifest) -> String {
    if m.probes.is_empty() || !m.grants(Capability::SqlProbe) {
        return String::new();
    }
    let each: Vec<String> = m
        .probes
        .iter()
        .map(|p| {
            format!(
                "{} {} ms",
                p.name,
                (p.timeout + PROBE_ALLOWANCE).as_millis()
            )
        })
        .collect();
    format!(" + probes {}", each.join(" + "))
}

fn too_long(m: &Manifest, problem: String, budget: &LoopBudget) -> PolicyError {
    PolicyError::Manifest {
        path: m.file().to_path_buf(),
        key: "deadline_ms".into(),
        problem,
        fix: format!(
            "lower deadline_ms (and the probes' timeout_ms) until the calls fit {} ms, or raise \
             the cluster's ttl (`regent ctl edit-config`): a loop must renew its lease before \
             the ttl runs out, and the policies get a third of what loop_wait and the safety \
             margin leave",
            budget.share.as_millis()
        ),
    }
}
