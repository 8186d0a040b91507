//! Operators' commands from the REST API, run between two loops: restart (now or scheduled),
//! cancel a scheduled restart, reinitialize, reload, wake.
//!
//! May touch: PostgreSQL (stop, start, move the data directory aside, clone).

/// A restart requested for later.
#[derive(Debug, Clone)]
pub(super) struct ScheduledRestart {
    pub(super) at_unix_ms: u64,
    pub(super) request: crate::control::RestartRequest,
}

impl ScheduledRestart {
    /// As Patroni shows it in the member key and `/patroni`: the request's fields.
    pub(super) fn json(&self) -> Value {
        serde_json::to_value(&self.request).unwrap_or(Value::Null)
    }
}

use super::act::{busy, upstream_in};
use super::{NodeRole, PgPhase, Supervisor, SupervisorError, unix_now_ms};
use crate::ha::DataDir;
use crate::postgres::StopMode;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

impl Supervisor {
    /// Carry out one command from the REST API between two loops.
    pub(super) async fn command(&mut self, cmd: crate::control::Command) -> crate::control::Reply {
        use crate::control::{Command, Reply};
        match cmd {
            Command::Wake => Reply::new(200, "OK"),
            Command::Restart(r) => self.restart_command(r).await,
            Command::CancelRestart => match self.scheduled_restart.take() {
                Some(_) => Reply::new(200, "scheduled restart deleted"),
                None => Reply::new(404, "no restarts are scheduled"),
            },
            Command::Reinitialize { force, from_leader } => {
                let leader = self
                    .last_cluster
                    .as_ref()
                    .and_then(|c| c.leader_name().map(str::to_string));
                match leader {
                    Some(l) if l == self.cfg.name => {
                        Reply::new(503, "I am the leader, can not reinitialize")
                    }
                    None => Reply::new(503, "Cluster has no leader, can not reinitialize"),
                    Some(_) if self.reinit.is_some() && !force => {
                        Reply::new(503, "reinitialize already in progress")
                    }
                    Some(_) => {
                        self.reinit = Some(from_leader);
                        self.phase = PgPhase::CreatingReplica;
                        self.view_tx
                            .send_modify(|v| v.state = PgPhase::CreatingReplica.as_str().into());
                        Reply::new(200, "reinitialize started")
                    }
                }
            }
            Command::Reload => self.reload().await,
        }
    }

    /// `POST /restart`: check the conditions, then restart now or schedule it.
    pub(super) async fn restart_command(
        &mut self,
        r: crate::control::RestartRequest,
    ) -> crate::control::Reply {
        use crate::control::Reply;
        if let Some(at) = r.schedule.as_deref() {
            if self.scheduled_restart.is_some() {
                return Reply::new(409, "Another restart is already scheduled");
            }
            let Some(at_unix_ms) = crate::dcs::parse_iso8601_ms(at) else {
                return Reply::new(
                    400,
                    format!("schedule {at:?} is not an ISO 8601 time with a time zone"),
                );
            };
            tracing::info!(schedule = %at, "restart scheduled");
            self.scheduled_restart = Some(ScheduledRestart {
                at_unix_ms,
                request: r,
            });
            return Reply::new(202, "Restart scheduled");
        }
        if let Err(why) = self.restart_conditions(&r) {
            tracing::info!("restart refused: {why}");
            return Reply::new(503, "restart conditions are not satisfied");
        }
        if self.phase == PgPhase::Starting {
            return Reply::new(503, "postgres is still starting");
        }
        match self.restart_postgres(r.timeout).await {
            Ok(true) => Reply::new(200, "restarted successfully"),
            Ok(false) => Reply::new(503, "restart failed: PostgreSQL is still starting"),
            Err(e) => Reply::new(503, format!("restart failed: {e}")),
        }
    }

    /// Why a restart request's conditions (`role`, `postgres_version`, `restart_pending`) do not
    /// hold on this node.
    pub(super) fn restart_conditions(
        &self,
        r: &crate::control::RestartRequest,
    ) -> Result<(), String> {
        if let Some(want) = r.role.as_deref() {
            let want = match want {
                "master" | "primary" => "primary",
                "replica" | "standby" => "replica",
                other => other,
            };
            let mine = if self.role == NodeRole::Primary {
                "primary"
            } else {
                "replica"
            };
            if want != mine {
                return Err(format!("role is {mine}, not {want}"));
            }
        }
        if let Some(v) = r.postgres_version.as_deref() {
            let want = crate::api::postgres_version_number(v)
                .ok_or_else(|| format!("bad version {v:?}"))?;
            let have = self.last_pg.as_ref().map(|p| p.server_version).unwrap_or(0);
            if have >= want {
                return Err(format!("server version {have} is not older than {v}"));
            }
        }
        if r.restart_pending && self.pending_restart().is_empty() {
            return Err("no restart is pending".into());
        }
        Ok(())
    }

