//! The fallback detector: OpenCV's built-in HOG + linear SVM people detector, which needs no
//! model file, so Ocellus finds people even before any model is installed.

use opencv::core::{Mat, Rect, Size, Vector};
use opencv::objdetect::HOGDescriptor;
use opencv::prelude::*;

use super::decode::RawDetection;
use super::{ObjectDetector, PostFilter};
use crate::config::DetectorConfig;
use crate::pipeline::detect::DetectError;
use crate::pipeline::values::{BBox, Detection};

pub struct HogDetector {
    hog: HOGDescriptor,
    filter: PostFilter,
    found: Vector<Rect>,
    weights: Vector<f64>,
}

impl HogDetector {
    pub fn new(cfg: &DetectorConfig) -> Result<Self, DetectError> {
        let mut hog = HOGDescriptor::default()?;
        hog.set_svm_detector_input_array(&HOGDescriptor::get_default_people_detector()?)?;
        Ok(Self {
            hog,
            filter: PostFilter::new(cfg, vec!["person".to_string()]),
            found: Vector::new(),
            weights: Vector::new(),
        })
    }
}

/// Maps an SVM margin (0 at the decision boundary, rarely above 3) to a score in [0, 1) that is
/// comparable with detector probabilities: 1 -> 0.5, 2 -> 0.67.
fn margin_to_score(margin: f64) -> f32 {
    let m = margin.max(0.0);
    (m / (1.0 + m)) as f32
}

impl ObjectDetector for HogDetector {
    fn detect(&mut self, frame: &Mat) -> Result<Vec<Detection>, DetectError> {
        self.hog.detect_multi_scale_weights(
            frame,
            &mut self.found,
            &mut self.weights,
            0.0,
            Size::new(8, 8),
            Size::new(8, 8),
            1.05,
            2.0,
            false,
        )?;
        let raw = self
            .found
            .iter()
            .zip(self.weights.iter())
            .map(|(r, w)| RawDetection {
                class_id: 0,
                score: margin_to_score(w),
                bbox: BBox::new(r.x as f32, r.y as f32, r.width as f32, r.height as f32)
                    .clamp_to(frame.cols() as f32, frame.rows() as f32),
            })
            .collect();
        Ok(self.filter.apply(raw))
    }

    fn info(&self) -> super::DetectorInfo {
        super::DetectorInfo {
            warning: None,
            kind: "hog",
            family: None,
            model: None,
            input: None,
            tiles: 1,
            runtime: "opencv",
            runtime_version: opencv::core::CV_VERSION.to_string(),
            provider: "cpu",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_maps_monotonically_into_unit_interval() {
        assert_eq!(margin_to_score(-1.0), 0.0);
        assert!((margin_to_score(1.0) - 0.5).abs() < 1e-6);
        assert!(margin_to_score(2.0) > margin_to_score(1.0));
        assert!(margin_to_score(100.0) < 1.0);
    }
}
