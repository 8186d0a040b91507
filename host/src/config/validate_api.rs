//! Validation of the `restapi` and `ctl` sections: Basic auth credentials, TLS files, client
//! verification, the allowlist and extra HTTP headers. Pure: paths are checked for form only,
//! the files are not opened here.

use super::error::{invalid, q, qp};
use super::validate::check_absolute;
use super::{AllowEntry, BasicAuth, Config, ConfigError};
use std::path::PathBuf;

fn check_basic_auth(key: &str, a: &BasicAuth) -> Result<(), ConfigError> {
    let user_key = format!("{key}.username");
    if a.username.trim().is_empty() {
        return Err(invalid(
            &user_key,
            q(&a.username),
            "must not be empty",
            format!("set a user name, e.g. {user_key}: admin"),
        ));
    }
    if a.username.contains(':') {
        return Err(invalid(
            &user_key,
            q(&a.username),
            "must not contain `:` (HTTP Basic auth separates the user name from the password with it)",
            format!("choose a user name without `:`, e.g. {user_key}: admin"),
        ));
    }
    let pass_key = format!("{key}.password");
    for (k, v, shown) in [
        (&user_key, &a.username, q(&a.username)),
        (&pass_key, &a.password, "(hidden)".to_string()),
    ] {
        if v.chars().any(char::is_control) {
            return Err(invalid(
                k,
                shown,
                "contains control characters, which HTTP clients cannot send",
                format!("use printable characters only in {k}"),
            ));
        }
    }
    if a.password.is_empty() {
        return Err(invalid(
            &pass_key,
            "\"\"",
            "must not be empty: an empty password protects nothing",
            format!(
                "set a long random password in {pass_key}, or remove {key} to leave the endpoints without authentication"
            ),
        ));
    }
    Ok(())
}

fn check_keyfile_password(key: &str, keyfile_key: &str, set: bool) -> Result<(), ConfigError> {
    if set {
        return Err(invalid(
            key,
            "(hidden)",
            "encrypted private keys are not supported by Regent",
            format!(
                "decrypt the key (openssl pkey -in encrypted.pem -out key.pem), make it readable only by the user running Regent, point {keyfile_key} at it and remove {key}"
            ),
        ));
    }
    Ok(())
}

/// An HTTP header name (an RFC 9110 token) and a value without control characters.
fn check_header(section: &str, name: &str, value: &str) -> Result<(), ConfigError> {
    let key = format!("{section}.{name}");
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(invalid(
            &key,
            q(name),
            "is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)",
            format!("rename the header, e.g. {section}: {{X-Frame-Options: DENY}}"),
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') || !value.is_ascii() {
        return Err(invalid(
            &key,
            q(value),
            "is not a valid HTTP header value (printable ASCII only, no line breaks)",
            format!("remove the offending characters from {key}"),
        ));
    }
    Ok(())
}

/// The keys `restapi` and `ctl` share: credentials, TLS files (absolute paths; a key only with
/// a certificate; no encrypted keys).
struct AuthAndTls<'a> {
    section: &'static str,
    auth: Option<&'a BasicAuth>,
    certfile: &'a Option<PathBuf>,
    keyfile: &'a Option<PathBuf>,
    /// `cafile` (restapi) or `cacert` (ctl).
    ca: (&'static str, &'a Option<PathBuf>),
    keyfile_password: bool,
    /// What the certificate is for, in messages.
    cert_use: &'static str,
}

impl AuthAndTls<'_> {
    fn check(&self) -> Result<(), ConfigError> {
        let s = self.section;
        if let Some(a) = self.auth {
            check_basic_auth(&format!("{s}.authentication"), a)?;
        }
        for (leaf, path) in [
            ("certfile", self.certfile),
            ("keyfile", self.keyfile),
            (self.ca.0, self.ca.1),
        ] {
            if let Some(p) = path {
                let key = format!("{s}.{leaf}");
                check_absolute(&key, p, &format!("/etc/regent/tls/{leaf}.pem"))?;
            }
        }
        if let (Some(key), None) = (self.keyfile, self.certfile) {
            return Err(invalid(
                format!("{s}.keyfile"),
                qp(key),
                format!(
                    "is set but {s}.certfile is not, so there is no certificate {}",
                    self.cert_use
                ),
                format!("set {s}.certfile to the certificate of this key, or remove {s}.keyfile"),
            ));
        }
        check_keyfile_password(
            &format!("{s}.keyfile_password"),
            &format!("{s}.keyfile"),
            self.keyfile_password,
        )
    }
}

