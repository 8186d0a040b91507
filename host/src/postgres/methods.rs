//! Patroni's named methods, carried out: creating a replica with the methods
//! `create_replica_methods` lists (pg_basebackup with `postgresql.basebackup`'s options, or a
//! command such as a backup tool's restore), bootstrapping a new cluster with a command
//! instead of initdb, and the `post_bootstrap` script. Commands run as PostgreSQL's programs
//! do (as its OS user), never through a shell. A data directory a method failed to fill is
//! emptied only when the method started on an empty one and has no `keep_data`: nothing
//! that was there before is ever deleted.

use super::conf::quote_conninfo;
use super::{PgError, Postgres, Result, Upstream};
use crate::config::{BootstrapMethod, CommandMethod, ReplicaMethod};
use std::collections::BTreeMap;
use std::process::Stdio;

impl Postgres {
    /// Create this replica's data directory from `source` (`None`: no member to copy from,
    /// only methods with `no_leader` apply), trying each method in order until one succeeds.
    /// Returns the name of the method that did.
    pub(crate) async fn create_replica(&self, source: Option<&Upstream>) -> Result<String> {
        self.create_replica_with(&self.s.methods.replica, source)
            .await
    }

    /// [`Self::create_replica`] with the methods given, in their order.
    pub(super) async fn create_replica_with(
        &self,
        methods: &[ReplicaMethod],
        source: Option<&Upstream>,
    ) -> Result<String> {
        let mut failures = Vec::new();
        for method in methods {
            let res = match method {
                ReplicaMethod::Basebackup => match source {
                    Some(up) => self.basebackup(up).await.map(|()| "basebackup".to_string()),
                    None => continue,
                },
                ReplicaMethod::Command(m) => {
                    if source.is_none() && !m.no_leader {
                        continue;
                    }
                    self.replica_command(m, source)
                        .await
                        .map(|()| m.name.clone())
                }
            };
            match res {
                Ok(name) => {
                    tracing::info!(method = %name, "replica created");
                    return Ok(name);
                }
                Err(e) => {
                    let name = match method {
                        ReplicaMethod::Basebackup => "basebackup",
                        ReplicaMethod::Command(m) => m.name.as_str(),
                    };
                    tracing::warn!(method = name, error = %e, "replica method failed; trying the next one");
                    failures.push(format!("{name}: {e}"));
                }
            }
        }
        Err(PgError::Io(if failures.is_empty() {
            "no replica method applies: none works without a member to copy from (no_leader)".into()
        } else {
            format!("every replica method failed: {}", failures.join("; "))
        }))
    }

    /// The connection string a method copies from: the replication role at `up`, without
    /// the password (it is in `PGPASSWORD`).
    pub(super) fn replication_connstring(&self, up: &Upstream) -> String {
        format!(
            "host={} port={} user={} dbname=postgres application_name={} connect_timeout=5{}",
            up.host,
            up.port,
            quote_conninfo(&self.s.replication.user),
            quote_conninfo(&self.s.name),
            self.s.replication.conninfo_tail()
        )
    }

    async fn replica_command(&self, m: &CommandMethod, source: Option<&Upstream>) -> Result<()> {
        self.make_data_dir()?;
        let was_empty = self.data_dir_is_empty();
        let mut argv = m.argv.clone();
        argv.extend(m.extra.iter().map(|(k, v)| format!("--{k}={v}")));
        if !m.no_params {
            argv.push(format!("--scope={}", self.s.scope));
            argv.push("--role=replica".into());
            argv.push(format!("--datadir={}", self.s.data_dir.display()));
            argv.push(format!(
                "--connstring={}",
                source
                    .map(|u| self.replication_connstring(u))
                    .unwrap_or_default()
            ));
        }
        let res = self
            .run_argv(&argv, self.s.replication.password.as_deref(), &[])
            .await;
        if res.is_err() && was_empty && !m.keep_data {
            // What the failed method wrote, and nothing else: it started on an empty directory.
            self.clear_data_dir();
        }
        res?;
        self.set_former_primary(false)
    }

