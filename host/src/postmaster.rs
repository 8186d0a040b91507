//! Which process is this data directory's postmaster, and stopping it with its children.
//!
//! `postmaster.pid` can outlive its postmaster (a crash, a host reboot), and its pid can be
//! reused by any process; as root, `kill(pid, 0)` succeeds for every process. So a pid from
//! that file is trusted, and signalled, only when `/proc` shows it is a PostgreSQL server
//! (`comm` is `postgres`) whose working directory is this data directory (the postmaster
//! changes into it at start), the way PostgreSQL itself checks that a lock file is stale.
//!
//! Reads `/proc` and the data directory's `postmaster.pid` (only a small regular file, never
//! through a link: the directory is the PostgreSQL OS user's); sends signals to nothing else
//! than a verified postmaster and the processes it forked. Used by the supervisor's PostgreSQL
//! adapter and by the fencing guard.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::Path;

/// The pid of the running postmaster of `data_dir`, from its `postmaster.pid`, if that
/// process really is it.
pub fn postmaster_of(data_dir: &Path) -> Option<i32> {
    let text = read_small(data_dir, "postmaster.pid")?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    (pid > 0 && is_postmaster_of(pid, data_dir)).then_some(pid)
}

/// The text of `dir/name` if it is a regular file of at most 64 KiB. The data directory is
/// the PostgreSQL OS user's: a link, a FIFO or a device there is neither followed, waited on
/// nor read without end (the guard runs as root when regent does).
fn read_small(dir: &Path, name: &str) -> Option<String> {
    let (bytes, _) = crate::safe_fs::Dir::open(dir)
        .ok()?
        .read_regular(name.as_ref(), 64 * 1024)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// Whether `pid` is a live PostgreSQL server process running in `data_dir`.
fn is_postmaster_of(pid: i32, data_dir: &Path) -> bool {
    let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
        return false;
    };
    if !matches!(comm.trim(), "postgres" | "postmaster") || is_zombie(pid) {
        return false;
    }
    match std::fs::read_link(format!("/proc/{pid}/cwd")) {
        Ok(cwd) => std::fs::canonicalize(data_dir).is_ok_and(|d| d == cwd),
        // Another user's process (regent neither root nor the PostgreSQL user): its name
        // is all that can be checked.
        Err(e) => e.kind() == std::io::ErrorKind::PermissionDenied,
    }
}

/// Whether `pid` has exited but is not yet reaped.
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// Every process whose parent is `ppid` (a postmaster's backends and helpers).
pub fn children_of(ppid: i32) -> Vec<i32> {
    let Ok(it) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    it.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // Fields after `(comm)`: state ppid ...
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok())
                    == Some(ppid)
            })
        })
        .collect()
}

/// SIGKILL the postmaster `pid` and every process it forked. The children are listed first:
/// once the postmaster is gone they are reparented and no longer recognisable.
pub fn kill_with_children(pid: i32) {
    let children = children_of(pid);
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    for c in children {
        let _ = kill(Pid::from_raw(c), Signal::SIGKILL);
    }
}

/// Whether the data directory is set to start (and so runs) read-only.
pub fn standby_configured(data_dir: &Path) -> bool {
    data_dir.join("standby.signal").exists() || data_dir.join("recovery.signal").exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Safety review item 8: `postmaster.pid` lies in the data directory, which the PostgreSQL
    /// OS user owns; the guard (root, when regent is) reads it to find whom to fence. A FIFO
    /// at its name, or a link to one (or to /dev/zero), must neither block nor flood it.
    #[test]
    fn postmaster_pid_is_never_read_from_a_fifo_or_through_a_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_path_buf();
        let pidfile = data.join("postmaster.pid");
        nix::unistd::mkfifo(&pidfile, nix::sys::stat::Mode::from_bits_truncate(0o666))
            .expect("mkfifo");
        // `postmaster_of`'s answer, or a timeout if it does not come within 3 s.
        let within = |data: &Path| {
            let (tx, rx) = std::sync::mpsc::channel();
            let d = data.to_path_buf();
            std::thread::spawn(move || {
                let _ = tx.send(postmaster_of(&d));
            });
            rx.recv_timeout(Duration::from_secs(3))
        };
        assert_eq!(
            within(&data),
            Ok(None),
            "a FIFO at postmaster.pid blocked the reader"
        );
        std::fs::remove_file(&pidfile).expect("rm fifo");
        std::os::unix::fs::symlink("/dev/zero", &pidfile).expect("link");
        assert_eq!(
            within(&data),
            Ok(None),
            "a link to /dev/zero at postmaster.pid was read without end"
        );
    }
}
