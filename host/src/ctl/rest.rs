//! The REST client: requests to a member's API (its `api_url` from the DCS member key, without
//! the `/patroni` path), with Basic auth when credentials are configured, as patronictl sends them,
//! over HTTP or HTTPS (with `ctl`'s CA, client certificate and `insecure`).

use super::CtlError;
use super::target::Credentials;
use crate::api::{ClientOptions, PeerClient};
use crate::dcs::Member;
use serde_json::Value;
use std::time::Duration;

pub(crate) use reqwest::Method;

/// A member's answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: String,
    /// The `Server` header (`Regent/0.1.0`, or Python's for Patroni).
    pub(crate) server: Option<String>,
}

impl Reply {
    pub(crate) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body, trimmed, or `(empty body)`.
    pub(crate) fn text(&self) -> String {
        let t = self.body.trim();
        if t.is_empty() {
            "(empty body)".into()
        } else {
            t.to_string()
        }
    }
}

#[derive(Clone)]
pub(crate) struct Rest {
    client: reqwest::Client,
    auth: Option<Credentials>,
}

/// The API's base URL from a member's `api_url` (`http://host:port/patroni` → `http://host:port`).
pub(crate) fn base_url(member: &Member) -> Result<String, CtlError> {
    let Some(api) = member.data.api_url.as_deref().filter(|u| !u.is_empty()) else {
        return Err(CtlError::Failed(format!(
            "member {} publishes no api_url in its DCS key, so its REST API cannot be reached; set restapi.connect_address in its configuration",
            member.name
        )));
    };
    let (scheme, rest) = match (api.strip_prefix("http://"), api.strip_prefix("https://")) {
        (Some(rest), _) => ("http", rest),
        (None, Some(rest)) => ("https", rest),
        (None, None) => {
            return Err(CtlError::Failed(format!(
                "member {} has api_url {api:?}, which is not an http:// or https:// URL",
                member.name
            )));
        }
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(CtlError::Failed(format!(
            "member {} has api_url {api:?} without a host",
            member.name
        )));
    }
    Ok(format!("{scheme}://{authority}"))
}

impl Rest {
    /// A client sending `auth`, and over HTTPS trusting, presenting and verifying as `tls`
    /// says (`ctl.cacert` or `restapi.cafile`, `ctl.certfile`/`keyfile`, `ctl.insecure`).
    pub(crate) fn new(auth: Option<Credentials>, tls: &ClientOptions) -> Result<Rest, CtlError> {
        let b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .user_agent(concat!("regent-ctl/", env!("CARGO_PKG_VERSION")));
        let client = PeerClient::with_tls(b, tls)
            .map_err(|e| CtlError::Usage(e.to_string()))?
            .build()
            .map_err(|e| CtlError::Failed(format!("cannot build the HTTP client: {e}")))?;
        Ok(Rest { client, auth })
    }

    /// `method` `path` on `member`'s API, with a JSON body if given. Any status is a [`Reply`];
    /// only a request that got no answer is an error.
    pub(crate) async fn call(
        &self,
        member: &Member,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Reply, CtlError> {
        let url = format!("{}/{}", base_url(member)?, path.trim_start_matches('/'));
        let mut req = self.client.request(method, &url).timeout(timeout);
        if let Some(a) = &self.auth {
            req = req.basic_auth(&a.username, Some(&a.password));
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let unreachable = |e: reqwest::Error| CtlError::Unreachable {
            member: member.name.clone(),
            url: url.clone(),
            reason: describe(&e, timeout),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let server = resp
            .headers()
            .get(reqwest::header::SERVER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.text().await.map_err(unreachable)?;
        Ok(Reply {
            status,
            body,
            server,
        })
    }
}

fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("no answer within {timeout:?}")
    } else {
        // The causes say what went wrong (refused, a TLS alert such as a missing client
        // certificate), reqwest's own text only which request.
        let mut s = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(inner) = src {
            s = format!("{s}: {inner}");
            src = inner.source();
        }
        if s.contains("CertificateRequired") || s.contains("certificate required") {
            s.push_str(
                " (the REST API demands a client certificate: set ctl.certfile and ctl.keyfile)",
            );
        }
        s
    }
}

/// The error for a refused request, with a hint for the statuses that have an obvious fix.
pub(crate) fn refused(member: &Member, method: &Method, path: &str, reply: &Reply) -> CtlError {
    let url = base_url(member)
        .map(|b| format!("{b}/{}", path.trim_start_matches('/')))
        .unwrap_or_else(|_| path.to_string());
    let hint = match reply.status {
        401 => {
            "; the REST API wants credentials: set ctl.authentication (or restapi.authentication) in the config file, or pass --username/--password (REGENT_CTL_USERNAME, REGENT_CTL_PASSWORD)"
        }
        403 => {
            "; this host is not allowed to change the cluster: check restapi.allowlist on that node"
        }
        404 | 405 | 501 => "; that node does not implement this endpoint (an older regent?)",
        _ => "",
    };
    CtlError::Rest {
        member: member.name.clone(),
        method: method.to_string(),
        url,
        status: reply.status,
        body: reply.text(),
        hint: hint.into(),
    }
}
