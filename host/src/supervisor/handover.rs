//! Giving up the leadership cleanly: the planned hand-over to a chosen replica (a switchover,
//! or a leader its policies judge failed), the shutdown on SIGTERM, and a synchronous standby
//! that leaves the `sync` key before it stops.
//!
//! May touch: PostgreSQL (checkpoint, stop, start, the replicas' received LSN over SQL), the DCS
//! (leader key transfer or release, `status`, `failover`, the member key), the guard.

use super::act::{conn_url_host_port, upstream_in};
use super::{NodeRole, PgPhase, Supervisor, SupervisorError};
use crate::config::SyncMode;
use crate::dcs::{Cluster, Status};
use crate::fence::{GuardState, mono_ms};
use crate::ha::{HandOverReason, World};
use crate::postgres::StopMode;
use std::time::Duration;

impl Supervisor {
    /// Hand the leadership to `to` (see [`Action::HandOver`]). Write unavailability runs from
    /// the fast stop (after a checkpoint, so the shutdown checkpoint is quick) until `to` sees
    /// the leader key on its own lease, which wakes it through its watch, and promotes.
    pub(super) async fn hand_over(
        &mut self,
        w: &World,
        to: &str,
        reason: HandOverReason,
    ) -> Result<bool, SupervisorError> {
        let Some(c) = w.cluster.as_ref() else {
            return Ok(false);
        };
        let target = c.member(to).ok_or_else(|| {
            SupervisorError::Io(format!("hand-over target {to} has no member key"))
        })?;
        let addr = target
            .data
            .conn_url
            .as_deref()
            .and_then(conn_url_host_port)
            .ok_or_else(|| {
                SupervisorError::Io(format!("hand-over target {to} has no usable conn_url"))
            })?;
        let up = upstream_in(Some(c), to)?;
        let request = c.failover.as_ref().is_some_and(|(f, _)| !f.is_empty());
        self.event(crate::plugin::Event::FailoverStarted(format!(
            "{} hands over to {to}",
            self.cfg.name
        )));
        let started = std::time::Instant::now();
        // A checkpoint while still writable keeps the shutdown checkpoint (and so the
        // unavailability) short.
        if let Err(e) = self.pg.checkpoint().await {
            tracing::warn!(error = %e, "checkpoint before the hand-over failed");
        }
        let stop_at = std::time::Instant::now();
        self.phase = PgPhase::Stopping;
        self.stop_postgres(StopMode::Fast, Duration::from_secs(60))
            .await?;
        self.view_tx.send_modify(|v| {
            v.state = PgPhase::Stopped.as_str().into();
            v.holds_lock = false;
            v.wal_flush_lsn = None;
            v.replication.clear();
        });
        self.phase = PgPhase::Stopped;
        let ckpt = self.shutdown_checkpoint().await;
        // Keep our lease (and so the leader key) alive while we wait for the target.
        let lease_before = self.mem.our_lease;
        if let Ok(r) = self.renew_lease().await
            && Some(r.lease) == lease_before
        {
            // A failed write leaves the guard's earlier, shorter deadline in force.
            if let Err(e) = self.arm_guard() {
                tracing::warn!(error = %e, "could not extend the fencing guard's deadline");
            }
        }
        let confirmed = match ckpt {
            Some(lsn) => {
                self.wait_received(std::slice::from_ref(&addr), lsn, Duration::from_secs(5))
                    .await
            }
            None => false,
        };
        if !confirmed {
            tracing::error!(
                candidate = %to,
                "hand-over aborted: {to} did not confirm the shutdown checkpoint within 5 s; starting again (as primary if the leader key is still ours)"
            );
            if request {
                let _ = self.dcs.clear_failover().await;
            }
            self.mem.handover_aborted(mono_ms());
            self.start_primary_or_read_only(self.start_patience())
                .await?;
            return Ok(true);
        }
        if let Some(lsn) = ckpt {
            let _ = self
                .dcs
                .write_status(&Status {
                    optime: Some(lsn),
                    ..Status::default()
                })
                .await;
        }
        let moved = match self
            .dcs
            .transfer_leader(&self.cfg.name, to, target.lease)
            .await
        {
            Ok(ok) => ok,
            Err(e) => {
                tracing::warn!(error = %e, "could not move the leader key onto {to}'s lease; releasing it so that {to} races for it");
                if !request {
                    let _ = self.dcs.request_failover(Some(&self.cfg.name), to).await;
                }
                self.dcs.release_leader(&self.cfg.name).await?
            }
        };
        if moved && request {
            let _ = self.dcs.clear_failover().await;
        }
        crate::metrics::failover(reason.failover_label());
        let e = self.deciding.take();
        self.election_handed_over(e, w);
        tracing::info!(
            candidate = %to,
            writes_stopped_ms = stop_at.elapsed().as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "handed the leadership over to {to}"
        );
        let _ = self.guard.write(GuardState::Disarmed {
            owner: std::process::id() as i32,
        });
        self.role = NodeRole::Replica;
        self.sysid = None;
        self.event(crate::plugin::Event::RoleChanged {
            from: crate::plugin::Role::Primary,
            to: crate::plugin::Role::Replica,
        });
        // A clean shutdown whose last WAL the new leader has received: follow it directly,
        // no rewind needed.
        self.start_replica(Some(&up)).await?;
        Ok(true)
    }

