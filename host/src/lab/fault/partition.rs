//! The `partition` fault: one node cut off from etcd and from the other nodes, while the
//! lab's own clients (the writer, the split-brain monitor, HAProxy) still reach it, the way a
//! leader behind a broken switch still serves the clients on its side.
//!
//! Every lab process runs on 127.0.0.1, so addresses cannot tell the nodes apart; processes
//! can. Each node's processes (regent, its PostgreSQL, the fencing guard) are moved into a
//! cgroup v2 directory of the lab's own (`<cgroup2 root>/regent-lab-<id>/nodeN`; children
//! started later inherit it), and an iptables chain of the lab's own (`regent-<id>`, jumped
//! to from `OUTPUT`) drops what crosses the cut:
//!
//! - new connections from the partitioned node's cgroup to etcd's client port and to the
//!   other nodes' REST and PostgreSQL ports;
//! - new connections from the other nodes' cgroups to the partitioned node's REST and
//!   PostgreSQL ports (replication and peer checks cut both ways);
//! - the connections that already crossed the cut (the regent→etcd channel, walreceivers):
//!   a socket keeps the cgroup of the process that created it, before the move, so these are
//!   found through `/proc/<pid>/fd` and `/proc/net/tcp*` and dropped by their port pair, in
//!   both directions.
//!
//! The `regent lab` process itself stays in its own cgroup, so its connections pass. This
//! was chosen over network namespaces (as in tests/partition.rs) because the lab's nodes are
//! already running on 127.0.0.1: moving running processes into another network namespace is
//! not possible, a cgroup is.
//!
//! Invariants: it needs root (refused before anything is touched otherwise); [`Cut::heal`]
//! (also on drop, so on Ctrl-C) removes the jump, the chain, moves every process back to
//! the cgroup it came from and removes the lab's cgroups; [`clean_leftovers`] does the same
//! from the names alone, for `regent lab down` after an interrupted run.

use super::super::LabError;
use super::super::ops::Lab;
use super::super::procs;
use super::super::spec::node_name;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A partition in force.
pub(crate) struct Cut {
    chain: String,
    cgroup: PathBuf,
    /// Each moved process and the cgroup (path below the cgroup2 root) it came from.
    moved: Vec<(i32, PathBuf)>,
    root: PathBuf,
    healed: bool,
    /// What was cut, for the report.
    pub(crate) what: String,
}

/// Refuse unless root: a partition changes the firewall and cgroups.
pub(crate) fn check_root(what: &str) -> Result<(), LabError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(LabError::Usage(format!(
            "{what} needs root: it moves the node's processes into a cgroup and adds iptables rules; run it as root (e.g. with sudo), or choose another fault (freeze-leader cuts the leader's supervisor off without root)"
        )))
    }
}

/// The mount point of the cgroup v2 hierarchy.
fn cgroup2_root() -> Result<PathBuf, LabError> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&"cgroup2"))
        .and_then(|f| f.get(1).map(PathBuf::from))
        .ok_or_else(|| {
            LabError::Usage(
                "partition needs the cgroup v2 hierarchy mounted (none in /proc/self/mounts); mount it with `mount -t cgroup2 none /sys/fs/cgroup/unified`".into(),
            )
        })
}

/// The names of the lab's chain and cgroup directory (below the cgroup2 root).
fn names(lab_id: &str) -> (String, String) {
    let short: String = lab_id.chars().take(16).collect();
    (format!("regent-{short}"), format!("regent-lab-{lab_id}"))
}

fn iptables(args: &[&str]) -> Result<(), String> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run iptables: {e}; install iptables"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The cgroup2 path (below the root) of `pid`.
fn cgroup_of(pid: i32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| PathBuf::from(p.trim_start_matches('/')))
}

fn move_to(root: &Path, rel: &Path, pid: i32) -> std::io::Result<()> {
    std::fs::write(root.join(rel).join("cgroup.procs"), pid.to_string())
}

/// `pids` and every process descending from them.
fn with_descendants(mut pids: Vec<i32>) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    let parents: Vec<(i32, i32)> = dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, procs::stat(pid)?.ppid)))
        .collect();
    let mut k = 0;
    while k < pids.len() {
        let parent = pids[k];
        for (pid, ppid) in &parents {
            if *ppid == parent && !pids.contains(pid) {
                pids.push(*pid);
            }
        }
        k += 1;
    }
    pids
}

