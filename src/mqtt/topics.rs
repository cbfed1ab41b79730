//! Topic names and Home Assistant discovery payloads of one device. Every id that goes into a
//! topic or a `unique_id` is made of `[A-Za-z0-9_-]` only: Home Assistant refuses discovery
//! topics with other characters (a label such as `traffic light`).

use crate::config::MqttConfig;

/// `s` with every character outside `[A-Za-z0-9_-]` replaced by `_`: safe in any topic level
/// and in Home Assistant's discovery topics and ids.
pub(crate) fn safe_id(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Topic names of one device.
#[derive(Clone, Debug)]
pub(crate) struct Topics {
    pub base: String,
    pub discovery_prefix: String,
    pub device: String,
}

impl Topics {
    pub(crate) fn new(cfg: &MqttConfig) -> Self {
        let device = safe_id(&cfg.device());
        Self {
            base: format!("{}/{device}", cfg.topic_prefix),
            discovery_prefix: cfg.discovery_prefix.clone(),
            device,
        }
    }
    pub(crate) fn available(&self) -> String {
        format!("{}/available", self.base)
    }
    pub(crate) fn events(&self) -> String {
        format!("{}/events", self.base)
    }
    pub(crate) fn stats(&self) -> String {
        format!("{}/stats", self.base)
    }
    /// The level of `camera`'s topics.
    pub(crate) fn camera(&self, camera: &str) -> String {
        format!("{}/{}", self.base, safe_id(camera))
    }
    /// The retained count of `label` objects with an open event on `camera`.
    pub(crate) fn count(&self, camera: &str, label: &str) -> String {
        format!("{}/{}", self.camera(camera), safe_id(label))
    }
    /// The retained crossings ever of `camera`'s `line` in `direction` (`left`, `right`),
    /// written through the outbox with the counts they belong to (bus.rs).
    pub(crate) fn line_total(&self, camera: &str, line: &str, direction: &str) -> String {
        format!("{}/line/{}/{direction}", self.camera(camera), safe_id(line))
    }
    pub(crate) fn snapshot(&self, camera: &str, label: &str) -> String {
        format!("{}/snapshot", self.count(camera, label))
    }
}

/// The Home Assistant discovery configs (topic, JSON) for one camera and label: an occupancy
/// binary_sensor and a count sensor, both on the count topic, and a camera showing the latest
/// snapshot, with availability and a device. Home Assistant names the entities after the device
/// and the entity's name: `binary_sensor.ocellus_<device>_<camera>_<label>_occupancy`.
pub(crate) fn discovery(topics: &Topics, camera: &str, label: &str) -> Vec<(String, String)> {
    let id = format!(
        "ocellus_{}_{}_{}",
        topics.device,
        safe_id(camera),
        safe_id(label)
    );
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
    let prefix = &topics.discovery_prefix;
    vec![
        (
            format!("{prefix}/binary_sensor/{id}/occupancy/config"),
            occupancy.to_string(),
        ),
        (
            format!("{prefix}/sensor/{id}/count/config"),
            count.to_string(),
        ),
        (
            format!("{prefix}/camera/{id}/snapshot/config"),
            snapshot.to_string(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> Topics {
        Topics {
            base: "ocellus/gate".into(),
            discovery_prefix: "homeassistant".into(),
            device: "gate".into(),
        }
    }

    /// Home Assistant accepts a discovery topic of `[A-Za-z0-9_-]` levels only; a label with a
    /// space still gets its entities, on safe topics and ids, under its own name.
    #[test]
    fn a_label_with_a_space_gets_safe_topics_and_ids() {
        let t = topics();
        let configs = discovery(&t, "front", "traffic light");
        for (topic, json) in &configs {
            let levels: Vec<&str> = topic.split('/').collect();
            assert!(
                levels.iter().all(|l| !l.is_empty()
                    && l.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')),
                "{topic}"
            );
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            let id = v["unique_id"].as_str().unwrap();
            assert_eq!(safe_id(id), id);
            assert!(v["name"].as_str().unwrap().contains("traffic light"));
        }
        assert_eq!(
            t.count("front", "traffic light"),
            "ocellus/gate/front/traffic_light"
        );
        let v: serde_json::Value = serde_json::from_str(&configs[0].1).unwrap();
        assert_eq!(v["state_topic"], t.count("front", "traffic light"));
        assert_eq!(safe_id("a+b/#c d"), "a_b__c_d");
    }
}
