//! Validation of a parsed configuration, pure (no filesystem access): names and addresses,
//! absolute paths, credentials, tags, the `regent` section, the etcd endpoints, and the timing
//! rule `loop_wait + 2 × retry_timeout <= ttl`, which [`validate_dynamic`] also applies to the
//! dynamic configuration sent to the REST API.

use super::error::{invalid, q, qp};
use super::parse::humanize_serde;
use super::{Config, ConfigError, DynamicConfig, HostList};
use std::path::Path;

/// Minimum `ttl` Regent accepts (Patroni's own minimum is higher).
pub(crate) const MIN_TTL: u64 = 5;
/// The longest `ttl` Regent accepts (an hour): a leader that dies is replaced only after its
/// lease expires, and longer leases are a configuration mistake (a value in milliseconds, say).
pub(crate) const MAX_TTL: u64 = 3_600;

#[derive(Clone, Copy, PartialEq)]
enum AddrKind {
    /// A bind address: wildcards allowed; `multi` allows a comma-separated host list.
    Listen { multi: bool },
    /// An address other nodes connect to; `defaulted_from` names the listen key it came from.
    Connect {
        defaulted_from: Option<&'static str>,
    },
    /// An etcd client endpoint.
    Etcd,
}

const WILDCARDS: &[&str] = &["0.0.0.0", "*", "::", ""];

fn check_host_port(
    key: &str,
    value: &str,
    kind: AddrKind,
    example: &str,
) -> Result<(), ConfigError> {
    let shown = match kind {
        AddrKind::Connect {
            defaulted_from: Some(from),
        } => format!("(not set, defaults to {from} {})", q(value)),
        _ => q(value),
    };
    let v = value.trim();
    let fix = format!("write it as host:port, e.g. {key}: {example}");
    if v.contains("://") {
        let fix = if kind == AddrKind::Etcd {
            format!(
                "drop the scheme, e.g. {example}, and set the section's protocol: https for TLS"
            )
        } else {
            format!("drop the scheme, e.g. {key}: {example}")
        };
        return Err(invalid(key, shown, "must be host:port, not a URL", fix));
    }
    let Some((host, port)) = v.rsplit_once(':') else {
        return Err(invalid(
            key,
            shown,
            "has no port; host:port is required",
            fix,
        ));
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => {
            return Err(invalid(
                key,
                shown,
                format!("port {} is not a TCP port (allowed: 1 to 65535)", q(port)),
                fix,
            ));
        }
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let multi = kind == AddrKind::Listen { multi: true };
    if host.trim().is_empty() {
        let fix = match kind {
            AddrKind::Listen { .. } => {
                format!(
                    "use 0.0.0.0:{port} to listen on all IPv4 addresses, or one address of this host"
                )
            }
            _ => fix,
        };
        return Err(invalid(key, shown, "the host part is empty", fix));
    }
    if !multi && host.chars().any(char::is_whitespace) {
        return Err(invalid(
            key,
            shown,
            "the host part contains whitespace",
            fix,
        ));
    }
    if !matches!(kind, AddrKind::Listen { .. }) {
        if host.contains(',') {
            return Err(invalid(
                key,
                shown,
                "lists several hosts; other nodes need exactly one address",
                format!("set {key} to one address of this host, e.g. {key}: {example}"),
            ));
        }
        if WILDCARDS.contains(&host) {
            return Err(invalid(
                key,
                shown,
                "is a wildcard bind address that other nodes cannot connect to",
                format!(
                    "set {key} to an address of this host the other nodes reach, e.g. {key}: {example}"
                ),
            ));
        }
    }
    Ok(())
}

/// `scope` and `name` each become one segment of DCS keys (`/<namespace>/<scope>/members/<name>`).
fn check_segment(key: &str, value: &str, example: &str, what: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(invalid(
            key,
            q(value),
            format!("must not be empty; it is {what}"),
            format!("set it, e.g. {key}: {example}"),
        ));
    }
    if value.contains('/') || value.chars().any(char::is_control) {
        let suggestion: String = value
            .chars()
            .map(|c| if c == '/' || c.is_control() { '-' } else { c })
            .collect();
        return Err(invalid(
            key,
            q(value),
            "must not contain `/` or control characters: it forms one segment of the DCS keys /<namespace>/<scope>/members/<name>",
            format!("rename it, e.g. {key}: {}", q(&suggestion)),
        ));
    }
    Ok(())
}

pub(super) fn check_absolute(key: &str, p: &Path, example: &str) -> Result<(), ConfigError> {
    if !p.is_absolute() {
        return Err(invalid(
            key,
            qp(p),
            "must be an absolute path (Regent does not resolve paths against its working directory)",
            format!("write the full path, e.g. {key}: {example}"),
        ));
    }
    Ok(())
}