/// The socket inodes `pid` holds.
fn socket_inodes(pid: i32) -> BTreeSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return BTreeSet::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// The connected TCP sockets of the machine: (inode, local port, remote port).
fn tcp_sockets() -> Vec<(u64, u16, u16)> {
    let mut out = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        out.extend(text.lines().skip(1).filter_map(parse_tcp_line));
    }
    out
}

/// One line of `/proc/net/tcp`: `sl local rem st ... uid timeout inode`.
fn parse_tcp_line(line: &str) -> Option<(u64, u16, u16)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let port = |s: &str| u16::from_str_radix(s.rsplit(':').next()?, 16).ok();
    let (local, remote) = (port(f.get(1)?)?, port(f.get(2)?)?);
    let inode = f.get(9)?.parse().ok()?;
    (remote != 0).then_some((inode, local, remote))
}

/// Cut node `t` off: see the module doc.
pub(crate) fn cut(lab: &Lab, t: usize) -> Result<Cut, LabError> {
    check_root("partition")?;
    let root = cgroup2_root()?;
    let (chain, group) = names(&lab.st.id);
    let n = lab.st.settings.nodes;
    let ports = &lab.st.ports;
    // PostgreSQL's children rewrite their environment with their process titles, so the
    // lab's marker finds regent, the guard and the postmaster: the rest are their children.
    let members: Vec<Vec<i32>> = (0..n)
        .map(|i| {
            with_descendants(
                procs::marked(&lab.st.marker(&node_name(i)))
                    .iter()
                    .map(|p| p.pid)
                    .collect(),
            )
        })
        .collect();
    if members[t].is_empty() {
        return Err(LabError::Usage(format!(
            "{} has no running process to cut off; start it with `regent lab fault restart-node {}`",
            node_name(t),
            t + 1
        )));
    }
    // Leftovers of an earlier run first.
    clean(&root, &chain, &group);
    let mut cut = Cut {
        chain: chain.clone(),
        cgroup: PathBuf::from(&group),
        moved: Vec::new(),
        root: root.clone(),
        healed: false,
        what: String::new(),
    };
    let fail = |e: String| LabError::Failed(format!("could not cut the partition: {e}"));
    for (i, pids) in members.iter().enumerate() {
        let rel = Path::new(&group).join(node_name(i));
        std::fs::create_dir_all(root.join(&rel))
            .map_err(|e| fail(format!("cannot create cgroup {}: {e}", rel.display())))?;
        for &pid in pids {
            let Some(from) = cgroup_of(pid) else { continue };
            // A process that exited meanwhile is no matter.
            if move_to(&root, &rel, pid).is_ok() {
                cut.moved.push((pid, from));
            }
        }
    }
    // The ports each side may not reach.
    let cg = |i: usize| format!("{group}/{}", node_name(i));
    let mut rules: Vec<Vec<String>> = Vec::new();
    let mut blocked_from_t = vec![ports.etcd_client];
    let mut across: BTreeSet<(u16, u16)> = BTreeSet::new();
    let sockets = tcp_sockets();
    let t_ports = [ports.nodes[t].api, ports.nodes[t].pg];
    for k in (0..n).filter(|k| *k != t) {
        let k_ports = [ports.nodes[k].api, ports.nodes[k].pg];
        blocked_from_t.extend(k_ports);
        rules.push(drop_new(&cg(k), &t_ports));
        // Connections node k already holds to node t.
        let inodes: BTreeSet<u64> = members[k].iter().flat_map(|p| socket_inodes(*p)).collect();
        across.extend(
            sockets
                .iter()
                .filter(|(i, _, r)| inodes.contains(i) && t_ports.contains(r))
                .map(|(_, l, r)| (*l, *r)),
        );
    }
    rules.push(drop_new(&cg(t), &blocked_from_t));
    let inodes: BTreeSet<u64> = members[t].iter().flat_map(|p| socket_inodes(*p)).collect();
    across.extend(
        sockets
            .iter()
            .filter(|(i, _, r)| inodes.contains(i) && blocked_from_t.contains(r))
            .map(|(_, l, r)| (*l, *r)),
    );
    for (l, r) in &across {
        for (s, d) in [(l, r), (r, l)] {
            rules.push(
                [
                    "-p",
                    "tcp",
                    "--sport",
                    &s.to_string(),
                    "--dport",
                    &d.to_string(),
                ]
                .iter()
                .map(|x| x.to_string())
                .collect(),
            );
        }
    }
    iptables(&["-N", &chain]).map_err(fail)?;
    for r in &rules {
        let mut args: Vec<&str> = vec!["-A", &chain];
        args.extend(r.iter().map(String::as_str));
        args.extend(["-j", "DROP"]);
        iptables(&args).map_err(fail)?;
    }
    iptables(&["-I", "OUTPUT", "1", "-j", &chain]).map_err(fail)?;
    cut.what = format!(
        "{} cut off from etcd and the other nodes ({} processes in cgroup {}, {} iptables rules in chain {} of which {} for connections already open); clients still reach it",
        node_name(t),
        members[t].len(),
        cg(t),
        rules.len(),
        chain,
        across.len() * 2
    );
    Ok(cut)
}

