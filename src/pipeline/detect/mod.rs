//! Object detection: the detector interface, the choice of detector from config, and the
//! label/score/area filtering and NMS every detector's output goes through.

pub mod decode;
pub mod dnn;
pub mod hog;
pub mod onnxruntime;
pub mod regions;
mod shared;
pub mod tiles;

use std::path::Path;

use opencv::core::Mat;
use serde::Serialize;

use crate::config::{DetectorConfig, DetectorKind, DetectorRuntime};
use crate::pipeline::values::Detection;

use decode::RawDetection;

/// A detector that cannot be built or run.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("model file {0} does not exist; run scripts/setup.sh to fetch the default model, or set detector.model")]
    ModelMissing(std::path::PathBuf),
    #[error("cannot load model {path}: {reason}")]
    ModelLoad {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("labels file {path}: {reason}")]
    Labels {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("model {path} gave output of shape {shape:?}, which is not what the `{family}` decoder expects ({expected})")]
    OutputShape {
        path: std::path::PathBuf,
        family: &'static str,
        shape: Vec<i32>,
        expected: String,
    },
    /// A model whose input is fixed at another size than the config's: the settings of another
    /// model (its family, input size, preprocessing) are likely still in place.
    #[error("model {path} takes {model_w}x{model_h} input, but detector.input_width x input_height is {config_w}x{config_h}: set input_width = {model_w} and input_height = {model_h}, and the family and preprocessing of this model{hint}")]
    InputSize {
        path: std::path::PathBuf,
        model_w: i64,
        model_h: i64,
        config_w: u32,
        config_h: u32,
        /// Where the model's own settings are, when it has a model.toml beside it.
        hint: String,
    },
    #[error("OpenCV: {0}")]
    OpenCv(#[from] opencv::Error),
    #[error("ONNX Runtime: {0}")]
    Onnxruntime(String),
    #[error("detector.runtime = \"onnxruntime\", but no ONNX Runtime library could be loaded ({tried}); install libonnxruntime, run scripts/setup.sh (it fetches one into vendor/onnxruntime/), set detector.onnxruntime_library or ORT_DYLIB_PATH, or set detector.runtime = \"opencv\"")]
    NoOnnxruntime { tried: String },
}

/// Finds objects in a BGR frame. Implementations own their OpenCV state and are driven from one
/// detect thread, so they need `Send` but not `Sync`.
pub trait ObjectDetector: Send {
    /// Detections in source-frame pixels, filtered and NMS'd, best first.
    fn detect(&mut self, frame: &Mat) -> Result<Vec<Detection>, DetectError>;

    /// The same, looking only inside `crops` of the frame (`detector.regions`), each at the
    /// network's input size; boxes cut by a crop's edge are joined ([`regions::join`]). A
    /// detector that cannot look at parts (HOG) looks at the whole frame.
    fn detect_crops(
        &mut self,
        frame: &Mat,
        _crops: &[regions::Crop],
    ) -> Result<Vec<Detection>, DetectError> {
        self.detect(frame)
    }

    /// What this detector is and what runs it, for logs, summaries and `/api/stats`.
    fn info(&self) -> DetectorInfo;

    /// A short description, e.g. `fastestdet models/fastestdet/FastestDet.onnx 352x352 on
    /// onnxruntime 1.32.0 (cpu)`.
    fn describe(&self) -> String {
        self.info().to_string()
    }
}

/// A detector that is not the one configured (the model file is missing and `kind = "auto"`
/// fell back to HOG): it says so in its info, which the stats, `/healthz` and a periodic log
/// line show.
struct Fallback {
    inner: Box<dyn ObjectDetector>,
    warning: String,
}

impl ObjectDetector for Fallback {
    fn detect(&mut self, frame: &Mat) -> Result<Vec<Detection>, DetectError> {
        self.inner.detect(frame)
    }

    fn detect_crops(
        &mut self,
        frame: &Mat,
        crops: &[regions::Crop],
    ) -> Result<Vec<Detection>, DetectError> {
        self.inner.detect_crops(frame, crops)
    }

    fn info(&self) -> DetectorInfo {
        DetectorInfo {
            warning: Some(self.warning.clone()),
            ..self.inner.info()
        }
    }
}

/// A detector as reported in the log, a replay's summary and `GET /api/stats`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DetectorInfo {
    /// Set when this is not the detector the config asked for, and why (a missing model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// `dnn` or `hog`.
    pub kind: &'static str,
    pub family: Option<&'static str>,
    pub model: Option<String>,
    /// The network's input width and height.
    pub input: Option<[u32; 2]>,
    pub tiles: u32,
    /// `onnxruntime` or `opencv`: what runs the network.
    pub runtime: &'static str,
    pub runtime_version: String,
    /// The execution provider that takes the network's nodes first (`cpu`, `cuda`, ...).
    pub provider: &'static str,
}

