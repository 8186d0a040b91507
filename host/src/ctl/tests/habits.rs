//! patronictl's further habits against the in-memory cluster and the mock REST servers: `dsn`,
//! `query` (flags, login, output shapes, failures), `flush`, `remove`, watching several clusters,
//! the command line (cluster names, `query`'s own `-c`/`-f`).

use super::*;
use crate::ctl::actions::{QueryOptions, Rows, Watching, render_rows};
use crate::ctl::{CtlArgs, CtlCmd, QueryArgs};
use clap::{CommandFactory, Parser};

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn query_opts(sql: &str) -> QueryOptions {
    QueryOptions {
        role: None,
        member: None,
        dbname: None,
        user: None,
        ask_password: false,
        sql: sql.into(),
        format: Format::Tsv,
        delimiter: "\t".into(),
        watching: Watching::once(),
    }
}

#[tokio::test]
async fn dsn_prints_the_leader_or_the_chosen_member() {
    let fx = Fixture::new().await;
    let url = |i: usize| {
        fx.store.cluster.lock().expect("lock").members[i]
            .data
            .conn_url
            .clone()
            .expect("conn_url")
    };
    let port_of = |u: String| u.rsplit(':').next().expect("port")[..].replace("/postgres", "");
    let (pg1, pg2, pg3) = (port_of(url(0)), port_of(url(1)), port_of(url(2)));

    let (r, out, _) = fx
        .run(Format::Pretty, &[], async |s| s.dsn(None, None).await)
        .await;
    r.expect("dsn");
    assert_eq!(out, format!("host=127.0.0.1 port={pg1}\n"));

    let (r, out, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.dsn(Some(RoleFilter::Replica), None).await
        })
        .await;
    r.expect("replica");
    assert_eq!(
        out,
        format!("host=127.0.0.1 port={pg2}\n"),
        "the first replica"
    );

    let (r, out, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.dsn(None, Some("pg3".into())).await
        })
        .await;
    r.expect("member");
    assert_eq!(out, format!("host=127.0.0.1 port={pg3}\n"));

    let (r, _, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.dsn(Some(RoleFilter::Leader), Some("pg3".into())).await
        })
        .await;
    let e = r.expect_err("both");
    assert!(e.to_string().contains("give one of them"), "{e}");
    assert_eq!(e.exit_code(), 2);

    // A conn_url without a port means 5432; no leader means no default member.
    fx.edit(|c| {
        c.members[2].data.conn_url = Some("postgres://db3.example/postgres".into());
        c.leader = None;
    });
    let (r, out, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.dsn(None, Some("pg3".into())).await
        })
        .await;
    r.expect("default port");
    assert_eq!(out, "host=db3.example port=5432\n");
    let (r, _, _) = fx
        .run(Format::Pretty, &[], async |s| s.dsn(None, None).await)
        .await;
    let e = r.expect_err("no leader");
    assert!(
        e.to_string().contains("cluster demo has no leader member"),
        "{e}"
    );
}

#[test]
fn query_rows_in_patronictl_shapes() {
    let rows = Rows {
        columns: Some(vec!["name".into(), "setting".into()]),
        rows: vec![
            vec![Some("work_mem".into()), Some("4096".into())],
            vec![Some("x".into()), None],
        ],
    };
    assert_eq!(
        render_rows(&rows, Format::Tsv, "\t"),
        "name\tsetting\nwork_mem\t4096\nx\tNone\n"
    );
    assert_eq!(
        render_rows(&rows, Format::Tsv, ";"),
        "name;setting\nwork_mem;4096\nx;None\n"
    );
    assert_eq!(
        render_rows(&rows, Format::Pretty, "\t"),
        "\
+----------+---------+
| name     | setting |
+----------+---------+
| work_mem | 4096    |
| x        | None    |
+----------+---------+
"
    );
    let v: Value = serde_json::from_str(&render_rows(&rows, Format::Json, "\t")).expect("json");
    assert_eq!(
        v,
        json!([{"name": "work_mem", "setting": "4096"}, {"name": "x", "setting": null}])
    );
    // A statement without rows prints nothing.
    assert_eq!(render_rows(&Rows::default(), Format::Tsv, "\t"), "");
    assert_eq!(render_rows(&Rows::default(), Format::Pretty, "\t"), "");
}

