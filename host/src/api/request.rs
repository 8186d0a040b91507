//! Reading request bodies: JSON objects of bounded size, with Patroni's status codes (411 without
//! a length, 400 for anything that is not a JSON object) and a message saying what is wrong.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Map, Value};

use super::Refusal;
use crate::time::{TimestampError, parse_timestamp};

/// The largest request body accepted (a dynamic configuration is a few kB).
pub(super) const MAX_BODY: usize = 1 << 20;

/// How long a request body (at most [`MAX_BODY`]) has to arrive once the headers are in: a
/// client that stops sending it must not hold its connection's slot.
pub(super) const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

fn bad_request(message: impl Into<String>) -> Refusal {
    Refusal::bad_request(message)
}

/// The JSON object in the body. Without a body (no `Content-Length`, or an empty one), an
/// optional body is an empty object; a required one is refused (411, or 400 when empty).
pub(super) async fn json_object(
    headers: &HeaderMap,
    body: Body,
    required: bool,
) -> Result<Map<String, Value>, Refusal> {
    if !has_length(headers) {
        if required {
            require_length(headers)?;
        }
        return Ok(Map::new());
    }
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        match len.to_str().ok().and_then(|l| l.trim().parse::<u64>().ok()) {
            Some(n) if n > MAX_BODY as u64 => return Err(too_large()),
            Some(_) => {}
            None => return Err(bad_request("the Content-Length header is not a number")),
        }
    }
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, MAX_BODY));
    let Ok(read) = read.await else {
        return Err(Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        ));
    };
    let bytes = read.map_err(|e| {
        let inner = e.into_inner();
        if inner
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            too_large()
        } else {
            bad_request(format!("the request body could not be read: {inner}"))
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        if required {
            return Err(bad_request("the request body is empty; send a JSON object"));
        }
        return Ok(Map::new());
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| bad_request(format!("the request body is not valid UTF-8: {e}")))?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| bad_request(format!("the request body is not valid JSON: {e}")))?;
    match value {
        Value::Object(m) if m.is_empty() && required => Err(bad_request(
            "the request body is an empty JSON object; send at least one key",
        )),
        Value::Object(m) => Ok(m),
        other => Err(bad_request(format!(
            "the request body must be a JSON object, not {}",
            kind(&other)
        ))),
    }
}

fn has_length(headers: &HeaderMap) -> bool {
    headers.contains_key(header::CONTENT_LENGTH) || headers.contains_key(header::TRANSFER_ENCODING)
}

/// A body must be sent (411 without a length, as Patroni answers), though it may be empty.
pub(super) fn require_length(headers: &HeaderMap) -> Result<(), Refusal> {
    if has_length(headers) {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::LENGTH_REQUIRED,
            "a Content-Length header is required: send the JSON body with its length",
        ))
    }
}

fn too_large() -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than {MAX_BODY} bytes"),
    )
}

/// What a JSON value is, for messages.
pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An optional string field; `null` and `""` count as absent (as Patroni treats them).
pub(super) fn opt_string(body: &Map<String, Value>, key: &str) -> Result<Option<String>, Refusal> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad_request(format!(
            "{key} must be a string, not {}",
            kind(other)
        ))),
    }
}

/// An optional boolean field (Patroni's `parse_bool` spellings); `null` counts as absent.
pub(super) fn opt_bool(body: &Map<String, Value>, key: &str) -> Result<Option<bool>, Refusal> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => super::units::parse_bool(v).map(Some).ok_or_else(|| {
            bad_request(format!(
                "{key} must be a boolean (true or false), not {}",
                short(v)
            ))
        }),
    }
}

/// A value for a message, cut to a readable length.
pub(super) fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// A schedule (`scheduled_at` of a switchover, `schedule` of a restart) as it is stored: RFC 3339
/// in UTC. Refused as Patroni refuses it: without a time zone (400), unreadable or in the past
/// (422).
pub(super) fn schedule(s: &str, action: &str) -> Result<String, Refusal> {
    // Patroni's texts, word for word: tools match on them.
    match parse_timestamp(s) {
        Ok(t) if t < crate::time::now() => Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Cannot schedule {action} in the past"),
        )),
        Ok(t) => Ok(t.to_rfc3339()),
        Err(TimestampError::NoTimezone) => Err(bad_request(format!(
            "Timezone information is mandatory for the scheduled {action}"
        ))),
        Err(TimestampError::Unparsable) => Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601",
        )),
    }
}
