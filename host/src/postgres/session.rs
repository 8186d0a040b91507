//! The superuser session with the local server (reused, and opened again when it breaks) and
//! what runs over it: reading the server's state, a checkpoint, creating the replication
//! roles; and a one-off read of another member's received LSN.

use super::{PgState, Postgres, ProbeTarget, Result, quote_ident, quote_literal, state};

/// The role policies' SQL probes log in as.
pub(crate) const PROBE_ROLE: &str = "regent_probe";
use std::sync::Arc;
use std::time::Duration;

impl Postgres {
    /// A superuser session, reused across calls and re-established when it breaks.
    pub(crate) async fn connect(&self) -> Result<Arc<tokio_postgres::Client>> {
        let mut g = self.session.lock().await;
        if let Some(c) = g.as_ref()
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        *g = None;
        let c = Arc::new(self.new_connection().await?);
        *g = Some(c.clone());
        Ok(c)
    }

    /// The address local connections use.
    fn local_host(&self) -> String {
        if self.s.listen_host == "*" || self.s.listen_host == "0.0.0.0" {
            "127.0.0.1".to_string()
        } else {
            self.s
                .listen_host
                .split(',')
                .next()
                .unwrap_or("127.0.0.1")
                .trim()
                .to_string()
        }
    }

    /// Where the policies' SQL probes connect: the local server, as [`PROBE_ROLE`], which may
    /// only read (`pg_monitor`); never as the superuser, whose read-only transactions can still
    /// run programs (`COPY ... TO PROGRAM`), promote or end other sessions.
    pub(crate) fn probe_target(&self) -> ProbeTarget {
        ProbeTarget {
            host: self.local_host(),
            port: self.s.port,
            user: PROBE_ROLE.to_string(),
            password: self.probe_password(),
            params: self.s.superuser.params.clone(),
        }
    }

    /// The probe role's password: derived from the superuser's, so that every node of the
    /// cluster knows it without another setting (`None` when the superuser has none).
    fn probe_password(&self) -> Option<String> {
        use sha2::Digest;
        let p = self.s.superuser.password.as_ref()?;
        let mut h = sha2::Sha256::new();
        h.update(b"regent sql-probe role\0");
        h.update(p.as_bytes());
        Some(
            h.finalize()
                .iter()
                .take(20)
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }

    /// Create `role` with `attributes` and `password`, or give an existing one those: a
    /// configuration may name the same role twice (superuser and replication) or a role the
    /// data directory already has.
    async fn ensure_role(
        &self,
        c: &tokio_postgres::Client,
        role: &str,
        attributes: &str,
        password: Option<&str>,
    ) -> Result<()> {
        let exists = !c
            .query(
                "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
                &[&role],
            )
            .await?
            .is_empty();
        let password = password
            .map(|p| format!(" PASSWORD {}", quote_literal(p)))
            .unwrap_or_default();
        let verb = if exists { "ALTER" } else { "CREATE" };
        c.batch_execute(&format!(
            "{verb} ROLE {} WITH {attributes}{password}",
            quote_ident(role)
        ))
        .await?;
        Ok(())
    }

    /// The role the SQL probes log in as: it may log in, read the monitoring views and stat
    /// files in the data directory, nothing else. Created at bootstrap, and by a leader that finds it missing.
    pub(crate) async fn ensure_probe_role(&self) -> Result<()> {
        let c = self.connect().await?;
        self.ensure_role(
            &c,
            PROBE_ROLE,
            "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 5",
            self.probe_password().as_deref(),
        )
        .await?;
        // Read-only monitoring, and file metadata in the data directory for health checks
        // such as a canary file; no program, signal, promotion or file contents.
        c.batch_execute(&format!(
            "GRANT pg_monitor TO {u}; \
             GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_file(text, boolean) TO {u}; \
             GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO {u};",
            u = quote_ident(PROBE_ROLE)
        ))
        .await?;
        Ok(())
    }

    /// Connect as the superuser over TCP.
    pub(super) async fn new_connection(&self) -> Result<tokio_postgres::Client> {
        self.connection_to("postgres").await
    }

    /// A new superuser connection to the local server's database `dbname`. Its own commits
    /// (the probe role, for one) never wait for synchronous standbys: a new primary may wait
    /// for standbys that are gone until its first loop as leader, which they would hold up.
    pub(super) async fn connection_to(&self, dbname: &str) -> Result<tokio_postgres::Client> {
        let host = self.local_host();
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&host)
            .port(self.s.port)
            .user(&self.s.superuser.user)
            .dbname(dbname)
            .application_name("regent")
            .options("-c synchronous_commit=local")
            .connect_timeout(Duration::from_secs(2));
        if let Some(p) = &self.s.superuser.password {
            cfg.password(p);
        }
        super::tls::connect(&mut cfg, &self.s.superuser.params).await
    }

