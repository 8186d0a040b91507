//! PostgreSQL adapter: PostgreSQL's own binaries from `bin_dir` for initdb, start, stop,
//! pg_basebackup, pg_rewind and pg_controldata; `tokio-postgres` for reading state, promoting
//! and managing replication slots.
//!
//! When `regent` runs as root, every PostgreSQL binary runs as the data directory's owner (the
//! owner of its parent, or `postgresql.os_user`): PostgreSQL refuses to run as root.
//!
//! This module holds [`Postgres`], its settings and its errors, and reads and writes LSNs. The
//! adapter's jobs have their own files: `process.rs` runs PostgreSQL's programs (as the data
//! directory's owner when regent is root) and starts and stops the postmaster; `datadir.rs`
//! classifies, initializes and moves aside the data directory and keeps the former-primary
//! marker; `files.rs` does every file operation on PostgreSQL's files (as the PostgreSQL OS
//! user when regent is root: see the module's doc); `conf.rs` writes `regent.conf`, `standby.signal` and `pg_hba.conf`; `session.rs`
//! holds the superuser session and what runs over it; `replication.rs` promotes, clones,
//! rewinds, keeps the replication slots and sets the synchronous standbys; `callbacks.rs` runs
//! the operator's scripts (`postgresql.callbacks`, `pre_promote`, `before_stop`).

pub(crate) mod callbacks;
mod conf;
mod datadir;
mod files;
mod methods;
mod probe;
mod process;
mod replication;
#[cfg(test)]
mod root_tests;
mod session;
mod standby;
mod state;
mod tls;

pub(crate) use conf::{quote_ident, quote_literal};
pub(crate) use datadir::clean_shutdown_checkpoint;
pub(crate) use probe::{ProbeTarget, Prober};
pub(crate) use replication::SlotPlan;
pub(crate) use state::PgState;

use datadir::former_primary_marker;
use nix::unistd::{Gid, Uid};
use process::resolve_os_user;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("cannot run {bin}: {source}")]
    Spawn {
        bin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{bin} failed ({status}): {stderr}")]
    Failed {
        bin: String,
        status: String,
        stderr: String,
    },
    #[error("{0}")]
    Io(String),
    /// A statement or connection failed; the text carries PostgreSQL's SQLSTATE, message,
    /// detail and hint.
    #[error("SQL: {}", sql_error_text(.0))]
    Sql(#[from] tokio_postgres::Error),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("{0}")]
    User(String),
}

type Result<T> = std::result::Result<T, PgError>;

/// What PostgreSQL said: `SQLSTATE message (DETAIL: …) (HINT: …)` for a server error (the
/// driver's own text, "db error", says nothing), else the driver's error and its cause.
pub(crate) fn sql_error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut t = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(d) = db.detail() {
            t.push_str(&format!(" (DETAIL: {d})"));
        }
        if let Some(h) = db.hint() {
            t.push_str(&format!(" (HINT: {h})"));
        }
        return t;
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

fn io(ctx: impl std::fmt::Display, e: std::io::Error) -> PgError {
    PgError::Io(format!("{ctx}: {e}"))
}

/// How to stop PostgreSQL (`pg_ctl -m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopMode {
    Fast,
    Immediate,
}

#[derive(Debug, Clone)]
pub(crate) struct Creds {
    pub(crate) user: String,
    pub(crate) password: Option<String>,
    /// More libpq connection parameters (`sslmode`, `sslrootcert`, ...), `(keyword, value)`.
    pub(crate) params: Vec<(String, String)>,
}

impl Creds {
    /// ` keyword=value` for each of [`Creds::params`], quoted for a connection string.
    pub(crate) fn conninfo_tail(&self) -> String {
        self.params
            .iter()
            .map(|(k, v)| format!(" {k}={}", conf::quote_conninfo(v)))
            .collect()
    }
}

