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
use tokio::sync::{broadcast, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::Bus;
use crate::capture::live::{self, FrameSlot, SourceState};
use crate::capture::packets::PacketTx;
use crate::capture::Source;
use crate::config::{CameraConfig, Config};
use crate::db::{self, DbError, DbHandle, ReadPool, WriterOptions, WriterStats};
use crate::pipeline::detect::{self, DetectError, ObjectDetector};
use crate::pipeline::events::EventIds;
use crate::pipeline::values::EventMsg;
use crate::pipeline::Pipeline;
use crate::record::{ClipCamera, Input, RecorderSettings, Recordings};
use crate::server::hub::{CameraHub, Overlay, MESSAGE_CAPACITY};
use crate::server::state::AppState;
use crate::server::stats::{Sources, StatsSnapshot};
use crate::server::tls::ServerCert;
use crate::server::video::LiveVideo;
use crate::telemetry::metrics::{CameraStats, MqttStats, ServerMetrics};

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
    #[error("server.tls_cert/tls_key: {0}")]
    Tls(#[from] crate::server::tls::TlsError),
    #[error("mqtt TLS (ca_file, client_cert, client_key): {0}")]
    MqttTls(crate::server::tls::TlsError),
}

struct CameraThreads {
    id: String,
    capture: JoinHandle<()>,
    detect: JoinHandle<()>,
    encoder: JoinHandle<()>,
    /// The camera's recorder, when it records.
    recorder: Option<JoinHandle<()>>,
}

/// A started daemon: storage open, pipelines running, not yet serving.
pub struct Daemon {
    pub state: Arc<AppState>,
    cameras: Vec<CameraThreads>,
    db: DbHandle,
    writer: JoinHandle<()>,
    pipelines_stop: CancellationToken,
    db_path: PathBuf,
    /// The MQTT client, started with the server, and its event receiver (subscribed before
    /// the pipelines start, so it misses nothing).
    mqtt: Option<(crate::mqtt::Client, broadcast::Receiver<Arc<EventMsg>>)>,
    /// The first event id of this run.
    first_event_id: i64,
    /// The stats task's output, until it starts.
    latest_stats: watch::Sender<Arc<StatsSnapshot>>,
    /// The HTTPS certificate, with `server.tls_cert`; SIGHUP re-reads it.
    tls: Option<Arc<ServerCert>>,
}

impl Daemon {
    /// Opens the database, loads a detector per camera and starts the camera threads. Fails
    /// before starting anything on a bad database or model.
    pub fn start(cfg: &Config) -> Result<Daemon, DaemonError> {
        let tls = ServerCert::from_config(&cfg.server)?;
        let enabled: Vec<_> = cfg.cameras.iter().filter(|c| c.enabled).collect();
        let detectors = camera_detectors(cfg, &enabled)?;
        let db_path = cfg.storage.path.clone();
        let mut writer_opts = WriterOptions::from_config(&cfg.storage, true);
        writer_opts.outbox = cfg.mqtt.as_ref().map(|m| crate::db::OutboxLimits {
            max_messages: m.outbox_max_messages,
            max_age_ms: m.outbox_max_age_h as i64 * 3_600_000,
        });
        let ids: Vec<&str> = enabled.iter().map(|c| c.id.as_str()).collect();
        // Its TLS files are read here: a bad one stops the start before the database opens.
        let mqtt = mqtt_client(cfg, &ids)?;
        let storage = db::start(&db_path, writer_opts)?;
        let first_event_id = storage.max_event_id + 1;
        // The lines' crossing totals continue from the database's (Home Assistant's counters
        // must not fall back to 0 at a restart).
        let reader = db::open_reader(&db_path)?;
        let recordings = open_recordings(cfg, &enabled, &reader, &storage.handle)?;

        let (typed_events, mqtt_events) = broadcast::channel::<Arc<EventMsg>>(MESSAGE_CAPACITY);
        let peers = Peers {
            db: storage.handle.clone(),
            outbox_topic: mqtt.as_ref().map(|m| m.topics.events()),
            mqtt_topics: mqtt.as_ref().map(|m| m.topics.clone()),
            event_feed: broadcast::channel(MESSAGE_CAPACITY).0,
            counts_feed: broadcast::channel(MESSAGE_CAPACITY).0,
            typed: typed_events,
            ids: EventIds::after(storage.max_event_id),
            stop: CancellationToken::new(),
            recordings: recordings.clone(),
        };
        let mut hubs = Vec::new();
        let mut threads = Vec::new();
        let mut clip_cameras = std::collections::HashMap::new();
        for (cam, detector) in enabled.iter().zip(detectors) {
            let totals = db::line_totals(&reader, &cam.id)?;
            let (hub, t, clip) = start_camera(cfg, cam, detector, &totals, &peers)?;
            hubs.push(hub);
            threads.push(t);
            if let Some(clip) = clip {
                clip_cameras.insert(cam.id.clone(), clip);
            }
        }
        let clips = peers.recordings.as_ref().map(|store| {
            Arc::new(crate::record::ClipSettings {
                dir: store.dir().to_owned(),
                cameras: clip_cameras,
            })
        });
        if hubs.is_empty() {
            tracing::warn!(
                "no enabled cameras in the config; serving the API and stored events only"
            );
        }
        let mqtt = mqtt.map(|c| (c, mqtt_events));
        let mqtt_stats = mqtt
            .as_ref()
            .map(|(m, _)| (m.stats.clone(), m.cfg.url.clone()));
        let (state, latest_stats) = app_state(cfg, hubs, &peers, storage.stats, mqtt_stats, clips);

        Ok(Daemon {
            state,
            cameras: threads,
            db: storage.handle,
            writer: storage.thread,
            pipelines_stop: peers.stop,
            db_path,
            mqtt,
            first_event_id,
            latest_stats,
            tls,
        })
    }

    /// `https` when the port serves TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        crate::server::tls::scheme(self.tls.as_deref())
    }

    /// Serves on `listener` until `stop` fires, then shuts down in order. Tells systemd READY=1
    /// once serving, keeps its watchdog fed while frames flow, and says STOPPING=1 at the end.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        stop: CancellationToken,
    ) -> Result<(), DaemonError> {
        let state = self.state.clone();
        let stats_task = tokio::spawn(crate::server::stats::run(
            state.sources.clone(),
            state.stats_feed.clone(),
            self.latest_stats,
        ));
        let mqtt_stop = CancellationToken::new();
        let mqtt_task = self.mqtt.map(|(client, events)| {
            let inputs = crate::mqtt::Inputs {
                events,
                stats: state.latest_stats.clone(),
                readers: state.readers.clone(),
                db: self.db.clone(),
                first_event_id: self.first_event_id,
            };
            tokio::spawn(client.run(inputs, mqtt_stop.clone()))
        });
        let acceptor = self.tls.as_ref().map(|c| c.acceptor());
        let server = tokio::spawn(crate::server::serve(listener, state.clone(), acceptor));
        let reload = tokio::spawn(crate::server::tls::reload_on_sighup(self.tls.clone()));
        // The database is open (start) and the port is bound (the caller's listener).
        crate::cmd::systemd::ready(&crate::cmd::systemd::status_line(&state));
        let watchdog = tokio::spawn(crate::cmd::systemd::watchdog_loop(state.clone()));
        stop.cancelled().await;
        crate::cmd::systemd::stopping();
        watchdog.abort();
        reload.abort();
        tracing::info!("stopping: ending capture and open events");

        self.pipelines_stop.cancel();
        let (cameras, db) = (self.cameras, self.db);
        tokio::task::spawn_blocking(move || join_and_flush(cameras, db))
            .await
            .ok();
        tracing::info!(db = %self.db_path.display(), "events flushed; closing client connections");
        if let Some(mut task) = mqtt_task {
            // It sends what the outbox holds for a few seconds, then says offline.
            mqtt_stop.cancel();
            if tokio::time::timeout(Duration::from_secs(8), &mut task)
                .await
                .is_err()
            {
                tracing::warn!("MQTT: did not finish within 8 s");
                // It holds a handle of the writer, whose thread ends when the last one goes.
                task.abort();
                let _ = task.await;
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

/// What every camera's threads share: the bus's peers, the event ids and the stop token.
struct Peers {
    db: DbHandle,
    /// The MQTT topic of event messages (the outbox), with `[mqtt]`.
    outbox_topic: Option<String>,
    /// The device's MQTT topics (the lines' totals go to the outbox too), with `[mqtt]`.
    mqtt_topics: Option<crate::mqtt::Topics>,
    event_feed: broadcast::Sender<Utf8Bytes>,
    counts_feed: broadcast::Sender<Utf8Bytes>,
    typed: broadcast::Sender<Arc<EventMsg>>,
    ids: EventIds,
    /// Stops capture and detection.
    stop: CancellationToken,
    /// Every camera's recordings, when one records.
    recordings: Option<Arc<Recordings>>,
}

/// Waits for every camera's threads (their pipelines end their open events), then flushes the
/// writer: every event a client was told about is stored. Blocks.
fn join_and_flush(cameras: Vec<CameraThreads>, db: DbHandle) {
    for c in cameras {
        for (what, h) in [
            ("capture", c.capture),
            ("detect", c.detect),
            ("encoder", c.encoder),
        ]
        .into_iter()
        .chain(c.recorder.map(|h| ("recorder", h)))
        {
            if h.join().is_err() {
                tracing::error!(camera = %c.id, thread = what, "thread panicked");
            }
        }
    }
    if let Err(e) = db.flush() {
        tracing::error!(error = %e, "final database flush failed");
    }
    drop(db);
}

/// Every enabled camera's detector (`None` each with `kind = "none"`), built before anything
/// else so that a broken model stops the start.
fn camera_detectors(
    cfg: &Config,
    enabled: &[&CameraConfig],
) -> Result<Vec<Option<Box<dyn ObjectDetector>>>, DaemonError> {
    // Built at once, the model is read and checked once and its packed weights shared by
    // the cameras' sessions; with several cameras, one inference takes one thread (unless
    // `detector.threads` says otherwise): the cameras are the parallelism, and a pool of
    // threads per camera competing for the same cores costs more than it gives. With more
    // cameras than cores, they take turns with a detector per core.
    let mut detectors: Vec<Option<Box<dyn ObjectDetector>>> =
        detect::for_cameras(&cfg.detector, enabled.len())
            .map_err(|source| DaemonError::Detector {
                camera: enabled
                    .iter()
                    .map(|c| c.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                source,
            })?
            .into_iter()
            .map(Some)
            .collect();
    // `kind = "none"`: no detector for any camera.
    detectors.resize_with(enabled.len(), || None);
    Ok(detectors)
}

/// The journal line that says which detector a camera has.
fn log_detector(camera: &str, info: Option<&detect::DetectorInfo>) {
    match info {
        Some(info) => {
            tracing::info!(camera = %camera, runtime = info.runtime, provider = info.provider, "camera {camera} detector: {info}")
        }
        None => {
            tracing::info!(camera = %camera, "camera {camera} has no object detector (detector.kind = \"none\"): motion only")
        }
    }
}

/// A camera's fan-out in the daemon: the database (with the MQTT outbox), the WebSocket feeds,
/// the typed bus to MQTT, the journal, and the count topics when MQTT is on.
fn camera_bus(
    camera: &str,
    hub: &CameraHub,
    peers: &Peers,
    trigger: Option<Arc<crate::record::Trigger>>,
) -> Bus {
    let mut bus = Bus::new(camera)
        .database(peers.db.clone(), peers.outbox_topic.clone())
        .websocket(peers.event_feed.clone(), hub.detections.clone())
        .counts_feed(peers.counts_feed.clone())
        .typed(peers.typed.clone())
        .journal();
    if let Some(trigger) = trigger {
        bus = bus.recording(trigger);
    }
    match &peers.mqtt_topics {
        Some(topics) => bus.count_topics(topics.clone()),
        None => bus,
    }
}

/// Starts one camera's capture, encoder and detect threads; its hub for the server.
fn start_camera(
    cfg: &Config,
    cam: &CameraConfig,
    detector: Option<Box<dyn ObjectDetector>>,
    line_totals: &[crate::counts::LineTotal],
    peers: &Peers,
) -> Result<(Arc<CameraHub>, CameraThreads, Option<ClipCamera>), DaemonError> {
    let name = cam.name.clone().unwrap_or_else(|| cam.id.clone());
    let state = Arc::new(SourceState::new(&cam.id, &name));
    let stats = Arc::new(CameraStats::default());
    let info = detector.as_ref().map(|d| d.info());
    log_detector(&cam.id, info.as_ref());
    // The live video: the capture session's packets (the stream detection decodes), when the
    // source sends compressed packets at all.
    let video = Source::parse(&cam.source)
        .carries_packets()
        .then(|| Arc::new(LiveVideo::new(&cam.id)));
    let hub = Arc::new(
        CameraHub::new(
            &cam.id,
            state.clone(),
            Overlay::of(cam),
            stats.clone(),
            info,
        )
        .with_video(video.clone()),
    );
    let slot = Arc::new(FrameSlot::default());
    let (encoder, encoder_join) = crate::encoder::spawn(
        &cam.id,
        hub.frames.clone(),
        stats.clone(),
        cfg.server.stream_quality,
    )?;
    // The recorder, when the camera records: fed by its own session on `record_source`, or
    // by the capture session's tee (one session per camera stream).
    let mut tee = None;
    let recorder = match (&peers.recordings, RecorderSettings::for_camera(cam)) {
        (Some(store), Some(settings)) => {
            let trigger = Arc::new(crate::record::Trigger::default());
            tracing::info!(camera = %cam.id, "camera {} records ({}; {} s before and {} s after an event)", cam.id, if settings.continuous { "continuous" } else { "events" }, cam.record.pre_s, cam.record.post_s);
            let input = match settings.own_source.clone() {
                Some(source) => Input::Own(source, settings.options),
                None => {
                    let (tx, rx) = PacketTx::bounded(crate::record::PACKET_CHANNEL);
                    tee = Some(tx);
                    Input::Shared(rx)
                }
            };
            let clip = ClipCamera {
                pre_ms: settings.pre_ms,
                post_ms: settings.post_ms,
                trigger: trigger.clone(),
            };
            let thread = crate::record::spawn_recorder(
                settings,
                input,
                store.clone(),
                trigger.clone(),
                state.clone(),
                peers.stop.clone(),
            )?;
            Some((trigger, thread, clip))
        }
        _ => None,
    };
    if let Some(video) = video {
        tee = Some(match tee {
            Some(tx) => tx.with_listener(video),
            None => PacketTx::listener(video),
        });
    }
    let (trigger, recorder, clip) = match recorder {
        Some((t, r, c)) => (Some(t), Some(r), Some(c)),
        None => (None, None, None),
    };
    let capture = {
        let opts = crate::capture::SourceOptions::from_camera(cam);
        let (source, slot, state, stats, stop) = (
            Source::parse(&cam.source),
            slot.clone(),
            state.clone(),
            stats.clone(),
            peers.stop.clone(),
        );
        // `encoder` moves into the capture thread and drops when it ends, which ends the
        // encoder thread.
        std::thread::Builder::new()
            .name(format!("cam-{}", cam.id))
            .spawn(move || {
                live::run_capture(source, opts, slot, state, stats, stop, tee, |f| {
                    encoder.offer(f)
                })
            })?
    };
    let mut pipeline = Pipeline::new(
        &cam.id,
        cfg,
        detector,
        peers.ids.clone(),
        Box::new(camera_bus(&cam.id, &hub, peers, trigger)),
        stats,
    )?;
    pipeline.continue_totals(line_totals);
    let detect = {
        let stop = peers.stop.clone();
        std::thread::Builder::new()
            .name(format!("detect-{}", cam.id))
            .spawn(move || pipeline.run(&*slot, &stop, |_| {}))?
    };
    let source = Source::parse(&cam.source).display_name();
    tracing::info!(camera = %cam.id, source = %source, state = "connecting", "camera {} starting: {source}", cam.id);
    let threads = CameraThreads {
        id: cam.id.clone(),
        capture,
        detect,
        encoder: encoder_join,
        recorder,
    };
    Ok((hub, threads, clip))
}

/// Every camera's recordings, opened (and what a crash left repaired) before any recorder
/// starts; `None` when no camera records.
fn open_recordings(
    cfg: &Config,
    enabled: &[&CameraConfig],
    reader: &rusqlite::Connection,
    db: &DbHandle,
) -> Result<Option<Arc<Recordings>>, DaemonError> {
    if !enabled
        .iter()
        .any(|c| RecorderSettings::for_camera(c).is_some())
    {
        return Ok(None);
    }
    let dir = crate::record::recordings_dir(cfg);
    let known = db::all_segments(reader)?;
    let store = Recordings::open(
        &dir,
        crate::record::Limits::from_config(&cfg.recordings),
        known,
        Some(db.clone()),
    )
    .map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("recordings directory {}: {e}", dir.display()),
        )
    })?;
    tracing::info!(
        "recordings in {} ({} bytes held)",
        dir.display(),
        store.total_bytes()
    );
    Ok(Some(Arc::new(store)))
}

/// The MQTT client of `[mqtt]`, reporting the configured labels of `cameras`.
fn mqtt_client(cfg: &Config, cameras: &[&str]) -> Result<Option<crate::mqtt::Client>, DaemonError> {
    let Some(m) = cfg.mqtt.as_ref() else {
        return Ok(None);
    };
    let tls = crate::server::tls::mqtt_tls(m).map_err(DaemonError::MqttTls)?;
    let topics = crate::mqtt::Topics::new(m);
    let labels = crate::mqtt::reported_labels(&cfg.detector);
    tracing::info!(broker = %m.url, topics = %topics.base, "MQTT: publishing to {} under {}/", m.url, topics.base);
    Ok(Some(crate::mqtt::Client {
        cfg: m.clone(),
        topics,
        cameras: cameras
            .iter()
            .map(|id| (id.to_string(), labels.clone()))
            .collect(),
        places: cameras
            .iter()
            .filter_map(|id| cfg.camera(id))
            .map(|c| crate::mqtt::Places {
                camera: c.id.clone(),
                lines: c.lines.iter().map(|l| l.name.clone()).collect(),
                zones: c.zones.iter().map(|z| z.name.clone()).collect(),
            })
            .collect(),
        stats: Arc::new(MqttStats::default()),
        tls,
    }))
}

/// The server's shared state, and the sender the stats task will keep its latest snapshot in.
fn app_state(
    cfg: &Config,
    cameras: Vec<Arc<CameraHub>>,
    peers: &Peers,
    writer: Arc<WriterStats>,
    mqtt: Option<(Arc<MqttStats>, String)>,
    clips: Option<Arc<crate::record::ClipSettings>>,
) -> (Arc<AppState>, watch::Sender<Arc<StatsSnapshot>>) {
    let sources = Arc::new(Sources {
        cameras,
        started: Instant::now(),
        server: Arc::new(ServerMetrics::default()),
        writer,
        mqtt,
        db_path: cfg.storage.path.clone(),
    });
    let health = crate::telemetry::health::HealthProbe::new(&cfg.storage.path).read();
    let (latest_stats, latest_rx) = watch::channel(Arc::new(sources.take(None, health).0));
    let state = Arc::new(AppState {
        client_slots: Arc::new(Semaphore::new(cfg.server.max_clients)),
        cfg: cfg.server.clone(),
        event_feed: peers.event_feed.clone(),
        stats_feed: broadcast::channel(16).0,
        counts_feed: peers.counts_feed.clone(),
        latest_stats: latest_rx,
        sources,
        readers: Arc::new(ReadPool::new(&cfg.storage.path, 4)),
        shutdown: CancellationToken::new(),
        clients: TaskTracker::new(),
        clips,
    });
    (state, latest_stats)
}
