//! The Patroni baseline of `regent lab compare --supervisor patroni`: the same lab (data
//! directories, etcd, ports, writer, faults) with Patroni supervising the nodes instead of
//! `regent run`, so that a comparison shows Regent's policies and Patroni measured on the same
//! machine in the same run.
//!
//! Invariants:
//! - Which supervisor runs the nodes is recorded in the state file ([`Supervisor`]), so every
//!   command that starts a node (`compare` between runs, `fault restart-node`) starts the
//!   right one, and a lab that is stopped starts under Regent again.
//! - Patroni runs as the OS user PostgreSQL runs as (through `setpriv` when the lab runs as
//!   root), detached and marked like every process of the lab: the faults hit Patroni's
//!   process, its group and its postmaster as they hit Regent's.
//! - Each node's Patroni configuration (`nodeN.patroni.yml`, listed in the owned entries) is
//!   derived from the node's own YAML minus what only Regent reads; it is written when Patroni
//!   takes over and removed when Regent takes back.
//! - The lab's timing must be what Patroni runs with: Patroni raises a `ttl` below 20 s (and a
//!   `retry_timeout` below 3 s) on its own, which would compare a longer lease with a shorter
//!   one, so such a lab is refused for the baseline instead.

use super::LabError;
use super::ops::Lab;
use super::procs::{self, Proc};
use super::spec::{self, Settings, node_name};
use super::state::cmd;
use serde::{Deserialize, Serialize};
use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Patroni's shortest lease: it raises a smaller `ttl` to this.
pub(crate) const MIN_TTL: u64 = 20;
/// Patroni's shortest `retry_timeout`.
pub(crate) const MIN_RETRY_TIMEOUT: u64 = 3;

/// How to get Patroni, for the messages that need it.
const INSTALL: &str = "install it into a virtualenv the postgres user can read, e.g. `/usr/bin/python3 -m venv /opt/patroni && /opt/patroni/bin/pip install 'patroni[etcd3]' 'psycopg[binary]'`, then pass --patroni-bin /opt/patroni/bin/patroni (or put it on PATH)";

/// What supervises the lab's nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub(crate) enum Supervisor {
    /// `regent run` (this binary).
    #[default]
    Regent,
    /// Patroni, this program.
    Patroni { bin: PathBuf },
}

impl Supervisor {
    /// `regent` or `patroni`, for messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Supervisor::Regent => "regent",
            Supervisor::Patroni { .. } => "patroni",
        }
    }
}

/// The OS user PostgreSQL (and so Patroni) runs as when the lab runs as root.
fn os_user_now() -> Option<&'static str> {
    nix::unistd::Uid::effective()
        .is_root()
        .then_some(spec::SUPERUSER)
}

/// The program and leading arguments that run `bin` as `os_user` (or as we are).
fn command(bin: &Path, os_user: Option<&str>) -> Result<(PathBuf, Vec<String>), LabError> {
    let Some(u) = os_user else {
        return Ok((bin.to_path_buf(), Vec::new()));
    };
    let setpriv = procs::which("setpriv").ok_or_else(|| {
        LabError::Usage(format!(
            "--supervisor patroni: Patroni must run as the OS user {u}, which needs setpriv; install it (Debian: apt-get install util-linux)"
        ))
    })?;
    Ok((
        setpriv,
        vec![
            format!("--reuid={u}"),
            format!("--regid={u}"),
            "--init-groups".into(),
            "--".into(),
            bin.display().to_string(),
        ],
    ))
}