/// Everything needed to run one PostgreSQL instance.
#[derive(Debug, Clone)]
pub(crate) struct PgSettings {
    pub(crate) name: String,
    pub(crate) scope: String,
    pub(crate) bin_dir: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) run_dir: PathBuf,
    pub(crate) listen_host: String,
    pub(crate) port: u16,
    pub(crate) superuser: Creds,
    pub(crate) replication: Creds,
    pub(crate) rewind: Option<Creds>,
    /// GUCs, already merged (defaults < bootstrap.dcs < local).
    pub(crate) parameters: BTreeMap<String, String>,
    pub(crate) pg_hba: Vec<String>,
    pub(crate) initdb: Vec<String>,
    pub(crate) os_user: Option<String>,
    /// Replica creation and bootstrap methods, `post_bootstrap`.
    pub(crate) methods: crate::config::Methods,
}

/// The OS identity PostgreSQL runs as.
#[derive(Debug, Clone)]
pub(crate) struct OsUser {
    pub(crate) name: String,
    pub(crate) uid: Uid,
    pub(crate) gid: Gid,
}

pub(crate) struct Postgres {
    pub(crate) s: PgSettings,
    user: Option<OsUser>,
    child: Mutex<Option<tokio::process::Child>>,
    session: Mutex<Option<Arc<tokio_postgres::Client>>>,
    /// `synchronous_standby_names` while primary (managed by the synchronous-mode logic).
    sync_names: std::sync::Mutex<String>,
    /// Slots of members no longer in the DCS, and since when.
    departed_slots: std::sync::Mutex<BTreeMap<String, std::time::Instant>>,
    /// The arguments of the last `configure`, so parameter changes can be applied without
    /// changing the role or the upstream.
    last_configured: std::sync::Mutex<Option<(bool, Option<Upstream>)>>,
    /// Whether the former-primary marker exists (read once at start, then kept with it).
    former_primary: std::sync::atomic::AtomicBool,
    /// Recovery parameters of a custom bootstrap's first start (`recovery_conf`).
    recovery_params: std::sync::Mutex<BTreeMap<String, String>>,
    /// The cluster's `standby_cluster` section, when it makes a standby cluster.
    standby: std::sync::Mutex<Option<crate::config::StandbyCluster>>,
}

/// An upstream to stream from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Upstream {
    pub(crate) name: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The standby cluster's remote primary (not a member): streamed from through
    /// `standby_cluster.primary_slot_name`, with its `recovery_min_apply_delay`.
    pub(crate) remote: bool,
}

impl Postgres {
    /// Resolve the OS user (when running as root) and check the binaries exist.
    pub(crate) fn new(s: PgSettings) -> Result<Postgres> {
        let user = if Uid::effective().is_root() {
            Some(resolve_os_user(&s)?)
        } else {
            None
        };
        if let Some(u) = &user {
            tracing::info!(
                user = %u.name,
                "running as root: PostgreSQL binaries will run as OS user {}",
                u.name
            );
        }
        let marker = former_primary_marker(&s);
        let pg = Postgres {
            former_primary: std::sync::atomic::AtomicBool::new(marker.exists()),
            s,
            user,
            child: Mutex::new(None),
            session: Mutex::new(None),
            sync_names: std::sync::Mutex::new(String::new()),
            departed_slots: std::sync::Mutex::new(BTreeMap::new()),
            recovery_params: std::sync::Mutex::new(BTreeMap::new()),
            standby: std::sync::Mutex::new(None),
            last_configured: std::sync::Mutex::new(None),
        };
        // The guard's files and the server log live beside the data directory (by default):
        // its missing parents are created now, as the PostgreSQL OS user.
        pg.make_data_dir_parents()?;
        Ok(pg)
    }
}

/// Parse `pg_lsn` text (`16/B374D848`) into bytes.
pub(crate) fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Format bytes as `pg_lsn` text.
pub(crate) fn format_lsn(v: u64) -> String {
    format!("{:X}/{:X}", v >> 32, v & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trip() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("nope"), None);
    }
}
