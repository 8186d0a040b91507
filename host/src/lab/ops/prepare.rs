//! Prepares a lab: checks the input and the machine (programs, the OS user PostgreSQL runs
//! as, free ports) before anything is written, then writes the lab directory: the node
//! directories, their configurations, the policies and HAProxy's configuration. It starts
//! nothing.

use super::{Lab, check_policies, copy_policies, load_policies, source_policies};
use crate::lab::procs;
use crate::lab::spec::{self, Layout, Ports, node_name};
use crate::lab::state::{LabState, Lock, cmd};
use crate::lab::{LabError, LabOptions, say};
use std::path::{Path, PathBuf};

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
                crate::lab::state::default_dir().display()
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

impl Lab {
    /// A lab ready to start in `dir`: a new one (`true`), written from the options, or the
    /// stopped lab that is there (`false`). Nothing is started yet; bad input changes nothing.
    pub(crate) async fn prepare(
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
        if let Ok(Some(fit)) =
            spec::check_timing(settings.ttl, settings.loop_wait, settings.retry_timeout)
        {
            say(format!("warning: {}", fit.warning()));
        }
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
    pub(crate) fn write_config(&self, i: usize) -> Result<(), LabError> {
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
        crate::lab::state::write_private(&tmp, &yaml)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| LabError::Failed(format!("cannot write {}: {e}", path.display())))
    }
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
