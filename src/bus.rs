//! The fan-out stage: every value a camera's pipeline produces passes here once, on the detect
//! thread, and goes to each peer that wants it. The database gets ONE command per event change,
//! carrying the event row and its MQTT outbox row; the message is serialised to JSON once, for
//! the WebSocket feed and the outbox alike; in-process consumers (MQTT) get it typed, as an
//! `Arc`; the journal gets a line. The peers know nothing of each other.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::broadcast;

use crate::counts::CountsUpdate;
use crate::db::{DbCommand, DbHandle, OutboxMessage};
use crate::pipeline::events::Snapshot;
use crate::pipeline::values::{Detection, DetectionsMsg, EventKind, EventMsg};
use crate::pipeline::Sink;
use crate::server::protocol::ServerMsg;

/// One camera's fan-out. Built with the peers a mode has: the daemon has them all, replay the
/// database and its own collectors.
pub(crate) struct Bus {
    camera: String,
    db: Option<DbHandle>,
    /// The MQTT topic of event messages; with it each event change also goes to the outbox.
    outbox_topic: Option<String>,
    /// The device's MQTT topics: with them each line's new total goes to the outbox, retained.
    counts_topics: Option<crate::mqtt::Topics>,
    /// JSON messages of closed count buckets for WebSocket clients.
    counts_feed: Option<broadcast::Sender<Utf8Bytes>>,
    /// JSON event messages for WebSocket clients.
    event_feed: Option<broadcast::Sender<Utf8Bytes>>,
    /// JSON detections messages of this camera for WebSocket clients.
    detection_feed: Option<broadcast::Sender<Utf8Bytes>>,
    /// Typed event messages for in-process consumers.
    typed: Option<broadcast::Sender<Arc<EventMsg>>>,
    /// Whether event changes are written to the log.
    journal: bool,
    /// A consumer in the same thread (replay's collectors), handed everything.
    local: Option<Box<dyn Sink>>,
    /// The camera's recorder: told of every event, and each event links its clip.
    recording: Option<Arc<crate::record::Trigger>>,
}

impl Bus {
    /// A bus with no peers yet, for camera `camera`.
    pub(crate) fn new(camera: &str) -> Self {
        Self {
            camera: camera.to_string(),
            db: None,
            outbox_topic: None,
            counts_topics: None,
            counts_feed: None,
            event_feed: None,
            detection_feed: None,
            typed: None,
            journal: false,
            local: None,
            recording: None,
        }
    }

    /// Stores events and snapshots; with `outbox_topic`, every event message goes into the MQTT
    /// outbox under it, in the same command as the event.
    pub(crate) fn database(mut self, db: DbHandle, outbox_topic: Option<String>) -> Self {
        self.db = Some(db);
        self.outbox_topic = outbox_topic;
        self
    }

    /// With MQTT: the lines' totals go to the outbox, retained, under `topics`' names.
    pub(crate) fn count_topics(mut self, topics: crate::mqtt::Topics) -> Self {
        self.counts_topics = Some(topics);
        self
    }

    /// Broadcasts the count buckets that close as JSON (to every camera's subscribers).
    pub(crate) fn counts_feed(mut self, tx: broadcast::Sender<Utf8Bytes>) -> Self {
        self.counts_feed = Some(tx);
        self
    }

    /// Broadcasts event messages (to every camera's subscribers) and this camera's detections
    /// as JSON.
    pub(crate) fn websocket(
        mut self,
        events: broadcast::Sender<Utf8Bytes>,
        detections: broadcast::Sender<Utf8Bytes>,
    ) -> Self {
        self.event_feed = Some(events);
        self.detection_feed = Some(detections);
        self
    }

    /// Hands every event message, typed, to the receivers of `tx`.
    pub(crate) fn typed(mut self, tx: broadcast::Sender<Arc<EventMsg>>) -> Self {
        self.typed = Some(tx);
        self
    }

    /// Writes a journal line per event change.
    pub(crate) fn journal(mut self) -> Self {
        self.journal = true;
        self
    }

    /// The camera records: its recorder hears of every event (before anyone else, so the
    /// pre-roll is not lost), and every event message carries its clip's URL.
    pub(crate) fn recording(mut self, trigger: Arc<crate::record::Trigger>) -> Self {
        self.recording = Some(trigger);
        self
    }

    /// Hands everything to `local` too, after the other peers.
    pub(crate) fn local(mut self, local: Box<dyn Sink>) -> Self {
        self.local = Some(local);
        self
    }

    fn log(&self, msg: &EventMsg) {
        let e = &msg.event;
        let line = crate::pipeline::events::describe(msg);
        // Starts, ends and stationary changes are what a person reads in the journal; a better
        // score on a running event is detail.
        if msg.kind == EventKind::Update && !line.important {
            tracing::debug!(
                camera = %e.camera, event_id = e.id, label = %e.label, kind = msg.kind.as_str(),
                score = e.top_score, track_id = e.track_id, "{}", line.text
            );
        } else {
            tracing::info!(
                camera = %e.camera, event_id = e.id, label = %e.label, kind = msg.kind.as_str(),
                score = e.top_score, track_id = e.track_id, "{}", line.text
            );
        }
    }
}