impl Config {
    /// Check every value without touching the filesystem; the first problem found is returned.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        check_segment(
            "scope",
            &self.scope,
            "batman",
            "the cluster name shared by all nodes",
        )?;
        check_segment(
            "name",
            &self.name,
            "pg-node1",
            "this node's member name, unique in the cluster",
        )?;

        check_host_port(
            "restapi.listen",
            &self.restapi.listen,
            AddrKind::Listen { multi: false },
            "0.0.0.0:8008",
        )?;
        check_host_port(
            "restapi.connect_address",
            self.restapi_connect(),
            AddrKind::Connect {
                defaulted_from: self
                    .restapi
                    .connect_address
                    .is_none()
                    .then_some("restapi.listen"),
            },
            "10.0.0.11:8008",
        )?;

        self.validate_restapi()?;
        self.validate_ctl()?;
        self.methods()?;
        self.validate_etcd()?;
        self.validate_timing()?;

        let pg = &self.postgresql;
        check_host_port(
            "postgresql.listen",
            &pg.listen,
            AddrKind::Listen { multi: true },
            "0.0.0.0:5432",
        )?;
        check_host_port(
            "postgresql.connect_address",
            self.pg_connect(),
            AddrKind::Connect {
                defaulted_from: pg.connect_address.is_none().then_some("postgresql.listen"),
            },
            "10.0.0.11:5432",
        )?;
        check_absolute(
            "postgresql.data_dir",
            &pg.data_dir,
            "/var/lib/postgresql/16/main",
        )?;
        if pg.data_dir.parent().is_none() {
            return Err(invalid(
                "postgresql.data_dir",
                qp(&pg.data_dir),
                "must not be the root directory",
                "use a directory of its own, e.g. postgresql.data_dir: /var/lib/postgresql/16/main",
            ));
        }
        if let Some(bin) = &pg.bin_dir {
            check_absolute("postgresql.bin_dir", bin, "/usr/lib/postgresql/16/bin")?;
        }
        let auth = &pg.authentication;
        for (key, cred, example) in [
            (
                "postgresql.authentication.superuser.username",
                Some(&auth.superuser),
                "postgres",
            ),
            (
                "postgresql.authentication.replication.username",
                Some(&auth.replication),
                "replicator",
            ),
            (
                "postgresql.authentication.rewind.username",
                auth.rewind.as_ref(),
                "rewind_user",
            ),
        ] {
            if let Some(c) = cred
                && c.username.trim().is_empty()
            {
                return Err(invalid(
                    key,
                    q(&c.username),
                    "must not be empty",
                    format!("set the role name, e.g. {key}: {example}"),
                ));
            }
        }
        check_credentials(auth)?;
        for (key, entries) in [
            ("postgresql.pg_hba", &pg.pg_hba),
            ("bootstrap.pg_hba", &self.bootstrap.pg_hba),
            (
                "bootstrap.dcs.postgresql.pg_hba",
                &self.bootstrap.dcs.postgresql.pg_hba,
            ),
        ] {
            check_hba(key, entries)?;
        }
        if let Some(user) = &pg.os_user
            && user.trim().is_empty()
        {
            return Err(invalid(
                "postgresql.os_user",
                q(user),
                "must not be empty",
                "set the OS account PostgreSQL runs as, e.g. postgresql.os_user: postgres, or remove the key",
            ));
        }
        check_scripts(pg)?;

        if let Some(p) = self.tags.failover_priority
            && p < 0
        {
            return Err(invalid(
                "tags.failover_priority",
                p,
                "must be 0 or greater (0 = never promote this node, higher wins among equally caught-up replicas)",
                "set tags.failover_priority: 1 (the default), or tags.nofailover: true to keep this node from ever promoting",
            ));
        }

        if let Some(run) = &self.regent.run_dir {
            check_absolute("regent.run_dir", run, "/var/lib/postgresql/16")?;
        }
        if let Some(dir) = &self.regent.policies_dir {
            check_absolute("regent.policies_dir", dir, "/etc/regent/policies")?;
        }
        if !self.regent.policies.is_empty() && self.regent.policies_dir.is_none() {
            return Err(ConfigError::Invalid {
                key: "regent.policies".into(),
                value: format!("{:?}", self.regent.policies),
                problem: "names policies but regent.policies_dir is not set".into(),
                fix: "set regent.policies_dir to the directory holding NAME.toml and NAME.wasm, \
                      e.g. regent.policies_dir: /etc/regent/policies"
                    .into(),
            });
        }
        if self.regent.failed_loops_before_handover == 0 {
            return Err(ConfigError::Invalid {
                key: "regent.failed_loops_before_handover".into(),
                value: "0".into(),
                problem: "must be at least 1".into(),
                fix: "set it to the number of consecutive failed health verdicts after which \
                      the leader hands over, e.g. 2"
                    .into(),
            });
        }
        if let Some(bad) = self
            .regent
            .policies
            .iter()
            .find(|n| n.is_empty() || n.contains('/') || n.contains('.'))
        {
            return Err(ConfigError::Invalid {
                key: "regent.policies".into(),
                value: bad.clone(),
                problem: "is not a policy name (the manifest file name without .toml)".into(),
                fix: "list names like zone-aware, one per manifest policies_dir/NAME.toml".into(),
            });
        }
        Ok(())
    }

    /// `(key path, endpoint)` pairs from the section `etcd_endpoints` reads.
    fn etcd_endpoint_keys(&self) -> Option<(&'static str, Vec<(String, String)>)> {
        let (name, sec) = match (&self.etcd3, &self.etcd) {
            (Some(s), _) => ("etcd3", s),
            (None, Some(s)) => ("etcd", s),
            (None, None) => return None,
        };
        let mut out = Vec::new();
        match &sec.hosts {
            Some(HostList::List(v)) => out.extend(
                v.iter()
                    .enumerate()
                    .map(|(i, h)| (format!("{name}.hosts[{i}]"), h.trim().to_string())),
            ),
            Some(HostList::Comma(s)) => out.extend(
                s.split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(|h| (format!("{name}.hosts"), h.to_string())),
            ),
            None => {}
        }
        if out.is_empty()
            && let Some(h) = &sec.host
        {
            out.push((format!("{name}.host"), h.trim().to_string()));
        }
        Some((name, out))
    }

    fn validate_etcd(&self) -> Result<(), ConfigError> {
        let Some((section, endpoints)) = self.etcd_endpoint_keys() else {
            return Err(ConfigError::Missing {
                key: "etcd3".into(),
                example: "`etcd3: {hosts: 10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379}` at the top level (Regent needs etcd as its DCS)".into(),
            });
        };
        if endpoints.is_empty() {
            return Err(invalid(
                format!("{section}.hosts"),
                "(empty)",
                "at least one etcd endpoint is required",
                format!(
                    "list the etcd members, e.g. {section}: {{hosts: 10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379}}"
                ),
            ));
        }
        for (key, ep) in &endpoints {
            check_host_port(key, ep, AddrKind::Etcd, "10.0.0.1:2379")?;
        }
        let sec = self.etcd3.as_ref().or(self.etcd.as_ref());
        if let Some(proto) = sec.and_then(|s| s.protocol.as_deref())
            && !matches!(proto, "http" | "https")
        {
            return Err(invalid(
                format!("{section}.protocol"),
                q(proto),
                "allowed: http, https",
                format!("set {section}.protocol: http (or https for TLS), or remove the key"),
            ));
        }
        Ok(())
    }

    fn validate_timing(&self) -> Result<(), ConfigError> {
        let d = &self.bootstrap.dcs;
        check_timing("bootstrap.dcs.", d.ttl, d.loop_wait, d.retry_timeout)?;
        super::slots::check_slots("bootstrap.dcs.", &d.slots)?;
        check_sync_count("bootstrap.dcs.", d.synchronous_node_count)
    }
}

