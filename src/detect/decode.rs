//! Turns a model's raw output tensor into boxes in source-frame pixels, one decoder per family.
//!
//! Pure functions over `&[f32]`, so every layout is unit-tested without OpenCV or a model file.

use crate::config::ModelFamily;
use crate::models::BBox;

/// How network-input pixels map back to source-frame pixels:
/// `src_x = (net_x - pad_x) / scale_x`, likewise for y.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InputMapping {
    pub scale_x: f32,
    pub scale_y: f32,
    pub pad_x: f32,
    pub pad_y: f32,
    /// Network input size, in pixels.
    pub net_w: f32,
    pub net_h: f32,
}

impl InputMapping {
    /// The source is resized to the network size, ignoring aspect ratio.
    pub fn stretch(src_w: u32, src_h: u32, net_w: u32, net_h: u32) -> Self {
        Self {
            scale_x: net_w as f32 / src_w as f32,
            scale_y: net_h as f32 / src_h as f32,
            pad_x: 0.0,
            pad_y: 0.0,
            net_w: net_w as f32,
            net_h: net_h as f32,
        }
    }

    /// The source is scaled to fit, keeping its aspect ratio, and centred with padding
    /// (Ultralytics' letterbox).
    pub fn letterbox(src_w: u32, src_h: u32, net_w: u32, net_h: u32) -> Self {
        let scale = (net_w as f32 / src_w as f32).min(net_h as f32 / src_h as f32);
        let new_w = (src_w as f32 * scale).round();
        let new_h = (src_h as f32 * scale).round();
        Self {
            scale_x: scale,
            scale_y: scale,
            pad_x: ((net_w as f32 - new_w) / 2.0).floor(),
            pad_y: ((net_h as f32 - new_h) / 2.0).floor(),
            net_w: net_w as f32,
            net_h: net_h as f32,
        }
    }

    /// The size of the scaled image inside the padding.
    pub fn scaled_size(&self, src_w: u32, src_h: u32) -> (i32, i32) {
        (
            (src_w as f32 * self.scale_x).round() as i32,
            (src_h as f32 * self.scale_y).round() as i32,
        )
    }

    /// Maps a box given by its centre and size in network pixels to source pixels.
    fn box_to_source(&self, cx: f32, cy: f32, w: f32, h: f32) -> BBox {
        BBox::from_center(
            (cx - self.pad_x) / self.scale_x,
            (cy - self.pad_y) / self.scale_y,
            w / self.scale_x,
            h / self.scale_y,
        )
    }
}

/// A candidate before label filtering and NMS.
#[derive(Clone, Debug, PartialEq)]
pub struct RawDetection {
    pub class_id: u32,
    pub score: f32,
    pub bbox: BBox,
}

/// An output tensor whose layout is not its family's.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum LayoutError {
    #[error("{values} values for shape {shape:?}")]
    Size { values: usize, shape: Vec<i32> },
    #[error("want {0} dimensions")]
    Dimensions(usize),
    #[error("want at least {0} {1}")]
    TooFew(usize, &'static str),
}

/// Decodes `data` (a tensor of `shape`) for `family`; candidates scoring below `score_floor` are
/// skipped early. Boxes are clamped to the `src_w` x `src_h` frame.
pub fn decode(
    family: ModelFamily,
    data: &[f32],
    shape: &[i32],
    map: &InputMapping,
    src_w: u32,
    src_h: u32,
    score_floor: f32,
) -> Result<Vec<RawDetection>, LayoutError> {
    let total: i64 = shape.iter().map(|&d| d as i64).product();
    if shape.iter().any(|&d| d <= 0) || total as usize != data.len() {
        return Err(LayoutError::Size {
            values: data.len(),
            shape: shape.to_vec(),
        });
    }
    let mut out = match family {
        ModelFamily::Fastestdet => decode_fastestdet(data, shape, src_w, src_h, score_floor)?,
        ModelFamily::Yolo => decode_yolo(data, shape, map, score_floor)?,
        ModelFamily::Yolov5 => decode_yolov5(data, shape, map, score_floor)?,
    };
    for d in &mut out {
        d.bbox = d.bbox.clamp_to(src_w as f32, src_h as f32);
    }
    out.retain(|d| d.bbox.area() > 0.0);
    Ok(out)
}

/// The shape each family expects, for error messages.
pub fn expected_shape(family: ModelFamily) -> &'static str {
    match family {
        ModelFamily::Fastestdet => "[1, 5+C, H, W]",
        ModelFamily::Yolo => "[1, 4+C, N]",
        ModelFamily::Yolov5 => "[1, N, 5+C]",
    }
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// Index and value of the largest element.
fn argmax(values: impl Iterator<Item = f32>) -> (usize, f32) {
    values.enumerate().fold(
        (0, f32::MIN),
        |best, (i, v)| if v > best.1 { (i, v) } else { best },
    )
}

