//! The lab directory of a `regent lab` test: `regent lab ARGS --dir DIR` and its output; on
//! drop (a failed test included) the lab is taken down, and anything of it still running is
//! killed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::REGENT;

/// Every process of the lab whose state file is `lab.json` in `dir` (by the marker the lab
/// puts into their environment).
pub fn lab_processes(dir: &Path) -> Vec<regent::lab::procs::Proc> {
    let Ok(text) = std::fs::read_to_string(dir.join("lab.json")) else {
        return Vec::new();
    };
    let Ok(st) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    match st["id"].as_str() {
        Some(id) => regent::lab::procs::marked(&format!("{id}:")),
        None => Vec::new(),
    }
}

/// The lab directory; on drop (a failed test included) the lab is taken down, and anything
/// of it still running is killed.
pub struct LabDir {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

impl LabDir {
    pub fn new(prefix: &str) -> LabDir {
        let tmp = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("tempdir");
        let dir = tmp.path().join("lab");
        LabDir { _tmp: tmp, dir }
    }

    pub fn parent(&self) -> &Path {
        self._tmp.path()
    }

    /// `regent lab ARGS --dir DIR`.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = Command::new(REGENT)
            .arg("lab")
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .env_remove("REGENT_LAB_DIR")
            .output()
            .expect("run regent lab");
        eprintln!(
            "$ regent lab {} (exit {:?})\n{}{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Like `run`, and the command must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "regent lab {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["status", "--format", "json"])).expect("status JSON")
    }
}

impl Drop for LabDir {
    fn drop(&mut self) {
        if self.dir.join("lab.json").exists() {
            let _ = self.run(&["down"]);
        }
        for p in lab_processes(&self.dir) {
            p.signal(nix::sys::signal::Signal::SIGCONT);
            p.signal(nix::sys::signal::Signal::SIGKILL);
        }
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
