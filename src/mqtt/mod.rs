//! Publishing to an MQTT broker (docs/mqtt.md): availability with a last will, every event
//! message from the database's outbox in order (each removed when the broker acknowledges it,
//! so nothing is lost while the broker is away), retained counts and snapshots per camera and
//! label, stats, and Home Assistant discovery. One tokio task over explicit inputs (the event
//! bus, the stats, the database); nothing on the frame path waits for it.
//!
//! `delivery.rs` keeps what is in flight and acknowledged, `counts.rs` the retained counts,
//! `topics.rs` the topic names and discovery payloads, `connection.rs` what is said of a failed
//! connection and the eventloop's own task, `task.rs` the task's loop; this file holds its
//! settings, inputs and broker options.

mod connection;
mod counts;
mod delivery;
mod task;
mod topics;

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, QoS, Transport};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{MqttConfig, MqttUrlError};
use crate::db::{DbHandle, ReadPool};
use crate::pipeline::values::EventMsg;
use crate::server::stats::StatsSnapshot;
use crate::telemetry::metrics::MqttStats;
pub(crate) use connection::describe;
pub(crate) use topics::{discovery, places_discovery, safe_id, Topics};

/// The task's settings.
pub(crate) struct Client {
    pub cfg: MqttConfig,
    pub topics: Topics,
    /// Cameras and the labels to report for each (counts and discovery).
    pub cameras: Vec<(String, Vec<String>)>,
    /// Each camera's counting lines and zones (counters, occupancy and discovery).
    pub places: Vec<Places>,
    pub stats: Arc<MqttStats>,
    /// With `mqtts://`: the TLS settings (the CA file or the system's, the client certificate),
    /// read once at start so that a bad file stops the start with its name.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// A camera's counting lines and zones, as MQTT reports them: each line's crossings ever per
/// direction (retained, written through the outbox by the bus), each zone's objects now.
#[derive(Clone, Debug, Default)]
pub(crate) struct Places {
    pub camera: String,
    pub lines: Vec<String>,
    pub zones: Vec<String>,
}

/// What the task reads and writes.
pub(crate) struct Inputs {
    /// Event messages from every camera's bus.
    pub events: broadcast::Receiver<Arc<EventMsg>>,
    /// The latest stats, published every `stats_interval_s`.
    pub stats: watch::Receiver<Arc<StatsSnapshot>>,
    /// The outbox, snapshots and, after a lag, the open events.
    pub readers: Arc<ReadPool>,
    /// Where acknowledged outbox rows are deleted.
    pub db: DbHandle,
    /// The first event id of this run: older events left open by a crash are not counted.
    pub first_event_id: i64,
}

/// The labels whose counts (and Home Assistant entities) each camera reports:
/// `detector.labels_allow`, or `person` when that is empty (every label).
pub(crate) fn reported_labels(detector: &crate::config::DetectorConfig) -> Vec<String> {
    if detector.labels_allow.is_empty() {
        vec!["person".into()]
    } else {
        detector.labels_allow.clone()
    }
}

/// The connection to `[mqtt]`'s broker as `client_id`, as every Ocellus client makes it (the
/// box's publisher, the fleet view's subscriber): its address, a 15 s keep-alive, 16 MiB
/// packets, the credentials, and TLS with `tls` for `mqtts://`. Session and will are the
/// caller's.
pub(crate) fn broker_options(
    cfg: &MqttConfig,
    client_id: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<MqttOptions, MqttUrlError> {
    let ep = cfg.endpoint()?;
    let mut o = MqttOptions::new(client_id, ep.host, ep.port);
    o.set_keep_alive(Duration::from_secs(15));
    o.set_max_packet_size(16 << 20, 16 << 20);
    if let Some(user) = &cfg.username {
        let pass = cfg
            .password
            .as_ref()
            .map(|p| p.expose().to_string())
            .unwrap_or_default();
        o.set_credentials(user.clone(), pass);
    }
    if let Some(tls) = tls.filter(|_| ep.tls) {
        o.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.clone()),
        ));
    }
    Ok(o)
}

impl Client {
    fn options(&self) -> Result<MqttOptions, MqttUrlError> {
        let id = format!("ocellus-{}", self.topics.device);
        let mut o = broker_options(&self.cfg, &id, self.tls.as_ref())?;
        o.set_clean_session(true);
        o.set_last_will(LastWill::new(
            self.topics.available(),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
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
    pub(crate) async fn run(self, inputs: Inputs, stop: CancellationToken) {
        task::Task::new(self, inputs).run(stop).await
    }
}
