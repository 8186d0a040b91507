//! What regent writes into the data directory for PostgreSQL to read: `regent.conf` (the
//! GUCs, and for a replica its upstream and `primary_conninfo`), the include line in
//! `postgresql.conf`, `standby.signal` and `pg_hba.conf`; and the quoting of conninfo values,
//! SQL identifiers and literals.

use super::{PgError, Postgres, Result, Upstream};
use std::collections::BTreeMap;

const REGENT_CONF: &str = "regent.conf";

const UPSTREAM_MARK: &str = "# regent-upstream: ";

/// Marks a `regent.conf` whose upstream is the standby cluster's remote primary.
const REMOTE_MARK: &str = "# regent-remote: ";

impl Postgres {
    pub(super) fn write_hba(&self) -> Result<()> {
        if self.s.pg_hba.is_empty() {
            return Ok(());
        }
        let text = hba_text(&self.s.pg_hba)?;
        self.write_owned(&self.s.data_dir.join("pg_hba.conf"), &text)
    }

    /// Write `regent.conf` (our GUCs, plus primary_conninfo for a replica), make
    /// postgresql.conf include it, and create or remove `standby.signal`.
    pub(crate) fn configure(&self, standby: bool, upstream: Option<&Upstream>) -> Result<()> {
        self.configure_with(standby, upstream, None)
    }

