//! The fencing guard: a small separate process that makes a primary stop accepting writes before
//! its leader lease can expire, even when `regent` itself is dead or frozen.
//!
//! `regent` writes the write deadline (monotonic ms, from the last lease renewal's send time +
//! ttl − margin) into a state file after every renewal while its PostgreSQL may be a primary, and
//! `disarmed` otherwise. The guard (`regent guard`) polls that file; when an armed deadline
//! passes it stops the postmaster immediately (SIGQUIT, then SIGKILL). A restarted `regent`
//! re-attaches to the running guard through the same files, so a quick supervisor restart costs
//! no failover. The guard exits on its own once its owner is gone and nothing is left to guard.
//!
//! Both files live in `run_dir`, which the PostgreSQL OS user may own while regent and its
//! guard run as root: they are written, read and replaced relative to the directory's
//! descriptor, never through a link, and read only if they are small regular files
//! ([`crate::safe_fs::Dir`]).

use crate::postmaster::{kill_with_children, postmaster_of, standby_configured};
use crate::safe_fs::Dir;
use nix::sys::signal::{Signal, kill};
use nix::time::{ClockId, clock_gettime};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Milliseconds on the system-wide monotonic clock that keeps counting while the machine is
/// suspended (`CLOCK_BOOTTIME`; shared by all processes on the host). A lease keeps expiring in
/// etcd while a VM is paused: a clock that stops then would let a resumed primary believe its
/// deadline still lies ahead.
pub(crate) fn mono_ms() -> u64 {
    match clock_gettime(ClockId::CLOCK_BOOTTIME) {
        Ok(ts) => (ts.tv_sec() as u64) * 1000 + (ts.tv_nsec() as u64) / 1_000_000,
        Err(_) => 0,
    }
}

/// Convert an `Instant` to [`mono_ms`] time (the same elapsed time back from now).
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
        GuardState::decode(&read_small(&self.state)?)
    }

    /// Atomically replace the state (written to `<state>.tmp`, then renamed).
    pub(crate) fn write(&self, st: GuardState) -> std::io::Result<()> {
        replace_small(&self.state, &self.state.with_extension("tmp"), &st.encode())
    }

    /// Record this process as the guard in the pid file.
    fn write_pid(&self) -> std::io::Result<()> {
        let tmp = self.pid.with_extension("pid.tmp");
        replace_small(&self.pid, &tmp, &format!("{}\n", std::process::id()))
    }

    /// The guard's pid if a guard is alive.
    pub(crate) fn guard_pid(&self) -> Option<i32> {
        let pid: i32 = read_small(&self.pid)?.trim().parse().ok()?;
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

/// The guard's files are a line each.
const MAX_FILE: u64 = 4096;

/// The text of the small regular file `path`; `None` if there is none (or a link, a FIFO, a
/// directory, or something larger stands at its name). Only a file of this process's own user
/// is read (the guard and its supervisor run as the same user): one another user put in
/// `run_dir`, which the PostgreSQL OS user may write, is never believed.
fn read_small(path: &Path) -> Option<String> {
    let (dir, name) = Dir::of(path).ok()?;
    let (bytes, st) = dir.read_regular(name, MAX_FILE).ok()?;
    if st.st_uid != nix::unistd::Uid::effective().as_raw() {
        return None;
    }
    String::from_utf8(bytes).ok()
}

/// Replace `path` with `text` (mode 0600) through the file `tmp` beside it, relative to the
/// directory's descriptor and never through a link.
fn replace_small(path: &Path, tmp: &Path, text: &str) -> std::io::Result<()> {
    let (dir, name) = Dir::of(path)?;
    let tmp = tmp.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no temporary file name")
    })?;
    dir.replace(name, tmp, text.as_bytes(), 0o600)
        .map_err(|e| std::io::Error::new(e.kind(), format!("write {}: {e}", path.display())))
}

fn is_guard(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).any(|a| a == b"guard"))
        .unwrap_or(false)
}

