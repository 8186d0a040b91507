//! A lab's life: checking the input and the machine, writing the lab directory, starting
//! etcd, the nodes and HAProxy, stopping them, and removing what the lab wrote.
//!
//! This module holds the [`Lab`] (opening it under its lock, its recorded processes, a node's
//! `POST /reload`) and `regent lab up` and `down`. The steps live in their own files:
//! `prepare.rs` checks everything and writes the lab directory, `policies.rs` finds, checks
//! and copies the policies, `start.rs` starts the components and `stop.rs` stops them and
//! removes the files.

mod policies;
mod prepare;
mod start;
mod stop;

pub(crate) use policies::{check_policies, copy_policies, load_policies, source_policies};

use super::procs::{self, Proc};
use super::spec::{self, Layout, node_name};
use super::state::{LabState, Lock, cmd};
use super::{LabError, LabOptions, say};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// An open lab: its state, held under the directory's lock.
pub(crate) struct Lab {
    pub(crate) layout: Layout,
    pub(crate) st: LabState,
    pub(crate) http: reqwest::Client,
    /// The components that should be running (a fault takes its target out): a wait for the
    /// cluster fails at once, with the end of its log, when one of them exits.
    pub(crate) expected: BTreeSet<String>,
    _lock: Lock,
}

/// `regent lab up`.
pub(crate) async fn up(
    dir: &Path,
    opts: &LabOptions,
    policies: Option<Vec<String>>,
) -> Result<(), LabError> {
    let (mut lab, fresh) = Lab::prepare(dir, opts, policies).await?;
    let t0 = Instant::now();
    let started = tokio::select! {
        r = lab.start(fresh, Duration::from_secs(opts.timeout)) => r,
        _ = tokio::signal::ctrl_c() => Err(LabError::Failed("interrupted".into())),
    };
    match started {
        Ok(leader) => {
            say(format!(
                "the lab is up after {:.1} s",
                t0.elapsed().as_secs_f64()
            ));
            let views = lab.views().await;
            super::out(lab.summary(leader, &views));
            Ok(())
        }
        Err(e) => Err(lab.abandon(e).await),
    }
}

impl Lab {
    /// The lab in `dir`, under its lock, or a message saying there is none and what to do.
    pub(crate) fn open(dir: &Path) -> Result<Lab, LabError> {
        let layout = Layout {
            dir: dir.to_path_buf(),
        };
        if !layout.state().is_file() {
            return Err(LabError::Usage(format!(
                "there is no lab in {} (no lab.json); start one with `{}`",
                dir.display(),
                cmd(dir, "up")
            )));
        }
        let lock = Lock::take(&layout)?;
        let st = LabState::load(&layout)?
            .ok_or_else(|| LabError::Usage(format!("there is no lab in {}", dir.display())))?;
        Lab::new(layout, st, lock)
    }

    pub(super) fn new(layout: Layout, st: LabState, lock: Lock) -> Result<Lab, LabError> {
        let expected = st
            .procs
            .iter()
            .filter(|(_, p)| p.alive())
            .map(|(k, _)| k.clone())
            .collect();
        Ok(Lab {
            layout,
            st,
            http: http_client()?,
            expected,
            _lock: lock,
        })
    }

    /// The running lab in `dir`: like [`Lab::open`], and etcd and some node must run.
    pub(crate) fn open_running(dir: &Path) -> Result<Lab, LabError> {
        let lab = Lab::open(dir)?;
        if !lab.proc("etcd").is_some_and(|p| p.alive())
            || !(0..lab.st.settings.nodes).any(|i| lab.node_proc(i).is_some_and(|p| p.alive()))
        {
            return Err(LabError::Usage(format!(
                "the lab in {} is not running; start it with `{}`",
                dir.display(),
                cmd(dir, "up")
            )));
        }
        Ok(lab)
    }

    pub(crate) fn proc(&self, what: &str) -> Option<Proc> {
        self.st.procs.get(what).copied()
    }

    pub(crate) fn node_proc(&self, i: usize) -> Option<Proc> {
        self.proc(&node_name(i))
    }

    /// The recorded processes that still run, and any other process carrying the lab's
    /// marker, as `name (pid N)`.
    pub(crate) fn running_processes(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .st
            .procs
            .iter()
            .filter(|(_, p)| p.alive())
            .map(|(k, p)| format!("{k} pid {}", p.pid))
            .collect();
        let recorded: Vec<i32> = self.st.procs.values().map(|p| p.pid).collect();
        let others = procs::marked(&self.st.marker(""))
            .into_iter()
            .filter(|p| !recorded.contains(&p.pid))
            .count();
        if others > 0 {
            out.push(format!("{others} more processes of the lab"));
        }
        out
    }

    /// `POST /reload` to node `i`: it re-reads its configuration file; the answer.
    pub(crate) async fn reload(&self, i: usize) -> Result<(u16, String), LabError> {
        let url = format!("http://127.0.0.1:{}/reload", self.st.ports.nodes[i].api);
        let r = self
            .http
            .post(&url)
            .basic_auth(spec::API_USER, Some(&self.st.password))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| LabError::Failed(format!("POST {url} failed: {e}")))?;
        let status = r.status().as_u16();
        Ok((
            status,
            r.text().await.unwrap_or_default().trim().to_string(),
        ))
    }
}

pub(super) fn http_client() -> Result<reqwest::Client, LabError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .user_agent(concat!("regent-lab/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| LabError::Failed(format!("cannot build the HTTP client: {e}")))
}

/// `regent lab down`.
pub(crate) async fn down(dir: &Path, keep_data: bool) -> Result<(), LabError> {
    let layout = Layout {
        dir: dir.to_path_buf(),
    };
    if !dir.exists() {
        say(format!(
            "there is no lab in {} (no such directory): nothing to do",
            dir.display()
        ));
        return Ok(());
    }
    let mut lab = Lab::open(dir)?;
    let t0 = Instant::now();
    // An interrupted partition's firewall rules and cgroups go first.
    super::fault::clean_leftovers(&lab.st.id);
    lab.stop_all().await?;
    say(format!(
        "stopped the lab in {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    lab.st.procs.clear();
    if keep_data {
        lab.st.save(&layout)?;
        outln!(
            "The lab in {} is stopped; its data is kept. `{}` starts it again, `{}` removes it.",
            dir.display(),
            cmd(dir, "up"),
            cmd(dir, "down")
        );
    } else {
        lab.remove_files()?;
        outln!("The lab in {} is stopped and removed.", dir.display());
    }
    Ok(())
}
