//! Regions: the detector run on model-sized crops around what moves and what is tracked,
//! instead of the whole frame scaled down to the model's input. A camera frame larger than the
//! network's input (1280x720 into 384x288 is a third of the pixels each way) loses small, far
//! objects to the downscale; a crop of the network's own size around them loses nothing.
//!
//! Pure geometry, tested without a network: where the crops go ([`plan`]), and how the boxes
//! found in them are put back together ([`join`]).

use super::decode::RawDetection;
use crate::pipeline::values::BBox;

/// Crops are grown around their object by this fraction of its larger side on every side, so
/// that an object moving between the plan and the frame (a prediction) stays inside.
const CONTEXT: f32 = 0.2;

/// Two crops that share more than this fraction of the smaller one are one crop (around both):
/// two inferences over mostly the same pixels cost more than one slightly scaled down.
const MERGE_SHARE: f32 = 0.25;

/// Crops covering more than this fraction of the frame, all told, are not worth it: the whole
/// frame once is cheaper, and motion that large (a light change, a crowd) wants everything.
const MOST_OF_THE_FRAME: f32 = 0.6;

/// A box ending this close (pixels) to a crop's edge inside the frame was cut by it.
const EDGE: f32 = 2.0;

/// A crop: frame pixels, whole numbers, inside the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crop {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Crop {
    fn bbox(&self) -> BBox {
        BBox::new(self.x as f32, self.y as f32, self.w as f32, self.h as f32)
    }

    fn area(&self) -> f32 {
        self.w as f32 * self.h as f32
    }
}

/// What the detector looks at in one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The whole frame, scaled to the model's input.
    Frame,
    /// These crops, each scaled to the model's input (1:1 unless an object is larger).
    Crops(Vec<Crop>),
}

/// The crop of the model's shape (`model`: input width and height) over `area`, centred on it:
/// at least the model's size, larger (same shape) when `area` is, moved inside the `frame`;
/// `None` when it does not fit in the frame.
fn crop_over(area: &BBox, frame: (u32, u32), model: (u32, u32)) -> Option<Crop> {
    let aspect = model.0 as f32 / model.1 as f32;
    let h = area.h.max(area.w / aspect).max(model.1 as f32);
    let w = h * aspect;
    if w > frame.0 as f32 || h > frame.1 as f32 {
        return None;
    }
    let (cx, cy) = area.center();
    let x = (cx - w / 2.0).clamp(0.0, frame.0 as f32 - w);
    let y = (cy - h / 2.0).clamp(0.0, frame.1 as f32 - h);
    Some(Crop {
        x: x.round() as u32,
        y: y.round() as u32,
        w: (w.round() as u32).min(frame.0),
        h: (h.round() as u32).min(frame.1),
    })
}

/// The crop around the object at `b`, with its context.
fn crop_around(b: &BBox, frame: (u32, u32), model: (u32, u32)) -> Option<Crop> {
    crop_over(&b.grown(CONTEXT * b.w.max(b.h)), frame, model)
}

/// The crop over both `a` and `b` (which have their context already).
fn union(a: &Crop, b: &Crop, frame: (u32, u32), model: (u32, u32)) -> Option<Crop> {
    let x0 = a.x.min(b.x) as f32;
    let y0 = a.y.min(b.y) as f32;
    let x1 = (a.x + a.w).max(b.x + b.w) as f32;
    let y1 = (a.y + a.h).max(b.y + b.h) as f32;
    crop_over(&BBox::new(x0, y0, x1 - x0, y1 - y0), frame, model)
}

/// Where the detector should look in a `frame`-sized picture for the objects at `boxes` (moving
/// blobs, tracks' predicted boxes), with a `model`-sized input: a crop of the model's shape
/// around each, crops that overlap much merged, the whole frame when that is as good (the frame
/// is hardly larger than the model's input, nothing to look at, an object too large for a
/// crop, or crops covering most of it).
pub fn plan(frame: (u32, u32), model: (u32, u32), boxes: &[BBox]) -> Plan {
    // A frame less than 1.5x the model's input each way gains little from crops.
    if boxes.is_empty()
        || (frame.0 as f32) < 1.5 * model.0 as f32 && (frame.1 as f32) < 1.5 * model.1 as f32
    {
        return Plan::Frame;
    }
    let mut crops = Vec::new();
    for b in boxes {
        match crop_around(b, frame, model) {
            Some(c) => crops.push(c),
            None => return Plan::Frame,
        }
    }
    // Merge until no two crops share much; each merge removes one, so this ends.
    'again: loop {
        for i in 0..crops.len() {
            for j in i + 1..crops.len() {
                let (a, b) = (crops[i], crops[j]);
                let inter = a.bbox().intersection_area(&b.bbox());
                if inter > MERGE_SHARE * a.area().min(b.area()) {
                    match union(&a, &b, frame, model) {
                        Some(c) => {
                            crops[i] = c;
                            crops.swap_remove(j);
                            continue 'again;
                        }
                        None => return Plan::Frame,
                    }
                }
            }
        }
        break;
    }
    let total: f32 = crops.iter().map(Crop::area).sum();
    if total > MOST_OF_THE_FRAME * frame.0 as f32 * frame.1 as f32 {
        return Plan::Frame;
    }
    crops.sort_by_key(|c| (c.y, c.x));
    Plan::Crops(crops)
}

