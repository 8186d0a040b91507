//! TLS where Patroni has it, against real servers: etcd over HTTPS demanding client
//! certificates (`--client-cert-auth`) with authentication on (`auth enable`), reached with
//! `etcd3.protocol/cacert/cert/key/username/password`; and REST APIs that demand client
//! certificates (`restapi.verify_client: required` with `cafile`), which the members' peer
//! calls and `regent ctl` pass with `ctl.certfile`/`keyfile`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;
use support::ctl::*;
use support::*;

fn tls_file(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/tls")
        .join(name)
        .display()
        .to_string()
}

const ROOT_PASSWORD: &str = "etcd-root-pw";

/// One etcd serving clients over HTTPS only, with client certificates required.
struct TlsEtcd {
    child: Child,
    port: u16,
}

impl TlsEtcd {
    fn start(dir: &Path) -> TlsEtcd {
        let port = free_port();
        let peer = free_port();
        let mut args = regent::lab::spec::etcd_args("e0", &dir.join("etcd"), port, peer);
        for a in args.iter_mut() {
            if *a == format!("http://127.0.0.1:{port}") {
                *a = format!("https://127.0.0.1:{port}");
            }
        }
        args.extend(
            [
                "--cert-file",
                &tls_file("node.crt"),
                "--key-file",
                &tls_file("node.key"),
                "--trusted-ca-file",
                &tls_file("ca.crt"),
                "--client-cert-auth",
            ]
            .map(String::from),
        );
        let log = std::fs::File::create(dir.join("etcd.log")).expect("etcd log");
        let child = Command::new("etcd")
            .args(&args)
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("start etcd (Debian package etcd-server)");
        let e = TlsEtcd { child, port };
        wait_for("etcd to answer over TLS", Duration::from_secs(20), || {
            e.etcdctl(&["endpoint", "health"], None)
                .status
                .success()
                .then_some(())
        });
        e
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn etcdctl(&self, args: &[&str], user: Option<&str>) -> Output {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3").args([
            "--endpoints",
            &format!("https://{}", self.endpoint()),
            "--cacert",
            &tls_file("ca.crt"),
            "--cert",
            &tls_file("node.crt"),
            "--key",
            &tls_file("node.key"),
            "--dial-timeout=3s",
        ]);
        if let Some(u) = user {
            cmd.args(["--user", u]);
        }
        cmd.args(args).output().expect("run etcdctl")
    }

    /// `root` with a password, then `auth enable`: from here on every request needs a user.
    fn enable_auth(&self) {
        for args in [
            vec!["user", "add", &format!("root:{ROOT_PASSWORD}")],
            vec!["auth", "enable"],
        ] {
            let out = self.etcdctl(&args, None);
            assert!(
                out.status.success(),
                "etcdctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `PATRONI_*` variables of a node that reaches etcd with TLS and a user, and serves a
/// REST API that demands client certificates (the node's own calls present `ctl.certfile`).
fn tls_env() -> Vec<(String, String)> {
    [
        ("PATRONI_ETCD3_PROTOCOL", "https".to_string()),
        ("PATRONI_ETCD3_CACERT", tls_file("ca.crt")),
        ("PATRONI_ETCD3_CERT", tls_file("node.crt")),
        ("PATRONI_ETCD3_KEY", tls_file("node.key")),
        ("PATRONI_ETCD3_USERNAME", "root".into()),
        ("PATRONI_ETCD3_PASSWORD", ROOT_PASSWORD.into()),
        ("PATRONI_RESTAPI_CERTFILE", tls_file("node.crt")),
        ("PATRONI_RESTAPI_KEYFILE", tls_file("node.key")),
        ("PATRONI_RESTAPI_CAFILE", tls_file("ca.crt")),
        ("PATRONI_RESTAPI_VERIFY_CLIENT", "required".into()),
        ("PATRONI_CTL_CERTFILE", tls_file("node-with-key.pem")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A `regent ctl` configuration: etcd as given, and the REST client's certificate if `cert`.
fn ctl_config(dir: &Path, name: &str, etcd: &str, etcd_extra: &str, cert: bool) -> PathBuf {
    let ctl = if cert {
        format!(
            "ctl:\n  cacert: {}\n  certfile: {}\n  keyfile: {}\n",
            tls_file("ca.crt"),
            tls_file("node.crt"),
            tls_file("node.key")
        )
    } else {
        format!("ctl:\n  cacert: {}\n", tls_file("ca.crt"))
    };
    let yaml = format!(
        "scope: test\netcd3:\n  hosts: [{etcd}]\n  protocol: https\n  cacert: {}\n{etcd_extra}{ctl}",
        tls_file("ca.crt")
    );
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("write ctl config");
    path
}

fn ctl(config: &Path, args: &[&str]) -> Ran {
    let mut all = vec!["-c", config.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    regent_ctl(&all)
}

/// A leader running and a replica streaming, nothing else.
fn settled(m: &[(String, String, String)]) -> bool {
    let count = |role: &str, state: &str| m.iter().filter(|r| r.1 == role && r.2 == state).count();
    m.len() == 2 && count("Leader", "running") == 1 && count("Replica", "streaming") == 1
}

/// The members `regent ctl list -f json` shows: (name, role, state).
fn members(config: &Path) -> Option<Vec<(String, String, String)>> {
    let r = ctl(config, &["list", "-f", "json"]);
    if !r.ok() {
        return None;
    }
    let v = r.json();
    Some(
        v.as_array()?
            .iter()
            .map(|m| {
                let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
                (s("Member"), s("Role"), s("State"))
            })
            .collect(),
    )
}

#[test]
fn a_cluster_runs_on_etcd_with_client_certificates_and_users_and_rest_apis_that_demand_certificates()
 {
    let _g = serial();
    let tmp = open_tempdir();
    let etcd = TlsEtcd::start(tmp.path());
    etcd.enable_auth();
    let ep = etcd.endpoint();
    let user = format!("  username: root\n  password: {ROOT_PASSWORD}\n");
    let certs = format!(
        "  cert: {}\n  key: {}\n",
        tls_file("node.crt"),
        tls_file("node.key")
    );

    let spec = NodeSpec::default();
    let mut nodes: Vec<Node> = ["n1", "n2"]
        .iter()
        .map(|name| {
            let mut n = Node::new(tmp.path(), name, std::slice::from_ref(&ep), &spec);
            n.env = tls_env();
            n
        })
        .collect();
    for n in &mut nodes {
        n.start();
    }
    let good = ctl_config(tmp.path(), "ctl.yml", &ep, &format!("{certs}{user}"), true);
    let listed = wait_for(
        "a leader and a streaming replica, read through TLS etcd with a user",
        Duration::from_secs(120),
        || members(&good).filter(|m| settled(m)),
    );
    let replica = listed
        .iter()
        .find(|m| m.1 == "Replica")
        .map(|m| m.0.clone())
        .expect("a replica");
    // The keys are in etcd, readable with the user only.
    let leader_key = etcd.etcdctl(
        &["get", "--print-value-only", "/service/test/leader"],
        Some(&format!("root:{ROOT_PASSWORD}")),
    );
    assert!(
        leader_key.status.success() && !leader_key.stdout.is_empty(),
        "leader key: {}",
        String::from_utf8_lossy(&leader_key.stderr)
    );

    // A switchover goes through the REST APIs that demand certificates: ctl's call to the
    // leader, and the leader's peer calls to the candidate.
    ctl(&good, &["switchover", "--candidate", &replica, "--force"])
        .expect_ok("switchover over HTTPS with client certificates");
    wait_for("the candidate to lead", Duration::from_secs(60), || {
        members(&good).filter(|m| {
            m.iter()
                .any(|r| r.0 == replica && r.1 == "Leader" && r.2 == "running")
        })
    });

    // Without a client certificate the REST APIs refuse the connection.
    let no_cert = ctl_config(
        tmp.path(),
        "no-cert.yml",
        &ep,
        &format!("{certs}{user}"),
        false,
    );
    let r = ctl(&no_cert, &["reload", &replica, "--force"]);
    assert!(!r.ok(), "reload without a client certificate: {r:?}");
    let said = format!("{}{}", r.stdout, r.stderr);
    assert!(said.contains("cannot reach the REST API"), "{r:?}");
    assert!(said.contains("client certificate"), "{r:?}");

    // etcd's refusals keep etcd's words: a wrong password, and no client certificate.
    let wrong = ctl_config(
        tmp.path(),
        "wrong-pw.yml",
        &ep,
        &format!("{certs}  username: root\n  password: nope\n"),
        true,
    );
    let r = ctl(&wrong, &["list"]);
    assert!(!r.ok(), "{r:?}");
    assert!(r.stderr.contains("authentication failed"), "{r:?}");
    let anonymous = ctl_config(tmp.path(), "no-etcd-cert.yml", &ep, &user, true);
    let r = ctl(&anonymous, &["list"]);
    assert!(!r.ok(), "etcd without a client certificate: {r:?}");
    assert!(r.stderr.contains("etcd"), "{r:?}");

    for n in &mut nodes {
        n.kill_all();
    }
}

/// `src` copied to `dst`, owned by `owner` (the PostgreSQL OS user, or root when `None`) and
/// readable by it alone, as PostgreSQL and libpq want private keys.
fn private_copy(src: &str, dst: &Path, postgres_owned: bool) -> String {
    std::fs::copy(src, dst).expect("copy TLS file");
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    if postgres_owned {
        chown_pg(dst);
    }
    dst.display().to_string()
}

/// psql over TLS with a client certificate (`key` readable by the test's user).
fn psql_tls(port: u16, key: &str, sql: &str) -> Result<String, String> {
    let conninfo = format!(
        "host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=2 sslmode=verify-full sslrootcert={} sslcert={} sslkey={key}",
        tls_file("ca.crt"),
        tls_file("node.crt"),
    );
    psql_conninfo(&conninfo, "secret", sql)
}

/// PostgreSQL that takes TLS connections with a client certificate only (`hostssl ...
/// clientcert=verify-ca`, no plain `host` line): the roles' `sslmode`, `sslrootcert`,
/// `sslcert` and `sslkey` (Patroni's `PATRONI_SUPERUSER_*`/`PATRONI_REPLICATION_*`) reach every
/// connection Regent makes or hands to libpq: its own superuser session (`verify-full`),
/// pg_basebackup, `primary_conninfo` and the replication check (`verify-ca`). A cluster
/// bootstraps, clones, streams over TLS, switches over and streams again.
#[test]
fn postgres_connections_use_the_roles_tls_settings() {
    let _g = serial();
    let tmp = open_tempdir();
    let etcd = Etcd::start(tmp.path());
    let ep = etcd.endpoint();
    let tls_dir = tmp.path().join("pgtls");
    std::fs::create_dir(&tls_dir).expect("mkdir");
    std::fs::set_permissions(&tls_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let server_key = private_copy(&tls_file("node.key"), &tls_dir.join("server.key"), true);
    let client_key = private_copy(&tls_file("node.key"), &tls_dir.join("client.key"), true);
    let test_key = private_copy(&tls_file("node.key"), &tls_dir.join("test.key"), false);
    let quoted = |s: String| format!("'{s}'");
    let spec = NodeSpec {
        parameters: vec![
            ("ssl".into(), "'on'".into()),
            ("ssl_cert_file".into(), quoted(tls_file("node.crt"))),
            ("ssl_key_file".into(), quoted(server_key)),
            ("ssl_ca_file".into(), quoted(tls_file("ca.crt"))),
        ],
        ..NodeSpec::default()
    };
    let role_env = |role: &str, mode: &str| {
        vec![
            (format!("PATRONI_{role}_SSLMODE"), mode.to_string()),
            (format!("PATRONI_{role}_SSLROOTCERT"), tls_file("ca.crt")),
            (format!("PATRONI_{role}_SSLCERT"), tls_file("node.crt")),
            (format!("PATRONI_{role}_SSLKEY"), client_key.clone()),
        ]
    };
    let mut nodes: Vec<Node> = ["n1", "n2"]
        .iter()
        .map(|name| {
            let mut n = Node::new(tmp.path(), name, std::slice::from_ref(&ep), &spec);
            let yaml = std::fs::read_to_string(&n.config).expect("config");
            let tls_only = yaml
                .replace(
                    "host all all 127.0.0.1/32 md5",
                    "hostssl all all 127.0.0.1/32 md5 clientcert=verify-ca",
                )
                .replace(
                    "host replication replicator 127.0.0.1/32 md5",
                    "hostssl replication replicator 127.0.0.1/32 md5 clientcert=verify-ca",
                );
            assert_ne!(tls_only, yaml, "the test's pg_hba lines were not found");
            std::fs::write(&n.config, tls_only).expect("config");
            n.env = role_env("SUPERUSER", "verify-full");
            n.env.extend(role_env("REPLICATION", "verify-ca"));
            n
        })
        .collect();
    for n in &mut nodes {
        n.start();
    }
    let ctl_yml = tmp.path().join("ctl.yml");
    std::fs::write(&ctl_yml, format!("scope: test\netcd3:\n  hosts: [{ep}]\n")).expect("ctl");
    let streams_over_tls = |listed: &[(String, String, String)]| {
        let leader = listed.iter().find(|m| m.1 == "Leader")?;
        let port = nodes.iter().find(|n| n.name == leader.0)?.pg_port;
        psql_tls(
            port,
            &test_key,
            "SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) \
             WHERE s.ssl AND s.client_dn IS NOT NULL AND r.state = 'streaming'",
        )
        .ok()
        .filter(|n| n == "1")
    };
    let listed = wait_for(
        "a leader and a replica streaming over TLS with a client certificate",
        Duration::from_secs(120),
        || {
            let m = members(&ctl_yml).filter(|m| settled(m))?;
            streams_over_tls(&m).map(|_| m)
        },
    );
    // Without a client certificate PostgreSQL refuses (the pg_hba lines demand one).
    let plain = psql_at("127.0.0.1", nodes[0].pg_port, "SELECT 1");
    assert!(plain.is_err(), "{plain:?}");

    let replica = listed
        .iter()
        .find(|m| m.1 == "Replica")
        .map(|m| m.0.clone())
        .expect("a replica");
    ctl(
        &ctl_yml,
        &["switchover", "--candidate", &replica, "--force"],
    )
    .expect_ok("switchover");
    wait_for(
        "the former leader streaming from the new one over TLS",
        Duration::from_secs(90),
        || {
            let m = members(&ctl_yml).filter(|m| settled(m))?;
            m.iter()
                .any(|r| r.0 == replica && r.1 == "Leader")
                .then_some(())?;
            streams_over_tls(&m)
        },
    );
    for n in &mut nodes {
        n.kill_all();
    }
}
