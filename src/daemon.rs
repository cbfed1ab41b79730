//! `ocellus run`: starts storage, one capture + detect + encode thread trio per camera, the
//! stats task and the server, and stops them in an order that loses nothing.
//!
//! Shutdown order: stop capture and detection (which ends open events and broadcasts their
//! ends), flush the database, then close client connections with 1001 and stop the server.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use thiserror::Error;
use tokio::sync::{broadcast, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::capture::live::{self, FrameSlot, SourceState};
use crate::capture::Source;
use crate::config::Config;
use crate::db::{self, DbHandle, ReadPool, WriterOptions};
use crate::detect;
use crate::errors::{DbError, DetectError};
use crate::events::EventIds;
use crate::hub::{self, CameraHub, LiveSink};
use crate::metrics::CameraStats;
use crate::pipeline::Pipeline;
use crate::state::{AppState, ServerMetrics};

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("camera {camera}: {source}")]
    Detector {
        camera: String,
        #[source]
        source: DetectError,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("OpenCV: {0}")]
    OpenCv(#[from] opencv::Error),
}

struct CameraThreads {
    id: String,
    capture: JoinHandle<()>,
    detect: JoinHandle<()>,
    encoder: JoinHandle<()>,
}

/// A started daemon: storage open, pipelines running, not yet serving.
pub struct Daemon {
    pub state: Arc<AppState>,
    cameras: Vec<CameraThreads>,
    db: DbHandle,
    writer: JoinHandle<()>,
    pipelines_stop: CancellationToken,
    db_path: PathBuf,
    /// The MQTT client, started with the server.
    mqtt: Option<crate::mqtt::Client>,
}

impl Daemon {
    /// Opens the database, loads a detector per camera and starts the camera threads. Fails
    /// before starting anything on a bad database or model.
    pub fn start(cfg: &Config) -> Result<Daemon, DaemonError> {
        let enabled: Vec<_> = cfg.cameras.iter().filter(|c| c.enabled).collect();
        let enabled_ids: Vec<String> = enabled.iter().map(|c| c.id.clone()).collect();
        // Load every detector before anything is created: a broken model stops the start.
        let mut detectors = Vec::new();
        for cam in &enabled {
            let d = detect::build(&cfg.detector).map_err(|source| DaemonError::Detector {
                camera: cam.id.clone(),
                source,
            })?;
            detectors.push(d);
        }
        let db_path = cfg.storage.path.clone();
        let mut writer_opts = WriterOptions::from_config(&cfg.storage, true);
        writer_opts.outbox = cfg.mqtt.as_ref().map(|m| crate::db::OutboxLimits {
            max_messages: m.outbox_max_messages,
            max_age_ms: m.outbox_max_age_h as i64 * 3_600_000,
        });
        let mqtt_topics = cfg.mqtt.as_ref().map(crate::mqtt::Topics::new);
        let storage = db::start(&db_path, writer_opts)?;
        let ids = EventIds::after(storage.max_event_id);
        let (db, writer, writer_stats) = (storage.handle, storage.thread, storage.stats);

        let (events_tx, _) = broadcast::channel::<Utf8Bytes>(hub::MESSAGE_CAPACITY);
        let pipelines_stop = CancellationToken::new();
        let mut hubs = Vec::new();
        let mut threads = Vec::new();
        for (cam, detector) in enabled.into_iter().zip(detectors) {
            let name = cam.name.clone().unwrap_or_else(|| cam.id.clone());
            let state = Arc::new(
                SourceState::new(&cam.id, &name)
                    .with_masks(cam.object_masks.clone(), cam.motion_masks.clone())
                    .with_zones(crate::protocol::Shape::of(cam)),
            );
            let stats = Arc::new(CameraStats::default());
            let info = detector.as_ref().map(|d| d.info());
            match &info {
                Some(info) => {
                    tracing::info!(camera = %cam.id, runtime = info.runtime, provider = info.provider, "camera {} detector: {info}", cam.id)
                }
                None => {
                    tracing::info!(camera = %cam.id, "camera {} has no object detector (detector.kind = \"none\"): motion only", cam.id)
                }
            }
            let hub = Arc::new(CameraHub::new(&cam.id, state.clone(), stats.clone(), info));
            let slot = Arc::new(FrameSlot::default());
            let (encoder, encoder_join) =
                hub::spawn_encoder(hub.clone(), cfg.server.stream_quality)?;
            let capture = {
                let opts = crate::capture::SourceOptions::from_camera(cam);
                let (source, slot, state, stats, stop) = (
                    Source::parse(&cam.source),
                    slot.clone(),
                    state.clone(),
                    stats.clone(),
                    pipelines_stop.clone(),
                );
                // `encoder` moves into the capture thread and drops when it ends, which ends
                // the encoder thread.
                std::thread::Builder::new()
                    .name(format!("cam-{}", cam.id))
                    .spawn(move || {
                        live::run_capture(source, opts, slot, state, stats, stop, |f| {
                            encoder.offer(f)
                        })
                    })?
            };
            let sink = LiveSink {
                hub: hub.clone(),
                events: events_tx.clone(),
            };
            let mut pipeline = Pipeline::new(
                &cam.id,
                cfg,
                detector,
                ids.clone(),
                Some(db.clone()),
                Box::new(sink),
                stats.clone(),
            )?;
            if let Some(t) = &mqtt_topics {
                pipeline = pipeline.with_outbox(t.events());
            }
            let detect = {
                let stop = pipelines_stop.clone();
                std::thread::Builder::new()
                    .name(format!("detect-{}", cam.id))
                    .spawn(move || pipeline.run(&*slot, &stop, |_| {}))?
            };
            let source = Source::parse(&cam.source).display_name();
            tracing::info!(camera = %cam.id, source = %source, state = "connecting", "camera {} starting: {source}", cam.id);
            hubs.push(hub);
            threads.push(CameraThreads {
                id: cam.id.clone(),
                capture,
                detect,
                encoder: encoder_join,
            });
        }
        if hubs.is_empty() {
            tracing::warn!(
                "no enabled cameras in the config; serving the API and stored events only"
            );
        }

        let mqtt = match (&cfg.mqtt, mqtt_topics) {
            (Some(m), Some(topics)) => {
                let labels: Vec<String> = if cfg.detector.labels_allow.is_empty() {
                    vec!["person".into()]
                } else {
                    cfg.detector.labels_allow.clone()
                };
                tracing::info!(broker = %m.url, topics = %topics.base, "MQTT: publishing to {} under {}/", m.url, topics.base);
                Some(crate::mqtt::Client {
                    cfg: m.clone(),
                    topics,
                    cameras: enabled_ids
                        .iter()
                        .map(|id| (id.clone(), labels.clone()))
                        .collect(),
                    stats: Arc::new(crate::mqtt::MqttStats::default()),
                    db: db.clone(),
                })
            }
            _ => None,
        };
        let state = Arc::new(AppState {
            client_slots: Arc::new(Semaphore::new(cfg.server.max_clients)),
            cfg: cfg.server.clone(),
            cameras: hubs,
            events: events_tx,
            stats: broadcast::channel(16).0,
            readers: Arc::new(ReadPool::new(&db_path, 4)),
            writer: writer_stats,
            metrics: ServerMetrics::default(),
            started: Instant::now(),
            latest_stats: std::sync::Mutex::new(None),
            shutdown: CancellationToken::new(),
            mqtt: mqtt.as_ref().map(|m| (m.stats.clone(), m.cfg.url.clone())),
        });
        Ok(Daemon {
            state,
            cameras: threads,
            db,
            writer,
            pipelines_stop,
            db_path,
            mqtt,
        })
    }

