//! Failsafe mode's I/O: the leader's rounds of `POST /failsafe` when it cannot renew its lease,
//! the `failsafe` key it writes while it leads, and the gate between the REST API's
//! `POST /failsafe` and the loop's own race for the leader key. The rules (what a round earns,
//! who may race) are `regent_core::ha`'s `failsafe.rs`; this file only reports what happened.
//!
//! May touch: the other members' REST APIs (`POST /failsafe`, 2 s timeout, one retry, in
//! parallel), the `failsafe` key (written by the leader), the decision memory through its
//! methods.

use super::Supervisor;
use crate::dcs::Cluster;
use crate::fence::{instant_to_mono_ms, mono_ms};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long one `POST /failsafe` may take (Patroni's 2 s).
const POST_TIMEOUT: Duration = Duration::from_secs(2);

/// A round ends this long before the write deadline at the latest.
const ROUND_SLACK_MS: u64 = 300;

/// The REST API's base URL from a member's `api_url` (`http://host:port/patroni`).
fn base_url(api_url: &str) -> &str {
    api_url
        .strip_suffix("/patroni")
        .unwrap_or(api_url)
        .trim_end_matches('/')
}

/// One `POST /failsafe` with one retry: accepted when a try answers `200` with the body
/// `Accepted`.
async fn post_failsafe(
    http: &crate::api::PeerClient,
    name: &str,
    url: &str,
    body: &serde_json::Value,
) -> bool {
    let target = format!("{}/failsafe", base_url(url));
    for attempt in 0..2 {
        let r = http
            .request(reqwest::Method::POST, &target)
            .json(body)
            .timeout(POST_TIMEOUT)
            .send()
            .await;
        match r {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                if status == 200 && text == "Accepted" {
                    return true;
                }
                tracing::warn!(member = name, status, answer = %text, "POST /failsafe refused");
                return false;
            }
            Err(e) => {
                tracing::warn!(member = name, attempt, error = %e, url = %target, "POST /failsafe failed")
            }
        }
    }
    false
}

impl Supervisor {
    /// The `failsafe` key as last read (kept while the DCS cannot be read).
    pub(super) fn remember_failsafe_topology(&mut self, c: &Cluster) {
        self.failsafe_topology = c.failsafe.clone();
    }

    /// The leader could not renew its lease and failsafe mode is on: ask every other member of
    /// the last `failsafe` key read to accept this node as the leader, and report the round
    /// to the memory. A key that is missing or lacks this node counts as a refused round (as
    /// Patroni's `check_failsafe_topology`); a key with this node alone as accepted.
    pub(super) async fn failsafe_round(&mut self) {
        let sent = Instant::now();
        let me = self.cfg.name.clone();
        let in_time = self.mem.write_deadline_ms.is_some_and(|d| mono_ms() < d);
        let accepted = match &self.failsafe_topology {
            // Past the deadline a round earns nothing: the members are not held for nothing.
            _ if !in_time => {
                tracing::warn!("failsafe mode: the write deadline passed; no round is sent");
                false
            }
            Some(t) if t.contains_key(&me) => {
                let body = serde_json::json!({
                    "name": me,
                    "conn_url": format!("postgres://{}/postgres", self.cfg.pg_connect()),
                    "api_url": self.cfg.api_url(),
                });
                let mut set = tokio::task::JoinSet::new();
                for (name, url) in t.iter().filter(|(n, _)| **n != me) {
                    let (http, name, url, body) =
                        (self.http.clone(), name.clone(), url.clone(), body.clone());
                    set.spawn(async move { post_failsafe(&http, &name, &url, &body).await });
                }
                // A round that cannot end before the deadline earns nothing: cut it short
                // then, so that the leader demotes before the guard has to fence it.
                let left = self
                    .mem
                    .write_deadline_ms
                    .unwrap_or(0)
                    .saturating_sub(mono_ms())
                    .saturating_sub(ROUND_SLACK_MS);
                let all = async {
                    let mut all = true;
                    while let Some(r) = set.join_next().await {
                        all &= r.unwrap_or(false);
                    }
                    all
                };
                match tokio::time::timeout(Duration::from_millis(left), all).await {
                    Ok(all) => all,
                    Err(_) => {
                        tracing::warn!(
                            "failsafe mode: not every member answered before the write deadline"
                        );
                        false
                    }
                }
            }
            Some(_) => {
                tracing::warn!("failsafe mode: this node is not in the failsafe key");
                false
            }
            None => {
                tracing::warn!("failsafe mode: no failsafe key was read");
                false
            }
        };
        let ttl_ms = self.ttl_ms();
        self.mem
            .failsafe_round_done(instant_to_mono_ms(sent), ttl_ms, accepted);
        tracing::info!(
            accepted,
            took_ms = sent.elapsed().as_millis() as u64,
            deadline_in_ms = self
                .mem
                .write_deadline_ms
                .unwrap_or(0)
                .saturating_sub(mono_ms()),
            "failsafe round"
        );
    }

    /// Copy the last `POST /failsafe` the REST API accepted into the memory.
    pub(super) fn collect_failsafe_ping(&mut self) {
        if let Some((leader, at)) = self.failsafe_gate.last() {
            let ttl = self.ttl_ms();
            self.mem
                .failsafe_ping_accepted(leader, instant_to_mono_ms(at), ttl);
        }
    }

    /// The leader's `failsafe` key: every member's name and REST API URL, this node's
    /// included, written when it differs from the key read (Patroni writes it only while
    /// failsafe mode is on and leaves it otherwise).
    pub(super) async fn write_failsafe_key(&self, c: &Cluster) {
        if !self.dynamic.failsafe_mode {
            return;
        }
        let mut want: BTreeMap<String, String> = c
            .members
            .iter()
            .filter_map(|m| Some((m.name.clone(), m.data.api_url.clone()?)))
            .collect();
        want.insert(self.cfg.name.clone(), self.cfg.api_url());
        if c.failsafe.as_ref() == Some(&want) {
            return;
        }
        match self.dcs.write_failsafe(&want).await {
            Ok(()) => tracing::info!(members = want.len(), "wrote the failsafe key"),
            Err(e) => tracing::warn!(error = %e, "could not write the failsafe key"),
        }
    }
}
