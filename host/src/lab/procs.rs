//! The lab's processes: started detached (each in a process group of its own, output into a
//! log file in the lab directory) and marked with the lab's id in their environment, so that
//! `regent lab` finds them again, and only them, from any later command.
//!
//! A recorded process is `(pid, start time)`: a pid the kernel has since given to another
//! process does not match, so a stale record is never signalled.

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

/// The environment variable that marks a lab's processes: `<lab id>:<component>`. Children
/// (PostgreSQL, the fencing guard) inherit it.
pub(crate) const MARKER: &str = "REGENT_LAB";

/// A process the lab started: its pid and its start time (clock ticks after boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    /// The process id.
    pub pid: i32,
    pub(crate) start: u64,
}

/// What became of a recorded process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Running,
    /// Stopped by SIGSTOP (a `freeze` fault).
    Frozen,
    /// Exited (or its pid now belongs to another process).
    Gone,
}

impl Status {
    pub(crate) fn word(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Frozen => "frozen",
            Status::Gone => "stopped",
        }
    }
}

/// The fields of `/proc/<pid>/stat` the lab uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) state: char,
    pub(crate) ppid: i32,
    pub(crate) pgrp: i32,
    pub(crate) start: u64,
}

/// Parse `/proc/<pid>/stat` (the command name in parentheses may hold spaces and parentheses).
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields from 3 (state) on; starttime is field 22.
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

pub(crate) fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Children this process started, kept to reap them once they exit (a zombie would look alive).
static CHILDREN: Mutex<Vec<Child>> = Mutex::new(Vec::new());

fn reap() {
    if let Ok(mut c) = CHILDREN.lock() {
        c.retain_mut(|ch| !matches!(ch.try_wait(), Ok(Some(_)) | Err(_)));
    }
}

impl Proc {
    pub(crate) fn status(&self) -> Status {
        reap();
        match stat(self.pid) {
            Some(s) if s.start == self.start => match s.state {
                'Z' | 'X' | 'x' => Status::Gone,
                'T' | 't' => Status::Frozen,
                _ => Status::Running,
            },
            _ => Status::Gone,
        }
    }

    /// The recorded process is still there: running or frozen, not a zombie nor another process
    /// under its pid.
    pub fn alive(&self) -> bool {
        self.status() != Status::Gone
    }

    /// Send `sig` to this process, if it is still the one recorded.
    pub fn signal(&self, sig: Signal) -> bool {
        self.alive() && kill(Pid::from_raw(self.pid), sig).is_ok()
    }

    /// Send `sig` to this process's group (it leads one: see [`spawn`]), if it still runs.
    pub(crate) fn signal_group(&self, sig: Signal) -> bool {
        self.alive()
            && stat(self.pid).is_some_and(|s| s.pgrp == self.pid)
            && killpg(Pid::from_raw(self.pid), sig).is_ok()
    }

    /// Send `sig` to the process group this process is in, whoever leads it (Patroni's
    /// postmaster is in a group whose leader, a helper, has exited), unless that is the group
    /// of `not` (signalled already) or init's. Whether a signal went.
    pub(crate) fn signal_its_group(&self, sig: Signal, not: i32) -> bool {
        match stat(self.pid) {
            Some(s) if self.alive() && s.pgrp > 1 && s.pgrp != not => {
                killpg(Pid::from_raw(s.pgrp), sig).is_ok()
            }
            _ => false,
        }
    }

    /// The process at `pid`, if it runs.
    pub(crate) fn of(pid: i32) -> Option<Proc> {
        let s = stat(pid)?;
        (s.state != 'Z').then_some(Proc {
            pid,
            start: s.start,
        })
    }
}

/// Start `program` detached: its own process group, stdin from /dev/null, stdout and stderr
/// appended to `log`, `MARKER=marker` in its environment.
pub(crate) fn spawn(
    program: &Path,
    args: &[String],
    log: &Path,
    marker: &str,
    env: &[(&str, &str)],
) -> std::io::Result<Proc> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env(MARKER, marker)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    let start = stat(pid).map(|s| s.start).unwrap_or(0);
    if let Ok(mut c) = CHILDREN.lock() {
        c.push(child);
    }
    Ok(Proc { pid, start })
}

