//! The members table, topology and history views against clusters built from raw keys.

use super::*;
use crate::dcs::RawKv;

fn kv<'a>(key: &'a str, value: &'a str) -> RawKv<'a> {
    RawKv {
        key,
        value: value.as_bytes(),
        lease: 0,
        mod_revision: 5,
    }
}

fn cluster(sync: bool) -> Cluster {
    let config = if sync {
        r#"{"ttl":30,"synchronous_mode":true,"pause":true}"#
    } else {
        r#"{"ttl":30}"#
    };
    Cluster::from_kvs(
        [
            kv("initialize", "7412345678901234567"),
            kv("config", config),
            kv("leader", "pg1"),
            kv("status", r#"{"optime":83886176}"#),
            kv("sync", r#"{"leader":"pg1","sync_standby":"pg3"}"#),
            kv(
                "members/pg1",
                r#"{"conn_url":"postgres://127.0.0.1:5433/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"primary","xlog_location":83886176,"timeline":2,"policy":"patroni-default"}"#,
            ),
            kv(
                "members/pg2",
                r#"{"conn_url":"postgres://127.0.0.1:5434/postgres","state":"running","role":"replica","receive_lsn":67108960,"replay_lsn":50331744,"replication_state":"streaming","timeline":2,"tags":{"nofailover":true,"zone":"b"},"pending_restart":true,"policy":"zone-aware@1a2b3c,event-journal@4d5e6f"}"#,
            ),
            kv(
                "members/pg3",
                r#"{"conn_url":"postgres://127.0.0.1:5435/postgres","state":"starting","role":"replica","timeline":2}"#,
            ),
        ],
        9,
    )
}

#[test]
fn rows_from_the_dcs() {
    let rows = member_rows(&cluster(true));
    assert_eq!(rows.len(), 3);
    assert_eq!(
        (rows[0].role, rows[1].role, rows[2].role),
        ("Leader", "Replica", "Sync Standby")
    );
    assert_eq!(rows[0].receive, None);
    assert_eq!(
        rows[1].receive,
        Some(Position::At {
            lsn: 67108960,
            lag: 16 << 20
        })
    );
    assert_eq!(
        rows[1].replay,
        Some(Position::At {
            lsn: 50331744,
            lag: 32 << 20
        })
    );
    assert_eq!(rows[1].state, "streaming");
    assert_eq!(rows[2].state, "starting");
    assert_eq!(rows[2].receive, Some(Position::Unknown));
    assert!(rows[1].pending_restart);
    assert_eq!(
        (rows[0].host.as_str(), rows[0].port),
        ("127.0.0.1", Some(5433))
    );
    // Without synchronous_mode the sync key does not make a sync standby.
    assert_eq!(member_rows(&cluster(false))[2].role, "Replica");
}

#[test]
fn pretty_table_like_patronictl() {
    let text = render_members(&cluster(true), "demo", Format::Pretty, false, false);
    assert!(
        text.starts_with("+ Cluster: demo (7412345678901234567) -"),
        "{text}"
    );
    let lines: Vec<&str> = text.lines().collect();
    let width = lines[0].chars().count();
    assert!(
        lines
            .iter()
            .take(lines.len() - 1)
            .all(|l| l.chars().count() == width),
        "{text}"
    );
    assert!(lines[1].starts_with("| Member | Host           | Role         | State     | TL | Receive LSN | Lag | Replay LSN | Lag |"), "{text}");
    assert!(text.contains("| pg2    | 127.0.0.1:5434 | Replica      | streaming |  2 |   0/4000060 |  16 |  0/3000060 |  32 | *"), "{text}");
    assert!(text.contains("| nofailover: true |"), "{text}");
    assert!(text.contains("| zone: b          |"), "{text}");
    assert!(text.contains("event-journal@4d5e6f"), "{text}");
    assert!(text.ends_with("+\n Maintenance mode: on\n"), "{text}");
}

#[test]
fn json_like_patronictl() {
    let text = render_members(&cluster(true), "demo", Format::Json, false, false);
    let v: Value = serde_json::from_str(&text).expect("json");
    let pg1 = &v[0];
    assert_eq!(pg1["Cluster"], "demo");
    assert_eq!(pg1["Member"], "pg1");
    assert_eq!(pg1["Host"], "127.0.0.1:5433");
    assert_eq!(pg1["Role"], "Leader");
    assert_eq!(pg1["TL"], 2);
    assert!(
        pg1.get("Receive LSN").is_none(),
        "empty values are left out"
    );
    let pg2 = &v[1];
    assert_eq!(pg2["Receive Lag"], 16);
    assert_eq!(pg2["Replay LSN"], "0/3000060");
    assert_eq!(pg2["Pending restart"], "*");
    assert_eq!(pg2["Tags"]["zone"], "b");
    assert_eq!(pg2["Policy"], "zone-aware@1a2b3c,event-journal@4d5e6f");
    assert_eq!(v[2]["Role"], "Sync Standby");
    assert_eq!(v[2]["State"], "starting");
}

#[test]
fn tsv_like_patronictl() {
    let text = render_members(&cluster(true), "demo", Format::Tsv, false, false);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "Cluster\tMember\tHost\tRole\tState\tTL\tReceive LSN\tReceive Lag\tReplay LSN\tReplay Lag\tPending restart\tTags\tPolicy"
    );
    assert_eq!(
        lines[2],
        "demo\tpg2\t127.0.0.1:5434\tReplica\tstreaming\t2\t0/4000060\t16\t0/3000060\t32\t*\t{nofailover: true, zone: b}\tzone-aware@1a2b3c,event-journal@4d5e6f"
    );
    assert_eq!(lines.len(), 4, "no service info: {text}");
    let h = Cluster::from_kvs(
        [kv(
            "history",
            r#"[[1,25165984,"x","2026-01-01T00:00:00+00:00","pg2"],[2,33554592,"y"]]"#,
        )],
        1,
    );
    assert_eq!(
        render_history(&h, Format::Tsv),
        "TL\tLSN\tReason\tTimestamp\tNew Leader\n1\t25165984\tx\t2026-01-01T00:00:00+00:00\tpg2\n2\t33554592\ty\t\t\n"
    );
}

#[test]
fn topology_nests_cascading_replicas() {
    let mut c = cluster(false);
    c.members[2]
        .data
        .tags
        .insert("replicatefrom".into(), Value::from("pg2"));
    let order: Vec<(usize, String)> = topology_order(member_rows(&c))
        .into_iter()
        .map(|(l, r)| (l, r.name))
        .collect();
    assert_eq!(
        order,
        vec![(0, "pg1".into()), (1, "pg2".into()), (2, "pg3".into())]
    );
    let text = render_members(&c, "demo", Format::Pretty, false, true);
    assert!(text.contains("| pg1 "), "{text}");
    assert!(text.contains("| + pg2 "), "{text}");
    assert!(text.contains("|   + pg3 "), "{text}");
    assert!(text.contains("{nofailover: true, zone: b}"), "{text}");
}

#[test]
fn history_formats() {
    let c = Cluster::from_kvs(
        [kv(
            "history",
            r#"[[1,25165984,"no recovery target specified","2026-01-01T00:00:00+00:00","pg2"],[2,33554592,"x"]]"#,
        )],
        1,
    );
    let text = render_history(&c, Format::Pretty);
    assert!(text.contains("|  1 | 25165984 | no recovery target specified | 2026-01-01T00:00:00+00:00 | pg2        |"), "{text}");
    let v: Value = serde_json::from_str(&render_history(&c, Format::Json)).expect("json");
    assert_eq!(v[1]["TL"], 2);
    assert_eq!(v[1]["New Leader"], "");
    let y = render_history(&c, Format::Yaml);
    assert!(y.contains("Reason: no recovery target specified"), "{y}");
}

#[test]
fn lsn_and_conn_url_parsing() {
    assert_eq!(format_lsn(0x1_0000_0060), "1/60");
    assert_eq!(format_lsn(67108960), "0/4000060");
    assert_eq!(
        conn_host_port("postgres://u:p@[::1]:5433/postgres"),
        Some(("::1".into(), Some(5433)))
    );
    assert_eq!(
        conn_host_port("postgres://db1/postgres"),
        Some(("db1".into(), None))
    );
    assert_eq!(conn_host_port("host=x"), None);
    assert_eq!(lag_mb(3 << 19), 2, "1.5 MB rounds to even");
    assert_eq!(lag_mb(5 << 19), 2, "2.5 MB rounds to even");
}