    /// Serves on `listener` until `stop` fires, then shuts down in order. Tells systemd READY=1
    /// once serving, keeps its watchdog fed while frames flow, and says STOPPING=1 at the end.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        stop: CancellationToken,
    ) -> Result<(), DaemonError> {
        let state = self.state.clone();
        let stats_task = tokio::spawn(stats_loop(state.clone()));
        let mqtt_stop = CancellationToken::new();
        let mqtt_task = self
            .mqtt
            .map(|m| tokio::spawn(m.run(state.clone(), mqtt_stop.clone())));
        let server = tokio::spawn(crate::server::serve(listener, state.clone()));
        // The database is open (start) and the port is bound (the caller's listener).
        crate::systemd::ready(&crate::systemd::status_line(&state));
        let watchdog = tokio::spawn(crate::systemd::watchdog_loop(state.clone()));
        stop.cancelled().await;
        crate::systemd::stopping();
        watchdog.abort();
        tracing::info!("stopping: ending capture and open events");

        self.pipelines_stop.cancel();
        let cameras = self.cameras;
        let db = self.db;
        tokio::task::spawn_blocking(move || {
            for c in cameras {
                for (what, h) in [
                    ("capture", c.capture),
                    ("detect", c.detect),
                    ("encoder", c.encoder),
                ] {
                    if h.join().is_err() {
                        tracing::error!(camera = %c.id, thread = what, "thread panicked");
                    }
                }
            }
            if let Err(e) = db.flush() {
                tracing::error!(error = %e, "final database flush failed");
            }
            drop(db);
        })
        .await
        .ok();
        tracing::info!(db = %self.db_path.display(), "events flushed; closing client connections");
        if let Some(task) = mqtt_task {
            // It sends what the outbox holds for a few seconds, then says offline.
            mqtt_stop.cancel();
            if tokio::time::timeout(Duration::from_secs(8), task)
                .await
                .is_err()
            {
                tracing::warn!("MQTT: did not finish within 8 s");
            }
        }

        state.shutdown.cancel();
        stats_task.abort();
        match tokio::time::timeout(Duration::from_secs(5), server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "server error"),
            Ok(Err(e)) => tracing::error!(error = %e, "server task failed"),
            Err(_) => tracing::warn!("clients did not close within 5 s"),
        }
        let writer = self.writer;
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .ok();
        tracing::info!("ocellus stopped");
        Ok(())
    }
}

/// How often a detector that is not the configured one (a missing model) is said again in the
/// log, so that it is not lost in a long journal.
const WARN_AGAIN_S: u64 = 300;

async fn stats_loop(state: Arc<AppState>) {
    let (_, mut prev) = state.take_stats(None);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut seconds = 0u64;
    loop {
        tick.tick().await;
        seconds += 1;
        if seconds.is_multiple_of(WARN_AGAIN_S) {
            for c in &state.cameras {
                if let Some(w) = c.detector.as_ref().and_then(|d| d.warning.as_ref()) {
                    tracing::warn!(camera = %c.id, "camera {}: {w}", c.id);
                }
            }
        }
        let (snapshot, now) = state.take_stats(Some(&prev));
        match serde_json::to_string(&snapshot) {
            Ok(json) => {
                let _ = state.stats.send(Utf8Bytes::from(json));
            }
            Err(e) => tracing::error!(error = %e, "cannot serialise the stats"),
        }
        *state.latest_stats.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(snapshot));
        prev = now;
    }
}
