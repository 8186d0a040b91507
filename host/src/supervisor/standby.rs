//! A standby cluster's actions: bootstrapping the standby leader from the remote primary,
//! starting or pointing it at the remote, turning a primary into the standby leader when the
//! section is added, and the standby leader's per-loop duty (publishing its position).
//!
//! May touch: the DCS (`initialize`, the leader key, `config`, `status`), PostgreSQL (clone,
//! start, stop, reconfigure), the guard's state file (disarmed: nothing here is writable).

use super::act::busy;
use super::{NodeRole, PgPhase, Supervisor, SupervisorError};
use crate::dcs::Status;
use crate::fence::GuardState;
use crate::ha::World;
use crate::postgres::{StopMode, Upstream};
use std::time::Duration;

impl Supervisor {
    /// The remote primary, or an error naming the missing section.
    fn remote(&self) -> Result<Upstream, SupervisorError> {
        self.pg.remote_upstream().ok_or_else(|| {
            SupervisorError::Io(
                "standby_cluster has no host, port or restore_command: not a standby cluster"
                    .into(),
            )
        })
    }

    /// Race for `initialize`; the winner clones from the remote primary, starts replicating
    /// from it and takes the leader key as the standby leader.
    pub(super) async fn bootstrap_standby(&mut self) -> Result<bool, SupervisorError> {
        let remote = self.remote()?;
        if !self.dcs.race_initialize().await? {
            tracing::info!("another node is bootstrapping the standby cluster");
            return Ok(false);
        }
        tracing::info!(remote = %remote.name, "won the bootstrap race: cloning the standby leader from the remote primary");
        self.phase = PgPhase::CreatingReplica;
        self.role = NodeRole::Uninitialized;
        let res = self.bootstrap_standby_inner(&remote).await;
        if let Err(e) = &res {
            tracing::error!(error = %e, "standby leader bootstrap failed: releasing the initialize key");
            let _ = self
                .pg
                .stop(StopMode::Immediate, Duration::from_secs(5))
                .await;
            let _ = self.dcs.delete_initialize().await;
            // A failed method on an empty directory leaves nothing (see postgres::methods);
            // anything else is moved aside, never deleted.
            if !matches!(self.pg.data_dir_state().await, crate::ha::DataDir::Empty) {
                let _ = self.pg.move_aside();
            }
            return Err(SupervisorError::Io(format!(
                "failed to bootstrap the standby leader from {}: {e}",
                remote.name
            )));
        }
        Ok(true)
    }

    async fn bootstrap_standby_inner(&mut self, remote: &Upstream) -> Result<(), SupervisorError> {
        busy(
            &self.view_tx,
            "creating replica",
            self.pg.create_standby_leader(),
        )
        .await?;
        self.sysid = None;
        self.start_replica(Some(remote)).await?;
        self.role = NodeRole::StandbyLeader;
        self.renew_lease().await?;
        if !self.dcs.acquire_leader(&self.cfg.name).await? {
            return Err(SupervisorError::Io(
                "the leader key was taken during the standby bootstrap".into(),
            ));
        }
        let sysid = self.publish_new_cluster().await?;
        tracing::info!(%sysid, remote = %remote.name, "bootstrapped the standby leader");
        Ok(())
    }

    /// Start PostgreSQL as the standby leader, replicating from the remote primary.
    pub(super) async fn start_standby_leader(&mut self) -> Result<bool, SupervisorError> {
        let remote = self.remote()?;
        tracing::info!(remote = %remote.name, "starting as the standby leader");
        self.start_replica(Some(&remote)).await?;
        self.role = NodeRole::StandbyLeader;
        Ok(true)
    }

    /// Point the running replica at the remote primary: it leads the standby cluster now.
    pub(super) fn follow_remote(&mut self) -> Result<bool, SupervisorError> {
        let remote = self.remote()?;
        self.pg.configure(true, Some(&remote))?;
        self.pg.reload()?;
        self.role = NodeRole::StandbyLeader;
        tracing::info!(remote = %remote.name, "now the standby leader, replicating from the remote primary");
        self.event(crate::plugin::Event::RoleChanged {
            from: crate::plugin::Role::Replica,
            to: crate::plugin::Role::Replica,
        });
        Ok(false)
    }

    /// The cluster became a standby cluster while this node ran as its primary: stop it
    /// (fast: the remote has its own history, nothing here is worth a checkpoint's wait) and
    /// start it again replicating from the remote primary, keeping the leader key.
    pub(super) async fn demote_to_standby_leader(&mut self) -> Result<bool, SupervisorError> {
        let remote = self.remote()?;
        tracing::warn!(remote = %remote.name, "the cluster became a standby cluster: stopping the primary to restart it as the standby leader");
        self.phase = PgPhase::Stopping;
        self.stop_postgres(StopMode::Fast, Duration::from_secs(30))
            .await?;
        self.phase = PgPhase::Stopped;
        self.event(crate::plugin::Event::Stopped(crate::plugin::Role::Primary));
        let _ = self.guard.write(GuardState::Disarmed {
            owner: std::process::id() as i32,
        });
        self.sysid = None;
        self.start_replica(Some(&remote)).await?;
        self.role = NodeRole::StandbyLeader;
        self.event(crate::plugin::Event::RoleChanged {
            from: crate::plugin::Role::Primary,
            to: crate::plugin::Role::Replica,
        });
        Ok(true)
    }

    /// The standby leader's loop duty: publish its WAL position in `/status`, which the
    /// cluster's elections measure lag from.
    pub(super) async fn standby_leader_duties(&mut self, w: &World) -> Result<(), SupervisorError> {
        let Some(c) = &w.cluster else { return Ok(()) };
        let status = Status {
            optime: w.pg.wal_position,
            ..Status::default()
        };
        if c.status != status {
            self.dcs.write_status(&status).await?;
        }
        Ok(())
    }
}
