//! `GET /failsafe` and `POST /failsafe`, failsafe mode's endpoints, as Patroni answers them:
//! the `failsafe` key from the last read (502 without one), and a leader's request to stay
//! primary while the DCS is away: `200 Accepted` with this node's received/replayed LSN in an
//! `lsn` header, `500` when this node runs as primary (or is racing for the key), `502` when
//! failsafe mode is off. An accepted request goes through the loop's
//! [`FailsafeGate`](crate::control::FailsafeGate): this node then does not race for `ttl`.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::{Answer, ApiContext, json, request, text};

/// `GET /failsafe`.
pub(super) fn get(ctx: &ApiContext) -> Response {
    let v = ctx.view();
    match &v.failsafe {
        Some(t) => json(
            StatusCode::OK,
            &serde_json::to_value(t).unwrap_or(Value::Null),
        ),
        None => text(StatusCode::BAD_GATEWAY, "Bad Gateway"),
    }
}

/// `POST /failsafe`.
pub(super) async fn post(ctx: &ApiContext, headers: &HeaderMap, body: Body) -> Answer {
    let v = ctx.view();
    if !v.failsafe_mode {
        return Ok(text(StatusCode::BAD_GATEWAY, "Bad Gateway"));
    }
    let doc = request::json_object(headers, body, true).await?;
    let Some(leader) = doc.get("name").and_then(Value::as_str) else {
        return Err(super::Refusal::bad_request(
            "the request body has no `name` (the leader sending it)",
        ));
    };
    if v.role == "primary" && v.state == "running" {
        return Ok(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Running as a leader",
        ));
    }
    if let Err(why) = ctx.control().failsafe_gate().accept(leader) {
        return Ok(text(StatusCode::INTERNAL_SERVER_ERROR, why));
    }
    let mut r = text(StatusCode::OK, "Accepted");
    let lsn = v.received_lsn.max(v.replayed_lsn).or(v.wal_flush_lsn);
    if let Some(lsn) = lsn
        && let Ok(h) = HeaderValue::from_str(&lsn.to_string())
    {
        r.headers_mut().insert("lsn", h);
    }
    Ok(r)
}
