//! Plain data that crosses stage boundaries: boxes, detections, events and the messages built from them.
//!
//! Everything here is `serde`-serialisable; the live feed broadcasts exactly these structs, and
//! `ocellus replay --json` prints [`Event`] as one JSON line each.

use serde::{Deserialize, Serialize};

pub use crate::base::geometry::BBox;

/// One object found in one frame by a detector, after filtering and NMS.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub class_id: u32,
    pub label: String,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: BBox,
    /// Below the confident score (`detector.min_score`), above `detector.keep_alive_score`: it
    /// may keep an existing track alive but never starts one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub weak: bool,
    /// The box's colour signature, when the pipeline computed one (for the tracker only).
    #[serde(skip)]
    pub appearance: Option<crate::pipeline::appearance::Appearance>,
}

/// A tracked object that became an event: something worth telling a person about.
///
/// Times are milliseconds: since the Unix epoch for live cameras, since the start of the clip in
/// replay (so that replays are deterministic).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Database id; allocated by the pipeline when the event starts, unique within one database.
    pub id: i64,
    pub camera: String,
    pub label: String,
    /// The tracker's id for the object; unique per camera pipeline run, not across restarts.
    pub track_id: u64,
    /// When the object was first seen (not when it was confirmed).
    pub start_ms: i64,
    /// When the object was last seen; `None` while the event is ongoing.
    pub end_ms: Option<i64>,
    /// Highest detector score seen for the object.
    pub top_score: f32,
    /// The box at the moment of `top_score`.
    #[serde(rename = "box")]
    pub best_box: BBox,
    /// When `top_score` was seen.
    pub best_ms: i64,
    /// Frames in which the object was detected.
    pub hits: u32,
    /// The object has stayed in one spot for `tracker.stationary_after_ms` (a parked car); it
    /// becomes false again when it moves.
    #[serde(default)]
    pub stationary: bool,
    /// The camera's zones the object entered, in order (docs/zones.md).
    #[serde(default)]
    pub zones: Vec<String>,
    /// The camera's counting lines the object crossed, with direction and time.
    #[serde(default)]
    pub crossings: Vec<crate::pipeline::zones::Crossing>,
    /// Where the event's video is (`/api/events/{id}/clip.mp4`), when its camera records; set
    /// by whoever shows the event (the fan-out, the API), never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<String>,
}

impl Event {
    pub fn duration_ms(&self) -> Option<i64> {
        self.end_ms.map(|end| end - self.start_ms)
    }
}

/// Filters for listing events, newest first. `before_id` is the paging cursor: the id of the
/// last event of the previous page.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventQuery {
    pub camera: Option<String>,
    pub label: Option<String>,
    /// Events that started at or after this time (ms).
    pub from_ms: Option<i64>,
    /// Events that started before this time (ms).
    pub to_ms: Option<i64>,
    pub before_id: Option<i64>,
    /// At most this many (capped by the caller).
    pub limit: Option<u32>,
    /// Only events whose object entered this zone.
    pub zone: Option<String>,
}

/// What happened to an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The track was confirmed; the event exists (and is in the database) from now on.
    Start,
    /// A better view of the object (higher score; rate-limited per event), or the object
    /// became stationary or moved again (at once).
    Update,
    /// The object has been unseen for the configured time, or the source ended.
    End,
}

impl EventKind {
    /// The kind as the protocol and the journal write it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Start => "start",
            EventKind::Update => "update",
            EventKind::End => "end",
        }
    }
}

/// An event message as broadcast to clients and handed to the database writer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventMsg {
    pub kind: EventKind,
    /// The message's place among its event's messages: 0 for the start, one more for each
    /// update, the end last. (`id`, `rev`) names one change: what MQTT consumers deduplicate on.
    #[serde(default)]
    pub rev: u32,
    pub event: Event,
}

/// One tracked box in one processed frame, for overlays: the track's filtered box and the score
/// of the detection that continued it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrackedBox {
    pub track_id: u64,
    pub label: String,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: BBox,
    /// Whether the track is confirmed (has an event); unconfirmed boxes are candidates.
    pub confirmed: bool,
    /// The event id once confirmed.
    pub event_id: Option<i64>,
    /// The object has stayed in one spot for `tracker.stationary_after_ms`.
    pub stationary: bool,
    /// The detector did not run on this frame (`detector.fps`): the box is where the tracker
    /// predicts the object, from its last detections.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub predicted: bool,
    /// The camera's zones the object is in now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
}

/// The result of processing one frame: the boxes of the tracks matched in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectionsMsg {
    pub camera: String,
    pub seq: u64,
    pub ts_ms: i64,
    pub width: u32,
    pub height: u32,
    /// Whether the object detector ran on this frame (the motion gate may skip it).
    pub detector_ran: bool,
    pub motion: bool,
    pub tracks: Vec<TrackedBox>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_identical_boxes_is_one_and_of_disjoint_boxes_zero() {
        let a = BBox::new(10.0, 10.0, 20.0, 20.0);
        assert!((a.iou(&a) - 1.0).abs() < 1e-6);
        assert_eq!(a.iou(&BBox::new(100.0, 100.0, 5.0, 5.0)), 0.0);
    }

    #[test]
    fn iou_of_half_overlapping_boxes_is_one_third() {
        let a = BBox::new(0.0, 0.0, 10.0, 10.0);
        let b = BBox::new(5.0, 0.0, 10.0, 10.0);
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-6);
    }

    #[test]
    fn clamp_keeps_only_the_part_inside_the_frame() {
        let b = BBox::new(-10.0, 90.0, 30.0, 30.0).clamp_to(100.0, 100.0);
        assert_eq!(b, BBox::new(0.0, 90.0, 20.0, 10.0));
    }

    #[test]
    fn event_serialises_box_under_the_name_box() {
        let e = Event {
            id: 1,
            camera: "c".into(),
            label: "person".into(),
            track_id: 2,
            start_ms: 0,
            end_ms: Some(100),
            top_score: 0.5,
            best_box: BBox::new(1.0, 2.0, 3.0, 4.0),
            best_ms: 50,
            hits: 3,
            stationary: false,
            zones: Vec::new(),
            crossings: Vec::new(),
            clip: None,
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["box"]["w"], 3.0);
        assert_eq!(v["end_ms"], 100);
    }
}
