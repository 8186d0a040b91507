//! The script callbacks' executor: Patroni's `postgresql.callbacks` (`COMMAND ACTION ROLE
//! SCOPE`), `pre_promote` and `before_stop`, run as child processes of `regent`.
//!
//! Patroni's conventions: the command line is split as a POSIX shell splits words (`shlex`,
//! no expansions, no shell) and the action, the role and the scope are appended; the script
//! inherits regent's environment, working directory and OS user. One callback runs at a time:
//! a new one kills a still-running one, with every process of its process group (each script
//! is started as the leader of a group of its own). `on_reload` has its own slot, as in
//! Patroni, so that a reload never kills a running `on_role_change`. [`CallbackExecutor::call`]
//! starts the process and returns at once; a task of its own waits for it and logs its output
//! and exit status, so the HA loop never waits for a callback. [`run_bounded`] runs
//! `pre_promote` and `before_stop` to their end, killed (with their group) past a time limit.
//!
//! May touch: child processes it started and their process groups, nothing else.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// Patroni's callback actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallbackAction {
    Start,
    Stop,
    Restart,
    Reload,
    RoleChange,
}

impl CallbackAction {
    /// The action's name: the configuration key and the script's first appended argument.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CallbackAction::Start => "on_start",
            CallbackAction::Stop => "on_stop",
            CallbackAction::Restart => "on_restart",
            CallbackAction::Reload => "on_reload",
            CallbackAction::RoleChange => "on_role_change",
        }
    }
}

/// Why a command line cannot run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ScriptError {
    #[error("`{0}` cannot be split into words (an unclosed quote or a trailing backslash)")]
    Unsplittable(String),
    #[error("the command line is empty")]
    Empty,
}

/// The words of `command` (as Python's `shlex.split`) followed by `extra`.
pub(crate) fn argv(command: &str, extra: &[&str]) -> Result<Vec<String>, ScriptError> {
    let mut words =
        shlex::split(command).ok_or_else(|| ScriptError::Unsplittable(command.to_string()))?;
    if words.is_empty() {
        return Err(ScriptError::Empty);
    }
    words.extend(extra.iter().map(|s| s.to_string()));
    Ok(words)
}

/// A callback still running: asking it to stop kills its process group.
struct Running {
    argv: Vec<String>,
    kill: oneshot::Sender<()>,
}

/// Runs the callbacks one at a time (and `on_reload` in a slot of its own).
#[derive(Default)]
pub(crate) struct CallbackExecutor {
    main: Mutex<Option<Running>>,
    reload: Mutex<Option<Running>>,
}

impl CallbackExecutor {
    /// Start `argv` for `action` now, killing the callback still running in the same slot.
    /// Returns once the process is started (or failed to start); never waits for it.
    pub(crate) fn call(&self, action: CallbackAction, argv: Vec<String>) {
        let slot = if action == CallbackAction::Reload {
            &self.reload
        } else {
            &self.main
        };
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(prev) = slot.take()
            && prev.kill.send(()).is_ok()
        {
            tracing::warn!(command = ?prev.argv, "killing the callback still running");
        }
        let child = match spawn(&argv) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(command = ?argv, error = %e, "cannot run the callback");
                return;
            }
        };
        tracing::info!(command = ?argv, "callback started");
        let (kill, killed) = oneshot::channel();
        *slot = Some(Running {
            argv: argv.clone(),
            kill,
        });
        tokio::spawn(watch(child, argv, killed));
    }
}

/// Start `argv` as the leader of a new process group, its output piped to the log.
fn spawn(argv: &[String]) -> std::io::Result<Child> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn()?;
    log_lines(child.stdout.take(), argv[0].clone(), "stdout");
    log_lines(child.stderr.take(), argv[0].clone(), "stderr");
    Ok(child)
}

/// Log each line a script writes, on a task of its own.
fn log_lines<R: AsyncRead + Unpin + Send + 'static>(
    r: Option<R>,
    script: String,
    stream: &'static str,
) {
    let Some(r) = r else { return };
    tokio::spawn(async move {
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(script = %script, stream, "{line}");
        }
    });
}

