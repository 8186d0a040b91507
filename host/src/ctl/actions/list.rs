//! The read-only views: `list`, `topology` and `history` from etcd, and `version`, which asks
//! every member's REST API (`GET /patroni`). They change nothing. `list` and `topology` show one
//! or several clusters of the namespace, once or watching (`-W`, `-w`).

use super::watch::clear_screen;
use super::{Session, Watching, all_done, timestamp, unknown_member};
use crate::ctl::rest::{Method, Reply, refused};
use crate::ctl::store::Store;
use crate::ctl::view;
use crate::ctl::{CtlError, VERSION};
use crate::dcs::Member;
use serde_json::{Value, json};
use std::time::Duration;

impl<S: Store> Session<'_, S> {
    /// `clusters`: the names given on the command line (none: the session's scope).
    pub(crate) async fn list(
        &mut self,
        clusters: &[String],
        extended: bool,
        topology: bool,
        stamp: bool,
        mut watching: Watching,
    ) -> Result<(), CtlError> {
        let own = [self.scope.to_string()];
        let names = if clusters.is_empty() { &own } else { clusters };
        while watching.next_round().await {
            if let Some(clear) = clear_screen(&watching) {
                self.write(clear)?;
            }
            if stamp {
                self.write(&format!("{}\n", timestamp()))?;
            }
            for name in names {
                let c = if name == self.scope {
                    self.store.read().await?
                } else {
                    self.store.read_scope(name).await?
                };
                if c.members.is_empty() && c.initialize.is_none() && c.config.is_none() {
                    eprintln!(
                        "warning: etcd has no keys for cluster {name}; check the cluster name (the argument, --scope or `scope:`) and the namespace"
                    );
                }
                let text = view::render_members(&c, name, self.format, extended, topology);
                self.write(&text)?;
            }
        }
        Ok(())
    }

    pub(super) async fn history(&mut self) -> Result<(), CtlError> {
        let c = self.store.read().await?;
        let text = view::render_history(&c, self.format);
        self.write(&text)
    }

    pub(crate) async fn version(&mut self, names: Vec<String>) -> Result<(), CtlError> {
        let c = self.store.read().await?;
        for n in &names {
            if c.member(n).is_none() {
                return Err(CtlError::Usage(unknown_member(&c, n, self.scope)));
            }
        }
        self.note(&format!("regent ctl {VERSION}"))?;
        let mut docs = Vec::new();
        let mut failed = Vec::new();
        let members: Vec<&Member> = c
            .members
            .iter()
            .filter(|m| names.is_empty() || names.contains(&m.name))
            .filter(|m| m.data.api_url.is_some())
            .collect();
        for m in members {
            match self
                .rest
                .call(m, Method::GET, "patroni", None, Duration::from_secs(5))
                .await
                .and_then(|r| version_of(m, &r))
            {
                Ok((product, version, pg)) => {
                    let pg_text = pg
                        .as_ref()
                        .map(|p| format!(", PostgreSQL {p}"))
                        .unwrap_or_default();
                    self.note(&format!("{}: {product} {version}{pg_text}", m.name))?;
                    docs.push(json!({"member": m.name, "product": product, "version": version, "postgresql": pg}));
                }
                Err(e) => {
                    self.note(&format!("{}: failed to get version: {e}", m.name))?;
                    failed.push(m.name.clone());
                    docs.push(json!({"member": m.name, "error": e.to_string()}));
                }
            }
        }
        self.emit(json!({"regent_ctl": VERSION, "members": docs}))?;
        all_done("version", &failed)
    }
}

/// `(product, version, PostgreSQL version)` from a `GET /patroni` answer.
fn version_of(m: &Member, r: &Reply) -> Result<(String, String, Option<String>), CtlError> {
    if !r.ok() {
        return Err(refused(m, &Method::GET, "patroni", r));
    }
    let doc: Value = serde_json::from_str(&r.body).map_err(|e| {
        CtlError::Failed(format!(
            "GET /patroni did not answer JSON ({e}): {}",
            r.text()
        ))
    })?;
    let version = doc
        .pointer("/patroni/version")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let product = if r.server.as_deref().is_some_and(|s| s.starts_with("Regent")) {
        "Regent"
    } else {
        "Patroni"
    };
    let pg = doc
        .get("server_version")
        .and_then(Value::as_u64)
        .map(format_pg_version);
    Ok((product.into(), version, pg))
}

/// `150014` → `15.14`, `90624` → `9.6.24`.
pub(crate) fn format_pg_version(v: u64) -> String {
    if v >= 100_000 {
        format!("{}.{}", v / 10_000, v % 10_000)
    } else {
        format!("{}.{}.{}", v / 10_000, v / 100 % 100, v % 100)
    }
}
