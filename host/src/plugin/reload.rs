//! Hot reload: watch the policy directory (not the files: a rename-into-place replaces the
//! inode), debounce, and reload the policies whose manifest or component changed.

use super::PolicyError;
use super::set::PolicySet;
use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Quiet time after the last file event before reloading: a writer's Modify + Close(Write)
/// and a rename's events arrive within a few milliseconds.
pub const DEBOUNCE: Duration = Duration::from_millis(10);
/// Reload at the latest this long after the first event, even if events keep coming.
const MAX_SETTLE: Duration = Duration::from_millis(500);

enum Msg {
    Fs(notify::Result<notify::Event>),
    Stop,
}

/// Keeps the watcher running; dropping it stops watching (and waits for a reload in progress).
pub struct WatcherHandle {
    watcher: Option<notify::RecommendedWatcher>,
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WatcherHandle {
    fn drop(&mut self) {
        self.watcher.take();
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `dir/file` with `dir` canonical (so it compares with the paths notify reports).
fn normalize(p: &Path) -> PathBuf {
    match (p.parent(), p.file_name()) {
        (Some(dir), Some(file)) => {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            std::fs::canonicalize(dir)
                .map(|d| d.join(file))
                .unwrap_or_else(|_| p.to_path_buf())
        }
        _ => p.to_path_buf(),
    }
}

impl PolicySet {
    /// Watch the policy directory (and any other directory holding a component) and reload a
    /// policy when its `.toml` or `.wasm` changes: debounced, skipped when the content is
    /// unchanged, refused (old version serving) when the new files do not load. Reload results
    /// go to the log and to [`PolicySet::info`].
    pub fn watch(self: &Arc<Self>) -> Result<WatcherHandle, PolicyError> {
        let (tx, rx) = mpsc::channel();
        let fs_tx = tx.clone();
        let mut watcher = notify::recommended_watcher(move |r| {
            let _ = fs_tx.send(Msg::Fs(r));
        })
        .map_err(|e| PolicyError::Watch {
            path: self.dir().to_path_buf(),
            message: e.to_string(),
        })?;
        let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
        dirs.insert(self.dir().to_path_buf());
        for p in self.policies() {
            if let Some(parent) = normalize(p.component_path()).parent() {
                dirs.insert(parent.to_path_buf());
            }
        }
        for d in &dirs {
            watcher
                .watch(d, RecursiveMode::NonRecursive)
                .map_err(|e| PolicyError::Watch {
                    path: d.clone(),
                    message: e.to_string(),
                })?;
        }
        let weak = Arc::downgrade(self);
        let thread = std::thread::Builder::new()
            .name("regent-policy-reload".into())
            .spawn(move || run(weak, rx))
            .map_err(|e| PolicyError::Watch {
                path: self.dir().to_path_buf(),
                message: format!("cannot start the reload thread: {e}"),
            })?;
        tracing::info!(dirs = ?dirs, "watching policy files for changes");
        Ok(WatcherHandle {
            watcher: Some(watcher),
            tx,
            thread: Some(thread),
        })
    }

    /// The slots whose manifest or current component is one of `paths`.
    fn affected(&self, paths: &BTreeSet<PathBuf>) -> Vec<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                let manifest = normalize(&s.manifest_path);
                let component = normalize(s.current.load().component_path());
                paths.contains(&manifest) || paths.contains(&component)
            })
            .map(|(i, _)| i)
            .collect()
    }
}

fn relevant(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(_)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

fn collect(r: notify::Result<notify::Event>, into: &mut BTreeSet<PathBuf>) {
    match r {
        Ok(e) if relevant(&e.kind) => into.extend(e.paths),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "policy directory watch error"),
    }
}

fn run(set: Weak<PolicySet>, rx: Receiver<Msg>) {
    loop {
        let mut touched = BTreeSet::new();
        match rx.recv() {
            Ok(Msg::Fs(r)) => collect(r, &mut touched),
            Ok(Msg::Stop) | Err(_) => return,
        }
        let first = Instant::now();
        loop {
            match rx.recv_timeout(DEBOUNCE) {
                Ok(Msg::Fs(r)) => collect(r, &mut touched),
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => break,
            }
            if first.elapsed() > MAX_SETTLE {
                break;
            }
        }
        if touched.is_empty() {
            continue;
        }
        let Some(set) = set.upgrade() else {
            return;
        };
        for i in set.affected(&touched) {
            set.reload_slot(i);
        }
    }
}

#[allow(dead_code)]
fn _assert_send(h: WatcherHandle) -> impl Send {
    h
}
