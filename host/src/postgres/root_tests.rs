//! Safety review item 8 (and part of 14): when regent runs as root, the PostgreSQL OS user
//! (which any database superuser reaches with `COPY ... TO PROGRAM`) must not become root
//! through the files regent writes for PostgreSQL. These tests play that user: they plant
//! symbolic links in the directories it owns, pointing at root's files, and check that regent
//! neither writes, reads, chowns nor deletes through them. They need root (to be root's
//! victim) and the `postgres` OS user; without either they say SKIPPED and return.

use super::{Creds, PgSettings, Postgres};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::Duration;

const PRECIOUS: &str = "root's file, not to be touched\n";

/// The uid and gid of the `postgres` OS user, when this test runs as root; else `None`
/// after a loud SKIPPED line.
fn root_and_postgres(test: &str) -> Option<(u32, u32)> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("{test}: SKIPPED: needs root (it checks what regent does as root)");
        return None;
    }
    match nix::unistd::User::from_name("postgres") {
        Ok(Some(u)) => Some((u.uid.as_raw(), u.gid.as_raw())),
        _ => {
            eprintln!("{test}: SKIPPED: needs the `postgres` OS user");
            None
        }
    }
}

/// A node's directories as the PostgreSQL OS user owns them, and a directory only root can
/// enter (`vault`) holding the files the links point at.
struct Layout {
    _tmp: tempfile::TempDir,
    run: PathBuf,
    data: PathBuf,
    vault: PathBuf,
    bin: PathBuf,
}

fn layout(pg: (u32, u32)) -> Layout {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let run = tmp.path().join("node");
    let data = run.join("data");
    let vault = tmp.path().join("vault");
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&run).expect("mkdir run");
    std::fs::create_dir(&data).expect("mkdir data");
    std::fs::create_dir(&vault).expect("mkdir vault");
    std::fs::create_dir(&bin).expect("mkdir bin");
    std::fs::set_permissions(&vault, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    for d in [&run, &data] {
        std::os::unix::fs::chown(d, Some(pg.0), Some(pg.1)).expect("chown to postgres");
    }
    Layout {
        _tmp: tmp,
        run,
        data,
        vault,
        bin,
    }
}

