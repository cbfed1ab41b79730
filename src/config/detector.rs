//! `[detector]`: which detector runs, on which runtime, with which model and how its input is
//! made (a model's `model.toml` is this table), and the score thresholds.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::find_data;

/// Which detector to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DetectorKind {
    /// The DNN model when its file exists, otherwise the HOG people detector (with a warning).
    #[default]
    Auto,
    /// The DNN model; a missing model file is an error.
    Dnn,
    /// OpenCV's built-in HOG people detector; needs no model file.
    Hog,
    /// No object detector: motion only, no events.
    None,
}

/// Which inference library runs a DNN model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DetectorRuntime {
    /// ONNX Runtime when its library can be loaded and takes the model, else OpenCV's DNN
    /// module (with a warning saying why).
    #[default]
    Auto,
    /// ONNX Runtime, loaded at run time; an error when its library cannot be loaded.
    Onnxruntime,
    /// OpenCV's DNN module.
    Opencv,
}

impl DetectorRuntime {
    pub fn name(self) -> &'static str {
        match self {
            DetectorRuntime::Auto => "auto",
            DetectorRuntime::Onnxruntime => "onnxruntime",
            DetectorRuntime::Opencv => "opencv",
        }
    }
}

/// An ONNX Runtime execution provider (where the network runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    /// NVIDIA TensorRT (Jetson, desktop GPUs); needs an ONNX Runtime built with it.
    Tensorrt,
    /// NVIDIA CUDA; needs an ONNX Runtime built with it.
    Cuda,
    /// The CPU; always there, and where every node another provider cannot run goes.
    Cpu,
}

impl ExecutionProvider {
    pub fn name(self) -> &'static str {
        match self {
            ExecutionProvider::Tensorrt => "tensorrt",
            ExecutionProvider::Cuda => "cuda",
            ExecutionProvider::Cpu => "cpu",
        }
    }
}

/// How a model's output tensor is laid out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelFamily {
    /// FastestDet: output [1, 85, H, W] grid, stretched input.
    #[default]
    Fastestdet,
    /// Ultralytics YOLOv8 / YOLO11 export: output [1, 4+C, N], letterboxed input.
    Yolo,
    /// YOLOv5 export: output [1, N, 5+C], letterboxed input.
    Yolov5,
    /// NanoDet (GFL head): per stride [1, N, C] class scores and [1, N, 4*B] side bins;
    /// stretched BGR input, normalised per channel.
    Nanodet,
}

impl ModelFamily {
    pub fn name(self) -> &'static str {
        match self {
            ModelFamily::Fastestdet => "fastestdet",
            ModelFamily::Yolo => "yolo",
            ModelFamily::Yolov5 => "yolov5",
            ModelFamily::Nanodet => "nanodet",
        }
    }

    /// How the family's published models take their input, unless `model.toml` (the
    /// `[detector]` table) says otherwise.
    pub fn preprocess(self) -> Preprocess {
        let unit = Preprocess {
            channels: ChannelOrder::Bgr,
            resize: ResizeMode::Stretch,
            scale: 1.0 / 255.0,
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        match self {
            ModelFamily::Fastestdet => unit,
            ModelFamily::Yolo | ModelFamily::Yolov5 => Preprocess {
                channels: ChannelOrder::Rgb,
                resize: ResizeMode::Letterbox,
                ..unit
            },
            // NanoDet's own normalisation (nanodet-g.yml), on 0..255 BGR pixels.
            ModelFamily::Nanodet => Preprocess {
                scale: 1.0,
                mean: [103.53, 116.28, 123.675],
                std: [57.375, 57.12, 58.395],
                ..unit
            },
        }
    }
}

/// The order of the colour channels a model takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// As OpenCV decodes frames.
    Bgr,
    Rgb,
}

/// How a frame is fitted to the network's input size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Scaled to the input size, ignoring the aspect ratio.
    Stretch,
    /// Scaled to fit keeping the aspect ratio, centred, padded with grey (114).
    Letterbox,
}

/// How a frame becomes the network's input tensor: `(pixel * scale - mean[c]) / std[c]` per
/// channel, in `channels` order, after `resize`. Means and deviations are in the model's channel
/// order and in scaled units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preprocess {
    pub channels: ChannelOrder,
    pub resize: ResizeMode,
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// When the object detector runs on a frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectWhen {
    /// Every frame (at most `fps` a second).
    Always,
    /// Only while there is motion or a moving track (at most `fps` a second); an object that
    /// stays put is not looked at again until motion touches it.
    #[default]
    Motion,
}

