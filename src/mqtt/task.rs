//! The MQTT task's loop: connect, publish the outbox in order and the retained counts,
//! snapshots and stats, resynchronise after a lag, drain and say `offline` at the stop.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event as MqttEvent, EventLoop, Outgoing, Packet, QoS};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::connection::poll_forever;
use super::counts::RetainedCounts;
use super::delivery::{Delivery, Outcome};
use crate::db::DbCommand;
use crate::pipeline::values::{EventKind, EventMsg};
use crate::telemetry::metrics::inc;

use super::{describe, discovery, places_discovery, Client, Inputs};

/// A snapshot to publish once the writer has stored it.
struct DueSnapshot {
    due: Instant,
    /// Given up (and counted) when the database has not got it by then.
    give_up: Instant,
    event_id: i64,
    camera: String,
    label: String,
}

/// How long a resync waits for the writer to commit what the bus has sent.
const FLUSH_PATIENCE: Duration = Duration::from_secs(5);

/// How long a snapshot may take to reach the database (commits failing: a full disk).
const SNAPSHOT_PATIENCE: Duration = Duration::from_secs(10);

/// The running task: the settings, its inputs and what it keeps across connections.
pub(super) struct Task {
    client: Client,
    inputs: Inputs,
    delivery: Delivery,
    counts: RetainedCounts,
    /// Objects in each (camera, zone) as last published.
    zones: std::collections::BTreeMap<(String, String), u64>,
    /// Whether the stats still come (their sender lives).
    stats_open: bool,
    snapshots: Vec<DueSnapshot>,
    connected: bool,
    /// When the stop came and until when the outbox may drain (`None`: running).
    stopping: Option<Instant>,
    /// Whether the outbox was read after the stop (what it holds then is all there is).
    read_since_stop: bool,
    /// Whether any camera's bus still sends.
    bus_open: bool,
}

impl Task {
    pub(super) fn new(client: Client, inputs: Inputs) -> Self {
        let counts = RetainedCounts::new(&client.cameras);
        Self {
            client,
            inputs,
            delivery: Delivery::default(),
            counts,
            zones: Default::default(),
            stats_open: true,
            snapshots: Vec::new(),
            connected: false,
            stopping: None,
            read_since_stop: true,
            bus_open: true,
        }
    }