impl Layout {
    /// A file of root's in the vault, and a link to it planted at `at` (as the PostgreSQL OS
    /// user could plant it).
    fn plant(&self, at: &Path, name: &str, pg: (u32, u32)) -> PathBuf {
        let target = self.vault.join(name);
        std::fs::write(&target, PRECIOUS).expect("write target");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        symlink(&target, at).expect("plant link");
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            at,
            Some(nix::unistd::Uid::from_raw(pg.0)),
            Some(nix::unistd::Gid::from_raw(pg.1)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .expect("chown link");
        target
    }

    fn postgres(&self, password: Option<&str>) -> Postgres {
        // Resolved as in the field: the owner of the data directory's parent.
        self.postgres_as(password, None)
    }

    fn postgres_as(&self, password: Option<&str>, os_user: Option<String>) -> Postgres {
        Postgres::new(PgSettings {
            name: "n1".into(),
            scope: "demo".into(),
            bin_dir: self.bin.clone(),
            data_dir: self.data.clone(),
            run_dir: self.run.clone(),
            listen_host: "127.0.0.1".into(),
            port: 5432,
            superuser: Creds {
                user: "postgres".into(),
                password: password.map(str::to_string),
                params: Vec::new(),
            },
            replication: Creds {
                user: "replicator".into(),
                password: None,
                params: Vec::new(),
            },
            rewind: None,
            parameters: BTreeMap::new(),
            pg_hba: Vec::new(),
            initdb: Vec::new(),
            methods: Default::default(),
            os_user,
        })
        .expect("postgres")
    }
}

/// Root's file is as it was: same content, still root's, same mode.
fn untouched(target: &Path) {
    let meta = std::fs::metadata(target).expect("the target still exists");
    let text = std::fs::read_to_string(target).expect("read target");
    assert_eq!(
        (
            text.as_str(),
            meta.uid(),
            meta.gid(),
            format!("{:o}", meta.mode() & 0o7777)
        ),
        (PRECIOUS, 0, 0, "644".to_string()),
        "regent wrote or chowned root's file {} through a link the PostgreSQL OS user planted",
        target.display()
    );
}

/// (mode in octal, owner uid) of a file.
fn mode_owner(p: &Path) -> (String, u32) {
    let m = std::fs::symlink_metadata(p).expect("stat");
    (format!("{:o}", m.mode() & 0o7777), m.uid())
}

/// `write_owned` (regent.conf, standby.signal, pg_hba.conf, postgresql.conf) wrote its
/// temporary file as root through whatever stood at `<file>.regent-tmp`, then chowned it to
/// the PostgreSQL OS user: a link there handed root's file over.
#[test]
fn regent_conf_and_standby_signal_never_go_through_a_planted_link() {
    let Some(pg) =
        root_and_postgres("regent_conf_and_standby_signal_never_go_through_a_planted_link")
    else {
        return;
    };
    let l = layout(pg);
    let conf_target = l.plant(&l.data.join("regent.regent-tmp"), "passwd", pg);
    let signal_target = l.plant(&l.data.join("standby.regent-tmp"), "shadow", pg);
    let postgres = l.postgres(None);
    let result = postgres.configure(true, None);
    untouched(&conf_target);
    untouched(&signal_target);
    result.expect("configure writes its files in the data directory");
    for f in ["regent.conf", "standby.signal", "postgresql.conf"] {
        assert_eq!(
            mode_owner(&l.data.join(f)),
            ("600".to_string(), pg.0),
            "{f}: (mode, owner) is not (0600, the PostgreSQL OS user)"
        );
    }
}

/// `configure` reads `postgresql.conf` to add its include line and writes it back: as root,
/// a `postgresql.conf` linked to a file only root may read came back readable by the
/// PostgreSQL OS user.
#[test]
fn postgresql_conf_is_never_read_through_a_planted_link() {
    let Some(pg) = root_and_postgres("postgresql_conf_is_never_read_through_a_planted_link") else {
        return;
    };
    let l = layout(pg);
    let target = l.plant(&l.data.join("postgresql.conf"), "secret", pg);
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let result = l.postgres(None).configure(false, None);
    let conf = l.data.join("postgresql.conf");
    // Still the link: nothing came through it. A file in its place must not hold root's text.
    let now = match std::fs::symlink_metadata(&conf) {
        Ok(m) if m.file_type().is_symlink() => String::new(),
        _ => std::fs::read_to_string(&conf).unwrap_or_default(),
    };
    assert!(
        !now.contains(PRECIOUS.trim()),
        "root's file reached the data directory through postgresql.conf: {now:?} ({result:?})"
    );
    assert!(result.is_err(), "an unreadable postgresql.conf is an error");
}

/// `start` opened `<run_dir>/<name>-postgresql.log` as root (following a link) and chowned it
/// to the PostgreSQL OS user.
#[tokio::test]
async fn the_postgresql_log_never_goes_through_a_planted_link() {
    let Some(pg) = root_and_postgres("the_postgresql_log_never_goes_through_a_planted_link") else {
        return;
    };
    let l = layout(pg);
    let target = l.plant(&l.run.join("n1-postgresql.log"), "log-target", pg);
    // No `postgres` in bin: the start fails once the log is open.
    let result = l.postgres(None).start(Duration::from_secs(1)).await;
    untouched(&target);
    assert!(result.is_err(), "{result:?}");
}

/// Item 14: the PostgreSQL log was created with the default umask (0644), readable by every
/// local user.
#[tokio::test]
async fn the_postgresql_log_is_created_0600_by_the_postgresql_user() {
    let Some(pg) = root_and_postgres("the_postgresql_log_is_created_0600_by_the_postgresql_user")
    else {
        return;
    };
    let l = layout(pg);
    let result = l.postgres(None).start(Duration::from_secs(1)).await;
    assert!(result.is_err(), "no postgres in bin: {result:?}");
    assert_eq!(
        mode_owner(&l.run.join("n1-postgresql.log")),
        ("600".to_string(), pg.0),
        "the PostgreSQL log's (mode, owner)"
    );
}

/// Item 14: initdb's `--pwfile` (the superuser's password) was created with the default umask
/// (0644). A stand-in `initdb` reports the file's mode and owner as it sees them.
#[tokio::test]
async fn the_superuser_pwfile_is_created_0600_by_the_postgresql_user() {
    let Some(pg) = root_and_postgres("the_superuser_pwfile_is_created_0600_by_the_postgresql_user")
    else {
        return;
    };
    let l = layout(pg);
    let report = l.run.join("pwfile-seen");
    let script = format!(
        "#!/bin/sh\nfor a; do case \"$a\" in --pwfile=*) stat -c '%a %u' \"${{a#--pwfile=}}\" > {};; esac; done\nexit 1\n",
        report.display()
    );
    let initdb = l.bin.join("initdb");
    std::fs::write(&initdb, script).expect("write initdb");
    std::fs::set_permissions(&initdb, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&l.bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let result = l.postgres(Some("s3cret")).initdb().await;
    assert!(result.is_err(), "the stand-in initdb fails: {result:?}");
    let seen = std::fs::read_to_string(&report).expect("the stand-in initdb ran");
    assert_eq!(
        seen.trim(),
        format!("600 {}", pg.0),
        "the pwfile's mode and owner as initdb saw them"
    );
    assert!(
        !l.run.join(".n1-pwfile").exists(),
        "the pwfile is removed after initdb"
    );
}

/// The former-primary marker (`<run_dir>/<name>.former-primary`) was written as root
/// through whatever stood at its name.
#[test]
fn the_former_primary_marker_never_goes_through_a_planted_link() {
    let Some(pg) = root_and_postgres("the_former_primary_marker_never_goes_through_a_planted_link")
    else {
        return;
    };
    let l = layout(pg);
    let target = l.plant(&l.run.join("n1.former-primary"), "marker-target", pg);
    let postgres = l.postgres(None);
    let result = postgres.set_former_primary(true);
    untouched(&target);
    result.expect("the marker is written");
    assert!(postgres.former_primary());
    postgres
        .set_former_primary(false)
        .expect("the marker is removed");
    untouched(&target);
}

/// A clone into the data directory: as root, regent created the directory (following a link
/// the PostgreSQL OS user put in its place), chowned and chmodded it, and after a failed
/// pg_basebackup deleted everything in it: a directory of root's, emptied and handed over.
#[tokio::test]
async fn a_failed_clone_never_chowns_or_empties_a_directory_behind_a_link() {
    let Some(pg) =
        root_and_postgres("a_failed_clone_never_chowns_or_empties_a_directory_behind_a_link")
    else {
        return;
    };
    let l = layout(pg);
    let victim = l.vault.join("etc");
    std::fs::create_dir(&victim).expect("mkdir victim");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(victim.join("passwd"), PRECIOUS).expect("write");
    std::fs::remove_dir(&l.data).expect("rmdir data");
    symlink(&victim, &l.data).expect("plant link");
    let upstream = super::Upstream {
        name: "n0".into(),
        host: "127.0.0.1".into(),
        port: 5432,
        remote: false,
    };
    // No pg_basebackup in bin: the clone fails.
    let result = l.postgres(None).basebackup(&upstream).await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(
        mode_owner(&victim),
        ("755".to_string(), 0),
        "root's directory behind the link was chmodded or chowned"
    );
    assert_eq!(
        std::fs::read_to_string(victim.join("passwd"))
            .ok()
            .as_deref(),
        Some(PRECIOUS),
        "root's directory behind the link was emptied"
    );
}

/// The end of the PostgreSQL log goes into error messages (the regent log, the REST API):
/// read as root through a link at the log's name, it published the end of any file. (Needs
/// no root to show: whoever reads, reads through the link.)
#[test]
fn the_log_tail_is_never_read_through_a_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("shadow");
    std::fs::write(&secret, "root:$6$secret-hash:19000:0:99999:7:::\n").expect("write");
    let log = dir.path().join("n1-postgresql.log");
    symlink(&secret, &log).expect("link");
    let tail = super::process::log_tail(&log, 5);
    assert!(
        !tail.contains("secret-hash"),
        "the log's tail came through a link: {tail:?}"
    );
}

/// `regent.conf` is read back every loop (the configured upstream): a FIFO at its name (the
/// data directory is the PostgreSQL OS user's) blocked the loop.
#[test]
fn regent_conf_is_never_read_from_a_fifo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    nix::unistd::mkfifo(
        &data.join("regent.conf"),
        nix::sys::stat::Mode::from_bits_truncate(0o666),
    )
    .expect("mkfifo");
    let l = Layout {
        run: dir.path().to_path_buf(),
        data,
        vault: dir.path().join("vault"),
        bin: dir.path().join("bin"),
        _tmp: dir,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Whoever runs the test is PostgreSQL's user here (root included).
        let me = nix::unistd::User::from_uid(nix::unistd::Uid::effective())
            .ok()
            .flatten()
            .map(|u| u.name);
        let pg = l.postgres_as(None, me);
        let _ = tx.send(pg.configured_source().0);
        drop(l);
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(3)),
        Ok(None),
        "reading regent.conf blocked on a FIFO"
    );
}
