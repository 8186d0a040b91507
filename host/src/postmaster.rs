//! Which process is this data directory's postmaster, and stopping it with its children.
//!
//! `postmaster.pid` can outlive its postmaster (a crash, a host reboot), and its pid can be
//! reused by any process; as root, `kill(pid, 0)` succeeds for every process. So a pid from
//! that file is trusted, and signalled, only when `/proc` shows it is a PostgreSQL server
//! (`comm` is `postgres`) whose working directory is this data directory (the postmaster
//! changes into it at start), the way PostgreSQL itself checks that a lock file is stale.
//!
//! Reads `/proc` and the data directory's `postmaster.pid`; sends signals to nothing else
//! than a verified postmaster and the processes it forked. Used by the supervisor's PostgreSQL
//! adapter and by the fencing guard.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::Path;

/// The pid of the running postmaster of `data_dir`, from its `postmaster.pid`, if that
/// process really is it.
pub fn postmaster_of(data_dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    (pid > 0 && is_postmaster_of(pid, data_dir)).then_some(pid)
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