/// FastestDet: `[1, 5+C, H, W]`; channel 0 objectness (a probability), 1-2 centre offsets in the
/// cell (tanh), 3-4 size relative to the whole image (sigmoid), then class probabilities.
/// Score = obj^0.6 * cls^0.4. Coordinates are relative to the image, so the (stretched) input
/// mapping is not needed.
fn decode_fastestdet(
    data: &[f32],
    shape: &[i32],
    src_w: u32,
    src_h: u32,
    score_floor: f32,
) -> Result<Vec<RawDetection>, LayoutError> {
    let [1, channels, grid_h, grid_w] = shape else {
        return Err(LayoutError::Dimensions(4));
    };
    let (channels, gh, gw) = (*channels as usize, *grid_h as usize, *grid_w as usize);
    if channels < 6 {
        return Err(LayoutError::TooFew(6, "channels"));
    }
    let plane = gh * gw;
    let at = |c: usize, cell: usize| data[c * plane + cell];
    let mut out = Vec::new();
    for row in 0..gh {
        for col in 0..gw {
            let cell = row * gw + col;
            let obj = at(0, cell);
            if obj <= 0.0 {
                continue;
            }
            // obj^0.6 * cls^0.4 <= obj^0.6, so most cells are skipped before the class scan.
            if obj.powf(0.6) < score_floor {
                continue;
            }
            let (class, cls) = argmax((5..channels).map(|c| at(c, cell)));
            let score = obj.powf(0.6) * cls.max(0.0).powf(0.4);
            if score < score_floor {
                continue;
            }
            let cx = (col as f32 + at(1, cell).tanh()) / gw as f32;
            let cy = (row as f32 + at(2, cell).tanh()) / gh as f32;
            let w = sigmoid(at(3, cell));
            let h = sigmoid(at(4, cell));
            out.push(RawDetection {
                class_id: class as u32,
                score,
                bbox: BBox::from_center(
                    cx * src_w as f32,
                    cy * src_h as f32,
                    w * src_w as f32,
                    h * src_h as f32,
                ),
            });
        }
    }
    Ok(out)
}

/// Ultralytics YOLOv8/YOLO11: `[1, 4+C, N]`; rows cx, cy, w, h (network pixels), then class
/// scores (already sigmoid); no objectness.
fn decode_yolo(
    data: &[f32],
    shape: &[i32],
    map: &InputMapping,
    score_floor: f32,
) -> Result<Vec<RawDetection>, LayoutError> {
    let [1, rows, n] = shape else {
        return Err(LayoutError::Dimensions(3));
    };
    let (rows, n) = (*rows as usize, *n as usize);
    if rows < 5 {
        return Err(LayoutError::TooFew(5, "rows"));
    }
    let at = |r: usize, i: usize| data[r * n + i];
    let mut out = Vec::new();
    for i in 0..n {
        let (class, score) = argmax((4..rows).map(|r| at(r, i)));
        if score < score_floor {
            continue;
        }
        out.push(RawDetection {
            class_id: class as u32,
            score,
            bbox: map.box_to_source(at(0, i), at(1, i), at(2, i), at(3, i)),
        });
    }
    Ok(out)
}

/// YOLOv5: `[1, N, 5+C]`; each row cx, cy, w, h (network pixels), objectness, class scores.
/// Score = obj * cls.
fn decode_yolov5(
    data: &[f32],
    shape: &[i32],
    map: &InputMapping,
    score_floor: f32,
) -> Result<Vec<RawDetection>, LayoutError> {
    let [1, n, cols] = shape else {
        return Err(LayoutError::Dimensions(3));
    };
    let (n, cols) = (*n as usize, *cols as usize);
    if cols < 6 {
        return Err(LayoutError::TooFew(6, "columns"));
    }
    let mut out = Vec::new();
    for row in data.chunks_exact(cols).take(n) {
        let obj = row[4];
        if obj < score_floor {
            continue;
        }
        let (class, cls) = argmax(row[5..].iter().copied());
        let score = obj * cls;
        if score < score_floor {
            continue;
        }
        out.push(RawDetection {
            class_id: class as u32,
            score,
            bbox: map.box_to_source(row[0], row[1], row[2], row[3]),
        });
    }
    Ok(out)
}

