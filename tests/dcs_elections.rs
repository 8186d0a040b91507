//! The election records in etcd, against a real etcd: `EtcdDcs::record_election` keeps the
//! newest twenty under `<prefix>regent/elections/`, `elections` reads them newest first, and
//! the loop's cluster read (`read_cluster`) neither sees nor carries them.

mod support;

use regent::dcs::{ELECTIONS, ELECTIONS_KEPT, ElectionRecord, EtcdDcs, Phases};
use regent::ha::policy::{ElectionReason, ElectionView, Ranked, Ranking};
use regent::ha::{Chosen, Election};
use std::time::Duration;
use support::Etcd;

const PREFIX: &str = "/service/elections/";

fn record(n: u64) -> ElectionRecord {
    let view = ElectionView {
        members: vec![],
        former_leader: Some("node1".into()),
        former_leader_zone: Some("a".into()),
        reason: ElectionReason::LeaderLost,
        leader_optime: None,
        maximum_lag_on_failover: 1 << 20,
        cluster_timeline: 1,
        check_timeline: false,
        sync_members: None,
        now_ms: n,
    };
    let ranking = Ranking::Candidates(vec![Ranked {
        name: format!("node{n}"),
        reason: "best".into(),
    }]);
    ElectionRecord {
        id: ElectionRecord::id_at(1_700_000_000_000 + n),
        recorded_by: format!("node{n}"),
        phases: Phases::default(),
        election: Election::new(
            &view,
            "builtin-default".into(),
            &ranking,
            &format!("node{n}"),
            Chosen::Failover,
        ),
    }
}

#[tokio::test]
async fn the_newest_records_are_kept_beside_the_cluster_keys_and_out_of_its_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = Etcd::start(dir.path());
    let dcs = EtcdDcs::connect(&[etcd.endpoint()], PREFIX, Duration::from_secs(5))
        .await
        .expect("connect to etcd");
    // Keys on both sides of the folder, in key order: `members/…` before it, `status` after.
    etcd.put(&format!("{PREFIX}members/node1"), r#"{"role":"primary"}"#);
    etcd.put(&format!("{PREFIX}status"), r#"{"optime":100}"#);
    assert!(dcs.elections().await.expect("read").is_empty());

    let total = ELECTIONS_KEPT as u64 + 5;
    for n in 1..=total {
        dcs.record_election(&record(n)).await.expect("record");
    }
    let kept = dcs.elections().await.expect("read");
    assert_eq!(kept.len(), ELECTIONS_KEPT, "only the newest are kept");
    assert_eq!(kept[0], record(total), "newest first, as written");
    assert_eq!(
        kept[ELECTIONS_KEPT - 1].id,
        record(6).id,
        "the oldest five are gone"
    );
    // An update of the same id replaces the record.
    let mut last = record(total);
    last.phases.promoted = Some("2026-12-05T08:55:14.122250+00:00".into());
    dcs.record_election(&last).await.expect("update");
    let kept = dcs.elections().await.expect("read");
    assert_eq!((kept.len(), &kept[0]), (ELECTIONS_KEPT, &last));
    // The stored value is the record as JSON, under the folder.
    let raw = etcd
        .get(&format!("{PREFIX}{ELECTIONS}{}", last.id))
        .expect("the key");
    let v: serde_json::Value = serde_json::from_str(&raw).expect("JSON");
    assert_eq!(v["winner"], format!("node{total}"));

    // The loop's read sees the keys around the folder and nothing in it.
    let c = dcs.read_cluster().await.expect("read the cluster");
    assert_eq!(c.members.len(), 1, "members/node1 is read");
    assert_eq!(
        c.status.optime,
        Some(100),
        "status (after the folder) is read"
    );
    let all = etcd.get_prefix(PREFIX);
    assert_eq!(all.len(), 2 + ELECTIONS_KEPT, "{all:?}");
}