    /// [`Postgres::configure`], with `synchronous_standby_names` set to `preset` on a replica
    /// about to be promoted (where it has no effect until then), else empty on a replica.
    pub(super) fn configure_with(
        &self,
        standby: bool,
        upstream: Option<&Upstream>,
        preset: Option<&str>,
    ) -> Result<()> {
        if let Ok(mut g) = self.last_configured.lock() {
            *g = Some((standby, upstream.cloned()));
        }
        let mut text = String::from(
            "# Managed by regent: rewritten before every start. Edit the regent config instead.\n",
        );
        let mut params = self.s.parameters.clone();
        let major = self
            .read_owned(&self.s.data_dir.join("PG_VERSION"))?
            .and_then(|v| v.trim().parse::<u32>().ok());
        if let Some(major) = major {
            for note in across_versions(&mut params, major) {
                tracing::info!("{note}");
            }
        }
        params.insert("listen_addresses".into(), self.s.listen_host.clone());
        params.insert("port".into(), self.s.port.to_string());
        params.insert("cluster_name".into(), self.s.scope.clone());
        params.insert("hot_standby".into(), "on".into());
        let sock = self.s.run_dir.display().to_string();
        params
            .entry("unix_socket_directories".into())
            .or_insert(if sock.len() < 90 { sock } else { String::new() });
        if standby && let Ok(mut g) = self.sync_names.lock() {
            // A replica waits for nobody; after a promotion the leader sets it afresh.
            *g = preset.unwrap_or_default().to_string();
        }
        params.insert(
            "synchronous_standby_names".into(),
            if standby {
                preset.unwrap_or_default().to_string()
            } else {
                self.sync_names
                    .lock()
                    .map(|g| g.clone())
                    .unwrap_or_default()
            },
        );
        if !standby && let Ok(g) = self.recovery_params.lock() {
            // A custom bootstrap's first start recovers with these (`recovery.signal`).
            params.extend(g.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if standby {
            params.insert("recovery_target_timeline".into(), "latest".into());
            self.standby_recovery(&mut params, upstream);
            if let Some(u) = upstream.filter(|u| u.remote && u.host.is_empty()) {
                // A standby leader recovering from the archive only.
                params.insert("primary_conninfo".into(), String::new());
                params.insert("primary_slot_name".into(), String::new());
                text.push_str(&format!("{REMOTE_MARK}{}\n", u.name));
            } else if let Some(u) = upstream {
                let ci = primary_conninfo(
                    u,
                    &self.s.replication.user,
                    self.s.replication.password.as_deref(),
                    &self.s.name,
                ) + &self.s.replication.conninfo_tail();
                params.insert("primary_conninfo".into(), ci);
                if u.remote {
                    params.insert("primary_slot_name".into(), self.remote_slot());
                    text.push_str(&format!("{REMOTE_MARK}{}:{}\n", u.host, u.port));
                } else {
                    params.insert(
                        "primary_slot_name".into(),
                        crate::dcs::slot_name(&self.s.name),
                    );
                    text.push_str(&format!("{UPSTREAM_MARK}{}\n", u.name));
                }
            } else {
                params.insert("primary_conninfo".into(), String::new());
                params.insert("primary_slot_name".into(), String::new());
            }
        }
        for (k, v) in &params {
            text.push_str(&conf_line(k, v)?);
        }
        self.write_owned(&self.s.data_dir.join(REGENT_CONF), &text)?;
        let main = self.s.data_dir.join("postgresql.conf");
        let existing = self.read_owned(&main)?.unwrap_or_default();
        let include = format!("include_if_exists = '{REGENT_CONF}'");
        if !existing.lines().any(|l| l.trim() == include) {
            self.write_owned(&main, &format!("{existing}\n{include}\n"))?;
        }
        let signal = self.s.data_dir.join("standby.signal");
        if standby {
            self.write_owned(&signal, "")?;
        } else {
            self.remove_owned(&signal)?;
        }
        Ok(())
    }

    /// Replace the GUCs (after a change of the cluster's or the local configuration) and
    /// rewrite `regent.conf` with the role and upstream of the last `configure`, then reload a
    /// running server. Returns whether anything changed. Settings that need a restart show up
    /// as pending (`PgState::pending_restart`).
    pub(crate) fn set_parameters(&mut self, parameters: BTreeMap<String, String>) -> Result<bool> {
        if self.s.parameters == parameters {
            return Ok(false);
        }
        self.s.parameters = parameters;
        let last = self.last_configured.lock().ok().and_then(|g| g.clone());
        if let Some((standby, upstream)) = last {
            self.configure(standby, upstream.as_ref())?;
            self.reload()?;
        }
        Ok(true)
    }

    /// Whether the data directory is set to start read-only (`standby.signal`).
    pub fn standby_configured(&self) -> bool {
        crate::postmaster::standby_configured(&self.s.data_dir)
    }

    /// What regent.conf says this replica streams from, in one read: the member's name, and
    /// whether it is the standby cluster's remote primary (or its archive). Read only if it is
    /// a regular file of at most 1 MiB, never through a link: the data directory is the
    /// PostgreSQL OS user's.
    pub(crate) fn configured_source(&self) -> (Option<String>, bool) {
        let text = crate::safe_fs::Dir::open(&self.s.data_dir)
            .ok()
            .and_then(|d| d.read_regular(REGENT_CONF.as_ref(), 1 << 20).ok())
            .and_then(|(bytes, _)| String::from_utf8(bytes).ok())
            .unwrap_or_default();
        let mark = |m: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(m))
                .map(|s| s.trim().to_string())
        };
        (mark(UPSTREAM_MARK), mark(REMOTE_MARK).is_some())
    }
}

