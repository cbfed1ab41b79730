//! `[[cameras]]`: a source, its masks, zones and counting lines, checked as they are read.

use serde::{Deserialize, Serialize, Serializer};

use super::{valid_camera_id, SECRET_SHOWN_AS};
use crate::config::ShapeError;

/// One `[[cameras]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Short id used in events, logs and URLs: letters, digits, `-` and `_`.
    pub id: String,
    /// A video file, a V4L2 device (`/dev/video0`), an `rtsp://` or `http://` URL, or a
    /// GStreamer pipeline ending in `appsink`. Serialised (check-config) without its password.
    #[serde(serialize_with = "source_without_password")]
    pub source: String,
    /// Human-readable name for the dashboard; defaults to the id.
    #[serde(default)]
    pub name: Option<String>,
    /// Set to false to keep the entry but not open the camera.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// RTSP only: `tcp` (the default, as most NVRs use; passes firewalls and loses nothing)
    /// or `udp` (lower latency on a clean network; some cameras only offer it).
    #[serde(default)]
    pub rtsp_transport: RtspTransport,
    /// Network sources: how long connecting may take, until the first frame is decoded
    /// (seconds). A camera that sends a key frame only every few seconds needs that long.
    #[serde(default = "default_open_timeout_s")]
    pub open_timeout_s: u64,
    /// Network sources: a stream that delivers no frame for this long (seconds) has stalled
    /// and is reconnected.
    #[serde(default = "default_read_timeout_s")]
    pub read_timeout_s: u64,
    /// Detector runs per second for this camera; unset: `detector.fps`. A door camera may want
    /// more, a car park fewer.
    #[serde(default)]
    pub detector_fps: Option<f32>,
    /// Polygons in relative coordinates (0-1 of the frame's width and height, so they survive a
    /// resolution change): a detection whose bottom-centre is inside one is dropped. For a spot
    /// that fools the detector: a statue, a poster, a tree that looks like a person.
    #[serde(default)]
    pub object_masks: Vec<Polygon>,
    /// Polygons in relative coordinates: motion inside them does not start the detector. For
    /// trees in the wind, a busy road beyond the fence, a timestamp overlay.
    #[serde(default)]
    pub motion_masks: Vec<Polygon>,
    /// Zones: named polygons (relative coordinates); an event records the zones its object
    /// entered, and the stats count the objects in each (docs/zones.md).
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
    /// Counting lines: named segments (relative coordinates); an event records each crossing
    /// with its direction, and the stats count them (docs/zones.md).
    #[serde(default)]
    pub lines: Vec<LineConfig>,
    /// The camera's main stream, recorded (and never decoded) while `source`, its substream,
    /// is decoded for detection; unset: `source` serves both. Serialised without its password.
    #[serde(default, serialize_with = "optional_source_without_password")]
    pub record_source: Option<String>,
    /// What this camera records (docs/recording.md).
    #[serde(default)]
    pub record: super::record::RecordConfig,
}

/// A polygon of points `[x, y]`, each in 0-1 of the frame's width and height.
pub type Polygon = Vec<[f32; 2]>;

/// `[[cameras.zones]]`: checked as it is read, so a mistake is reported with its line.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "ZoneFields")]
pub struct ZoneConfig {
    /// Letters, digits, `-` and `_`; unique among the camera's zones and lines.
    pub name: String,
    /// 3 or more points `[x, y]` in 0-1. An object is in the zone when the bottom-centre of its
    /// tracked box (where it stands) is inside.
    pub points: Polygon,
    /// Only objects with these labels count (empty: every label).
    pub labels: Vec<String>,
    /// Frames an object must be inside before it has entered (and outside before it has left),
    /// so a box flickering on the edge does not enter and leave over and over.
    pub inertia: u32,
    /// Greater than 0: only an object that stays this many seconds has entered (loitering).
    pub loitering_s: f32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ZoneFields {
    name: String,
    points: Polygon,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default = "default_inertia")]
    inertia: u32,
    #[serde(default)]
    loitering_s: f32,
}

fn default_inertia() -> u32 {
    3
}

impl TryFrom<ZoneFields> for ZoneConfig {
    type Error = ShapeError;
    fn try_from(f: ZoneFields) -> Result<Self, ShapeError> {
        check_name("zone", &f.name)?;
        if f.points.len() < 3 {
            return Err(ShapeError::ZonePoints {
                name: f.name,
                points: f.points.len(),
            });
        }
        check_points("zone", &f.name, &f.points)?;
        if !(1..=1000).contains(&f.inertia) {
            return Err(ShapeError::Inertia {
                name: f.name,
                inertia: f.inertia,
            });
        }
        if !(0.0..=86_400.0).contains(&f.loitering_s) {
            return Err(ShapeError::Loitering {
                name: f.name,
                seconds: f.loitering_s,
            });
        }
        Ok(Self {
            name: f.name,
            points: f.points,
            labels: f.labels,
            inertia: f.inertia,
            loitering_s: f.loitering_s,
        })
    }
}

