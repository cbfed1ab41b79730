//! The OpenCV DNN detector: loads an ONNX model, prepares its input the way its family expects
//! (stretch or letterbox) and hands the output tensor to the family's decoder.

use std::path::PathBuf;

use opencv::core::{self, Mat, Rect, Scalar, Size, Vector};
use opencv::dnn;
use opencv::imgproc;
use opencv::prelude::*;

use super::decode::{self, InputMapping, RawDetection};
use super::{read_labels, tiles, ObjectDetector, PostFilter};
use crate::config::{DetectorConfig, ModelFamily};
use crate::errors::DetectError;
use crate::models::Detection;

pub struct DnnDetector {
    net: dnn::Net,
    family: ModelFamily,
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
    outputs: Vector<Mat>,
    out_names: Vector<String>,
}

impl DnnDetector {
    /// Loads and checks the model: a forward pass on a blank frame must give a tensor that the
    /// family's decoder understands, with as many classes as the labels file has lines.
    pub fn load(cfg: &DetectorConfig) -> Result<Self, DetectError> {
        let path = cfg.model.clone();
        if !path.exists() {
            return Err(DetectError::ModelMissing(path));
        }
        let labels = read_labels(&cfg.labels)?;
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
                path,
                reason: "OpenCV read no layers from it".into(),
            });
        }
        net.set_preferable_backend(dnn::DNN_BACKEND_OPENCV)?;
        net.set_preferable_target(dnn::DNN_TARGET_CPU)?;
        let out_names = net.get_unconnected_out_layers_names().map_err(load_err)?;
        let filter = PostFilter::new(cfg, labels.clone());
        let unknown = filter.unknown_allowed(cfg);
        // The default list names labels of several model families; only a list the user wrote
        // is worth checking against this model.
        if !unknown.is_empty() && cfg.labels_allow != DetectorConfig::default().labels_allow {
            tracing::warn!(labels = ?unknown, "detector.labels_allow names labels the model does not have");
        }
        let mut det = Self {
            net,
            family: cfg.family,
            path,
            net_w: cfg.input_width,
            net_h: cfg.input_height,
            filter,
            n_labels: labels.len(),
            tiles: cfg.tiles.max(1),
            resized: Mat::default(),
            padded: Mat::default(),
            blob: Mat::default(),
            outputs: Vector::new(),
            out_names,
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
        let out = self.forward(&blank).map_err(|e| DetectError::ModelLoad {
            path: self.path.clone(),
            reason: first_line(&e.to_string()),
        })?;
        let shape: Vec<i32> = out.mat_size().to_vec();
        let data = out.data_typed::<f32>()?;
        let classes = match (self.family, shape.as_slice()) {
            (ModelFamily::Fastestdet, [1, c, _, _]) => *c as usize - 5.min(*c as usize),
            (ModelFamily::Yolo, [1, r, _]) => *r as usize - 4.min(*r as usize),
            (ModelFamily::Yolov5, [1, _, c]) => *c as usize - 5.min(*c as usize),
            _ => 0,
        };
        if classes == 0 || data.is_empty() {
            return Err(DetectError::OutputShape {
                path: self.path.clone(),
                family: self.family.name(),
                shape,
                expected: decode::expected_shape(self.family).into(),
            });
        }
        if classes != self.n_labels {
            return Err(DetectError::OutputShape {
                path: self.path.clone(),
                family: self.family.name(),
                shape,
                expected: format!(
                    "{} with C = {} classes, one per line of the labels file",
                    decode::expected_shape(self.family),
                    self.n_labels
                ),
            });
        }
        Ok(())
    }

    /// Runs the network; returns the first output tensor (a header sharing the network's
    /// buffer, so the decoder reads it in place).
    fn forward(
        &mut self,
        frame: &(impl MatTraitConst + core::ToInputArray),
    ) -> Result<Mat, DetectError> {
        let (w, h) = (frame.cols() as u32, frame.rows() as u32);
        let net_size = Size::new(self.net_w as i32, self.net_h as i32);
        match self.family {
            ModelFamily::Fastestdet => {
                // BGR as OpenCV reads it, stretched, scaled to [0, 1].
                dnn::blob_from_image_to(
                    frame,
                    &mut self.blob,
                    1.0 / 255.0,
                    net_size,
                    Scalar::default(),
                    false,
                    false,
                    core::CV_32F,
                )?;
            }
            ModelFamily::Yolo | ModelFamily::Yolov5 => {
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
                // Ultralytics models take RGB.
                dnn::blob_from_image_to(
                    &self.padded,
                    &mut self.blob,
                    1.0 / 255.0,
                    net_size,
                    Scalar::default(),
                    true,
                    false,
                    core::CV_32F,
                )?;
            }
        }
        self.net.set_input(&self.blob, "", 1.0, Scalar::default())?;
        self.net.forward(&mut self.outputs, &self.out_names)?;
        Ok(self.outputs.get(0)?)
    }

    fn mapping(&self, w: u32, h: u32) -> InputMapping {
        match self.family {
            ModelFamily::Fastestdet => InputMapping::stretch(w, h, self.net_w, self.net_h),
            ModelFamily::Yolo | ModelFamily::Yolov5 => {
                InputMapping::letterbox(w, h, self.net_w, self.net_h)
            }
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
        let out = self.forward(image)?;
        let dims = out.mat_size();
        let shape: &[i32] = &dims;
        let data = out.data_typed::<f32>()?;
        let map = self.mapping(w, h);
        decode::decode(self.family, data, shape, &map, w, h, self.filter.floor).map_err(|reason| {
            DetectError::OutputShape {
                path: self.path.clone(),
                family: self.family.name(),
                shape: shape.to_vec(),
                expected: format!("{} ({reason})", decode::expected_shape(self.family)),
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

    fn describe(&self) -> String {
        let tiles = if self.tiles > 1 {
            format!(", {} tiles", self.tiles)
        } else {
            String::new()
        };
        format!(
            "{} {} {}x{}{tiles}",
            self.family.name(),
            self.path.display(),
            self.net_w,
            self.net_h
        )
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}