    /// Create a new cluster's data directory with `m`'s command instead of initdb, then set
    /// up what PostgreSQL's first start needs: our pg_hba, and recovery as the method says
    /// (the settings and `recovery.signal` the command left, or `recovery_conf`, or none).
    pub(crate) async fn custom_bootstrap(&self, m: &BootstrapMethod) -> Result<()> {
        self.make_data_dir()?;
        let mut argv = m.argv.clone();
        if !m.no_params {
            argv.push(format!("--scope={}", self.s.scope));
            argv.push(format!("--datadir={}", self.s.data_dir.display()));
        }
        argv.extend(m.extra.iter().map(|(k, v)| format!("--{k}={v}")));
        tracing::info!(method = %m.name, command = ?m.argv, "running the custom bootstrap command");
        self.run_argv(&argv, None, &[]).await?;
        if !self.s.data_dir.join("PG_VERSION").is_file() {
            return Err(PgError::Io(format!(
                "bootstrap method {} exited 0 but left no PostgreSQL data directory in {}",
                m.name,
                self.s.data_dir.display()
            )));
        }
        self.set_former_primary(false)?;
        self.write_hba()?;
        let recovery_signal = self.s.data_dir.join("recovery.signal");
        if !m.recovery_conf.is_empty() {
            self.set_recovery_params(m.recovery_conf.clone());
            self.write_owned(&recovery_signal, "")?;
        } else if !m.keep_existing_recovery_conf {
            self.remove_owned(&recovery_signal)?;
        }
        Ok(())
    }

    /// Recovery parameters for the first start after a custom bootstrap (written into
    /// `regent.conf` by [`Postgres::configure`] until cleared).
    pub(crate) fn set_recovery_params(&self, params: BTreeMap<String, String>) {
        if let Ok(mut g) = self.recovery_params.lock() {
            *g = params;
        }
    }

    /// Wait until PostgreSQL, started on a custom bootstrap's data, has finished recovery
    /// and runs as a primary (a restore to a target with `recovery_target_action: promote`,
    /// or no recovery at all). Logs every 30 s while it waits; a recovery that pauses at its
    /// target waits for an operator's `pg_wal_replay_resume()` / `pg_promote()`.
    pub(crate) async fn wait_recovery_end(&self) -> Result<()> {
        let started = std::time::Instant::now();
        let mut told = std::time::Duration::ZERO;
        loop {
            let c = self.connect().await?;
            let in_recovery: bool = c.query_one("SELECT pg_is_in_recovery()", &[]).await?.get(0);
            if !in_recovery {
                return Ok(());
            }
            if started.elapsed() >= told {
                tracing::info!(
                    waited_s = started.elapsed().as_secs(),
                    "waiting for the end of recovery after the custom bootstrap"
                );
                told += std::time::Duration::from_secs(30);
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    /// Run `post_bootstrap` (if configured) with the superuser's connection string as its
    /// last argument; a non-zero exit fails the bootstrap.
    pub(crate) async fn post_bootstrap(&self) -> Result<()> {
        let Some(cmd) = &self.s.methods.post_bootstrap else {
            return Ok(());
        };
        let mut argv = cmd.clone();
        argv.push(format!(
            "host={} port={} user={} dbname=postgres{}",
            quote_conninfo(&self.s.run_dir.display().to_string()),
            self.s.port,
            quote_conninfo(&self.s.superuser.user),
            self.s.superuser.conninfo_tail()
        ));
        tracing::info!(command = ?cmd, "running post_bootstrap");
        self.run_argv(
            &argv,
            self.s.superuser.password.as_deref(),
            &[(
                "PGOPTIONS",
                "-c synchronous_commit=local -c statement_timeout=0",
            )],
        )
        .await
        .map(|_| ())
    }

    /// Run `argv` as PostgreSQL's programs run, with `PGPASSWORD` when given; its output is
    /// logged, and a non-zero exit is an error with its last lines.
    async fn run_argv(
        &self,
        argv: &[String],
        password: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<String> {
        let Some((prog, args)) = argv.split_first() else {
            return Err(PgError::Io("empty command".into()));
        };
        let mut c = self.program(prog);
        c.args(args).stdin(Stdio::null());
        if let Some(p) = password {
            c.env("PGPASSWORD", p);
        }
        for (k, v) in env {
            c.env(k, v);
        }
        tracing::debug!(?argv, "running");
        let out = c.output().await.map_err(|source| PgError::Spawn {
            bin: prog.clone(),
            source,
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        for line in stdout.lines().chain(stderr.lines()).take(200) {
            tracing::info!(program = %prog, "{line}");
        }
        if out.status.success() {
            Ok(stdout.into_owned())
        } else {
            Err(PgError::Failed {
                bin: prog.clone(),
                status: out.status.to_string(),
                stderr: stderr
                    .trim()
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .join(" | "),
            })
        }
    }
}