/// `[detector]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// `auto`, `dnn`, `hog` or `none`.
    pub kind: DetectorKind,
    /// What runs a DNN model: `auto` (ONNX Runtime when its library loads, else OpenCV),
    /// `onnxruntime` or `opencv`. Both take the same input tensor and give the same boxes.
    pub runtime: DetectorRuntime,
    /// The ONNX Runtime shared library. Unset: `ORT_DYLIB_PATH`, then the system's library
    /// path (`libonnxruntime.so`, `libonnxruntime.so.1`, a distribution's
    /// `libonnxruntime.so.1.N`), then the copy scripts/setup.sh puts in `vendor/onnxruntime/`.
    pub onnxruntime_library: Option<PathBuf>,
    /// ONNX Runtime execution providers in order of preference, e.g. `["tensorrt", "cuda",
    /// "cpu"]`; one this ONNX Runtime lacks is skipped with a warning. The CPU is always the
    /// last resort.
    pub execution_providers: Vec<ExecutionProvider>,
    /// Output layout of the model: `fastestdet`, `yolo` or `yolov5`.
    pub family: ModelFamily,
    /// The ONNX model file.
    pub model: PathBuf,
    /// Class names, one a line, in the model's class order.
    pub labels: PathBuf,
    /// Network input width in pixels.
    pub input_width: u32,
    /// Network input height in pixels.
    pub input_height: u32,
    /// Channel order the model takes, `bgr` or `rgb`; unset: the family's (below).
    pub channels: Option<ChannelOrder>,
    /// `stretch` or `letterbox`; unset: the family's (fastestdet and nanodet stretch, yolo and
    /// yolov5 letterbox).
    pub resize: Option<ResizeMode>,
    /// Pixels (0..255) are multiplied by this; unset: 1/255, or 1 for nanodet.
    pub scale: Option<f32>,
    /// Subtracted per channel after scaling (model channel order); unset: the family's.
    pub mean: Option<[f32; 3]>,
    /// Divided per channel after the mean (model channel order); unset: the family's.
    pub std: Option<[f32; 3]>,
    /// Minimum score for a confident detection, one that can start a track, unless
    /// `min_score_per_label` says otherwise.
    pub min_score: f32,
    /// Weaker detections, down to this score, are handed to the tracker too, but only to keep
    /// an existing track alive through a poorly seen frame (ByteTrack's second stage); they
    /// never start a track. Set it to `min_score` or above to turn this off.
    pub keep_alive_score: f32,
    /// Per-label minimum scores, e.g. `{ person = 0.6 }`.
    pub min_score_per_label: BTreeMap<String, f32>,
    /// Only these labels are reported; empty means every label of the model. The default lists
    /// people, vehicles and animals (under both COCO spellings where they differ).
    pub labels_allow: Vec<String>,
    /// Detections smaller than this many square pixels (source frame) are dropped.
    pub min_box_area: f32,
    /// Boxes of the same class overlapping more than this IoU are merged by NMS.
    pub nms_iou: f32,
    /// `always` or `motion` (only while there is motion or a moving track).
    pub when: DetectWhen,
    /// Detector runs per second per camera, on the frames' clock (0: every frame); between
    /// runs the tracker carries the tracks on their predicted paths. A camera's
    /// `detector_fps` overrides it. Replay keeps it too, so a recording is judged as the
    /// live camera would be. (`max_fps`, its old name, is still read.)
    #[serde(alias = "max_fps")]
    pub fps: f32,
    /// Threads one inference may use: OpenCV's thread count, or ONNX Runtime's intra-op
    /// threads (0: the library's default, one a core).
    pub threads: i32,
    /// The frame is cut into this many side-by-side tiles, overlapping by a quarter of a tile,
    /// and the network runs on each at its input size: small, far objects get that many times
    /// the pixels, for that many times the detector's time. 1: the whole frame at once.
    pub tiles: u32,
    /// Look only where something moves or is tracked: the network sees crops of its own input
    /// size around motion and around live tracks (merged where they overlap), at the camera's
    /// resolution, instead of the whole frame scaled down; the whole frame when that covers
    /// most of it, and every 5 s so nothing waits for motion. For cameras much larger than the
    /// network's input (small, far objects); off by default (BENCHMARKS.md says why).
    pub regions: bool,
}

