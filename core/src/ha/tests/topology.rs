//! The topology tags, through `decide` and the rules in [`crate::ha::topology`]: a replica
//! follows the member `replicatefrom` names while that member serves WAL, else the leader;
//! `nostream` streams from nobody; a new replica clones from a running `clonefrom` replica;
//! slots are kept where members stream, and on the leader for everyone who streams; a node
//! with a `no_leader` replica method restores while there is no leader.

use super::fixtures::*;
use crate::dcs::{Cluster, Member};
use crate::ha::topology::{SlotFor, clone_source, slots_kept_by, upstream_of};
use crate::ha::{Action, World};
use serde_json::Value;

fn tagged(mut m: Member, tags: &[(&str, Value)]) -> Member {
    for (k, v) in tags {
        m.data.tags.insert((*k).into(), v.clone());
    }
    m
}

fn s(v: &str) -> Value {
    Value::String(v.into())
}

/// Leader `a`; replicas `b`, `c` (`c` tagged `replicatefrom: b`), `d`.
fn cascade() -> Cluster {
    let mut c = cluster(Some(leader("a", OTHER_LEASE)));
    c.members = vec![
        member("a", "primary", 100),
        member("b", "replica", 90),
        tagged(member("c", "replica", 80), &[("replicatefrom", s("b"))]),
        member("d", "replica", 70),
    ];
    c
}

fn replica_world(me: &str, c: Cluster, upstream: Option<&str>) -> World {
    let mut w = world(me, Some(c), pg_replica(50, upstream));
    if let Some(m) = w.cluster.as_ref().and_then(|c| c.member(me)) {
        for (k, v) in &m.data.tags {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            w.settings.tags.insert(k.clone(), text);
        }
    }
    w
}

#[test]
fn a_replica_follows_the_member_replicatefrom_names() {
    let w = replica_world("c", cascade(), Some("a"));
    assert_eq!(
        actions(&w),
        vec![Action::Follow {
            upstream: Some("b".into())
        }]
    );
    let w = replica_world("c", cascade(), Some("b"));
    assert_eq!(actions(&w), vec![]);
    assert!(
        decide_default(&w)
            .summary
            .contains("following b (replicatefrom)")
    );
}

#[test]
fn a_stopped_replica_starts_streaming_from_its_cascade_source() {
    let mut w = replica_world("c", cascade(), None);
    w.pg = pg_stopped(false);
    assert_eq!(
        actions(&w),
        vec![Action::StartReplica {
            upstream: Some("b".into())
        }]
    );
}

#[test]
fn the_leader_takes_over_when_the_cascade_source_is_gone_or_stopped() {
    let mut c = cascade();
    c.members.retain(|m| m.name != "b");
    let w = replica_world("c", c, Some("b"));
    assert_eq!(
        actions(&w),
        vec![Action::Follow {
            upstream: Some("a".into())
        }]
    );
    let mut c = cascade();
    c.members[1].data.state = Some("stopped".into());
    assert_eq!(
        upstream_of(&c, "a", "c", false, Some("b")),
        Some("a".into())
    );
}

#[test]
fn replicas_naming_each_other_stream_from_the_leader() {
    let mut c = cascade();
    c.members[1] = tagged(member("b", "replica", 90), &[("replicatefrom", s("c"))]);
    assert_eq!(
        upstream_of(&c, "a", "c", false, Some("b")),
        Some("a".into())
    );
    assert_eq!(
        upstream_of(&c, "a", "b", false, Some("c")),
        Some("a".into())
    );
    // A chain b -> d -> leader is fine.
    c.members[1] = tagged(member("b", "replica", 90), &[("replicatefrom", s("d"))]);
    assert_eq!(
        upstream_of(&c, "a", "c", false, Some("b")),
        Some("b".into())
    );
    // replicatefrom naming itself or the leader: the leader.
    assert_eq!(
        upstream_of(&c, "a", "c", false, Some("c")),
        Some("a".into())
    );
    assert_eq!(
        upstream_of(&c, "a", "c", false, Some("a")),
        Some("a".into())
    );
}

#[test]
fn nostream_streams_from_nobody() {
    let mut c = cascade();
    c.members[3] = tagged(
        member("d", "replica", 70),
        &[("nostream", Value::Bool(true))],
    );
    let w = replica_world("d", c.clone(), Some("a"));
    assert!(w.nostream());
    assert_eq!(actions(&w), vec![Action::Follow { upstream: None }]);
    let w = replica_world("d", c, None);
    assert_eq!(actions(&w), vec![]);
    assert!(
        decide_default(&w)
            .summary
            .contains("archive only (nostream)")
    );
}

#[test]
fn a_new_replica_clones_from_a_running_clonefrom_replica_with_the_most_wal() {
    let mut c = cascade();
    c.members[1] = tagged(
        member("b", "replica", 90),
        &[("clonefrom", Value::Bool(true))],
    );
    c.members[3] = tagged(member("d", "replica", 95), &[("clonefrom", s("on"))]);
    assert_eq!(clone_source(&c, "a", "e"), "d");
    let w = world("e", Some(c.clone()), pg_empty());
    assert_eq!(actions(&w), vec![Action::CloneFrom { source: "d".into() }]);
    // Stopped or nostream sources are passed over; none left: the leader.
    c.members[3].data.state = Some("stopped".into());
    assert_eq!(clone_source(&c, "a", "e"), "b");
    c.members[1]
        .data
        .tags
        .insert("nostream".into(), Value::Bool(true));
    assert_eq!(clone_source(&c, "a", "e"), "a");
}

#[test]
fn slots_are_kept_where_members_stream_and_on_the_leader_for_all_that_stream() {
    let mut c = cascade();
    c.members[3] = tagged(
        member("d", "replica", 70),
        &[("nostream", Value::Bool(true))],
    );
    c.members[2].data.receive_lsn = Some(77);
    let on_leader = slots_kept_by(&c, "a");
    assert_eq!(
        on_leader,
        vec![
            SlotFor {
                member: "b".into(),
                streams_here: true,
                reported_lsn: None
            },
            SlotFor {
                member: "c".into(),
                streams_here: false,
                reported_lsn: Some(77)
            },
        ]
    );
    let on_b = slots_kept_by(&c, "b");
    assert_eq!(on_b.len(), 1);
    assert_eq!(on_b[0].member, "c");
    assert!(on_b[0].streams_here);
    assert!(slots_kept_by(&c, "c").is_empty());
    assert!(slots_kept_by(&c, "d").is_empty());
}

#[test]
fn an_empty_node_restores_without_a_leader_only_with_a_no_leader_method() {
    let mut c = cluster(None);
    let mut w = world("b", Some(c.clone()), pg_empty());
    assert_eq!(actions(&w), vec![], "no leader, no no_leader method: wait");
    w.settings.clone_without_leader = true;
    assert_eq!(actions(&w), vec![Action::RestoreReplica]);
    c.initialize = Some(String::new());
    w.cluster = Some(c);
    assert_eq!(
        actions(&w),
        vec![],
        "a bootstrap is in progress: wait for it"
    );
    let mut c = cluster(Some(leader("a", OTHER_LEASE)));
    c.members = vec![member("a", "primary", 100)];
    w.cluster = Some(c);
    assert_eq!(actions(&w), vec![Action::CloneFrom { source: "a".into() }]);
}