#[test]
fn query_takes_sql_from_one_place() {
    let parse = |args: &[&str]| -> QueryArgs {
        let mut all = vec!["query"];
        all.extend_from_slice(args);
        match parse(&all).cmd {
            CtlCmd::Query(q) => q,
            other => panic!("{other:?}"),
        }
    };
    let e = QueryOptions::from_args(&parse(&["-c", "SELECT 1", "-f", "/x.sql"])).expect_err("both");
    assert!(e.to_string().contains("give one of them"), "{e}");
    let e = QueryOptions::from_args(&parse(&[])).expect_err("none");
    assert!(
        e.to_string()
            .contains("pass -c/--command SQL or -f/--file FILE"),
        "{e}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("q.sql");
    std::fs::write(&file, "SELECT 2").expect("write");
    let o =
        QueryOptions::from_args(&parse(&["-f", &file.display().to_string(), "-W"])).expect("file");
    assert_eq!(o.sql, "SELECT 2");
    assert_eq!(o.watching.every, Some(Duration::from_secs(2)));
    let o = QueryOptions::from_args(&parse(&["-c", "SELECT 1", "-w", "0.5"])).expect("watch");
    assert_eq!(o.watching.every, Some(Duration::from_millis(500)));
    let e = QueryOptions::from_args(&parse(&["-c", "SELECT 1", "--watch=-1"])).expect_err("neg");
    assert_eq!(e.exit_code(), 2);
}

#[tokio::test]
async fn query_login_flags_then_libpq_variables_then_the_config() {
    let mut fx = Fixture::new().await;
    fx.pg_login = PgLogin {
        user: Some("postgres".into()),
        password: Some("su-pw".into()),
    };
    let rest = Rest::new(None, &Default::default()).expect("client");
    let mut out = Vec::new();
    let mut prompt = Scripted::default();
    let s = Session {
        store: &fx.store,
        rest: &rest,
        scope: "demo",
        format: Format::Tsv,
        out: &mut out,
        prompt: &mut prompt,
        poll: Duration::from_millis(20),
        pg_login: fx.pg_login.clone(),
    };
    let none = |_: &str| None;
    let l = s.login(&query_opts("SELECT 1"), None, none);
    assert_eq!(
        (l.user.as_str(), l.password.as_deref(), l.dbname.as_deref()),
        ("postgres", Some("su-pw"), None)
    );
    // Another user does not get the superuser's password.
    let o = QueryOptions {
        user: Some("app".into()),
        dbname: Some("appdb".into()),
        ..query_opts("SELECT 1")
    };
    let l = s.login(&o, None, none);
    assert_eq!(
        (l.user.as_str(), l.password, l.dbname.as_deref()),
        ("app", None, Some("appdb"))
    );
    // The asked password wins; PGUSER/PGPASSWORD/PGDATABASE come before the config.
    let l = s.login(&o, Some("typed".into()), none);
    assert_eq!(l.password.as_deref(), Some("typed"));
    let env = |k: &str| match k {
        "PGUSER" => Some("envuser".to_string()),
        "PGPASSWORD" => Some("envpw".to_string()),
        "PGDATABASE" => Some("envdb".to_string()),
        _ => None,
    };
    let l = s.login(&query_opts("SELECT 1"), None, env);
    assert_eq!(
        (l.user.as_str(), l.password.as_deref(), l.dbname.as_deref()),
        ("envuser", Some("envpw"), Some("envdb"))
    );
}

#[tokio::test]
async fn query_failure_is_an_error_row_and_exit_1() {
    let fx = Fixture::new().await;
    let closed = closed_port();
    fx.edit(|c| {
        c.members[0].data.conn_url = Some(format!("postgres://127.0.0.1:{closed}/postgres"))
    });
    let (r, out, _) = fx
        .run(Format::Tsv, &[], async |s| {
            s.query(query_opts("SELECT 1")).await
        })
        .await;
    let e = r.expect_err("nothing listens");
    assert_eq!(e.exit_code(), 1);
    assert!(e.to_string().contains("pg1"), "{e}");
    let line = out.lines().next().expect("one row");
    let (when, what) = line.split_once('\t').expect("two cells");
    assert_eq!(when.len(), 19, "{line}");
    assert!(what.starts_with("ERROR, SQLSTATE: "), "{line}");
    assert!(
        what.contains("refused") || what.contains("connect"),
        "{line}"
    );

    // Refused before connecting: an unknown member, or -r with -m.
    let (r, out, _) = fx
        .run(Format::Tsv, &[], async |s| {
            s.query(QueryOptions {
                member: Some("pg9".into()),
                ..query_opts("SELECT 1")
            })
            .await
        })
        .await;
    assert!(
        r.expect_err("unknown")
            .to_string()
            .contains("pg9 is not a member")
    );
    assert!(out.is_empty(), "{out}");
    let (r, _, _) = fx
        .run(Format::Tsv, &[], async |s| {
            s.query(QueryOptions {
                member: Some("pg2".into()),
                role: Some(RoleFilter::Replica),
                ..query_opts("SELECT 1")
            })
            .await
        })
        .await;
    assert_eq!(r.expect_err("both").exit_code(), 2);

    // No member with the role: patronictl's row.
    fx.edit(|c| c.members.truncate(1));
    let (r, out, _) = fx
        .run(Format::Tsv, &[], async |s| {
            s.query(QueryOptions {
                role: Some(RoleFilter::Replica),
                ..query_opts("SELECT 1")
            })
            .await
        })
        .await;
    assert!(r.is_err());
    assert!(
        out.contains("\tNo connection to role replica is available"),
        "{out}"
    );
}

#[tokio::test]
async fn flush_restart_deletes_only_scheduled_restarts() {
    let fx = Fixture::new().await;
    fx.edit(|c| {
        for i in [1, 2] {
            c.members[i].data.extra.insert(
                "scheduled_restart".into(),
                json!({"schedule": "2030-01-01T00:00:00+00:00"}),
            );
        }
    });
    fx.apis[1].answer("DELETE /restart", 200, "scheduled restart deleted");
    fx.apis[2].answer("DELETE /restart", 404, "no restart is scheduled");
    let (r, out, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.flush(vec!["restart".into()], RoleFilter::Any, true).await
        })
        .await;
    let e = r.expect_err("pg3 answered 404");
    assert!(e.to_string().contains("flush failed on pg3"), "{e}");
    assert_eq!(
        out,
        "No scheduled restart for member pg1\n\
         Success: flush scheduled restart for member pg2\n\
         Failed: flush scheduled restart for member pg3, status code=404, (no restart is scheduled)\n"
    );
    assert!(fx.apis[0].seen().is_empty());
    let seen = fx.apis[1].seen();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("DELETE", "/restart")
    );

    // Named members only, after a confirmation.
    let (r, _, asked) = fx
        .run(Format::Pretty, &["y"], async |s| {
            s.flush(vec!["pg2".into(), "restart".into()], RoleFilter::Any, false)
                .await
        })
        .await;
    r.expect("flushed");
    assert_eq!(
        asked,
        vec!["Are you sure you want to flush the scheduled restarts of members pg2?".to_string()]
    );
    assert_eq!(fx.apis[1].seen().len(), 2);
    assert_eq!(fx.apis[2].seen().len(), 1, "pg3 was not named");

    for (args, want) in [
        (vec![], "end with `restart` or `switchover`"),
        (vec!["pg2"], "the last argument says what to flush"),
        (vec!["pg2", "switchover"], "takes no member names"),
    ] {
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        let (r, _, _) = fx
            .run(Format::Pretty, &[], async |s| {
                s.flush(args, RoleFilter::Any, true).await
            })
            .await;
        let e = r.expect_err(want);
        assert!(e.to_string().contains(want), "{e}");
        assert_eq!(e.exit_code(), 2);
    }
}

