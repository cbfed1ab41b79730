//! The DNN detector: loads an ONNX model, prepares its input the way its family expects
//! (stretch or letterbox, with OpenCV, the same tensor for every runtime), runs it on ONNX
//! Runtime or OpenCV's DNN module, and hands the output tensor to the family's decoder.

use std::path::PathBuf;

use opencv::core::{self, Mat, Rect, Scalar, Size, Vector};
use opencv::dnn;
use opencv::imgproc;
use opencv::prelude::*;

use super::decode::{self, InputMapping, RawDetection, Tensor};
use super::onnxruntime::{OrtEngine, Shared};
use super::{read_labels, regions, tiles, DetectorInfo, ObjectDetector, PostFilter};
use crate::config::{ChannelOrder, DetectorConfig, ModelFamily, Preprocess, ResizeMode};
use crate::pipeline::detect::DetectError;
use crate::pipeline::values::Detection;

/// What runs the network.
pub enum Engine {
    OpenCv {
        net: dnn::Net,
        outputs: Vector<Mat>,
        out_names: Vector<String>,
        /// The outputs of the last run, kept so the decoder can read them in place.
        mats: Vec<Mat>,
        shapes: Vec<Vec<i32>>,
    },
    Onnxruntime {
        engine: Box<OrtEngine>,
        version: String,
    },
}

impl Engine {
    /// OpenCV's DNN module with the model read from its file.
    pub fn opencv(cfg: &DetectorConfig) -> Result<Self, DetectError> {
        let path = &cfg.model;
        let path_str = path.to_str().ok_or_else(|| DetectError::ModelLoad {
            path: path.clone(),
            reason: "path is not valid UTF-8".into(),
        })?;
        let load_err = |e: opencv::Error| DetectError::ModelLoad {
            path: path.clone(),
            reason: first_line(&e.message),
        };
        let mut net = dnn::read_net_from_onnx(path_str).map_err(load_err)?;
        if net.empty().map_err(load_err)? {
            return Err(DetectError::ModelLoad {
                path: path.clone(),
                reason: "OpenCV read no layers from it".into(),
            });
        }
        net.set_preferable_backend(dnn::DNN_BACKEND_OPENCV)?;
        net.set_preferable_target(dnn::DNN_TARGET_CPU)?;
        let out_names = net.get_unconnected_out_layers_names().map_err(load_err)?;
        Ok(Engine::OpenCv {
            net,
            outputs: Vector::new(),
            out_names,
            mats: Vec::new(),
            shapes: Vec::new(),
        })
    }

    /// An ONNX Runtime session of the model, sharing `shared`'s weights.
    pub fn onnxruntime(
        cfg: &DetectorConfig,
        shared: &Shared,
        version: &str,
    ) -> Result<Self, DetectError> {
        Ok(Engine::Onnxruntime {
            engine: Box::new(OrtEngine::new(cfg, shared)?),
            version: version.to_string(),
        })
    }

    /// Runs the network on an NCHW float blob; returns its outputs in the model's order.
    fn infer(&mut self, blob: &Mat) -> Result<Vec<Tensor<'_>>, DetectError> {
        match self {
            Engine::OpenCv {
                net,
                outputs,
                out_names,
                mats,
                shapes,
            } => {
                net.set_input(blob, "", 1.0, Scalar::default())?;
                net.forward(outputs, out_names)?;
                mats.clear();
                mats.extend(outputs.iter());
                shapes.clear();
                shapes.extend(mats.iter().map(|m| m.mat_size().to_vec()));
                mats.iter()
                    .zip(shapes.iter())
                    .map(|(m, shape)| {
                        Ok(Tensor {
                            shape,
                            data: m.data_typed::<f32>()?,
                        })
                    })
                    .collect()
            }
            Engine::Onnxruntime { engine, .. } => {
                let dims = blob.mat_size();
                let [n, c, h, w] = dims[..] else {
                    return Err(DetectError::Onnxruntime(format!(
                        "input blob of shape {:?}, not NCHW",
                        &dims[..]
                    )));
                };
                let shape = [n, c, h, w].map(|d| d.max(0) as usize);
                engine.run(shape, blob.data_typed::<f32>()?)
            }
        }
    }

    fn runtime(&self) -> (&'static str, String, &'static str) {
        match self {
            Engine::OpenCv { .. } => ("opencv", opencv::core::CV_VERSION.to_string(), "cpu"),
            Engine::Onnxruntime { engine, version } => {
                ("onnxruntime", version.clone(), engine.provider)
            }
        }
    }
}

pub struct DnnDetector {
    engine: Engine,
    family: ModelFamily,
    pre: Preprocess,
    path: PathBuf,
    net_w: u32,
    net_h: u32,
    filter: PostFilter,
    n_labels: usize,
    /// Side-by-side tiles each frame is cut into (`detector.tiles`).
    tiles: u32,
    // Reused between frames so the hot path does not allocate images.
    resized: Mat,
    padded: Mat,
    blob: Mat,
}

