//! A lab's life: checking the input and the machine, writing the lab directory, starting
//! etcd, the nodes and HAProxy, stopping them, and removing what the lab wrote.

use super::measure;
use super::procs::{self, Proc};
use super::spec::{self, Layout, Ports, node_name};
use super::state::{LabState, Lock, cmd};
use super::{LabError, LabOptions, say};
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// An open lab: its state, held under the directory's lock.
pub struct Lab {
    pub layout: Layout,
    pub st: LabState,
    pub http: reqwest::Client,
    /// The components that should be running (a fault takes its target out): a wait for the
    /// cluster fails at once, with the end of its log, when one of them exits.
    pub expected: BTreeSet<String>,
    _lock: Lock,
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// When root: the `postgres` user PostgreSQL runs as.
fn pg_os_user() -> Result<Option<nix::unistd::User>, LabError> {
    if !is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name("postgres") {
        Ok(Some(u)) => Ok(Some(u)),
        _ => Err(LabError::Usage(
            "regent lab runs as root, so PostgreSQL must run as the OS user `postgres`, which does not exist; create it (Debian's postgresql package does: apt-get install postgresql), or run regent lab as an ordinary user".into(),
        )),
    }
}

/// Whether `user` may enter the directory with metadata `m`.
fn can_search(m: &std::fs::Metadata, user: &nix::unistd::User) -> bool {
    use std::os::unix::fs::MetadataExt;
    let mode = m.mode();
    if m.uid() == user.uid.as_raw() {
        mode & 0o100 != 0
    } else if m.gid() == user.gid.as_raw() {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

/// When PostgreSQL runs as another user: every existing directory on the way to `dir` must
/// let it through.
fn check_reachable(dir: &Path, user: &nix::unistd::User) -> Result<(), LabError> {
    use std::os::unix::fs::PermissionsExt;
    for a in dir.ancestors() {
        let Ok(m) = std::fs::metadata(a) else {
            continue;
        };
        if !can_search(&m, user) {
            return Err(LabError::Usage(format!(
                "PostgreSQL runs as the OS user `postgres`, which cannot reach {} because {} has mode {:04o}; choose a --dir it can reach, e.g. under /tmp (the default is {})",
                dir.display(),
                a.display(),
                m.permissions().mode() & 0o7777,
                super::state::default_dir().display()
            )));
        }
    }
    Ok(())
}

/// The PostgreSQL programs, found as `regent run` finds them.
fn find_bin_dir(given: Option<&Path>) -> Result<PathBuf, LabError> {
    if let Some(d) = given
        && !d.is_absolute()
    {
        return Err(LabError::Usage(format!(
            "--bin-dir {}: give an absolute path, e.g. --bin-dir /usr/lib/postgresql/15/bin",
            d.display()
        )));
    }
    crate::config::find_bin_dir(given).map_err(|e| {
        LabError::Usage(format!(
            "the PostgreSQL programs were not found ({e}); for the lab, install PostgreSQL or pass --bin-dir DIR"
        ))
    })
}

/// Ports that are free now: each was bound and released (all held at once, so distinct).
fn free_ports(n: usize) -> Result<Vec<u16>, LabError> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| LabError::Failed(format!("cannot find free ports on 127.0.0.1: {e}")))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| LabError::Failed(format!("cannot find free ports on 127.0.0.1: {e}")))
}

/// Every port of `ports` must be free on 127.0.0.1; the error names the port and its use.
fn check_ports_free(ports: &Ports, fix: &str) -> Result<(), LabError> {
    for (what, port) in ports.all() {
        if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return Err(LabError::Usage(format!(
                "port {port} on 127.0.0.1, for {what}, is not free ({e}); {fix}"
            )));
        }
    }
    Ok(())
}

/// The policy directory to copy from: `--policies-dir`, else `./policies` when it exists.
pub fn source_policies(given: Option<&Path>) -> Result<Option<PathBuf>, LabError> {
    match given {
        Some(d) if d.is_dir() => Ok(Some(d.to_path_buf())),
        Some(d) => Err(LabError::Usage(format!(
            "--policies-dir {}: no such directory; point it at a directory of policy manifests (NAME.toml) and components, e.g. the repository's policies/",
            d.display()
        ))),
        None => Ok(std::env::current_dir()
            .ok()
            .map(|d| d.join("policies"))
            .filter(|d| d.is_dir())),
    }
}