/// `pg_hba.conf` from the configured entries, one line each; an entry with a line break (it
/// would become two rules) or a NUL is refused.
/// Patroni's renames of settings across PostgreSQL versions, so that one configuration
/// serves every major version (`major` as in `PG_VERSION`: 12, 13, ...): `wal_keep_segments`
/// became `wal_keep_size` in 13 (one segment counted as 16 MB, as Patroni counts it) and back
/// for older servers, and `wal_level: hot_standby` is `replica` since 9.6. A value set under the
/// new name wins. Returns a line per change, for the log.
pub(crate) fn across_versions(params: &mut BTreeMap<String, String>, major: u32) -> Vec<String> {
    let mut notes = Vec::new();
    if major >= 13 {
        if let Some(segs) = params.remove("wal_keep_segments") {
            match segs.trim().parse::<u64>() {
                Ok(n) if !params.contains_key("wal_keep_size") => {
                    let size = format!("{}MB", n.saturating_mul(16));
                    notes.push(format!(
                        "wal_keep_segments = {n} written as wal_keep_size = {size} (PostgreSQL {major} has no wal_keep_segments)"
                    ));
                    params.insert("wal_keep_size".into(), size);
                }
                _ => notes.push(format!(
                    "wal_keep_segments = {segs} left out (PostgreSQL {major} has no wal_keep_segments; wal_keep_size is set or the value is not a number)"
                )),
            }
        }
    } else if let Some(size) = params.remove("wal_keep_size") {
        // Back to segments of 16 MB, rounded to the nearest.
        let mb = size
            .trim()
            .strip_suffix("MB")
            .unwrap_or(size.trim())
            .trim()
            .parse::<u64>();
        match mb {
            Ok(mb) if !params.contains_key("wal_keep_segments") => {
                let segs = (mb + 8) / 16;
                notes.push(format!(
                    "wal_keep_size = {size} written as wal_keep_segments = {segs} (PostgreSQL {major} has no wal_keep_size)"
                ));
                params.insert("wal_keep_segments".into(), segs.to_string());
            }
            _ => notes.push(format!(
                "wal_keep_size = {size} left out (PostgreSQL {major} has no wal_keep_size)"
            )),
        }
    }
    if params.get("wal_level").map(String::as_str) == Some("hot_standby") {
        params.insert("wal_level".into(), "replica".into());
        notes.push("wal_level = hot_standby written as replica".into());
    }
    notes
}

fn hba_text(entries: &[String]) -> Result<String> {
    let mut text = String::from("# Managed by regent (postgresql.pg_hba)\n");
    for l in entries {
        if l.contains(['\n', '\r', '\0']) {
            return Err(PgError::User(format!(
                "pg_hba entry {l:?} holds a line break or a NUL: each entry must be one line of \
                 pg_hba.conf; split it into separate entries"
            )));
        }
        text.push_str(l);
        text.push('\n');
    }
    Ok(text)
}

/// One `name = 'value'` line of `regent.conf`, the value quoted by [`conf_string`]; an error
/// for a value PostgreSQL cannot read (it holds a NUL character).
fn conf_line(name: &str, value: &str) -> Result<String> {
    let quoted = conf_string(value).ok_or_else(|| {
        PgError::User(format!(
            "PostgreSQL parameter {name}: the value contains a NUL character, which a PostgreSQL \
             configuration file cannot hold; remove it from the configuration"
        ))
    })?;
    Ok(format!("{name} = {quoted}\n"))
}

/// `value` as a quoted string of PostgreSQL's configuration file syntax (`guc-file.l`): inside
/// `'...'` the scanner turns `''` into `'` and reads backslash escapes (`\\`, `\n`, octal
/// `\ooo`, `\x` = `x`), and a raw line break ends the line. So `'` is doubled, `\` doubled, and
/// line breaks written as `\n` and `\r`; everything else (UTF-8 included) stands as is. `None`
/// when the value holds a NUL, which no C string can.
pub(crate) fn conf_string(value: &str) -> Option<String> {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\0' => return None,
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('\'');
    Some(out)
}

/// The replica's `primary_conninfo`: where and as whom it streams from `u`.
fn primary_conninfo(u: &Upstream, user: &str, password: Option<&str>, name: &str) -> String {
    let mut ci = format!(
        "host={} port={} user={} application_name={} connect_timeout=3",
        quote_conninfo(&u.host),
        u.port,
        quote_conninfo(user),
        quote_conninfo(name)
    );
    if let Some(p) = password {
        ci.push_str(&format!(" password={}", quote_conninfo(p)));
    }
    ci
}

/// A value of a libpq connection string (`conninfo_parse`): bare when it is only letters,
/// digits and `_-.`, else single-quoted with `\` before each `\` and `'`.
pub(super) fn quote_conninfo(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A SQL string literal that reads the same whatever the server's
/// `standard_conforming_strings`: an escape string `E'...'` with `\` and `'` doubled.
pub(crate) fn quote_literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
#[path = "conf_tests.rs"]
mod tests;