/// The Patroni to compare: `--patroni-bin`, else `patroni` on PATH, run once with `--version`
/// as the user it will run as. The supervisor and its version (`patroni 4.1.5`); bad input
/// (no Patroni, one that does not run) is a usage error naming the fix.
pub(crate) fn find(given: Option<&Path>) -> Result<(Supervisor, String), LabError> {
    let bin = match given {
        Some(p) if !p.is_absolute() => {
            return Err(LabError::Usage(format!(
                "--patroni-bin {}: give an absolute path, e.g. --patroni-bin /opt/patroni/bin/patroni",
                p.display()
            )));
        }
        Some(p) if !p.is_file() => {
            return Err(LabError::Usage(format!(
                "--supervisor patroni: --patroni-bin {} does not exist; {INSTALL}",
                p.display()
            )));
        }
        Some(p) => p.to_path_buf(),
        None => procs::which("patroni").ok_or_else(|| {
            LabError::Usage(format!(
                "--supervisor patroni: there is no `patroni` on PATH; {INSTALL}"
            ))
        })?,
    };
    let user = os_user_now();
    let (program, mut args) = command(&bin, user)?;
    args.push("--version".into());
    let out = std::process::Command::new(&program)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output();
    let as_whom = user.map_or(String::new(), |u| format!(" as the OS user {u}"));
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if !text.starts_with("patroni ") {
                return Err(LabError::Usage(format!(
                    "--supervisor patroni: {} --version says {text:?}, not `patroni <version>`; {INSTALL}",
                    bin.display()
                )));
            }
            Ok((Supervisor::Patroni { bin }, text))
        }
        Ok(o) => Err(LabError::Usage(format!(
            "--supervisor patroni: {} does not run{as_whom} ({}); {INSTALL}",
            bin.display(),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("no output")
                .trim()
        ))),
        Err(e) => Err(LabError::Usage(format!(
            "--supervisor patroni: cannot run {}{as_whom}: {e}; {INSTALL}",
            bin.display()
        ))),
    }
}

/// What Patroni would not run as given: the lab's timing below its minimums. `fix` says what
/// to do about it.
pub(crate) fn check_timing(
    ttl: Option<u64>,
    retry_timeout: Option<u64>,
    fix: &str,
) -> Result<(), LabError> {
    let mut bad = Vec::new();
    if let Some(t) = ttl.filter(|t| *t < MIN_TTL) {
        bad.push(format!("ttl {t} s (Patroni's least is {MIN_TTL} s)"));
    }
    if let Some(r) = retry_timeout.filter(|r| *r < MIN_RETRY_TIMEOUT) {
        bad.push(format!(
            "retry_timeout {r} s (Patroni's least is {MIN_RETRY_TIMEOUT} s)"
        ));
    }
    if bad.is_empty() {
        return Ok(());
    }
    Err(LabError::Usage(format!(
        "--supervisor patroni: Patroni would raise the lab's {} on its own and so compare a longer lease with Regent's shorter one; {fix}",
        bad.join(" and ")
    )))
}

/// A running or stopped lab's settings, for the baseline.
pub(crate) fn check_settings(s: &Settings, dir: &Path) -> Result<(), LabError> {
    check_timing(
        Some(s.ttl),
        Some(s.retry_timeout),
        &format!(
            "remove it with `{}` and let compare start one (--supervisor patroni makes its ttl {MIN_TTL} s), or use another --dir",
            cmd(dir, "down")
        ),
    )
}

/// Node `i`'s Patroni configuration, from its Regent configuration: the same member, ports,
/// etcd, authentication, data directory and tags, without what only Regent reads (the
/// `regent:` section, `postgresql.os_user`), with Patroni's password file in `pgpass`.
pub(crate) fn patroni_yaml(regent_yaml: &str, pgpass: &Path) -> Result<String, String> {
    let mut doc: Value = serde_yaml::from_str(regent_yaml).map_err(|e| e.to_string())?;
    let top = doc
        .as_mapping_mut()
        .ok_or("the node configuration is not a mapping")?;
    top.remove("regent");
    let pg = top
        .get_mut("postgresql")
        .and_then(Value::as_mapping_mut)
        .ok_or("the node configuration has no postgresql section")?;
    pg.remove("os_user");
    pg.insert("pgpass".into(), pgpass.display().to_string().into());
    let body = serde_yaml::to_string(&doc).map_err(|e| e.to_string())?;
    Ok(format!(
        "# Patroni's configuration of this lab node, derived from its Regent configuration by\n# `regent lab compare --supervisor patroni`; removed when Regent takes the node back.\n{body}"
    ))
}

