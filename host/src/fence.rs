//! The fencing guard: a small separate process that makes a primary stop accepting writes before
//! its leader lease can expire, even when `regent` itself is dead or frozen.
//!
//! `regent` writes the write deadline (monotonic ms, from the last lease renewal's send time +
//! ttl − margin) into a state file after every renewal while its PostgreSQL may be a primary, and
//! `disarmed` otherwise. The guard (`regent guard`) polls that file; when an armed deadline
//! passes it stops the postmaster immediately (SIGQUIT, then SIGKILL). A restarted `regent`
//! re-attaches to the running guard through the same files, so a quick supervisor restart costs
//! no failover. The guard exits on its own once its owner is gone and nothing is left to guard.

use nix::sys::signal::{Signal, kill};
use nix::time::{ClockId, clock_gettime};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Milliseconds on the system-wide monotonic clock (shared by all processes on the host).
pub(crate) fn mono_ms() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => (ts.tv_sec() as u64) * 1000 + (ts.tv_nsec() as u64) / 1_000_000,
        Err(_) => 0,
    }
}

/// Convert an `Instant` to monotonic ms (both use CLOCK_MONOTONIC on Linux).
pub(crate) fn instant_to_mono_ms(i: std::time::Instant) -> u64 {
    mono_ms().saturating_sub(i.elapsed().as_millis() as u64)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GuardState {
    /// The primary may accept writes until `deadline_ms`; `owner` is the regent pid.
    Armed {
        deadline_ms: u64,
        owner: i32,
    },
    Disarmed {
        owner: i32,
    },
    /// The guard fenced the primary at `at_ms`.
    Fenced {
        at_ms: u64,
    },
}

impl GuardState {
    fn encode(&self) -> String {
        match self {
            GuardState::Armed { deadline_ms, owner } => format!("armed {deadline_ms} {owner}\n"),
            GuardState::Disarmed { owner } => format!("disarmed 0 {owner}\n"),
            GuardState::Fenced { at_ms } => format!("fenced {at_ms} 0\n"),
        }
    }

    fn decode(s: &str) -> Option<GuardState> {
        let mut it = s.split_whitespace();
        let kind = it.next()?;
        let n: u64 = it.next()?.parse().ok()?;
        let owner: i32 = it.next()?.parse().ok()?;
        match kind {
            "armed" => Some(GuardState::Armed {
                deadline_ms: n,
                owner,
            }),
            "disarmed" => Some(GuardState::Disarmed { owner }),
            "fenced" => Some(GuardState::Fenced { at_ms: n }),
            _ => None,
        }
    }
}

/// The files shared by `regent` and its guard.
#[derive(Debug, Clone)]
pub struct GuardFiles {
    /// The state file `regent` writes and the guard polls.
    pub state: PathBuf,
    /// The guard's pid file.
    pub pid: PathBuf,
    /// The data directory whose postmaster the guard stops.
    pub data_dir: PathBuf,
}

impl GuardFiles {
    pub(crate) fn new(run_dir: &Path, name: &str, data_dir: &Path) -> GuardFiles {
        GuardFiles {
            state: run_dir.join(format!("{name}.regent-guard.state")),
            pid: run_dir.join(format!("{name}.regent-guard.pid")),
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub(crate) fn read(&self) -> Option<GuardState> {
        GuardState::decode(&std::fs::read_to_string(&self.state).ok()?)
    }

    /// Atomically replace the state (write + rename).
    pub(crate) fn write(&self, st: GuardState) -> std::io::Result<()> {
        let tmp = self.state.with_extension("tmp");
        std::fs::write(&tmp, st.encode())?;
        std::fs::rename(&tmp, &self.state)
    }

    /// The guard's pid if a guard is alive.
    pub(crate) fn guard_pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(&self.pid)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        if pid > 0 && kill(Pid::from_raw(pid), None).is_ok() && is_guard(pid) {
            Some(pid)
        } else {
            None
        }
    }

    /// Make sure a guard runs for these files; spawns `exe guard ...` if none does. A guard we
    /// spawned earlier that has exited is reaped (`spawned`).
    pub(crate) fn ensure_running(
        &self,
        exe: &Path,
        spawned: &mut Option<std::process::Child>,
    ) -> std::io::Result<i32> {
        if let Some(c) = spawned.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            tracing::warn!(%status, "the fencing guard exited; starting a new one");
            *spawned = None;
        }
        if let Some(pid) = self.guard_pid() {
            return Ok(pid);
        }
        let child = std::process::Command::new(exe)
            .arg("guard")
            .arg("--state")
            .arg(&self.state)
            .arg("--pidfile")
            .arg(&self.pid)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .stdin(std::process::Stdio::null())
            .spawn()?;
        let pid = child.id() as i32;
        // The guard writes its own pid file; wait briefly so a second regent sees it.
        for _ in 0..100 {
            if self.guard_pid() == Some(pid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Never killed by us: the guard must outlive this process. Kept only to reap it.
        *spawned = Some(child);
        Ok(pid)
    }
}

fn is_guard(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).any(|a| a == b"guard"))
        .unwrap_or(false)
}

fn postmaster_pid(data_dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    (pid > 0 && kill(Pid::from_raw(pid), None).is_ok()).then_some(pid)
}

/// Stop the postmaster now: SIGQUIT (immediate shutdown: every backend exits at once), then
/// SIGKILL of the postmaster and its children if it lingers.
pub(crate) fn fence_now(data_dir: &Path) -> bool {
    let Some(pid) = postmaster_pid(data_dir) else {
        return false;
    };
    let p = Pid::from_raw(pid);
    let _ = kill(p, Signal::SIGQUIT);
    for _ in 0..100 {
        if kill(p, None).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = kill(p, Signal::SIGKILL);
    true
}

/// The guard's main loop (`regent guard`): wakes at the armed deadline, else twice a second.
pub fn run_guard(files: &GuardFiles) -> std::io::Result<()> {
    std::fs::write(&files.pid, format!("{}\n", std::process::id()))?;
    let parent_at_start = nix::unistd::getppid().as_raw();
    // A terminal's Ctrl-C must not take the guard down with the supervisor's process group.
    // SAFETY: installing SIG_IGN has no preconditions.
    unsafe {
        let _ = nix::sys::signal::signal(Signal::SIGINT, nix::sys::signal::SigHandler::SigIgn);
        let _ = nix::sys::signal::signal(Signal::SIGHUP, nix::sys::signal::SigHandler::SigIgn);
    }
    eprintln!(
        "regent guard {}: watching {}",
        std::process::id(),
        files.state.display()
    );
    let mut last_owner: Option<i32> = None;
    loop {
        match files.read() {
            Some(GuardState::Armed { deadline_ms, owner }) => {
                last_owner = Some(owner);
                if mono_ms() >= deadline_ms {
                    if fence_now(&files.data_dir) {
                        eprintln!(
                            "regent guard: lease deadline passed without renewal: stopped the primary in {}",
                            files.data_dir.display()
                        );
                    }
                    files.write(GuardState::Fenced { at_ms: mono_ms() })?;
                } else if !alive(owner) && postmaster_pid(&files.data_dir).is_none() {
                    return Ok(());
                }
            }
            Some(GuardState::Disarmed { owner }) => {
                last_owner = Some(owner);
                if !alive(owner) {
                    return Ok(());
                }
            }
            Some(GuardState::Fenced { at_ms }) => {
                // Wait for a supervisor to re-arm or disarm; leave once nobody is left.
                if last_owner.is_none_or(|o| !alive(o)) && mono_ms().saturating_sub(at_ms) > 60_000
                {
                    return Ok(());
                }
            }
            None => {
                // Not written yet (the supervisor writes it right after starting us): nothing
                // to guard. Leave once the supervisor that started us is gone.
                if last_owner.is_none_or(|o| !alive(o)) && !alive(parent_at_start) {
                    return Ok(());
                }
            }
        }
        if files.guard_pid_file_changed() {
            return Ok(());
        }
        // Sleep until the deadline (re-reading the file then: a renewal may have moved it), or
        // at most half a second; disarming and owner changes need no faster reaction.
        let nap = match files.read() {
            Some(GuardState::Armed { deadline_ms, .. }) => {
                deadline_ms.saturating_sub(mono_ms()).clamp(1, 500)
            }
            _ => 500,
        };
        std::thread::sleep(Duration::from_millis(nap));
    }
}

impl GuardFiles {
    /// Another guard took over the pid file: this one is superfluous.
    fn guard_pid_file_changed(&self) -> bool {
        std::fs::read_to_string(&self.pid)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .is_some_and(|p| p != std::process::id())
    }
}

fn alive(pid: i32) -> bool {
    pid > 0 && kill(Pid::from_raw(pid), None).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip() {
        for st in [
            GuardState::Armed {
                deadline_ms: 123,
                owner: 9,
            },
            GuardState::Disarmed { owner: 4 },
            GuardState::Fenced { at_ms: 77 },
        ] {
            assert_eq!(GuardState::decode(&st.encode()), Some(st));
        }
        assert_eq!(GuardState::decode("garbage"), None);
    }

    #[test]
    fn mono_clock_advances_with_instant() {
        let i = std::time::Instant::now();
        let a = instant_to_mono_ms(i);
        let b = mono_ms();
        assert!(b >= a && b - a < 1000);
    }
}
