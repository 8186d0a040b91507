//! Requests from the REST API to the HA loop, and the loop's answers.
//!
//! The REST API answers reads from the published [`LocalSnapshot`](crate::api::LocalSnapshot) and writes
//! DCS keys itself (`/config`, `/failover`). What must happen inside the HA loop, serialized
//! with its own actions (restarting or re-initializing PostgreSQL, reloading the local
//! configuration), goes through this channel: the API sends a [`Command`] and waits for the
//! [`Reply`], whose status code and text it returns as is.

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// `POST /restart` conditions (Patroni's body). Validated by the API: `role` is `primary`,
/// `replica` or `standby_leader`; `postgres_version` looks like a version; `timeout` > 0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RestartRequest {
    /// When to restart (ISO 8601 with time zone); `None`: now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) schedule: Option<String>,
    /// Restart only if the node has this role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) role: Option<String>,
    /// Restart only if the running server's version is lower than this one (`15.2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) postgres_version: Option<String>,
    /// Seconds to wait for the restart before failing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) timeout: Option<u64>,
    /// Restart only if PostgreSQL has a pending restart (a changed parameter).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) restart_pending: bool,
}

/// What the REST API (or SIGHUP) asks the HA loop to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `POST /restart`: restart PostgreSQL now (if the conditions hold) or schedule it.
    Restart(RestartRequest),
    /// `DELETE /restart`: drop a scheduled restart.
    CancelRestart,
    /// `POST /reinitialize`: move the data directory aside and clone it again from the leader
    /// (or from any running replica unless `from_leader`).
    Reinitialize {
        /// Start again even when a re-initialization is already in progress.
        force: bool,
        /// Clone from the leader only.
        from_leader: bool,
    },
    /// `POST /reload`, SIGHUP: re-read the local configuration file, rescan the policies,
    /// reload PostgreSQL.
    Reload,
    /// Run the HA loop now (the API changed `/config` or `/failover`).
    Wake,
}

/// The loop's answer: the HTTP status code and the plain-text body the API returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// The plain-text body.
    pub body: String,
}

impl Reply {
    /// A reply with this status code and body.
    pub fn new(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            body: body.into(),
        }
    }
}

/// A command with the channel its reply goes back on.
pub(crate) type Envelope = (Command, oneshot::Sender<Reply>);

/// The API's end: clone it freely.
#[derive(Debug, Clone)]
pub struct ControlHandle {
    tx: mpsc::Sender<Envelope>,
    failsafe: FailsafeGate,
}

/// The HA loop's end.
pub(crate) type ControlReceiver = mpsc::Receiver<Envelope>;

/// A connected pair.
pub fn channel() -> (ControlHandle, ControlReceiver) {
    let (tx, rx) = mpsc::channel(16);
    (
        ControlHandle {
            tx,
            failsafe: FailsafeGate::default(),
        },
        rx,
    )
}

impl ControlHandle {
    /// Send a command and wait for the loop's answer (503 if the loop is gone).
    pub async fn send(&self, command: Command) -> Reply {
        let (tx, rx) = oneshot::channel();
        if self.tx.send((command, tx)).await.is_err() {
            return Reply::new(503, "the HA loop is not running");
        }
        rx.await
            .unwrap_or_else(|_| Reply::new(503, "the HA loop did not answer"))
    }

    /// The failsafe gate `POST /failsafe` goes through; the HA loop holds the other end.
    pub fn failsafe_gate(&self) -> FailsafeGate {
        self.failsafe.clone()
    }

    /// Fire and forget (no answer awaited), e.g. [`Command::Wake`].
    pub(crate) fn notify(&self, command: Command) {
        let (tx, _rx) = oneshot::channel();
        let _ = self.tx.try_send((command, tx));
    }
}

/// Between `POST /failsafe` and the HA loop: the last leader's ping this node accepted, and
/// whether the loop is taking (or holds) the leader key. The two are decided under one lock,
/// so that a ping is never accepted once the loop started to race, and the loop never races
/// after accepting a ping less than `ttl` ago (failsafe mode's promise to the leader).
#[derive(Debug, Clone, Default)]
pub struct FailsafeGate(std::sync::Arc<std::sync::Mutex<GateState>>);

#[derive(Debug, Default)]
struct GateState {
    last: Option<(String, std::time::Instant)>,
    closed: bool,
}

impl FailsafeGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Accept `leader`'s ping now, unless the loop is racing for or holds the leader key.
    pub(crate) fn accept(&self, leader: &str) -> Result<(), &'static str> {
        let mut g = self.lock();
        if g.closed {
            return Err("Racing for or holding the leader key");
        }
        g.last = Some((leader.to_string(), std::time::Instant::now()));
        Ok(())
    }

    /// The last ping accepted: the leader's name and when.
    pub(crate) fn last(&self) -> Option<(String, std::time::Instant)> {
        self.lock().last.clone()
    }

    /// Close the gate before racing for the leader key: refused (with the leader's name) when
    /// a ping was accepted less than `ttl` ago.
    pub(crate) fn close_for_race(&self, ttl: std::time::Duration) -> Result<(), String> {
        let mut g = self.lock();
        if let Some((leader, at)) = &g.last
            && at.elapsed() < ttl
        {
            return Err(leader.clone());
        }
        g.closed = true;
        Ok(())
    }

    /// Open or close the gate: closed while this node holds the leader key or runs as primary.
    pub(crate) fn set_closed(&self, closed: bool) {
        self.lock().closed = closed;
    }
}

#[cfg(test)]
mod tests {
    use super::FailsafeGate;
    use std::time::Duration;

    #[test]
    fn the_failsafe_gate_never_lets_a_ping_and_a_race_overlap() {
        let gate = FailsafeGate::default();
        // A ping accepted: no race for ttl.
        assert_eq!(gate.accept("pg1"), Ok(()));
        assert_eq!(
            gate.close_for_race(Duration::from_secs(30)),
            Err("pg1".to_string())
        );
        assert_eq!(gate.last().map(|(l, _)| l), Some("pg1".to_string()));
        // Past ttl the race may start; from then on pings are refused.
        assert_eq!(gate.close_for_race(Duration::ZERO), Ok(()));
        assert!(gate.accept("pg1").is_err());
        // A lost race opens the gate again.
        gate.set_closed(false);
        assert_eq!(gate.accept("pg2"), Ok(()));
    }
}
