//! Tiled detection: a frame cut into side-by-side tiles that overlap, each run through the
//! network on its own, and the boxes put back together. A network with a small fixed input
//! (FastestDet: 352x352) sees a far person as a few pixels; two tiles give it twice as many.
//!
//! Pure geometry, so it is tested without a network.

use super::decode::RawDetection;
use crate::pipeline::values::BBox;

/// Tiles overlap by this fraction of a tile's width: an object narrower than that lies whole
/// in at least one tile.
const OVERLAP: f32 = 0.25;

/// A box ending this close (pixels) to a tile's inner edge was cut by it.
const EDGE: f32 = 2.0;

/// A cut box and one from the neighbouring tile are one object when their vertical extents
/// overlap this much (of the shorter one).
const SAME_ROWS: f32 = 0.5;

/// The columns `(x, width)` of `n` tiles of equal width covering `width` pixels, each
/// overlapping the next by `OVERLAP` of a tile; the last ends exactly at `width`.
pub fn columns(width: u32, n: u32) -> Vec<(u32, u32)> {
    let n = n.max(1);
    if n == 1 {
        return vec![(0, width)];
    }
    let tile = (width as f32 / (n as f32 - (n - 1) as f32 * OVERLAP)).ceil() as u32;
    let tile = tile.min(width);
    let step = (width - tile) as f32 / (n - 1) as f32;
    (0..n)
        .map(|i| ((i as f32 * step).round() as u32, tile))
        .collect()
}

/// Puts the detections of each tile (in frame pixels, `per_tile[i]` from `cols[i]`) together.
/// An object wider than the overlap is cut by the seam: one tile sees it ending at its right
/// edge, the next starting at its left edge. Two such boxes of one class on the same rows are
/// merged into one box spanning both, with the better score. Everything else is left to the
/// class-wise NMS that follows (an object inside the overlap is seen whole twice).
pub fn merge(cols: &[(u32, u32)], per_tile: Vec<Vec<RawDetection>>) -> Vec<RawDetection> {
    let mut tiles = per_tile;
    for i in 1..tiles.len().min(cols.len()) {
        let right_edge = (cols[i - 1].0 + cols[i - 1].1) as f32;
        let left_edge = cols[i].0 as f32;
        let (done, rest) = tiles.split_at_mut(i);
        let (left, right) = (&mut done[i - 1], &mut rest[0]);
        let mut taken = vec![false; right.len()];
        for a in left.iter_mut() {
            if a.bbox.x + a.bbox.w < right_edge - EDGE {
                continue;
            }
            let best = right
                .iter()
                .enumerate()
                .filter(|(j, b)| {
                    !taken[*j]
                        && b.class_id == a.class_id
                        && b.bbox.x <= left_edge + EDGE
                        && b.bbox.x < a.bbox.x + a.bbox.w
                        && rows_overlap(&a.bbox, &b.bbox) >= SAME_ROWS
                })
                .max_by(|x, y| {
                    rows_overlap(&a.bbox, &x.1.bbox).total_cmp(&rows_overlap(&a.bbox, &y.1.bbox))
                })
                .map(|(j, _)| j);
            if let Some(j) = best {
                taken[j] = true;
                let b = &right[j];
                a.bbox = union(&a.bbox, &b.bbox);
                a.score = a.score.max(b.score);
            }
        }
        let mut j = 0;
        right.retain(|_| {
            j += 1;
            !taken[j - 1]
        });
    }
    tiles.into_iter().flatten().collect()
}

/// How much two boxes' vertical extents overlap, as a fraction of the shorter.
fn rows_overlap(a: &BBox, b: &BBox) -> f32 {
    let overlap = (a.y + a.h).min(b.y + b.h) - a.y.max(b.y);
    let shorter = a.h.min(b.h);
    if shorter <= 0.0 {
        0.0
    } else {
        (overlap / shorter).max(0.0)
    }
}

fn union(a: &BBox, b: &BBox) -> BBox {
    let (x0, y0) = (a.x.min(b.x), a.y.min(b.y));
    let (x1, y1) = ((a.x + a.w).max(b.x + b.w), (a.y + a.h).max(b.y + b.h));
    BBox::new(x0, y0, x1 - x0, y1 - y0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(class_id: u32, score: f32, x: f32, y: f32, w: f32, h: f32) -> RawDetection {
        RawDetection {
            class_id,
            score,
            bbox: BBox::new(x, y, w, h),
        }
    }

    #[test]
    fn columns_cover_the_frame_with_equal_overlapping_tiles() {
        assert_eq!(columns(768, 1), vec![(0, 768)]);
        let two = columns(768, 2);
        assert_eq!(two.len(), 2);
        let (a, b) = (two[0], two[1]);
        assert_eq!(a.0, 0);
        assert_eq!(a.1, b.1);
        assert_eq!(b.0 + b.1, 768, "the last tile ends at the frame's edge");
        let overlap = a.0 + a.1 - b.0;
        assert!(
            (overlap as f32 - a.1 as f32 * OVERLAP).abs() <= 2.0,
            "overlap {overlap} of a {} px tile",
            a.1
        );
        for n in 2..=4 {
            let cols = columns(1920, n);
            assert_eq!(cols.len(), n as usize);
            assert_eq!(cols[0].0, 0);
            let last = cols[n as usize - 1];
            assert_eq!(last.0 + last.1, 1920);
            for w in cols.windows(2) {
                assert!(w[1].0 < w[0].0 + w[0].1, "tiles {w:?} must overlap");
            }
        }
    }

    #[test]
    fn an_object_cut_by_the_seam_becomes_one_box() {
        let cols = columns(768, 2); // (0, 439), (329, 439)
        let (seam_right, seam_left) = ((cols[0].0 + cols[0].1) as f32, cols[1].0 as f32);
        // A wide car from x 250 to 520: the left tile sees 250..439, the right one 329..520.
        let left = vec![raw(2, 0.7, 250.0, 300.0, seam_right - 250.0, 80.0)];
        let right = vec![raw(2, 0.8, seam_left, 302.0, 520.0 - seam_left, 78.0)];
        let got = merge(&cols, vec![left, right]);
        assert_eq!(got.len(), 1, "{got:?}");
        let b = got[0].bbox;
        assert!(
            (b.x - 250.0).abs() < 0.01 && (b.x + b.w - 520.0).abs() < 0.01,
            "{b:?}"
        );
        assert_eq!(got[0].score, 0.8);
    }

    #[test]
    fn boxes_that_are_not_one_cut_object_stay_apart() {
        let cols = columns(768, 2);
        let seam_right = (cols[0].0 + cols[0].1) as f32;
        let seam_left = cols[1].0 as f32;
        let cut_left = raw(0, 0.7, 400.0, 100.0, seam_right - 400.0, 80.0);
        let got = merge(
            &cols,
            vec![
                vec![cut_left.clone()],
                vec![
                    // Another class at the seam.
                    raw(2, 0.8, seam_left, 100.0, 150.0, 80.0),
                    // Same class, other rows.
                    raw(0, 0.8, seam_left, 300.0, 60.0, 80.0),
                    // Same class and rows but not at the seam: a second person.
                    raw(0, 0.8, seam_left + 200.0, 100.0, 40.0, 80.0),
                ],
            ],
        );
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0].bbox, cut_left.bbox);
    }
}