#[tokio::test]
async fn flush_switchover_asks_the_leader_first_then_clears_the_key() {
    let fx = Fixture::new().await;
    let (r, out, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.flush(vec!["switchover".into()], RoleFilter::Any, true)
                .await
        })
        .await;
    r.expect("nothing scheduled");
    assert_eq!(out, "No pending scheduled switchover\n");
    assert!(fx.apis.iter().all(|a| a.seen().is_empty()));

    let scheduled = Failover {
        leader: Some("pg1".into()),
        member: None,
        scheduled_at: Some("2030-01-01T00:00:00+00:00".into()),
    };
    fx.edit(|c| c.failover = Some((scheduled.clone(), 40)));
    fx.apis[0].answer("DELETE /switchover", 503, "etcd is away");
    fx.apis[1].answer("DELETE /switchover", 200, "scheduled switchover deleted");
    let (r, out, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.flush(vec!["switchover".into()], RoleFilter::Any, true)
                .await
        })
        .await;
    r.expect("pg2 deleted it");
    assert_eq!(
        out,
        "Failed: member=pg1, status_code=503, (etcd is away)\nSuccess: scheduled switchover deleted\n"
    );
    assert!(fx.apis[2].seen().is_empty(), "stops at the first answer");

    // Nobody reachable: the key is cleared in etcd, with a CAS on the revision read.
    let closed = closed_port();
    fx.edit(|c| {
        for m in &mut c.members {
            m.data.api_url = Some(format!("http://127.0.0.1:{closed}/patroni"));
        }
    });
    let (r, out, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.flush(vec!["switchover".into()], RoleFilter::Any, true)
                .await
        })
        .await;
    r.expect("cleared in etcd");
    assert!(
        out.contains(" Could not find any accessible member of cluster demo\n"),
        "{out}"
    );
    let after = fx.store.cluster.lock().expect("lock").failover.clone();
    assert_eq!(after, Some((Failover::default(), 41)));
}

