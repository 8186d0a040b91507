//! The lab directory's state file (`lab.json`: settings, ports, password, the processes
//! started) and its lock (`lab.lock`), which keeps two `regent lab` commands from changing
//! one lab at the same time.

use super::LabError;
use super::patroni::Supervisor;
use super::procs::Proc;
use super::spec::{Layout, Ports, Settings};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const FORMAT: u32 = 1;

/// Everything `regent lab` needs to find a lab again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct LabState {
    pub(crate) format: u32,
    /// Random; every process the lab starts carries it in its environment (see `procs`).
    pub(crate) id: String,
    /// The directory the lab was created in (the configurations hold absolute paths).
    pub(crate) dir: PathBuf,
    /// Whether `regent lab up` created the directory (then `down` removes it too).
    pub(crate) created_dir: bool,
    pub(crate) settings: Settings,
    pub(crate) ports: Ports,
    /// The password of the PostgreSQL superuser, the replication user and the REST API.
    pub(crate) password: String,
    /// The processes started, by component: `etcd`, `node1`.., `haproxy`.
    #[serde(default)]
    pub(crate) procs: BTreeMap<String, Proc>,
    /// The node that led when the lab was last stopped: it starts first next time, so that
    /// the node with the newest WAL leads again.
    #[serde(default)]
    pub(crate) last_leader: Option<usize>,
    /// What supervises the nodes: `regent run`, or Patroni for `compare --supervisor patroni`.
    #[serde(default)]
    pub(crate) supervisor: Supervisor,
}

impl LabState {
    pub(crate) fn new(
        dir: PathBuf,
        created_dir: bool,
        settings: Settings,
        ports: Ports,
    ) -> Result<LabState, LabError> {
        Ok(LabState {
            format: FORMAT,
            id: random_hex(8)?,
            dir,
            created_dir,
            settings,
            ports,
            password: random_hex(12)?,
            procs: BTreeMap::new(),
            last_leader: None,
            supervisor: Supervisor::Regent,
        })
    }

    /// Read the state file of the lab in `layout`; `Ok(None)` when there is none.
    pub(crate) fn load(layout: &Layout) -> Result<Option<LabState>, LabError> {
        let path = layout.state();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(LabError::Failed(format!(
                    "cannot read {}: {e}; run regent lab as the user that created the lab",
                    path.display()
                )));
            }
        };
        let st: LabState = serde_json::from_str(&text).map_err(|e| {
            LabError::Failed(format!(
                "{} is not a regent lab state file ({e}); if the lab is gone, remove the directory yourself",
                path.display()
            ))
        })?;
        if st.format != FORMAT {
            return Err(LabError::Failed(format!(
                "{} has format {}, this regent reads format {FORMAT}; use the regent that created the lab",
                path.display(),
                st.format
            )));
        }
        if st.dir != layout.dir {
            return Err(LabError::Failed(format!(
                "the lab in {} was created in {} (its configurations name that path); move it back, or remove it and start a new one",
                layout.dir.display(),
                st.dir.display()
            )));
        }
        Ok(Some(st))
    }

    /// Write the state file atomically (a temporary file renamed into place).
    pub(crate) fn save(&self, layout: &Layout) -> Result<(), LabError> {
        let path = layout.state();
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| LabError::Failed(format!("cannot encode the lab state: {e}")))?;
        write_private(&tmp, &(text + "\n"))
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| LabError::Failed(format!("cannot write {}: {e}", path.display())))
    }

    /// The marker value of component `what` (see `procs::MARKER`).
    pub(crate) fn marker(&self, what: &str) -> String {
        format!("{}:{what}", self.id)
    }
}

/// Write `text` to a new file only its owner may read (it holds the lab's password).
pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// `n` random bytes as hex, from the kernel.
fn random_hex(n: usize) -> Result<String, LabError> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| LabError::Failed(format!("cannot read /dev/urandom: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The exclusive lock on a lab directory, held for the lifetime of one command.
pub(crate) struct Lock {
    _file: Option<nix::fcntl::Flock<std::fs::File>>,
}

impl Lock {
    /// No lock, for commands that only read.
    pub(crate) fn none() -> Lock {
        Lock { _file: None }
    }

    /// Take the lock of the lab in `dir` (which must exist), or say who holds it.
    pub(crate) fn take(layout: &Layout) -> Result<Lock, LabError> {
        let path = layout.lock();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| LabError::Failed(format!("cannot open {}: {e}", path.display())))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(mut f) => {
                let _ = f.set_len(0);
                let _ = writeln!(*f, "{}", std::process::id());
                Ok(Lock { _file: Some(f) })
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                Err(LabError::Usage(format!(
                    "another regent lab command (pid {}) is working on the lab in {}; wait for it to finish, or use another --dir",
                    holder.trim(),
                    layout.dir.display()
                )))
            }
            Err((_, e)) => Err(LabError::Failed(format!(
                "cannot lock {}: {e}",
                path.display()
            ))),
        }
    }
}