/// `{prefix}synchronous_node_count`: at least one standby (Patroni's rule).
fn check_sync_count(prefix: &str, n: u64) -> Result<(), ConfigError> {
    if n < 1 {
        return Err(invalid(
            format!("{prefix}synchronous_node_count"),
            n,
            "must be at least 1 (the number of standbys the leader keeps synchronous)",
            format!(
                "set {prefix}synchronous_node_count: 1 (the default), or turn synchronous mode off with synchronous_mode: off"
            ),
        ));
    }
    Ok(())
}

/// Each `pg_hba` entry is written as one line of `pg_hba.conf`: a line break in one would add a
/// rule nobody configured as such.
fn check_hba(key: &str, entries: &[String]) -> Result<(), ConfigError> {
    match entries.iter().position(|l| l.contains(['\n', '\r', '\0'])) {
        Some(i) => Err(invalid(
            format!("{key}[{i}]"),
            q(&entries[i]),
            "holds a line break or a NUL character, but each entry is one line of pg_hba.conf",
            format!("split it into one {key} entry per line"),
        )),
        None => Ok(()),
    }
}

/// What PostgreSQL's programs cannot receive: a NUL in any role name or password (libpq, the
/// configuration file and the environment hold C strings), and a line break in the
/// superuser's password (initdb reads it from the first line of `--pwfile`). Any other
/// character is quoted where it is written.
fn check_credentials(auth: &super::schema::Authentication) -> Result<(), ConfigError> {
    let roles = [
        ("superuser", Some(&auth.superuser)),
        ("replication", Some(&auth.replication)),
        ("rewind", auth.rewind.as_ref()),
    ];
    for (role, cred) in roles {
        let Some(c) = cred else { continue };
        let base = format!("postgresql.authentication.{role}");
        for (field, value) in [
            ("username", Some(&c.username)),
            ("password", c.password.as_ref()),
        ] {
            if value.is_some_and(|v| v.contains('\0')) {
                return Err(invalid(
                    format!("{base}.{field}"),
                    "(a value with a NUL character, not shown)",
                    "contains a NUL character, which PostgreSQL and libpq cannot receive",
                    format!("remove the NUL character from {base}.{field}"),
                ));
            }
        }
        for (field, value, allowed) in [
            (
                "sslmode",
                &c.sslmode,
                &[
                    "disable",
                    "allow",
                    "prefer",
                    "require",
                    "verify-ca",
                    "verify-full",
                ][..],
            ),
            (
                "channel_binding",
                &c.channel_binding,
                &["disable", "prefer", "require"][..],
            ),
        ] {
            if let Some(v) = value
                && !allowed.contains(&v.trim())
            {
                return Err(invalid(
                    format!("{base}.{field}"),
                    q(v),
                    format!("is not one of {}", allowed.join(", ")),
                    format!("set {base}.{field} to one of those (libpq's values)"),
                ));
            }
        }
        if matches!(
            c.sslmode.as_deref().map(str::trim),
            Some("verify-ca" | "verify-full")
        ) && c.sslrootcert.is_none()
        {
            return Err(invalid(
                format!("{base}.sslmode"),
                q(c.sslmode.as_deref().unwrap_or_default()),
                "checks the server's certificate, but no sslrootcert says against which CA",
                format!(
                    "set {base}.sslrootcert to the PEM file of the CA that signs the servers' certificates"
                ),
            ));
        }
        if role == "superuser"
            && c.password
                .as_ref()
                .is_some_and(|p| p.contains(['\n', '\r']))
        {
            return Err(invalid(
                format!("{base}.password"),
                "(a password with a line break, not shown)",
                "contains a line break: initdb reads the superuser's password from one line of its --pwfile, so the password PostgreSQL stored would differ from the configured one",
                format!("choose a password without line breaks for {base}.password"),
            ));
        }
    }
    Ok(())
}

