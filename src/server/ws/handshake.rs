//! The WebSocket opening handshake: a version-13 upgrade with a valid key, from an allowed
//! Origin, within the connection limit; then the client's session on its own task.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request as HttpRequest, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self};
use tokio_tungstenite::WebSocketStream;

use super::wire::Wire;

use crate::server::state::{ApiError, AppState};

use super::session::Client;

/// Read buffer per client. Clients send small JSON requests and pongs; tungstenite zero-fills
/// the free part of this buffer on every read attempt, and this task attempts a read each time
/// it wakes for a frame, so the default 128 KiB cost a 128 KiB memset per frame per client (a
/// fifth of the daemon's CPU with 100 clients). Larger messages, up to `max_message_bytes`,
/// still arrive: the buffer grows to the length a frame header announces.
const READ_BUFFER: usize = 4096;

/// Whether a browser page from `origin` may open `/ws`: the daemon's own page (same host and
/// port as the request), or one of `allowed_origins`. Clients that send no Origin (not browsers)
/// are allowed; the token is their gate.
pub(crate) fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if allowed.iter().any(|a| a.trim_end_matches('/') == origin) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'));
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

/// Checks done before a WebSocket upgrade: Origin, shutdown, client limit. On success the
/// permit holds the client's slot for as long as it is connected.
pub(crate) fn check_upgrade(
    state: &AppState,
    headers: &HeaderMap,
    addr: SocketAddr,
) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    if !origin_allowed(headers, &state.cfg.allowed_origins) {
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .unwrap_or("(none)");
        tracing::warn!(%addr, origin, "refused /ws from {addr}: foreign origin {origin}");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            "this origin may not open /ws",
        ));
    }
    if state.shutdown.is_cancelled() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the daemon is stopping",
        ));
    }
    state.client_slots.clone().try_acquire_owned().map_err(|_| {
        state
            .metrics()
            .clients_refused
            .fetch_add(1, Ordering::Relaxed);
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_clients",
            format!("at most {} clients", state.cfg.max_clients),
        )
    })
}

pub(crate) async fn upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    mut req: HttpRequest,
) -> Response {
    let accept = match accept_key(req.headers()) {
        Ok(key) => key,
        Err(refusal) => return refusal.into_response(),
    };
    let permit = match check_upgrade(&state, req.headers(), addr) {
        Ok(p) => p,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "not_upgradable",
            "this connection cannot be upgraded to a WebSocket",
        )
        .into_response();
    };
    let max = state.cfg.max_message_bytes;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .read_buffer_size(READ_BUFFER);
    let clients = state.clients.clone();
    clients.spawn(async move {
        let io = match on_upgrade.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(e) => {
                tracing::debug!(%addr, error = %e, "websocket upgrade failed");
                return;
            }
        };
        let socket =
            WebSocketStream::from_raw_socket(Wire::new(io), Role::Server, Some(config)).await;
        let m = &state.metrics();
        m.clients.fetch_add(1, Ordering::Relaxed);
        m.clients_total.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%addr, "client connected");
        Client::new(state.clone(), addr).run(socket).await;
        state.metrics().clients.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(%addr, "client gone");
        drop(permit);
    });
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, HeaderValue::from_static("upgrade")),
            (header::UPGRADE, HeaderValue::from_static("websocket")),
            (header::SEC_WEBSOCKET_ACCEPT, accept),
        ],
    )
        .into_response()
}

/// Why a request to `/ws` is not an opening handshake the daemon takes.
#[derive(Debug, PartialEq)]
enum BadHandshake {
    /// Not a WebSocket upgrade at all, or one without its key (`400`).
    NotWebSocket(&'static str),
    /// A WebSocket version other than 13 (`426`, naming 13 as RFC 6455, 4.4 asks).
    Version,
}

impl IntoResponse for BadHandshake {
    fn into_response(self) -> Response {
        match self {
            BadHandshake::NotWebSocket(what) => {
                ApiError::new(StatusCode::BAD_REQUEST, "not_websocket", what).into_response()
            }
            BadHandshake::Version => {
                let mut r = ApiError::new(
                    StatusCode::UPGRADE_REQUIRED,
                    "websocket_version",
                    "only WebSocket version 13 is spoken",
                )
                .into_response();
                r.headers_mut().insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
                r
            }
        }
    }
}

/// The `Sec-WebSocket-Accept` answering a valid RFC 6455 opening handshake, or why it is not one.
fn accept_key(headers: &HeaderMap) -> Result<HeaderValue, BadHandshake> {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has(header::CONNECTION, "upgrade") || !has(header::UPGRADE, "websocket") {
        return Err(BadHandshake::NotWebSocket(
            "/ws takes a WebSocket upgrade (Connection: upgrade, Upgrade: websocket)",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(BadHandshake::Version);
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(BadHandshake::NotWebSocket("Sec-WebSocket-Key is missing"));
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    HeaderValue::from_str(&accept).map_err(|_| BadHandshake::NotWebSocket("bad Sec-WebSocket-Key"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::state::test_headers as headers;

    fn upgrade_request(headers: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    const UPGRADE: [(&str, &str); 4] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn a_valid_handshake_gets_the_rfc_accept_key() {
        // RFC 6455, 1.3: this key's answer.
        let accept = accept_key(&upgrade_request(&UPGRADE)).unwrap();
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn what_is_not_a_version_13_upgrade_is_refused_with_a_reason() {
        let without = |name: &str| -> Vec<(&str, &str)> {
            UPGRADE
                .iter()
                .copied()
                .filter(|(k, _)| *k != name)
                .collect()
        };
        for missing in ["connection", "upgrade", "sec-websocket-key"] {
            let r = accept_key(&upgrade_request(&without(missing))).unwrap_err();
            assert!(
                matches!(r, BadHandshake::NotWebSocket(_)),
                "without {missing}"
            );
            assert_eq!(r.into_response().status(), StatusCode::BAD_REQUEST);
        }
        let mut v8 = without("sec-websocket-version");
        v8.push(("sec-websocket-version", "8"));
        for headers in [v8, without("sec-websocket-version")] {
            let r = accept_key(&upgrade_request(&headers)).unwrap_err();
            assert_eq!(r, BadHandshake::Version);
            let r = r.into_response();
            assert_eq!(r.status(), StatusCode::UPGRADE_REQUIRED);
            assert_eq!(r.headers()[header::SEC_WEBSOCKET_VERSION], "13");
        }
    }

    #[test]
    fn origin_must_match_the_host_or_the_allow_list() {
        assert!(origin_allowed(&headers(&[("host", "box:8080")]), &[]));
        assert!(origin_allowed(
            &headers(&[("host", "box:8080"), ("origin", "http://box:8080")]),
            &[]
        ));
        assert!(!origin_allowed(
            &headers(&[("host", "box:8080"), ("origin", "http://evil.example")]),
            &[]
        ));
        assert!(origin_allowed(
            &headers(&[("host", "box:8080"), ("origin", "https://ops.example")]),
            &["https://ops.example/".to_string()]
        ));
    }
}