/// `[[cameras.lines]]`: checked as it is read, so a mistake is reported with its line.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "LineFields")]
pub struct LineConfig {
    /// Letters, digits, `-` and `_`; unique among the camera's zones and lines.
    pub name: String,
    /// Exactly 2 points `[x, y]` in 0-1: the line goes from the first to the second, which
    /// names the crossing directions (`left`: onto the left of that arrow as drawn).
    pub points: [[f32; 2]; 2],
    /// Only objects with these labels count (empty: every label).
    pub labels: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineFields {
    name: String,
    points: Polygon,
    #[serde(default)]
    labels: Vec<String>,
}

impl TryFrom<LineFields> for LineConfig {
    type Error = ShapeError;
    fn try_from(f: LineFields) -> Result<Self, ShapeError> {
        check_name("line", &f.name)?;
        let [a, b] = f.points[..] else {
            return Err(ShapeError::LinePoints {
                name: f.name,
                points: f.points.len(),
            });
        };
        check_points("line", &f.name, &f.points)?;
        if (a[0] - b[0]).abs() < 1e-3 && (a[1] - b[1]).abs() < 1e-3 {
            return Err(ShapeError::SamePoints { name: f.name });
        }
        Ok(Self {
            name: f.name,
            points: [a, b],
            labels: f.labels,
        })
    }
}

fn check_name(what: &'static str, name: &str) -> Result<(), ShapeError> {
    if valid_camera_id(name) {
        Ok(())
    } else {
        Err(ShapeError::Name {
            what,
            name: name.to_string(),
        })
    }
}

fn check_points(what: &'static str, name: &str, points: &[[f32; 2]]) -> Result<(), ShapeError> {
    match points
        .iter()
        .find(|p| !p.iter().all(|v| (0.0..=1.0).contains(v)))
    {
        Some(p) => Err(ShapeError::Point {
            what,
            name: name.to_string(),
            x: p[0],
            y: p[1],
        }),
        None => Ok(()),
    }
}

/// Whether `p` lies inside `poly` (even-odd rule; both in the same coordinates).
pub fn point_in_polygon(poly: &[[f32; 2]], p: (f32, f32)) -> bool {
    let mut inside = false;
    let mut j = poly.len().wrapping_sub(1);
    for i in 0..poly.len() {
        let ([xi, yi], [xj, yj]) = (poly[i], poly[j]);
        if (yi > p.1) != (yj > p.1) && p.0 < (xj - xi) * (p.1 - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// `u` with a `user:password@` (or `user@`) in its authority replaced by `***@`: how a camera's
/// URL appears anywhere outside the capture itself (logs, errors, check-config).
pub fn redact_url(u: &str) -> String {
    let Some(scheme) = u.find("://") else {
        return u.to_string();
    };
    let authority_start = scheme + 3;
    let authority_len = u[authority_start..]
        .find(['/', '?', '#'])
        .unwrap_or(u.len() - authority_start);
    match u[authority_start..authority_start + authority_len].rfind('@') {
        Some(at) => format!(
            "{}{SECRET_SHOWN_AS}{}",
            &u[..authority_start],
            &u[authority_start + at..]
        ),
        None => u.to_string(),
    }
}

fn source_without_password<S: Serializer>(
    source: &impl AsRef<str>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(source.as_ref()))
}

fn optional_source_without_password<S: Serializer>(
    source: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match source {
        Some(u) => s.serialize_some(&redact_url(u)),
        None => s.serialize_none(),
    }
}

fn yes() -> bool {
    true
}

/// `open_timeout_s` when a camera does not set it.
pub fn default_open_timeout_s() -> u64 {
    15
}

/// `read_timeout_s` when a camera does not set it.
pub fn default_read_timeout_s() -> u64 {
    10
}

/// How RTP packets travel from an RTSP camera.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    /// Interleaved in the RTSP TCP connection.
    #[default]
    Tcp,
    /// Separate UDP ports.
    Udp,
}

impl RtspTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            RtspTransport::Tcp => "tcp",
            RtspTransport::Udp => "udp",
        }
    }

    /// The transport to suggest when this one does not get media through.
    pub fn other(self) -> RtspTransport {
        match self {
            RtspTransport::Tcp => RtspTransport::Udp,
            RtspTransport::Udp => RtspTransport::Tcp,
        }
    }
}