/// The timing rule for the keys `{prefix}ttl`, `{prefix}loop_wait` and `{prefix}retry_timeout`.
fn check_timing(prefix: &str, ttl: u64, lw: u64, rt: u64) -> Result<(), ConfigError> {
    if ttl < MIN_TTL {
        return Err(invalid(
            format!("{prefix}ttl"),
            ttl,
            format!("must be at least {MIN_TTL} seconds (Regent accepts ttl down to {MIN_TTL} s)"),
            format!(
                "set {prefix}ttl: 30 (the default), and keep loop_wait + 2 × retry_timeout <= ttl"
            ),
        ));
    }
    if ttl > MAX_TTL {
        return Err(invalid(
            format!("{prefix}ttl"),
            ttl,
            format!(
                "must be at most {MAX_TTL} seconds: a crashed leader is replaced only after its lease of ttl seconds expires (ttl is in seconds, not milliseconds)"
            ),
            format!(
                "set {prefix}ttl: 30 (the default), and keep loop_wait + 2 × retry_timeout <= ttl"
            ),
        ));
    }
    if lw < 1 {
        return Err(invalid(
            format!("{prefix}loop_wait"),
            lw,
            "must be at least 1 second",
            format!(
                "set {prefix}loop_wait: 10 (the default) or any value >= 1 with loop_wait + 2 × retry_timeout <= ttl"
            ),
        ));
    }
    if rt < 1 {
        return Err(invalid(
            format!("{prefix}retry_timeout"),
            rt,
            "must be at least 1 second",
            format!(
                "set {prefix}retry_timeout: 10 (the default) or any value >= 1 with loop_wait + 2 × retry_timeout <= ttl"
            ),
        ));
    }
    Ok(())
}

/// Check a dynamic configuration (the DCS `config` key, as `PATCH`/`PUT /config` would leave
/// it): the keys Regent reads must have the right types, and the timing must satisfy
/// `loop_wait + 2 × retry_timeout <= ttl`. Keys Regent does not read are left alone. Errors
/// name the key as it appears in the JSON document (`ttl`, `postgresql.use_slots`).
pub fn validate_dynamic(config: &serde_json::Value) -> Result<DynamicConfig, ConfigError> {
    if !config.is_object() {
        return Err(ConfigError::WrongType {
            key: "(top level)".into(),
            message: "the dynamic configuration must be a JSON object".into(),
            at: None,
            fix: "send a JSON object such as {\"ttl\": 30, \"loop_wait\": 10}".into(),
        });
    }
    let d: DynamicConfig = serde_path_to_error::deserialize(config).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::WrongType {
            key: if key == "." {
                "(top level)".into()
            } else {
                key
            },
            message: humanize_serde(&e.inner().to_string()),
            at: None,
            fix: "change the value to what is expected".into(),
        }
    })?;
    check_timing("", d.ttl, d.loop_wait, d.retry_timeout)?;
    let mut d = d;
    d.fit_timing();
    check_sync_count("", d.synchronous_node_count)?;
    if let Some(e) = serde_yaml::to_value(config)
        .ok()
        .and_then(|doc| super::keys::refused_dynamic(&doc))
    {
        return Err(e);
    }
    check_hba("postgresql.pg_hba", &d.postgresql.pg_hba)?;
    super::slots::check_slots("", &d.slots)?;
    Ok(d)
}

