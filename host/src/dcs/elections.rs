//! The election records: `<prefix>regent/elections/<id>`, one JSON document per election that
//! moved the leader key (see [`ElectionRecord`]), the last [`KEEP`] of them. The winner of a
//! failover, or the leader that handed over, writes it; `GET /elections` and
//! `regent ctl explain` read it.
//!
//! The records sit under the cluster's prefix, so that `regent ctl remove` and etcd's own
//! tools treat them as the cluster's, but the loop's cluster read skips them (a key range that
//! stops short of `regent/`): twenty records would otherwise travel with every loop of every
//! node. Patroni ignores keys it does not know, so a mixed cluster is unaffected.

use super::etcd::{EtcdDcs, Result};
use crate::ha::Election;
use etcd_client::{DeleteOptions, GetOptions, SortOrder, SortTarget};
use serde::{Deserialize, Serialize};

/// The records' folder, relative to the cluster prefix.
pub const ELECTIONS: &str = "regent/elections/";

/// How many records are kept; older ones are deleted when a new one is written.
pub const KEEP: usize = 20;

/// When each phase of an election happened (RFC 3339), as the node that wrote the record saw
/// it. A phase that did not happen (yet) is absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// The node first read the cluster without a leader key (a failover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_lost: Option<String>,
    /// The operator's request appeared in the `failover` key (a switchover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    /// The loop ranked the candidates and chose the winner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided: Option<String>,
    /// The winner took the leader key (a failover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_acquired: Option<String>,
    /// The leader moved the key to the winner (a hand-over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed_over: Option<String>,
    /// The winner's PostgreSQL was promoted (a failover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted: Option<String>,
}

/// One stored election.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElectionRecord {
    /// The key's last part: the milliseconds since the epoch when the election was decided,
    /// zero-padded so that keys sort by time.
    pub id: String,
    /// The node that wrote the record (the winner of a failover, the leader of a hand-over).
    pub recorded_by: String,
    /// The phases' times.
    pub phases: Phases,
    /// The election itself: winner, policy, ranking, exclusions and view.
    #[serde(flatten)]
    pub election: Election,
}

impl ElectionRecord {
    /// A record id for an election decided at `unix_ms`.
    pub fn id_at(unix_ms: u64) -> String {
        format!("{unix_ms:016}")
    }
}

impl EtcdDcs {
    /// Store `record` (a new one or an update of the same id), then delete the records beyond
    /// the newest [`KEEP`].
    pub async fn record_election(&self, record: &ElectionRecord) -> Result<()> {
        let folder = self.key(ELECTIONS);
        let value = serde_json::to_string(record).unwrap_or_default();
        let mut c = self.client.clone();
        self.call(
            "put election",
            c.put(format!("{folder}{}", record.id), value, None),
        )
        .await?;
        let keys = self
            .call(
                "range elections",
                c.get(
                    folder.clone(),
                    Some(GetOptions::new().with_prefix().with_keys_only()),
                ),
            )
            .await?;
        let mut names: Vec<&[u8]> = keys.kvs().iter().map(|kv| kv.key()).collect();
        names.sort();
        // Everything before the oldest record kept, in one range delete.
        if let Some(first_kept) = names.len().checked_sub(KEEP).filter(|n| *n > 0) {
            let until = DeleteOptions::new().with_range(names[first_kept].to_vec());
            self.call("delete elections", c.delete(folder, Some(until)))
                .await?;
        }
        Ok(())
    }

    /// The stored records, newest first; a record that does not parse is skipped with a
    /// warning (a newer Regent's record read by an older one).
    pub async fn elections(&self) -> Result<Vec<ElectionRecord>> {
        let folder = self.key(ELECTIONS);
        let mut c = self.client.clone();
        let resp = self
            .call(
                "range elections",
                c.get(
                    folder,
                    Some(
                        GetOptions::new()
                            .with_prefix()
                            .with_sort(SortTarget::Key, SortOrder::Descend),
                    ),
                ),
            )
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| match serde_json::from_slice(kv.value()) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(key = %String::from_utf8_lossy(kv.key()), error = %e, "skipping an election record that does not parse");
                    None
                }
            })
            .collect())
    }
}