/// Stop the postmaster of `data_dir` now (only a process verified to be it): SIGQUIT
/// (immediate shutdown: every backend exits at once), then, if it lingers for a second,
/// SIGKILL of the postmaster and of every process it forked. Returns whether there was one.
pub(crate) fn fence_now(data_dir: &Path) -> bool {
    let Some(pid) = postmaster_of(data_dir) else {
        return false;
    };
    let p = Pid::from_raw(pid);
    let _ = kill(p, Signal::SIGQUIT);
    for _ in 0..100 {
        if postmaster_of(data_dir) != Some(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    kill_with_children(pid);
    true
}

/// The guard's main loop (`regent guard`): wakes at the armed deadline, else twice a second.
pub fn run_guard(files: &GuardFiles) -> std::io::Result<()> {
    files.write_pid()?;
    let parent_at_start = nix::unistd::getppid().as_raw();
    // A terminal's Ctrl-C, a hang-up or a SIGTERM to the supervisor's process group (a service
    // manager stopping regent) must not take the guard down: it outlives the supervisor for as
    // long as there is a primary to guard.
    // SAFETY: installing SIG_IGN has no preconditions.
    unsafe {
        for sig in [Signal::SIGINT, Signal::SIGHUP, Signal::SIGTERM] {
            let _ = nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn);
        }
    }
    eprintln!(
        "regent guard {}: watching {}",
        std::process::id(),
        files.state.display()
    );
    let mut seen = Seen::default();
    loop {
        if guard_step(files, &mut seen, parent_at_start)? {
            return Ok(());
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

/// What the guard remembers between rounds.
#[derive(Debug, Default)]
struct Seen {
    /// The supervisor seen last.
    owner: Option<i32>,
    /// The deadline of the last armed state read: in force while the state file cannot be
    /// read or is not the supervisor's (deleted or replaced by another user).
    armed: Option<u64>,
}

/// One round of the guard: fence when an armed deadline has passed (or, once fenced, when a
/// writable postmaster appears); `Ok(true)` when the guard should exit (nobody is left to
/// guard). `seen` carries what earlier rounds read; `parent_at_start` is the process that
/// started the guard.
fn guard_step(files: &GuardFiles, seen: &mut Seen, parent_at_start: i32) -> std::io::Result<bool> {
    let last_owner = &mut seen.owner;
    let state = match files.read() {
        Some(st) => {
            seen.armed = match st {
                GuardState::Armed { deadline_ms, .. } => Some(deadline_ms),
                _ => None,
            };
            Some(st)
        }
        None => seen.armed.map(|deadline_ms| GuardState::Armed {
            deadline_ms,
            owner: last_owner.unwrap_or(0),
        }),
    };
    match state {
        Some(GuardState::Armed { deadline_ms, owner }) => {
            *last_owner = Some(owner);
            if mono_ms() >= deadline_ms {
                if fence_now(&files.data_dir) {
                    eprintln!(
                        "regent guard: lease deadline passed without renewal: stopped the primary in {}",
                        files.data_dir.display()
                    );
                }
                // Not recorded (out of descriptors, a failing disk): the state stays armed
                // with a passed deadline, so the next round fences again and retries.
                if let Err(e) = files.write(GuardState::Fenced { at_ms: mono_ms() }) {
                    eprintln!("regent guard: cannot record the fence: {e}");
                }
            } else if !alive(owner) && postmaster_of(&files.data_dir).is_none() {
                return Ok(true);
            }
        }
        Some(GuardState::Disarmed { owner }) => {
            *last_owner = Some(owner);
            if !alive(owner) {
                return Ok(true);
            }
        }
        Some(GuardState::Fenced { at_ms }) => {
            // A postmaster started writable since the fence, without the guard re-armed
            // (only a supervisor that holds the lock re-arms it first), is fenced too.
            if postmaster_of(&files.data_dir).is_some()
                && !standby_configured(&files.data_dir)
                && fence_now(&files.data_dir)
            {
                eprintln!(
                    "regent guard: a writable PostgreSQL started without the lease: stopped it in {}",
                    files.data_dir.display()
                );
            }
            // Wait for a supervisor to re-arm or disarm; leave once nobody is left.
            if last_owner.is_none_or(|o| !alive(o)) && mono_ms().saturating_sub(at_ms) > 60_000 {
                return Ok(true);
            }
        }
        None => {
            // Not written yet (the supervisor writes it right after starting us): nothing
            // to guard. Leave once the supervisor that started us is gone.
            if last_owner.is_none_or(|o| !alive(o)) && !alive(parent_at_start) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

impl GuardFiles {
    /// Another guard took over the pid file: this one is superfluous.
    fn guard_pid_file_changed(&self) -> bool {
        read_small(&self.pid)
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

    /// A process standing in for a postmaster: a copy of `sh` named `postgres` (so its
    /// `/proc/<pid>/comm` reads `postgres`), running in `data_dir`, ignoring SIGQUIT, with two
    /// children of its own; its pid goes into `postmaster.pid`.
    fn fake_postmaster(dir: &std::path::Path) -> (std::process::Child, std::path::PathBuf) {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let exe = dir.join("postgres");
        std::fs::copy("/bin/sh", &exe).expect("copy sh");
        // Another test thread forking while the copy was open for writing makes exec fail
        // with "text file busy" until that child has exec'd: retry.
        let child = (0..50)
            .find_map(|_| {
                match std::process::Command::new(&exe)
                    .args(["-c", "trap '' QUIT; sleep 300 & sleep 300 & wait"])
                    .current_dir(&data)
                    .spawn()
                {
                    Ok(c) => Some(c),
                    Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                        std::thread::sleep(Duration::from_millis(20));
                        None
                    }
                    Err(e) => panic!("spawn the fake postmaster: {e}"),
                }
            })
            .expect("spawn the fake postmaster: text file busy");
        std::fs::write(data.join("postmaster.pid"), format!("{}\n", child.id()))
            .expect("postmaster.pid");
        (child, data)
    }

    fn children(pid: i32) -> Vec<i32> {
        // Both children exist once the shell has forked them.
        for _ in 0..200 {
            let c = crate::postmaster::children_of(pid);
            if c.len() == 2 {
                return c;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the fake postmaster did not start its children");
    }

    /// Safety review item 5: a stale `postmaster.pid` whose pid now belongs to an unrelated
    /// process (as root, `kill(pid, 0)` succeeds for any process) is not a postmaster: the
    /// guard must never signal it.
    #[test]
    fn a_reused_pid_in_postmaster_pid_is_never_signalled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut other = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .expect("spawn sleep");
        std::fs::write(
            dir.path().join("postmaster.pid"),
            format!("{}\n", other.id()),
        )
        .expect("postmaster.pid");
        assert!(!fence_now(dir.path()), "fenced an unrelated process");
        assert!(
            other.try_wait().expect("try_wait").is_none(),
            "the unrelated process was signalled"
        );
        let _ = other.kill();
        let _ = other.wait();
    }

    /// Safety review item 7: fencing stops the postmaster and its children, even a postmaster
    /// that does not react to SIGQUIT (its children must not outlive it, reparented).
    #[test]
    fn fencing_stops_the_postmaster_and_its_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut pm, data) = fake_postmaster(dir.path());
        let kids = children(pm.id() as i32);
        assert!(fence_now(&data));
        let _ = pm.wait();
        for k in kids {
            let gone = (0..200).any(|_| {
                let dead = kill(Pid::from_raw(k), None).is_err()
                    || std::fs::read_to_string(format!("/proc/{k}/stat")).is_ok_and(|s| {
                        s.rsplit_once(')')
                            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                    });
                if !dead {
                    std::thread::sleep(Duration::from_millis(10));
                }
                dead
            });
            assert!(gone, "child {k} of the fenced postmaster is still running");
        }
    }

    /// Safety review item 2: a guard that fenced keeps watching: a postmaster started writable
    /// (no `standby.signal`) without the guard being re-armed is stopped; a read-only one is left
    /// alone.
    #[test]
    fn a_fenced_guard_stops_a_writable_postmaster_started_without_rearming() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut pm, data) = fake_postmaster(dir.path());
        // Its children exist once the shell has run its `trap`: a SIGQUIT before that would
        // kill it the ordinary way.
        children(pm.id() as i32);
        let files = GuardFiles::new(dir.path(), "n", &data);
        files
            .write(GuardState::Fenced { at_ms: mono_ms() })
            .expect("state");
        std::fs::write(data.join("standby.signal"), "").expect("standby.signal");
        guard_step(&files, &mut Seen::default(), std::process::id() as i32).expect("guard step");
        assert!(
            pm.try_wait().expect("try_wait").is_none(),
            "a read-only postmaster was fenced"
        );
        std::fs::remove_file(data.join("standby.signal")).expect("rm standby.signal");
        guard_step(&files, &mut Seen::default(), std::process::id() as i32).expect("guard step");
        let stopped = (0..1000).any(|_| {
            let done = pm.try_wait().expect("try_wait").is_some();
            if !done {
                std::thread::sleep(Duration::from_millis(10));
            }
            done
        });
        assert!(stopped, "a writable postmaster ran on under a fenced guard");
    }

    /// Item 10 of the safety review: a write error while recording the fence (out of file
    /// descriptors, a full or failing disk) must not end the guard: it keeps guarding and
    /// records the fence when it can.
    #[test]
    fn a_guard_that_cannot_record_its_fence_keeps_guarding() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let files = GuardFiles::new(dir.path(), "n", &data);
        files
            .write(GuardState::Armed {
                deadline_ms: 1,
                owner: std::process::id() as i32,
            })
            .expect("state");
        // The state is replaced through `<state>.tmp`: a directory there makes every write fail.
        let tmp = files.state.with_extension("tmp");
        std::fs::create_dir(&tmp).expect("block the state file's writes");
        let step = guard_step(&files, &mut Seen::default(), std::process::id() as i32);
        assert!(
            matches!(step, Ok(false)),
            "the guard gives up when it cannot record its fence: {step:?}"
        );
        std::fs::remove_dir(&tmp).expect("unblock");
        guard_step(&files, &mut Seen::default(), std::process::id() as i32).expect("guard step");
        assert!(matches!(files.read(), Some(GuardState::Fenced { .. })));
    }

    const PRECIOUS: &str = "root's file, not to be touched\n";

    /// Safety review item 8: the state is replaced through `<state>.tmp` in the run
    /// directory, which the PostgreSQL OS user may own; regent (and its guard) wrote that
    /// file as whatever user they run as, through a link planted at its name.
    #[test]
    fn the_guard_state_never_goes_through_a_planted_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = tempfile::tempdir().expect("tempdir");
        let target = vault.path().join("passwd");
        std::fs::write(&target, PRECIOUS).expect("target");
        let files = GuardFiles::new(dir.path(), "n", &dir.path().join("data"));
        std::os::unix::fs::symlink(&target, files.state.with_extension("tmp")).expect("plant");
        let written = files.write(GuardState::Disarmed { owner: 7 });
        assert_eq!(
            std::fs::read_to_string(&target).expect("target"),
            PRECIOUS,
            "the guard state was written through a planted link"
        );
        written.expect("the state is written");
        assert_eq!(files.read(), Some(GuardState::Disarmed { owner: 7 }));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files.state)
            .expect("state")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the state file's mode");
    }

    /// The pid file, written by the guard (root, when regent is) in the same directory, was
    /// written through whatever stood at its name.
    #[test]
    fn the_guard_pid_file_never_goes_through_a_planted_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = tempfile::tempdir().expect("tempdir");
        let files = GuardFiles::new(dir.path(), "n", &dir.path().join("data"));
        for (i, at) in [files.pid.clone(), files.pid.with_extension("pid.tmp")]
            .into_iter()
            .enumerate()
        {
            let target = vault.path().join(format!("t{i}"));
            std::fs::write(&target, PRECIOUS).expect("target");
            std::os::unix::fs::symlink(&target, &at).expect("plant");
            files.write_pid().expect("the pid file is written");
            assert_eq!(
                std::fs::read_to_string(&target).expect("target"),
                PRECIOUS,
                "the pid file was written through a link at {}",
                at.display()
            );
            assert!(!files.guard_pid_file_changed(), "it names this process");
        }
    }

    /// Safety review item 8: the state file is read by the guard (root, when regent is); a
    /// FIFO (or a link to one, or to /dev/zero) at its name must neither block nor flood it.
    #[test]
    fn the_guard_state_is_never_read_from_a_fifo_or_through_a_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = GuardFiles::new(dir.path(), "n", &dir.path().join("data"));
        nix::unistd::mkfifo(
            &files.state,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
        )
        .expect("mkfifo");
        let (tx, rx) = std::sync::mpsc::channel();
        let f = files.clone();
        std::thread::spawn(move || {
            let _ = tx.send(f.read());
        });
        let read = rx.recv_timeout(Duration::from_secs(3));
        assert_eq!(
            read,
            Ok(None),
            "reading a FIFO at the state's name blocked the guard"
        );
        std::fs::remove_file(&files.state).expect("rm fifo");
        let real = dir.path().join("elsewhere");
        std::fs::write(&real, "disarmed 0 7\n").expect("write");
        std::os::unix::fs::symlink(&real, &files.state).expect("plant");
        assert_eq!(files.read(), None, "the state was read through a link");
    }

    /// The guard's files live in `run_dir`, which the PostgreSQL OS user may write (it is the
    /// data directory's parent by default): a state file that user put there (any database
    /// superuser reaches that user) must never be believed. A forged `disarmed` would switch
    /// fencing off.
    #[test]
    fn a_guard_state_written_by_another_user_is_never_believed() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!(
                "SKIPPED a_guard_state_written_by_another_user_is_never_believed: needs root (to own a file as another user)"
            );
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let files = GuardFiles::new(dir.path(), "n", &dir.path().join("data"));
        std::fs::write(&files.state, "disarmed 0 1\n").expect("forged state");
        std::fs::write(&files.pid, "1\n").expect("forged pid");
        for f in [&files.state, &files.pid] {
            nix::unistd::chown(
                f.as_path(),
                Some(nix::unistd::Uid::from_raw(101)),
                Some(nix::unistd::Gid::from_raw(104)),
            )
            .expect("chown");
        }
        assert_eq!(files.read(), None, "a forged state file was believed");
        assert_eq!(
            read_small(&files.pid),
            None,
            "a forged pid file was believed"
        );
        files
            .write(GuardState::Disarmed { owner: 7 })
            .expect("write our own");
        assert_eq!(files.read(), Some(GuardState::Disarmed { owner: 7 }));

        // Armed, then the state is replaced by a forged `disarmed`: the guard keeps the
        // deadline it read last and fences when it passes.
        let (mut pm, data) = fake_postmaster(dir.path());
        children(pm.id() as i32);
        let files = GuardFiles::new(dir.path(), "m", &data);
        files
            .write(GuardState::Armed {
                deadline_ms: mono_ms() + 200,
                owner: std::process::id() as i32,
            })
            .expect("armed");
        let mut seen = Seen::default();
        guard_step(&files, &mut seen, std::process::id() as i32).expect("guard step");
        std::fs::remove_file(&files.state).expect("rm");
        std::fs::write(&files.state, "disarmed 0 1\n").expect("forged state");
        nix::unistd::chown(
            files.state.as_path(),
            Some(nix::unistd::Uid::from_raw(101)),
            Some(nix::unistd::Gid::from_raw(104)),
        )
        .expect("chown");
        // The deadline passing is what is tested: wait it out.
        std::thread::sleep(Duration::from_millis(250));
        guard_step(&files, &mut seen, std::process::id() as i32).expect("guard step");
        let stopped = (0..1000).any(|_| {
            let done = pm.try_wait().expect("try_wait").is_some();
            if !done {
                std::thread::sleep(Duration::from_millis(10));
            }
            done
        });
        assert!(stopped, "a forged disarmed state switched fencing off");
    }

    #[test]
    fn mono_clock_advances_with_instant() {
        let i = std::time::Instant::now();
        let a = instant_to_mono_ms(i);
        let b = mono_ms();
        assert!(b >= a && b - a < 1000);
    }
}
