//! File operations that hold when another user can write the directory they happen in.
//!
//! When `regent` runs as root, the data directory and usually `run_dir` belong to the
//! PostgreSQL OS user, and any database superuser becomes that user (`COPY ... TO PROGRAM`).
//! That user can plant a symbolic link (or a FIFO, or another directory) at any name in those
//! directories at any moment, so root must never open, chown or rename there by path. Two
//! tools:
//!
//! - [`as_user`] runs a closure on a thread of its own that carries only the PostgreSQL OS
//!   user's credentials: what it does to PostgreSQL's files, that user could have done
//!   itself, and what it creates is that user's without a chown. `postgres/files.rs` does
//!   every operation on PostgreSQL's files through it.
//! - [`Dir`] is a directory opened once, in which names are opened relative to its
//!   descriptor, never following a link (`O_NOFOLLOW`), created only if absent (`O_EXCL`) and
//!   renamed within it (`renameat`): the guard's files (`fence.rs`) and the policy artifact
//!   cache (`plugin/compile.rs`), which are regent's own.
//!
//! Touches only the paths it is given.

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, unlinkat};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// An OS identity to act as: uid and gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ids {
    pub(crate) uid: Uid,
    pub(crate) gid: Gid,
}

/// Run `f` as `ids` when they differ from this process's effective uid (regent runs as root),
/// else here. `f` runs on a thread of its own whose real, effective, saved and file-system
/// uid and gid are `ids` and which has no supplementary groups (as PostgreSQL's own processes,
/// which regent starts the same way), so no capability is left to it: it can open, create,
/// rename or remove only what that user could. The thread ends with `f`; the other threads
/// keep their credentials.
pub(crate) fn as_user<T: Send>(
    ids: Option<Ids>,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    let Some(ids) = ids.filter(|i| i.uid != Uid::effective()) else {
        return f();
    };
    std::thread::scope(|s| {
        let worker = std::thread::Builder::new()
            .name("regent-as-pg-user".into())
            .spawn_scoped(s, move || {
                become_user(ids)?;
                f()
            })?;
        worker.join().map_err(|_| {
            std::io::Error::other("the thread acting as the PostgreSQL OS user panicked")
        })?
    })
}

/// Give the calling thread `ids` and no supplementary groups, for good.
fn become_user(ids: Ids) -> std::io::Result<()> {
    use nix::libc;
    let check = |r: libc::c_long, what: &str| {
        if r == -1 {
            let e = std::io::Error::last_os_error();
            Err(std::io::Error::new(e.kind(), format!("{what}: {e}")))
        } else {
            Ok(())
        }
    };
    let (uid, gid) = (
        libc::c_long::from(ids.uid.as_raw()),
        libc::c_long::from(ids.gid.as_raw()),
    );
    // Raw system calls on purpose: Linux keeps credentials per thread, and the C library's
    // setgroups/setresgid/setresuid would change them on every thread of the process.
    // SAFETY: these calls take integers (and, for no groups, a null list) and change only the
    // calling thread's credentials; nothing in this thread relies on them afterwards.
    unsafe {
        check(
            libc::syscall(
                libc::SYS_setgroups,
                0 as libc::c_long,
                std::ptr::null::<libc::gid_t>(),
            ),
            "setgroups",
        )?;
        check(
            libc::syscall(libc::SYS_setresgid, gid, gid, gid),
            "setresgid",
        )?;
        check(
            libc::syscall(libc::SYS_setresuid, uid, uid, uid),
            "setresuid",
        )?;
    }
    // The kernel's answer for this thread (getuid/getgid are plain system calls).
    if Uid::current() != ids.uid || Uid::effective() != ids.uid || Gid::effective() != ids.gid {
        return Err(std::io::Error::other(format!(
            "the thread did not become uid {} gid {}",
            ids.uid, ids.gid
        )));
    }
    Ok(())
}

/// A directory opened once; names in it are resolved relative to its descriptor.
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

fn io(e: Errno) -> std::io::Error {
    std::io::Error::from(e)
}

