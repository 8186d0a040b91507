//! Configuration from the environment, as Patroni reads it: `regent run` and `validate-config`
//! without a file read `PATRONI_CONFIGURATION` or the `PATRONI_*` variables, the variables go
//! on top of a file, and the programs Regent starts never see the variables it read.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use support::*;

/// `regent ARGS` with only `vars` (and PATH) in its environment.
fn regent(args: &[&str], vars: &[(&str, String)]) -> Output {
    Command::new(REGENT)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .expect("run regent")
}

fn error_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("error:"))
        .map(str::to_string)
        .collect()
}

/// `<tmp>/node`, owned by the PostgreSQL OS user, and the data directory path inside it.
fn node_dir(tmp: &Path) -> PathBuf {
    let base = tmp.join("node");
    std::fs::create_dir(&base).expect("mkdir");
    chown_pg(&base);
    base.join("data")
}

/// Every key of a node configuration as `PATRONI_*` variables, etcd at `etcd`.
fn node_vars(etcd: &str, data: &Path, bin: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("PATRONI_SCOPE", "envonly".into()),
        ("PATRONI_NAME", "n1".into()),
        (
            "PATRONI_RESTAPI_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
        ("PATRONI_ETCD3_HOSTS", etcd.into()),
        (
            "PATRONI_POSTGRESQL_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
        ("PATRONI_POSTGRESQL_DATA_DIR", data.display().to_string()),
        ("PATRONI_POSTGRESQL_BIN_DIR", bin.display().to_string()),
        ("PATRONI_SUPERUSER_USERNAME", "postgres".into()),
        ("PATRONI_SUPERUSER_PASSWORD", "super-secret-from-env".into()),
        ("PATRONI_REPLICATION_USERNAME", "replicator".into()),
        (
            "PATRONI_REPLICATION_PASSWORD",
            "repl-secret-from-env".into(),
        ),
    ]
}

#[test]
fn bad_patroni_configuration_is_named() {
    for cmd in [&["run"][..], &["validate-config"][..]] {
        let out = regent(
            cmd,
            &[(
                "PATRONI_CONFIGURATION",
                "scope: batman\nname: [oops\n".into(),
            )],
        );
        assert_ne!(out.status.code(), Some(0), "{cmd:?} must fail");
        let errors = error_lines(&out);
        assert_eq!(errors.len(), 1, "{cmd:?}: {errors:?}");
        assert!(
            errors[0].starts_with("error: PATRONI_CONFIGURATION: config is not valid YAML"),
            "{cmd:?}: {}",
            errors[0]
        );
    }
}

#[test]
fn bad_variable_value_is_named() {
    let out = regent(
        &["validate-config"],
        &[
            ("PATRONI_SCOPE", "s".into()),
            ("PATRONI_CTL_INSECURE", "perhaps".into()),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("PATRONI_CTL_INSECURE") && errors[0].contains("\"perhaps\""),
        "{}",
        errors[0]
    );
}

#[test]
fn nothing_at_all_says_what_to_give() {
    let out = regent(&["run"], &[]);
    assert_ne!(out.status.code(), Some(0));
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("no configuration given") && errors[0].contains("PATRONI_CONFIGURATION"),
        "{}",
        errors[0]
    );
}

#[test]
fn run_without_a_file_reads_the_variables() {
    let tmp = open_tempdir();
    let data = node_dir(tmp.path());
    let dead_port = free_port();
    let vars = node_vars(&format!("127.0.0.1:{dead_port}"), &data, &bin_dir());
    let out = regent(&["run"], &vars);
    assert_ne!(out.status.code(), Some(0));
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 1, "{}", String::from_utf8_lossy(&out.stderr));
    // Only the variables named this etcd: the error proves they were read.
    assert!(
        errors[0].contains("etcd") && errors[0].contains(&format!("127.0.0.1:{dead_port}")),
        "{}",
        errors[0]
    );
    assert!(!data.exists(), "nothing created");
}