impl Lab {
    /// Write node `i`'s Patroni configuration (readable by the OS user Patroni runs as).
    fn write_patroni_config(&self, i: usize) -> Result<PathBuf, LabError> {
        let path = self.layout.patroni_config(i);
        let regent = spec::node_yaml(
            &self.layout,
            &self.st.settings,
            &self.st.ports,
            &self.st.password,
            i,
        );
        let yaml = patroni_yaml(&regent, &self.layout.node_dir(i).join("pgpass")).map_err(|e| {
            LabError::Failed(format!(
                "cannot derive {}'s Patroni configuration: {e}",
                node_name(i)
            ))
        })?;
        let io =
            |e: std::io::Error| LabError::Failed(format!("cannot write {}: {e}", path.display()));
        super::state::write_private(&path, &yaml).map_err(io)?;
        if let Some(u) = &self.st.settings.os_user {
            let user = nix::unistd::User::from_name(u)
                .ok()
                .flatten()
                .ok_or_else(|| {
                    LabError::Failed(format!("the OS user {u} of the lab's PostgreSQL is gone"))
                })?;
            nix::unistd::chown(&path, Some(user.uid), Some(user.gid))
                .map_err(|e| io(std::io::Error::from(e)))?;
        }
        Ok(path)
    }

    /// Remove the nodes' Patroni configurations (they hold the lab's password), once Patroni
    /// is stopped.
    pub(crate) fn remove_patroni_configs(&self) {
        for i in 0..self.st.settings.nodes {
            let _ = std::fs::remove_file(self.layout.patroni_config(i));
        }
    }

    /// Start Patroni `bin` for node `i`, as the lab's PostgreSQL OS user, its output into the
    /// node's log.
    pub(crate) fn start_patroni(&mut self, i: usize, bin: &Path) -> Result<Proc, LabError> {
        let config = self.write_patroni_config(i)?;
        let (program, mut args) = command(bin, self.st.settings.os_user.as_deref())?;
        args.push(config.display().to_string());
        let home = self.layout.node_dir(i).display().to_string();
        let log = self.layout.log(i);
        self.spawn(
            &node_name(i),
            &program,
            &args,
            &log,
            // Patroni (and Python) look into the home directory; the node's is the OS user's.
            &[("HOME", &home), ("LC_ALL", "C.UTF-8"), ("LANG", "C.UTF-8")],
        )
    }

