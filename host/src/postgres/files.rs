//! PostgreSQL's files: every file regent creates, writes, reads back, renames or removes in the
//! data directory, and for PostgreSQL in `run_dir` (initdb's pwfile, the server log, the
//! former-primary marker). When regent runs as root these directories belong to the
//! PostgreSQL OS user, which can plant a link or swap a directory in them at any moment; so
//! each operation runs as that user ([`crate::safe_fs::as_user`]) and can do nothing that
//! user could not do itself. What it creates is that user's, mode 0600, without a chown.

use super::{PgError, Postgres, Result};
use crate::safe_fs::{Ids, as_user};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The mode of every file regent creates for PostgreSQL.
const FILE_MODE: u32 = 0o600;

impl Postgres {
    fn ids(&self) -> Option<Ids> {
        self.user.as_ref().map(|u| Ids {
            uid: u.uid,
            gid: u.gid,
        })
    }

    /// Run `f` as the PostgreSQL OS user (when regent is root); an error says what was done,
    /// as whom, and the cause.
    fn as_pg<T: Send>(
        &self,
        what: std::fmt::Arguments<'_>,
        f: impl FnOnce() -> std::io::Result<T> + Send,
    ) -> Result<T> {
        as_user(self.ids(), f).map_err(|e| match &self.user {
            Some(u) => PgError::Io(format!("{what} as the PostgreSQL OS user {}: {e}", u.name)),
            None => PgError::Io(format!("{what}: {e}")),
        })
    }

    /// Replace `path` with `contents` (mode 0600, the PostgreSQL OS user's): written to
    /// `<path>.regent-tmp` (whatever stood there removed first; created only if absent, never
    /// through a link), then renamed over `path`.
    pub(super) fn write_owned(&self, path: &Path, contents: &str) -> Result<()> {
        let tmp = path.with_extension("regent-tmp");
        self.as_pg(format_args!("write {}", path.display()), || {
            match std::fs::remove_file(&tmp) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&tmp)?;
            // No fsync, as before: the configuration files are rewritten before every start,
            // and the former-primary marker counts by its existence.
            f.write_all(contents.as_bytes())?;
            drop(f);
            std::fs::rename(&tmp, path)
        })
    }

    /// The contents of `path`, `None` if it does not exist.
    pub(super) fn read_owned(&self, path: &Path) -> Result<Option<String>> {
        self.as_pg(
            format_args!("read {}", path.display()),
            || match std::fs::read_to_string(path) {
                Ok(t) => Ok(Some(t)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
        )
    }

    /// Remove the file `path` (a link itself, not what it points at); absent is fine.
    pub(super) fn remove_owned(&self, path: &Path) -> Result<()> {
        self.as_pg(
            format_args!("remove {}", path.display()),
            || match std::fs::remove_file(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                r => r,
            },
        )
    }

    /// The server log, `<run_dir>/<name>-postgresql.log`, opened for appending (created
    /// 0600 if absent; an existing one readable by others is made 0600).
    pub(super) fn open_log(&self) -> Result<std::fs::File> {
        let path = self.log_path();
        self.as_pg(format_args!("open {}", path.display()), || {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(FILE_MODE)
                .open(&path)?;
            if f.metadata()?.permissions().mode() & 0o077 != 0 {
                // Best effort: a log the operator linked elsewhere may not be this user's.
                let _ = f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE));
            }
            Ok(f)
        })
    }

    /// The server log's path.
    pub(super) fn log_path(&self) -> PathBuf {
        self.s
            .run_dir
            .join(format!("{}-postgresql.log", self.s.name))
    }

    /// Create the data directory (and missing parents, as initdb does under Patroni) as the
    /// PostgreSQL OS user, mode 0700. A parent that user cannot create is an error that says
    /// how to create it.
    pub(super) fn make_data_dir(&self) -> Result<()> {
        self.make_data_dir_parents()?;
        let d = &self.s.data_dir;
        self.as_pg(format_args!("create {} (mode 0700)", d.display()), || {
            std::fs::create_dir_all(d)?;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
        })
    }

    /// Create the missing parents of the data directory as the PostgreSQL OS user (mode
    /// 0755, as `mkdir -p` leaves them), or say how to create them.
    pub(super) fn make_data_dir_parents(&self) -> Result<()> {
        let Some(parent) = self.s.data_dir.parent().filter(|p| !p.is_dir()) else {
            return Ok(());
        };
        self.as_pg(format_args!("create {}", parent.display()), || {
            std::fs::create_dir_all(parent)
        })
        .map_err(|e| {
            let owner = self.user.as_ref().map_or("postgres", |u| u.name.as_str());
            PgError::Io(format!(
                "{e}; create the parent directory of postgresql.data_dir: mkdir -p {p} && chown {owner}: {p}",
                p = parent.display()
            ))
        })
    }

    /// Rename the data directory to `target`.
    pub(super) fn rename_data_dir(&self, target: &Path) -> Result<()> {
        let d = &self.s.data_dir;
        self.as_pg(
            format_args!("move {} aside to {}", d.display(), target.display()),
            || std::fs::rename(d, target),
        )
    }

    /// The data directory exists and holds nothing.
    pub(super) fn data_dir_is_empty(&self) -> bool {
        std::fs::read_dir(&self.s.data_dir).is_ok_and(|mut r| r.next().is_none())
    }

    /// Empty the data directory (a clone regent itself just started in it failed). Errors are
    /// logged: the next clone finds what is left.
    pub(super) fn clear_data_dir(&self) {
        let d = &self.s.data_dir;
        let cleared = self.as_pg(format_args!("empty {}", d.display()), || {
            for e in std::fs::read_dir(d)? {
                let p = e?.path();
                // A link is removed itself, never followed.
                if std::fs::symlink_metadata(&p)?.is_dir() {
                    std::fs::remove_dir_all(&p)?;
                } else {
                    std::fs::remove_file(&p)?;
                }
            }
            Ok(())
        });
        if let Err(e) = cleared {
            tracing::warn!(error = %e, "cannot empty the data directory after a failed clone");
        }
    }
}