    /// Stop PostgreSQL (fast) and start it again in the same role. `Ok(false)`: still starting
    /// after `timeout` seconds (or the loop's patience).
    pub(super) async fn restart_postgres(
        &mut self,
        timeout: Option<u64>,
    ) -> Result<bool, SupervisorError> {
        let role = self.role.policy_role();
        tracing::info!(role = self.role.as_str(), "restarting PostgreSQL");
        self.phase = PgPhase::Restarting;
        self.view_tx
            .send_modify(|v| v.state = PgPhase::Restarting.as_str().into());
        self.stop_postgres(StopMode::Fast, Duration::from_secs(60))
            .await?;
        let patience = timeout.map_or(self.start_patience(), Duration::from_secs);
        let started = if self.pg.standby_configured() {
            self.pg.start(patience).await.map_err(SupervisorError::from)
        } else {
            // A primary's data directory: writable again only under the lock.
            self.start_primary_or_read_only(patience).await
        };
        match started {
            Ok(started) => {
                self.phase = if started {
                    PgPhase::Running
                } else {
                    PgPhase::Starting
                };
                self.event(crate::plugin::Event::Restarted(role));
                Ok(started)
            }
            Err(e) => {
                self.phase = PgPhase::RestartFailed;
                Err(e)
            }
        }
    }

    /// Run a scheduled restart whose time has come. Returns whether it ran.
    pub(super) async fn run_scheduled_restart(&mut self) -> bool {
        let due = self
            .scheduled_restart
            .as_ref()
            .is_some_and(|s| s.at_unix_ms <= unix_now_ms());
        if !due {
            return false;
        }
        let Some(s) = self.scheduled_restart.take() else {
            return false;
        };
        if let Err(why) = self.restart_conditions(&s.request) {
            tracing::info!("scheduled restart skipped: conditions not satisfied ({why})");
            return false;
        }
        match self.restart_postgres(s.request.timeout).await {
            Ok(_) => tracing::info!("scheduled restart done"),
            Err(e) => tracing::error!(error = %e, "scheduled restart failed"),
        }
        true
    }

    /// Settings waiting for a restart: name → (running value, configured value).
    pub(super) fn pending_restart(&self) -> BTreeMap<String, (String, String)> {
        self.last_pg
            .as_ref()
            .map(|p| {
                p.pending_restart
                    .iter()
                    .map(|(name, old)| {
                        let new = self.pg.s.parameters.get(name).cloned().unwrap_or_default();
                        (name.clone(), (old.clone(), new))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `POST /reinitialize`: move the data directory aside and clone it again from the leader.
    pub(super) async fn reinitialize(&mut self, _from_leader: bool) {
        let Some(c) = self.last_cluster.clone() else {
            return;
        };
        let Some(leader) = c.leader_name().filter(|l| *l != self.cfg.name) else {
            tracing::error!("reinitialize: the cluster has no other leader; nothing done");
            return;
        };
        let up = match upstream_in(Some(&c), leader) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "reinitialize: cannot find the leader's address");
                return;
            }
        };
        tracing::info!(from = %leader, "reinitializing: moving the data directory aside and cloning it again");
        self.phase = PgPhase::CreatingReplica;
        let res: Result<(), SupervisorError> = async {
            self.stop_postgres(StopMode::Fast, Duration::from_secs(60))
                .await?;
            if !matches!(self.pg.data_dir_state().await, DataDir::Empty) {
                let moved = self.pg.move_aside()?;
                tracing::warn!(moved = %moved.display(), "the old data directory was moved aside (delete it when no longer needed)");
            }
            self.sysid = None;
            self.mem.rewind_failed = false;
            self.role = NodeRole::Replica;
            let _ = self.touch_member().await;
            busy(&self.view_tx, "creating replica", self.pg.create_replica(Some(&up))).await?;
            self.start_replica(Some(&up)).await
        }
        .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "reinitialize failed");
        }
    }
}