#[cfg(test)]
impl DetectorInfo {
    /// What a test's planted detector reports.
    pub(crate) fn planted(kind: &'static str) -> Self {
        Self {
            warning: None,
            kind,
            family: None,
            model: None,
            input: None,
            tiles: 1,
            runtime: "none",
            runtime_version: String::new(),
            provider: "cpu",
        }
    }
}

impl std::fmt::Display for DetectorInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.family, &self.model, &self.input) {
            (Some(family), Some(model), Some([w, h])) => write!(f, "{family} {model} {w}x{h}")?,
            _ => write!(f, "{} people detector (built into OpenCV)", self.kind)?,
        }
        if self.tiles > 1 {
            write!(f, ", {} tiles", self.tiles)?;
        }
        write!(
            f,
            " on {} {} ({})",
            self.runtime, self.runtime_version, self.provider
        )
    }
}

/// Builds the configured detector; `None` when `kind = "none"`. Fails on a missing or broken
/// model, so that it can be called before anything else is created.
pub fn build(cfg: &DetectorConfig) -> Result<Option<Box<dyn ObjectDetector>>, DetectError> {
    Ok(build_many(cfg, 1)?.pop())
}

/// Builds `n` detectors of the configured kind (none when `kind = "none"`), for threads that
/// detect at once: each has its own network state, and with ONNX Runtime their sessions share
/// the model's pre-packed weights.
pub fn build_many(
    cfg: &DetectorConfig,
    n: usize,
) -> Result<Vec<Box<dyn ObjectDetector>>, DetectError> {
    if cfg.threads > 0 {
        opencv::core::set_num_threads(cfg.threads)?;
    }
    let hog = |n| -> Result<Vec<Box<dyn ObjectDetector>>, DetectError> {
        (0..n)
            .map(|_| Ok(Box::new(hog::HogDetector::new(cfg)?) as Box<dyn ObjectDetector>))
            .collect()
    };
    match cfg.kind {
        DetectorKind::None => Ok(Vec::new()),
        DetectorKind::Hog => hog(n),
        DetectorKind::Dnn => build_dnn(cfg, n),
        DetectorKind::Auto => {
            if cfg.model.exists() {
                return build_dnn(cfg, n);
            }
            if let Some(float) = cfg.float_fallback() {
                let warning = format!(
                    "the int8 model {} is not installed: running its fp32 original, about 1.8x slower; run models/fetch.sh or install the package",
                    cfg.model.display()
                );
                tracing::warn!(model = %cfg.model.display(), fallback = %float.model.display(), "{warning}");
                return Ok(with_warning(build_dnn(&float, n)?, &warning));
            }
            if let Some(smaller) = cfg.fastestdet_fallback() {
                let warning = format!(
                    "the default model, NanoDet-g ({}), is not installed: using FastestDet, which also takes cones, signs and pairs of people for people (about one person box in three is right, against more than eight in ten); run models/fetch.sh (it needs python3-onnx) or install the package",
                    cfg.model.display()
                );
                tracing::warn!(model = %cfg.model.display(), fallback = %smaller.model.display(), "{warning}");
                return Ok(with_warning(build_dnn(&smaller, n)?, &warning));
            }
            let warning = format!(
                "the model file {} does not exist: detecting people only, with OpenCV's HOG detector (slower and less accurate); install the model (the Debian package has it, scripts/setup.sh fetches it) or set detector.model",
                cfg.model.display()
            );
            tracing::warn!(model = %cfg.model.display(), "{warning}");
            Ok(with_warning(hog(n)?, &warning))
        }
    }
}

/// A detector for each of `cameras` cameras (none when `kind = "none"`). Where there are more
/// cameras than the box's cores can run inferences at once, the cameras take turns with that
/// many ([`shared`]): each holds a copy of the network's state, and more running at once than
/// there are cores only makes each slower.
pub fn for_cameras(
    cfg: &DetectorConfig,
    cameras: usize,
) -> Result<Vec<Box<dyn ObjectDetector>>, DetectError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let needed = shared::needed(cameras, cores, cfg.threads.max(0) as usize);
    let detectors = build_many(cfg, needed)?;
    if detectors.is_empty() || needed == cameras {
        return Ok(detectors);
    }
    tracing::info!(
        cameras,
        detectors = needed,
        "{cameras} cameras take turns with {needed} detectors, as many as the cores run at once"
    );
    Ok(shared::share(detectors, cameras))
}

