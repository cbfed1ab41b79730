//! Checks on a whole configuration, run once on what will run (after any command-line
//! overrides): ranges, cross-field rules, and the camera entries. Errors name the key.

use std::path::Path;

use super::RecordMode;
use super::{Config, MqttConfig, Polygon, MAX_TILES};
use crate::config::ConfigError;

impl Config {
    /// Checks every setting; the error names the key (`detector.min_score`, `cameras[1].id`).
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        self.check_detector()
            .and_then(|()| self.mqtt.as_ref().map_or(Ok(()), check_mqtt))
            .and_then(|()| self.check_stages())
            .and_then(|()| self.check_server())
            .and_then(|()| self.check_cameras())
            .map_err(|p| ConfigError::Invalid {
                path: path.to_owned(),
                key: p.key,
                message: p.message,
            })
    }

    /// `[detector]`: scores, input size and preprocessing, tiles, threads.
    fn check_detector(&self) -> Result<(), Problem> {
        let d = &self.detector;
        unit("detector.min_score", d.min_score)?;
        unit("detector.keep_alive_score", d.keep_alive_score)?;
        unit("detector.nms_iou", d.nms_iou)?;
        for (label, v) in &d.min_score_per_label {
            unit(&format!("detector.min_score_per_label.{label}"), *v)?;
        }
        if d.input_width == 0
            || d.input_height == 0
            || d.input_width > 4096
            || d.input_height > 4096
        {
            return Err(problem(
                "detector.input_width/input_height",
                "must be between 1 and 4096",
            ));
        }
        if d.scale.is_some_and(|s| !s.is_finite() || s <= 0.0) {
            return Err(problem("detector.scale", "must be a positive number"));
        }
        if d.mean.is_some_and(|m| m.iter().any(|v| !v.is_finite())) {
            return Err(problem("detector.mean", "must be three numbers"));
        }
        if d.std
            .is_some_and(|m| m.iter().any(|v| !v.is_finite() || *v <= 0.0))
        {
            return Err(problem("detector.std", "must be three positive numbers"));
        }
        if !(1..=MAX_TILES).contains(&d.tiles) {
            return Err(problem(
                "detector.tiles",
                format!("{} is not between 1 and {MAX_TILES}", d.tiles),
            ));
        }
        if d.regions && d.tiles > 1 {
            return Err(problem(
                "detector.regions",
                "and detector.tiles > 1 are two ways of looking closer; choose one",
            ));
        }
        if let Some(what) = rate_problem(d.fps) {
            return Err(problem("detector.fps", what));
        }
        if !(0..=256).contains(&d.threads) {
            return Err(problem(
                "detector.threads",
                format!(
                    "{} is not between 0 (the library's default) and 256",
                    d.threads
                ),
            ));
        }
        Ok(())
    }

    /// `[tracker]`, `[motion]` and `[storage]`.
    fn check_stages(&self) -> Result<(), Problem> {
        unit("tracker.iou_threshold", self.tracker.iou_threshold)?;
        unit("tracker.min_score", self.tracker.min_score)?;
        if self.tracker.min_hits == 0 || self.tracker.score_window == 0 {
            return Err(problem(
                "tracker.min_hits/score_window",
                "must be at least 1",
            ));
        }
        if !(0.0..=100.0).contains(&self.tracker.min_move) {
            return Err(problem(
                "tracker.min_move",
                format!(
                    "{} is not between 0 and 100 box heights",
                    self.tracker.min_move
                ),
            ));
        }
        if self.motion.width < 32 {
            return Err(problem("motion.width", "must be at least 32"));
        }
        if !(0.0..=1.0).contains(&self.motion.light_change_fraction) {
            return Err(problem(
                "motion.light_change_fraction",
                "must be between 0 and 1",
            ));
        }
        if !(1..=100).contains(&self.storage.snapshot_quality) {
            return Err(problem(
                "storage.snapshot_quality",
                "must be between 1 and 100",
            ));
        }
        if self.storage.snapshot_max_side < 16 {
            return Err(problem("storage.snapshot_max_side", "must be at least 16"));
        }
        Ok(())
    }

    /// `[server]`: the address, the token, the limits.
    fn check_server(&self) -> Result<(), Problem> {
        self.check_listen()?;
        if !(1..=100).contains(&self.server.stream_quality) {
            return Err(problem(
                "server.stream_quality",
                "must be between 1 and 100",
            ));
        }
        if self
            .server
            .token
            .as_ref()
            .is_some_and(|t| t.expose().len() < 8)
        {
            return Err(problem("server.token", "must be at least 8 characters"));
        }
        if self.server.max_clients == 0 || self.server.max_message_bytes < 256 {
            return Err(problem(
                "server.max_clients/max_message_bytes",
                "max_clients must be at least 1 and max_message_bytes at least 256",
            ));
        }
        cert_and_key(
            "server",
            ("tls_cert", self.server.tls_cert.is_some()),
            ("tls_key", self.server.tls_key.is_some()),
        )
    }

    /// Every `[[cameras]]` entry: ids, sources, timeouts, masks, zone and line names.
    fn check_cameras(&self) -> Result<(), Problem> {
        let mut seen = std::collections::HashSet::new();
        for (i, cam) in self.cameras.iter().enumerate() {
            let key = format!("cameras[{i}].id");
            if !valid_camera_id(&cam.id) {
                return Err(problem(
                    key,
                    format!("{:?} must be 1-64 letters, digits, '-' or '_'", cam.id),
                ));
            }
            if !seen.insert(cam.id.as_str()) {
                return Err(problem(key, format!("{:?} is used twice", cam.id)));
            }
            if cam.source.trim().is_empty() {
                return Err(problem(format!("cameras[{i}].source"), "is empty"));
            }
            for (name, v) in [
                ("open_timeout_s", cam.open_timeout_s),
                ("read_timeout_s", cam.read_timeout_s),
            ] {
                if !(1..=600).contains(&v) {
                    return Err(problem(
                        format!("cameras[{i}].{name}"),
                        format!("{v} is not between 1 and 600 seconds"),
                    ));
                }
            }
            for (name, v) in [("pre_s", cam.record.pre_s), ("post_s", cam.record.post_s)] {
                if !(0.0..=300.0).contains(&v) {
                    return Err(problem(
                        format!("cameras[{i}].record.{name}"),
                        format!("{v} is not between 0 and 300 seconds"),
                    ));
                }
            }
            let recorded = cam.record_source.as_deref().unwrap_or(&cam.source).trim();
            let raw = recorded.starts_with("/dev/video")
                || recorded.parse::<u32>().is_ok()
                || (recorded.contains('!') && recorded.contains("appsink"));
            let wants = matches!(cam.record.mode, RecordMode::Events | RecordMode::Continuous);
            if raw && wants {
                return Err(problem(
                    format!("cameras[{i}].record.mode"),
                    format!("{recorded:?} gives raw frames, with no compressed stream to record; set record_source to the camera's H.264 stream (an RTSP URL), or record.mode = \"off\" (docs/recording.md)"),
                ));
            }
            if let Some(what) = cam.detector_fps.and_then(rate_problem) {
                return Err(problem(format!("cameras[{i}].detector_fps"), what));
            }
            for (name, polys) in [
                ("object_masks", &cam.object_masks),
                ("motion_masks", &cam.motion_masks),
            ] {
                if let Some(what) = polygon_problem(polys) {
                    return Err(problem(format!("cameras[{i}].{name}"), what));
                }
            }
            let mut names = std::collections::HashSet::new();
            let zone_names = cam.zones.iter().map(|z| ("zones", &z.name));
            for (kind, name) in zone_names.chain(cam.lines.iter().map(|l| ("lines", &l.name))) {
                if !names.insert(name.as_str()) {
                    return Err(problem(
                        format!("cameras[{i}].{kind}"),
                        format!("the name {name:?} is used twice on this camera; zones and lines need their own names"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The listen address must parse, and reaching beyond loopback needs a token (or an
    /// explicit `allow_no_token`).
    fn check_listen(&self) -> Result<(), Problem> {
        let invalid = |message: String| problem("server.listen", message);
        let addr: std::net::SocketAddr = self
            .server
            .listen
            .parse()
            .map_err(|_| invalid(format!("{:?} is not an address:port", self.server.listen)))?;
        if !addr.ip().is_loopback() && self.server.token.is_none() && !self.server.allow_no_token {
            return Err(invalid(format!(
                "{addr} is reachable from the network, so set server.token (or server.allow_no_token = true to serve without one)"
            )));
        }
        Ok(())
    }
}

/// `[mqtt]`: the URL, QoS, topic prefixes, device id, intervals and bounds.
fn check_mqtt(m: &MqttConfig) -> Result<(), Problem> {
    m.endpoint()
        .map_err(|e| problem("mqtt.url", e.to_string()))?;
    if m.qos > 1 {
        return Err(problem("mqtt.qos", format!("{} is not 0 or 1", m.qos)));
    }
    for (key, v) in [
        ("mqtt.topic_prefix", m.topic_prefix.as_str()),
        ("mqtt.discovery_prefix", m.discovery_prefix.as_str()),
    ] {
        if v.is_empty() || v.contains(['+', '#']) || v.starts_with('/') || v.ends_with('/') {
            return Err(problem(
                key,
                format!(
                    "{v:?} must be a topic without wildcards (+, #) or a leading or trailing /"
                ),
            ));
        }
    }
    if let Some(d) = &m.device_id {
        if !valid_camera_id(d) {
            return Err(problem(
                "mqtt.device_id",
                format!("{d:?} must be 1-64 letters, digits, '-' or '_'"),
            ));
        }
    }
    if !(1..=86_400).contains(&m.stats_interval_s) {
        return Err(problem(
            "mqtt.stats_interval_s",
            format!("{} is not between 1 and 86400", m.stats_interval_s),
        ));
    }
    if m.outbox_max_messages == 0 || m.outbox_max_age_h == 0 {
        return Err(problem(
            "mqtt.outbox_max_messages/outbox_max_age_h",
            "must be at least 1",
        ));
    }
    let tls = m.endpoint().is_ok_and(|e| e.tls);
    for (key, set) in [
        ("mqtt.ca_file", m.ca_file.is_some()),
        ("mqtt.client_cert", m.client_cert.is_some()),
    ] {
        if set && !tls {
            return Err(problem(
                key,
                format!("is for TLS; the url {:?} is not mqtts://", m.url),
            ));
        }
    }
    cert_and_key(
        "mqtt",
        ("client_cert", m.client_cert.is_some()),
        ("client_key", m.client_key.is_some()),
    )
}

/// A certificate and its private key come together: the one of `section` that is missing is
/// named.
fn cert_and_key(
    section: &str,
    (cert, has_cert): (&str, bool),
    (key, has_key): (&str, bool),
) -> Result<(), Problem> {
    match (has_cert, has_key) {
        (true, false) => Err(problem(
            format!("{section}.{key}"),
            format!("{cert} is set, so set {key} (its private key) too"),
        )),
        (false, true) => Err(problem(
            format!("{section}.{cert}"),
            format!("{key} is set, so set {cert} (its certificate) too"),
        )),
        _ => Ok(()),
    }
}

/// What is wrong with a setting, before the file's path is put to it.
struct Problem {
    key: String,
    message: String,
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        key: key.into(),
        message: message.into(),
    }
}

/// A setting that must lie in 0..=1.
fn unit(key: &str, v: f32) -> Result<(), Problem> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(problem(key, format!("{v} is not between 0 and 1")))
    }
}

/// The first thing wrong with a list of polygons (each needs 3+ points, every coordinate in
/// 0-1), said for a person; `None` when they are fine.
fn polygon_problem(polygons: &[Polygon]) -> Option<String> {
    polygons.iter().enumerate().find_map(|(i, poly)| {
        if poly.len() < 3 {
            return Some(format!(
                "polygon {i} has {} points; a polygon needs at least 3",
                poly.len()
            ));
        }
        poly.iter()
            .find(|p| !p.iter().all(|v| (0.0..=1.0).contains(v)))
            .map(|p| {
                format!(
                    "polygon {i} has the point [{}, {}]; coordinates are fractions of the frame, 0 to 1",
                    p[0], p[1]
                )
            })
    })
}

/// Camera ids appear in URLs, journal fields and file names, so they are kept plain.
pub fn valid_camera_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// What is wrong with a detector rate, if anything: 0 (every frame) up to 120 a second.
fn rate_problem(fps: f32) -> Option<String> {
    (!(0.0..=120.0).contains(&fps))
        .then(|| format!("{fps} is not between 0 (every frame) and 120 detector runs a second"))
}