/// Drop new TCP connections from cgroup `cg` to `ports`.
fn drop_new(cg: &str, ports: &[u16]) -> Vec<String> {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    [
        "-p",
        "tcp",
        "-m",
        "cgroup",
        "--path",
        cg,
        "-m",
        "multiport",
        "--dports",
        &list.join(","),
    ]
    .iter()
    .map(|x| x.to_string())
    .collect()
}

impl Cut {
    /// Undo the partition. Errors are collected, and every step is tried.
    pub(crate) fn heal(&mut self) -> Result<(), String> {
        if self.healed {
            return Ok(());
        }
        self.healed = true;
        let mut errors = Vec::new();
        let _ = iptables(&["-D", "OUTPUT", "-j", &self.chain]);
        for step in [["-F", &self.chain], ["-X", &self.chain]] {
            if let Err(e) = iptables(&step) {
                errors.push(e);
            }
        }
        // Every process in the lab's cgroups back where it came from (children started
        // meanwhile go where their node's regent came from).
        let group = self.root.join(&self.cgroup);
        for (pid, from) in &self.moved {
            let _ = move_to(&self.root, from, *pid);
        }
        let fallback = self
            .moved
            .first()
            .map(|(_, f)| f.clone())
            .unwrap_or_default();
        empty_and_remove(&self.root, &group, &fallback, &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        if let Err(e) = self.heal() {
            super::super::say(format!("healing the partition: {e}"));
        }
    }
}

/// Move every process out of the cgroups below `group` (to `to`), remove them and `group`.
fn empty_and_remove(root: &Path, group: &Path, to: &Path, errors: &mut Vec<String>) {
    let Ok(dir) = std::fs::read_dir(group) else {
        return;
    };
    for sub in dir.filter_map(Result::ok).filter(|e| e.path().is_dir()) {
        let procs = std::fs::read_to_string(sub.path().join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = move_to(root, to, pid);
        }
        if let Err(e) = std::fs::remove_dir(sub.path()) {
            errors.push(format!("cannot remove {}: {e}", sub.path().display()));
        }
    }
    if let Err(e) = std::fs::remove_dir(group) {
        errors.push(format!("cannot remove {}: {e}", group.display()));
    }
}

/// Remove the chain and cgroups of an earlier partition of this lab, if any.
fn clean(root: &Path, chain: &str, group: &str) {
    if iptables(&["-n", "-L", chain]).is_ok() {
        while iptables(&["-D", "OUTPUT", "-j", chain]).is_ok() {}
        let _ = iptables(&["-F", chain]);
        let _ = iptables(&["-X", chain]);
    }
    let mut errors = Vec::new();
    empty_and_remove(root, &root.join(group), Path::new(""), &mut errors);
}

/// For `regent lab down`: remove what an interrupted partition of lab `lab_id` left behind
/// (nothing to do, and nothing tried, when not root).
pub(crate) fn clean_leftovers(lab_id: &str) {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    if let Ok(root) = cgroup2_root() {
        let (chain, group) = names(lab_id);
        clean(&root, &chain, &group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines_give_inode_and_ports() {
        let l = "   3: 0100007F:7D00 0100007F:9C4A 01 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 20 4 30 10 -1";
        assert_eq!(parse_tcp_line(l), Some((123456, 0x7D00, 0x9C4A)));
        let listening = "   0: 0100007F:7D00 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 100 0 0 10 0";
        assert_eq!(parse_tcp_line(listening), None);
    }

    #[test]
    fn the_names_are_the_labs_own_and_fit_iptables() {
        let (chain, group) = names("0123456789abcdef");
        assert!(chain.len() <= 28, "{chain}");
        assert_eq!(group, "regent-lab-0123456789abcdef");
    }
}