impl Sink for Bus {
    fn event(&mut self, mut msg: EventMsg) {
        if let Some(trigger) = &self.recording {
            trigger.event(msg.event.id, msg.event.end_ms);
            if trigger.records() {
                msg.event.clip = Some(crate::record::clip_path(msg.event.id));
            }
        }
        let wants_json = self.event_feed.is_some() || self.outbox_topic.is_some();
        let json = wants_json.then(|| {
            ServerMsg::Event {
                kind: msg.kind,
                rev: msg.rev,
                event: &msg.event,
            }
            .to_json()
        });
        // The event goes to the database before anyone is told about it.
        if let Some(db) = &self.db {
            let outbox = self
                .outbox_topic
                .as_deref()
                .zip(json.as_ref())
                .map(|(topic, json)| OutboxMessage::new(topic, json.as_bytes().to_vec()));
            let cmd = DbCommand::Event {
                event: msg.event.clone(),
                outbox,
            };
            if db.send(cmd).is_err() {
                tracing::error!(camera = %self.camera, event_id = msg.event.id, "database writer is gone; event not stored");
            }
        }
        if self.journal {
            self.log(&msg);
        }
        if let (Some(feed), Some(json)) = (&self.event_feed, json) {
            // No receivers is not an error: nobody is connected.
            let _ = feed.send(Utf8Bytes::from(json));
        }
        match (&self.typed, &mut self.local) {
            (Some(tx), Some(local)) => {
                let _ = tx.send(Arc::new(msg.clone()));
                local.event(msg);
            }
            (Some(tx), None) => {
                let _ = tx.send(Arc::new(msg));
            }
            (None, Some(local)) => local.event(msg),
            (None, None) => {}
        }
    }

    fn snapshot(&mut self, s: Snapshot) {
        if let Some(db) = &self.db {
            let cmd = DbCommand::Snapshot {
                event_id: s.event_id,
                jpeg: s.jpeg.clone(),
                width: s.width,
                height: s.height,
            };
            if db.send(cmd).is_err() {
                tracing::error!(camera = %self.camera, event_id = s.event_id, "database writer is gone; snapshot not stored");
            }
        }
        if let Some(local) = &mut self.local {
            local.snapshot(s);
        }
    }

    fn counts(&mut self, update: CountsUpdate) {
        if let Some(db) = &self.db {
            let outbox = match &self.counts_topics {
                Some(topics) => update
                    .totals
                    .iter()
                    .flat_map(|t| [("left", t.left), ("right", t.right)].map(|d| (t, d)))
                    .map(|(t, (dir, n))| {
                        let mut m = OutboxMessage::new(
                            &topics.line_total(&self.camera, &t.line, dir),
                            n.to_string().into_bytes(),
                        );
                        m.retain = true;
                        m
                    })
                    .collect(),
                None => Vec::new(),
            };
            let cmd = DbCommand::Counts {
                camera: update.camera.clone(),
                rows: update.rows.clone(),
                outbox,
            };
            if db.send(cmd).is_err() {
                tracing::error!(camera = %self.camera, "database writer is gone; counts not stored");
            }
        }
        if let Some(feed) = &self.counts_feed {
            for b in &update.closed {
                let _ = feed.send(Utf8Bytes::from(
                    ServerMsg::Counts {
                        camera: &update.camera,
                        start_ms: b.start_ms,
                        span_ms: crate::counts::MINUTE_MS,
                        rows: b.rows_out(),
                    }
                    .to_json(),
                ));
            }
        }
        if let Some(local) = &mut self.local {
            local.counts(update);
        }
    }

    fn wants_detections(&self) -> bool {
        self.detection_feed
            .as_ref()
            .is_some_and(|tx| tx.receiver_count() > 0)
            || self.local.as_ref().is_some_and(|l| l.wants_detections())
    }

