//! HAProxy, configured as Patroni's documentation configures it, in front of three real
//! `regent` nodes: the `primary` listener routes writes to the leader and follows a failover;
//! the `replicas` listener sends reads to replicas only.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

const TTL: u64 = 10;

/// HAProxy as a child process; killed on drop.
struct Haproxy {
    child: Child,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `listen` section per health check, each server checked on its REST port, and the
/// stats page of Patroni's example configuration.
fn config(c: &Cluster, primary: u16, replicas: u16, stats: u16) -> String {
    let servers: String = c
        .nodes
        .iter()
        .map(|n| {
            format!(
                "    server {} 127.0.0.1:{} maxconn 100 check port {}\n",
                n.name, n.pg_port, n.api_port
            )
        })
        .collect();
    let listen = |name: &str, port: u16, check: &str| {
        format!(
            "listen {name}\n    bind 127.0.0.1:{port}\n    option httpchk OPTIONS {check}\n    http-check expect status 200\n    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions\n{servers}\n"
        )
    };
    format!(
        "global\n    maxconn 100\n\ndefaults\n    mode tcp\n    retries 2\n    timeout client 30m\n    timeout connect 4s\n    timeout server 30m\n    timeout check 5s\n\nlisten stats\n    mode http\n    bind 127.0.0.1:{stats}\n    stats enable\n    stats uri /\n\n{}{}",
        listen("primary", primary, "/primary"),
        listen("replicas", replicas, "/replica"),
    )
}

fn start_haproxy(dir: &Path, cfg: &str, ports: &[u16]) -> Haproxy {
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).expect("write haproxy.cfg");
    let check = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .output()
        .expect("run haproxy -c (Debian package haproxy)");
    assert!(
        check.status.success(),
        "haproxy refuses the configuration: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let log = std::fs::File::create(dir.join("haproxy.log")).expect("log");
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup"))
        .stderr(log)
        .spawn()
        .expect("start haproxy");
    let h = Haproxy { child };
    for port in ports {
        wait_for("haproxy to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", *port)).ok()
        });
    }
    h
}

/// HAProxy's view of its servers: `(listener, server, status)` from the stats page's CSV.
fn server_states(stats: u16) -> Option<Vec<(String, String, String)>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", stats)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    // HTTP/1.0: the body is not chunked.
    s.write_all(b"GET /;csv HTTP/1.0\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (_, body) = buf.split_once("\r\n\r\n")?;
    Some(
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f.len() > 17 && f[1] != "FRONTEND" && f[1] != "BACKEND")
                    .then(|| (f[0].to_string(), f[1].to_string(), f[17].to_string()))
            })
            .collect(),
    )
}

/// Wait until HAProxy has checked its servers and marks exactly `up` UP in `listener`.
fn wait_marked(stats: u16, listener: &str, up: &[&str]) {
    wait_for(
        &format!("HAProxy to mark exactly {up:?} UP in {listener}"),
        Duration::from_secs(20),
        || {
            let mut got: Vec<String> = server_states(stats)?
                .into_iter()
                .filter(|(px, _, st)| px == listener && st.starts_with("UP"))
                .map(|(_, sv, _)| sv)
                .collect();
            got.sort();
            let mut want: Vec<String> = up.iter().map(|s| s.to_string()).collect();
            want.sort();
            (got == want).then_some(())
        },
    );
}

/// The PostgreSQL port of the server a connection through `port` reached, and whether it is
/// in recovery.
fn backend(port: u16) -> Option<(u16, bool)> {
    let out = psql(port, "SELECT inet_server_port(), pg_is_in_recovery()").ok()?;
    let (p, r) = out.split_once('|')?;
    Some((p.parse().ok()?, r == "t"))
}

#[test]
fn haproxy_routes_writes_to_the_leader_and_follows_a_failover() {
    let _g = serial();
    let (mut c, leader) = Cluster::healthy(3, NodeSpec::default());
    let (primary, replicas, stats) = (free_port(), free_port(), free_port());
    let cfg = config(&c, primary, replicas, stats);
    let _haproxy = start_haproxy(c.tmp.path(), &cfg, &[primary, replicas, stats]);
    let name = |i: usize| c.nodes[i].name.clone();
    let others: Vec<String> = (0..3).filter(|i| *i != leader).map(name).collect();
    // HAProxy starts with every server UP; its checks then mark them.
    wait_marked(stats, "primary", &[&name(leader)]);
    wait_marked(stats, "replicas", &[&others[0], &others[1]]);

    // Writes through the primary listener land on the leader.
    let leader_port = c.nodes[leader].pg_port;
    wait_for(
        "a write through HAProxy to reach the leader",
        Duration::from_secs(20),
        || {
            let out = psql(
                primary,
                "CREATE TABLE IF NOT EXISTS via_haproxy (id int); INSERT INTO via_haproxy VALUES (1); SELECT inet_server_port()",
            )
            .ok()?;
            (out == leader_port.to_string()).then_some(())
        },
    );
    // Reads through the replicas listener land on replicas only, both of them in turn.
    let replica_ports: Vec<u16> = c
        .nodes
        .iter()
        .filter(|n| n.pg_port != leader_port)
        .map(|n| n.pg_port)
        .collect();
    let mut seen = Vec::new();
    wait_for(
        "reads through HAProxy on both replicas",
        Duration::from_secs(20),
        || {
            let (port, in_recovery) = backend(replicas)?;
            assert!(
                in_recovery && replica_ports.contains(&port),
                "a read through the replicas listener reached {port} (recovery: {in_recovery})"
            );
            if !seen.contains(&port) {
                seen.push(port);
            }
            (seen.len() == 2).then_some(())
        },
    );

    // Crash the leader's host: HAProxy follows the failover on the same port.
    c.nodes[leader].crash();
    let new_port = wait_for(
        "a write through HAProxy to succeed on the new leader",
        Duration::from_secs(TTL + 20),
        || {
            let out = psql(
                primary,
                "INSERT INTO via_haproxy VALUES (2); SELECT inet_server_port()",
            )
            .ok()?;
            let port: u16 = out.parse().ok()?;
            (port != leader_port).then_some(port)
        },
    );
    let new = c
        .nodes
        .iter()
        .find(|n| n.pg_port == new_port)
        .expect("a node on that port");
    assert_eq!(
        new.http_get("/primary").map(|(s, _)| s),
        Some(200),
        "HAProxy sends writes to the node that holds the leader key"
    );
    assert_eq!(
        c.leader_key().as_deref(),
        Some(new.name.as_str()),
        "the leader key names it"
    );
    assert_eq!(
        psql(primary, "SELECT count(*) FROM via_haproxy").as_deref(),
        Ok("2"),
        "the write before the failover survived"
    );
    // The replicas listener no longer offers the new leader; only the surviving replica.
    let survivor = c
        .nodes
        .iter()
        .find(|n| n.pg_port != leader_port && n.pg_port != new_port)
        .expect("the survivor");
    wait_for(
        "the survivor to follow the new leader",
        Duration::from_secs(60),
        || (survivor.http_get("/replica")?.0 == 200).then_some(()),
    );
    wait_marked(stats, "primary", &[&new.name]);
    wait_marked(stats, "replicas", &[&survivor.name]);
    for _ in 0..4 {
        let (port, in_recovery) = wait_for(
            "a read through the replicas listener",
            Duration::from_secs(15),
            || backend(replicas),
        );
        assert!(
            in_recovery && port == survivor.pg_port,
            "reads go to the surviving replica only, not {port}"
        );
    }
}