    /// SIGTERM: a leader checkpoints, stops PostgreSQL cleanly, waits until a replica has
    /// received the shutdown checkpoint, then deletes the leader key so a replica takes over at
    /// once. Others just stop PostgreSQL.
    pub(super) async fn shutdown(&mut self) {
        let now = mono_ms();
        let leader = self.role == NodeRole::Primary
            && self.last_pg.as_ref().is_some_and(|p| !p.in_recovery)
            && self.mem.write_deadline_ms.is_some_and(|d| now < d)
            && self
                .last_cluster
                .as_ref()
                .and_then(|c| c.leader.as_ref())
                .is_some_and(|l| l.name == self.cfg.name && Some(l.lease) == self.mem.our_lease);
        tracing::info!(leader, "shutting down");
        if leader && let Err(e) = self.pg.checkpoint().await {
            tracing::warn!(error = %e, "checkpoint before shutdown failed");
        }
        if !leader {
            self.leave_sync().await;
        }
        self.phase = PgPhase::Stopping;
        if let Err(e) = self
            .stop_postgres(StopMode::Fast, Duration::from_secs(60))
            .await
        {
            tracing::error!(error = %e, "stopping PostgreSQL failed");
        }
        self.event(crate::plugin::Event::Stopped(self.role.policy_role()));
        // Peers racing for the lock must not see a stale "running primary" here.
        self.view_tx.send_modify(|v| {
            v.state = PgPhase::Stopped.as_str().into();
            v.holds_lock = false;
            v.wal_flush_lsn = None;
            v.received_lsn = None;
            v.replayed_lsn = None;
            v.replication.clear();
        });
        if leader {
            if let Some(ckpt) = self.wait_shutdown_checkpoint_received().await {
                // Replicas judge their lag against this: the last WAL this primary wrote.
                let _ = self
                    .dcs
                    .write_status(&Status {
                        optime: Some(ckpt),
                        ..Status::default()
                    })
                    .await;
            }
            match self.dcs.release_leader(&self.cfg.name).await {
                Ok(true) => tracing::info!("released the leader key"),
                Ok(false) => tracing::warn!("the leader key was no longer mine"),
                Err(e) => tracing::error!(error = %e, "could not release the leader key"),
            }
        }
        let _ = self.guard.write(GuardState::Disarmed {
            owner: std::process::id() as i32,
        });
        self.phase = PgPhase::Stopped;
        self.last_pg = None;
        let _ = self.touch_member().await;
    }