/// The policy names in `dir` (its `*.toml` manifests).
fn available_policies(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(Result::ok)
                .filter_map(|e| {
                    let p = e.path();
                    (p.extension()? == "toml")
                        .then(|| p.file_stem()?.to_str().map(str::to_string))
                        .flatten()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every named policy must have its manifest in `dir`.
pub fn check_policies(names: &[String], dir: &Path, source: Option<&Path>) -> Result<(), LabError> {
    for n in names {
        if !dir.join(format!("{n}.toml")).is_file() {
            let have = available_policies(dir);
            return Err(LabError::Usage(format!(
                "policy {n}: no {n}.toml in {}{}; the policies there are: {}; pass --policies-dir with the directory that holds it",
                dir.display(),
                source
                    .map(|s| format!(" (copied from {})", s.display()))
                    .unwrap_or_default(),
                if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                }
            )));
        }
    }
    Ok(())
}

/// Every named policy in `dir` must load and pass its self-test, as `regent policy check`
/// checks it (so that no node refuses it later).
pub fn load_policies(names: &[String], dir: &Path) -> Result<(), LabError> {
    for n in names {
        let manifest = dir.join(format!("{n}.toml"));
        // On a thread of its own: a guest's WASI streams must not block on an async worker.
        let checked = std::thread::scope(|s| {
            s.spawn(|| crate::plugin::check(&manifest))
                .join()
                .unwrap_or_else(|_| {
                    Err(crate::plugin::PolicyError::Load {
                        name: n.clone(),
                        message: "checking it panicked".into(),
                    })
                })
        });
        checked.map_err(|e| {
            LabError::Usage(format!(
                "policy {n} ({}) cannot be used: {e}",
                manifest.display()
            ))
        })?;
    }
    Ok(())
}

/// Copy the manifests and components of `from` into the lab's policy directory (a file being
/// replaced is written beside it and renamed into place, so a node never reads half of it).
pub fn copy_policies(from: &Path, to: &Path) -> Result<(), LabError> {
    let err = |e: std::io::Error| {
        LabError::Failed(format!(
            "cannot copy the policies from {} to {}: {e}",
            from.display(),
            to.display()
        ))
    };
    std::fs::create_dir_all(to).map_err(err)?;
    for entry in std::fs::read_dir(from).map_err(err)? {
        let p = entry.map_err(err)?.path();
        let Some(name) = p.file_name() else { continue };
        if p.is_file() && p.extension().is_some_and(|e| e == "toml" || e == "wasm") {
            let tmp = to.join(format!(".{}.tmp", name.to_string_lossy()));
            std::fs::copy(&p, &tmp)
                .and_then(|_| std::fs::rename(&tmp, to.join(name)))
                .map_err(err)?;
        }
    }
    Ok(())
}

/// `regent lab up`.
pub async fn up(
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
    pub fn open(dir: &Path) -> Result<Lab, LabError> {
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
    pub fn open_running(dir: &Path) -> Result<Lab, LabError> {
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

    /// A lab ready to start in `dir`: a new one (`true`), written from the options, or the
    /// stopped lab that is there (`false`). Nothing is started yet; bad input changes nothing.
    pub async fn prepare(
        dir: &Path,
        opts: &LabOptions,
        policies: Option<Vec<String>>,
    ) -> Result<(Lab, bool), LabError> {
        let layout = Layout {
            dir: dir.to_path_buf(),
        };
        let requested = opts.requested(policies);
        if layout.state().is_file() {
            let lock = Lock::take(&layout)?;
            let st = LabState::load(&layout)?.ok_or_else(|| {
                LabError::Failed(format!("{} vanished", layout.state().display()))
            })?;
            let lab = Lab::new(layout, st, lock)?;
            let running = lab.running_processes();
            if !running.is_empty() {
                return Err(LabError::Usage(format!(
                    "{} already holds a running lab ({}); `{}` shows it, `{}` stops it, or choose another --dir",
                    dir.display(),
                    running.join(", "),
                    cmd(dir, "status"),
                    cmd(dir, "down")
                )));
            }
            let conflicts = requested.conflicts(&lab.st.settings);
            if !conflicts.is_empty() || opts.base_port.is_some() {
                let mut all = conflicts;
                if let Some(b) = opts.base_port {
                    all.push(format!("--base-port {b} (the lab keeps its ports)"));
                }
                return Err(LabError::Usage(format!(
                    "{} holds a stopped lab whose settings differ from {}; leave these out to start it again as it was, or remove it with `{}` and start a new one",
                    dir.display(),
                    all.join(", "),
                    cmd(dir, "down")
                )));
            }
            check_ports_free(
                &lab.st.ports,
                &format!(
                    "the stopped lab in {} uses it; stop what listens there, or remove the lab with `{}` and start a new one",
                    dir.display(),
                    cmd(dir, "down")
                ),
            )?;
            say(format!(
                "starting the stopped lab in {} again",
                dir.display()
            ));
            return Ok((lab, false));
        }

        // A new lab: check everything before writing anything.
        let created_dir = match std::fs::read_dir(dir) {
            Ok(mut it) => {
                if it.next().is_some() {
                    return Err(LabError::Usage(format!(
                        "{} is not empty and holds no lab (no lab.json); choose a new or empty directory with --dir",
                        dir.display()
                    )));
                }
                false
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                return Err(LabError::Usage(format!(
                    "cannot use {} as the lab directory: {e}; choose another --dir",
                    dir.display()
                )));
            }
        };
        procs::which("etcd").ok_or_else(|| {
            LabError::Usage(
                "etcd is not installed or not on PATH; install it (Debian: apt-get install etcd-server) or add its directory to PATH".into(),
            )
        })?;
        if opts.haproxy && procs::which("haproxy").is_none() {
            return Err(LabError::Usage(
                "--haproxy: haproxy is not installed or not on PATH; install it (Debian: apt-get install haproxy) or leave out --haproxy".into(),
            ));
        }
        let bin_dir = find_bin_dir(opts.bin_dir.as_deref())?;
        let pg_user = pg_os_user()?;
        if let Some(u) = &pg_user {
            check_reachable(dir, u)?;
        }
        let settings = requested.settings(bin_dir, pg_user.as_ref().map(|u| u.name.clone()))?;
        let source = source_policies(opts.policies_dir.as_deref())?;
        if !settings.policies.is_empty() {
            match &source {
                Some(s) => {
                    check_policies(&settings.policies, s, None)?;
                    load_policies(&settings.policies, s)?;
                }
                None => {
                    return Err(LabError::Usage(format!(
                        "--policies {}: there is no ./policies here; pass --policies-dir with the directory of the policies (the repository's policies/)",
                        settings.policies.join(",")
                    )));
                }
            }
        }
        let ports = match opts.base_port {
            Some(b) => {
                let p = Ports::from_base(b, settings.nodes, settings.haproxy)?;
                check_ports_free(
                    &p,
                    "choose another --base-port, or leave it out to use free ports",
                )?;
                p
            }
            None => {
                let mut free = free_ports(5 + 2 * settings.nodes)?.into_iter();
                Ports::assign(settings.nodes, settings.haproxy, || {
                    free.next().unwrap_or(0)
                })
            }
        };

        std::fs::create_dir_all(dir).map_err(|e| {
            LabError::Usage(format!(
                "cannot create the lab directory {}: {e}; choose another --dir",
                dir.display()
            ))
        })?;
        let lock = Lock::take(&layout)?;
        let st = LabState::new(dir.to_path_buf(), created_dir, settings, ports)?;
        let lab = Lab::new(layout, st, lock)?;
        lab.st.save(&lab.layout)?;
        lab.write_files(source.as_deref(), pg_user.as_ref())?;
        Ok((lab, true))
    }

    /// The lab directory's contents: node directories (owned by PostgreSQL's user), the
    /// configurations, the policies, HAProxy's configuration.
    fn write_files(
        &self,
        policies_from: Option<&Path>,
        pg_user: Option<&nix::unistd::User>,
    ) -> Result<(), LabError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |what: &Path, e: std::io::Error| {
            LabError::Failed(format!("cannot write {}: {e}", what.display()))
        };
        let l = &self.layout;
        std::fs::set_permissions(&l.dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io(&l.dir, e))?;
        match policies_from {
            Some(from) => copy_policies(from, &l.policies())?,
            None => std::fs::create_dir_all(l.policies()).map_err(|e| io(&l.policies(), e))?,
        }
        for i in 0..self.st.settings.nodes {
            let nd = l.node_dir(i);
            std::fs::create_dir_all(&nd).map_err(|e| io(&nd, e))?;
            std::fs::set_permissions(&nd, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| io(&nd, e))?;
            if let Some(u) = pg_user {
                nix::unistd::chown(&nd, Some(u.uid), Some(u.gid))
                    .map_err(|e| io(&nd, std::io::Error::from(e)))?;
            }
            self.write_config(i)?;
        }
        if let Some(cfg) = spec::haproxy_config(&self.st.ports) {
            std::fs::write(l.haproxy_config(), cfg).map_err(|e| io(&l.haproxy_config(), e))?;
        }
        Ok(())
    }

    /// Write node `i`'s configuration from the state (atomically: a running node may reload).
    pub fn write_config(&self, i: usize) -> Result<(), LabError> {
        let path = self.layout.config(i);
        let yaml = spec::node_yaml(
            &self.layout,
            &self.st.settings,
            &self.st.ports,
            &self.st.password,
            i,
        );
        // What the lab writes must be what regent accepts.
        crate::config::parse(&yaml).map_err(|e| {
            LabError::Failed(format!(
                "the generated configuration of {} is refused: {e}",
                node_name(i)
            ))
        })?;
        let tmp = path.with_extension("yml.tmp");
        super::state::write_private(&tmp, &yaml)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| LabError::Failed(format!("cannot write {}: {e}", path.display())))
    }

    pub fn proc(&self, what: &str) -> Option<Proc> {
        self.st.procs.get(what).copied()
    }

    pub fn node_proc(&self, i: usize) -> Option<Proc> {
        self.proc(&node_name(i))
    }

    /// The recorded processes that still run, and any other process carrying the lab's
    /// marker, as `name (pid N)`.
    pub fn running_processes(&self) -> Vec<String> {
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

    /// Start component `what` (see [`procs::spawn`]) and record it in the state file.
    fn spawn(
        &mut self,
        what: &str,
        program: &Path,
        args: &[String],
        log: &Path,
        env: &[(&str, &str)],
    ) -> Result<Proc, LabError> {
        let p = procs::spawn(program, args, log, &self.st.marker(what), env)
            .map_err(|e| LabError::Failed(format!("cannot start {}: {e}", program.display())))?;
        self.st.procs.insert(what.to_string(), p);
        self.expected.insert(what.to_string());
        self.st.save(&self.layout)?;
        Ok(p)
    }

    /// `POST /reload` to node `i`: it re-reads its configuration file; the answer.
    pub async fn reload(&self, i: usize) -> Result<(u16, String), LabError> {
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

    /// The writer's and the probes' tables on the leader, emptied if `empty`.
    pub async fn create_tables(&self, leader: usize, empty: bool) -> Result<(), LabError> {
        let mut sql = measure::tables_sql();
        if empty {
            sql += &format!("; TRUNCATE {}, {}", spec::WRITES_TABLE, spec::PROBE_TABLE);
        }
        measure::execute(self.st.ports.nodes[leader].pg, &self.st.password, &sql)
            .await
            .map_err(|e| {
                LabError::Failed(format!(
                    "cannot create the lab's tables on {}: {e}",
                    node_name(leader)
                ))
            })
    }

    /// Start etcd and wait until it answers.
    pub async fn start_etcd(&mut self) -> Result<(), LabError> {
        let etcd = procs::which("etcd").ok_or_else(|| {
            LabError::Usage(
                "etcd is not on PATH any more; install it (Debian: apt-get install etcd-server)"
                    .into(),
            )
        })?;
        let args = spec::etcd_args(
            "lab",
            &self.layout.etcd_data(),
            self.st.ports.etcd_client,
            self.st.ports.etcd_peer,
        );
        let p = self.spawn("etcd", &etcd, &args, &self.layout.etcd_log(), &[])?;
        let url = format!("http://127.0.0.1:{}/health", self.st.ports.etcd_client);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                && r.status().is_success()
            {
                say(format!(
                    "etcd answers on 127.0.0.1:{}",
                    self.st.ports.etcd_client
                ));
                return Ok(());
            }
            if !p.alive() {
                return Err(LabError::Failed(format!(
                    "etcd exited at start; the end of {}:\n{}",
                    self.layout.etcd_log().display(),
                    procs::log_tail(&self.layout.etcd_log(), 10)
                )));
            }
            if Instant::now() > deadline {
                return Err(LabError::Failed(format!(
                    "etcd did not answer on {url} within 30 s; see {}",
                    self.layout.etcd_log().display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Start node `i`'s `regent run` (this very binary).
    pub fn start_node(&mut self, i: usize) -> Result<Proc, LabError> {
        let exe = std::env::current_exe()
            .map_err(|e| LabError::Failed(format!("cannot find the regent binary: {e}")))?;
        let args = vec![
            "run".to_string(),
            self.layout.config(i).display().to_string(),
        ];
        let log_level = std::env::var("REGENT_LOG").unwrap_or_else(|_| "info".into());
        self.spawn(
            &node_name(i),
            &exe,
            &args,
            &self.layout.log(i),
            // Plain text in the log file: no terminal colours.
            &[("REGENT_LOG", &log_level), ("NO_COLOR", "1")],
        )
    }

    /// Start HAProxy after checking its configuration.
    pub async fn start_haproxy(&mut self) -> Result<(), LabError> {
        let Some(h) = self.st.ports.haproxy else {
            return Ok(());
        };
        let bin = procs::which("haproxy").ok_or_else(|| {
            LabError::Usage(
                "haproxy is not on PATH any more; install it (Debian: apt-get install haproxy)"
                    .into(),
            )
        })?;
        let cfg = self.layout.haproxy_config();
        let check = std::process::Command::new(&bin)
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .map_err(|e| LabError::Failed(format!("cannot run {}: {e}", bin.display())))?;
        if !check.status.success() {
            return Err(LabError::Failed(format!(
                "haproxy refuses {}: {}",
                cfg.display(),
                String::from_utf8_lossy(&check.stderr).trim()
            )));
        }
        let args = vec![
            "-db".to_string(),
            "-f".to_string(),
            cfg.display().to_string(),
        ];
        let p = self.spawn("haproxy", &bin, &args, &self.layout.haproxy_log(), &[])?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", h.write))
            .await
            .is_err()
        {
            if !p.alive() || Instant::now() > deadline {
                return Err(LabError::Failed(format!(
                    "haproxy did not start; the end of {}:\n{}",
                    self.layout.haproxy_log().display(),
                    procs::log_tail(&self.layout.haproxy_log(), 10)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        say(format!(
            "HAProxy listens on 127.0.0.1:{} (writes) and :{} (reads)",
            h.write, h.read
        ));
        Ok(())
    }

    /// Start everything; a new lab lets node1 bootstrap alone first, so that it leads. Returns
    /// the leader once the cluster is healthy.
    pub async fn start(&mut self, fresh: bool, timeout: Duration) -> Result<usize, LabError> {
        let deadline = Instant::now() + timeout;
        // Records of an earlier run are stale now.
        self.st.procs.clear();
        self.expected.clear();
        self.start_etcd().await?;
        let n = self.st.settings.nodes;
        // One node first, alone, so that it leads: node1 bootstraps a new lab; a stopped lab
        // starts with the node that led last, which has the newest WAL (started together,
        // another could win the election before it even shows up).
        let first = if fresh {
            0
        } else {
            self.st.last_leader.filter(|l| *l < n).unwrap_or(0)
        };
        self.start_node(first)?;
        say(if fresh {
            "node1 bootstraps the cluster".to_string()
        } else {
            format!("{} (the last leader) starts first", node_name(first))
        });
        let alone = if fresh {
            deadline
        } else {
            // A node that cannot lead on its own must not keep the others from starting.
            deadline.min(Instant::now() + Duration::from_secs(2 * self.st.settings.ttl + 10))
        };
        let waited = self
            .wait_until(alone, &format!("{} to lead", node_name(first)), |views| {
                views.iter().position(|v| v.leader)
            })
            .await;
        match waited {
            Ok(leader) => say(format!("{} leads; starting the others", node_name(leader))),
            Err(e) if fresh => return Err(e),
            Err(_) => say(format!(
                "{} does not lead on its own; starting the others",
                node_name(first)
            )),
        }
        for i in (0..n).filter(|i| *i != first) {
            self.start_node(i)?;
        }
        let leader = self.wait_healthy(deadline).await?;
        say(format!(
            "{} leads; {} stream from it",
            node_name(leader),
            (0..n)
                .filter(|i| *i != leader)
                .map(node_name)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        self.create_tables(leader, false).await?;
        self.start_haproxy().await?;
        Ok(leader)
    }

    /// After a failed start: stop what was started, keep the files for a look, and say so.
    pub async fn abandon(&mut self, e: LabError) -> LabError {
        let stopped = self.stop_all().await;
        let logs = self.layout.dir.display();
        let what = match stopped {
            Ok(()) => "stopped what had started".to_string(),
            Err(s) => format!("could not stop everything: {s}"),
        };
        LabError::Failed(format!(
            "{e}\n{what}; the logs are in {logs} (node1.log, etcd.log, ...); `{down}` removes the lab, `{up}` tries again",
            down = cmd(&self.layout.dir, "down"),
            up = cmd(&self.layout.dir, "up")
        ))
    }

    /// Stop node `i`'s regent (SIGTERM; a leader hands over), wait until its processes have
    /// exited (its PostgreSQL and guard included), SIGKILL what is left after `patience`.
    pub async fn stop_node(&mut self, i: usize, patience: Duration) -> Result<(), LabError> {
        let marker = self.st.marker(&node_name(i));
        self.expected.remove(&node_name(i));
        if let Some(p) = self.node_proc(i) {
            p.signal(Signal::SIGCONT);
            p.signal(Signal::SIGTERM);
            let deadline = Instant::now() + patience;
            while p.alive() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // The guard leaves once its supervisor is gone and nothing is left to guard; a
        // PostgreSQL without its regent is stopped here.
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let left = self.node_leftovers(i, &marker);
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                for p in &left {
                    p.signal(Signal::SIGCONT);
                    p.signal(Signal::SIGKILL);
                }
                return self.wait_gone(&left, Duration::from_secs(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Node `i`'s processes still alive: its regent, anything marked for it, its postmaster.
    fn node_leftovers(&self, i: usize, marker: &str) -> Vec<Proc> {
        let mut left: Vec<Proc> = procs::marked(marker);
        if let Some(p) = self.node_proc(i).filter(|p| p.alive())
            && !left.contains(&p)
        {
            left.push(p);
        }
        if let Some(pm) = procs::postmaster(&self.layout.data_dir(i))
            && !left.contains(&pm)
        {
            left.push(pm);
        }
        left
    }

    async fn wait_gone(&self, list: &[Proc], patience: Duration) -> Result<(), LabError> {
        let deadline = Instant::now() + patience;
        loop {
            let alive: Vec<String> = list
                .iter()
                .filter(|p| p.alive())
                .map(|p| p.pid.to_string())
                .collect();
            if alive.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LabError::Failed(format!(
                    "processes {} of the lab in {} did not exit after SIGKILL",
                    alive.join(", "),
                    self.layout.dir.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stop the whole lab: HAProxy, the replicas, the leader, then etcd; SIGKILL whatever of
    /// the lab still runs after that.
    pub async fn stop_all(&mut self) -> Result<(), LabError> {
        if let Some(p) = self.proc("haproxy") {
            p.signal(Signal::SIGTERM);
        }
        let leader = self.leader().await;
        if leader.is_some() {
            self.st.last_leader = leader;
        }
        let n = self.st.settings.nodes;
        // Replicas first, together: then the leader has nobody to hand over to and stops at once.
        let replicas: Vec<usize> = (0..n).filter(|i| Some(*i) != leader).collect();
        for i in &replicas {
            if let Some(p) = self.node_proc(*i) {
                p.signal(Signal::SIGCONT);
                p.signal(Signal::SIGTERM);
            }
        }
        for i in replicas {
            self.stop_node(i, Duration::from_secs(20)).await?;
        }
        if let Some(l) = leader {
            self.stop_node(l, Duration::from_secs(20)).await?;
        }
        if let Some(p) = self.proc("etcd") {
            p.signal(Signal::SIGCONT);
            p.signal(Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while p.alive() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let mut left: Vec<Proc> = procs::marked(&self.st.marker(""));
        left.extend(self.st.procs.values().filter(|p| p.alive()));
        left.extend((0..n).filter_map(|i| procs::postmaster(&self.layout.data_dir(i))));
        for p in &left {
            p.signal(Signal::SIGCONT);
            p.signal(Signal::SIGKILL);
        }
        self.wait_gone(&left, Duration::from_secs(10)).await
    }

    /// Remove everything the lab wrote (it must be stopped): its entries in the directory,
    /// then the state file and the lock, then the directory if the lab created it.
    pub fn remove_files(&self) -> Result<(), LabError> {
        let l = &self.layout;
        for p in l.owned_entries(self.st.settings.nodes) {
            let r = match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
                Ok(_) => std::fs::remove_file(&p),
                Err(_) => continue,
            };
            r.map_err(|e| LabError::Failed(format!("cannot remove {}: {e}", p.display())))?;
        }
        for p in [l.state(), l.state().with_extension("json.tmp"), l.lock()] {
            let _ = std::fs::remove_file(p);
        }
        if self.st.created_dir {
            // Only if empty: whatever else is there was not written by the lab.
            let _ = std::fs::remove_dir(&l.dir);
        }
        Ok(())
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
pub async fn down(dir: &Path, keep_data: bool) -> Result<(), LabError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_postgres_cannot_enter_is_refused_with_the_culprit() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tmp");
        let closed = tmp.path().join("closed");
        std::fs::create_dir(&closed).expect("mkdir");
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        // A user that owns nothing here: only the "other" bits count for it.
        let nobody = nix::unistd::User {
            uid: nix::unistd::Uid::from_raw(65_533),
            gid: nix::unistd::Gid::from_raw(65_533),
            ..nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .expect("me")
        };
        let e = check_reachable(&closed.join("lab"), &nobody).expect_err("closed");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("because {} has mode 0700", closed.display())),
            "{msg}"
        );
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        check_reachable(&closed.join("lab"), &nobody).expect("open");
    }

    #[test]
    fn named_policies_must_be_in_the_directory() {
        let tmp = tempfile::tempdir().expect("tmp");
        std::fs::write(tmp.path().join("zone-aware.toml"), "").expect("write");
        std::fs::write(tmp.path().join("zone-aware.wasm"), "").expect("write");
        check_policies(&["zone-aware".into()], tmp.path(), None).expect("there");
        let e = check_policies(&["sync-only".into()], tmp.path(), None).expect_err("missing");
        let msg = e.to_string();
        assert!(
            msg.contains("no sync-only.toml in")
                && msg.contains("the policies there are: zone-aware"),
            "{msg}"
        );
        let to = tmp.path().join("copy");
        copy_policies(tmp.path(), &to).expect("copy");
        assert_eq!(available_policies(&to), ["zone-aware"]);
        assert!(to.join("zone-aware.wasm").is_file());
    }

    #[test]
    fn busy_ports_are_named() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let ports = Ports::assign(1, false, {
            let mut v = vec![port, port + 1, port + 2, port + 3].into_iter();
            move || v.next().unwrap_or(0)
        });
        let e = check_ports_free(&ports, "choose another --base-port").expect_err("busy");
        assert!(
            e.to_string().starts_with(&format!(
                "port {port} on 127.0.0.1, for etcd (clients), is not free"
            )),
            "{e}"
        );
        let free = free_ports(5).expect("free");
        let mut d = free.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), 5, "distinct: {free:?}");
    }
}
