//! Patroni's replica and bootstrap methods with real etcd, PostgreSQL and `regent`: command
//! methods run in order with Patroni's arguments, a failed one leaves nothing behind and the
//! next one runs; a custom bootstrap restores a backup, recovers, and `post_bootstrap` runs
//! before the node leads.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;

/// A directory the PostgreSQL OS user may write (the scripts record into it).
fn shared_dir(base: &Path, name: &str) -> PathBuf {
    let d = base.join(name);
    std::fs::create_dir_all(&d).expect("mkdir");
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    chown_pg(&d);
    d
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\nset -eu\n{body}\n")).expect("write script");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

/// Shell lines that set `$d` and `$c` from `--datadir=` and `--connstring=`, and append every
/// argument, one per line, to `$rec`.
const PARSE_ARGS: &str = r#"d=; c=
for a in "$@"; do
  echo "$a" >> "$rec"
  case $a in --datadir=*) d=${a#--datadir=};; --connstring=*) c=${a#--connstring=};; esac
done"#;

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn replica_methods_run_in_order_and_a_failed_one_leaves_nothing_behind() {
    let _serial = serial();
    let c = Cluster::new(2, NodeSpec::default());
    let rec = shared_dir(c.tmp.path(), "records");
    let bin = bin_dir();
    let broken = script(
        &rec,
        "broken.sh",
        &format!(
            "rec={}/broken.args\n{PARSE_ARGS}\ntouch \"$d/half-written\"\nexit 3",
            rec.display()
        ),
    );
    let copy = script(
        &rec,
        "copy.sh",
        &format!(
            "rec={}/copy.args\n{PARSE_ARGS}\n[ ! -e \"$d/half-written\" ] || {{ echo 'the failed method left a file' >&2; exit 9; }}\n{}/pg_basebackup -D \"$d\" -X stream -d \"$c\"",
            rec.display(),
            bin.display()
        ),
    );
    set_config(
        &c.nodes[1],
        "postgresql.create_replica_methods",
        "[broken, copy, basebackup]",
    );
    set_config(
        &c.nodes[1],
        "postgresql.broken",
        &format!("{{command: {}, keep_data: false}}", broken.display()),
    );
    set_config(
        &c.nodes[1],
        "postgresql.copy",
        &format!("{{command: '{} --label=x', retries: 2}}", copy.display()),
    );
    let mut c = c;
    c.nodes[0].start();
    let leader = c.wait_leader(Duration::from_secs(90));
    assert_eq!(leader, 0);
    c.nodes[1].start();
    c.wait_streaming(0, 1, Duration::from_secs(120));

    let data = c.nodes[1].dir.join("data");
    let b = lines(&rec.join("broken.args"));
    let k = lines(&rec.join("copy.args"));
    for args in [&b, &k] {
        assert!(args.contains(&"--scope=test".to_string()), "{args:?}");
        assert!(args.contains(&"--role=replica".to_string()), "{args:?}");
        assert!(
            args.contains(&format!("--datadir={}", data.display())),
            "{args:?}"
        );
        let conn = args
            .iter()
            .find_map(|a| a.strip_prefix("--connstring="))
            .unwrap_or_else(|| panic!("no --connstring in {args:?}"));
        assert!(
            conn.contains(&format!("port={}", c.nodes[0].pg_port))
                && conn.contains("user=replicator"),
            "{conn}"
        );
        assert!(
            !conn.contains("rep-pass"),
            "the password travels in PGPASSWORD, not argv: {conn}"
        );
    }
    // Patroni passes the section's other keys as --key=value (here keep_data and retries).
    assert!(b.contains(&"--keep_data=False".to_string()), "{b:?}");
    assert!(
        k.contains(&"--retries=2".to_string()) && k.contains(&"--label=x".to_string()),
        "{k:?}"
    );
    assert!(!data.join("half-written").exists());
    let log = c.nodes[1].log();
    assert!(
        log.contains("replica method failed; trying the next one"),
        "{log}"
    );
    c.nodes.iter_mut().for_each(|n| n.kill_all());
}

#[test]
fn a_custom_bootstrap_restores_a_backup_then_post_bootstrap_runs_before_it_leads() {
    let _serial = serial();
    // A first cluster with data, and a base backup of it.
    let mut src = Cluster::new(1, NodeSpec::default());
    src.nodes[0].start();
    src.wait_leader(Duration::from_secs(90));
    let p = src.nodes[0].pg_port;
    psql(
        p,
        "CREATE TABLE restored (id int); INSERT INTO restored SELECT generate_series(1, 500)",
    )
    .expect("rows in the source");
    let backups = shared_dir(src.tmp.path(), "backups");
    let backup = backups.join("base");
    let out = std::process::Command::new(bin_dir().join("pg_basebackup"))
        .args([
            "-D",
            &backup.display().to_string(),
            "-X",
            "stream",
            "-c",
            "fast",
        ])
        .args([
            "-d",
            &format!("host=127.0.0.1 port={p} user=replicator dbname=postgres"),
        ])
        .env("PGPASSWORD", "rep-pass")
        .output()
        .expect("pg_basebackup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let owned = std::process::Command::new("chown")
        .args(["-R", "postgres:postgres", &backups.display().to_string()])
        .status();
    if is_root() {
        assert!(
            owned.is_ok_and(|s| s.success()),
            "chown the backup to postgres"
        );
    }
    src.nodes.iter_mut().for_each(|n| n.kill_all());

    let mut c = Cluster::new(1, NodeSpec::default());
    let rec = shared_dir(c.tmp.path(), "records");
    let restore = script(
        &rec,
        "restore.sh",
        &format!(
            "rec={}/restore.args\n{PARSE_ARGS}\ncp -R {}/. \"$d\"/\nchmod 700 \"$d\"",
            rec.display(),
            backup.display()
        ),
    );
    let post = script(
        &rec,
        "post.sh",
        &format!(
            "echo \"$@\" > {}/post.args\n{}/psql \"$1\" -v ON_ERROR_STOP=1 -c 'CREATE TABLE post_bootstrap_ran (at timestamptz DEFAULT now())'",
            rec.display(),
            bin_dir().display()
        ),
    );
    set_config(&c.nodes[0], "bootstrap.method", "restore");
    set_config(
        &c.nodes[0],
        "bootstrap.restore",
        &format!(
            "{{command: {}, target: nightly, recovery_conf: {{restore_command: 'false', recovery_target_timeline: latest}}}}",
            restore.display()
        ),
    );
    set_config(
        &c.nodes[0],
        "bootstrap.post_bootstrap",
        &post.display().to_string(),
    );
    c.nodes[0].start();
    c.wait_leader(Duration::from_secs(120));
    let p = c.nodes[0].pg_port;
    assert_eq!(
        psql(p, "SELECT count(*) FROM restored").as_deref(),
        Ok("500")
    );
    assert_eq!(
        psql(p, "SELECT count(*) FROM post_bootstrap_ran").as_deref(),
        Ok("0"),
        "post_bootstrap created its table"
    );
    assert_eq!(psql(p, "SELECT pg_is_in_recovery()").as_deref(), Ok("f"));
    let args = lines(&rec.join("restore.args"));
    assert!(
        args.contains(&"--scope=test".to_string())
            && args.contains(&"--target=nightly".to_string()),
        "{args:?}"
    );
    let post_args = std::fs::read_to_string(rec.join("post.args")).expect("post_bootstrap ran");
    assert!(post_args.contains("user=postgres"), "{post_args}");
    // The recovery settings served one start only.
    let conf = std::fs::read_to_string(c.nodes[0].dir.join("data/regent.conf")).unwrap_or_default();
    assert!(!conf.contains("restore_command"), "{conf}");
    let log = c.nodes[0].log();
    assert!(
        log.contains("running the custom bootstrap command"),
        "{log}"
    );
    c.nodes.iter_mut().for_each(|n| n.kill_all());
}
