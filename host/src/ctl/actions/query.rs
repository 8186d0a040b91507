//! `query`: SQL on a member's PostgreSQL (the leader's unless `-r`/`-m` say otherwise), the rows
//! printed as patronictl prints them: tab-separated with a header line by default, or a table,
//! JSON or YAML. Values are PostgreSQL's text output; NULL is `None` in text (Python's `str`)
//! and `null` in JSON. A failed statement or connection prints one row, the time and
//! `ERROR, SQLSTATE: <code> (<PostgreSQL's message>)`, as patronictl does (and exits 1 unless
//! watching).
//!
//! The login: `-U`, else `PGUSER`, else the config's `postgresql.authentication.superuser`
//! (else the OS user); the password: `--password` (asked), else `PGPASSWORD`, else the
//! superuser's when logging in as the superuser. The database: `-d`, else `PGDATABASE`, else
//! the user's name (libpq's default, which patronictl uses).

use super::dsn::{pg_address, pick_member};
use super::{Session, Watching, timestamp};
use crate::ctl::store::Store;
use crate::ctl::table::{Align, Table, tsv};
use crate::ctl::view::machine;
use crate::ctl::{CtlError, Format, QueryArgs, RoleFilter};
use crate::dcs::Cluster;
use crate::postgres::sql_error_text;
use serde_json::{Map, Value};
use std::time::Duration;
use tokio_postgres::SimpleQueryMessage;

/// How long connecting may take (patronictl's `connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What `query` was asked to do.
#[derive(Debug)]
pub(crate) struct QueryOptions {
    pub(crate) role: Option<RoleFilter>,
    pub(crate) member: Option<String>,
    pub(crate) dbname: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) ask_password: bool,
    pub(crate) sql: String,
    pub(crate) format: Format,
    pub(crate) delimiter: String,
    pub(crate) watching: Watching,
}

impl QueryOptions {
    /// Checks the flags and reads the SQL (`-c`, or `-f FILE`, `-` for stdin).
    pub(crate) fn from_args(q: &QueryArgs) -> Result<QueryOptions, CtlError> {
        let sql = match (&q.command, &q.file) {
            (Some(_), Some(_)) => {
                return Err(CtlError::Usage(
                    "-c/--command and -f/--file both give the SQL: give one of them".into(),
                ));
            }
            (None, None) => {
                return Err(CtlError::Usage(
                    "no SQL to run: pass -c/--command SQL or -f/--file FILE".into(),
                ));
            }
            (Some(c), None) => c.clone(),
            (None, Some(f)) => crate::ctl::edit::read_input(&f.to_string_lossy(), "--file")?,
        };
        Ok(QueryOptions {
            role: q.role,
            member: q.member.clone(),
            dbname: q.dbname.clone(),
            user: q.user.clone(),
            ask_password: q.ask_password,
            sql,
            format: q.format,
            delimiter: q.delimiter.clone(),
            watching: Watching::every(q.watch.interval()?),
        })
    }
}

/// A result set: the column names (`None` when the statement returned no rows description, as
/// DDL, or for an error row) and the values, `None` for NULL.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Rows {
    pub(crate) columns: Option<Vec<String>>,
    pub(crate) rows: Vec<Vec<Option<String>>>,
}

impl Rows {
    /// patronictl's error row: the time and the error.
    fn error(text: &str) -> Rows {
        Rows {
            columns: None,
            rows: vec![vec![Some(timestamp()), Some(text.replace('\n', " "))]],
        }
    }
}

/// The rows in `format` (patronictl's `print_output` without a title).
pub(crate) fn render_rows(r: &Rows, format: Format, delimiter: &str) -> String {
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "None".into());
    let width = r.rows.iter().map(Vec::len).max().unwrap_or(0);
    let columns: Vec<String> = match &r.columns {
        Some(c) => c.clone(),
        None => (1..=width).map(|i| format!("Field {i}")).collect(),
    };
    let cells: Vec<Vec<String>> = r
        .rows
        .iter()
        .map(|row| row.iter().map(text).collect())
        .collect();
    match format {
        Format::Tsv => tsv(r.columns.as_deref().unwrap_or_default(), &cells, delimiter),
        Format::Pretty if columns.is_empty() => String::new(),
        Format::Pretty => Table {
            title: None,
            columns: columns.into_iter().map(|c| (c, Align::Left)).collect(),
            rows: cells,
        }
        .render(),
        Format::Json | Format::Yaml => {
            let names = r.columns.as_deref().unwrap_or_default();
            let docs: Vec<Value> = r
                .rows
                .iter()
                .map(|row| {
                    let m: Map<String, Value> = names
                        .iter()
                        .zip(row)
                        .map(|(n, v)| (n.clone(), v.clone().map_or(Value::Null, Value::from)))
                        .collect();
                    Value::Object(m)
                })
                .collect();
            machine(&Value::Array(docs), format)
        }
    }
}

