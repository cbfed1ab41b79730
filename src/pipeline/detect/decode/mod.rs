//! Turns a model's raw output tensor into boxes in source-frame pixels, one decoder per family.
//!
//! Pure functions over `&[f32]`, so every layout is unit-tested without OpenCV or a model file.

use crate::config::ModelFamily;
use crate::pipeline::values::BBox;

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
mod tests;
