//! PostgreSQL adapter: PostgreSQL's own binaries from `bin_dir` for initdb, start, stop,
//! pg_basebackup, pg_rewind and pg_controldata; `tokio-postgres` for reading state, promoting
//! and managing replication slots.
//!
//! When `regent` runs as root, every PostgreSQL binary runs as the data directory's owner (the
//! owner of its parent, or `postgresql.os_user`): PostgreSQL refuses to run as root.

mod probe;
mod state;

pub use probe::{ProbeTarget, Prober};
pub use state::{PgState, ReplicationRow};

use crate::ha::DataDir;
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Gid, Pid, Uid, User};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Command;
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
    #[error("SQL: {0}")]
    Sql(#[from] tokio_postgres::Error),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("{0}")]
    User(String),
}

type Result<T> = std::result::Result<T, PgError>;

fn io(ctx: impl std::fmt::Display, e: std::io::Error) -> PgError {
    PgError::Io(format!("{ctx}: {e}"))
}

/// How to stop PostgreSQL (`pg_ctl -m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    Fast,
    Immediate,
}

#[derive(Debug, Clone)]
pub struct Creds {
    pub user: String,
    pub password: Option<String>,
}

/// Everything needed to run one PostgreSQL instance.
#[derive(Debug, Clone)]
pub struct PgSettings {
    pub name: String,
    pub scope: String,
    pub bin_dir: PathBuf,
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    pub listen_host: String,
    pub port: u16,
    pub superuser: Creds,
    pub replication: Creds,
    pub rewind: Option<Creds>,
    /// GUCs, already merged (defaults < bootstrap.dcs < local).
    pub parameters: BTreeMap<String, String>,
    pub pg_hba: Vec<String>,
    pub initdb: Vec<String>,
    pub os_user: Option<String>,
}

/// The OS identity PostgreSQL runs as.
#[derive(Debug, Clone)]
pub struct OsUser {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
}

pub struct Postgres {
    pub s: PgSettings,
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
}

/// How long the slot of a member that left the DCS is kept (Patroni's `member_slots_ttl`).
pub const MEMBER_SLOT_RETENTION: Duration = Duration::from_secs(30 * 60);

/// An upstream to stream from.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: String,
    pub host: String,
    pub port: u16,
}

const REGENT_CONF: &str = "regent.conf";
const UPSTREAM_MARK: &str = "# regent-upstream: ";

impl Postgres {
    /// Resolve the OS user (when running as root) and check the binaries exist.
    pub fn new(s: PgSettings) -> Result<Postgres> {
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
        Ok(Postgres {
            former_primary: std::sync::atomic::AtomicBool::new(marker.exists()),
            s,
            user,
            child: Mutex::new(None),
            session: Mutex::new(None),
            sync_names: std::sync::Mutex::new(String::new()),
            departed_slots: std::sync::Mutex::new(BTreeMap::new()),
            last_configured: std::sync::Mutex::new(None),
        })
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.s.bin_dir.join(name)
    }

    fn command(&self, bin: &str) -> Command {
        let mut c = Command::new(self.bin(bin));
        if let Some(u) = &self.user {
            c.uid(u.uid.as_raw()).gid(u.gid.as_raw());
            c.env("HOME", &self.s.run_dir);
            c.env("USER", &u.name);
        }
        c.current_dir(&self.s.run_dir);
        c.env_remove("PGDATA").env("LC_ALL", "C.UTF-8");
        c.kill_on_drop(false);
        c
    }

