//! Read-only SQL probes for the policies granted `sql-probe`.
//!
//! A policy's health check runs synchronously on the thread that calls the policy, so the
//! prober is synchronous too: it hands each statement to a thread of its own, which keeps one
//! connection to the local PostgreSQL (on a private single-threaded runtime) and runs the
//! statement in a read-only transaction with a statement timeout. The caller waits no longer
//! than the timeout (plus a small allowance) whatever the server does.

use crate::plugin::SqlProber;
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

type Rows = Vec<Vec<Option<String>>>;
type Job = (String, Duration, mpsc::SyncSender<Result<Rows, String>>);

/// Where and as whom the probes connect.
#[derive(Debug, Clone)]
pub(crate) struct ProbeTarget {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) password: Option<String>,
    /// libpq TLS parameters (the superuser's), see `tls.rs`.
    pub(crate) params: Vec<(String, String)>,
}

/// The SQL prober: a thread with one connection to the local PostgreSQL.
pub(crate) struct Prober {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl Prober {
    /// Start the probe thread (it connects on the first probe and reconnects after errors).
    pub(crate) fn start(target: ProbeTarget) -> std::io::Result<Prober> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("regent-sql-probe".into())
            .spawn(move || run(target, rx))?;
        Ok(Prober {
            jobs: Mutex::new(tx),
        })
    }
}

impl SqlProber for Prober {
    fn probe(&self, sql: &str, timeout: Duration) -> Result<Rows, String> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send((sql.to_string(), timeout, tx))
            .map_err(|_| "the SQL probe thread is gone".to_string())?;
        // The statement timeout ends the query on the server; allow for connecting.
        match rx.recv_timeout(timeout + crate::plugin::PROBE_ALLOWANCE) {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no answer within {} ms (statement timeout)",
                timeout.as_millis()
            )),
        }
    }
}

fn run(target: ProbeTarget, jobs: mpsc::Receiver<Job>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        tracing::error!("cannot start the SQL probe runtime: probes will fail");
        for (_, _, reply) in jobs {
            let _ = reply.send(Err("the SQL probe runtime did not start".into()));
        }
        return;
    };
    let mut client: Option<tokio_postgres::Client> = None;
    for (sql, timeout, reply) in jobs {
        let answer = rt.block_on(async {
            let fut = probe_once(&target, &mut client, &sql, timeout);
            match tokio::time::timeout(timeout + Duration::from_millis(150), fut).await {
                Ok(r) => r,
                Err(_) => {
                    client = None;
                    Err(format!("timed out after {} ms", timeout.as_millis()))
                }
            }
        });
        if answer.is_err() && client.as_ref().is_some_and(|c| c.is_closed()) {
            client = None;
        }
        let _ = reply.send(answer);
    }
}

async fn probe_once(
    target: &ProbeTarget,
    client: &mut Option<tokio_postgres::Client>,
    sql: &str,
    timeout: Duration,
) -> Result<Rows, String> {
    if client.as_ref().is_none_or(|c| c.is_closed()) {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&target.host)
            .port(target.port)
            .user(&target.user)
            .dbname("postgres")
            .application_name("regent-probe")
            .connect_timeout(timeout);
        if let Some(p) = &target.password {
            cfg.password(p);
        }
        let c = super::tls::connect(&mut cfg, &target.params)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        *client = Some(c);
    }
    let Some(c) = client.as_ref() else {
        return Err("no connection".into());
    };
    let ms = timeout.as_millis().max(1);
    c.simple_query(&format!(
        "BEGIN READ ONLY; SET LOCAL statement_timeout = {ms}; SET LOCAL lock_timeout = {ms}"
    ))
    .await
    .map_err(db_message)?;
    let rows = run_in_transaction(c, sql).await;
    let _ = c.simple_query("ROLLBACK").await;
    rows
}

/// Run one statement (the extended protocol refuses several, so a probe cannot end the
/// read-only transaction) and render every column as PostgreSQL's text output.
async fn run_in_transaction(c: &tokio_postgres::Client, sql: &str) -> Result<Rows, String> {
    let sql = sql.trim().trim_end_matches(';');
    let stmt = c.prepare(sql).await.map_err(db_message)?;
    let n = stmt.columns().len();
    if n == 0 {
        c.execute(&stmt, &[]).await.map_err(db_message)?;
        return Ok(Vec::new());
    }
    let names: Vec<String> = (1..=n).map(|i| format!("c{i}")).collect();
    let select: Vec<String> = names.iter().map(|c| format!("t.{c}::text")).collect();
    let wrapped = format!(
        "SELECT {} FROM ({sql}) AS t({})",
        select.join(", "),
        names.join(", ")
    );
    let rows = c.query(&wrapped, &[]).await.map_err(db_message)?;
    Ok(rows
        .iter()
        .map(|r| (0..n).map(|i| r.get::<_, Option<String>>(i)).collect())
        .collect())
}

fn db_message(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}