#[test]
fn etcd3_from_the_environment_completes_a_file() {
    let tmp = open_tempdir();
    let data = tmp.path().join("data");
    let conf = tmp.path().join("conf.d");
    std::fs::create_dir(&conf).expect("mkdir");
    let file = conf.join("10-node.yml");
    std::fs::write(
        &file,
        format!(
            r#"scope: fromfile
name: n1
restapi:
  listen: 127.0.0.1:{api}
postgresql:
  listen: 127.0.0.1:{pg}
  data_dir: {data}
  bin_dir: {bin}
  authentication:
    superuser: {{username: postgres}}
    replication: {{username: replicator}}
"#,
            api = free_port(),
            pg = free_port(),
            data = data.display(),
            bin = bin_dir().display(),
        ),
    )
    .expect("write");
    let file_arg = file.to_str().expect("utf8");

    let out = regent(&["validate-config", file_arg], &[]);
    assert_eq!(out.status.code(), Some(2), "no etcd3 without the variable");
    assert!(
        error_lines(&out)[0].contains("etcd3"),
        "{:?}",
        error_lines(&out)
    );

    let etcd = [(
        "PATRONI_ETCD3_HOSTS",
        "127.0.0.1:2379,127.0.0.2:2379".to_string(),
    )];
    let out = regent(&["validate-config", file_arg], &etcd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("with the PATRONI_* variables: configuration is valid"),
        "{stdout}"
    );

    // The directory holding the file reads the same; a later file there wins, the
    // variables win over both.
    std::fs::write(conf.join("20-more.yaml"), "etcd3: {hosts: 'bad host'}\n").expect("write");
    let out = regent(&["validate-config", conf.to_str().expect("utf8")], &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "the second file's etcd3 is read"
    );
    let out = regent(&["validate-config", conf.to_str().expect("utf8")], &etcd);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bin directory whose programs write their environment to `dump` and fail.
fn env_dumping_bin_dir(dir: &Path, dump: &Path) -> PathBuf {
    let bin = dir.join("fakebin");
    std::fs::create_dir(&bin).expect("mkdir");
    for prog in [
        "postgres",
        "initdb",
        "pg_ctl",
        "pg_basebackup",
        "pg_rewind",
        "pg_controldata",
    ] {
        let p = bin.join(prog);
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\nenv > '{d}/.{prog}.$$' && mv '{d}/.{prog}.$$' '{d}/{prog}.env'\nexit 1\n",
                d = dump.display()
            ),
        )
        .expect("write script");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    bin
}

/// A `regent run` in its own process group; killed with its guard when dropped.
struct Running {
    child: std::process::Child,
    run_dir: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill, killpg};
        use nix::unistd::Pid;
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
        if let Ok(it) = std::fs::read_dir(&self.run_dir) {
            for e in it.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .ends_with(".regent-guard.pid")
                    && let Ok(pid) = std::fs::read_to_string(e.path())
                    && let Ok(pid) = pid.trim().parse::<i32>()
                {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }
}

#[test]
fn programs_regent_starts_do_not_see_the_variables() {
    let tmp = open_tempdir();
    let etcd = Etcd::start(tmp.path());
    let data = node_dir(tmp.path());
    let dump = tmp.path().join("dump");
    std::fs::create_dir(&dump).expect("mkdir");
    std::fs::set_permissions(&dump, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let bin = env_dumping_bin_dir(tmp.path(), &dump);

    let mut vars = node_vars(&etcd.endpoint(), &data, &bin);
    vars.push(("PATRONI_RESTAPI_USERNAME", "admin".into()));
    vars.push(("PATRONI_RESTAPI_PASSWORD", "api-secret-from-env".into()));
    // Not a variable Patroni reads: left alone, so it shows that the environment is inherited.
    vars.push(("PATRONI_UNRELATED", "inherited".into()));
    vars.push(("REGENT_TEST_MARKER", "inherited".into()));
    let log = tmp.path().join("regent.log");
    let _running = Running {
        child: Command::new(REGENT)
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .process_group(0)
            .spawn()
            .expect("start regent"),
        run_dir: data.parent().expect("parent").to_path_buf(),
    };

    // The programs are found only through PATRONI_POSTGRESQL_BIN_DIR: one running proves that
    // regent read the variables.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let found = std::fs::read_dir(&dump).ok().and_then(|it| {
            it.flatten()
                .find(|e| e.file_name().to_string_lossy().ends_with(".env"))
        });
        if let Some(text) = found.and_then(|e| std::fs::read_to_string(e.path()).ok()) {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no PostgreSQL program ran within 60 s; regent's log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    assert!(
        seen.lines().any(|l| l == "REGENT_TEST_MARKER=inherited"),
        "the program inherits regent's environment: {seen}"
    );
    assert!(
        seen.lines().any(|l| l == "PATRONI_UNRELATED=inherited"),
        "unknown PATRONI_ names are left alone: {seen}"
    );
    for (name, _) in vars
        .iter()
        .filter(|(k, _)| k.starts_with("PATRONI_") && *k != "PATRONI_UNRELATED")
    {
        assert!(
            !seen.lines().any(|l| l.starts_with(&format!("{name}="))),
            "{name} reached a child: {seen}"
        );
    }
    for secret in [
        "super-secret-from-env",
        "repl-secret-from-env",
        "api-secret-from-env",
    ] {
        assert!(!seen.contains(secret), "{secret} reached a child");
    }
}