    /// Have `sup` supervise every node: stop the nodes (replicas first, the leader last),
    /// record the supervisor, start the last leader alone until it leads, then the others,
    /// and wait until the cluster is healthy. Nothing happens if `sup` runs them already.
    pub(crate) async fn use_supervisor(&mut self, sup: &Supervisor) -> Result<(), LabError> {
        if &self.st.supervisor == sup {
            return Ok(());
        }
        let t0 = Instant::now();
        super::say(format!(
            "{} takes over the nodes from {}",
            sup.name(),
            self.st.supervisor.name()
        ));
        self.stop_nodes().await?;
        self.st.supervisor = sup.clone();
        self.st.save(&self.layout)?;
        if sup == &Supervisor::Regent {
            self.remove_patroni_configs();
        }
        let first = self
            .st
            .last_leader
            .filter(|l| *l < self.st.settings.nodes)
            .unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(180);
        self.start_nodes(first, false, deadline).await?;
        super::say(format!(
            "{} supervises the nodes, after {:.1} s",
            sup.name(),
            t0.elapsed().as_secs_f64()
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::spec::{Layout, Ports, Requested};

    #[test]
    fn the_patroni_configuration_is_the_node_s_without_regent_s_keys() {
        let layout = Layout {
            dir: PathBuf::from("/tmp/lab x"),
        };
        let s = Requested {
            policies: Some(vec!["zone-aware".into()]),
            ttl: Some(20),
            ..Requested::default()
        }
        .settings(
            PathBuf::from("/usr/lib/postgresql/15/bin"),
            Some("postgres".into()),
        )
        .expect("settings");
        let ports = Ports::from_base(7000, 3, false).expect("ports");
        let regent = spec::node_yaml(&layout, &s, &ports, "pw: x", 2);
        let text = patroni_yaml(&regent, &layout.node_dir(2).join("pgpass")).expect("derived");
        let doc: Value = serde_yaml::from_str(&text).expect("YAML");
        assert!(doc.get("regent").is_none(), "{text}");
        let pg = &doc["postgresql"];
        assert!(pg.get("os_user").is_none(), "{text}");
        assert_eq!(pg["pgpass"].as_str(), Some("/tmp/lab x/node3/pgpass"));
        assert_eq!(pg["listen"].as_str(), Some("127.0.0.1:7022"));
        assert_eq!(pg["data_dir"].as_str(), Some("/tmp/lab x/node3/data"));
        assert_eq!(
            pg["authentication"]["superuser"]["password"].as_str(),
            Some("pw: x")
        );
        assert_eq!(doc["name"].as_str(), Some("node3"));
        assert_eq!(doc["restapi"]["listen"].as_str(), Some("127.0.0.1:7012"));
        assert_eq!(doc["etcd3"]["hosts"][0].as_str(), Some("127.0.0.1:7000"));
        assert_eq!(doc["bootstrap"]["dcs"]["ttl"].as_u64(), Some(20));
        assert_eq!(doc["tags"]["zone"].as_str(), Some("a"));
        // Still a configuration Regent loads: nothing but Regent's own keys went.
        let c = crate::config::parse(&text).expect("loads").config;
        assert!(c.regent.policies.is_empty());
        assert!(patroni_yaml("- a list", Path::new("/p")).is_err());
    }

    #[test]
    fn timing_below_patroni_s_minimums_is_refused_with_the_fix() {
        assert!(check_timing(Some(20), Some(3), "x").is_ok());
        assert!(check_timing(None, None, "x").is_ok());
        let e = check_timing(Some(10), Some(2), "give --ttl 20").expect_err("short");
        let m = e.to_string();
        assert!(matches!(e, LabError::Usage(_)));
        assert!(
            m.starts_with("--supervisor patroni: Patroni would raise the lab's ttl 10 s (Patroni's least is 20 s) and retry_timeout 2 s"),
            "{m}"
        );
        assert!(m.ends_with("; give --ttl 20"), "{m}");
    }

    #[test]
    fn a_missing_patroni_is_bad_input_with_the_install_hint() {
        for given in [
            Some(Path::new("/nonexistent/patroni")),
            Some(Path::new("rel")),
        ] {
            let e = find(given).expect_err("no patroni");
            assert!(matches!(e, LabError::Usage(_)), "{e}");
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
        let e = find(Some(Path::new("/nonexistent/patroni"))).expect_err("missing");
        assert!(
            e.to_string()
                .contains("pip install 'patroni[etcd3]' 'psycopg[binary]'"),
            "{e}"
        );
        // A program that is not Patroni.
        let e = find(Some(Path::new("/bin/true"))).expect_err("not patroni");
        assert!(e.to_string().contains("not `patroni <version>`"), "{e}");
    }

    #[test]
    fn the_supervisor_round_trips_in_the_state_file() {
        let p = Supervisor::Patroni {
            bin: PathBuf::from("/opt/p/bin/patroni"),
        };
        let j = serde_json::to_value(&p).expect("json");
        assert_eq!(j["kind"], "patroni");
        assert_eq!(serde_json::from_value::<Supervisor>(j).expect("back"), p);
        assert_eq!(Supervisor::default().name(), "regent");
    }
}
