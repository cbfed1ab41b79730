//! Publishing to an MQTT broker (docs/mqtt.md): availability with a last will, every event
//! message from the database's outbox in order (each removed when the broker acknowledges it,
//! so nothing is lost while the broker is away), retained counts and snapshots per camera and
//! label, stats, and Home Assistant discovery. One tokio task; nothing on the frame path waits
//! for it.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event as MqttEvent, EventLoop, LastWill,
    MqttOptions, Outgoing, Packet, QoS, Transport,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::MqttConfig;
use crate::db::{DbCommand, DbHandle, OutboxMessage};
use crate::state::AppState;

/// The client's state, for `/api/stats` and `/metrics`.
#[derive(Debug, Default)]
pub struct MqttStats {
    pub connected: AtomicBool,
    /// Messages the broker acknowledged (QoS 1) or that went out (QoS 0).
    pub published: AtomicU64,
    /// Messages in the outbox, waiting for the broker.
    pub pending: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MqttSnapshot {
    pub connected: bool,
    pub broker: String,
    pub published: u64,
    pub pending: u64,
    /// Outbox messages given up by its bounds before the broker took them.
    pub dropped: u64,
    pub last_error: Option<String>,
}

impl MqttStats {
    pub fn snapshot(&self, broker: &str, dropped: u64) -> MqttSnapshot {
        MqttSnapshot {
            connected: self.connected.load(Ordering::Relaxed),
            broker: broker.to_string(),
            published: self.published.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Relaxed),
            dropped,
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// Topic names of one device.
#[derive(Clone, Debug)]
pub struct Topics {
    pub base: String,
    pub discovery_prefix: String,
    pub device: String,
}

impl Topics {
    pub fn new(cfg: &MqttConfig) -> Self {
        let device = cfg.device();
        Self {
            base: format!("{}/{device}", cfg.topic_prefix),
            discovery_prefix: cfg.discovery_prefix.clone(),
            device,
        }
    }
    pub fn available(&self) -> String {
        format!("{}/available", self.base)
    }
    pub fn events(&self) -> String {
        format!("{}/events", self.base)
    }
    pub fn stats(&self) -> String {
        format!("{}/stats", self.base)
    }
    pub fn count(&self, camera: &str, label: &str) -> String {
        format!("{}/{camera}/{label}", self.base)
    }
    pub fn snapshot(&self, camera: &str, label: &str) -> String {
        format!("{}/{camera}/{label}/snapshot", self.base)
    }
}

/// The Home Assistant discovery configs (topic, JSON) for one camera and label: an occupancy
/// binary_sensor and a count sensor, both on the count topic, and a camera showing the latest
/// snapshot, with availability and a device.
pub fn discovery(topics: &Topics, camera: &str, label: &str) -> Vec<(String, String)> {
    let id = format!("ocellus_{}_{camera}_{label}", topics.device);
    let device = serde_json::json!({
        "identifiers": [format!("ocellus_{}", topics.device)],
        "name": format!("Ocellus {}", topics.device),
        "manufacturer": "Ocellus",
        "model": "Ocellus camera telemetry daemon",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let state = topics.count(camera, label);
    let common = |name: String| {
        serde_json::json!({
            "name": name,
            "state_topic": state,
            "availability_topic": topics.available(),
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
        })
    };
    let mut occupancy = common(format!("{camera} {label} occupancy"));
    occupancy["unique_id"] = format!("{id}_occupancy").into();
    occupancy["device_class"] = "occupancy".into();
    occupancy["value_template"] = "{{ 'ON' if value | int > 0 else 'OFF' }}".into();
    let mut count = common(format!("{camera} {label} count"));
    count["unique_id"] = format!("{id}_count").into();
    count["state_class"] = "measurement".into();
    count["unit_of_measurement"] = label.into();
    let snapshot = serde_json::json!({
        "name": format!("{camera} {label} snapshot"),
        "unique_id": format!("{id}_snapshot"),
        "topic": topics.snapshot(camera, label),
        "availability_topic": topics.available(),
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device,
    });
    vec![
        (
            format!(
                "{}/binary_sensor/{id}/occupancy/config",
                topics.discovery_prefix
            ),
            occupancy.to_string(),
        ),
        (
            format!("{}/sensor/{id}/count/config", topics.discovery_prefix),
            count.to_string(),
        ),
        (
            format!("{}/camera/{id}/snapshot/config", topics.discovery_prefix),
            snapshot.to_string(),
        ),
    ]
}

/// What to tell the user about a failed connection, in one line.
pub fn describe(err: &ConnectionError, broker: &str) -> String {
    match err {
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
        ) => format!("the broker {broker} refused the login: wrong mqtt.username or mqtt.password"),
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker {broker} refused the connection ({code:?})")
        }
        ConnectionError::Tls(e) => format!(
            "TLS with {broker} failed ({e}); is the port a TLS port (mqtts://, usually 8883)?"
        ),
        ConnectionError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("cannot connect to the broker {broker}: connection refused (is it running?)")
        }
        ConnectionError::Io(e) => format!("connection to the broker {broker}: {e}"),
        ConnectionError::NetworkTimeout => format!("the broker {broker} did not answer in time"),
        ConnectionError::NotConnAck(_) => format!(
            "{broker} does not speak MQTT as expected (a TLS port with mqtt://, or another service?)"
        ),
        other => format!("connection to the broker {broker}: {other}"),
    }
}

/// An outbox row read for publishing.
struct Row {
    seq: i64,
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

fn read_outbox(
    conn: &rusqlite::Connection,
    after: i64,
    limit: usize,
) -> Result<(Vec<Row>, u64, Option<i64>), crate::errors::DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, topic, payload, retain FROM mqtt_outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(rusqlite::params![after, limit as i64], |r| {
            Ok(Row {
                seq: r.get(0)?,
                topic: r.get(1)?,
                payload: r.get(2)?,
                retain: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let (pending, oldest): (i64, Option<i64>) =
        conn.query_row("SELECT count(*), min(seq) FROM mqtt_outbox", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    Ok((rows, pending.max(0) as u64, oldest))
}

/// The task's settings.
pub struct Client {
    pub cfg: MqttConfig,
    pub topics: Topics,
    /// Cameras and the labels to report for each (counts and discovery).
    pub cameras: Vec<(String, Vec<String>)>,
    pub stats: Arc<MqttStats>,
    pub db: DbHandle,
}

/// Messages published at once (not yet acknowledged) at most.
const WINDOW: usize = 256;

/// One connection's bookkeeping: what went out in which order, and which outbox rows they were.
#[derive(Default)]
struct Session {
    connected: bool,
    /// Per publish handed to the client, in order: its outbox seq (None: not from the outbox).
    handed: VecDeque<Option<i64>>,
    /// Packet id -> outbox seq, for publishes awaiting their acknowledgement.
    inflight: BTreeMap<u16, i64>,
    /// The highest outbox seq handed to the client in this session.
    last_seq: i64,
}

impl Client {
    fn options(&self) -> Result<MqttOptions, String> {
        let ep = self.cfg.endpoint()?;
        let mut o = MqttOptions::new(
            format!("ocellus-{}", self.topics.device),
            ep.host.clone(),
            ep.port,
        );
        o.set_keep_alive(Duration::from_secs(15));
        o.set_clean_session(true);
        o.set_max_packet_size(16 << 20, 16 << 20);
        o.set_last_will(LastWill::new(
            self.topics.available(),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        if let Some(user) = &self.cfg.username {
            let pass = self
                .cfg
                .password
                .as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default();
            o.set_credentials(user.clone(), pass);
        }
        if ep.tls {
            let _ = rustls::crypto::ring::default_provider().install_default();
            o.set_transport(Transport::tls_with_default_config());
        }
        Ok(o)
    }

    fn qos(&self) -> QoS {
        if self.cfg.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        }
    }

    fn error(&self, msg: String) {
        let mut last = self
            .stats
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last.as_deref() != Some(msg.as_str()) {
            tracing::warn!("MQTT: {msg}; retrying, events wait in the outbox");
        }
        *last = Some(msg);
    }

    /// Runs until `stop`; then publishes what is in the outbox (for a few seconds, if
    /// connected), says `offline` and disconnects.
    pub async fn run(self, state: Arc<AppState>, stop: CancellationToken) {
        let broker = self.cfg.url.clone();
        let mut events = state.events.subscribe();
        // Active events per (camera, label), for the retained counts.
        let mut active: BTreeMap<(String, String), HashSet<i64>> = BTreeMap::new();
        for (cam, labels) in &self.cameras {
            for l in labels {
                active.insert((cam.clone(), l.clone()), HashSet::new());
            }
        }
        // Snapshots to publish once the writer has stored them: (due, event id, camera, label).
        let mut snapshots: Vec<(tokio::time::Instant, i64, String, String)> = Vec::new();
        // Acknowledged outbox rows not yet deleted: never sent again.
        let mut acked: HashSet<i64> = HashSet::new();
        let mut acked_unsent: Vec<i64> = Vec::new();
        let mut backoff = Duration::from_secs(1);
        let mut stopping: Option<tokio::time::Instant> = None;
        // Whether the outbox was read after the stop (what it holds then is all there is).
        let mut read_since_stop = true;
        'connection: loop {
            let opts = match self.options() {
                Ok(o) => o,
                Err(e) => {
                    self.error(e);
                    return;
                }
            };
            let (client, eventloop): (AsyncClient, EventLoop) = AsyncClient::new(opts, 512);
            // The eventloop is polled on its own task: a poll dropped half-way (as `select!`
            // does with the branches that lose) would drop a connection being made.
            let mut polled = poll_forever(eventloop);
            let mut s = Session::default();
            let mut poll_outbox = tokio::time::interval(Duration::from_millis(100));
            let mut stats_tick =
                tokio::time::interval(Duration::from_secs(self.cfg.stats_interval_s));
            stats_tick.tick().await;
            loop {
                let finished = stopping.is_some_and(|deadline| {
                    let drained = read_since_stop
                        && s.inflight.is_empty()
                        && s.handed.is_empty()
                        && self.stats.pending.load(Ordering::Relaxed) == 0;
                    !s.connected || drained || tokio::time::Instant::now() >= deadline
                });
                if finished {
                    if s.connected {
                        let _ = client.try_publish(
                            self.topics.available(),
                            QoS::AtLeastOnce,
                            true,
                            "offline",
                        );
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
                    self.stats.connected.store(false, Ordering::Relaxed);
                    self.send_acks(&mut acked_unsent, true);
                    return;
                }
                tokio::select! {
                    ev = polled.recv() => match ev.unwrap_or(Err(ConnectionError::RequestsDone)) {
                        Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                            s.connected = true;
                            backoff = Duration::from_secs(1);
                            self.stats.connected.store(true, Ordering::Relaxed);
                            let had_error = self.stats.last_error.lock().unwrap_or_else(|p| p.into_inner()).take();
                            tracing::info!(broker = %broker, "MQTT: connected to {broker}{}", if had_error.is_some() { " again; sending what waited in the outbox" } else { "" });
                            self.hand(&client, &mut s, None, self.topics.available(), b"online".to_vec(), true);
                            if self.cfg.ha_discovery {
                                let _ = client.try_subscribe(format!("{}/status", self.topics.discovery_prefix), QoS::AtLeastOnce);
                                self.publish_discovery(&client, &mut s);
                            }
                            for ((cam, label), ids) in &active {
                                self.hand(&client, &mut s, None, self.topics.count(cam, label), ids.len().to_string().into_bytes(), true);
                            }
                        }
                        Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => {
                            if let Some(seq) = s.handed.pop_front().flatten() {
                                if pkid == 0 {
                                    // QoS 0: out is as good as it gets.
                                    self.done(seq, &mut acked, &mut acked_unsent);
                                } else {
                                    s.inflight.insert(pkid, seq);
                                }
                            }
                        }
                        Ok(MqttEvent::Incoming(Packet::PubAck(ack))) => {
                            if let Some(seq) = s.inflight.remove(&ack.pkid) {
                                self.done(seq, &mut acked, &mut acked_unsent);
                                // Half the window is free: read on at once (a backlog drains
                                // at the broker's pace, not the poll interval's).
                                if s.inflight.len() + s.handed.len() == WINDOW / 2 {
                                    poll_outbox.reset_immediately();
                                }
                            }
                        }
                        Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                            // Home Assistant restarted: it asks for the discovery configs again.
                            if p.topic.ends_with("/status") && p.payload.as_ref() == b"online" && self.cfg.ha_discovery {
                                self.publish_discovery(&client, &mut s);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            self.stats.connected.store(false, Ordering::Relaxed);
                            self.error(describe(&e, &broker));
                            if stopping.is_some() {
                                continue 'connection;
                            }
                            tokio::select! {
                                _ = tokio::time::sleep(backoff) => {}
                                _ = stop.cancelled() => { stopping = Some(tokio::time::Instant::now()); }
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(30));
                            continue 'connection;
                        }
                    },
                    _ = poll_outbox.tick() => {
                        self.send_acks(&mut acked_unsent, false);
                        // Read while disconnected too, for the pending count.
                        {
                            let after = s.last_seq;
                            let limit = if s.connected {
                                WINDOW.saturating_sub(s.inflight.len() + s.handed.len())
                            } else {
                                0
                            };
                            match state.readers.run(move |c| read_outbox(c, after, limit)).await {
                                Ok((rows, pending, oldest)) => {
                                    self.stats.pending.store(pending, Ordering::Relaxed);
                                    // Rows below the oldest left are deleted: no need to
                                    // remember that they were acknowledged.
                                    acked.retain(|&seq| oldest.is_some_and(|o| seq >= o));
                                    read_since_stop = true;
                                    for r in rows {
                                        if !acked.contains(&r.seq)
                                            && !self.hand(&client, &mut s, Some(r.seq), r.topic, r.payload, r.retain)
                                        {
                                            // The client's queue is full: this row again next time.
                                            break;
                                        }
                                        s.last_seq = r.seq;
                                    }
                                }
                                Err(e) => tracing::warn!(error = %e, "MQTT: cannot read the outbox"),
                            }
                        }
                        // Snapshots whose time has come (the writer has stored them).
                        let now = tokio::time::Instant::now();
                        let due: Vec<_> = snapshots.iter().filter(|s| s.0 <= now).cloned().collect();
                        snapshots.retain(|s| s.0 > now);
                        if s.connected {
                            for (_, id, cam, label) in due {
                                if let Ok(Some(jpeg)) = state.readers.run(move |c| crate::db::get_snapshot(c, id)).await {
                                    self.hand(&client, &mut s, None, self.topics.snapshot(&cam, &label), jpeg, true);
                                }
                            }
                        }
                    }
                    msg = events.recv() => {
                        let Ok(json) = msg else { continue };
                        let Ok(v) = serde_json::from_str::<serde_json::Value>(json.as_str()) else { continue };
                        let e = &v["event"];
                        let (Some(id), Some(cam), Some(label)) = (e["id"].as_i64(), e["camera"].as_str(), e["label"].as_str()) else { continue };
                        let key = (cam.to_string(), label.to_string());
                        let ids = active.entry(key.clone()).or_default();
                        let before = ids.len();
                        match v["kind"].as_str() {
                            Some("start") => {
                                ids.insert(id);
                                snapshots.push((tokio::time::Instant::now() + Duration::from_secs(1), id, key.0.clone(), key.1.clone()));
                            }
                            Some("end") => {
                                ids.remove(&id);
                                snapshots.push((tokio::time::Instant::now() + Duration::from_millis(500), id, key.0.clone(), key.1.clone()));
                            }
                            _ => {}
                        }
                        let after = ids.len();
                        if after != before && s.connected {
                            self.hand(&client, &mut s, None, self.topics.count(&key.0, &key.1), after.to_string().into_bytes(), true);
                        }
                    }
                    _ = stats_tick.tick() => {
                        if s.connected {
                            if let Ok(json) = serde_json::to_vec(&*state.stats()) {
                                self.hand(&client, &mut s, None, self.topics.stats(), json, false);
                            }
                        }
                    }
                    _ = stop.cancelled(), if stopping.is_none() => {
                        // Give the outbox a few seconds to empty (the pipelines have ended and
                        // the writer has committed their last events): until a read of it
                        // made from now on finds it empty.
                        stopping = Some(tokio::time::Instant::now() + Duration::from_secs(3));
                        read_since_stop = false;
                    }
                }
            }
        }
    }

    /// Hands a publish to the client, noting its outbox row; false when the client's request
    /// queue is full.
    fn hand(
        &self,
        client: &AsyncClient,
        s: &mut Session,
        seq: Option<i64>,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    ) -> bool {
        match client.try_publish(topic, self.qos(), retain, payload) {
            Ok(()) => {
                s.handed.push_back(seq);
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "MQTT: the client's queue is full");
                false
            }
        }
    }

    fn done(&self, seq: i64, acked: &mut HashSet<i64>, unsent: &mut Vec<i64>) {
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        acked.insert(seq);
        unsent.push(seq);
    }

    /// Tells the writer which outbox rows to delete; `wait` blocks until it took them.
    fn send_acks(&self, unsent: &mut Vec<i64>, wait: bool) {
        if unsent.is_empty() {
            return;
        }
        let batch = std::mem::take(unsent);
        let cmd = DbCommand::OutboxSent(batch.clone());
        let ok = if wait {
            self.db.send(cmd).is_ok()
        } else {
            self.db.try_send(cmd).is_ok()
        };
        if !ok {
            *unsent = batch;
        }
    }

    fn publish_discovery(&self, client: &AsyncClient, s: &mut Session) {
        for (cam, labels) in &self.cameras {
            for label in labels {
                for (topic, json) in discovery(&self.topics, cam, label) {
                    self.hand(client, s, None, topic, json.into_bytes(), true);
                }
            }
        }
    }
}

/// Polls `eventloop` on a task of its own until it fails (the failure is the last item), and
/// hands over what it says.
fn poll_forever(
    mut eventloop: EventLoop,
) -> tokio::sync::mpsc::Receiver<Result<MqttEvent, ConnectionError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move {
        loop {
            let ev = eventloop.poll().await;
            let failed = ev.is_err();
            if tx.send(ev).await.is_err() || failed {
                break;
            }
        }
    });
    rx
}

/// The outbox message for an event message: the same JSON as the WebSocket's `event`.
pub fn event_message(topic: &str, json: String) -> OutboxMessage {
    OutboxMessage {
        topic: topic.to_string(),
        payload: json.into_bytes(),
        retain: false,
        created_ms: crate::clock::now_ms(),
    }
}
