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
    /// Retained: the box's version, cameras and dashboard address, for a fleet view.
    pub(crate) fn info(&self) -> String {
        format!("{}/info", self.base)
    }
    /// The level of `camera`'s topics.
    pub(crate) fn camera(&self, camera: &str) -> String {
        format!("{}/{}", self.base, safe_id(camera))
    }
    /// The retained count of `label` objects with an open event on `camera`.
    pub(crate) fn count(&self, camera: &str, label: &str) -> String {
        format!("{}/{}", self.camera(camera), safe_id(label))
    }
    /// The retained number of objects (with an event) in `camera`'s `zone` now.
    pub(crate) fn zone(&self, camera: &str, zone: &str) -> String {
        format!("{}/zone/{}", self.camera(camera), safe_id(zone))
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
    let device = device(topics);
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

/// The Home Assistant device all of one box's entities belong to.
fn device(topics: &Topics) -> serde_json::Value {
    serde_json::json!({
        "identifiers": [format!("ocellus_{}", topics.device)],
        "name": format!("Ocellus {}", topics.device),
        "manufacturer": "Ocellus",
        "model": "Ocellus camera telemetry daemon",
        "sw_version": env!("CARGO_PKG_VERSION"),
    })
}

/// The Home Assistant discovery configs (topic, JSON) for one camera's counting lines and
/// zones: per line and direction a crossings counter (`state_class: total_increasing`, so Home
/// Assistant's long-term statistics keep its history; the total survives restarts), per zone
/// an occupancy sensor (objects in it now) and an occupied binary_sensor.
pub(crate) fn places_discovery(
    topics: &Topics,
    camera: &str,
    lines: &[String],
    zones: &[String],
) -> Vec<(String, String)> {
    let prefix = &topics.discovery_prefix;
    let base = |name: String, unique: &str, state: String| {
        serde_json::json!({
            "name": name,
            "unique_id": unique,
            "state_topic": state,
            "availability_topic": topics.available(),
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device(topics),
        })
    };
    let cam = safe_id(camera);
    let mut out = Vec::new();
    for line in lines {
        for dir in ["left", "right"] {
            let id = format!(
                "ocellus_{}_{cam}_line_{}_{dir}",
                topics.device,
                safe_id(line)
            );
            let mut c = base(
                format!("{camera} {line} crossings {dir}"),
                &id,
                topics.line_total(camera, line, dir),
            );
            c["state_class"] = "total_increasing".into();
            c["unit_of_measurement"] = "crossings".into();
            c["icon"] = "mdi:counter".into();
            out.push((format!("{prefix}/sensor/{id}/config"), c.to_string()));
        }
    }
    for zone in zones {
        let id = format!("ocellus_{}_{cam}_zone_{}", topics.device, safe_id(zone));
        let state = topics.zone(camera, zone);
        let mut n = base(format!("{camera} {zone} objects"), &id, state.clone());
        n["state_class"] = "measurement".into();
        n["unit_of_measurement"] = "objects".into();
        out.push((format!("{prefix}/sensor/{id}/config"), n.to_string()));
        let mut occupied = base(
            format!("{camera} {zone} occupied"),
            &format!("{id}_occupancy"),
            state,
        );
        occupied["device_class"] = "occupancy".into();
        occupied["value_template"] = "{{ 'ON' if value | int > 0 else 'OFF' }}".into();
        out.push((
            format!("{prefix}/binary_sensor/{id}/occupancy/config"),
            occupied.to_string(),
        ));
    }
    out
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

    /// Per line and direction a counter Home Assistant keeps long-term statistics of, on the
    /// topic the bus writes the line's total to; per zone an objects sensor and an occupied
    /// binary_sensor on the zone's topic.
    #[test]
    fn lines_are_total_increasing_counters_and_zones_occupancy_sensors() {
        let t = topics();
        let configs = places_discovery(&t, "front", &["door".into()], &["yard".into()]);
        assert_eq!(configs.len(), 4);
        let json = |i: usize| -> serde_json::Value { serde_json::from_str(&configs[i].1).unwrap() };
        for (i, dir) in [(0, "left"), (1, "right")] {
            let v = json(i);
            assert_eq!(v["state_class"], "total_increasing");
            assert_eq!(v["state_topic"], t.line_total("front", "door", dir));
            assert_eq!(
                v["state_topic"],
                format!("ocellus/gate/front/line/door/{dir}")
            );
        }
        assert_eq!(json(2)["state_class"], "measurement");
        assert_eq!(json(2)["state_topic"], t.zone("front", "yard"));
        assert_eq!(json(3)["device_class"], "occupancy");
        assert!(configs[3].0.starts_with("homeassistant/binary_sensor/"));
        let ids: std::collections::BTreeSet<_> =
            (0..4).map(|i| json(i)["unique_id"].to_string()).collect();
        assert_eq!(ids.len(), 4, "unique ids");
    }
}