/// The default lab directory: `<temp>/regent-lab`.
pub(crate) fn default_dir() -> PathBuf {
    std::env::temp_dir().join("regent-lab")
}

/// The command line `regent lab SUB` for the lab in `dir` (with `--dir` unless it is the
/// default), for messages that tell what to run next.
pub(crate) fn cmd(dir: &Path, sub: &str) -> String {
    if dir == default_dir() {
        format!("regent lab {sub}")
    } else {
        format!("regent lab {sub} --dir {}", dir.display())
    }
}

/// The lab directory to use: `dir` made absolute, else the default `<temp>/regent-lab`.
pub(crate) fn resolve_dir(dir: Option<&Path>) -> Result<PathBuf, LabError> {
    let d = dir.map(Path::to_path_buf).unwrap_or_else(default_dir);
    let abs = if d.is_absolute() {
        d
    } else {
        std::env::current_dir()
            .map_err(|e| LabError::Failed(format!("cannot read the current directory: {e}")))?
            .join(d)
    };
    // Lexically normal: no `.` or `..` (the path goes into configurations and messages).
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::spec::Requested;

    fn state(dir: &Path) -> LabState {
        let settings = Requested::default()
            .settings(PathBuf::from("/usr/lib/postgresql/15/bin"), None)
            .expect("settings");
        let ports = Ports::from_base(7000, 3, false).expect("ports");
        LabState::new(dir.to_path_buf(), true, settings, ports).expect("state")
    }

    #[test]
    fn the_state_file_round_trips_and_refuses_a_moved_lab() {
        let tmp = tempfile::tempdir().expect("tmp");
        let layout = Layout {
            dir: tmp.path().to_path_buf(),
        };
        assert_eq!(LabState::load(&layout).expect("no file"), None);
        let mut st = state(tmp.path());
        st.procs.insert("etcd".into(), Proc { pid: 42, start: 7 });
        st.save(&layout).expect("save");
        assert_eq!(LabState::load(&layout).expect("load"), Some(st.clone()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(layout.state())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "only its owner reads the password");
        assert_eq!(st.id.len(), 16);
        assert_eq!(st.password.len(), 24);
        assert_ne!(st.id, state(tmp.path()).id, "ids are random");

        let moved = Layout {
            dir: tmp.path().join("elsewhere"),
        };
        std::fs::create_dir(&moved.dir).expect("dir");
        std::fs::copy(layout.state(), moved.state()).expect("copy");
        let e = LabState::load(&moved).expect_err("moved");
        assert!(e.to_string().contains("was created in"), "{e}");

        std::fs::write(layout.state(), "not json").expect("write");
        let e = LabState::load(&layout).expect_err("garbage");
        assert!(
            e.to_string().contains("is not a regent lab state file"),
            "{e}"
        );
    }

    #[test]
    fn a_second_lock_on_the_same_lab_is_refused_with_the_holder() {
        let tmp = tempfile::tempdir().expect("tmp");
        let layout = Layout {
            dir: tmp.path().to_path_buf(),
        };
        let held = Lock::take(&layout).expect("first");
        let e = Lock::take(&layout).err().expect("second is refused");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("(pid {})", std::process::id())),
            "{msg}"
        );
        drop(held);
        Lock::take(&layout).expect("free again");
    }

    #[test]
    fn lab_directories_are_absolute_and_normal() {
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(
            resolve_dir(Some(Path::new("a/./b/../lab"))).expect("dir"),
            cwd.join("a/lab")
        );
        assert_eq!(
            resolve_dir(None).expect("default"),
            std::env::temp_dir().join("regent-lab")
        );
        assert_eq!(cmd(&default_dir(), "down"), "regent lab down");
        assert_eq!(
            cmd(Path::new("/srv/lab"), "fault restart-node 2"),
            "regent lab fault restart-node 2 --dir /srv/lab"
        );
    }
}