impl Config {
    pub(super) fn validate_restapi(&self) -> Result<(), ConfigError> {
        let r = &self.restapi;
        AuthAndTls {
            section: "restapi",
            auth: r.authentication.as_ref(),
            certfile: &r.certfile,
            keyfile: &r.keyfile,
            ca: ("cafile", &r.cafile),
            keyfile_password: r.keyfile_password.is_some(),
            cert_use: "to serve HTTPS with",
        }
        .check()?;
        if let Some(v) = &r.verify_client {
            match v.trim().to_ascii_lowercase().as_str() {
                "none" => {}
                "optional" | "required" if r.certfile.is_some() && r.cafile.is_none() => {
                    return Err(invalid(
                        "restapi.verify_client",
                        q(v),
                        "needs restapi.cafile: the CA that signs the clients' certificates",
                        "set restapi.cafile to that CA's PEM file, or set restapi.verify_client: none",
                    ));
                }
                "optional" | "required" => {}
                _ => {
                    return Err(invalid(
                        "restapi.verify_client",
                        q(v),
                        "is not one of none, optional, required",
                        "remove restapi.verify_client or set it to none",
                    ));
                }
            }
        }
        for (i, entry) in r.allowlist.iter().enumerate() {
            AllowEntry::parse(entry).map_err(|problem| {
                invalid(
                    format!("restapi.allowlist[{i}]"),
                    q(entry),
                    problem,
                    "write an IP address (10.0.0.5), a network (10.0.0.0/24, fd00::/8) or a host name (app1.example.com)",
                )
            })?;
        }
        for (section, headers) in [
            ("restapi.http_extra_headers", &r.http_extra_headers),
            ("restapi.https_extra_headers", &r.https_extra_headers),
        ] {
            for (name, value) in headers {
                check_header(section, name, value)?;
            }
        }
        Ok(())
    }

    pub(super) fn validate_ctl(&self) -> Result<(), ConfigError> {
        let c = &self.ctl;
        AuthAndTls {
            section: "ctl",
            auth: c.authentication.as_ref(),
            certfile: &c.certfile,
            keyfile: &c.keyfile,
            ca: ("cacert", &c.cacert),
            keyfile_password: c.keyfile_password.is_some(),
            cert_use: "to present as a client",
        }
        .check()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;
    use crate::config::test_support::*;

    #[test]
    fn restapi_security_keys_parse_without_warnings() {
        let l = parse_edited(&[
            (
                "restapi.authentication",
                Some("{username: admin, password: s3cret}"),
            ),
            ("restapi.certfile", Some("/etc/regent/tls/node.crt")),
            ("restapi.keyfile", Some("/etc/regent/tls/node.key")),
            ("restapi.cafile", Some("/etc/regent/tls/ca.crt")),
            ("restapi.verify_client", Some("none")),
            (
                "restapi.allowlist",
                Some("[10.0.0.5, 10.1.0.0/16, 'fd00::/8', app1.example.com]"),
            ),
            ("restapi.allowlist_include_members", Some("yes")),
            (
                "restapi.http_extra_headers",
                Some("{X-Frame-Options: DENY}"),
            ),
            (
                "restapi.https_extra_headers",
                Some("{Strict-Transport-Security: max-age=31536000}"),
            ),
            (
                "ctl",
                Some("{insecure: true, cacert: /etc/regent/tls/ca.crt}"),
            ),
        ])
        .expect("valid");
        assert_eq!(l.warnings, Vec::<String>::new());
        let c = &l.config;
        assert_eq!(c.api_scheme(), "https");
        assert_eq!(c.api_url(), "https://127.0.0.1:8008/patroni");
        assert!(c.restapi.allowlist_include_members);
        assert!(c.ctl.insecure);
        // ctl falls back to the REST API's credentials.
        assert_eq!(
            c.ctl_authentication().map(|a| a.username.as_str()),
            Some("admin")
        );
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "passwords stay out of Debug"
        );

        let l = parse_edited(&[
            (
                "restapi.authentication",
                Some("{username: admin, password: a}"),
            ),
            ("ctl.authentication", Some("{username: ops, password: b}")),
        ])
        .expect("valid");
        assert_eq!(
            l.config.ctl_authentication().map(|a| a.username.as_str()),
            Some("ops")
        );
        assert_eq!(l.config.api_url(), "http://127.0.0.1:8008/patroni");
        let l = parse(FIXTURE).expect("fixture");
        assert_eq!(l.config.ctl_authentication(), None);
    }