impl DnnDetector {
    /// Loads and checks the model on `engine`: a forward pass on a blank frame must give a
    /// tensor that the family's decoder understands, with as many classes as the labels file
    /// has lines.
    pub fn load(cfg: &DetectorConfig, engine: Engine) -> Result<Self, DetectError> {
        let path = cfg.model.clone();
        let labels = read_labels(&cfg.labels)?;
        let filter = PostFilter::new(cfg, labels.clone());
        let unknown = filter.unknown_allowed(cfg);
        // The default list names labels of several model families; only a list the user wrote
        // is worth checking against this model.
        if !unknown.is_empty() && cfg.labels_allow != DetectorConfig::default().labels_allow {
            tracing::warn!(labels = ?unknown, "detector.labels_allow names labels the model does not have");
        }
        let mut det = Self {
            engine,
            family: cfg.family,
            pre: cfg.preprocess(),
            path,
            net_w: cfg.input_width,
            net_h: cfg.input_height,
            filter,
            n_labels: labels.len(),
            tiles: cfg.tiles.max(1),
            resized: Mat::default(),
            padded: Mat::default(),
            blob: Mat::default(),
        };
        det.self_test()?;
        Ok(det)
    }

    fn self_test(&mut self) -> Result<(), DetectError> {
        let blank = Mat::new_rows_cols_with_default(
            self.net_h as i32,
            self.net_w as i32,
            core::CV_8UC3,
            Scalar::all(0.0),
        )?;
        self.prepare(&blank)?;
        let map = self.mapping(self.net_w, self.net_h);
        let (family, n_labels, path) = (self.family, self.n_labels, self.path.clone());
        let outputs = self
            .engine
            .infer(&self.blob)
            .map_err(|e| DetectError::ModelLoad {
                path: path.clone(),
                reason: first_line(&e.to_string()),
            })?;
        let shapes: Vec<Vec<i32>> = outputs.iter().map(|t| t.shape.to_vec()).collect();
        let shape_err = |expected: String| DetectError::OutputShape {
            path: path.clone(),
            family: family.name(),
            shape: shapes.concat(),
            expected,
        };
        let first = shapes.first().map(Vec::as_slice).unwrap_or(&[]);
        let classes = match (family, first) {
            (ModelFamily::Fastestdet, [1, c, _, _]) => *c as usize - 5.min(*c as usize),
            (ModelFamily::Yolo, [1, r, _]) => *r as usize - 4.min(*r as usize),
            (ModelFamily::Yolov5, [1, _, c]) => *c as usize - 5.min(*c as usize),
            // Its tensors are found by the class count: decoding is the check.
            (ModelFamily::Nanodet, _) => {
                let size = (self.net_w, self.net_h);
                return match decode::decode(family, n_labels, &outputs, &map, size, 2.0) {
                    Ok(_) => Ok(()),
                    Err(reason) => Err(shape_err(format!(
                        "{} with C = {n_labels} classes, one per line of the labels file ({reason}; got {shapes:?})",
                        decode::expected_shape(family)
                    ))),
                };
            }
            _ => 0,
        };
        if classes == 0 || outputs.first().is_none_or(|t| t.data.is_empty()) {
            return Err(shape_err(decode::expected_shape(family).into()));
        }
        if classes != n_labels {
            return Err(shape_err(format!(
                "{} with C = {} classes, one per line of the labels file",
                decode::expected_shape(family),
                n_labels
            )));
        }
        Ok(())
    }

    /// Makes the network's input tensor from `frame` in `self.blob`:
    /// `(pixel * scale - mean) / std` per channel, after the resize the model wants.
    fn prepare(
        &mut self,
        frame: &(impl MatTraitConst + core::ToInputArray),
    ) -> Result<(), DetectError> {
        let (w, h) = (frame.cols() as u32, frame.rows() as u32);
        let net_size = Size::new(self.net_w as i32, self.net_h as i32);
        let p = self.pre;
        match p.resize {
            ResizeMode::Stretch => to_blob(frame, &mut self.blob, &p, net_size)?,
            ResizeMode::Letterbox => {
                let map = self.mapping(w, h);
                let (sw, sh) = map.scaled_size(w, h);
                imgproc::resize(
                    frame,
                    &mut self.resized,
                    Size::new(sw, sh),
                    0.0,
                    0.0,
                    imgproc::INTER_LINEAR,
                )?;
                let (left, top) = (map.pad_x as i32, map.pad_y as i32);
                core::copy_make_border(
                    &self.resized,
                    &mut self.padded,
                    top,
                    self.net_h as i32 - sh - top,
                    left,
                    self.net_w as i32 - sw - left,
                    core::BORDER_CONSTANT,
                    Scalar::all(114.0),
                )?;
                to_blob(&self.padded, &mut self.blob, &p, net_size)?;
            }
        }
        if p.std != [1.0; 3] {
            let plane = (self.net_w * self.net_h) as usize;
            let data = self.blob.data_typed_mut::<f32>()?;
            for (c, chunk) in data.chunks_exact_mut(plane).enumerate() {
                let k = 1.0 / p.std[c % 3];
                chunk.iter_mut().for_each(|v| *v *= k);
            }
        }
        Ok(())
    }