/// The rows of the last statement that described rows, from a simple-query exchange.
fn last_result(messages: Vec<SimpleQueryMessage>) -> Rows {
    let mut out = Rows::default();
    for msg in messages {
        match msg {
            SimpleQueryMessage::RowDescription(cols) => {
                out = Rows {
                    columns: Some(cols.iter().map(|c| c.name().to_string()).collect()),
                    rows: Vec::new(),
                };
            }
            SimpleQueryMessage::Row(row) => {
                let values = (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect();
                out.rows.push(values);
            }
            _ => {}
        }
    }
    out
}

/// `ERROR, SQLSTATE: <code> (<the server's text>)`, or the driver's error where the server
/// said nothing (a connection that failed).
fn error_text(e: &tokio_postgres::Error) -> String {
    match e.code() {
        Some(code) => format!("ERROR, SQLSTATE: {} ({})", code.code(), sql_error_text(e)),
        None => format!("ERROR, SQLSTATE: {}", sql_error_text(e)),
    }
}

/// Who logs in, with which password, to which database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Login {
    pub(crate) user: String,
    pub(crate) password: Option<String>,
    pub(crate) dbname: Option<String>,
}

impl<S: Store> Session<'_, S> {
    /// The login for `o`: flags, then libpq's variables (`var`), then the config's superuser.
    pub(crate) fn login(
        &self,
        o: &QueryOptions,
        asked: Option<String>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Login {
        let set = |k: &str| var(k).filter(|v| !v.is_empty());
        let su = &self.pg_login;
        let user = o
            .user
            .clone()
            .or_else(|| set("PGUSER"))
            .or_else(|| su.user.clone())
            .or_else(|| set("USER"))
            .unwrap_or_else(|| "postgres".into());
        let password = asked.or_else(|| set("PGPASSWORD")).or_else(|| {
            (su.user.as_deref() == Some(user.as_str()))
                .then(|| su.password.clone())
                .flatten()
        });
        Login {
            user,
            password,
            dbname: o.dbname.clone().or_else(|| set("PGDATABASE")),
        }
    }

    pub(crate) async fn query(&mut self, o: QueryOptions) -> Result<(), CtlError> {
        let asked = if o.ask_password {
            Some(self.prompt.secret("Password")?)
        } else {
            None
        };
        let login = self.login(&o, asked, |k| std::env::var(k).ok());
        let c = self.store.read().await?;
        if let Some(name) = &o.member {
            // An unknown name or both -r and -m: refused before anything runs.
            pick_member(&c, o.role, Some(name), self.scope)?;
        }
        let mut watching = o.watching;
        let mut failed = None;
        while watching.next_round().await {
            let (rows, error) = self.run_sql(&c, &o, &login).await;
            self.write(&render_rows(&rows, o.format, &o.delimiter))?;
            failed = error;
        }
        match failed {
            Some(e) => Err(CtlError::Failed(format!("the query failed: {e}"))),
            None => Ok(()),
        }
    }

    /// One round: the rows, or the error row and its text.
    async fn run_sql(
        &self,
        c: &Cluster,
        o: &QueryOptions,
        login: &Login,
    ) -> (Rows, Option<String>) {
        let m = match pick_member(c, o.role, o.member.as_deref(), self.scope) {
            Ok(m) => m,
            Err(e) => {
                let text = match (&o.member, o.role) {
                    (Some(name), _) => format!("No connection to member {name} is available: {e}"),
                    (None, Some(role)) => {
                        format!(
                            "No connection to role {} is available: {e}",
                            role.describe()
                        )
                    }
                    (None, None) => format!("No connection is available: {e}"),
                };
                return (Rows::error(&text), Some(text));
            }
        };
        let address = match pg_address(m) {
            Ok(a) => a,
            Err(e) => {
                let text = format!("No connection to member {} is available: {e}", m.name);
                return (Rows::error(&text), Some(text));
            }
        };
        match run_on(address, o, login).await {
            Ok(Some(rows)) => (rows, None),
            Ok(None) => {
                let text = format!(
                    "No connection to role {} is available: {} is not one (pg_is_in_recovery() says otherwise)",
                    o.role.map_or("leader", RoleFilter::describe),
                    m.name
                );
                (Rows::error(&text), Some(text))
            }
            Err(e) => {
                let text = error_text(&e);
                (Rows::error(&text), Some(format!("{}: {text}", m.name)))
            }
        }
    }
}

/// Connect to a member's PostgreSQL at `host`:`port` and run the SQL; `None` when the server's recovery state does not fit the
/// role asked for (patronictl checks `pg_is_in_recovery()` for every role but the leader's).
async fn run_on(
    (host, port): (String, u16),
    o: &QueryOptions,
    login: &Login,
) -> Result<Option<Rows>, tokio_postgres::Error> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&host)
        .port(port)
        .user(&login.user)
        .application_name("regent ctl")
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(p) = &login.password {
        cfg.password(p);
    }
    if let Some(d) = &login.dbname {
        cfg.dbname(d);
    }
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    let task = tokio::spawn(conn);
    let wanted_recovery = match o.role {
        Some(RoleFilter::Replica | RoleFilter::Standby | RoleFilter::StandbyLeader) => Some(true),
        Some(RoleFilter::Primary) => Some(false),
        _ => None,
    };
    let result = async {
        if let Some(want) = wanted_recovery {
            let row = client
                .query_one("SELECT pg_catalog.pg_is_in_recovery()", &[])
                .await?;
            if row.get::<_, bool>(0) != want {
                return Ok(None);
            }
        }
        let messages = client.simple_query(&o.sql).await?;
        Ok(Some(last_result(messages)))
    }
    .await;
    drop(client);
    task.abort();
    result
}
