//! Fuzz the REST API's request handling: the input is read as
//! `<method byte><path>\n<header lines>\n\n<body>` and sent through the router (no network).
//! Every request must get a sensible status, and JSON answers must be JSON; a panic is a bug.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Method, Request, header};
use libfuzzer_sys::fuzz_target;
use regent::api::{ApiContext, ApiSettings, ClientOptions, LocalSnapshot, PeerAddr, PeerClient, router};
use regent::control::{Command, Reply};
use tower::ServiceExt as _;

const SENSIBLE: &[u16] = &[
    200, 202, 400, 401, 403, 404, 409, 411, 412, 413, 422, 500, 501, 502, 503,
];

const METHODS: &[&str] = &[
    "GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "TRACE",
];

struct Fixture {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _guard = rt.enter();
        let view = LocalSnapshot {
            scope: "demo".into(),
            name: "node1".into(),
            version: "0.1.0".into(),
            state: "running".into(),
            role: "primary".into(),
            holds_lock: true,
            server_version: Some(160_004),
            timeline: Some(3),
            wal_flush_lsn: Some(0x5000_0060),
            dcs_reachable: true,
            ttl: 30,
            loop_wait: 10,
            ..LocalSnapshot::default()
        };
        let (tx, rx) = tokio::sync::watch::channel(view);
        std::mem::forget(tx);
        let (control, mut control_rx) = regent::control::channel();
        rt.spawn(async move {
            while let Some((cmd, reply)) = control_rx.recv().await {
                let answer = match cmd {
                    Command::Reload => Reply::new(202, "reload scheduled"),
                    _ => Reply::new(503, "fuzzing"),
                };
                let _ = reply.send(answer);
            }
        });
        let peers = PeerClient::new(&ClientOptions::default()).expect("client");
        let app = router(ApiContext::new(
            ApiSettings::new("node1", "demo"),
            rx,
            control,
            None,
            peers,
        ));
        Fixture { rt, app }
    })
}

fn request(data: &[u8]) -> Option<Request<Body>> {
    let (&m, rest) = data.split_first()?;
    let method = Method::from_bytes(METHODS[usize::from(m) % METHODS.len()].as_bytes()).ok()?;
    let nl = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
    let path = std::str::from_utf8(&rest[..nl]).ok()?;
    let rest = rest.get(nl + 1..).unwrap_or_default();
    let mut b = Request::builder().method(method).uri(format!("/{path}"));
    let body: &[u8];
    let mut lines = rest;
    loop {
        let end = lines
            .iter()
            .position(|&c| c == b'\n')
            .unwrap_or(lines.len());
        let line = &lines[..end];
        lines = lines.get(end + 1..).unwrap_or_default();
        if line.is_empty() {
            body = lines;
            break;
        }
        let colon = line.iter().position(|&c| c == b':')?;
        let name = HeaderName::from_bytes(&line[..colon]).ok()?;
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
        b = b.header(name, value);
    }
    let mut req = b.body(Body::from(body.to_vec())).ok()?;
    req.extensions_mut()
        .insert(ConnectInfo(PeerAddr(SocketAddr::from((
            [127, 0, 0, 1],
            4000,
        )))));
    Some(req)
}

fuzz_target!(|data: &[u8]| {
    let Some(req) = request(data) else {
        return;
    };
    let f = fixture();
    let resp =
        f.rt.block_on(f.app.clone().oneshot(req))
            .expect("infallible");
    let status = resp.status().as_u16();
    assert!(SENSIBLE.contains(&status), "status {status}");
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|c| c == "application/json");
    let bytes =
        f.rt.block_on(axum::body::to_bytes(resp.into_body(), 8 << 20))
            .expect("body");
    if json {
        assert!(
            serde_json::from_slice::<serde_json::Value>(&bytes).is_ok(),
            "not JSON: {bytes:?}"
        );
    }
});
