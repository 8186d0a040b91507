//! Replication: promoting a replica, the synchronous standbys, the primary's physical slots,
//! cloning with pg_basebackup, and pg_rewind (after single-user crash recovery). Writes only
//! inside the data directory; a failed clone empties the directory it had just filled.

use super::conf::quote_conninfo;
use super::{PgError, Postgres, Result, Upstream};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

/// The physical slots a node keeps (see [`Postgres::sync_slots`]).
#[derive(Debug, Clone)]
pub(crate) struct SlotPlan {
    /// The slots wanted, each with the position to advance it to while it is idle and behind.
    pub(crate) want: Vec<(String, Option<u64>)>,
    /// `ignore_slots`: never dropped.
    pub(crate) ignore: Vec<crate::config::IgnoreSlot>,
    /// `member_slots_ttl`: how long an unwanted inactive slot is kept.
    pub(crate) retention: Duration,
}

impl Postgres {
    /// The `synchronous_standby_names` the next start as primary writes, set before
    /// [`Postgres::configure`]; the running server is not touched.
    pub(crate) fn preset_sync_standbys(&self, standbys: &crate::ha::sync::Standbys) {
        if let Ok(mut g) = self.sync_names.lock() {
            *g = standbys.setting();
        }
    }

    /// Set `synchronous_standby_names` on the running primary (rewrites regent.conf, reloads).
    pub(crate) fn set_sync_standbys(&self, standbys: &crate::ha::sync::Standbys) -> Result<()> {
        let value = standbys.setting();
        if let Ok(mut g) = self.sync_names.lock() {
            if *g == value {
                return Ok(());
            }
            *g = value.clone();
        }
        tracing::info!(synchronous_standby_names = %value, "changing the synchronous standbys");
        self.configure(false, None)?;
        self.reload()
    }