/// A checked change of the dynamic configuration (see [`check_dynamic_change`]).
#[derive(Debug)]
pub enum DynamicChange {
    /// The new configuration is valid; its `timing_adjusted` says whether the nodes run with
    /// fitted timing ([`DynamicConfig::timing_adjusted`]).
    Valid(Box<DynamicConfig>),
    /// The new configuration has the very problem the current one already had: a change that
    /// does not make it worse (e.g. `pause` on a Patroni cluster with a key Regent refuses) is
    /// not blocked by it. The nodes keep their previous settings, as for the current one.
    KeepsProblem(ConfigError),
}

/// Check a configuration about to replace `old` in the DCS, as `PATCH`/`PUT /config` and
/// `regent ctl edit-config` both do: refused only for a problem the change introduces.
pub fn check_dynamic_change(
    old: Option<&serde_json::Value>,
    new: &serde_json::Value,
) -> Result<DynamicChange, ConfigError> {
    let e = match validate_dynamic(new) {
        Ok(d) => return Ok(DynamicChange::Valid(Box::new(d))),
        Err(e) => e,
    };
    let same_problem = old
        .and_then(|o| validate_dynamic(o).err())
        .is_some_and(|old_err| old_err.to_string() == e.to_string());
    if same_problem {
        Ok(DynamicChange::KeepsProblem(e))
    } else {
        Err(e)
    }
}

