//! Runs PostgreSQL's programs from `bin_dir` and the postmaster itself. When regent runs as
//! root, every program runs as the data directory's owner (or `postgresql.os_user`), and the
//! server log is opened as that user (`files.rs`). Starts, signals, reaps and stops only
//! the postmaster of this data directory and, after a SIGKILL, its children.

use super::{OsUser, PgError, PgSettings, Postgres, Result, StopMode, io};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, Uid, User};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

impl Postgres {
    fn bin(&self, name: &str) -> PathBuf {
        self.s.bin_dir.join(name)
    }

    pub(super) fn command(&self, bin: &str) -> Command {
        self.program(self.bin(bin))
    }

    /// Any program (a replica method, a script), run as PostgreSQL's programs run: as the
    /// PostgreSQL OS user when regent runs as root, in `run_dir`.
    pub(super) fn program(&self, path: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(path);
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

    pub(super) async fn run(
        &self,
        bin: &str,
        args: &[String],
        password: Option<&str>,
    ) -> Result<String> {
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

    /// The postmaster's pid if it is alive and really is this data directory's postmaster
    /// (never a process that reused the pid of a stale `postmaster.pid`).
    pub(crate) fn postmaster_pid(&self) -> Option<i32> {
        crate::postmaster::postmaster_of(&self.s.data_dir)
    }

    /// Reap our child if it exited (keeps zombies from looking alive).
    pub(crate) async fn reap(&self) {
        let mut g = self.child.lock().await;
        if let Some(c) = g.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            tracing::warn!(%status, "postgres exited");
            *g = None;
        }
    }

    pub(crate) async fn is_running(&self) -> bool {
        self.reap().await;
        self.postmaster_pid().is_some()
    }

    /// Start the postmaster as our child (same process group) and wait up to `patience` for it
    /// to accept connections. `Ok(false)`: still starting (crash recovery, or a replica
    /// reaching consistency); the HA loop goes on and looks again next time.
    pub(crate) async fn start(&self, patience: Duration) -> Result<bool> {
        if self.is_running().await {
            return Ok(self.new_connection().await.is_ok());
        }
        let log = self.open_log()?;
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
                        stderr: format!(
                            "{} (log: {})",
                            log_tail(&self.log_path(), 5),
                            self.log_path().display()
                        ),
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
    pub(crate) async fn stop(&self, mode: StopMode, timeout: Duration) -> Result<()> {
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
            if self.postmaster_pid() != Some(pid) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(pid, "PostgreSQL did not stop in time: SIGKILL");
                crate::postmaster::kill_with_children(pid);
                tokio::time::sleep(Duration::from_millis(200)).await;
                self.reap().await;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn reload(&self) -> Result<()> {
        if let Some(pid) = self.postmaster_pid() {
            kill(Pid::from_raw(pid), Signal::SIGHUP)
                .map_err(|e| PgError::Io(format!("SIGHUP postmaster: {e}")))?;
        }
        Ok(())
    }
}

/// The last `n` lines of a log file, joined with ` | ` (each at most 300 bytes), read from its
/// last 16 KiB: what PostgreSQL said before it exited. Only a regular file is read, never
/// through a link (the text goes into error messages; the log's directory may be the
/// PostgreSQL OS user's).
pub(crate) fn log_tail(path: &Path, n: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
    else {
        return String::new();
    };
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return String::new();
    }
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| {
            let l = l.trim();
            &l[..l.floor_char_boundary(300)]
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

pub(super) fn resolve_os_user(s: &PgSettings) -> Result<OsUser> {
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
    // The closest directory that exists: missing parents of the data directory are created
    // by the user who owns it (as initdb, run by that user under Patroni, creates them).
    let mut parent = s.data_dir.parent().unwrap_or(Path::new("/"));
    while !parent.exists()
        && let Some(up) = parent.parent()
    {
        parent = up;
    }
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