/// The value of `MARKER` in the environment of `pid` (readable for our own processes, and for
/// all when root).
pub fn marker_of(pid: i32) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let key = format!("{MARKER}=");
    env.split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(key.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Every live process whose marker starts with `prefix` (`<id>:` for the whole lab,
/// `<id>:node1` for one node).
pub fn marked(prefix: &str) -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| marker_of(*pid).is_some_and(|m| m.starts_with(prefix)))
        .filter_map(Proc::of)
        .collect()
}

/// The postmaster running on `data_dir`: the pid in `postmaster.pid`, if that process runs
/// with `-D data_dir` (so a stale file naming a reused pid is ignored).
pub(crate) fn postmaster(data_dir: &Path) -> Option<Proc> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let want = data_dir.as_os_str().as_encoded_bytes();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let ours = args.windows(2).any(|w| w[0] == b"-D" && w[1] == want);
    if ours { Proc::of(pid) } else { None }
}

/// `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The last `n` lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let line = "1234 (post gres) (x)) S 1 1230 1230 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                state: 'S',
                ppid: 1,
                pgrp: 1230,
                start: 987654
            })
        );
        assert_eq!(parse_stat("12 (x) S 1"), None);
    }

    #[test]
    fn a_spawned_process_is_marked_found_frozen_and_gone() {
        let tmp = tempfile::tempdir().expect("tmp");
        let marker = format!("test-{}-procs:sleep", std::process::id());
        let p = spawn(
            Path::new("/bin/sleep"),
            &["30".into()],
            &tmp.path().join("sleep.log"),
            &marker,
            &[],
        )
        .expect("spawn sleep");
        assert_eq!(p.status(), Status::Running);
        assert_eq!(stat(p.pid).map(|s| s.pgrp), Some(p.pid), "its own group");
        // spawn returns once the child has left our memory in execve, which may be a moment
        // before the kernel has laid out its new environment: poll for it.
        let seen = (0..200)
            .map(|i| {
                if i > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                marker_of(p.pid)
            })
            .find(Option::is_some)
            .flatten();
        assert_eq!(seen.as_deref(), Some(marker.as_str()));
        assert_eq!(
            marked(&format!("test-{}-procs:", std::process::id())),
            vec![p]
        );
        assert!(p.signal(Signal::SIGSTOP));
        let frozen = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(5));
            p.status() == Status::Frozen
        });
        assert!(frozen, "SIGSTOP shows as frozen");
        assert!(p.signal(Signal::SIGCONT));
        assert!(p.signal_group(Signal::SIGKILL));
        let gone = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(5));
            p.status() == Status::Gone
        });
        assert!(gone, "a killed (and reaped) process is gone");
        assert!(
            !p.signal(Signal::SIGKILL),
            "a gone process is never signalled"
        );
        // A record whose start time does not match is not that process.
        let me = Proc::of(std::process::id() as i32).expect("me");
        assert!(me.alive());
        assert!(
            !Proc {
                start: me.start + 1,
                ..me
            }
            .alive()
        );
    }

    #[test]
    fn a_postmaster_pid_file_counts_only_for_its_own_data_directory() {
        let tmp = tempfile::tempdir().expect("tmp");
        // This test process is not a postmaster for that directory.
        std::fs::write(
            tmp.path().join("postmaster.pid"),
            format!("{}\n{}\n", std::process::id(), tmp.path().display()),
        )
        .expect("write");
        assert_eq!(postmaster(tmp.path()), None);
        assert_eq!(postmaster(&tmp.path().join("missing")), None);
    }

    #[test]
    fn which_finds_programs_on_path() {
        assert!(which("sh").is_some());
        assert!(which("no-such-program-regent-lab").is_none());
    }
}
