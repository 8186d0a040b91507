//! The data directory: whether it is empty, unusable or initialized (read with
//! pg_controldata), creating it with initdb, moving it aside (never deleting it), and the
//! former-primary marker beside it in `run_dir`.

use super::{PgSettings, Postgres, Result};
use crate::ha::DataDir;
use std::collections::BTreeMap;
use std::path::PathBuf;

impl Postgres {
    /// Classify the data directory without changing it. Only what really is no PostgreSQL data
    /// directory is [`DataDir::Unusable`] (a non-empty directory without `PG_VERSION` and
    /// `global/pg_control`, or a file in its place), which stops the supervisor; a read that
    /// fails (out of file descriptors, an I/O error, pg_controldata failing) is
    /// [`DataDir::Unknown`], and the next loop reads it again.
    pub(crate) async fn data_dir_state(&self) -> DataDir {
        let d = &self.s.data_dir;
        let unknown = |what: String, e: &dyn std::fmt::Display| {
            DataDir::Unknown(format!("cannot read {what}: {e}"))
        };
        let empty = match std::fs::read_dir(d) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                return DataDir::Unusable(format!(
                    "{} is not a directory; point postgresql.data_dir at a directory",
                    d.display()
                ));
            }
            Err(e) => return unknown(d.display().to_string(), &e),
            Ok(mut it) => match it.next() {
                None => true,
                Some(Ok(_)) => false,
                Some(Err(e)) => return unknown(d.display().to_string(), &e),
            },
        };
        if empty {
            return DataDir::Empty;
        }
        let present = |name: &str| {
            let p = d.join(name);
            p.try_exists()
                .map_err(|e| unknown(p.display().to_string(), &e))
        };
        let marked = match (present("PG_VERSION"), present("global/pg_control")) {
            (Ok(v), Ok(c)) => v && c,
            (Err(u), _) | (_, Err(u)) => return u,
        };
        if !marked {
            return DataDir::Unusable(format!(
                "{} is not empty and is not a PostgreSQL data directory; move it away or point postgresql.data_dir elsewhere",
                d.display()
            ));
        }
        // A PostgreSQL data directory from here on: a failure to read it is not a verdict on it.
        let cd = match self.controldata().await {
            Ok(cd) => cd,
            Err(e) => {
                return DataDir::Unknown(format!("pg_controldata failed on {}: {e}", d.display()));
            }
        };
        let standby = match present("standby.signal") {
            Ok(s) => s,
            Err(u) => return u,
        };
        let state = cd
            .get("Database cluster state")
            .cloned()
            .unwrap_or_default();
        DataDir::Initialized {
            sysid: cd
                .get("Database system identifier")
                .cloned()
                .unwrap_or_default(),
            was_primary: matches!(
                state.as_str(),
                "in production" | "shut down" | "shutting down" | "in crash recovery"
            ) && !standby,
        }
    }

    pub(crate) async fn controldata(&self) -> Result<BTreeMap<String, String>> {
        let out = self
            .run(
                "pg_controldata",
                &[self.s.data_dir.display().to_string()],
                None,
            )
            .await?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim().to_string(), v.trim().to_string()))
            })
            .collect())
    }

    /// initdb with the configured options, then pg_hba and the superuser password.
    pub(crate) async fn initdb(&self) -> Result<()> {
        self.make_data_dir()?;
        let pwfile = self.s.run_dir.join(format!(".{}-pwfile", self.s.name));
        let mut args = vec![
            "-D".to_string(),
            self.s.data_dir.display().to_string(),
            "-U".to_string(),
            self.s.superuser.user.clone(),
        ];
        if let Some(p) = &self.s.superuser.password {
            self.write_owned(&pwfile, p)?;
            args.push(format!("--pwfile={}", pwfile.display()));
        }
        args.extend(self.s.initdb.iter().cloned());
        let res = self.run("initdb", &args, None).await;
        if let Err(e) = self.remove_owned(&pwfile) {
            tracing::warn!(error = %e, "cannot remove initdb's password file");
        }
        res?;
        // A new data directory has no past.
        self.set_former_primary(false)?;
        self.write_hba()?;
        Ok(())
    }

    /// Whether the data directory may have diverged from another leader (see
    /// [`crate::ha::PgView::former_primary`]).
    pub(crate) fn former_primary(&self) -> bool {
        self.former_primary
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Set or clear the former-primary marker. What gives the node a data directory without a
    /// diverged past (initdb, a clone, a promotion, moving it aside) clears it itself; after a
    /// rewind the caller clears it (a failure to do so must not count as a failed rewind).
    pub(crate) fn set_former_primary(&self, on: bool) -> Result<()> {
        let path = former_primary_marker(&self.s);
        if on {
            self.write_owned(&path, &self.s.data_dir.display().to_string())?;
        } else {
            self.remove_owned(&path)?;
        }
        self.former_primary
            .store(on, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Move the data directory aside (never deleted). Returns the new path.
    pub(crate) fn move_aside(&self) -> Result<PathBuf> {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let name = self
            .s
            .data_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "data".into());
        let target = self
            .s
            .data_dir
            .with_file_name(format!("{name}.regent-moved-{ts}"));
        self.rename_data_dir(&target)?;
        tracing::warn!(to = %target.display(), "moved the old data directory aside");
        self.set_former_primary(false)?;
        Ok(target)
    }
}

/// The marker that says the data directory holds a former primary's data that has not been
/// checked against (rewound to) another leader: `<run_dir>/<name>.former-primary`, outside the
/// data directory, so that it survives a restart of `regent`.
pub(super) fn former_primary_marker(s: &PgSettings) -> PathBuf {
    s.run_dir.join(format!("{}.former-primary", s.name))
}

/// The shutdown checkpoint of a cleanly stopped server, from `pg_controldata`'s output:
/// `Latest checkpoint location` when `Database cluster state` is `shut down`. After an
/// immediate stop or a crash the WAL may go on past that checkpoint: `None`.
pub(crate) fn clean_shutdown_checkpoint(cd: &BTreeMap<String, String>) -> Option<u64> {
    if cd.get("Database cluster state").map(String::as_str) != Some("shut down") {
        return None;
    }
    cd.get("Latest checkpoint location")
        .and_then(|s| super::parse_lsn(s))
}

#[cfg(test)]
mod clean_shutdown_tests {
    use super::*;

    fn controldata(state: &str) -> BTreeMap<String, String> {
        [
            ("Database cluster state", state),
            ("Latest checkpoint location", "0/3000028"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Safety review item 6: only a clean shutdown ends the WAL at its checkpoint. After an
    /// immediate stop, a SIGKILL or a crash, WAL may follow the latest checkpoint, so a
    /// replica that received the checkpoint may still lack what came after it.
    #[test]
    fn only_a_clean_shutdown_has_a_shutdown_checkpoint() {
        assert_eq!(
            clean_shutdown_checkpoint(&controldata("shut down")),
            Some(0x300_0028)
        );
        for unclean in [
            "in production",
            "shut down in recovery",
            "in crash recovery",
        ] {
            assert_eq!(
                clean_shutdown_checkpoint(&controldata(unclean)),
                None,
                "{unclean}"
            );
        }
        assert_eq!(clean_shutdown_checkpoint(&BTreeMap::new()), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::Creds;

    fn postgres(data_dir: PathBuf, bin_dir: PathBuf) -> Postgres {
        let creds = |u: &str| Creds {
            user: u.into(),
            password: None,
            params: Vec::new(),
        };
        Postgres::new(PgSettings {
            name: "n1".into(),
            scope: "demo".into(),
            bin_dir,
            run_dir: data_dir.parent().expect("parent").to_path_buf(),
            data_dir,
            listen_host: "127.0.0.1".into(),
            port: 5432,
            superuser: creds("postgres"),
            replication: creds("replicator"),
            rewind: None,
            parameters: BTreeMap::new(),
            pg_hba: Vec::new(),
            initdb: Vec::new(),
            methods: Default::default(),
            os_user: nix::unistd::Uid::effective()
                .is_root()
                .then(|| "root".to_string()),
        })
        .expect("postgres")
    }

    /// Item 10 of the safety review: a data directory that cannot be read this loop (here a
    /// symlink loop, ELOOP; in the field EMFILE, out of file descriptors) is not a foreign
    /// directory. `Unusable` stops the supervisor; the directory must be read again next loop.
    #[tokio::test]
    async fn a_data_directory_that_cannot_be_read_is_not_taken_for_a_foreign_one() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        std::os::unix::fs::symlink(&data, &data).expect("symlink loop");
        let state = postgres(data, tmp.path().join("bin"))
            .data_dir_state()
            .await;
        assert!(
            matches!(&state, DataDir::Unknown(why) if why.contains("symbolic links")),
            "an unreadable data directory is taken for a foreign one: {state:?}"
        );
    }

    /// A PostgreSQL data directory whose control file cannot be read this loop (pg_controldata
    /// cannot be started: out of file descriptors, processes or memory; here it is missing) is
    /// still a PostgreSQL data directory, not a foreign one.
    #[tokio::test]
    async fn a_data_directory_whose_control_data_cannot_be_read_is_not_foreign() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        std::fs::create_dir_all(data.join("global")).expect("mkdir");
        std::fs::write(data.join("PG_VERSION"), "15\n").expect("PG_VERSION");
        std::fs::write(data.join("global/pg_control"), [0u8; 16]).expect("pg_control");
        let state = postgres(data, tmp.path().join("no-bin"))
            .data_dir_state()
            .await;
        assert!(
            matches!(&state, DataDir::Unknown(why) if why.contains("pg_controldata")),
            "a data directory whose pg_controldata failed to start is taken for a foreign one: {state:?}"
        );
    }

    /// What really is no PostgreSQL data directory stays `Unusable`: a non-empty directory
    /// without `PG_VERSION`, and a file where the directory should be. Missing or empty: `Empty`.
    #[tokio::test]
    async fn a_foreign_directory_stays_unusable() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let bin = tmp.path().join("bin");
        let data = tmp.path().join("data");
        let pg = postgres(data.clone(), bin.clone());
        assert_eq!(pg.data_dir_state().await, DataDir::Empty);
        std::fs::create_dir(&data).expect("mkdir");
        assert_eq!(pg.data_dir_state().await, DataDir::Empty);
        std::fs::write(data.join("notes.txt"), "mine").expect("write");
        assert!(matches!(pg.data_dir_state().await, DataDir::Unusable(_)));
        let file = tmp.path().join("file");
        std::fs::write(&file, "not a directory").expect("write");
        let state = postgres(file, bin).data_dir_state().await;
        assert!(matches!(state, DataDir::Unusable(_)), "{state:?}");
    }
}