/// Class-wise non-maximum suppression: of boxes of one class that overlap more than `iou`, the
/// best-scoring one stays. The result is sorted by score, best first (ties by class, then x), so
/// it does not depend on the order of the input.
pub fn nms(mut dets: Vec<RawDetection>, iou: f32) -> Vec<RawDetection> {
    dets.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.class_id.cmp(&b.class_id))
            .then(a.bbox.x.total_cmp(&b.bbox.x))
            .then(a.bbox.y.total_cmp(&b.bbox.y))
    });
    let mut kept: Vec<RawDetection> = Vec::with_capacity(dets.len());
    for d in dets {
        if kept
            .iter()
            .all(|k| k.class_id != d.class_id || k.bbox.iou(&d.bbox) <= iou)
        {
            kept.push(d);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approx(a: BBox, b: BBox) -> bool {
        (a.x - b.x).abs() < 0.5
            && (a.y - b.y).abs() < 0.5
            && (a.w - b.w).abs() < 0.5
            && (a.h - b.h).abs() < 0.5
    }

    #[test]
    fn letterbox_of_a_4_3_frame_into_a_square_pads_top_and_bottom() {
        let m = InputMapping::letterbox(768, 576, 640, 640);
        assert!((m.scale_x - 640.0 / 768.0).abs() < 1e-6);
        assert_eq!(m.pad_x, 0.0);
        assert_eq!(m.pad_y, 80.0);
        assert_eq!(m.scaled_size(768, 576), (640, 480));
    }

    #[test]
    fn fastestdet_cell_decodes_to_image_pixels() {
        // 2x2 grid, 3 classes: a confident class-2 object in cell (row 1, col 0).
        let (c, gh, gw) = (8usize, 2usize, 2usize);
        let mut data = vec![0.0f32; c * gh * gw];
        let cell = gw; // row 1, col 0
        let set = |data: &mut Vec<f32>, ch: usize, v: f32| data[ch * gh * gw + cell] = v;
        set(&mut data, 0, 0.9);
        set(&mut data, 1, 0.5f32.atanh()); // x offset 0.5 cell
        set(&mut data, 2, 0.0); // y offset 0
        set(&mut data, 3, 0.0); // sigmoid(0) = 0.5 of the width
        set(&mut data, 4, (0.25f32 / 0.75).ln()); // sigmoid = 0.25 of the height
        set(&mut data, 7, 0.8);
        let map = InputMapping::stretch(200, 100, 352, 352);
        let out = decode(
            ModelFamily::Fastestdet,
            &data,
            &[1, c as i32, gh as i32, gw as i32],
            &map,
            200,
            100,
            0.3,
        )
        .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].class_id, 2);
        assert!((out[0].score - 0.9f32.powf(0.6) * 0.8f32.powf(0.4)).abs() < 1e-5);
        // centre (0.25, 0.5) of 200x100 = (50, 50); size 100 x 25
        assert!(
            approx(out[0].bbox, BBox::from_center(50.0, 50.0, 100.0, 25.0)),
            "{:?}",
            out[0].bbox
        );
    }

    #[test]
    fn yolo_boxes_are_mapped_back_through_the_letterbox() {
        // 2 candidates, 2 classes; network 640x640, source 768x576 (pad_y 80, scale 5/6).
        let n = 2;
        let rows = 6;
        let mut data = vec![0.0f32; rows * n];
        let put = |data: &mut Vec<f32>, r: usize, i: usize, v: f32| data[r * n + i] = v;
        // candidate 0: centre (320, 320) net, 100x50 net, class 1 at 0.9
        for (r, v) in [320.0, 320.0, 100.0, 50.0, 0.1, 0.9]
            .into_iter()
            .enumerate()
        {
            put(&mut data, r, 0, v);
        }
        // candidate 1: below the floor
        put(&mut data, 4, 1, 0.05);
        let map = InputMapping::letterbox(768, 576, 640, 640);
        let out = decode(
            ModelFamily::Yolo,
            &data,
            &[1, rows as i32, n as i32],
            &map,
            768,
            576,
            0.25,
        )
        .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].class_id, 1);
        // centre: x 320 / (5/6) = 384; y (320 - 80) / (5/6) = 288; size 120 x 60
        assert!(
            approx(out[0].bbox, BBox::from_center(384.0, 288.0, 120.0, 60.0)),
            "{:?}",
            out[0].bbox
        );
    }

    #[test]
    fn yolov5_score_is_objectness_times_class() {
        let row = [100.0, 100.0, 20.0, 40.0, 0.5, 0.2, 0.9];
        let map = InputMapping::letterbox(640, 640, 640, 640);
        let out = decode(ModelFamily::Yolov5, &row, &[1, 1, 7], &map, 640, 640, 0.1).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].class_id, 1);
        assert!((out[0].score - 0.45).abs() < 1e-6);
        assert!(approx(out[0].bbox, BBox::new(90.0, 80.0, 20.0, 40.0)));
    }

    #[test]
    fn wrong_shape_is_an_error_not_a_panic() {
        let map = InputMapping::stretch(10, 10, 10, 10);
        assert!(decode(
            ModelFamily::Yolo,
            &[0.0; 12],
            &[1, 85, 22, 22],
            &map,
            10,
            10,
            0.1
        )
        .is_err());
        assert!(decode(
            ModelFamily::Yolov5,
            &[0.0; 6],
            &[1, 2, 6],
            &map,
            10,
            10,
            0.1
        )
        .is_err());
        assert!(decode(
            ModelFamily::Fastestdet,
            &[0.0; 4],
            &[1, 4],
            &map,
            10,
            10,
            0.1
        )
        .is_err());
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes_per_class_only() {
        let d = |class_id, score, x| RawDetection {
            class_id,
            score,
            bbox: BBox::new(x, 0.0, 10.0, 10.0),
        };
        let kept = nms(
            vec![
                d(0, 0.5, 1.0),
                d(0, 0.9, 0.0),
                d(1, 0.6, 0.0),
                d(0, 0.7, 50.0),
            ],
            0.45,
        );
        let summary: Vec<(u32, f32)> = kept.iter().map(|k| (k.class_id, k.score)).collect();
        assert_eq!(summary, vec![(0, 0.9), (0, 0.7), (1, 0.6)]);
    }
}