    #[test]
    fn restapi_security_keys_are_checked() {
        type Case<'a> = (&'a [(&'a str, Option<&'a str>)], &'a str, &'a str);
        let cases: &[Case] = &[
            (
                &[(
                    "restapi.authentication",
                    Some("{username: '', password: x}"),
                )],
                "restapi.authentication.username",
                "must not be empty",
            ),
            (
                &[(
                    "restapi.authentication",
                    Some("{username: 'a:b', password: x}"),
                )],
                "restapi.authentication.username",
                "must not contain `:`",
            ),
            (
                &[(
                    "restapi.authentication",
                    Some("{username: a, password: ''}"),
                )],
                "restapi.authentication.password",
                "an empty password protects nothing",
            ),
            (
                &[("restapi.keyfile", Some("/etc/regent/tls/node.key"))],
                "restapi.keyfile",
                "restapi.certfile is not",
            ),
            (
                &[("restapi.certfile", Some("tls/node.crt"))],
                "restapi.certfile",
                "absolute path",
            ),
            (
                &[
                    ("restapi.certfile", Some("/etc/regent/tls/node.crt")),
                    ("restapi.keyfile_password", Some("pw")),
                ],
                "restapi.keyfile_password",
                "encrypted private keys",
            ),
            (
                &[
                    ("restapi.certfile", Some("/etc/regent/tls/node.crt")),
                    ("restapi.verify_client", Some("required")),
                ],
                "restapi.verify_client",
                "needs restapi.cafile",
            ),
            (
                &[("restapi.verify_client", Some("sometimes"))],
                "restapi.verify_client",
                "none, optional, required",
            ),
            (
                &[("restapi.allowlist", Some("[10.0.0.1, 10.0.0.0/33]"))],
                "restapi.allowlist[1]",
                "prefix length",
            ),
            (
                &[("restapi.allowlist", Some("['not a host']"))],
                "restapi.allowlist[0]",
                "neither an IP address",
            ),
            (
                &[("restapi.allowlist", Some("['10.0.0.x/8']"))],
                "restapi.allowlist[0]",
                "is not an IP address",
            ),
            (
                &[("restapi.http_extra_headers", Some("{'Bad Header': x}"))],
                "restapi.http_extra_headers.Bad Header",
                "not a valid HTTP header name",
            ),
            (
                &[("restapi.https_extra_headers", Some("{X-A: \"a\\nb\"}"))],
                "restapi.https_extra_headers.X-A",
                "not a valid HTTP header value",
            ),
            (
                &[("ctl.keyfile", Some("/etc/regent/tls/client.key"))],
                "ctl.keyfile",
                "ctl.certfile is not",
            ),
            (
                &[("ctl.cacert", Some("ca.crt"))],
                "ctl.cacert",
                "absolute path",
            ),
            (
                &[("ctl.authentication", Some("{username: ops, password: ''}"))],
                "ctl.authentication.password",
                "must not be empty",
            ),
        ];
        for (edits, key, problem) in cases {
            let e = err_of(edits);
            assert_eq!(invalid_key(&e), *key, "{e}");
            let text = e.to_string();
            assert!(text.contains(problem), "{text}");
            assert!(!text.contains('\n'), "{text:?}");
        }
        // The password is never echoed.
        let e = err_of(&[(
            "restapi.authentication",
            Some("{username: a, password: \"sec\\u0007ret\"}"),
        )]);
        assert!(!e.to_string().contains("sec"), "{e}");
        // A missing password names the key.
        let e = err_of(&[("restapi.authentication", Some("{username: a}"))]);
        assert!(
            e.to_string()
                .starts_with("restapi.authentication.password: required key is missing"),
            "{e}"
        );
    }
}
