//! TLS where Patroni has it, against real servers: etcd over HTTPS demanding client
//! certificates (`--client-cert-auth`) with authentication on (`auth enable`), reached with
//! `etcd3.protocol/cacert/cert/key/username/password`; and REST APIs that demand client
//! certificates (`restapi.verify_client: required` with `cafile`), which the members' peer
//! calls and `regent ctl` pass with `ctl.certfile`/`keyfile`.

mod support;

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
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
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
    let settled = |m: &[(String, String, String)]| {
        m.len() == 2
            && m.iter()
                .filter(|r| r.1 == "Leader" && r.2 == "running")
                .count()
                == 1
            && m.iter()
                .filter(|r| r.1 == "Replica" && r.2 == "streaming")
                .count()
                == 1
    };
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