/// More tiles than this cost more than they give: each is a full network pass.
pub const MAX_TILES: u32 = 4;

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            kind: DetectorKind::Auto,
            runtime: DetectorRuntime::Auto,
            onnxruntime_library: None,
            execution_providers: vec![ExecutionProvider::Cpu],
            family: ModelFamily::Nanodet,
            model: PathBuf::from(DEFAULT_MODEL),
            labels: PathBuf::from("models/nanodet-g/coco80.names"),
            input_width: 384,
            input_height: 288,
            channels: None,
            resize: None,
            scale: None,
            mean: None,
            std: None,
            min_score: 0.4,
            keep_alive_score: 0.15,
            min_score_per_label: BTreeMap::new(),
            labels_allow: [
                "person",
                "bicycle",
                "car",
                "motorcycle",
                "motorbike", // the Darknet name, used by FastestDet's labels
                "bus",
                "truck",
                "bird",
                "cat",
                "dog",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            min_box_area: 300.0,
            nms_iou: 0.45,
            when: DetectWhen::Motion,
            fps: DEFAULT_FPS,
            threads: 0,
            tiles: 1,
            regions: false,
        }
    }
}

/// Detector runs a second by default: Frigate's `detect` rate too. Measured in BENCHMARKS.md
/// (event truth at 10 fps against 5 fps detection; the cameras a box can carry).
pub(super) const DEFAULT_FPS: f32 = 5.0;

/// The default model: NanoDet-g quantised to int8, made by models/fetch.sh (paths relative to
/// where the data is); its fp32 original is installed beside it.
pub const DEFAULT_MODEL: &str = "models/nanodet-g/nanodet-g-384x288-int8.onnx";
/// The smallest model, and the fallback when the default is not installed.
pub const FASTESTDET_MODEL: &str = "models/fastestdet/FastestDet.onnx";

impl DetectorConfig {
    /// FastestDet's settings in place of the model's own (family, files, input, preprocessing
    /// and score thresholds; models/fastestdet/model.toml), the rest of `self` kept.
    pub fn fastestdet(&self) -> DetectorConfig {
        DetectorConfig {
            family: ModelFamily::Fastestdet,
            model: PathBuf::from(FASTESTDET_MODEL),
            labels: PathBuf::from("models/fastestdet/coco.names"),
            input_width: 352,
            input_height: 352,
            channels: None,
            resize: None,
            scale: None,
            mean: None,
            std: None,
            min_score: 0.4,
            keep_alive_score: 0.15,
            min_score_per_label: BTreeMap::new(),
            ..self.clone()
        }
    }

    /// When the model is the default one (wherever the config says it is installed) and it is
    /// missing, FastestDet's settings if FastestDet is there (in the working directory, the
    /// installed data or the source checkout).
    pub fn fastestdet_fallback(&self) -> Option<DetectorConfig> {
        if !self.model.ends_with(DEFAULT_MODEL) || self.model.exists() {
            return None;
        }
        let mut f = self.fastestdet();
        for p in [&mut f.model, &mut f.labels] {
            if !p.exists() {
                *p = find_data(p)?;
            }
        }
        Some(f)
    }

    /// `self` with the fp32 model an int8 one was made from (`NAME-int8.onnx` -> `NAME.onnx`),
    /// when that is installed beside it: what OpenCV's DNN module runs (it cannot run the
    /// quantised graph), and what runs when the int8 file is missing.
    pub fn float_fallback(&self) -> Option<DetectorConfig> {
        let name = self.model.file_name()?.to_str()?;
        let stem = name.strip_suffix("-int8.onnx")?;
        let model = self.model.with_file_name(format!("{stem}.onnx"));
        model.exists().then(|| DetectorConfig {
            model,
            ..self.clone()
        })
    }

    /// The input tensor's recipe: the family's, with what the config sets instead.
    pub fn preprocess(&self) -> Preprocess {
        let p = self.family.preprocess();
        Preprocess {
            channels: self.channels.unwrap_or(p.channels),
            resize: self.resize.unwrap_or(p.resize),
            scale: self.scale.unwrap_or(p.scale),
            mean: self.mean.unwrap_or(p.mean),
            std: self.std.unwrap_or(p.std),
        }
    }

    /// The minimum score for `label`.
    pub fn min_score_for(&self, label: &str) -> f32 {
        self.min_score_per_label
            .get(label)
            .copied()
            .unwrap_or(self.min_score)
    }
}
