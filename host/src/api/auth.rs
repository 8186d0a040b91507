//! Access control for the mutating endpoints, in Patroni's order: the allowlist
//! (`restapi.allowlist`, `allowlist_include_members`) answers 403 `Access is denied`; then the
//! client certificate (`restapi.verify_client` `optional`/`required` over HTTPS) answers 403
//! `client certificate required` when the client gave none; then HTTP
//! Basic auth (`restapi.authentication`) answers 401 with `WWW-Authenticate: Basic
//! realm="Patroni"`. Reads are never restricted, as in Patroni.

use std::net::IpAddr;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::{ApiContext, ApiSettings, text};
use crate::config::{AllowEntry, canonical_ip};

/// How long a host name in the allowlist or a member's `api_url` may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) struct Access {
    /// SHA-256 of `user:password`; compared as digests so the comparison takes the same time
    /// whatever the input.
    expected: Option<[u8; 32]>,
    allowlist: Vec<AllowEntry>,
    include_members: bool,
    client_cert_required: bool,
}

fn digest(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Equality of two digests in constant time.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Access {
    pub(super) fn new(s: &ApiSettings) -> Access {
        Access {
            expected: s
                .auth
                .as_ref()
                .map(|a| digest(format!("{}:{}", a.username, a.password).as_bytes())),
            allowlist: s.allowlist.clone(),
            include_members: s.allowlist_include_members,
            client_cert_required: s.client_cert_required,
        }
    }

    /// `Ok` when the request may go on; otherwise the 403 or 401 to answer. `members`: whether
    /// `allowlist_include_members` applies (not for `POST /failsafe`, as in Patroni).
    pub(super) async fn check(
        &self,
        ctx: &ApiContext,
        peer: Option<IpAddr>,
        client_cert: bool,
        headers: &HeaderMap,
        members: bool,
    ) -> Result<(), Response> {
        let include_members = self.include_members && members;
        if (!self.allowlist.is_empty() || include_members)
            && !self.allowed(ctx, peer, include_members).await
        {
            tracing::warn!(peer = ?peer, "REST API request refused by restapi.allowlist");
            return Err(text(StatusCode::FORBIDDEN, "Access is denied"));
        }
        if self.client_cert_required && !client_cert {
            tracing::warn!(peer = ?peer, "REST API request without a client certificate refused");
            return Err(text(StatusCode::FORBIDDEN, "client certificate required"));
        }
        let Some(expected) = &self.expected else {
            return Ok(());
        };
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized("no auth header received"));
        };
        if credentials(value).is_some_and(|c| same(&digest(&c), expected)) {
            Ok(())
        } else {
            tracing::warn!(peer = ?peer, "REST API request with wrong credentials");
            Err(unauthorized("not authenticated"))
        }
    }

    async fn allowed(&self, ctx: &ApiContext, peer: Option<IpAddr>, members: bool) -> bool {
        let Some(ip) = peer.map(canonical_ip) else {
            return false;
        };
        if self.allowlist.iter().any(|e| e.contains(ip)) {
            return true;
        }
        for entry in &self.allowlist {
            if let AllowEntry::Host(name) = entry
                && resolve(name).await.contains(&ip)
            {
                return true;
            }
        }
        if members && let Ok(cluster) = ctx.read_cluster().await {
            for m in &cluster.members {
                let Some(host) = m.data.api_url.as_deref().and_then(url_host) else {
                    continue;
                };
                let hit = match host.parse::<IpAddr>() {
                    Ok(a) => canonical_ip(a) == ip,
                    Err(_) => resolve(&host).await.contains(&ip),
                };
                if hit {
                    return true;
                }
            }
        }
        false
    }
}

fn unauthorized(message: &str) -> Response {
    let mut r = text(StatusCode::UNAUTHORIZED, message);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Patroni\""),
    );
    r
}

/// The decoded `user:password` of a `Basic` authorization header.
fn credentials(value: &HeaderValue) -> Option<Vec<u8>> {
    let s = value.to_str().ok()?.trim();
    let (scheme, encoded) = s.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let encoded = encoded.trim();
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded))
        .ok()
}

/// The host of an `http(s)://host:port/path` URL (brackets of an IPv6 address removed).
pub(super) fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// The addresses of `host` (empty when it does not resolve in time).
async fn resolve(host: &str) -> Vec<IpAddr> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, 0))).await {
        Ok(Ok(addrs)) => addrs.map(|a| canonical_ip(a.ip())).collect(),
        Ok(Err(e)) => {
            tracing::debug!(host, error = %e, "allowlist host does not resolve");
            Vec::new()
        }
        Err(_) => {
            tracing::debug!(host, "allowlist host did not resolve in time");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials() {
        let h = |s: &str| HeaderValue::from_str(s).expect("header");
        assert_eq!(
            credentials(&h("Basic dXNlcjpwYXNz")).as_deref(),
            Some(&b"user:pass"[..])
        );
        assert_eq!(
            credentials(&h("basic   dXNlcjpwYXNz ")).as_deref(),
            Some(&b"user:pass"[..])
        );
        // Unpadded base64 ("a:b" is YTpi; "ab:c" is YWI6Yw==).
        assert_eq!(
            credentials(&h("Basic YWI6Yw")).as_deref(),
            Some(&b"ab:c"[..])
        );
        assert_eq!(credentials(&h("Bearer dXNlcjpwYXNz")), None);
        assert_eq!(credentials(&h("Basic !!!")), None);
        assert_eq!(credentials(&h("Basic")), None);
    }

    #[test]
    fn digests_compare() {
        let a = digest(b"admin:secret");
        assert!(same(&a, &digest(b"admin:secret")));
        assert!(!same(&a, &digest(b"admin:secreT")));
        assert!(!same(&a, &digest(b"")));
    }

    #[test]
    fn hosts_of_api_urls() {
        assert_eq!(
            url_host("http://10.0.0.1:8008/patroni").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(
            url_host("https://[fd00::5]:8008/patroni").as_deref(),
            Some("fd00::5")
        );
        assert_eq!(
            url_host("https://node1.example.com/patroni").as_deref(),
            Some("node1.example.com")
        );
        assert_eq!(url_host("http://u:p@db:1/x").as_deref(), Some("db"));
        assert_eq!(url_host("http:///patroni"), None);
    }
}
