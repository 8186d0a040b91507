//! Reading the running PostgreSQL's state in one query.

use super::Result;

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ReplicationRow {
    pub(crate) usename: String,
    pub(crate) application_name: String,
    pub(crate) client_addr: Option<String>,
    pub(crate) state: String,
    pub(crate) sync_state: String,
    pub(crate) sync_priority: i32,
    pub(crate) flush_lsn: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PgState {
    pub(crate) in_recovery: bool,
    pub(crate) timeline: Option<u32>,
    /// Primary: `pg_current_wal_flush_lsn()`.
    pub(crate) flush_lsn: Option<u64>,
    pub(crate) received_lsn: Option<u64>,
    pub(crate) replayed_lsn: Option<u64>,
    pub(crate) replayed_timestamp: Option<String>,
    pub(crate) replay_paused: bool,
    /// `streaming` when a WAL receiver is active.
    pub(crate) receiver_status: Option<String>,
    pub(crate) latest_end_lsn: Option<u64>,
    pub(crate) postmaster_start_time: Option<String>,
    pub(crate) server_version: u32,
    /// Primary, when a walsender reports `sync`: `pg_current_wal_flush_lsn()` read after the
    /// walsenders (`replication`), so it is no older than their `sync_state`: every commit
    /// acknowledged before a standby was seen as `sync` is at or below it.
    pub(crate) flush_lsn_after_walsenders: Option<u64>,
    pub(crate) replication: Vec<ReplicationRow>,
    /// `synchronous_standby_names` as the server reports it.
    pub(crate) synchronous_standby_names: String,
    /// Settings changed in the configuration that take effect only after a restart:
    /// `(name, the value the server runs with)`.
    pub(crate) pending_restart: Vec<(String, String)>,
}

impl PgState {
    /// Patroni's "last operation": flush LSN on a primary, max(received, replayed) on a replica.
    pub(crate) fn wal_position(&self) -> Option<u64> {
        if self.in_recovery {
            self.received_lsn.max(self.replayed_lsn)
        } else {
            self.flush_lsn
        }
    }
}

const STATE_SQL: &str = "\
SELECT pg_is_in_recovery(),
  CASE WHEN pg_is_in_recovery() THEN NULL ELSE (pg_current_wal_flush_lsn() - '0/0')::bigint END,
  (pg_last_wal_receive_lsn() - '0/0')::bigint,
  (pg_last_wal_replay_lsn() - '0/0')::bigint,
  to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00:00',
  CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END,
  CASE WHEN pg_is_in_recovery()
       THEN COALESCE((SELECT received_tli FROM pg_stat_wal_receiver), (pg_control_checkpoint()).timeline_id)
       ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
  (SELECT status FROM pg_stat_wal_receiver),
  (SELECT (latest_end_lsn - '0/0')::bigint FROM pg_stat_wal_receiver),
  to_char(pg_postmaster_start_time() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00:00',
  current_setting('server_version_num')::int,
  current_setting('synchronous_standby_names')";

const PENDING_SQL: &str = "SELECT name, setting FROM pg_settings WHERE pending_restart";

const REPL_SQL: &str = "\
SELECT usename::text, application_name, client_addr::text, state, sync_state, sync_priority,
  (flush_lsn - '0/0')::bigint
FROM pg_stat_replication";

const FLUSH_SQL: &str = "\
SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE (pg_current_wal_flush_lsn() - '0/0')::bigint END";

fn lsn(v: Option<i64>) -> Option<u64> {
    v.and_then(|v| u64::try_from(v).ok())
}

pub(crate) async fn query(c: &tokio_postgres::Client) -> Result<PgState> {
    let r = c.query_one(STATE_SQL, &[]).await?;
    let tl: Option<i32> = r.get(6);
    let mut st = PgState {
        in_recovery: r.get(0),
        flush_lsn: lsn(r.get(1)),
        received_lsn: lsn(r.get(2)),
        replayed_lsn: lsn(r.get(3)),
        replayed_timestamp: r.get(4),
        replay_paused: r.get(5),
        timeline: tl.and_then(|t| u32::try_from(t).ok()),
        receiver_status: r.get(7),
        latest_end_lsn: lsn(r.get(8)),
        postmaster_start_time: r.get(9),
        server_version: u32::try_from(r.get::<_, i32>(10)).unwrap_or(0),
        replication: Vec::new(),
        synchronous_standby_names: r.get::<_, Option<String>>(11).unwrap_or_default(),
        pending_restart: Vec::new(),
        flush_lsn_after_walsenders: None,
    };
    for row in c.query(PENDING_SQL, &[]).await? {
        st.pending_restart.push((
            row.get::<_, Option<String>>(0).unwrap_or_default(),
            row.get::<_, Option<String>>(1).unwrap_or_default(),
        ));
    }
    for row in c.query(REPL_SQL, &[]).await? {
        st.replication.push(ReplicationRow {
            usename: row.get::<_, Option<String>>(0).unwrap_or_default(),
            application_name: row.get::<_, Option<String>>(1).unwrap_or_default(),
            client_addr: row.get(2),
            state: row.get::<_, Option<String>>(3).unwrap_or_default(),
            sync_state: row.get::<_, Option<String>>(4).unwrap_or_default(),
            sync_priority: row.get::<_, Option<i32>>(5).unwrap_or(0),
            flush_lsn: lsn(row.get(6)),
        });
    }
    // Only a standby seen as `sync` (or `quorum`) can be published against it: otherwise save
    // the query.
    if !st.in_recovery
        && st
            .replication
            .iter()
            .any(|r| matches!(r.sync_state.as_str(), "sync" | "quorum"))
    {
        let r = c.query_one(FLUSH_SQL, &[]).await?;
        st.flush_lsn_after_walsenders = lsn(r.get(0));
    }
    Ok(st)
}