    fn detections(&mut self, msg: DetectionsMsg, raw: &[Detection], track_ids: &[u64]) {
        if let Some(tx) = self
            .detection_feed
            .as_ref()
            .filter(|tx| tx.receiver_count() > 0)
        {
            let _ = tx.send(Utf8Bytes::from(ServerMsg::Detections(&msg).to_json()));
        }
        if let Some(local) = &mut self.local {
            local.detections(msg, raw, track_ids);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::values::{BBox, Event};

    fn msg(id: i64, kind: EventKind) -> EventMsg {
        EventMsg {
            kind,
            rev: 0,
            event: Event {
                id,
                camera: "front".into(),
                label: "person".into(),
                track_id: 7,
                start_ms: 1000,
                end_ms: (kind == EventKind::End).then_some(2000),
                top_score: 0.8,
                best_box: BBox::new(1.0, 2.0, 3.0, 4.0),
                best_ms: 1000,
                hits: 3,
                stationary: false,
                zones: Vec::new(),
                crossings: Vec::new(),
                clip: None,
            },
        }
    }

    /// Each event change is one database command that carries its outbox row, whose payload is
    /// the very JSON WebSocket clients get; MQTT gets the same message typed.
    #[test]
    fn an_event_is_one_db_command_with_its_outbox_row_and_the_same_json_everywhere() {
        let (db_tx, db_rx) = crossbeam_channel::bounded(16);
        let db = DbHandle::from_sender(db_tx);
        let (feed, mut feed_rx) = broadcast::channel(16);
        let (typed, mut typed_rx) = broadcast::channel(16);
        let mut bus = Bus::new("front")
            .database(db, Some("ocellus/box/events".into()))
            .websocket(feed, broadcast::channel(16).0)
            .typed(typed);
        bus.event(msg(5, EventKind::Start));

        let cmds: Vec<DbCommand> = db_rx.try_iter().collect();
        assert_eq!(cmds.len(), 1, "one command per event change");
        let DbCommand::Event { event, outbox } = &cmds[0] else {
            panic!("not an event command");
        };
        assert_eq!(event.id, 5);
        let outbox = outbox
            .as_ref()
            .expect("the outbox row rides with the event");
        assert_eq!(outbox.topic, "ocellus/box/events");
        let json = feed_rx.try_recv().unwrap();
        assert_eq!(outbox.payload, json.as_bytes());
        let v: serde_json::Value = serde_json::from_str(json.as_str()).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["kind"].as_str()),
            (Some("event"), Some("start"))
        );
        assert_eq!(*typed_rx.try_recv().unwrap(), msg(5, EventKind::Start));
    }

    /// Without MQTT no outbox row is written, and without WebSocket clients nothing is
    /// serialised for them; the database still gets the event.
    #[test]
    fn without_mqtt_the_event_goes_to_the_database_alone() {
        let (db_tx, db_rx) = crossbeam_channel::bounded(16);
        let mut bus = Bus::new("front").database(DbHandle::from_sender(db_tx), None);
        bus.event(msg(1, EventKind::End));
        let cmds: Vec<DbCommand> = db_rx.try_iter().collect();
        assert!(matches!(&cmds[..], [DbCommand::Event { outbox: None, .. }]));
    }

    /// Counts go to the database in one command with the lines' new totals as retained outbox
    /// rows; a minute that closed is pushed to the counts topic as JSON.
    #[test]
    fn counts_are_one_db_command_with_the_totals_and_closed_minutes_are_pushed() {
        use crate::counts::{ClosedBucket, CountRow, CountsUpdate, LineTotal, Values};
        let (db_tx, db_rx) = crossbeam_channel::bounded(16);
        let (feed, mut feed_rx) = broadcast::channel(16);
        let topics = crate::mqtt::Topics {
            base: "ocellus/box".into(),
            discovery_prefix: "homeassistant".into(),
            device: "box".into(),
        };
        let mut bus = Bus::new("front")
            .database(DbHandle::from_sender(db_tx), None)
            .count_topics(topics)
            .counts_feed(feed);
        let line = Values::Line { left: 1, right: 0 };
        bus.counts(CountsUpdate {
            camera: "front".into(),
            rows: vec![CountRow {
                name: "door".into(),
                start_ms: 60_000,
                values: line,
            }],
            closed: vec![ClosedBucket {
                start_ms: 0,
                rows: vec![("door".into(), Values::Line { left: 2, right: 1 })],
            }],
            totals: vec![LineTotal {
                line: "door".into(),
                left: 7,
                right: 3,
            }],
        });
        let cmds: Vec<DbCommand> = db_rx.try_iter().collect();
        let [DbCommand::Counts {
            camera,
            rows,
            outbox,
        }] = &cmds[..]
        else {
            panic!("one counts command");
        };
        assert_eq!((camera.as_str(), rows.len()), ("front", 1));
        let sent: Vec<(&str, &[u8], bool)> = outbox
            .iter()
            .map(|m| (m.topic.as_str(), m.payload.as_slice(), m.retain))
            .collect();
        assert_eq!(
            sent,
            [
                ("ocellus/box/front/line/door/left", &b"7"[..], true),
                ("ocellus/box/front/line/door/right", &b"3"[..], true)
            ]
        );
        let v: serde_json::Value =
            serde_json::from_str(feed_rx.try_recv().unwrap().as_str()).unwrap();
        assert_eq!(v["type"], "counts");
        assert_eq!(v["camera"], "front");
        assert_eq!(v["start_ms"], 0);
        assert_eq!(v["rows"][0]["kind"], "line");
        assert_eq!(
            (
                v["rows"][0]["left"].as_u64(),
                v["rows"][0]["right"].as_u64()
            ),
            (Some(2), Some(1))
        );
        assert!(feed_rx.try_recv().is_err(), "one message per closed minute");
    }
}