    /// `pg_last_wal_receive_lsn()` of another member's PostgreSQL, read live.
    pub(crate) async fn remote_received_lsn(&self, host: &str, port: u16) -> Result<Option<u64>> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(host)
            .port(port)
            .user(&self.s.superuser.user)
            .dbname("postgres")
            .application_name("regent")
            .connect_timeout(Duration::from_secs(1));
        if let Some(p) = &self.s.superuser.password {
            cfg.password(p);
        }
        let client = super::tls::connect(&mut cfg, &self.s.superuser.params).await?;
        let v: Option<i64> = client
            .query_one("SELECT (pg_last_wal_receive_lsn() - '0/0')::bigint", &[])
            .await?
            .get(0);
        Ok(v.and_then(|v| u64::try_from(v).ok()))
    }

    /// The timeline this standby replays, from `IDENTIFY_SYSTEM` over a replication connection
    /// to itself (as Patroni asks it): the one exact source. `pg_control`'s timeline lags until
    /// the next restartpoint, and the WAL receiver's is gone while it does not run.
    pub(crate) async fn replay_timeline(&self) -> Result<u32> {
        let r = &self.s.replication;
        let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        let conninfo = format!(
            "host={} port={} user={} dbname=replication replication=true connect_timeout=3{}",
            quote(&self.local_host()),
            self.s.port,
            quote(&r.user),
            r.conninfo_tail()
        );
        let out = self
            .run(
                "psql",
                &[
                    "-X".into(),
                    "-A".into(),
                    "-t".into(),
                    "-d".into(),
                    conninfo,
                    "-c".into(),
                    "IDENTIFY_SYSTEM".into(),
                ],
                r.password.as_deref(),
            )
            .await?;
        out.lines()
            .find_map(|l| l.split('|').nth(1)?.trim().parse::<u32>().ok())
            .ok_or_else(|| {
                super::PgError::Io(format!("IDENTIFY_SYSTEM gave no timeline: {}", out.trim()))
            })
    }

    pub(crate) async fn query_state(&self) -> Result<PgState> {
        let c = self.connect().await?;
        state::query(&c).await
    }

    pub(crate) async fn checkpoint(&self) -> Result<()> {
        let c = self.connect().await?;
        c.batch_execute("CHECKPOINT").await?;
        Ok(())
    }

    /// After bootstrap: the replication (and rewind) roles.
    /// The superuser with the configured password (a custom bootstrap restored roles whose
    /// passwords may differ from this configuration's).
    pub(crate) async fn ensure_superuser(&self) -> Result<()> {
        let c = self.connect().await?;
        let s = &self.s.superuser;
        self.ensure_role(&c, &s.user, "SUPERUSER LOGIN", s.password.as_deref())
            .await
    }

    pub(crate) async fn create_roles(&self) -> Result<()> {
        let c = self.connect().await?;
        let r = &self.s.replication;
        self.ensure_role(&c, &r.user, "REPLICATION LOGIN", r.password.as_deref())
            .await?;
        if let Some(rw) = &self.s.rewind
            && rw.user != self.s.superuser.user
        {
            self.ensure_role(&c, &rw.user, "LOGIN", rw.password.as_deref())
                .await?;
            c.batch_execute(&format!(
                "GRANT EXECUTE ON function pg_catalog.pg_ls_dir(text, boolean, boolean) TO {u}; \
                 GRANT EXECUTE ON function pg_catalog.pg_stat_file(text, boolean) TO {u}; \
                 GRANT EXECUTE ON function pg_catalog.pg_read_binary_file(text) TO {u}; \
                 GRANT EXECUTE ON function pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO {u};",
                u = quote_ident(&rw.user),
            ))
            .await?;
        }
        drop(c);
        self.ensure_probe_role().await
    }
}