#[tokio::test]
async fn remove_wants_the_name_the_phrase_and_the_leader() {
    let fx = Fixture::new().await;
    for (answers, want) in [
        (vec!["other"], "that is not the cluster's name (demo)"),
        (vec!["demo", "yes"], "not exactly \"Yes I am aware\""),
        (
            vec!["demo", "Yes I am aware", "pg2"],
            "that is not the leader of cluster demo",
        ),
        (vec!["demo"], "no answer"),
    ] {
        let (r, _, _) = fx
            .run(Format::Pretty, &answers, async |s| s.remove("demo").await)
            .await;
        let e = r.expect_err(want);
        assert!(e.to_string().contains(want), "{e}");
        assert!(!*fx.store.deleted.lock().expect("lock"), "nothing deleted");
    }
    let (r, out, asked) = fx
        .run(
            Format::Pretty,
            &["demo", "Yes I am aware", "pg1"],
            async |s| s.remove("demo").await,
        )
        .await;
    r.expect("removed");
    assert!(
        out.starts_with("+ Cluster: demo (7412345678901234567) "),
        "{out}"
    );
    assert_eq!(asked.len(), 3, "{asked:?}");
    assert!(asked[1].contains("\"Yes I am aware\""), "{asked:?}");
    assert!(*fx.store.deleted.lock().expect("lock"));

    // Without a leader, two answers do.
    let fx = Fixture::new().await;
    fx.edit(|c| c.leader = None);
    let (r, _, asked) = fx
        .run(Format::Pretty, &["demo", "Yes I am aware"], async |s| {
            s.remove("demo").await
        })
        .await;
    r.expect("removed");
    assert_eq!(asked.len(), 2);
}

#[tokio::test]
async fn list_watches_several_clusters() {
    let fx = Fixture::new().await;
    let mut other = fx.store.cluster.lock().expect("lock").clone();
    other.initialize = Some("7000000000000000001".into());
    fx.store
        .others
        .lock()
        .expect("lock")
        .insert("other".into(), other);
    let mut w = Watching::every(Some(Duration::from_millis(30)));
    w.rounds = Some(2);
    let started = std::time::Instant::now();
    let (r, out, _) = fx
        .run(Format::Pretty, &[], async |s| {
            s.list(&["demo".into(), "other".into()], false, false, true, w)
                .await
        })
        .await;
    r.expect("listed");
    assert!(started.elapsed() >= Duration::from_millis(30));
    let titles: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("+ Cluster: "))
        .map(|l| l.split(" -").next().unwrap_or(l))
        .collect();
    assert_eq!(
        titles,
        vec![
            "+ Cluster: demo (7412345678901234567)",
            "+ Cluster: other (7000000000000000001)",
            "+ Cluster: demo (7412345678901234567)",
            "+ Cluster: other (7000000000000000001)",
        ],
        "{out}"
    );
    let stamps = out
        .lines()
        .filter(|l| l.len() == 19 && l.as_bytes()[10] == b' ')
        .count();
    assert_eq!(stamps, 2, "one timestamp line per round: {out}");

    // tsv: the cluster in every row, no title.
    let (r, out, _) = fx
        .run(Format::Tsv, &[], async |s| {
            s.list(&[], false, false, false, Watching::once()).await
        })
        .await;
    r.expect("tsv");
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some(
            "Cluster\tMember\tHost\tRole\tState\tTL\tReceive LSN\tReceive Lag\tReplay LSN\tReplay Lag"
        )
    );
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("demo\tpg1\t127.0.0.1:")
                && l.ends_with("\tLeader\trunning\t\t\t\t\t")),
        "{out}"
    );
}