    /// A synchronous standby about to stop: tag itself `nosync` and wait (up to
    /// 2 × `loop_wait`) until the leader's `sync` key no longer names it, so that commits do
    /// not wait for a standby that is gone until the leader's next loop notices.
    pub(super) async fn leave_sync(&mut self) {
        let named = |c: &Cluster, me: &str| {
            c.sync.as_ref().is_some_and(|(s, _)| {
                s.leader.as_deref() != Some(me) && s.members().iter().any(|n| n == me)
            })
        };
        if self.dynamic.synchronous_mode == SyncMode::Off {
            return;
        }
        // Fresh: the leader may have named this node since this node's last loop.
        let named_now = match self.dcs.read_cluster().await {
            Ok(c) => named(&c, &self.cfg.name),
            Err(_) => self
                .last_cluster
                .as_ref()
                .is_some_and(|c| named(c, &self.cfg.name)),
        };
        if !named_now {
            return;
        }
        self.leaving_sync = true;
        if let Err(e) = self.touch_member().await {
            tracing::warn!(error = %e, "could not tag the member key nosync before stopping");
            return;
        }
        tracing::info!(
            "a synchronous standby stopping: waiting for the leader to stop waiting for it"
        );
        let patience = Duration::from_secs(self.dynamic.loop_wait.saturating_mul(2).max(2));
        let deadline = tokio::time::Instant::now() + patience;
        while tokio::time::Instant::now() < deadline {
            match self.dcs.read_cluster().await {
                Ok(c) if !named(&c, &self.cfg.name) => {
                    tracing::info!("no longer a synchronous standby");
                    return;
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "reading the sync key"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::warn!(
            waited_s = patience.as_secs(),
            "the leader still names this node as synchronous standby; stopping anyway"
        );
    }

    /// The shutdown checkpoint if the server stopped cleanly (`None` after an unclean stop:
    /// then only a rewind may bring this data after another leader's).
    pub(super) async fn shutdown_checkpoint(&self) -> Option<u64> {
        let cd = self.pg.controldata().await.ok()?;
        let ckpt = crate::postgres::clean_shutdown_checkpoint(&cd);
        if ckpt.is_none() {
            tracing::warn!(
                state = cd
                    .get("Database cluster state")
                    .map(String::as_str)
                    .unwrap_or("unknown"),
                "PostgreSQL did not shut down cleanly: its WAL may go past the last checkpoint"
            );
        }
        ckpt
    }

    /// Wait (up to 5 s) until some replica has received WAL past our shutdown checkpoint, read
    /// live from the replicas' PostgreSQL, so that releasing the lock loses nothing.
    pub(super) async fn wait_shutdown_checkpoint_received(&self) -> Option<u64> {
        let ckpt = self.shutdown_checkpoint().await;
        let (Some(ckpt), Some(c)) = (ckpt, self.last_cluster.as_ref()) else {
            return ckpt;
        };
        // Only replicas that streamed from us can receive the checkpoint: with none, release
        // the lock at once.
        let streaming: Vec<&str> = self
            .last_pg
            .iter()
            .flat_map(|p| p.replication.iter())
            .filter(|r| r.state == "streaming")
            .map(|r| r.application_name.as_str())
            .collect();
        let targets: Vec<(String, u16)> = c
            .members
            .iter()
            .filter(|m| m.name != self.cfg.name && streaming.contains(&m.name.as_str()))
            .filter_map(|m| conn_url_host_port(m.data.conn_url.as_deref()?))
            .collect();
        if targets.is_empty() {
            tracing::info!("no replica streamed from this leader: releasing the lock at once");
            return Some(ckpt);
        }
        if !self
            .wait_received(&targets, ckpt, Duration::from_secs(5))
            .await
        {
            tracing::warn!(
                "no replica confirmed the shutdown checkpoint within 5 s; releasing the lock anyway"
            );
        }
        Some(ckpt)
    }

    /// Poll the PostgreSQL servers `targets` until one has received WAL past `lsn`; false when
    /// none has within `timeout`.
    pub(super) async fn wait_received(
        &self,
        targets: &[(String, u16)],
        lsn: u64,
        timeout: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            for (h, p) in targets {
                if let Ok(Some(got)) = self.pg.remote_received_lsn(h, *p).await
                    && got > lsn
                {
                    tracing::info!(replica = %format!("{h}:{p}"), lsn = %crate::postgres::format_lsn(got), "the replica has received the shutdown checkpoint");
                    return true;
                }
            }
            if tokio::time::Instant::now() >= deadline || targets.is_empty() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
