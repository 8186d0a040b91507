//! The REST API's server: an accept loop of its own around hyper's HTTP/1 connections, because
//! axum's `serve` has neither a header timeout nor a limit on connections, and every connection
//! costs a file descriptor that the HA loop needs for etcd, PostgreSQL and the guard.
//!
//! - At most [`MAX_CONNECTIONS`] connections are open at once. A slot is taken *before* a
//!   connection is accepted: over the cap, new clients wait in the kernel's accept queue, where
//!   they cost this process no descriptor, and are served first come, first served as slots
//!   free up.
//! - A client has [`HEADER_READ_TIMEOUT`] to send a request's headers. hyper starts that timer
//!   whenever it waits for a request, so an idle kept-alive connection is closed after the
//!   same time. A request body has `request::BODY_READ_TIMEOUT` to arrive.
//! - Over HTTPS the handshake runs inside the connection's slot, within
//!   [`tls::HANDSHAKE_TIMEOUT`].
//! - On shutdown the loop stops accepting, open connections finish their request and close,
//!   and whatever is still open after [`SHUTDOWN_GRACE`] is dropped: a client can never hold
//!   the process up.
//!
//! May touch: the listening socket and the connections it accepts; the router does the rest.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tower_service::Service as _;

use super::{ApiContext, ClientCertificate, PeerAddr, router, tls};

/// How many connections the API serves at once. Patroni serves its REST API from a pool of 5
/// threads (`restapi.thread_pool_size`); 100 leaves room for every load balancer's health
/// checks, Prometheus, patronictl and the peers' status polls of a leader race together, while
/// costing at most 100 descriptors: a tenth of the common default limit of 1,024, the rest
/// left to etcd, PostgreSQL, the guard and the policies.
pub(crate) const MAX_CONNECTIONS: usize = 100;

/// How long a client has to send a request's headers, counted from when the server starts
/// waiting for them (on a kept-alive connection: from the end of the previous answer, which
/// makes it the idle timeout too). Health checks, patronictl and peers send a request at once;
/// a few seconds are ample even across a slow network, and short enough that connections left
/// open by a broken or hostile client free their slots quickly.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long shutdown waits for requests in progress before dropping their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long the loop waits after `accept` failed (out of descriptors and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(250);

/// Serve the API on `listener` until `shutdown` completes: HTTPS when `tls` is given (see
/// [`tls::server_config`]; [`Reloader`](super::Reloader) replaces the certificate), else HTTP.
/// At most [`MAX_CONNECTIONS`] at once, each with [`HEADER_READ_TIMEOUT`] to send its headers.
pub async fn serve(
    listener: TcpListener,
    ctx: ApiContext,
    tls: Option<tls::TlsCell>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(ctx);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Dropped at shutdown: every connection then finishes its request and closes.
    let (stop, stopped) = watch::channel(());
    let mut conns = JoinSet::new();
    let mut full = false;
    tokio::pin!(shutdown);
    loop {
        while conns.try_join_next().is_some() {}
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                full = false;
                slot
            }
            Err(_) => {
                if !full {
                    tracing::warn!(
                        max = MAX_CONNECTIONS,
                        "the REST API has {MAX_CONNECTIONS} connections open: new ones wait until one closes"
                    );
                    full = true;
                }
                tokio::select! {
                    _ = &mut shutdown => break,
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                }
            }
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "the REST API cannot accept a connection");
                    drop(slot);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        conns.spawn(connection(
            tcp,
            peer,
            app.clone(),
            tls.clone(),
            stopped.clone(),
            slot,
        ));
    }
    drop(listener);
    drop(stop);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            open = conns.len(),
            "closing the REST API connections still open at shutdown"
        );
    }
    // Dropping the set aborts what is left.
    Ok(())
}

/// One connection, in its slot (released when this returns): the TLS handshake if any, then
/// HTTP/1 until the client closes, a timeout fires or the server shuts down.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    tls: Option<tls::TlsCell>,
    mut stopped: watch::Receiver<()>,
    _slot: OwnedSemaphorePermit,
) {
    let Some(cell) = tls else {
        return http(tcp, peer, false, app, stopped).await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(cell.get());
    let handshake = tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
    let stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "REST API TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "REST API TLS handshake timed out");
                return;
            }
        },
        _ = stopped.changed() => return,
    };
    // Only a certificate the verifier accepted gets here (`restapi.verify_client`).
    let client_cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .is_some_and(|c| !c.is_empty());
    http(stream, peer, client_cert, app, stopped).await
}

/// Serve HTTP/1 on `io`; every request carries the client's address ([`PeerAddr`]) and
/// whether it presented a verified certificate ([`ClientCertificate`]).
async fn http<I>(
    io: I,
    peer: SocketAddr,
    client_cert: bool,
    app: Router,
    mut stopped: watch::Receiver<()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(PeerAddr(peer)));
        req.extensions_mut().insert(ClientCertificate(client_cert));
        app.clone().call(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut stopping = false;
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            _ = stopped.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "REST API connection closed");
    }
}
