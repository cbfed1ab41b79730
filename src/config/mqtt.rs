//! `[mqtt]`: the broker, the topics and the outbox's bounds.

use serde::{Deserialize, Serialize};

use super::{valid_camera_id, Secret};

/// `[mqtt]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `mqtt://host:port` (1883 by default) or `mqtts://host:port` (TLS, 8883 by default,
    /// checked against the system's certificate authorities, or `ca_file`'s).
    pub url: String,
    /// With `mqtts://`: the PEM certificate authorities the broker's certificate must chain to,
    /// instead of the system's (a site's own CA).
    pub ca_file: Option<std::path::PathBuf>,
    /// With `mqtts://`: this box's PEM certificate chain, for a broker that requires client
    /// certificates (Mosquitto's `require_certificate true`); with `client_key`.
    pub client_cert: Option<std::path::PathBuf>,
    /// The PEM private key of `client_cert`.
    pub client_key: Option<std::path::PathBuf>,
    /// Every topic starts with `<topic_prefix>/<device_id>/`.
    pub topic_prefix: String,
    /// This box's name in topics and in Home Assistant; default: the host name.
    pub device_id: Option<String>,
    pub username: Option<String>,
    /// Never printed (shown as `***`).
    pub password: Option<Secret>,
    /// 0 or 1. With 1 every event message is kept in the outbox until the broker acknowledges
    /// it; with 0 it is sent once, unacknowledged.
    pub qos: u8,
    /// Home Assistant MQTT discovery: an occupancy binary_sensor and a count sensor per camera
    /// and label.
    pub ha_discovery: bool,
    pub discovery_prefix: String,
    /// The outbox of undelivered messages keeps at most this many (the oldest go first)...
    pub outbox_max_messages: u64,
    /// ...and none older than this many hours; what is given up is counted as dropped.
    pub outbox_max_age_h: u64,
    /// Seconds between `stats` messages.
    pub stats_interval_s: u64,
    /// This box's dashboard as a fleet view should link it (`https://garage-pi:8080/`); sent
    /// retained on `<base>/info`.
    pub dashboard_url: Option<String>,
}

/// Where an `[mqtt]` url points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttEndpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl MqttConfig {
    /// The broker's address, from `url`.
    pub fn endpoint(&self) -> Result<MqttEndpoint, crate::config::MqttUrlError> {
        use crate::config::MqttUrlError;
        let (tls, rest) = if let Some(r) = self.url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = self.url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(MqttUrlError::Scheme(self.url.clone()));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h,
                p.parse::<u16>().map_err(|_| MqttUrlError::Port {
                    url: self.url.clone(),
                    port: p.to_string(),
                })?,
            ),
            _ => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') || host.contains('@') {
            return Err(MqttUrlError::Host(self.url.clone()));
        }
        Ok(MqttEndpoint {
            tls,
            host: host.to_string(),
            port,
        })
    }

    /// `device_id`, or the host name.
    pub fn device(&self) -> String {
        self.device_id.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| valid_camera_id(h))
                .unwrap_or_else(|| "ocellus".into())
        })
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            url: "mqtt://localhost:1883".into(),
            ca_file: None,
            client_cert: None,
            client_key: None,
            topic_prefix: "ocellus".into(),
            device_id: None,
            username: None,
            password: None,
            qos: 1,
            ha_discovery: true,
            discovery_prefix: "homeassistant".into(),
            outbox_max_messages: 100_000,
            outbox_max_age_h: 24 * 7,
            stats_interval_s: 60,
            dashboard_url: None,
        }
    }
}
