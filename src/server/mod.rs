//! The HTTP side of the daemon on one port: the router (REST in rest.rs, `/metrics` in
//! prometheus.rs, `/ws` in ws.rs, the dashboard in dashboard.rs), the token check in front of
//! them, and the accept loop that bounds connections and slow request heads.

mod clips;
pub(crate) mod dashboard;
pub(crate) mod extract;
pub(crate) mod hub;
pub(crate) mod prometheus;
pub mod protocol;
pub(crate) mod rest;
pub(crate) mod state;
pub(crate) mod stats;
pub(crate) mod tls;
pub(crate) mod video;
pub(crate) mod ws;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::Semaphore;
use tokio_util::either::Either;

use crate::server::state::{ApiError, AppState};

/// Everything the daemon serves: behind the token (when one is set) the WebSocket, the REST API
/// and `/metrics` (which names every camera and its counts; Prometheus sends the token as its
/// `authorization` credentials); open: the probe `/healthz` and the dashboard, whose page asks
/// for the token itself.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let guarded = Router::new()
        .merge(crate::server::ws::routes())
        .merge(crate::server::rest::routes())
        .merge(crate::server::clips::routes())
        .route("/metrics", get(crate::server::prometheus::metrics))
        .route_layer(middleware::from_fn_with_state(
            TokenGuard(state.cfg.token.clone().map(Arc::new)),
            require_token,
        ));
    Router::new()
        .merge(guarded)
        .route("/healthz", get(crate::server::rest::healthz))
        .merge(crate::server::dashboard::routes())
        .with_state(state)
}

/// HTTP connections (not yet upgraded to WebSocket) served at once; more are closed on accept.
/// WebSocket clients count against `server.max_clients` instead, once upgraded.
pub(crate) const MAX_HTTP_CONNECTIONS: usize = 256;
/// Each connection's socket send buffer, in bytes (Linux doubles it for its bookkeeping; 512 KiB
/// holds about eight 66 KiB frames of a 768x576 camera, or two of 1080p). Left to autotuning, the
/// socket of a client that stops reading grew to 4 MiB of queued bytes here (tcp_wmem's maximum):
/// six seconds of stale video per stalled client, which the client then plays before the newest
/// frames, and 4 GiB of kernel memory with a thousand of them. Bounded, the client's task blocks
/// on its socket soon, its frame channel overflows, and it resumes from the newest frame with a
/// `lagged` count. A daemon's frames reach each client in one write either way.
pub(crate) const SEND_BUFFER: usize = 256 * 1024;
/// A client must send its whole request head within this time (slow-loris and half-open
/// connections are closed).
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until `state.shutdown` fires, then lets requests in flight finish and the WebSocket
/// clients send their close frames (at most 5 s). With
/// `tls`, every connection is HTTPS (WSS for `/ws`): a client that speaks plain HTTP fails the
/// handshake, so a token is never read off a clear connection.
///
/// axum's own `serve` sets no timer on hyper, so a connection that never finishes its request
/// head would be held forever; this loop bounds both how many connections wait and how long
/// (the TLS handshake included).
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<()> {
    let app = router(state.clone());
    serve_app(
        listener,
        app,
        state.shutdown.clone(),
        state.clients.clone(),
        state.sources.server.clone(),
        tls,
    )
    .await
}

/// The accept loop of [`serve`] for any router (the daemon's, the fleet view's): connections
/// bounded, request heads and TLS handshakes timed, `metrics` counting what is refused.
/// `clients` holds the tasks of upgraded connections, which leave hyper's connection at the
/// upgrade: at shutdown they are waited for with the requests, so each sends its close frame
/// before the process ends.
pub(crate) async fn serve_app(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: tokio_util::sync::CancellationToken,
    clients: tokio_util::task::TaskTracker,
    metrics: Arc<crate::telemetry::metrics::ServerMetrics>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<()> {
    use tower::ServiceExt as _;

    let slots = Arc::new(Semaphore::new(MAX_HTTP_CONNECTIONS));
    let conns = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, or the peer gave up before accept: not fatal.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%addr, "too many open HTTP connections; closed at once");
            continue;
        };
        let _ = stream.set_nodelay(true);
        if let Err(e) = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER) {
            tracing::debug!(%addr, error = %e, "could not set the socket send buffer");
        }
        let svc =
            app.clone()
                .map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(addr));
                    req
                });
        let svc = hyper_util::service::TowerToHyperService::new(svc);
        conns.spawn(serve_connection(
            stream,
            addr,
            svc,
            tls.clone(),
            shutdown.clone(),
            permit,
        ));
    }
    conns.close();
    clients.close();
    let closed = async {
        conns.wait().await;
        clients.wait().await;
    };
    if tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests or WebSocket clients still open after 5 s; closing them");
    }
    Ok(())
}