/// The command line as `regent ctl` reads it.
#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    ctl: CtlArgs,
}

fn parse(args: &[&str]) -> CtlArgs {
    let mut all = vec!["regent-ctl"];
    all.extend_from_slice(args);
    Cli::try_parse_from(all).expect("parses").ctl
}

#[test]
fn query_has_its_own_c_f_and_u() {
    Cli::command().debug_assert();
    let a = parse(&[
        "-c",
        "node.yml",
        "query",
        "demo",
        "-c",
        "SELECT 1",
        "-U",
        "bob",
        "--password",
        "-r",
        "replica",
        "-d",
        "app",
    ]);
    assert_eq!(a.config.as_deref(), Some(std::path::Path::new("node.yml")));
    assert_eq!(
        a.username, None,
        "-U is the database user, not the REST one"
    );
    let CtlCmd::Query(q) = a.cmd else {
        panic!("query")
    };
    assert_eq!(q.cluster.as_deref(), Some("demo"));
    assert_eq!(q.command.as_deref(), Some("SELECT 1"));
    assert_eq!(q.user.as_deref(), Some("bob"));
    assert!(q.ask_password);
    assert_eq!(q.role, Some(RoleFilter::Replica));
    assert_eq!(q.dbname.as_deref(), Some("app"));
    assert_eq!(q.format, Format::Tsv, "query prints tsv by default");

    let a = parse(&[
        "query", "-f", "q.sql", "--format", "json", "--config", "n.yml",
    ]);
    assert_eq!(a.config.as_deref(), Some(std::path::Path::new("n.yml")));
    let CtlCmd::Query(q) = a.cmd else {
        panic!("query")
    };
    assert_eq!(q.file.as_deref(), Some(std::path::Path::new("q.sql")));
    assert_eq!(q.format, Format::Json);

    // Elsewhere -c and -f keep their global meaning, before or after the command.
    let a = parse(&[
        "list", "demo", "other", "-f", "tsv", "-W", "-t", "-c", "n.yml",
    ]);
    assert_eq!(a.format, Format::Tsv);
    assert_eq!(a.config.as_deref(), Some(std::path::Path::new("n.yml")));
    let CtlCmd::List {
        clusters,
        timestamp,
        watch,
        ..
    } = a.cmd
    else {
        panic!("list")
    };
    assert_eq!(clusters, vec!["demo".to_string(), "other".into()]);
    assert!(timestamp);
    assert_eq!(watch.interval().expect("ok"), Some(Duration::from_secs(2)));
}

#[test]
fn the_first_name_is_the_cluster_when_it_is_the_scope() {
    let names = |a: &CtlArgs| match &a.cmd {
        CtlCmd::Restart { members, .. } | CtlCmd::Version { members } => members.clone(),
        CtlCmd::Flush { args, .. } => args.clone(),
        _ => Vec::new(),
    };
    // patronictl's form and regent's own.
    for (args, configured, cluster, rest) in [
        (
            vec!["restart", "demo", "pg2"],
            Some("demo"),
            vec!["demo"],
            vec!["pg2"],
        ),
        (vec!["restart", "pg2"], Some("demo"), vec![], vec!["pg2"]),
        (vec!["restart", "demo"], None, vec!["demo"], vec![]),
        (vec!["version", "demo"], Some("demo"), vec!["demo"], vec![]),
        (
            vec!["flush", "demo", "pg2", "restart"],
            Some("demo"),
            vec!["demo"],
            vec!["pg2", "restart"],
        ),
        (vec!["flush", "restart"], None, vec![], vec!["restart"]),
        (
            vec!["flush", "demo", "switchover"],
            None,
            vec!["demo"],
            vec!["switchover"],
        ),
    ] {
        let mut a = parse(&args);
        let taken = a.cmd.take_clusters(configured);
        assert_eq!(taken, cluster, "{args:?}");
        assert_eq!(names(&a), rest, "{args:?}");
    }
    let mut a = parse(&["switchover", "demo", "--candidate", "pg2"]);
    assert_eq!(a.cmd.take_clusters(Some("other")), vec!["demo".to_string()]);
    let mut a = parse(&["remove", "gone"]);
    assert_eq!(a.cmd.take_clusters(None), vec!["gone".to_string()]);
    let mut a = parse(&["list"]);
    assert!(a.cmd.take_clusters(Some("demo")).is_empty());
}
