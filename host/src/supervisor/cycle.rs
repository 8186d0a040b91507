//! The loop: `run` sleeps until `loop_wait` passes, the DCS watch reports a change or the REST
//! API sends a command, then runs one `cycle` (observe → decide → act → publish). Commands run
//! between cycles, never during one, so they never race the loop's own actions.
//!
//! May touch: everything the cycle's steps touch, through their own files; here only the
//! order of the steps, the decision's metrics and events, and the guard process's upkeep.

use super::bounded::{Unanswered, bounded};
use super::{Supervisor, SupervisorError, VERSION};
use crate::fence::GuardState;
use crate::ha::policy::{DefaultPolicy, Health};
use crate::ha::{Action, Decision, World, decide};
use crate::plugin::Hook;
use std::time::Duration;

/// How many loops may run back to back, without waiting for `loop_wait`, a change, or a
/// command: a loop never spins.
const MAX_RERUNS: u32 = 3;

impl Supervisor {
    /// Run until `shutdown` resolves, then hand over cleanly.
    pub async fn run(
        mut self,
        mut shutdown: tokio::sync::oneshot::Receiver<()>,
    ) -> Result<(), SupervisorError> {
        let exe = std::env::current_exe()
            .map_err(|e| SupervisorError::Io(format!("cannot find own executable: {e}")))?;
        // Claim the state before a guard looks at it: a guard finding a disarmed state whose
        // owner is dead leaves. An armed state from a previous run stays in force until this
        // process renews the lease under which it was armed.
        if !matches!(self.guard.read(), Some(GuardState::Armed { .. })) {
            let _ = self.guard.write(GuardState::Disarmed {
                owner: std::process::id() as i32,
            });
        }
        let guard_pid = self
            .guard
            .ensure_running(&exe, &mut self.guard_child)
            .map_err(|e| SupervisorError::Io(format!("cannot start the fencing guard: {e}")))?;
        tracing::info!(guard_pid, "fencing guard attached");
        // The REST view exists from the start (liveness needs ttl), before the first loop.
        let (ttl, loop_wait) = (self.dynamic.ttl, self.dynamic.loop_wait);
        let (scope, name) = (self.cfg.scope.clone(), self.cfg.name.clone());
        self.view_tx.send_modify(|v| {
            v.ttl = ttl;
            v.loop_wait = loop_wait;
            v.scope = scope;
            v.name = name;
            v.version = VERSION.into();
            v.last_loop = Some(std::time::Instant::now());
        });
        tokio::spawn(self.dcs.clone().watch_forever());
        let changed = self.dcs.changed.clone();
        let mut control = self.control.take();
        let mut reruns = 0;
        loop {
            if let Err(e) = self.guard.ensure_running(&exe, &mut self.guard_child) {
                tracing::error!(error = %e, "cannot restart the fencing guard");
            }
            let rerun = self.cycle().await?;
            // A few loops back to back carry a change through (acquire, then promote); more
            // would be a loop spinning on an action that never takes effect.
            if rerun && reruns < MAX_RERUNS {
                reruns += 1;
                continue;
            }
            if rerun {
                tracing::warn!(
                    reruns,
                    "the last loops asked to run again at once; waiting loop_wait before the next"
                );
            }
            reruns = 0;
            // Failsafe mode: while the lease cannot be renewed, the rounds come every 2 s.
            let nap = if self.mem.renewal_failed && self.dynamic.failsafe_mode {
                Duration::from_secs(self.dynamic.loop_wait.clamp(1, 2))
            } else {
                Duration::from_secs(self.dynamic.loop_wait.max(1))
            };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(nap) => {}
                _ = changed.notified() => {}
                Some((cmd, reply)) = recv_command(&mut control) => {
                    let answer = self.command(cmd).await;
                    let _ = reply.send(answer);
                }
            }
        }
        self.shutdown().await;
        Ok(())
    }

    /// One observe → decide → act round. Returns true when it should run again at once.
    pub(super) async fn cycle(&mut self) -> Result<bool, SupervisorError> {
        let started = std::time::Instant::now();
        if let Some(from_leader) = self.reinit.take() {
            self.reinitialize(from_leader).await;
        }
        let mut world = self.observe().await;
        world.health = self.judge_health(&world).await;
        world.memory.failed_health_loops = self
            .mem
            .health_judged(matches!(world.health, Health::Failed(_)));
        if self.needs_peers(&world)
            && let Some(c) = &world.cluster
        {
            world.peers = self.poll_peers(c).await;
        }
        // The policy runs WebAssembly, whose WASI streams (a guest's stderr) block on tokio:
        // decide on a blocking thread, never on the async workers, and wait for it no longer
        // than the loop's share of the lease.
        let decision = {
            let (w, policy) = (world.clone(), self.deciding_policy());
            let limit = self.policy_budget().limit();
            match bounded(limit, &self.decide_busy, move || {
                decide(&w, policy.as_ref())
            })
            .await
            {
                Ok(d) => d,
                Err(why) => {
                    match (&why, &self.policies) {
                        (Unanswered::TimedOut(_), Some(set)) => {
                            set.record_stall(Hook::RankCandidates, limit, &why.to_string())
                        }
                        _ => tracing::error!(
                            "deciding with the policies failed ({why}); the built-in rules decide this loop"
                        ),
                    }
                    decide(&world, &DefaultPolicy)
                }
            }
        };
        tracing::info!("{}", decision.summary);
        self.record_decision(&decision);
        self.update_guard(&world, &decision.actions);
        self.deciding = decision.election.clone();
        let mut rerun = false;
        for action in &decision.actions {
            match self.act(action, &world).await {
                Ok(again) => rerun |= again,
                Err(SupervisorError::Fatal(m)) => return Err(SupervisorError::Fatal(m)),
                Err(e) => {
                    tracing::warn!(action = ?action, error = %e, "action failed");
                    if let SupervisorError::Dcs(d) = &e
                        && d.is_unreachable()
                    {
                        // etcd did not answer within retry_timeout: no more DCS calls this
                        // loop, and the next one (at once) decides without the DCS.
                        self.dcs_unreachable = true;
                        rerun = true;
                    }
                    break;
                }
            }
        }
        // The failsafe gate stays closed while this node holds the key or runs as primary, and
        // after a successful race until the next read shows the key ours.
        let holds = self.role == super::NodeRole::Primary
            || self
                .last_cluster
                .as_ref()
                .and_then(|c| c.leader_name())
                .is_some_and(|l| l == self.cfg.name);
        if holds {
            self.failsafe_gate.set_closed(true);
        } else if !decision
            .actions
            .iter()
            .any(|a| matches!(a, Action::AcquireLeader { .. }))
        {
            self.failsafe_gate.set_closed(false);
        }
        let steady = decision
            .actions
            .iter()
            .all(|a| matches!(a, Action::KeepLeading | Action::WriteInitialize { .. }));
        if steady && !rerun {
            rerun |= self.run_scheduled_restart().await;
        }
        self.replica_slots(&world).await;
        // Without the DCS this loop, neither the policy set nor the member key is worth
        // another retry_timeout (failsafe mode's rounds come every 2 s).
        if self.last_cluster.is_some() && !self.dcs_unreachable {
            self.follow_rollout().await;
            let _ = self.touch_member().await;
        }
        self.publish(&world);
        crate::metrics::ha_loop_seconds().observe(started.elapsed());
        Ok(rerun)
    }

    /// Count the elections a decision starts, and tell the policies whom it chose.
    pub(super) fn record_decision(&self, decision: &Decision) {
        for a in &decision.actions {
            let chosen = match a {
                Action::AcquireLeader { reason } => {
                    crate::metrics::election(reason.election_label());
                    Some(self.cfg.name.clone())
                }
                Action::Bootstrap => {
                    crate::metrics::election("bootstrap");
                    None
                }
                Action::HandOver { to, .. } => Some(to.clone()),
                _ => None,
            };
            if let Some(name) = chosen {
                self.event(crate::plugin::Event::FailoverDecided(
                    crate::ha::policy::Ranked {
                        name,
                        reason: decision.summary.clone(),
                    },
                ));
            }
        }
    }

    /// Whether the decision needs the peers' live state: an election, or a leader asked to
    /// hand over (a switchover request, or its own failed health).
    pub(super) fn needs_peers(&self, w: &World) -> bool {
        let Some(c) = &w.cluster else { return false };
        if c.leader.is_none() {
            return w.pg.is_replica();
        }
        let request = c.failover.as_ref().is_some_and(|(f, _)| !f.is_empty());
        let unhealthy = matches!(w.health, Health::Failed(_))
            && w.memory.failed_health_loops >= self.cfg.regent.failed_loops_before_handover;
        w.holds_lock() && w.pg.is_primary() && (request || unhealthy)
    }
}

/// The next command from the API, or never when there is no channel (or it closed).
pub(super) async fn recv_command(
    rx: &mut Option<crate::control::ControlReceiver>,
) -> Option<crate::control::Envelope> {
    match rx {
        Some(rx) => match rx.recv().await {
            Some(e) => Some(e),
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}
