//! What a replay did, and the summary `ocellus replay` prints.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::capture::CaptureError;
use crate::db::WriterStats;
use crate::pipeline::values::Event;
use crate::telemetry::metrics::{get, CameraStats};

/// What a replay did.
pub struct ReplayReport {
    pub frames: u64,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub elapsed: Duration,
    /// Finished events in the order they ended.
    pub events: Vec<Event>,
    pub detector: String,
    pub stats: Arc<CameraStats>,
    pub writer: Arc<WriterStats>,
    /// Set when the file decoded fewer frames than its header announced.
    pub truncated: Option<CaptureError>,
    /// With `--record`: what was recorded.
    pub recording: Option<super::ReplayRecording>,
}

impl ReplayReport {
    /// The human summary printed at the end of a replay.
    pub fn summary(&self, video: &Path) -> String {
        let s = &self.stats;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let mut per_label = std::collections::BTreeMap::<&str, usize>::new();
        for e in &self.events {
            *per_label.entry(e.label.as_str()).or_default() += 1;
        }
        let labels = if per_label.is_empty() {
            "none".to_string()
        } else {
            per_label
                .iter()
                .map(|(l, n)| format!("{l} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let commits = get(&self.writer.commits);
        format!(
            "replay   {} ({}x{} @ {:.1} fps)\n\
             frames   {} in {:.2} s = {:.1} fps processed\n\
             detector {} (ran on {} frames{})\n\
             per frame: decode {:.2} ms, motion {:.2} ms, detect {:.2} ms, track+events {:.2} ms{}; \
             store {:.2} ms per commit ({} commits)\n\
             events   {} ({})",
            video.display(),
            self.width,
            self.height,
            self.fps,
            self.frames,
            secs,
            get(&s.processed) as f64 / secs,
            self.detector,
            get(&s.detector_runs),
            match get(&s.detector_crops) {
                0 => String::new(),
                n => format!(", {n} crops"),
            },
            s.decode.mean_ms(),
            s.motion.mean_ms(),
            s.detect.mean_ms(),
            s.track.mean_ms(),
            if get(&s.stream_encodes) > 0 {
                format!(", jpeg {:.2} ms (own thread)", s.encode.mean_ms())
            } else {
                String::new()
            },
            if commits == 0 {
                0.0
            } else {
                get(&self.writer.commit_ns) as f64 / commits as f64 / 1e6
            },
            commits,
            self.events.len(),
            labels
        ) + &self.zone_summary()
            + &self.recording_summary()
    }

    fn recording_summary(&self) -> String {
        let Some(r) = &self.recording else {
            return String::new();
        };
        format!(
            "\nrecorded {} segments, {} bytes, in {}; {} clips in {}",
            r.segments,
            r.bytes,
            r.dir.join("segments").display(),
            r.clips.len(),
            r.dir.join("clips").display()
        )
    }

    /// Per zone, the events that entered it; per line, the crossings each way (empty without
    /// zones or lines).
    fn zone_summary(&self) -> String {
        let counts = self.stats.zones.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for z in &counts.zones {
            let entered = self
                .events
                .iter()
                .filter(|e| e.zones.contains(&z.name))
                .count();
            out.push_str(&format!("\nzone     {}: {entered} events entered", z.name));
        }
        for l in &counts.lines {
            out.push_str(&format!(
                "\nline     {}: {} crossings left, {} right",
                l.name, l.left, l.right
            ));
        }
        out
    }
}