/// Marks each of `detectors` as not the one configured, with the reason.
fn with_warning(
    detectors: Vec<Box<dyn ObjectDetector>>,
    warning: &str,
) -> Vec<Box<dyn ObjectDetector>> {
    detectors
        .into_iter()
        .map(|inner| {
            Box::new(Fallback {
                inner,
                warning: warning.to_string(),
            }) as Box<dyn ObjectDetector>
        })
        .collect()
}

/// DNN detectors on the configured runtime: ONNX Runtime when asked for or (`auto`) when its
/// library loads and takes the model, else OpenCV's DNN module.
fn build_dnn(cfg: &DetectorConfig, n: usize) -> Result<Vec<Box<dyn ObjectDetector>>, DetectError> {
    if !cfg.model.exists() {
        return Err(DetectError::ModelMissing(cfg.model.clone()));
    }
    let opencv = |n| -> Result<Vec<Box<dyn ObjectDetector>>, DetectError> {
        // OpenCV 4.6 cannot run an int8 (QDQ) graph: its fp32 original, where it is installed.
        let float_cfg = cfg.float_fallback().inspect(|float| {
            tracing::warn!(model = %cfg.model.display(), fallback = %float.model.display(), "OpenCV's DNN module cannot run the int8 model: running its fp32 original");
        });
        let cfg = float_cfg.as_ref().unwrap_or(cfg);
        (0..n)
            .map(|_| {
                let engine = dnn::Engine::opencv(cfg)?;
                Ok(Box::new(dnn::DnnDetector::load(cfg, engine)?) as Box<dyn ObjectDetector>)
            })
            .collect()
    };
    let onnxruntime =
        |lib: &onnxruntime::Library| -> Result<Vec<Box<dyn ObjectDetector>>, DetectError> {
            let shared = onnxruntime::Shared::new(&cfg.model)?;
            let mut session_cfg = cfg.clone();
            if n > 1 && cfg.threads == 0 {
                // Detectors working at once are the parallelism: a thread each, not a thread pool
                // each competing for the same cores.
                session_cfg.threads = 1;
            }
            (0..n)
                .map(|_| {
                    let engine = dnn::Engine::onnxruntime(&session_cfg, &shared, &lib.version)?;
                    Ok(Box::new(dnn::DnnDetector::load(cfg, engine)?) as Box<dyn ObjectDetector>)
                })
                .collect()
        };
    match cfg.runtime {
        DetectorRuntime::Opencv => opencv(n),
        DetectorRuntime::Onnxruntime => {
            let lib = onnxruntime::load(cfg.onnxruntime_library.as_deref()).map_err(|e| {
                DetectError::NoOnnxruntime {
                    tried: e.describe(),
                }
            })?;
            onnxruntime(&lib)
        }
        DetectorRuntime::Auto => match onnxruntime::load(cfg.onnxruntime_library.as_deref()) {
            // A model ONNX Runtime refuses may still run on OpenCV; a model both refuse is
            // broken, and ONNX Runtime's reason is the one given.
            Ok(lib) => onnxruntime(&lib).or_else(|ort_err| match opencv(n) {
                Ok(detectors) => {
                    tracing::warn!(error = %ort_err, library = %lib.path.display(), "ONNX Runtime cannot run the model; using OpenCV's DNN module");
                    Ok(detectors)
                }
                Err(_) => Err(ort_err),
            }),
            Err(e) => {
                if e.explicit {
                    tracing::warn!(tried = %e.describe(), "the ONNX Runtime library named cannot be loaded; using OpenCV's DNN module, about 4x slower");
                } else {
                    tracing::warn!(tried = %e.describe(), "no ONNX Runtime library found; using OpenCV's DNN module, about 4x slower (install libonnxruntime or run scripts/setup.sh)");
                }
                opencv(n)
            }
        },
    }
}