/// Whether `d` (frame pixels) ends at an edge of `c` that lies inside the `frame`: the object
/// went on beyond the crop.
fn cut(d: &BBox, c: &Crop, frame: (u32, u32)) -> bool {
    let (x0, y0, x1, y1) = (
        c.x as f32,
        c.y as f32,
        (c.x + c.w) as f32,
        (c.y + c.h) as f32,
    );
    (c.x > 0 && d.x <= x0 + EDGE)
        || (c.y > 0 && d.y <= y0 + EDGE)
        || (c.x + c.w < frame.0 && d.x + d.w >= x1 - EDGE)
        || (c.y + c.h < frame.1 && d.y + d.h >= y1 - EDGE)
}

/// Whether two boxes meet (within `EDGE`) and share most of their rows or most of their
/// columns: the two parts of one object that a crop's edge cut, not two objects side by side
/// at different heights.
fn touching(a: &BBox, b: &BBox) -> bool {
    if !a.grown(EDGE).intersects(b) {
        return false;
    }
    let rows = (a.y + a.h).min(b.y + b.h) - a.y.max(b.y);
    let cols = (a.x + a.w).min(b.x + b.w) - a.x.max(b.x);
    rows >= 0.5 * a.h.min(b.h) || cols >= 0.5 * a.w.min(b.w)
}

