//! The supervisor's side of the script callbacks (`postgresql.callbacks`, `pre_promote`,
//! `before_stop`): which of Patroni's callbacks fires on which transition and with which role,
//! and running `pre_promote` before a promotion and `before_stop` before a stop.
//!
//! The callbacks follow the transitions the policies' `on-event` hook is given (both run when
//! both are configured): `started` → `on_start`, `stopped` → `on_stop`, `restarted` →
//! `on_restart`, `reloaded` → `on_reload`, `role-changed` → `on_role_change` with the new role.
//! As in Patroni, the start that follows a demotion runs no `on_start`: the `on_role_change`
//! just fired says it, and a start callback would kill it. The commands are read from the
//! configuration when they fire, so a reload applies at once.
//!
//! May touch: child processes (through `postgres::callbacks`), PostgreSQL (stop), the DCS
//! (the lease renewal and the cluster read after `pre_promote`).

use super::{Supervisor, SupervisorError};
use crate::fence::mono_ms;
use crate::plugin::{Event, Role};
use crate::postgres::StopMode;
use crate::postgres::callbacks::{CallbackAction, ScriptOutcome, argv, run_bounded};
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Supervisor {
    /// Run the script callback, if one is configured, for a transition the policies are told
    /// about as `e`.
    pub(super) fn script_callback(&self, e: &Event) {
        let (action, role) = match e {
            Event::Started(r) => {
                if self.cb_after_demotion.swap(false, Ordering::Relaxed) {
                    return;
                }
                (CallbackAction::Start, *r)
            }
            Event::Stopped(r) => (CallbackAction::Stop, *r),
            Event::Restarted(r) => (CallbackAction::Restart, *r),
            Event::Reloaded(r) => (CallbackAction::Reload, *r),
            Event::RoleChanged { to, .. } => {
                self.cb_after_demotion
                    .store(*to == Role::Replica, Ordering::Relaxed);
                (CallbackAction::RoleChange, *to)
            }
            _ => return,
        };
        let cb = &self.cfg.postgresql.callbacks;
        let command = match action {
            CallbackAction::Start => &cb.on_start,
            CallbackAction::Stop => &cb.on_stop,
            CallbackAction::Restart => &cb.on_restart,
            CallbackAction::Reload => &cb.on_reload,
            CallbackAction::RoleChange => &cb.on_role_change,
        };
        let Some(command) = command.as_deref() else {
            return;
        };
        let role = match role {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::Unknown => self.role.as_str(),
        };
        match argv(command, &[action.as_str(), role, &self.cfg.scope]) {
            Ok(a) => self.scripts.call(action, a),
            Err(e) => tracing::error!(action = action.as_str(), error = %e, "callback not run"),
        }
    }

    /// Stop PostgreSQL, running `before_stop` first when PostgreSQL runs (at most `timeout`,
    /// the stop's own limit).
    pub(super) async fn stop_postgres(
        &self,
        mode: StopMode,
        timeout: Duration,
    ) -> Result<(), SupervisorError> {
        if let Some(cmd) = self.cfg.postgresql.before_stop.as_deref()
            && self.pg.is_running().await
        {
            let outcome = match argv(cmd, &[]) {
                Ok(a) => run_bounded(&a, timeout).await,
                Err(e) => ScriptOutcome::NotStarted(e.to_string()),
            };
            tracing::info!(command = cmd, "before_stop script {outcome}");
        }
        Ok(self.pg.stop(mode, timeout).await?)
    }

    /// Run `pre_promote`, if configured, before a promotion. `Ok(true)`: promote. `Ok(false)`:
    /// the script vetoed it (non-zero exit, killed at its limit of `ttl`, or not started): the
    /// veto is in the memory and the next decision releases the leader key. While the script
    /// runs, the lease is renewed every `loop_wait` and the guard (armed for this promotion)
    /// given each new deadline, as the loop would do; after it the lease is
    /// renewed and the leader key read again, and an error says the key is no longer ours.
    pub(super) async fn pre_promote(&mut self) -> Result<bool, SupervisorError> {
        let Some(cmd) = self.cfg.postgresql.pre_promote.clone() else {
            return Ok(true);
        };
        let limit = Duration::from_millis(self.ttl_ms());
        tracing::info!(command = %cmd, limit_ms = limit.as_millis() as u64, "running the pre_promote script");
        let outcome = match argv(&cmd, &[]) {
            Ok(a) => {
                let script = run_bounded(&a, limit);
                tokio::pin!(script);
                let mut beat =
                    tokio::time::interval(Duration::from_secs(self.dynamic.loop_wait.max(1)));
                beat.tick().await;
                loop {
                    tokio::select! {
                        o = &mut script => break o,
                        _ = beat.tick() => {
                            // The guard was armed for this promotion with the loop's
                            // deadline: it gets each renewal's, as the loop would give it.
                            match self.renew_lease().await {
                                Ok(_) => {
                                    if let Err(e) = self.arm_guard() {
                                        tracing::warn!(error = %e, "could not move the guard's deadline while pre_promote runs");
                                    }
                                }
                                Err(e) => tracing::warn!(error = %e, "could not renew the lease while pre_promote runs"),
                            }
                            self.view_tx.send_modify(|v| v.last_loop = Some(std::time::Instant::now()));
                        }
                    }
                }
            }
            Err(e) => ScriptOutcome::NotStarted(e.to_string()),
        };
        tracing::info!(command = %cmd, "pre_promote script {outcome}");
        if !outcome.success() {
            self.mem.promotion_vetoed(mono_ms());
            tracing::warn!(
                "promotion cancelled because the pre_promote script failed: releasing the leader key and staying out of elections for ttl"
            );
            return Ok(false);
        }
        match self.renew_lease().await {
            Ok(_) => match self.dcs.read_cluster().await {
                Ok(c) => self.last_cluster = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the leader key after pre_promote");
                    self.mem.lease_renewal_failed();
                }
            },
            Err(e) => tracing::warn!(error = %e, "could not renew the lease after pre_promote"),
        }
        if !self.lock_held_now() {
            return Err(SupervisorError::Io(
                "not promoting: the leader key is no longer ours on a live lease after pre_promote"
                    .into(),
            ));
        }
        Ok(true)
    }
}