/// Kill the process group whose leader is `child`. Called only while `child` is not reaped:
/// its pid (the group's id) cannot have been reused.
fn kill_group(child: &Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Wait for a callback; kill its group when a newer callback asks.
async fn watch(mut child: Child, argv: Vec<String>, killed: oneshot::Receiver<()>) {
    let status = tokio::select! {
        s = child.wait() => s,
        Ok(()) = killed => {
            kill_group(&child);
            let s = child.wait().await;
            tracing::warn!(command = ?argv, "killed the callback because a newer one started");
            s
        }
    };
    match status {
        Ok(s) if s.success() => tracing::info!(command = ?argv, "callback exited with 0"),
        Ok(s) => tracing::warn!(command = ?argv, status = %s, "callback failed"),
        Err(e) => tracing::error!(command = ?argv, error = %e, "cannot wait for the callback"),
    }
}

/// How a script run by [`run_bounded`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScriptOutcome {
    /// It exited with this code.
    Exited(i32),
    /// A signal ended it.
    Signalled(String),
    /// It ran past its time limit and was killed with its process group.
    TimedOut(Duration),
    /// It could not be started.
    NotStarted(String),
}

impl ScriptOutcome {
    /// Exited with 0.
    pub(crate) fn success(&self) -> bool {
        *self == ScriptOutcome::Exited(0)
    }
}

impl std::fmt::Display for ScriptOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScriptOutcome::Exited(c) => write!(f, "exited with {c}"),
            ScriptOutcome::Signalled(s) => write!(f, "ended by {s}"),
            ScriptOutcome::TimedOut(d) => {
                write!(f, "killed after {} ms (its time limit)", d.as_millis())
            }
            ScriptOutcome::NotStarted(e) => write!(f, "could not be started: {e}"),
        }
    }
}

/// Run `argv` to its end, at most `limit`; past it, kill its process group.
pub(crate) async fn run_bounded(argv: &[String], limit: Duration) -> ScriptOutcome {
    let mut child = match spawn(argv) {
        Ok(c) => c,
        Err(e) => return ScriptOutcome::NotStarted(e.to_string()),
    };
    let status = match tokio::time::timeout(limit, child.wait()).await {
        Ok(s) => s,
        Err(_) => {
            kill_group(&child);
            let _ = child.wait().await;
            return ScriptOutcome::TimedOut(limit);
        }
    };
    match status {
        Ok(s) => match s.code() {
            Some(c) => ScriptOutcome::Exited(c),
            None => ScriptOutcome::Signalled(s.to_string()),
        },
        Err(e) => ScriptOutcome::NotStarted(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn argv_splits_like_shlex_and_appends() {
        assert_eq!(
            argv(r#"/bin/echo "a b" 'c' d\ e"#, &["on_start", "primary", "s"]).as_deref(),
            Ok(&["/bin/echo", "a b", "c", "d e", "on_start", "primary", "s"].map(String::from)[..])
        );
        assert_eq!(argv("  ", &[]), Err(ScriptError::Empty));
        assert!(matches!(
            argv("'open", &[]),
            Err(ScriptError::Unsplittable(_))
        ));
    }

    #[tokio::test]
    async fn bounded_scripts_report_exit_codes_and_are_killed_at_the_limit() {
        let sh = |s: &str| vec!["/bin/sh".to_string(), "-c".to_string(), s.to_string()];
        assert!(
            run_bounded(&sh("exit 0"), Duration::from_secs(5))
                .await
                .success()
        );
        assert_eq!(
            run_bounded(&sh("exit 3"), Duration::from_secs(5)).await,
            ScriptOutcome::Exited(3)
        );
        let t = Instant::now();
        // The grandchild `sleep` is in the script's group: killed with it, or this would
        // hang on the pipe until it ends.
        let r = run_bounded(&sh("sleep 30 & sleep 30"), Duration::from_millis(300)).await;
        assert!(matches!(r, ScriptOutcome::TimedOut(_)), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(matches!(
            run_bounded(&["/nonexistent/script".into()], Duration::from_secs(1)).await,
            ScriptOutcome::NotStarted(_)
        ));
    }

    /// A new callback kills the one still running, with its whole process group.
    #[tokio::test]
    async fn a_new_callback_kills_the_running_one_and_its_group() {
        let dir = std::env::temp_dir().join(format!("regent-cb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pidfile = dir.join("pids");
        let ex = CallbackExecutor::default();
        let script = format!(
            "sleep 60 & echo $! >> {p}; echo $$ >> {p}; wait",
            p = pidfile.display()
        );
        ex.call(
            CallbackAction::Start,
            vec!["/bin/sh".into(), "-c".into(), script],
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let pids = loop {
            let text = std::fs::read_to_string(&pidfile).unwrap_or_default();
            let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            if pids.len() == 2 {
                break pids;
            }
            assert!(Instant::now() < deadline, "the first callback never ran");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        ex.call(
            CallbackAction::Stop,
            vec!["/bin/true".into(), "on_stop".into()],
        );
        let alive = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
        };
        loop {
            if pids.iter().all(|&p| !alive(p)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the first callback's processes survive: {pids:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
