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

/// One output tensor of a network: its shape and its values, row-major.
#[derive(Clone, Copy, Debug)]
pub struct Tensor<'a> {
    pub shape: &'a [i32],
    pub data: &'a [f32],
}

impl Tensor<'_> {
    fn check(&self) -> Result<(), LayoutError> {
        let total: i64 = self.shape.iter().map(|&d| d as i64).product();
        if self.shape.iter().any(|&d| d <= 0) || total as usize != self.data.len() {
            return Err(LayoutError::Size {
                values: self.data.len(),
                shape: self.shape.to_vec(),
            });
        }
        Ok(())
    }
}

/// Decodes a network's `outputs` for `family` (a model of `classes` classes); candidates
/// scoring below `score_floor` are skipped early. Boxes are clamped to the `src` (width,
/// height) frame. Single-tensor families read the first output; `nanodet` finds its tensors by
/// shape.
pub fn decode(
    family: ModelFamily,
    classes: usize,
    outputs: &[Tensor],
    map: &InputMapping,
    src: (u32, u32),
    score_floor: f32,
) -> Result<Vec<RawDetection>, LayoutError> {
    let (src_w, src_h) = src;
    for t in outputs {
        t.check()?;
    }
    let first = outputs.first().ok_or(LayoutError::TooFew(1, "outputs"))?;
    let mut out = match family {
        ModelFamily::Fastestdet => {
            decode_fastestdet(first.data, first.shape, src_w, src_h, score_floor)?
        }
        ModelFamily::Yolo => decode_yolo(first.data, first.shape, map, score_floor)?,
        ModelFamily::Yolov5 => decode_yolov5(first.data, first.shape, map, score_floor)?,
        ModelFamily::Nanodet => decode_nanodet(outputs, classes, map, score_floor)?,
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
        ModelFamily::Nanodet => "per stride, [1, N, C] class scores and [1, N, 4*B] side bins",
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

/// The strides a NanoDet-style head may use, finest first.
const NANODET_STRIDES: [u32; 5] = [8, 16, 32, 64, 128];

/// NanoDet (GFL head): per stride, a class-score tensor `[1, N, C]` (already sigmoid) and a
/// box tensor `[1, N, 4 * B]`: for each side (left, top, right, bottom) B logits over the
/// distances 0..B-1 in units of the stride. The distance is the softmax's expected value; sides
/// are measured from the cell centre `((col + 0.5) * stride, (row + 0.5) * stride)` in network
/// pixels. N is the grid of the stride over the network input, which is how each pair is found
/// (output names differ between converters). Score = the best class score.
fn decode_nanodet(
    outputs: &[Tensor],
    classes: usize,
    map: &InputMapping,
    score_floor: f32,
) -> Result<Vec<RawDetection>, LayoutError> {
    let (net_w, net_h) = (map.net_w as u32, map.net_h as u32);
    let grid = |s: u32| (net_w.div_ceil(s) as usize, net_h.div_ceil(s) as usize);
    let rows = |t: &Tensor| match t.shape {
        [1, n, c] => Some((*n as usize, *c as usize)),
        _ => None,
    };
    let mut out = Vec::new();
    let mut levels = 0;
    for stride in NANODET_STRIDES {
        let (gw, gh) = grid(stride);
        let n = gw * gh;
        let at_level: Vec<(usize, usize, &Tensor)> = outputs
            .iter()
            .enumerate()
            .filter_map(|(i, t)| rows(t).filter(|&(rn, _)| rn == n).map(|(_, c)| (i, c, t)))
            .collect();
        let Some(&(si, _, scores)) = at_level.iter().find(|&&(_, c, _)| c == classes) else {
            continue;
        };
        let Some(&(_, box_cols, boxes)) = at_level
            .iter()
            .find(|&&(i, c, _)| i != si && c % 4 == 0 && c >= 8)
        else {
            continue;
        };
        levels += 1;
        let bins = box_cols / 4;
        let s = stride as f32;
        for cell in 0..n {
            let cls = &scores.data[cell * classes..(cell + 1) * classes];
            let (class, score) = argmax(cls.iter().copied());
            if score < score_floor {
                continue;
            }
            let (row, col) = (cell / gw, cell % gw);
            let (cx, cy) = ((col as f32 + 0.5) * s, (row as f32 + 0.5) * s);
            let dist = &boxes.data[cell * 4 * bins..(cell + 1) * 4 * bins];
            let side = |k: usize| expected_bin(&dist[k * bins..(k + 1) * bins]) * s;
            let (l, t, r, b) = (side(0), side(1), side(2), side(3));
            let (x1, y1, x2, y2) = (cx - l, cy - t, cx + r, cy + b);
            out.push(RawDetection {
                class_id: class as u32,
                score,
                bbox: map.box_to_source((x1 + x2) / 2.0, (y1 + y2) / 2.0, x2 - x1, y2 - y1),
            });
        }
    }
    if levels == 0 {
        return Err(LayoutError::TooFew(
            1,
            "stride with a [1, N, C] and a [1, N, 4*B] output",
        ));
    }
    Ok(out)
}

/// The expected value of the distribution given by `logits` over 0, 1, .. len-1 (a softmax).
fn expected_bin(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::MIN, f32::max);
    let (mut sum, mut weighted) = (0.0f32, 0.0f32);
    for (i, &v) in logits.iter().enumerate() {
        let e = (v - max).exp();
        sum += e;
        weighted += e * i as f32;
    }
    weighted / sum
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

    /// The single-tensor families' decoders, as the engines hand them one output.
    fn decode1(
        family: ModelFamily,
        data: &[f32],
        shape: &[i32],
        map: &InputMapping,
        src_w: u32,
        src_h: u32,
        floor: f32,
    ) -> Result<Vec<RawDetection>, LayoutError> {
        decode(
            family,
            0,
            &[Tensor { shape, data }],
            map,
            (src_w, src_h),
            floor,
        )
    }

    /// Planted NanoDet outputs for a `net` x `net` input, strides 8/16/32, `classes` classes and
    /// 11 bins: every score 0 and every bin logit equal, but for what `plant` writes.
    fn nanodet_outputs(net: u32, classes: usize) -> Vec<(Vec<i32>, Vec<f32>)> {
        let mut out = Vec::new();
        for s in [8u32, 16, 32] {
            let n = (net.div_ceil(s) * net.div_ceil(s)) as usize;
            out.push((vec![1, n as i32, classes as i32], vec![0.0; n * classes]));
            out.push((vec![1, n as i32, 44], vec![0.0; n * 44]));
        }
        out
    }

    /// Sets the bin logits of one side so that its expected distance is exactly `bins` (an
    /// integer number of strides): one very large logit at that bin.
    fn plant_side(boxes: &mut [f32], cell: usize, side: usize, bin: usize) {
        let base = cell * 44 + side * 11;
        boxes[base..base + 11].iter_mut().for_each(|v| *v = -50.0);
        boxes[base + bin] = 50.0;
    }

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
        let out = decode1(
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
        let out = decode1(
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
        let out = decode1(ModelFamily::Yolov5, &row, &[1, 1, 7], &map, 640, 640, 0.1).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].class_id, 1);
        assert!((out[0].score - 0.45).abs() < 1e-6);
        assert!(approx(out[0].bbox, BBox::new(90.0, 80.0, 20.0, 40.0)));
    }

    #[test]
    fn wrong_shape_is_an_error_not_a_panic() {
        let map = InputMapping::stretch(10, 10, 10, 10);
        assert!(decode1(
            ModelFamily::Yolo,
            &[0.0; 12],
            &[1, 85, 22, 22],
            &map,
            10,
            10,
            0.1
        )
        .is_err());
        assert!(decode1(
            ModelFamily::Yolov5,
            &[0.0; 6],
            &[1, 2, 6],
            &map,
            10,
            10,
            0.1
        )
        .is_err());
        assert!(decode1(
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
    fn nanodet_cell_decodes_to_source_pixels_from_its_centre_and_side_bins() {
        // 64x64 network, 2 classes: strides 8, 16, 32 give 8x8, 4x4 and 2x2 grids.
        let mut outs = nanodet_outputs(64, 2);
        // Stride 16, cell (row 1, col 2): centre (2.5 * 16, 1.5 * 16) = (40, 24). Class 1 at 0.8.
        let cell = 4 + 2;
        outs[2].1[cell * 2 + 1] = 0.8;
        for (side, bin) in [(0, 1), (1, 1), (2, 1), (3, 2)] {
            plant_side(&mut outs[3].1, cell, side, bin);
        }
        // The converter's order is not the decoder's: shuffle the tensors.
        outs.reverse();
        let tensors: Vec<Tensor> = outs
            .iter()
            .map(|(shape, data)| Tensor { shape, data })
            .collect();
        // Source 128x96, stretched: x / 2, y / 1.5 back to source pixels.
        let map = InputMapping::stretch(128, 96, 64, 64);
        let out = decode(ModelFamily::Nanodet, 2, &tensors, &map, (128, 96), 0.5).unwrap();
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].class_id, 1);
        assert!((out[0].score - 0.8).abs() < 1e-6);
        // Sides l 16, t 16, r 16, b 32 around (40, 24): x 24..56, y 8..56 in network pixels,
        // x 48..112, y 12..84 in the source's.
        assert!(
            approx(out[0].bbox, BBox::new(48.0, 12.0, 64.0, 72.0)),
            "{:?}",
            out[0].bbox
        );
    }

    #[test]
    fn nanodet_side_distance_is_the_expected_bin_of_the_softmax() {
        // Two equal logits at bins 2 and 3: 2.5 strides.
        let mut logits = [-50.0f32; 11];
        logits[2] = 1.0;
        logits[3] = 1.0;
        assert!((expected_bin(&logits) - 2.5).abs() < 1e-5);
        // All equal: the middle, 5.
        assert!((expected_bin(&[0.3; 11]) - 5.0).abs() < 1e-5);
    }

    #[test]
    fn nanodet_without_a_class_tensor_of_the_label_count_is_a_layout_error() {
        let outs = nanodet_outputs(64, 80);
        let tensors: Vec<Tensor> = outs
            .iter()
            .map(|(shape, data)| Tensor { shape, data })
            .collect();
        let map = InputMapping::stretch(64, 64, 64, 64);
        // 91 labels for an 80-class model: nothing to pair.
        assert!(decode(ModelFamily::Nanodet, 91, &tensors, &map, (64, 64), 0.1).is_err());
        assert!(decode(ModelFamily::Nanodet, 80, &tensors, &map, (64, 64), 0.1).is_ok());
        // A FastestDet tensor given to the NanoDet decoder.
        let grid = [0.0f32; 85 * 4];
        let t = [Tensor {
            shape: &[1, 85, 2, 2],
            data: &grid,
        }];
        assert!(decode(ModelFamily::Nanodet, 80, &t, &map, (64, 64), 0.1).is_err());
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