    fn mapping(&self, w: u32, h: u32) -> InputMapping {
        match self.pre.resize {
            ResizeMode::Stretch => InputMapping::stretch(w, h, self.net_w, self.net_h),
            ResizeMode::Letterbox => InputMapping::letterbox(w, h, self.net_w, self.net_h),
        }
    }
}

impl DnnDetector {
    /// Runs the network on `image` (a frame, or a tile of one) and decodes its boxes in
    /// `image`'s pixels.
    fn detect_raw(
        &mut self,
        image: &(impl MatTraitConst + core::ToInputArray),
    ) -> Result<Vec<RawDetection>, DetectError> {
        let (w, h) = (image.cols() as u32, image.rows() as u32);
        self.prepare(image)?;
        let map = self.mapping(w, h);
        let (family, classes, floor) = (self.family, self.n_labels, self.filter.floor);
        let outputs = self.engine.infer(&self.blob)?;
        decode::decode(family, classes, &outputs, &map, (w, h), floor).map_err(|reason| {
            DetectError::OutputShape {
                path: self.path.clone(),
                family: family.name(),
                shape: outputs
                    .iter()
                    .flat_map(|t| t.shape.iter().copied())
                    .collect(),
                expected: format!("{} ({reason})", decode::expected_shape(family)),
            }
        })
    }
}

impl ObjectDetector for DnnDetector {
    fn detect(&mut self, frame: &Mat) -> Result<Vec<Detection>, DetectError> {
        let raw = if self.tiles <= 1 {
            self.detect_raw(frame)?
        } else {
            let cols = tiles::columns(frame.cols() as u32, self.tiles);
            let mut per_tile = Vec::with_capacity(cols.len());
            for &(x, w) in &cols {
                let tile = Mat::roi(frame, Rect::new(x as i32, 0, w as i32, frame.rows()))?;
                let mut raw = self.detect_raw(&tile)?;
                for d in &mut raw {
                    d.bbox.x += x as f32;
                }
                per_tile.push(raw);
            }
            tiles::merge(&cols, per_tile)
        };
        Ok(self.filter.apply(raw))
    }

    fn detect_crops(
        &mut self,
        frame: &Mat,
        crops: &[regions::Crop],
    ) -> Result<Vec<Detection>, DetectError> {
        let size = (frame.cols() as u32, frame.rows() as u32);
        let mut per_crop = Vec::with_capacity(crops.len());
        for c in crops {
            let part = Mat::roi(
                frame,
                Rect::new(c.x as i32, c.y as i32, c.w as i32, c.h as i32),
            )?;
            let mut raw = self.detect_raw(&part)?;
            for d in &mut raw {
                d.bbox.x += c.x as f32;
                d.bbox.y += c.y as f32;
            }
            per_crop.push(raw);
        }
        Ok(self.filter.apply(regions::join(crops, size, per_crop)))
    }

    fn info(&self) -> DetectorInfo {
        let (runtime, version, provider) = self.engine.runtime();
        DetectorInfo {
            warning: None,
            kind: "dnn",
            family: Some(self.family.name()),
            model: Some(self.path.display().to_string()),
            input: Some([self.net_w, self.net_h]),
            tiles: self.tiles,
            runtime,
            runtime_version: version,
            provider,
        }
    }
}

/// `pixel * scale - mean` per channel of `src` (already fitted, or stretched here) into
/// `blob`, NCHW float, in the model's channel order; the per-channel std is applied after.
fn to_blob(
    src: &impl core::ToInputArray,
    blob: &mut Mat,
    p: &Preprocess,
    size: Size,
) -> opencv::Result<()> {
    // blobFromImage computes (pixel - mean) * scale, with the mean in the output's order.
    let mean = Scalar::new(
        (p.mean[0] / p.scale) as f64,
        (p.mean[1] / p.scale) as f64,
        (p.mean[2] / p.scale) as f64,
        0.0,
    );
    let swap_rb = p.channels == ChannelOrder::Rgb;
    dnn::blob_from_image_to(
        src,
        blob,
        p.scale as f64,
        size,
        mean,
        swap_rb,
        false,
        core::CV_32F,
    )
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}
