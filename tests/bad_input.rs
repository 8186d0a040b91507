//! Bad input gives one clear error line, a non-zero exit, and touches no data.

mod support;

use std::path::Path;
use std::process::Command;
use support::*;

struct Outcome {
    code: Option<i32>,
    errors: Vec<String>,
    stderr: String,
}

fn run(args: &[&str]) -> Outcome {
    let out = Command::new(REGENT)
        .args(args)
        .output()
        .expect("run regent");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let errors = stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .map(str::to_string)
        .collect();
    Outcome {
        code: out.status.code(),
        errors,
        stderr,
    }
}

fn config(
    dir: &Path,
    etcd: &str,
    data_dir: &Path,
    bin_dir: &Path,
    ttl: &str,
) -> std::path::PathBuf {
    let p = dir.join("regent.yml");
    std::fs::write(
        &p,
        format!(
            r#"scope: bad
name: n1
restapi:
  listen: 127.0.0.1:{api}
etcd3:
  hosts: {etcd}
bootstrap:
  dcs:
    ttl: {ttl}
    loop_wait: 1
    retry_timeout: 2
postgresql:
  listen: 127.0.0.1:{pg}
  data_dir: {data}
  bin_dir: {bin}
  authentication:
    superuser: {{username: postgres, password: x}}
    replication: {{username: replicator, password: y}}
"#,
            api = free_port(),
            pg = free_port(),
            data = data_dir.display(),
            bin = bin_dir.display(),
        ),
    )
    .expect("write config");
    p
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn assert_one_error(o: &Outcome, needle: &str) {
    assert_ne!(o.code, Some(0), "must exit non-zero; stderr: {}", o.stderr);
    assert_eq!(
        o.errors.len(),
        1,
        "exactly one error line; stderr: {}",
        o.stderr
    );
    assert!(
        o.errors[0].contains(needle),
        "error line `{}` should mention `{needle}`",
        o.errors[0]
    );
}

#[test]
fn wrong_type_names_the_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let cfg = config(tmp.path(), "[127.0.0.1:2379]", &data, &bin_dir(), "ten");
    for cmd in ["validate-config", "run"] {
        let o = run(&[cmd, cfg.to_str().expect("utf8")]);
        assert_one_error(&o, "bootstrap.dcs.ttl");
        assert!(!data.exists(), "{cmd} created no data directory");
    }
}

#[test]
fn a_file_where_a_data_dir_parent_must_go_is_named() {
    // Missing parents are created as the PostgreSQL OS user (as initdb does under Patroni);
    // a file standing in their way cannot become one.
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(tmp.path().join("no"), "").expect("file");
    let data = tmp.path().join("no/such/parent/data");
    let cfg = config(tmp.path(), "[127.0.0.1:2379]", &data, &bin_dir(), "10");
    for cmd in ["validate-config", "run"] {
        let o = run(&[cmd, cfg.to_str().expect("utf8")]);
        assert_one_error(&o, "is a file");
        assert!(o.errors[0].contains("mkdir -p"), "{}", o.errors[0]);
    }
    assert!(tmp.path().join("no").is_file(), "nothing was touched");
}

#[test]
fn bin_dir_without_binaries_is_named() {
    let tmp = tempfile::tempdir().expect("tmp");
    let empty_bin = tmp.path().join("bin");
    std::fs::create_dir(&empty_bin).expect("mkdir");
    let data = tmp.path().join("data");
    let cfg = config(tmp.path(), "[127.0.0.1:2379]", &data, &empty_bin, "10");
    for cmd in ["validate-config", "run"] {
        let o = run(&[cmd, cfg.to_str().expect("utf8")]);
        assert_one_error(&o, "postgres");
        assert!(o.errors[0].contains(&empty_bin.display().to_string()));
        assert!(!data.exists());
    }
}

#[test]
fn unreachable_etcd_fails_and_touches_no_data() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let base = tmp.path().join("node");
    std::fs::create_dir(&base).expect("mkdir");
    chown_pg(&base);
    let data = base.join("data");
    std::fs::create_dir(&data).expect("mkdir data");
    std::fs::write(data.join("precious.txt"), "keep me").expect("write");
    let before = listing(&base);
    let dead_port = free_port();
    let cfg = config(
        tmp.path(),
        &format!("[127.0.0.1:{dead_port}]"),
        &data,
        &bin_dir(),
        "10",
    );
    let o = run(&["run", cfg.to_str().expect("utf8")]);
    assert_one_error(&o, "etcd");
    assert!(
        o.errors[0].contains(&dead_port.to_string()),
        "names the endpoint"
    );
    assert_eq!(
        listing(&base),
        before,
        "nothing created or removed beside the data dir"
    );
    assert_eq!(listing(&data), vec!["precious.txt".to_string()]);
    assert_eq!(
        std::fs::read_to_string(data.join("precious.txt"))
            .ok()
            .as_deref(),
        Some("keep me")
    );
}