/// Puts the boxes found in each crop (`per_crop[i]`, already in frame pixels) together. An
/// object across two crops is cut by both: two boxes of one class, at least one of them cut,
/// that overlap, are one box spanning both (with the better score). A cut box inside a whole
/// one is that object seen in part; what is left (an object seen whole twice, where crops
/// overlap) is for the class-wise NMS that follows.
pub fn join(
    crops: &[Crop],
    frame: (u32, u32),
    per_crop: Vec<Vec<RawDetection>>,
) -> Vec<RawDetection> {
    let mut all: Vec<(RawDetection, usize, bool)> = Vec::new();
    for (i, dets) in per_crop.into_iter().enumerate() {
        for d in dets {
            let is_cut = crops.get(i).is_some_and(|c| cut(&d.bbox, c, frame));
            all.push((d, i, is_cut));
        }
    }
    let mut out: Vec<(RawDetection, bool)> = Vec::new();
    let mut used = vec![false; all.len()];
    for a in 0..all.len() {
        if used[a] {
            continue;
        }
        used[a] = true;
        let (mut d, crop, mut is_cut) = all[a].clone();
        for b in a + 1..all.len() {
            let (other, other_crop, other_cut) = &all[b];
            if used[b] || *other_crop == crop || other.class_id != d.class_id {
                continue;
            }
            if (is_cut || *other_cut) && touching(&d.bbox, &other.bbox) {
                let x0 = d.bbox.x.min(other.bbox.x);
                let y0 = d.bbox.y.min(other.bbox.y);
                let x1 = (d.bbox.x + d.bbox.w).max(other.bbox.x + other.bbox.w);
                let y1 = (d.bbox.y + d.bbox.h).max(other.bbox.y + other.bbox.h);
                // A cut box inside a whole one adds nothing to it.
                let inside = |small: &BBox, big: &BBox| {
                    small.x >= big.x - EDGE
                        && small.y >= big.y - EDGE
                        && small.x + small.w <= big.x + big.w + EDGE
                        && small.y + small.h <= big.y + big.h + EDGE
                };
                if is_cut && !*other_cut && inside(&d.bbox, &other.bbox) {
                    d.bbox = other.bbox;
                } else if !(*other_cut && !is_cut && inside(&other.bbox, &d.bbox)) {
                    d.bbox = BBox::new(x0, y0, x1 - x0, y1 - y0);
                }
                d.score = d.score.max(other.score);
                is_cut = is_cut && *other_cut;
                used[b] = true;
            }
        }
        out.push((d, is_cut));
    }
    out.into_iter().map(|(d, _)| d).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: (u32, u32) = (1280, 720);
    const MODEL: (u32, u32) = (384, 288);

    /// A crop of the model's size at (x, y).
    fn model_crop(x: u32, y: u32) -> Crop {
        Crop {
            x,
            y,
            w: MODEL.0,
            h: MODEL.1,
        }
    }

    fn raw(x: f32, y: f32, w: f32, h: f32, score: f32) -> RawDetection {
        RawDetection {
            class_id: 0,
            score,
            bbox: BBox::new(x, y, w, h),
        }
    }

    #[test]
    fn a_small_object_gets_a_model_sized_crop_around_it_inside_the_frame() {
        let far = BBox::new(1000.0, 100.0, 16.0, 40.0);
        let Plan::Crops(c) = plan(FRAME, MODEL, &[far]) else {
            panic!("no crop");
        };
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].w, c[0].h), MODEL, "1:1, the model's own size");
        let b = c[0].bbox();
        assert!(b.x <= far.x && b.x + b.w >= far.x + far.w && b.y <= far.y);
        // Near the corner: moved inside, not cut off.
        let corner = BBox::new(1270.0, 700.0, 10.0, 20.0);
        let Plan::Crops(c) = plan(FRAME, MODEL, &[corner]) else {
            panic!("no crop");
        };
        assert_eq!((c[0].x + c[0].w, c[0].y + c[0].h), FRAME);
    }

    #[test]
    fn overlapping_crops_merge_and_distant_ones_stay_apart() {
        let a = BBox::new(100.0, 100.0, 30.0, 80.0);
        let b = BBox::new(160.0, 110.0, 30.0, 80.0);
        let far = BBox::new(1000.0, 500.0, 30.0, 80.0);
        let Plan::Crops(c) = plan(FRAME, MODEL, &[a, b, far]) else {
            panic!("no crops");
        };
        assert_eq!(c.len(), 2, "{c:?}");
        let first = c[0].bbox();
        for o in [a, b] {
            assert!(first.x <= o.x && first.x + first.w >= o.x + o.w, "{c:?}");
        }
        // Model-shaped still.
        assert!((c[0].w as f32 / c[0].h as f32 - 384.0 / 288.0).abs() < 0.01);
    }

    #[test]
    fn the_whole_frame_when_crops_would_not_pay() {
        let person = BBox::new(100.0, 100.0, 30.0, 80.0);
        assert_eq!(plan(FRAME, MODEL, &[]), Plan::Frame, "nothing to look at");
        assert_eq!(
            plan((400, 300), MODEL, &[person]),
            Plan::Frame,
            "a small frame"
        );
        let huge = BBox::new(0.0, 0.0, 900.0, 700.0);
        assert_eq!(
            plan(FRAME, MODEL, &[huge]),
            Plan::Frame,
            "too large for a crop"
        );
        let spread: Vec<BBox> = (0..12)
            .map(|i| {
                BBox::new(
                    (i % 4) as f32 * 320.0 + 10.0,
                    (i / 4) as f32 * 240.0,
                    30.0,
                    80.0,
                )
            })
            .collect();
        assert_eq!(
            plan(FRAME, MODEL, &spread),
            Plan::Frame,
            "most of the frame"
        );
    }

    /// A person standing across the seam of two crops side by side: each sees the part on its
    /// side, ending at its edge; they are one box, reported once.
    #[test]
    fn a_box_across_two_crops_is_reported_once() {
        let crops = [model_crop(0, 100), model_crop(384, 100)];
        let left = raw(350.0, 150.0, 33.5, 90.0, 0.6);
        let right = raw(384.5, 152.0, 20.0, 88.0, 0.8);
        let elsewhere = raw(500.0, 200.0, 30.0, 80.0, 0.9);
        let out = join(
            &crops,
            FRAME,
            vec![vec![left], vec![right, elsewhere.clone()]],
        );
        assert_eq!(out.len(), 2, "{out:?}");
        let p = &out[0];
        assert_eq!((p.bbox.x, p.bbox.y), (350.0, 150.0));
        assert!((p.bbox.x + p.bbox.w - 404.5).abs() < 1e-3);
        assert_eq!(p.score, 0.8);
        assert_eq!(out[1], elsewhere);
    }

    /// An object seen whole in one crop and in part (cut) in an overlapping one is the whole box.
    #[test]
    fn a_cut_box_inside_a_whole_one_is_the_whole_one() {
        let crops = [model_crop(0, 0), model_crop(300, 0)];
        let whole = raw(280.0, 100.0, 40.0, 100.0, 0.7);
        let part = raw(300.5, 102.0, 19.5, 97.0, 0.5);
        let out = join(&crops, FRAME, vec![vec![whole.clone()], vec![part]]);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].bbox, whole.bbox);
        assert_eq!(out[0].score, 0.7);
        // Two whole boxes of the same object where crops overlap are left to NMS.
        let twice = join(
            &crops,
            FRAME,
            vec![
                vec![whole.clone()],
                vec![raw(330.0, 100.0, 40.0, 100.0, 0.6)],
            ],
        );
        assert_eq!(twice.len(), 2);
    }
}
