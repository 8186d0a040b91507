//! Helpers for the client tests (`regent ctl`, patronictl, HAProxy): running a command, and
//! an independent oracle for `list -f json` computed from the raw etcd keys.

use serde_json::{Map, Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A finished command.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Panic with everything the command said unless it exited 0.
    pub fn expect_ok(self, what: &str) -> Ran {
        assert!(self.ok(), "{what}: {self:?}");
        self
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// Run `cmd` with stdin closed (not a terminal) and collect its output.
pub fn run(cmd: &mut Command) -> Ran {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `regent ctl ARGS...`.
pub fn regent_ctl(args: &[&str]) -> Ran {
    run(Command::new(super::REGENT).arg("ctl").args(args))
}

fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// What `patronictl list -f json` must show for the cluster in these raw keys (scope `test`,
/// no synchronous mode): one object per member, sorted by name, empty values left out.
pub fn expected_list(kvs: &[(String, String)], scope: &str) -> Vec<Value> {
    let prefix = format!("/service/{scope}/");
    let get = |k: &str| {
        kvs.iter()
            .find(|(key, _)| *key == format!("{prefix}{k}"))
            .map(|(_, v)| v.clone())
    };
    let leader = get("leader");
    let optime = get("status")
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .and_then(|s| s["optime"].as_u64())
        .unwrap_or(0);
    let mut out = Vec::new();
    for (key, value) in kvs {
        let Some(name) = key.strip_prefix(&format!("{prefix}members/")) else {
            continue;
        };
        let m: Value = serde_json::from_str(value).expect("member JSON");
        let is_leader = leader.as_deref() == Some(name);
        let mut row = Map::new();
        row.insert("Cluster".into(), json!(scope));
        row.insert("Member".into(), json!(name));
        let host = m["conn_url"]
            .as_str()
            .and_then(|u| u.strip_prefix("postgres://"))
            .and_then(|u| u.split('/').next())
            .expect("conn_url");
        row.insert("Host".into(), json!(host));
        row.insert(
            "Role".into(),
            json!(if is_leader { "Leader" } else { "Replica" }),
        );
        let state = if is_leader {
            m["state"].clone()
        } else {
            m.get("replication_state")
                .filter(|s| s.as_str().is_some_and(|s| !s.is_empty()))
                .unwrap_or(&m["state"])
                .clone()
        };
        row.insert("State".into(), state);
        if let Some(tl) = m["timeline"].as_u64() {
            row.insert("TL".into(), json!(tl));
        }
        if !is_leader {
            for (field, lsn_col, lag_col) in [
                ("receive_lsn", "Receive LSN", "Receive Lag"),
                ("replay_lsn", "Replay LSN", "Replay Lag"),
            ] {
                if let Some(lsn) = m[field].as_u64().filter(|l| *l > 0) {
                    let lag = optime.saturating_sub(lsn) as f64 / 1024.0 / 1024.0;
                    row.insert(lsn_col.into(), json!(lsn_text(lsn)));
                    row.insert(lag_col.into(), json!(lag.round_ties_even() as u64));
                }
            }
        }
        if let Some(tags) = m["tags"].as_object().filter(|t| !t.is_empty()) {
            row.insert("Tags".into(), Value::Object(tags.clone()));
        }
        out.push(Value::Object(row));
    }
    out
}

/// Run `list` (through `cmd`) until its JSON matches the oracle on an unchanged key snapshot
/// (the keys move while members report new WAL positions); returns the listing.
pub fn list_matches_dcs(
    etcd: &super::Etcd,
    what: &str,
    mut list: impl FnMut() -> Ran,
    strip: &[&str],
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    loop {
        let before = etcd.get_prefix("/service/test/");
        let ran = list().expect_ok(what);
        let after = etcd.get_prefix("/service/test/");
        let mut got = ran.json().as_array().cloned().expect("a JSON array");
        for row in &mut got {
            if let Some(o) = row.as_object_mut() {
                for k in strip {
                    o.remove(*k);
                }
            }
        }
        if before == after {
            let want = expected_list(&before, "test");
            if got == want {
                return got;
            }
            last = format!("got  {}\nwant {}", Value::from(got), Value::from(want));
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the listing never matched the DCS:\n{last}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A virtualenv at `dir` made with `python`, holding Patroni 4 (`patroni`, `patronictl`) from
/// PyPI with etcd v3 support and psycopg; reused when a previous run finished it. Fails, never
/// skips, when it cannot be made.
pub fn patroni_venv(dir: &std::path::Path, python: &str) -> Result<std::path::PathBuf, String> {
    let done = dir.join(".regent-installed");
    if done.exists() && dir.join("bin/patroni").exists() {
        return Ok(dir.to_path_buf());
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).expect("remove a half-made virtualenv");
    }
    let r = run(Command::new(python).args(["-m", "venv"]).arg(dir));
    if !r.ok() {
        return Err(format!(
            "cannot create a virtualenv with `{python} -m venv` (Debian: apt-get install python3-venv): {r:?}"
        ));
    }
    // patronictl imports psycopg even for DCS-only commands.
    let r = run(Command::new(dir.join("bin/pip")).args([
        "install",
        "--quiet",
        "patroni[etcd3]",
        "psycopg[binary]",
    ]));
    if !r.ok() {
        return Err(format!(
            "pip install 'patroni[etcd3]' 'psycopg[binary]' failed (is PyPI reachable?): {r:?}"
        ));
    }
    let r = run(Command::new(dir.join("bin/patronictl")).arg("version"));
    assert!(
        r.ok() && r.stdout.starts_with("patronictl version"),
        "{r:?}"
    );
    std::fs::write(&done, r.stdout).expect("marker");
    Ok(dir.to_path_buf())
}