/// One HTTP connection (after its TLS handshake, with `tls`), with upgrades, until it ends or
/// `shutdown` (then gracefully). Holds its `permit` of the connection limit.
async fn serve_connection<S>(
    stream: tokio::net::TcpStream,
    addr: std::net::SocketAddr,
    svc: S,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: tokio_util::sync::CancellationToken,
    permit: tokio::sync::OwnedSemaphorePermit,
) where
    S: hyper::service::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = Response,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    use hyper_util::rt::{TokioIo, TokioTimer};

    let stream = match tls {
        None => Either::Left(stream),
        Some(acceptor) => {
            match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(s)) => Either::Right(s),
                Ok(Err(e)) => {
                    tracing::debug!(%addr, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%addr, "TLS handshake not finished in time; closed");
                    return;
                }
            }
        }
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%addr, error = %e, "connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
    drop(permit);
}

/// Compares without stopping at the first difference, so timing does not reveal the token.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token from `Authorization: Bearer ...` or `?token=...` (browsers cannot set headers on
/// WebSockets).
fn presented_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(t) = v.strip_prefix("Bearer ") {
            return Some(t.trim().to_string());
        }
    }
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

/// The query string without its `token` parameters (None when nothing else is left), so the
/// handlers behind the guard never see the token: their own parameters stay strict, and the token
/// cannot reach a log line or an error message of theirs.
fn without_token(query: &str) -> Option<String> {
    let mut rest = form_urlencoded::Serializer::new(String::new());
    let mut kept = 0;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k != "token" {
            rest.append_pair(&k, &v);
            kept += 1;
        }
    }
    (kept > 0).then(|| rest.finish())
}

/// The token a router's guarded routes need (none: open).
#[derive(Clone)]
pub(crate) struct TokenGuard(pub Option<Arc<crate::config::Secret>>);

/// Lets a request through when it carries the token (or none is needed), with `token` taken
/// out of its query. Layered with `middleware::from_fn_with_state(TokenGuard(..), require_token)`.
pub(crate) async fn require_token(
    State(guard): State<TokenGuard>,
    mut req: Request,
    next: Next,
) -> Response {
    if let Some(want) = &guard.0 {
        let got = presented_token(req.headers(), req.uri().query());
        if !got.is_some_and(|g| same_secret(g.as_bytes(), want.expose().as_bytes())) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a token is required: Authorization: Bearer TOKEN, or ?token=TOKEN",
            )
            .into_response();
        }
    }
    if let Some(query) = req.uri().query() {
        let path = req.uri().path();
        let path_and_query = match without_token(query) {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        let mut parts = req.uri().clone().into_parts();
        // A path and a query that came from a valid URI, re-encoded: they parse again.
        parts.path_and_query = path_and_query.parse().ok();
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::state::test_headers as headers;

    #[test]
    fn token_comes_from_bearer_header_or_query() {
        assert_eq!(
            presented_token(&headers(&[("authorization", "Bearer abc")]), None).as_deref(),
            Some("abc")
        );
        assert_eq!(
            presented_token(&HeaderMap::new(), Some("x=1&token=a%2Bb")).as_deref(),
            Some("a+b")
        );
        assert_eq!(presented_token(&HeaderMap::new(), Some("x=1")), None);
        assert!(same_secret(b"secret-token", b"secret-token"));
        assert!(!same_secret(b"secret-token", b"secret-tokex"));
        assert!(!same_secret(b"short", b"longer"));
    }

    #[test]
    fn the_token_is_taken_out_of_the_query_the_handlers_see() {
        assert_eq!(
            without_token("camera=front&token=a%2Bb&limit=5").as_deref(),
            Some("camera=front&limit=5")
        );
        assert_eq!(without_token("token=abc"), None);
        assert_eq!(without_token("token=a&token=b"), None);
        // Everything else is kept, re-encoded the same way.
        assert_eq!(
            without_token("zone=drive%20way&line=*").as_deref(),
            Some("zone=drive+way&line=*")
        );
    }
}