impl Dir {
    /// Open the directory at `path` (a link there is followed: `path` is configuration).
    pub(crate) fn open(path: &Path) -> std::io::Result<Dir> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io)?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The directory of the file `file` (its parent, or `.`), and the file's name.
    pub(crate) fn of(file: &Path) -> std::io::Result<(Dir, &std::ffi::OsStr)> {
        let name = file.file_name().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} names no file", file.display()),
            )
        })?;
        let parent = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        Ok((Dir::open(parent)?, name))
    }

    /// The subdirectory `name`, never through a link (a link there is `ELOOP`); created with
    /// `mode` first when `create` and it is absent.
    pub(crate) fn subdir(&self, name: &str, create: bool, mode: u32) -> std::io::Result<Dir> {
        if create {
            match nix::sys::stat::mkdirat(&self.fd, name, Mode::from_bits_truncate(mode)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(io(e)),
            }
        }
        let fd = openat(
            &self.fd,
            name,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io)?;
        Ok(Dir {
            fd,
            path: self.path.join(name),
        })
    }

    /// The directory's owner, mode and type, from its descriptor.
    pub(crate) fn stat(&self) -> std::io::Result<FileStat> {
        fstat(&self.fd).map_err(io)
    }

    /// Where the directory was opened (for messages).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Replace `name` with a file holding `bytes` (mode `mode`): written to `tmp` (whatever
    /// stood there is removed first, a link itself and not what it points at; the new file
    /// is created only if nothing is there, never through a link), then renamed over `name`
    /// within this directory.
    pub(crate) fn replace(
        &self,
        name: &std::ffi::OsStr,
        tmp: &std::ffi::OsStr,
        bytes: &[u8],
        mode: u32,
    ) -> std::io::Result<()> {
        match unlinkat(&self.fd, tmp, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(io(e)),
        }
        let fd = openat(
            &self.fd,
            tmp,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map_err(io)?;
        let mut f = std::fs::File::from(fd);
        // No fsync: the guard's state is rewritten every loop and means nothing after a
        // reboot, and a torn artifact fails its digest check.
        let written = f.write_all(bytes);
        drop(f);
        let renamed = written.and_then(|()| renameat(&self.fd, tmp, &self.fd, name).map_err(io));
        if renamed.is_err() {
            let _ = unlinkat(&self.fd, tmp, UnlinkatFlags::NoRemoveDir);
        }
        renamed
    }

    /// The contents of the regular file `name` if it is one (opened without following a link
    /// and without blocking on a FIFO), at most `limit` bytes (`InvalidData` beyond), with its
    /// status.
    pub(crate) fn read_regular(
        &self,
        name: &std::ffi::OsStr,
        limit: u64,
    ) -> std::io::Result<(Vec<u8>, FileStat)> {
        let fd = openat(
            &self.fd,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io)?;
        let st = fstat(fd.as_fd()).map_err(io)?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a regular file", self.path.join(name).display()),
            ));
        }
        let mut bytes = Vec::new();
        std::fs::File::from(fd)
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} is larger than {limit} bytes",
                    self.path.join(name).display()
                ),
            ));
        }
        Ok((bytes, st))
    }

    /// Remove the name `name` (a link itself, never what it points at); absent is fine.
    pub(crate) fn remove(&self, name: &std::ffi::OsStr) -> std::io::Result<()> {
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The thread acting as another user can do only what that user can: a file only root
    /// may read stays closed to it, and the calling thread keeps root's credentials.
    #[test]
    fn a_thread_as_another_user_has_none_of_roots_powers() {
        if !Uid::effective().is_root() {
            eprintln!("a_thread_as_another_user_has_none_of_roots_powers: SKIPPED: needs root");
            return;
        }
        let Ok(Some(pg)) = nix::unistd::User::from_name("postgres") else {
            eprintln!(
                "a_thread_as_another_user_has_none_of_roots_powers: SKIPPED: needs the \
                 `postgres` OS user"
            );
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "root only").expect("write");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let ids = Some(Ids {
            uid: pg.uid,
            gid: pg.gid,
        });
        let read = as_user(ids, || std::fs::read_to_string(&secret));
        assert_eq!(
            read.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::PermissionDenied)
        );
        let created = as_user(ids, || {
            std::fs::write(dir.path().join("mine"), "x").map(|()| Uid::effective())
        });
        assert_eq!(
            created.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::PermissionDenied),
            "it wrote into root's directory"
        );
        assert!(Uid::effective().is_root(), "the calling thread lost root");
        assert_eq!(
            std::fs::read_to_string(&secret).expect("root still reads it"),
            "root only"
        );
    }
}
