//! Mutating endpoints other than switchover: `PATCH`/`PUT /config` (written to the DCS by the
//! API itself, then the HA loop is woken), and `POST`/`DELETE /restart`, `POST /reinitialize`,
//! `POST /reload`, which the HA loop carries out ([`crate::control`]); their answers are the
//! loop's [`Reply`](crate::control::Reply), returned as is.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};

use super::read::{dynamic_config, valid_config};
use super::request::{json_object, opt_bool, schedule, short};
use super::units::parse_seconds;
use super::{Answer, ApiContext, Refusal, json, merge_patch, status_code, text};
use crate::config::{ConfigError, DynamicChange, check_dynamic_change};
use crate::control::{Command, Reply, RestartRequest};
use crate::dcs::{Cluster, DcsError, EtcdDcs};

/// Why a configuration write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ConfigWriteError {
    /// The DCS has no valid `config` key to patch (Patroni answers 503).
    #[error(
        "the DCS has no valid config key to patch; write a whole configuration with PUT /config"
    )]
    NoConfig,
    /// Another writer changed the key since it was read (409).
    #[error(
        "the configuration changed in the DCS while this request was processed; read it again and retry"
    )]
    Conflict,
    /// The resulting configuration would be refused (400).
    #[error("invalid configuration: {0}")]
    Invalid(#[source] ConfigError),
    /// The DCS read or write failed (503).
    #[error("cannot write the config key: {0}")]
    Dcs(#[source] DcsError),
}

impl ConfigWriteError {
    fn status(&self) -> StatusCode {
        match self {
            ConfigWriteError::NoConfig => StatusCode::SERVICE_UNAVAILABLE,
            ConfigWriteError::Conflict => StatusCode::CONFLICT,
            ConfigWriteError::Invalid(_) => StatusCode::BAD_REQUEST,
            ConfigWriteError::Dcs(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Check a configuration about to be written. A change that leaves a problem the current
/// configuration already has (e.g. a Patroni cluster's key that Regent refuses) is not
/// blocked by it: only problems the change introduces are.
fn check_new_config(old: Option<&Value>, new: &Value) -> Result<(), ConfigWriteError> {
    match check_dynamic_change(old, new).map_err(ConfigWriteError::Invalid)? {
        DynamicChange::Valid(_) => {}
        DynamicChange::KeepsProblem(e) => {
            tracing::warn!(error = %e, "the dynamic configuration keeps a problem it already had");
        }
    }
    Ok(())
}

/// `PATCH /config` on a cluster read before: merge `patch` (RFC 7396; `null` deletes) into the
/// `config` key as read, check the result, and write it only if the key's revision is still the
/// one read. Returns the new configuration (unchanged, and nothing written, when the patch
/// changes nothing).
pub async fn patch_config(
    dcs: &EtcdDcs,
    cluster: &Cluster,
    patch: &Value,
) -> Result<Value, ConfigWriteError> {
    let (current, revision) = valid_config(cluster).ok_or(ConfigWriteError::NoConfig)?;
    let mut config = current.clone();
    if !merge_patch(&mut config, patch) {
        return Ok(config);
    }
    check_new_config(Some(current), &config)?;
    match dcs.write_config(&config, Some(revision)).await {
        Ok(true) => Ok(config),
        Ok(false) => Err(ConfigWriteError::Conflict),
        Err(e) => Err(ConfigWriteError::Dcs(e)),
    }
}

impl From<ConfigWriteError> for Refusal {
    fn from(e: ConfigWriteError) -> Refusal {
        Refusal::new(e.status(), e.to_string())
    }
}

/// `PATCH /config`.
pub(super) async fn patch(ctx: &ApiContext, headers: &HeaderMap, body: Body) -> Answer {
    let patch = Value::Object(json_object(headers, body, true).await?);
    let dcs = ctx.dcs()?;
    let cluster = ctx.read_cluster().await?;
    let config = patch_config(dcs, &cluster, &patch).await?;
    ctx.control().notify(Command::Wake);
    Ok(json(StatusCode::OK, &config))
}

/// `PUT /config`: replace the whole configuration (unconditionally, as Patroni does).
pub(super) async fn put(ctx: &ApiContext, headers: &HeaderMap, body: Body) -> Answer {
    let config = Value::Object(json_object(headers, body, true).await?);
    let dcs = ctx.dcs()?;
    let cluster = ctx.read_cluster().await?;
    let current = valid_config(&cluster).map(|(v, _)| v);
    if current == Some(&config) {
        return Ok(json(StatusCode::OK, &config));
    }
    check_new_config(current, &config)?;
    dcs.write_config(&config, None).await.map_err(|e| {
        Refusal::new(
            StatusCode::BAD_GATEWAY,
            format!("cannot write the config key: {e}"),
        )
    })?;
    ctx.control().notify(Command::Wake);
    Ok(json(StatusCode::OK, &config))
}

fn reply(r: Reply) -> Answer {
    Ok(text(status_code(r.status), r.body))
}

/// `POST /reload`: re-read the configuration file (as SIGHUP does).
pub(super) async fn reload(ctx: &ApiContext) -> Answer {
    reply(ctx.control().send(Command::Reload).await)
}

/// `DELETE /restart`: drop the scheduled restart.
pub(super) async fn cancel_restart(ctx: &ApiContext) -> Answer {
    reply(ctx.control().send(Command::CancelRestart).await)
}

/// Whether the cluster is paused: from the DCS when it answers, else from the last view.
async fn paused(ctx: &ApiContext) -> bool {
    match ctx.read_cluster().await {
        Ok(c) => dynamic_config(&c).pause == Some(true),
        Err(_) => ctx.view().paused,
    }
}

fn bad(message: String) -> Refusal {
    Refusal::bad_request(message)
}

/// The `POST /restart` body as the HA loop receives it, or the answer to a bad one.
fn restart_request(body: &Map<String, Value>) -> Result<RestartRequest, Refusal> {
    let mut req = RestartRequest::default();
    for (key, v) in body {
        match key.as_str() {
            "schedule" => {
                if let Some(s) = super::request::opt_string(body, key)? {
                    req.schedule = Some(schedule(&s, "restart")?);
                }
            }
            "role" => {
                let role = match v.as_str() {
                    Some("primary" | "master") => "primary",
                    Some("standby_leader") => "standby_leader",
                    Some("replica") => "replica",
                    _ => {
                        return Err(bad(format!(
                            "role must be primary, standby_leader or replica, not {}",
                            short(v)
                        )));
                    }
                };
                req.role = Some(role.to_string());
            }
            "postgres_version" => {
                let s = match v {
                    Value::String(s) => s.trim().to_string(),
                    Value::Number(n) => n.to_string(),
                    _ => String::new(),
                };
                if postgres_version_number(&s).is_none() {
                    return Err(bad(format!(
                        "postgres_version {} is not a PostgreSQL version; write X.Y (e.g. 15.2) or, before PostgreSQL 10, X.Y.Z (e.g. 9.6.24)",
                        short(v)
                    )));
                }
                req.postgres_version = Some(s);
            }
            "timeout" => match parse_seconds(v) {
                Some(t) if t > 0 => req.timeout = u64::try_from(t).ok(),
                _ => {
                    return Err(bad(format!(
                        "timeout must be a positive number of seconds (30, \"30s\", \"2min\"), not {}",
                        short(v)
                    )));
                }
            },
            "restart_pending" => req.restart_pending = opt_bool(body, key)?.unwrap_or(false),
            other => {
                return Err(bad(format!(
                    "unknown restart condition {other:?}; allowed: schedule, role, postgres_version, timeout, restart_pending"
                )));
            }
        }
    }
    Ok(req)
}

/// `POST /restart`: validate the conditions (Patroni's), then hand them to the HA loop.
pub(super) async fn restart(ctx: &ApiContext, headers: &HeaderMap, body: Body) -> Answer {
    let body = json_object(headers, body, false).await?;
    if body.get("schedule").is_some_and(|s| !s.is_null()) && paused(ctx).await {
        return Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Can't schedule restart in the paused state",
        ));
    }
    let req = restart_request(&body)?;
    reply(ctx.control().send(Command::Restart(req)).await)
}

/// `POST /reinitialize {"force": bool, "from_leader": bool}`: only on a replica of a cluster
/// with a leader; the HA loop does the work.
pub(super) async fn reinitialize(ctx: &ApiContext, headers: &HeaderMap, body: Body) -> Answer {
    // Other keys are ignored, as Patroni ignores them.
    let body = json_object(headers, body, false).await?;
    let force = opt_bool(&body, "force")?.unwrap_or(false);
    let from_leader = match opt_bool(&body, "from_leader")? {
        Some(b) => b,
        // Patroni's documentation spells it this way.
        None => opt_bool(&body, "from-leader")?.unwrap_or(false),
    };
    let cluster = ctx.read_cluster().await?;
    let unavailable = |m: &str| Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, m));
    match cluster.leader_name() {
        None => unavailable("Cluster has no leader, can not reinitialize"),
        Some(l) if l == ctx.settings().name => unavailable("I am the leader, can not reinitialize"),
        Some(_) => reply(
            ctx.control()
                .send(Command::Reinitialize { force, from_leader })
                .await,
        ),
    }
}

/// A `postgres_version` as PostgreSQL's `server_version_num`: `15.2` → 150002,
/// `9.6.24` → 90624. `None` unless it is `X.Y` (X ≥ 10) or `X.Y.Z`.
pub(crate) fn postgres_version_number(v: &str) -> Option<u32> {
    let parts: Vec<u32> = v
        .split('.')
        .map(|p| {
            (!p.is_empty() && p.len() <= 4 && p.bytes().all(|c| c.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
        })
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [major, minor] if *major >= 10 && *minor < 100 => Some(major * 10_000 + minor),
        [major, minor, patch] if *minor < 100 && *patch < 100 => {
            Some(major * 10_000 + minor * 100 + patch)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(body: Value) -> Result<RestartRequest, (u16, String)> {
        let map = body.as_object().cloned().unwrap_or_default();
        restart_request(&map).map_err(|r| (r.status.as_u16(), r.message))
    }

    #[test]
    fn versions() {
        assert_eq!(postgres_version_number("15.2"), Some(150_002));
        assert_eq!(postgres_version_number("16.10"), Some(160_010));
        assert_eq!(postgres_version_number("9.6.24"), Some(90_624));
        assert_eq!(postgres_version_number("15.2.1"), Some(150_201));
        for bad in [
            "", "15", "9.6", "15.x", "15.2.3.4", "+15.2", "15..2", "15.200", "99999.1",
        ] {
            assert_eq!(postgres_version_number(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn restart_conditions() {
        let future = "2099-01-01T00:00:00+00:00";
        let r = req(json!({
            "schedule": future, "role": "master", "postgres_version": "16.4",
            "timeout": "2min", "restart_pending": true
        }))
        .expect("valid");
        assert_eq!(
            r,
            RestartRequest {
                schedule: Some(future.into()),
                role: Some("primary".into()),
                postgres_version: Some("16.4".into()),
                timeout: Some(120),
                restart_pending: true,
            }
        );
        assert_eq!(req(json!({})).expect("empty"), RestartRequest::default());
        assert_eq!(req(json!({"timeout": 30})).expect("int").timeout, Some(30));
        assert_eq!(
            req(json!({"schedule": "2099-01-01T09:00:00+09:00"}))
                .expect("offset")
                .schedule
                .as_deref(),
            Some(future),
            "stored in UTC"
        );
        for (body, status) in [
            (json!({"role": "leader"}), 400),
            (json!({"role": 1}), 400),
            (json!({"postgres_version": "fifteen"}), 400),
            (json!({"timeout": 0}), 400),
            (json!({"timeout": -5}), 400),
            (json!({"timeout": "soon"}), 400),
            (json!({"timeout": true}), 400),
            (json!({"restart_pending": "maybe"}), 400),
            (json!({"reboot": true}), 400),
            (json!({"schedule": "2099-01-01T00:00:00"}), 400),
            (json!({"schedule": "2001-01-01T00:00:00+00:00"}), 422),
            (json!({"schedule": "next tuesday"}), 422),
            (json!({"schedule": 12}), 400),
        ] {
            let got = req(body.clone()).expect_err("invalid");
            assert_eq!(got.0, status, "{body}: {}", got.1);
        }
    }

    #[test]
    fn new_config_checks() {
        let ok = json!({"ttl": 30, "loop_wait": 10, "retry_timeout": 10});
        assert!(check_new_config(None, &ok).is_ok());
        let e = check_new_config(Some(&ok), &json!({"ttl": 3})).expect_err("ttl");
        assert!(e.to_string().contains("ttl = 3"), "{e}");
        let e = check_new_config(Some(&ok), &json!({"loop_wait": "soon"})).expect_err("type");
        assert!(e.to_string().contains("loop_wait"), "{e}");
        let e = check_new_config(Some(&ok), &json!({"postgresql": {"use_slots": "maybe"}}))
            .expect_err("nested");
        assert!(e.to_string().contains("postgresql.use_slots"), "{e}");
        // A timing that breaks loop_wait + 2 × retry_timeout <= ttl is taken, as Patroni takes
        // it (the node runs with fitted values).
        let patroni = json!({"ttl": 20, "loop_wait": 10, "retry_timeout": 10});
        let mut paused = patroni.clone();
        paused["pause"] = json!(true);
        assert!(check_new_config(Some(&patroni), &paused).is_ok());
        let mut shorter = patroni.clone();
        shorter["ttl"] = json!(15);
        assert!(check_new_config(Some(&patroni), &shorter).is_ok());
        // A ttl Regent cannot run with at all is still refused.
        let mut worse = patroni.clone();
        worse["ttl"] = json!(4);
        assert!(check_new_config(Some(&patroni), &worse).is_err());
    }
}