    async fn run(&self, bin: &str, args: &[String], password: Option<&str>) -> Result<String> {
        let mut c = self.command(bin);
        c.args(args).stdin(Stdio::null());
        if let Some(p) = password {
            c.env("PGPASSWORD", p);
        }
        tracing::debug!(bin, ?args, "running");
        let out = c.output().await.map_err(|source| PgError::Spawn {
            bin: self.bin(bin).display().to_string(),
            source,
        })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr))
        } else {
            Err(PgError::Failed {
                bin: bin.to_string(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join(" | "),
            })
        }
    }

    fn chown(&self, path: &Path) -> Result<()> {
        if let Some(u) = &self.user {
            nix::unistd::chown(path, Some(u.uid), Some(u.gid))
                .map_err(|e| PgError::Io(format!("chown {}: {e}", path.display())))?;
        }
        Ok(())
    }

    fn write_owned(&self, path: &Path, contents: &str) -> Result<()> {
        let tmp = path.with_extension("regent-tmp");
        std::fs::write(&tmp, contents).map_err(|e| io(format!("write {}", tmp.display()), e))?;
        self.chown(&tmp)?;
        std::fs::rename(&tmp, path).map_err(|e| io(format!("rename {}", path.display()), e))
    }

    /// Classify the data directory without changing it.
    pub async fn data_dir_state(&self) -> DataDir {
        let d = &self.s.data_dir;
        let empty = match std::fs::read_dir(d) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return DataDir::Unusable(format!("cannot read {}: {e}", d.display())),
            Ok(mut it) => it.next().is_none(),
        };
        if empty {
            return DataDir::Empty;
        }
        if !d.join("PG_VERSION").exists() || !d.join("global/pg_control").exists() {
            return DataDir::Unusable(format!(
                "{} is not empty and is not a PostgreSQL data directory; move it away or point postgresql.data_dir elsewhere",
                d.display()
            ));
        }
        match self.controldata().await {
            Ok(cd) => {
                let state = cd
                    .get("Database cluster state")
                    .cloned()
                    .unwrap_or_default();
                DataDir::Initialized {
                    sysid: cd
                        .get("Database system identifier")
                        .cloned()
                        .unwrap_or_default(),
                    was_primary: matches!(
                        state.as_str(),
                        "in production" | "shut down" | "shutting down" | "in crash recovery"
                    ) && !d.join("standby.signal").exists(),
                }
            }
            Err(e) => DataDir::Unusable(format!("pg_controldata failed on {}: {e}", d.display())),
        }
    }

    pub async fn controldata(&self) -> Result<BTreeMap<String, String>> {
        let out = self
            .run(
                "pg_controldata",
                &[self.s.data_dir.display().to_string()],
                None,
            )
            .await?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim().to_string(), v.trim().to_string()))
            })
            .collect())
    }

    /// The postmaster's pid if it is alive.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.s.data_dir.join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        if pid <= 0 {
            return None;
        }
        match kill(Pid::from_raw(pid), None) {
            Ok(()) => Some(pid),
            Err(_) => None,
        }
    }

    /// Reap our child if it exited (keeps zombies from looking alive).
    pub async fn reap(&self) {
        let mut g = self.child.lock().await;
        if let Some(c) = g.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            tracing::warn!(%status, "postgres exited");
            *g = None;
        }
    }

    pub async fn is_running(&self) -> bool {
        self.reap().await;
        self.postmaster_pid().is_some()
    }

    /// initdb with the configured options, then pg_hba and the superuser password.
    pub async fn initdb(&self) -> Result<()> {
        std::fs::create_dir_all(&self.s.data_dir)
            .map_err(|e| io(format!("create {}", self.s.data_dir.display()), e))?;
        self.chown(&self.s.data_dir)?;
        std::fs::set_permissions(&self.s.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("chmod data_dir", e))?;
        let pwfile = self.s.run_dir.join(format!(".{}-pwfile", self.s.name));
        let mut args = vec![
            "-D".to_string(),
            self.s.data_dir.display().to_string(),
            "-U".to_string(),
            self.s.superuser.user.clone(),
        ];
        if let Some(p) = &self.s.superuser.password {
            self.write_owned(&pwfile, p)?;
            args.push(format!("--pwfile={}", pwfile.display()));
        }
        args.extend(self.s.initdb.iter().cloned());
        let res = self.run("initdb", &args, None).await;
        let _ = std::fs::remove_file(&pwfile);
        res?;
        // A new data directory has no past.
        self.set_former_primary(false)?;
        self.write_hba()?;
        Ok(())
    }

    fn write_hba(&self) -> Result<()> {
        if self.s.pg_hba.is_empty() {
            return Ok(());
        }
        let mut text = String::from("# Managed by regent (postgresql.pg_hba)\n");
        for l in &self.s.pg_hba {
            text.push_str(l);
            text.push('\n');
        }
        self.write_owned(&self.s.data_dir.join("pg_hba.conf"), &text)
    }

    /// Whether the data directory may have diverged from another leader (see
    /// [`crate::ha::PgView::former_primary`]).
    pub fn former_primary(&self) -> bool {
        self.former_primary
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Set or clear the former-primary marker. What gives the node a data directory without a
    /// diverged past (initdb, a clone, a promotion, moving it aside) clears it itself; after a
    /// rewind the caller clears it (a failure to do so must not count as a failed rewind).
    pub fn set_former_primary(&self, on: bool) -> Result<()> {
        let path = former_primary_marker(&self.s);
        if on {
            std::fs::write(&path, self.s.data_dir.display().to_string())
                .map_err(|e| io(format!("write {}", path.display()), e))?;
        } else if path.exists() {
            std::fs::remove_file(&path).map_err(|e| io(format!("remove {}", path.display()), e))?;
        }
        self.former_primary
            .store(on, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Write `regent.conf` (our GUCs, plus primary_conninfo for a replica), make
    /// postgresql.conf include it, and create or remove `standby.signal`.
    pub fn configure(&self, standby: bool, upstream: Option<&Upstream>) -> Result<()> {
        if let Ok(mut g) = self.last_configured.lock() {
            *g = Some((standby, upstream.cloned()));
        }
        let mut text = String::from(
            "# Managed by regent: rewritten before every start. Edit the regent config instead.\n",
        );
        let mut params = self.s.parameters.clone();
        params.insert("listen_addresses".into(), self.s.listen_host.clone());
        params.insert("port".into(), self.s.port.to_string());
        params.insert("cluster_name".into(), self.s.scope.clone());
        params.insert("hot_standby".into(), "on".into());
        let sock = self.s.run_dir.display().to_string();
        params
            .entry("unix_socket_directories".into())
            .or_insert(if sock.len() < 90 { sock } else { String::new() });
        if standby && let Ok(mut g) = self.sync_names.lock() {
            // A replica waits for nobody; after a promotion the leader sets it afresh.
            g.clear();
        }
        params.insert(
            "synchronous_standby_names".into(),
            if standby {
                String::new()
            } else {
                self.sync_names
                    .lock()
                    .map(|g| g.clone())
                    .unwrap_or_default()
            },
        );
        if standby {
            params.insert("recovery_target_timeline".into(), "latest".into());
            if let Some(u) = upstream {
                let mut ci = format!(
                    "host={} port={} user={} application_name={} connect_timeout=3",
                    u.host,
                    u.port,
                    quote_conninfo(&self.s.replication.user),
                    quote_conninfo(&self.s.name)
                );
                if let Some(p) = &self.s.replication.password {
                    ci.push_str(&format!(" password={}", quote_conninfo(p)));
                }
                params.insert("primary_conninfo".into(), ci);
                params.insert(
                    "primary_slot_name".into(),
                    crate::dcs::slot_name(&self.s.name),
                );
                text.push_str(&format!("{UPSTREAM_MARK}{}\n", u.name));
            } else {
                params.insert("primary_conninfo".into(), String::new());
                params.insert("primary_slot_name".into(), String::new());
            }
        }
        for (k, v) in &params {
            text.push_str(&format!("{k} = '{}'\n", v.replace('\'', "''")));
        }
        self.write_owned(&self.s.data_dir.join(REGENT_CONF), &text)?;
        let main = self.s.data_dir.join("postgresql.conf");
        let existing = std::fs::read_to_string(&main).unwrap_or_default();
        let include = format!("include_if_exists = '{REGENT_CONF}'");
        if !existing.lines().any(|l| l.trim() == include) {
            self.write_owned(&main, &format!("{existing}\n{include}\n"))?;
        }
        let signal = self.s.data_dir.join("standby.signal");
        if standby {
            self.write_owned(&signal, "")?;
        } else if signal.exists() {
            std::fs::remove_file(&signal).map_err(|e| io("remove standby.signal", e))?;
        }
        Ok(())
    }

    /// Replace the GUCs (after a change of the cluster's or the local configuration) and
    /// rewrite `regent.conf` with the role and upstream of the last `configure`, then reload a
    /// running server. Returns whether anything changed. Settings that need a restart show up
    /// as pending (`PgState::pending_restart`).
    pub fn set_parameters(&mut self, parameters: BTreeMap<String, String>) -> Result<bool> {
        if self.s.parameters == parameters {
            return Ok(false);
        }
        self.s.parameters = parameters;
        let last = self.last_configured.lock().ok().and_then(|g| g.clone());
        if let Some((standby, upstream)) = last {
            self.configure(standby, upstream.as_ref())?;
            self.reload()?;
        }
        Ok(true)
    }

    /// The `synchronous_standby_names` the next start as primary writes, set before
    /// [`Postgres::configure`]; the running server is not touched.
    pub fn preset_sync_standbys(&self, standbys: &crate::ha::sync::Standbys) {
        if let Ok(mut g) = self.sync_names.lock() {
            *g = standbys.setting();
        }
    }

    /// Set `synchronous_standby_names` on the running primary (rewrites regent.conf, reloads).
    pub fn set_sync_standbys(&self, standbys: &crate::ha::sync::Standbys) -> Result<()> {
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

    /// The upstream written into regent.conf, if any.
    pub fn configured_upstream(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.s.data_dir.join(REGENT_CONF)).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(UPSTREAM_MARK))
            .map(|s| s.trim().to_string())
    }

    fn log_path(&self) -> PathBuf {
        self.s
            .run_dir
            .join(format!("{}-postgresql.log", self.s.name))
    }

    /// Start the postmaster as our child (same process group) and wait up to `patience` for it
    /// to accept connections. `Ok(false)`: still starting (crash recovery, or a replica
    /// reaching consistency); the HA loop goes on and looks again next time.
    pub async fn start(&self, patience: Duration) -> Result<bool> {
        if self.is_running().await {
            return Ok(self.new_connection().await.is_ok());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| io(format!("open {}", self.log_path().display()), e))?;
        self.chown(&self.log_path())?;
        let log2 = log.try_clone().map_err(|e| io("dup log", e))?;
        let mut c = self.command("postgres");
        c.arg("-D")
            .arg(&self.s.data_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = c.spawn().map_err(|source| PgError::Spawn {
            bin: self.bin("postgres").display().to_string(),
            source,
        })?;
        *self.child.lock().await = Some(child);
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if self.new_connection().await.is_ok() {
                return Ok(true);
            }
            {
                let mut g = self.child.lock().await;
                if let Some(ch) = g.as_mut()
                    && let Ok(Some(status)) = ch.try_wait()
                {
                    *g = None;
                    return Err(PgError::Failed {
                        bin: "postgres".into(),
                        status: status.to_string(),
                        stderr: format!("see {}", self.log_path().display()),
                    });
                }
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::info!(
                    log = %self.log_path().display(),
                    "PostgreSQL is still starting"
                );
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Signal the postmaster and wait for it to go away; escalate to SIGKILL of the postmaster
    /// and its children after `timeout`.
    pub async fn stop(&self, mode: StopMode, timeout: Duration) -> Result<()> {
        let Some(pid) = self.postmaster_pid() else {
            return Ok(());
        };
        let sig = match mode {
            StopMode::Fast => Signal::SIGINT,
            StopMode::Immediate => Signal::SIGQUIT,
        };
        let _ = kill(Pid::from_raw(pid), sig);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.reap().await;
            if kill(Pid::from_raw(pid), None).is_err() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(pid, "PostgreSQL did not stop in time: SIGKILL");
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                kill_children(pid);
                tokio::time::sleep(Duration::from_millis(200)).await;
                self.reap().await;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn reload(&self) -> Result<()> {
        if let Some(pid) = self.postmaster_pid() {
            kill(Pid::from_raw(pid), Signal::SIGHUP)
                .map_err(|e| PgError::Io(format!("SIGHUP postmaster: {e}")))?;
        }
        Ok(())
    }

    /// A superuser session, reused across calls and re-established when it breaks.
    pub async fn connect(&self) -> Result<Arc<tokio_postgres::Client>> {
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

    /// Where the policies' SQL probes connect: the local server, as the superuser.
    pub fn probe_target(&self) -> ProbeTarget {
        ProbeTarget {
            host: self.local_host(),
            port: self.s.port,
            user: self.s.superuser.user.clone(),
            password: self.s.superuser.password.clone(),
        }
    }

    /// Connect as the superuser over TCP.
    async fn new_connection(&self) -> Result<tokio_postgres::Client> {
        let host = self.local_host();
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&host)
            .port(self.s.port)
            .user(&self.s.superuser.user)
            .dbname("postgres")
            .application_name("regent")
            .connect_timeout(Duration::from_secs(2));
        if let Some(p) = &self.s.superuser.password {
            cfg.password(p);
        }
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// `pg_last_wal_receive_lsn()` of another member's PostgreSQL, read live.
    pub async fn remote_received_lsn(&self, host: &str, port: u16) -> Result<Option<u64>> {
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
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let v: Option<i64> = client
            .query_one("SELECT (pg_last_wal_receive_lsn() - '0/0')::bigint", &[])
            .await?
            .get(0);
        Ok(v.and_then(|v| u64::try_from(v).ok()))
    }

    pub async fn query_state(&self) -> Result<PgState> {
        let c = self.connect().await?;
        state::query(&c).await
    }

    pub async fn promote(&self) -> Result<()> {
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

    pub async fn checkpoint(&self) -> Result<()> {
        let c = self.connect().await?;
        c.batch_execute("CHECKPOINT").await?;
        Ok(())
    }

    /// After bootstrap: the replication (and rewind) roles.
    pub async fn create_roles(&self) -> Result<()> {
        let c = self.connect().await?;
        let mut sql = String::new();
        let r = &self.s.replication;
        sql.push_str(&format!(
            "CREATE ROLE {} WITH REPLICATION LOGIN{};",
            quote_ident(&r.user),
            r.password
                .as_ref()
                .map(|p| format!(" PASSWORD {}", quote_literal(p)))
                .unwrap_or_default()
        ));
        if let Some(rw) = &self.s.rewind
            && rw.user != self.s.superuser.user
        {
            sql.push_str(&format!(
                "CREATE ROLE {u} WITH LOGIN{p}; \
                 GRANT EXECUTE ON function pg_catalog.pg_ls_dir(text, boolean, boolean) TO {u}; \
                 GRANT EXECUTE ON function pg_catalog.pg_stat_file(text, boolean) TO {u}; \
                 GRANT EXECUTE ON function pg_catalog.pg_read_binary_file(text) TO {u}; \
                 GRANT EXECUTE ON function pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO {u};",
                u = quote_ident(&rw.user),
                p = rw
                    .password
                    .as_ref()
                    .map(|p| format!(" PASSWORD {}", quote_literal(p)))
                    .unwrap_or_default()
            ));
        }
        c.batch_execute(&sql).await?;
        Ok(())
    }

    /// Physical slots for `members` on the primary. The slot of a member that left the DCS is
    /// kept for [`MEMBER_SLOT_RETENTION`] (a replica restarting slowly must not lose the WAL
    /// it needs), then dropped if inactive. Returns every physical slot's restart LSN.
    pub async fn sync_slots(&self, members: &[String]) -> Result<BTreeMap<String, u64>> {
        let c = self.connect().await?;
        let want: Vec<String> = members.iter().map(|m| crate::dcs::slot_name(m)).collect();
        let rows = c
            .query(
                "SELECT slot_name::text, active, (restart_lsn - '0/0')::bigint \
                 FROM pg_replication_slots WHERE slot_type = 'physical' AND NOT temporary",
                &[],
            )
            .await?;
        let have: Vec<(String, bool, Option<i64>)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        for w in &want {
            if !have.iter().any(|(n, _, _)| n == w) {
                c.execute("SELECT pg_create_physical_replication_slot($1, true)", &[w])
                    .await?;
                tracing::info!(slot = %w, "created replication slot");
            }
        }
        let now = std::time::Instant::now();
        let mut gone = self
            .departed_slots
            .lock()
            .map_err(|_| PgError::Io("slot bookkeeping lock poisoned".into()))?
            .clone();
        gone.retain(|n, _| !want.contains(n));
        let mut out = BTreeMap::new();
        for (n, active, lsn) in &have {
            if want.contains(n) {
                if let Some(l) = lsn.and_then(|l| u64::try_from(l).ok()) {
                    out.insert(n.clone(), l);
                }
                continue;
            }
            let since = *gone.entry(n.clone()).or_insert(now);
            if !active && now.duration_since(since) >= MEMBER_SLOT_RETENTION {
                c.execute("SELECT pg_drop_replication_slot($1)", &[n])
                    .await?;
                gone.remove(n);
                tracing::info!(slot = %n, "dropped the replication slot of a member gone for 30 min");
            } else if let Some(l) = lsn.and_then(|l| u64::try_from(l).ok()) {
                out.insert(n.clone(), l);
            }
        }
        gone.retain(|n, _| have.iter().any(|(h, _, _)| h == n));
        if let Ok(mut g) = self.departed_slots.lock() {
            *g = gone;
        }
        Ok(out)
    }

    /// Clone from `source` with pg_basebackup into the (empty) data directory.
    pub async fn basebackup(&self, source: &Upstream) -> Result<()> {
        std::fs::create_dir_all(&self.s.data_dir)
            .map_err(|e| io(format!("create {}", self.s.data_dir.display()), e))?;
        self.chown(&self.s.data_dir)?;
        std::fs::set_permissions(&self.s.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("chmod data_dir", e))?;
        let args = vec![
            "-D".to_string(),
            self.s.data_dir.display().to_string(),
            "-X".into(),
            "stream".into(),
            "-c".into(),
            "fast".into(),
            "-d".into(),
            format!(
                "host={} port={} user={} application_name={} connect_timeout=5",
                source.host,
                source.port,
                quote_conninfo(&self.s.replication.user),
                quote_conninfo(&self.s.name)
            ),
        ];
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
            clear_dir(&self.s.data_dir);
        }
        res?;
        self.set_former_primary(false)
    }

    /// Bring an unclean former primary to a clean shutdown with single-user crash recovery.
    pub async fn crash_recover(&self) -> Result<()> {
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
    pub async fn rewind(&self, source: &Upstream) -> Result<()> {
        self.crash_recover().await?;
        let creds = self.s.rewind.clone().unwrap_or(self.s.superuser.clone());
        let args = vec![
            format!("--target-pgdata={}", self.s.data_dir.display()),
            format!(
                "--source-server=host={} port={} user={} dbname=postgres connect_timeout=5",
                source.host,
                source.port,
                quote_conninfo(&creds.user)
            ),
        ];
        let out = self
            .run("pg_rewind", &args, creds.password.as_deref())
            .await?;
        tracing::info!(output = %out.trim().replace('\n', " | "), "pg_rewind finished");
        Ok(())
    }

    /// Move the data directory aside (never deleted). Returns the new path.
    pub fn move_aside(&self) -> Result<PathBuf> {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let name = self
            .s
            .data_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "data".into());
        let target = self
            .s
            .data_dir
            .with_file_name(format!("{name}.regent-moved-{ts}"));
        std::fs::rename(&self.s.data_dir, &target)
            .map_err(|e| io(format!("move {} aside", self.s.data_dir.display()), e))?;
        tracing::warn!(to = %target.display(), "moved the old data directory aside");
        self.set_former_primary(false)?;
        Ok(target)
    }
}

/// The marker that says the data directory holds a former primary's data that has not been
/// checked against (rewound to) another leader: `<run_dir>/<name>.former-primary`, outside the
/// data directory, so that it survives a restart of `regent`.
fn former_primary_marker(s: &PgSettings) -> PathBuf {
    s.run_dir.join(format!("{}.former-primary", s.name))
}

fn clear_dir(dir: &Path) {
    if let Ok(it) = std::fs::read_dir(dir) {
        for e in it.flatten() {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// Kill every process whose parent is `ppid` (postgres backends of a killed postmaster).
fn kill_children(ppid: i32) {
    let Ok(it) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in it.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the `(comm)`: state ppid ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let parent = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if parent == Some(ppid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

fn resolve_os_user(s: &PgSettings) -> Result<OsUser> {
    let by_name = |n: &str| -> Result<OsUser> {
        let u = User::from_name(n)
            .map_err(|e| PgError::User(format!("cannot look up OS user `{n}`: {e}")))?
            .ok_or_else(|| {
                PgError::User(format!(
                    "postgresql.os_user: no OS user named `{n}`; create it or name an existing one"
                ))
            })?;
        Ok(OsUser {
            name: u.name,
            uid: u.uid,
            gid: u.gid,
        })
    };
    if let Some(n) = &s.os_user {
        return by_name(n);
    }
    let parent = s.data_dir.parent().unwrap_or(Path::new("/"));
    let meta = std::fs::metadata(parent).map_err(|e| {
        PgError::User(format!(
            "cannot stat the data directory's parent {}: {e}",
            parent.display()
        ))
    })?;
    if meta.uid() == 0 {
        return Err(PgError::User(format!(
            "regent runs as root and {} is owned by root, but PostgreSQL refuses to run as root: \
             chown it to the PostgreSQL OS user (e.g. `chown postgres: {}`) or set postgresql.os_user",
            parent.display(),
            parent.display()
        )));
    }
    let uid = Uid::from_raw(meta.uid());
    let u = User::from_uid(uid)
        .map_err(|e| PgError::User(format!("cannot look up uid {uid}: {e}")))?
        .ok_or_else(|| {
            PgError::User(format!(
                "{} is owned by uid {uid} which has no passwd entry; set postgresql.os_user",
                parent.display()
            ))
        })?;
    Ok(OsUser {
        name: u.name,
        uid: u.uid,
        gid: u.gid,
    })
}

fn quote_conninfo(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Parse `pg_lsn` text (`16/B374D848`) into bytes.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Format bytes as `pg_lsn` text.
pub fn format_lsn(v: u64) -> String {
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

    #[test]
    fn conninfo_quoting() {
        assert_eq!(quote_conninfo("pg-1"), "pg-1");
        assert_eq!(quote_conninfo("it's"), "'it\\'s'");
        assert_eq!(quote_conninfo(""), "''");
    }
}