/// `postgresql.callbacks.*`, `pre_promote` and `before_stop`: each a command line that splits
/// into at least one word (as Patroni splits it, like a POSIX shell without expansions).
fn check_scripts(pg: &super::schema::Postgresql) -> Result<(), ConfigError> {
    let mut scripts: Vec<(String, &str)> = pg
        .callbacks
        .entries()
        .into_iter()
        .filter_map(|(name, cmd)| cmd.map(|c| (format!("postgresql.callbacks.{name}"), c)))
        .collect();
    for (key, cmd) in [
        ("postgresql.pre_promote", pg.pre_promote.as_deref()),
        ("postgresql.before_stop", pg.before_stop.as_deref()),
    ] {
        if let Some(c) = cmd {
            scripts.push((key.to_string(), c));
        }
    }
    for (key, cmd) in scripts {
        match shlex::split(cmd) {
            Some(words) if !words.is_empty() => {}
            Some(_) => {
                return Err(invalid(
                    &key,
                    q(cmd),
                    "must be a command, not an empty string",
                    format!(
                        "set the script to run, e.g. {key}: /etc/regent/callback.sh, or remove the key"
                    ),
                ));
            }
            None => {
                return Err(invalid(
                    &key,
                    q(cmd),
                    "cannot be split into words (an unclosed quote or a trailing backslash)",
                    format!("close the quote, e.g. {key}: '\"/etc/regent/my script.sh\" --flag'"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    // ---- timing ----------------------------------------------------------------------------

    #[test]
    fn tls_settings_of_roles_take_libpq_values() {
        let e = err_of(&[(
            "postgresql.authentication.superuser.sslmode",
            Some("always"),
        )]);
        assert_eq!(
            invalid_key(&e),
            "postgresql.authentication.superuser.sslmode"
        );
        assert!(e.to_string().contains("verify-full"), "{e}");
        let e = err_of(&[(
            "postgresql.authentication.replication.channel_binding",
            Some("yes"),
        )]);
        assert_eq!(
            invalid_key(&e),
            "postgresql.authentication.replication.channel_binding"
        );
        let e = err_of(&[(
            "postgresql.authentication.replication.sslmode",
            Some("verify-ca"),
        )]);
        assert!(e.to_string().contains("sslrootcert"), "{e}");
        let l = parse_edited(&[
            (
                "postgresql.authentication.replication.sslmode",
                Some("verify-full"),
            ),
            (
                "postgresql.authentication.replication.sslrootcert",
                Some("/etc/ssl/ca.pem"),
            ),
            (
                "postgresql.authentication.replication.sslcert",
                Some("/etc/ssl/c.pem"),
            ),
        ])
        .expect("valid");
        assert_eq!(
            l.config.postgresql.authentication.replication.conn_params(),
            vec![
                ("sslmode".to_string(), "verify-full".to_string()),
                ("sslcert".to_string(), "/etc/ssl/c.pem".to_string()),
                ("sslrootcert".to_string(), "/etc/ssl/ca.pem".to_string()),
            ]
        );
    }

    #[test]
    fn ttl_below_five_is_rejected() {
        let e = timing(4, 1, 1).expect_err("ttl 4");
        assert_eq!(invalid_key(&e), "bootstrap.dcs.ttl");
        assert!(
            e.to_string().contains("Regent accepts ttl down to 5 s"),
            "{e}"
        );
        timing(5, 1, 2).expect("ttl 5 with 1 + 2×2 is the smallest accepted");
    }

    #[test]
    fn short_ttl_with_fitting_timeouts_is_accepted() {
        let l = timing(10, 1, 3).expect("1 + 2×3 <= 10");
        let d = &l.config.bootstrap.dcs;
        assert_eq!((d.ttl, d.loop_wait, d.retry_timeout), (10, 1, 3));
    }

    #[test]
    fn timeouts_that_do_not_fit_in_ttl_are_fitted_as_patroni_fits_them() {
        // Patroni takes these and adjusts them (issue 12 item 8): so does Regent, and says so.
        let l = timing(20, 2, 10)
            .expect("PATCH {ttl 20, loop_wait 2, retry_timeout 10} as Patroni takes it");
        let d = &l.config.bootstrap.dcs;
        assert_eq!((d.ttl, d.loop_wait, d.retry_timeout), (20, 1, 9));
        let w = l
            .warnings
            .iter()
            .find(|w| {
                w.starts_with("bootstrap.dcs: loop_wait 2 + 2 × retry_timeout 10 exceeds ttl 20")
            })
            .unwrap_or_else(|| panic!("{:?}", l.warnings));
        assert!(
            w.contains("running with loop_wait 1 and retry_timeout 9"),
            "{w}"
        );
        // Shortening loop_wait is enough here.
        let d = timing(30, 20, 10).expect("fitted").config.bootstrap.dcs;
        assert_eq!((d.loop_wait, d.retry_timeout), (10, 10));
        // Fitting values are left alone, without a warning.
        let l = timing(30, 10, 10).expect("fits");
        assert_eq!(l.config.bootstrap.dcs.timing_adjusted, None);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        // The dynamic configuration from etcd or the API is fitted the same way.
        let d =
            validate_dynamic(&serde_json::json!({"ttl": 20, "loop_wait": 2, "retry_timeout": 10}))
                .expect("accepted");
        assert_eq!((d.loop_wait, d.retry_timeout), (1, 9));
        assert!(d.timing_adjusted.is_some());
    }

    #[test]
    fn fitted_timing_always_satisfies_the_rule() {
        for ttl in MIN_TTL..=80 {
            for lw in 1..=60 {
                for rt in (1..=60).chain([u64::MAX]) {
                    let mut d = DynamicConfig {
                        ttl,
                        loop_wait: lw,
                        retry_timeout: rt,
                        ..DynamicConfig::default()
                    };
                    d.fit_timing();
                    let (l, r) = (d.loop_wait, d.retry_timeout);
                    assert!(
                        l >= 1 && r >= 1 && l + 2 * r <= ttl,
                        "ttl {ttl} lw {lw} rt {rt} -> {l} {r}"
                    );
                    assert!(l <= lw && r <= rt, "fitting only lowers values");
                    assert_eq!(d.timing_adjusted.is_some(), (l, r) != (lw, rt));
                }
            }
        }
    }

    #[test]
    fn zero_loop_wait_or_retry_timeout_is_rejected() {
        assert_eq!(
            invalid_key(&timing(30, 0, 10).expect_err("loop_wait 0")),
            "bootstrap.dcs.loop_wait"
        );
        assert_eq!(
            invalid_key(&timing(30, 10, 0).expect_err("retry_timeout 0")),
            "bootstrap.dcs.retry_timeout"
        );
        let huge = timing(30, 1, u64::MAX).expect("no overflow panic");
        let d = &huge.config.bootstrap.dcs;
        assert_eq!((d.loop_wait, d.retry_timeout), (1, 14));
    }

    /// Quorum commit (`synchronous_mode: quorum`, issue 15.2) is accepted, with its node
    /// count, strict mode and lag limit, in the DCS and in the bootstrap section.
    #[test]
    fn quorum_commit_is_accepted() {
        let d = validate_dynamic(&serde_json::json!({"synchronous_mode": "quorum",
            "synchronous_node_count": 2, "synchronous_mode_strict": true,
            "maximum_lag_on_syncnode": 1048576}))
        .expect("quorum commit");
        assert_eq!(d.synchronous_mode, crate::config::SyncMode::Quorum);
        assert_eq!(d.synchronous_node_count, 2);
        assert!(d.synchronous_mode_strict);
    }

    #[test]
    fn permanent_slots_are_accepted_and_checked() {
        let d = validate_dynamic(
            &serde_json::json!({"slots": {"x": {"type": "physical"}, "cdc":
            {"type": "logical", "database": "app", "plugin": "pgoutput"}}, "member_slots_ttl": "1h",
            "ignore_slots": [{"name": "manual"}]}),
        )
        .expect("slots");
        assert_eq!(
            (d.slots.len(), d.member_slots_ttl, d.ignore_slots.len()),
            (2, 3600, 1)
        );
        let e = validate_dynamic(&serde_json::json!({"slots": {"cdc": {"type": "logical"}}}))
            .expect_err("no database");
        assert_eq!(invalid_key(&e), "slots.cdc");
    }

    #[test]
    fn dynamic_config_from_the_api_is_checked() {
        let ok = serde_json::json!({"ttl": 20, "loop_wait": 2, "retry_timeout": 5, "pause": true,
                                    "failsafe_mode": false, "slots": {}});
        let d = validate_dynamic(&ok).expect("valid");
        assert_eq!((d.ttl, d.pause, d.failsafe_mode), (20, Some(true), false));
        let on = validate_dynamic(&serde_json::json!({"failsafe_mode": true})).expect("failsafe");
        assert!(on.failsafe_mode);
        // Safety review item 1: a ttl no lease should have (and whose milliseconds would
        // overflow) is refused, from the API as from a file.
        let e =
            validate_dynamic(&serde_json::json!({"ttl": 1_000_000_000u64})).expect_err("huge ttl");
        assert_eq!(invalid_key(&e), "ttl");
        let e = validate_dynamic(&serde_json::json!({"ttl": 4})).expect_err("ttl");
        assert_eq!(invalid_key(&e), "ttl");
        assert!(e.to_string().contains("set ttl: 30"), "{e}");
        let d =
            validate_dynamic(&serde_json::json!({"ttl": 10, "loop_wait": 5, "retry_timeout": 5}))
                .expect("fitted, as Patroni fits it");
        assert_eq!((d.loop_wait, d.retry_timeout), (1, 4));
        let e = validate_dynamic(&serde_json::json!({"postgresql": {"use_pg_rewind": "perhaps"}}))
            .expect_err("type");
        assert!(
            e.to_string().starts_with("postgresql.use_pg_rewind: "),
            "{e}"
        );
        let e = validate_dynamic(&serde_json::json!([1])).expect_err("not an object");
        assert!(e.to_string().contains("JSON object"), "{e}");
        let e = validate_dynamic(&serde_json::json!({"synchronous_node_count": 0}))
            .expect_err("no standby");
        assert_eq!(invalid_key(&e), "synchronous_node_count");
        assert!(e.to_string().contains("synchronous_node_count: 1"), "{e}");
        let d = validate_dynamic(&serde_json::json!({"synchronous_mode": true,
            "synchronous_node_count": 2, "synchronous_mode_strict": "on",
            "maximum_lag_on_syncnode": 1048576}))
        .expect("valid");
        assert_eq!(
            (
                d.synchronous_node_count,
                d.synchronous_mode_strict,
                d.maximum_lag_on_syncnode
            ),
            (2, true, 1_048_576)
        );
        // Written only when they differ from Patroni's defaults.
        let v = serde_json::to_value(DynamicConfig::default()).expect("serialize");
        for k in [
            "synchronous_node_count",
            "synchronous_mode_strict",
            "maximum_lag_on_syncnode",
        ] {
            assert!(v.get(k).is_none(), "{k} in {v}");
        }
        assert_eq!(
            serde_json::to_value(&d).expect("serialize")["synchronous_node_count"],
            2
        );
    }

    // ---- etcd endpoints --------------------------------------------------------------------

    #[test]
    fn comma_separated_etcd_hosts() {
        let l = parse_edited(&[(
            "etcd3.hosts",
            Some("'10.0.0.1:2379, 10.0.0.2:2379,10.0.0.3:2379'"),
        )])
        .expect("valid");
        assert_eq!(
            l.config.etcd_endpoints(),
            vec!["10.0.0.1:2379", "10.0.0.2:2379", "10.0.0.3:2379"]
        );
        assert!(matches!(
            l.config.etcd3.as_ref().and_then(|e| e.hosts.as_ref()),
            Some(HostList::Comma(_))
        ));

        let e = err_of(&[("etcd3.hosts", Some("'10.0.0.1:2379,10.0.0.2'"))]);
        assert_eq!(invalid_key(&e), "etcd3.hosts");
        assert!(e.to_string().contains("\"10.0.0.2\": has no port"), "{e}");
    }

    #[test]
    fn bad_etcd_endpoints_are_rejected() {
        let e = err_of(&[(
            "etcd3.hosts",
            Some("['10.0.0.1:2379', 'http://10.0.0.2:2379']"),
        )]);
        assert_eq!(invalid_key(&e), "etcd3.hosts[1]");
        assert!(e.to_string().contains("not a URL"), "{e}");

        let e = err_of(&[("etcd3.hosts", Some("[]"))]);
        assert_eq!(invalid_key(&e), "etcd3.hosts");

        let l = parse_edited(&[
            ("etcd3.hosts", Some("[]")),
            ("etcd3.host", Some("'10.0.0.7:2379'")),
        ])
        .expect("host is the fallback");
        assert_eq!(l.config.etcd_endpoints(), vec!["10.0.0.7:2379"]);

        let e = err_of(&[("etcd3.protocol", Some("tcp"))]);
        assert_eq!(invalid_key(&e), "etcd3.protocol");
    }

    // ---- other validation ------------------------------------------------------------------

    #[test]
    fn failover_priority_must_not_be_negative() {
        let e = err_of(&[("tags.failover_priority", Some("-1"))]);
        assert_eq!(invalid_key(&e), "tags.failover_priority");
        assert!(
            e.to_string()
                .starts_with("tags.failover_priority = -1: must be 0 or greater"),
            "{e}"
        );
        parse_edited(&[("tags.failover_priority", Some("0"))]).expect("0 is allowed");
    }

    #[test]
    fn data_dir_must_be_absolute() {
        let e = err_of(&[("postgresql.data_dir", Some("data/postgresql0"))]);
        assert_eq!(invalid_key(&e), "postgresql.data_dir");
        assert!(e.to_string().contains("must be an absolute path"), "{e}");
        let e = err_of(&[("postgresql.data_dir", Some("/"))]);
        assert_eq!(invalid_key(&e), "postgresql.data_dir");
        let e = err_of(&[("postgresql.bin_dir", Some("bin"))]);
        assert_eq!(invalid_key(&e), "postgresql.bin_dir");
        let e = err_of(&[("regent.run_dir", Some("run"))]);
        assert_eq!(invalid_key(&e), "regent.run_dir");
    }

    #[test]
    fn scope_and_name_must_be_single_dcs_segments() {
        let e = err_of(&[("name", Some("pg/1"))]);
        assert_eq!(invalid_key(&e), "name");
        assert!(
            e.to_string().contains("name: \"pg-1\""),
            "suggests a fix: {e}"
        );
        assert_eq!(invalid_key(&err_of(&[("name", Some("''"))])), "name");
        assert_eq!(invalid_key(&err_of(&[("scope", Some("'  '"))])), "scope");
        assert_eq!(invalid_key(&err_of(&[("scope", Some("a/b"))])), "scope");
    }

    #[test]
    fn addresses_must_be_host_port() {
        for (key, value) in [
            ("restapi.listen", "localhost"),
            ("restapi.listen", "'127.0.0.1:0'"),
            ("restapi.listen", "'127.0.0.1:99999'"),
            ("restapi.listen", "':8008'"),
            ("postgresql.listen", "'127.0.0.1:pg'"),
            ("postgresql.connect_address", "'10.0.0.1'"),
        ] {
            let e = err_of(&[(key, Some(value))]);
            assert_eq!(invalid_key(&e), key, "{value}: {e}");
        }
        // A wildcard listen address cannot double as the connect address.
        let e = err_of(&[
            ("restapi.listen", Some("'0.0.0.0:8008'")),
            ("restapi.connect_address", None),
        ]);
        assert_eq!(invalid_key(&e), "restapi.connect_address");
        assert!(e.to_string().contains("defaults to restapi.listen"), "{e}");
        let e = err_of(&[
            ("postgresql.listen", Some("'127.0.0.1,10.0.0.5:5432'")),
            ("postgresql.connect_address", None),
        ]);
        assert_eq!(invalid_key(&e), "postgresql.connect_address");

        let l = parse_edited(&[
            ("restapi.listen", Some("'[::]:8008'")),
            ("restapi.connect_address", Some("'[fd00::5]:8008'")),
            ("postgresql.listen", Some("'127.0.0.1,10.0.0.5:5432'")),
        ])
        .expect("IPv6 and listen lists are fine");
        assert_eq!(l.config.restapi_connect(), "[fd00::5]:8008");
    }

    // ---- credentials ----------------------------------------------------------------------

    #[test]
    fn a_password_postgresql_cannot_receive_is_refused() {
        // initdb reads the superuser's password from the first line of --pwfile: a line
        // break would cut it, and every later login with the whole password would fail.
        let e = err_of(&[(
            "postgresql.authentication.superuser.password",
            Some("\"first\\nsecond\""),
        )]);
        assert_eq!(
            invalid_key(&e),
            "postgresql.authentication.superuser.password"
        );
        assert!(e.to_string().contains("line break"), "{e}");
        // NUL ends a C string: libpq, the configuration file and the environment cannot hold it.
        for key in [
            "postgresql.authentication.superuser.password",
            "postgresql.authentication.replication.password",
            "postgresql.authentication.replication.username",
        ] {
            let e = err_of(&[(key, Some("\"a\\0b\""))]);
            assert_eq!(invalid_key(&e), key);
            assert!(e.to_string().contains("NUL"), "{e}");
        }
        // Quotes, backslashes, spaces and line breaks in the replication password are fine.
        parse_edited(&[(
            "postgresql.authentication.replication.password",
            Some("\"it's a \\\\ = \\n ü\""),
        )])
        .expect("any replication password without NUL");
    }

    #[test]
    fn a_pg_hba_entry_with_a_line_break_is_refused() {
        let e = err_of(&[(
            "postgresql.pg_hba",
            Some(
                "[\"local all all peer\", \"host all all 0.0.0.0/0 md5\\nhost all all 0.0.0.0/0 trust\"]",
            ),
        )]);
        assert_eq!(invalid_key(&e), "postgresql.pg_hba[1]");
        assert!(e.to_string().contains("one line of pg_hba.conf"), "{e}");
    }
}