/// Reads a labels file: one label a line, blank lines ignored.
pub fn read_labels(path: &Path) -> Result<Vec<String>, DetectError> {
    let text = std::fs::read_to_string(path).map_err(|e| DetectError::Labels {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let labels: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if labels.is_empty() {
        return Err(DetectError::Labels {
            path: path.to_owned(),
            reason: "no labels in it".into(),
        });
    }
    Ok(labels)
}

/// The filters applied after decoding: label allow-list, per-label minimum score, minimum box
/// area, then class-wise NMS.
pub struct PostFilter {
    labels: Vec<String>,
    /// Per class id: the confident score, or `None` when the label is not allowed.
    min_score: Vec<Option<f32>>,
    /// Detections down to this score are kept, marked weak, for the tracker's second stage.
    keep_alive: f32,
    min_area: f32,
    nms_iou: f32,
    /// The lowest of all minimum scores, used to skip candidates while decoding.
    pub floor: f32,
}

impl PostFilter {
    pub fn new(cfg: &DetectorConfig, labels: Vec<String>) -> Self {
        let min_score: Vec<Option<f32>> = labels
            .iter()
            .map(|l| {
                let allowed =
                    cfg.labels_allow.is_empty() || cfg.labels_allow.iter().any(|a| a == l);
                allowed.then(|| cfg.min_score_for(l))
            })
            .collect();
        let keep_alive = cfg.keep_alive_score;
        let floor = min_score
            .iter()
            .flatten()
            .map(|s| s.min(keep_alive))
            .fold(f32::INFINITY, f32::min);
        Self {
            labels,
            min_score,
            keep_alive,
            min_area: cfg.min_box_area,
            nms_iou: cfg.nms_iou,
            floor: if floor.is_finite() { floor } else { 1.0 },
        }
    }

    /// Labels this filter lets through that the model does not know; worth a warning.
    pub fn unknown_allowed<'a>(&self, cfg: &'a DetectorConfig) -> Vec<&'a str> {
        cfg.labels_allow
            .iter()
            .filter(|a| !self.labels.contains(a))
            .map(String::as_str)
            .collect()
    }

    /// Confident detections, then weak ones (each group NMS'd on its own, best first), so that
    /// a weak box never suppresses a confident one.
    pub fn apply(&self, raw: Vec<RawDetection>) -> Vec<Detection> {
        let (mut strong, mut weak) = (Vec::new(), Vec::new());
        for d in raw {
            let Some(Some(min)) = self.min_score.get(d.class_id as usize).copied() else {
                continue;
            };
            if d.bbox.area() < self.min_area {
                continue;
            }
            if d.score >= min {
                strong.push(d);
            } else if d.score >= self.keep_alive {
                weak.push(d);
            }
        }
        let strong = decode::nms(strong, self.nms_iou);
        // A weak box over a confident one of its class is the same object seen twice.
        weak.retain(|w| {
            !strong
                .iter()
                .any(|s| s.class_id == w.class_id && s.bbox.iou(&w.bbox) > self.nms_iou)
        });
        let weak = decode::nms(weak, self.nms_iou);
        let label = |d: &RawDetection| self.labels[d.class_id as usize].clone();
        strong
            .iter()
            .map(|d| (d, false))
            .chain(weak.iter().map(|d| (d, true)))
            .map(|(d, weak)| Detection {
                class_id: d.class_id,
                label: label(d),
                score: d.score,
                bbox: d.bbox,
                weak,
                appearance: None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::values::BBox;

    fn raw(class_id: u32, score: f32, size: f32) -> RawDetection {
        RawDetection {
            class_id,
            score,
            bbox: BBox::new(0.0, 0.0, size, size),
        }
    }

    #[test]
    fn filter_applies_allow_list_per_label_score_and_area() {
        let mut cfg = DetectorConfig {
            labels_allow: vec!["person".into(), "car".into()],
            min_score: 0.5,
            // Above every minimum: no weak detections.
            keep_alive_score: 0.9,
            min_box_area: 100.0,
            ..Default::default()
        };
        cfg.min_score_per_label.insert("car".into(), 0.8);
        let f = PostFilter::new(&cfg, vec!["person".into(), "car".into(), "chair".into()]);
        assert_eq!(f.floor, 0.5);
        let out = f.apply(vec![
            raw(0, 0.6, 20.0),  // person, kept
            raw(1, 0.7, 20.0),  // car under its own threshold
            raw(2, 0.99, 20.0), // chair not allowed
            raw(0, 0.9, 5.0),   // person too small
            raw(7, 0.9, 20.0),  // class id beyond the labels: ignored, no panic
        ]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].label, "person");
        assert_eq!(f.unknown_allowed(&cfg), Vec::<&str>::new());
    }

    #[test]
    fn weak_detections_come_after_confident_ones_and_never_hide_them() {
        let cfg = DetectorConfig {
            labels_allow: vec!["person".into()],
            min_score: 0.5,
            keep_alive_score: 0.2,
            min_box_area: 10.0,
            ..Default::default()
        };
        let f = PostFilter::new(&cfg, vec!["person".into()]);
        assert_eq!(f.floor, 0.2);
        let at = |score, x| RawDetection {
            class_id: 0,
            score,
            bbox: BBox::new(x, 0.0, 20.0, 20.0),
        };
        let out = f.apply(vec![
            at(0.3, 100.0), // weak, alone: kept
            at(0.9, 0.0),   // confident
            at(0.45, 1.0),  // weak, on top of the confident one: the same object
            at(0.1, 200.0), // under keep_alive_score
        ]);
        let got: Vec<(f32, bool)> = out.iter().map(|d| (d.score, d.weak)).collect();
        assert_eq!(got, vec![(0.9, false), (0.3, true)]);
    }
}
