//! `/ws`: the opening handshake (handshake.rs: the upgrade, Origin, the connection limit), one
//! task per client for the session (session.rs: subscriptions, requests, heartbeats,
//! back-pressure), and the client's socket (wire.rs).
//!
//! Each client is one task that `select!`s on its socket, its subscriptions, a ping timer and the
//! shutdown token. A client that falls behind a broadcast channel is told how much it missed
//! (`lagged`) and carries on from the newest message; a client whose socket accepts nothing for
//! `send_timeout_s` is dropped. Neither slows the pipeline or other clients.
//!
//! The upgrade is done here rather than by axum's extractor so that the client owns its socket:
//! tokio-tungstenite reads it and writes the control frames, and the daemon's own messages go out
//! through [`wire::Wire`] without a per-client copy of their payload.

mod handshake;
mod session;
mod wire;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::server::state::AppState;

/// The `/ws` route (the caller puts it behind the token check).
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/ws", get(handshake::upgrade))
}