    pub(super) async fn run(&mut self, stop: CancellationToken) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let opts = match self.client.options() {
                Ok(o) => o,
                Err(e) => {
                    self.client.error(e.to_string());
                    return;
                }
            };
            let (client, eventloop) = AsyncClient::new(opts, 512);
            match self
                .connection(&client, eventloop, &stop, &mut backoff)
                .await
            {
                Ended::Finished => return,
                Ended::Lost(e) => {
                    self.connected = false;
                    self.client.stats.connected.store(false, Ordering::Relaxed);
                    self.client.error(describe(&e, &self.client.cfg.url));
                    if self.stopping.is_none() {
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stop.cancelled() => self.stopping = Some(Instant::now()),
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        }
    }

    /// Serves one connection until it fails or the task is finished.
    async fn connection(
        &mut self,
        client: &AsyncClient,
        eventloop: EventLoop,
        stop: &CancellationToken,
        backoff: &mut Duration,
    ) -> Ended {
        // The eventloop is polled on its own task: a poll dropped half-way (as `select!` does
        // with the branches that lose) would drop a connection being made.
        let mut polled = poll_forever(eventloop);
        self.delivery.reconnected();
        self.connected = false;
        let mut poll_outbox = tokio::time::interval(Duration::from_millis(100));
        let mut stats_tick =
            tokio::time::interval(Duration::from_secs(self.client.cfg.stats_interval_s));
        stats_tick.tick().await;
        loop {
            if self.finished() {
                self.finish(client, &mut polled).await;
                return Ended::Finished;
            }
            tokio::select! {
                ev = polled.recv() => match ev.unwrap_or(Err(ConnectionError::RequestsDone)) {
                    Ok(ev) => {
                        if self.on_mqtt(client, ev) {
                            *backoff = Duration::from_secs(1);
                        }
                        if self.delivery.half_free() {
                            poll_outbox.reset_immediately();
                        }
                    }
                    Err(e) => return Ended::Lost(e),
                },
                _ = poll_outbox.tick() => self.poll_outbox(client).await,
                msg = self.inputs.events.recv(), if self.bus_open => self.on_bus(client, msg).await,
                _ = stats_tick.tick() => self.publish_stats(client),
                changed = self.inputs.stats.changed(), if self.stats_open => match changed {
                    Ok(()) => self.publish_zones(client, false),
                    Err(_) => self.stats_open = false,
                },
                _ = stop.cancelled(), if self.stopping.is_none() => {
                    // Give the outbox a few seconds to empty (the pipelines have ended and
                    // the writer has committed their last events): until a read of it
                    // made from now on finds it empty.
                    self.stopping = Some(Instant::now() + Duration::from_secs(3));
                    self.read_since_stop = false;
                }
            }
        }
    }

    /// Whether to stop now: stopping, and disconnected, drained or out of time.
    fn finished(&self) -> bool {
        self.stopping.is_some_and(|deadline| {
            let drained = self.read_since_stop
                && self.delivery.idle()
                && self.client.stats.pending.load(Ordering::Relaxed) == 0;
            !self.connected || drained || Instant::now() >= deadline
        })
    }

    /// Says `offline`, disconnects and tells the writer the last acknowledgements.
    async fn finish(
        &mut self,
        client: &AsyncClient,
        polled: &mut tokio::sync::mpsc::Receiver<Result<MqttEvent, ConnectionError>>,
    ) {
        if self.connected {
            let topic = self.client.topics.available();
            let _ = client.try_publish(topic, QoS::AtLeastOnce, true, "offline");
            let _ = client.try_disconnect();
            // Let the eventloop send both.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(ev)) = polled.recv().await {
                    if matches!(ev, MqttEvent::Outgoing(Outgoing::Disconnect)) {
                        break;
                    }
                }
            })
            .await;
        }
        self.client.stats.connected.store(false, Ordering::Relaxed);
        // The writer's queue may be full: wait for it on the blocking pool, not on a worker.
        let acks = self.delivery.take_acks();
        if !acks.is_empty() {
            let db = self.inputs.db.clone();
            let sent = tokio::task::spawn_blocking(move || db.send(DbCommand::OutboxSent(acks)));
            if !matches!(sent.await, Ok(Ok(()))) {
                tracing::warn!("MQTT: the writer is gone; acknowledged messages may be sent again after a restart");
            }
        }
    }

    /// Handles one event of the connection; true on a new connection.
    fn on_mqtt(&mut self, client: &AsyncClient, ev: MqttEvent) -> bool {
        match ev {
            MqttEvent::Incoming(Packet::ConnAck(_)) => {
                self.connected = true;
                self.client.stats.connected.store(true, Ordering::Relaxed);
                let had_error = self
                    .client
                    .stats
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                let broker = &self.client.cfg.url;
                tracing::info!(broker = %broker, "MQTT: connected to {broker}{}", if had_error.is_some() { " again; sending what waited in the outbox" } else { "" });
                self.announce(client);
                return true;
            }
            MqttEvent::Outgoing(Outgoing::Publish(pkid)) => {
                let outcome = self.delivery.went_out(pkid);
                self.count(outcome);
            }
            MqttEvent::Incoming(Packet::PubAck(ack)) => {
                let outcome = self.delivery.acknowledged(ack.pkid);
                self.count(outcome);
            }
            // Home Assistant restarted: it asks for the discovery configs again.
            MqttEvent::Incoming(Packet::Publish(p))
                if p.topic.ends_with("/status")
                    && p.payload.as_ref() == b"online"
                    && self.client.cfg.ha_discovery =>
            {
                self.publish_discovery(client);
            }
            _ => {}
        }
        false
    }

    fn count(&self, outcome: Outcome) {
        if let Outcome::Delivered(_) = outcome {
            inc(&self.client.stats.published);
        }
    }

    /// A new connection: discovery, then every count, and only then `online`, so that Home
    /// Assistant never shows a count retained from before a crash as current.
    fn announce(&mut self, client: &AsyncClient) {
        if self.client.cfg.ha_discovery {
            let status = format!("{}/status", self.client.topics.discovery_prefix);
            let _ = client.try_subscribe(status, QoS::AtLeastOnce);
            self.publish_discovery(client);
        }
        let counts: Vec<_> = self
            .counts
            .all()
            .map(|((cam, label), n)| (self.client.topics.count(cam, label), n))
            .collect();
        for (topic, n) in counts {
            self.hand(client, None, topic, n.to_string().into_bytes(), true);
        }
        self.publish_zones(client, true);
        // What a fleet view shows of the box besides its stats (docs/fleet.md).
        let info = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "dashboard_url": self.client.cfg.dashboard_url,
            "cameras": self.client.cameras.iter().map(|(c, _)| c).collect::<Vec<_>>(),
        });
        let topic = self.client.topics.info();
        self.hand(client, None, topic, info.to_string().into_bytes(), true);
        let available = self.client.topics.available();
        self.hand(client, None, available, b"online".to_vec(), true);
    }

    /// Reads the outbox on (while disconnected too, for the pending count) and publishes the
    /// snapshots whose time has come.
    async fn poll_outbox(&mut self, client: &AsyncClient) {
        let acks = self.delivery.take_acks();
        if !acks.is_empty() {
            if let Err(acks) = self.inputs.db.try_send_acks(acks) {
                self.delivery.unsent(acks);
            }
        }
        let after = self.delivery.read_after();
        let limit = if self.connected {
            self.delivery.room()
        } else {
            0
        };
        match self
            .inputs
            .readers
            .run(move |c| crate::db::read_outbox(c, after, limit))
            .await
        {
            Ok(page) => {
                self.client
                    .stats
                    .pending
                    .store(page.pending, Ordering::Relaxed);
                self.delivery.forget_below(page.oldest);
                self.read_since_stop = true;
                for r in page.rows {
                    if !self.delivery.wanted(r.seq) {
                        self.delivery.skipped(r.seq);
                    } else if !self.hand(client, Some(r.seq), r.topic, r.payload, r.retain) {
                        // The client's queue is full: this row again next time.
                        break;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "MQTT: cannot read the outbox"),
        }
        self.publish_snapshots(client).await;
    }

    /// Publishes the snapshots that are due, once the writer has stored them.
    async fn publish_snapshots(&mut self, client: &AsyncClient) {
        if !self.connected {
            return;
        }
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.snapshots)
            .into_iter()
            .partition(|s| s.due <= now);
        self.snapshots = later;
        for s in due {
            let id = s.event_id;
            match self
                .inputs
                .readers
                .run(move |c| crate::db::get_snapshot(c, id))
                .await
            {
                Ok(Some(jpeg)) => {
                    let topic = self.client.topics.snapshot(&s.camera, &s.label);
                    self.hand(client, None, topic, jpeg, true);
                }
                Ok(None) | Err(_) if now < s.give_up => self.snapshots.push(s),
                other => {
                    inc(&self.client.stats.snapshots_skipped);
                    let why = match other {
                        Err(e) => e.to_string(),
                        _ => "not in the database in time".into(),
                    };
                    tracing::warn!(camera = %s.camera, event_id = id, "MQTT: snapshot of event {id} not published: {why}");
                }
            }
        }
    }

    /// An event message from the bus: the counts, and its snapshot later. A lag (messages
    /// missed) is counted and the counts are read again from the database.
    async fn on_bus(&mut self, client: &AsyncClient, msg: Result<Arc<EventMsg>, RecvError>) {
        let changed = match msg {
            Ok(msg) => {
                self.schedule_snapshot(&msg);
                self.counts.apply(&msg).into_iter().collect()
            }
            Err(RecvError::Lagged(n)) => {
                self.client.stats.lagged.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(missed = n, "MQTT: fell behind the event bus by {n} messages; reading the counts again from the database");
                self.resync().await
            }
            // Every bus is gone: the pipelines have stopped.
            Err(RecvError::Closed) => {
                self.bus_open = false;
                Vec::new()
            }
        };
        if self.connected {
            for ((cam, label), n) in changed {
                let topic = self.client.topics.count(&cam, &label);
                self.hand(client, None, topic, n.to_string().into_bytes(), true);
            }
        }
    }

    /// Reads the open events from the database (after a flush: the bus stores every event
    /// before it broadcasts it) and replaces the counts with them; the pairs that changed.
    async fn resync(&mut self) -> Vec<((String, String), usize)> {
        // A flush waits for a commit; while commits fail (a full disk) read what is there
        // rather than stall the task.
        let db = self.inputs.db.clone();
        let flushed = tokio::task::spawn_blocking(move || db.flush());
        let _ = tokio::time::timeout(FLUSH_PATIENCE, flushed).await;
        let first = self.inputs.first_event_id;
        match self
            .inputs
            .readers
            .run(move |c| crate::db::open_events(c, first))
            .await
        {
            Ok(open) => self.counts.resync(open),
            Err(e) => {
                tracing::warn!(error = %e, "MQTT: cannot read the open events; the counts may be off until the next event");
                Vec::new()
            }
        }
    }

    fn schedule_snapshot(&mut self, msg: &EventMsg) {
        let delay = match msg.kind {
            EventKind::Start => Duration::from_secs(1),
            EventKind::End => Duration::from_millis(500),
            EventKind::Update => return,
        };
        let due = Instant::now() + delay;
        self.snapshots.push(DueSnapshot {
            due,
            give_up: due + SNAPSHOT_PATIENCE,
            event_id: msg.event.id,
            camera: msg.event.camera.clone(),
            label: msg.event.label.clone(),
        });
    }

    fn publish_stats(&mut self, client: &AsyncClient) {
        if !self.connected {
            return;
        }
        let snapshot = self.inputs.stats.borrow().clone();
        if let Ok(json) = serde_json::to_vec(&*snapshot) {
            let topic = self.client.topics.stats();
            self.hand(client, None, topic, json, false);
        }
    }

    /// Hands a publish to the client, noting its outbox row; false when the client's request
    /// queue is full.
    fn hand(
        &mut self,
        client: &AsyncClient,
        seq: Option<i64>,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    ) -> bool {
        match client.try_publish(topic, self.client.qos(), retain, payload) {
            Ok(()) => {
                self.delivery.handed(seq);
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "MQTT: the client's queue is full");
                false
            }
        }
    }

    /// Publishes the objects in each zone (retained) that changed since last published, or
    /// all of them (`all`: a new connection, before `online`, so that a zone shown occupied
    /// before a crash is put right).
    fn publish_zones(&mut self, client: &AsyncClient, all: bool) {
        if !self.connected && !all {
            return;
        }
        let snapshot = self.inputs.stats.borrow().clone();
        let mut now = Vec::new();
        for place in &self.client.places {
            let cam = snapshot
                .cameras
                .iter()
                .find(|c| c.camera.id == place.camera);
            for zone in &place.zones {
                let n = cam
                    .and_then(|c| c.zones.iter().find(|z| &z.name == zone))
                    .map_or(0, |z| z.objects);
                let key = (place.camera.clone(), zone.clone());
                if all || self.zones.get(&key) != Some(&n) {
                    now.push((key, n));
                }
            }
        }
        for ((cam, zone), n) in now {
            let topic = self.client.topics.zone(&cam, &zone);
            if self.hand(client, None, topic, n.to_string().into_bytes(), true) {
                self.zones.insert((cam, zone), n);
            }
        }
    }

    fn publish_discovery(&mut self, client: &AsyncClient) {
        let topics = &self.client.topics;
        let configs: Vec<_> = self
            .client
            .cameras
            .iter()
            .flat_map(|(cam, labels)| {
                labels
                    .iter()
                    .flat_map(|label| discovery(topics, cam, label))
            })
            .chain(
                self.client
                    .places
                    .iter()
                    .flat_map(|p| places_discovery(topics, &p.camera, &p.lines, &p.zones)),
            )
            .collect();
        for (topic, json) in configs {
            self.hand(client, None, topic, json.into_bytes(), true);
        }
    }
}

/// How a connection ended.
enum Ended {
    /// The task is done (stopped and drained, or out of time).
    Finished,
    /// The connection failed; try again.
    Lost(ConnectionError),
}
