//! `ocellus fleet`: many boxes in one view, built on the broker they already publish to. It
//! reads `<prefix>/#` with a persistent session, keeps every device's state, events, snapshots
//! and counters in a database of its own (docs/fleet.md), and serves the fleet dashboard, its
//! REST API and `/ws` on its own port (HTTPS with `server.tls_cert`, behind `server.token`).

mod ingest;
mod web;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use thiserror::Error;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, MqttUrlError};
use crate::db;
use crate::db::fleet::FleetWrite;
use crate::db::DbError;
use crate::server::tls::{ServerCert, TlsError};

#[derive(Debug, Error)]
pub enum FleetError {
    #[error("the fleet view reads the boxes from a broker: set [mqtt] url (and topic_prefix, if the boxes use another than \"ocellus\")")]
    NoBroker,
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("mqtt.url: {0}")]
    Url(#[from] MqttUrlError),
    #[error("server.tls_cert/tls_key: {0}")]
    Tls(TlsError),
    #[error("mqtt TLS (ca_file, client_cert, client_key): {0}")]
    MqttTls(TlsError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A started fleet view: its database open and its writer running, not yet serving.
pub struct Fleet {
    state: Arc<web::FleetState>,
    token: crate::server::TokenGuard,
    tls: Option<Arc<ServerCert>>,
    opts: rumqttc::MqttOptions,
    prefix: String,
    writes: tokio::sync::mpsc::Sender<(FleetWrite, ingest::Ack)>,
    acks: tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish>,
    writer: std::thread::JoinHandle<()>,
    /// Cancelled when the stop comes: the subscriber stops reading and the writer gives up a
    /// commit that keeps failing (a full disk) instead of retrying it.
    stopping: CancellationToken,
}

/// Messages waiting for the writer; the subscriber waits (and the broker keeps them) beyond.
const WRITE_QUEUE: usize = 4096;

impl Fleet {
    /// Checks the TLS files, opens the database and starts its writer.
    pub fn start(cfg: &Config) -> Result<Fleet, FleetError> {
        let m = cfg.mqtt.as_ref().ok_or(FleetError::NoBroker)?;
        let tls = ServerCert::from_config(&cfg.server).map_err(FleetError::Tls)?;
        let mqtt_tls = crate::server::tls::mqtt_tls(m).map_err(FleetError::MqttTls)?;
        // One fleet view per client id: the broker keeps its session under that name.
        let client_id = format!("ocellus-fleet-{}", crate::mqtt::safe_id(&m.device()));
        let opts = ingest::options(m, &client_id, mqtt_tls)?;
        let conn = db::fleet::open(&cfg.storage.path)?;
        let (feed, _) = broadcast::channel(1024);
        let (writes, rx) = tokio::sync::mpsc::channel(WRITE_QUEUE);
        let (ack_tx, acks) = tokio::sync::mpsc::unbounded_channel();
        let line_feed = feed.clone();
        let stopping = CancellationToken::new();
        let writer = db::fleet::spawn_writer(
            conn,
            rx,
            move |batch| {
                // The lines are built only while a dashboard listens.
                let listening = line_feed.receiver_count() > 0;
                for (w, ack) in batch {
                    if let Some(p) = ack {
                        let _ = ack_tx.send(p);
                    }
                    if listening {
                        let _ = line_feed.send(Utf8Bytes::from(feed_line(&w).to_string()));
                    }
                }
            },
            stopping.clone(),
        )?;
        let state = Arc::new(web::FleetState {
            readers: Arc::new(db::ReadPool::new(&cfg.storage.path, 4)),
            feed,
            ingest: Arc::new(ingest::IngestStats::default()),
            broker: m.url.clone(),
            started: Instant::now(),
            shutdown: CancellationToken::new(),
            clients: TaskTracker::new(),
        });
        Ok(Fleet {
            state,
            token: crate::server::TokenGuard(cfg.server.token.clone().map(Arc::new)),
            tls,
            opts,
            prefix: m.topic_prefix.clone(),
            writes,
            acks,
            writer,
            stopping,
        })
    }

    /// `https` when the port serves TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        crate::server::tls::scheme(self.tls.as_deref())
    }

    /// Reads the broker and serves on `listener` until `stop`; then stops reading, lets the
    /// writer commit what it holds (what it could not acknowledge comes again from the
    /// session) and closes the dashboards' sockets.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        stop: CancellationToken,
    ) -> Result<(), FleetError> {
        let state = self.state.clone();
        let ingest = tokio::spawn(ingest::run(
            self.opts,
            self.prefix,
            state.broker.clone(),
            self.writes,
            self.acks,
            state.ingest.clone(),
            self.stopping.clone(),
        ));
        let app = web::router(state.clone(), self.token);
        let acceptor = self.tls.as_ref().map(|c| c.acceptor());
        let server = tokio::spawn(crate::server::serve_app(
            listener,
            app,
            state.shutdown.clone(),
            state.clients.clone(),
            Arc::new(crate::telemetry::metrics::ServerMetrics::default()),
            acceptor,
        ));
        let reload = tokio::spawn(crate::server::tls::reload_on_sighup(self.tls.clone()));
        crate::cmd::systemd::ready("fleet view serving");
        stop.cancelled().await;
        crate::cmd::systemd::stopping();
        reload.abort();
        self.stopping.cancel();
        let _ = ingest.await;
        let writer = self.writer;
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        state.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        tracing::info!("fleet view stopped");
        Ok(())
    }
}

/// What `/ws` tells the dashboards of a stored message: enough to know what to reload.
fn feed_line(w: &FleetWrite) -> serde_json::Value {
    match w {
        FleetWrite::Event {
            device,
            kind,
            event,
        } => serde_json::json!({"type": "event", "device": device, "kind": kind, "event": event}),
        FleetWrite::Place { device, camera, .. } | FleetWrite::Snapshot { device, camera, .. } => {
            serde_json::json!({"type": "place", "device": device, "camera": camera})
        }
        FleetWrite::Available { device, .. }
        | FleetWrite::Stats { device, .. }
        | FleetWrite::Info { device, .. } => {
            serde_json::json!({"type": "device", "device": device})
        }
    }
}
