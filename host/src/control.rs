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
}

/// The HA loop's end.
pub(crate) type ControlReceiver = mpsc::Receiver<Envelope>;

/// A connected pair.
pub fn channel() -> (ControlHandle, ControlReceiver) {
    let (tx, rx) = mpsc::channel(16);
    (ControlHandle { tx }, rx)
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

    /// Fire and forget (no answer awaited), e.g. [`Command::Wake`].
    pub(crate) fn notify(&self, command: Command) {
        let (tx, _rx) = oneshot::channel();
        let _ = self.tx.try_send((command, tx));
    }
}