    /// Before a promotion: set `synchronous_standby_names` on the replica (it has no effect
    /// before the promotion; the replication settings stay), reload, and wait until the server
    /// reports it, so that the new primary's first commit already waits for the standbys the
    /// `sync` key needs (quorum commit counts on it).
    pub(crate) async fn preset_sync_for_promotion(
        &self,
        standbys: &crate::ha::sync::Standbys,
    ) -> Result<()> {
        let value = standbys.setting();
        let last = self.last_configured.lock().ok().and_then(|g| g.clone());
        let (standby, upstream) = last.unwrap_or((true, None));
        self.configure_with(standby, upstream.as_ref(), Some(&value))?;
        self.reload()?;
        let c = self.connect().await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now: String = c
                .query_one("SELECT current_setting('synchronous_standby_names')", &[])
                .await?
                .get(0);
            if now == value {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(PgError::Timeout(format!(
                    "synchronous_standby_names is still {now:?} 5 s after it was set to {value:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn promote(&self) -> Result<()> {
        let c = self.connect().await?;
        c.query_one("SELECT pg_promote(false)", &[]).await?;
        // pg_promote(wait => true) polls every 100 ms; poll faster ourselves.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let in_recovery: bool = c.query_one("SELECT pg_is_in_recovery()", &[]).await?.get(0);
            if !in_recovery {
                return self.set_former_primary(false);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(PgError::Timeout("promotion did not finish in 60 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Keep the physical slots of `plan` ([`SlotPlan`]): create the missing ones, advance an
    /// idle one that has a target (a member cascading elsewhere, a permanent slot on a
    /// replica) while it is behind, and drop an inactive slot nobody wants any more once it
    /// has been unwanted for `plan.retention` (a replica restarting slowly must not lose the
    /// WAL it needs), unless `ignore_slots` matches it. Returns every physical slot's restart
    /// LSN.
    pub(crate) async fn sync_slots(&self, plan: &SlotPlan) -> Result<BTreeMap<String, u64>> {
        let c = self.connect().await?;
        let want: Vec<&str> = plan.want.iter().map(|(n, _)| n.as_str()).collect();
        let have = physical_slots(&c).await?;
        for w in &want {
            if !have.iter().any(|(n, _, _)| n == w) {
                c.execute("SELECT pg_create_physical_replication_slot($1, true)", &[w])
                    .await?;
                tracing::info!(slot = %w, "created replication slot");
            }
        }
        let mut advanced = false;
        for (w, target) in &plan.want {
            let Some(target) = *target else { continue };
            let idle_behind = have.iter().any(|(n, active, lsn)| {
                n == w && !active && lsn.is_some_and(|l| u64::try_from(l).is_ok_and(|l| l < target))
            });
            if idle_behind {
                let to = super::format_lsn(target);
                advanced = true;
                match c
                    .execute(
                        "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
                        &[w, &to],
                    )
                    .await
                {
                    Ok(_) => tracing::debug!(slot = %w, lsn = %to, "advanced the slot"),
                    // Past what this server has (a lagging replica): the next loop tries again.
                    Err(e) => {
                        tracing::debug!(slot = %w, error = %PgError::from(e), "could not advance the slot")
                    }
                }
            }
        }
        let have = if advanced {
            physical_slots(&c).await?
        } else {
            have
        };
        let now = std::time::Instant::now();
        let mut gone = self
            .departed_slots
            .lock()
            .map_err(|_| PgError::Io("slot bookkeeping lock poisoned".into()))?
            .clone();
        gone.retain(|n, _| !want.contains(&n.as_str()));
        let mut out = BTreeMap::new();
        for (n, active, lsn) in &have {
            let lsn = lsn.and_then(|l| u64::try_from(l).ok());
            if want.contains(&n.as_str()) || plan.ignore.iter().any(|i| i.matches_physical(n)) {
                if let Some(l) = lsn {
                    out.insert(n.clone(), l);
                }
                continue;
            }
            let since = *gone.entry(n.clone()).or_insert(now);
            if !active && now.duration_since(since) >= plan.retention {
                c.execute("SELECT pg_drop_replication_slot($1)", &[n])
                    .await?;
                gone.remove(n);
                tracing::info!(slot = %n, retention_s = plan.retention.as_secs(), "dropped a replication slot nobody needs (member_slots_ttl passed)");
            } else if let Some(l) = lsn {
                out.insert(n.clone(), l);
            }
        }
        gone.retain(|n, _| have.iter().any(|(h, _, _)| h == n));
        if let Ok(mut g) = self.departed_slots.lock() {
            *g = gone;
        }
        Ok(out)
    }

    /// Create the permanent logical slots `(name, database, plugin)` the primary lacks (each
    /// in its database), and return every logical slot's confirmed flush position. Regent never
    /// drops a logical slot.
    pub(crate) async fn ensure_logical_slots(
        &self,
        slots: &[(String, String, String)],
    ) -> Result<BTreeMap<String, u64>> {
        let c = self.connect().await?;
        let rows = c
            .query(
                "SELECT slot_name::text, (confirmed_flush_lsn - '0/0')::bigint \
                 FROM pg_replication_slots WHERE slot_type = 'logical'",
                &[],
            )
            .await?;
        let mut out: BTreeMap<String, u64> = rows
            .iter()
            .filter_map(|r| {
                let lsn: Option<i64> = r.get(1);
                Some((r.get(0), u64::try_from(lsn?).ok()?))
            })
            .collect();
        let present: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        for (name, db, plugin) in slots {
            if present.contains(name) {
                continue;
            }
            let db_conn = self.connection_to(db).await?;
            let row = db_conn
                .query_one(
                    "SELECT (lsn - '0/0')::bigint FROM pg_create_logical_replication_slot($1, $2)",
                    &[name, plugin],
                )
                .await?;
            let lsn: Option<i64> = row.get(0);
            tracing::info!(slot = %name, database = %db, plugin = %plugin, "created permanent logical slot");
            if let Some(l) = lsn.and_then(|l| u64::try_from(l).ok()) {
                out.insert(name.clone(), l);
            }
        }
        Ok(out)
    }

    /// Clone from `source` with pg_basebackup into the (empty) data directory.
    pub(crate) async fn basebackup(&self, source: &Upstream) -> Result<()> {
        self.make_data_dir()?;
        // pg_basebackup ignores the connection string's dbname.
        let mut args = vec![
            "-D".to_string(),
            self.s.data_dir.display().to_string(),
            "-X".into(),
            "stream".into(),
            "-c".into(),
            "fast".into(),
            "-d".into(),
            self.replication_connstring(source),
        ];
        args.extend(self.s.methods.basebackup_options.iter().cloned());
        let res = self
            .run(
                "pg_basebackup",
                &args,
                self.s.replication.password.as_deref(),
            )
            .await;
        if res.is_err() {
            // A half-written clone is useless and was created by us just now: empty it so the
            // next attempt starts clean (it never contained anything else).
            self.clear_data_dir();
        }
        res?;
        self.set_former_primary(false)
    }

    /// Bring an unclean former primary to a clean shutdown with single-user crash recovery.
    pub(crate) async fn crash_recover(&self) -> Result<()> {
        let cd = self.controldata().await?;
        let state = cd
            .get("Database cluster state")
            .cloned()
            .unwrap_or_default();
        if state == "shut down" || state == "shut down in recovery" {
            return Ok(());
        }
        tracing::info!(%state, "running crash recovery in single-user mode before pg_rewind");
        let mut c = self.command("postgres");
        c.arg("--single")
            .arg("-D")
            .arg(&self.s.data_dir)
            .arg("-c")
            .arg("archive_mode=off")
            .arg("postgres")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let out = c.output().await.map_err(|source| PgError::Spawn {
            bin: "postgres --single".into(),
            source,
        })?;
        if !out.status.success() {
            return Err(PgError::Failed {
                bin: "postgres --single".into(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(())
    }

    /// pg_rewind from the leader.
    pub(crate) async fn rewind(&self, source: &Upstream) -> Result<()> {
        self.crash_recover().await?;
        let creds = self.s.rewind.clone().unwrap_or(self.s.superuser.clone());
        let args = vec![
            format!("--target-pgdata={}", self.s.data_dir.display()),
            format!(
                "--source-server=host={} port={} user={} dbname=postgres connect_timeout=5{}",
                source.host,
                source.port,
                quote_conninfo(&creds.user),
                creds.conninfo_tail()
            ),
        ];
        let out = self
            .run("pg_rewind", &args, creds.password.as_deref())
            .await?;
        tracing::info!(output = %out.trim().replace('\n', " | "), "pg_rewind finished");
        Ok(())
    }
}

/// Every non-temporary physical slot: name, active, restart LSN.
async fn physical_slots(c: &tokio_postgres::Client) -> Result<Vec<(String, bool, Option<i64>)>> {
    Ok(c.query(
        "SELECT slot_name::text, active, (restart_lsn - '0/0')::bigint \
         FROM pg_replication_slots WHERE slot_type = 'physical' AND NOT temporary",
        &[],
    )
    .await?
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect())
}
