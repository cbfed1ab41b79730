//! Boxes in the pixel coordinates of a frame: the one geometric type every stage shares.

use serde::{Deserialize, Serialize};

/// An axis-aligned box in the pixel coordinates of the source frame (top-left corner, size).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl BBox {
    pub fn new(x: f32, y: f32, w: f32, h: f32) -> Self {
        Self { x, y, w, h }
    }

    /// A box from its centre and size.
    pub fn from_center(cx: f32, cy: f32, w: f32, h: f32) -> Self {
        Self::new(cx - w / 2.0, cy - h / 2.0, w, h)
    }

    pub fn area(&self) -> f32 {
        self.w.max(0.0) * self.h.max(0.0)
    }

    pub fn center(&self) -> (f32, f32) {
        (self.x + self.w / 2.0, self.y + self.h / 2.0)
    }

    /// Where the object stands: the bottom-centre of its box. Masks, zones and lines are all
    /// decided on this point.
    pub fn foot(&self) -> (f32, f32) {
        (self.x + self.w / 2.0, self.y + self.h)
    }

    /// The area the two boxes share.
    pub fn intersection_area(&self, other: &BBox) -> f32 {
        let x1 = self.x.max(other.x);
        let y1 = self.y.max(other.y);
        let x2 = (self.x + self.w).min(other.x + other.w);
        let y2 = (self.y + self.h).min(other.y + other.h);
        (x2 - x1).max(0.0) * (y2 - y1).max(0.0)
    }

    /// Intersection over union; 0 for degenerate boxes.
    pub fn iou(&self, other: &BBox) -> f32 {
        let inter = self.intersection_area(other);
        let union = self.area() + other.area() - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }

    /// The box with `margin` pixels more on every side.
    pub fn grown(&self, margin: f32) -> BBox {
        BBox::new(
            self.x - margin,
            self.y - margin,
            self.w + 2.0 * margin,
            self.h + 2.0 * margin,
        )
    }

    /// Whether the two boxes share any area.
    pub fn intersects(&self, other: &BBox) -> bool {
        self.x < other.x + other.w
            && other.x < self.x + self.w
            && self.y < other.y + other.h
            && other.y < self.y + self.h
    }

    /// The part of the box inside a `width` x `height` frame.
    pub fn clamp_to(&self, width: f32, height: f32) -> BBox {
        let x1 = self.x.clamp(0.0, width);
        let y1 = self.y.clamp(0.0, height);
        let x2 = (self.x + self.w).clamp(0.0, width);
        let y2 = (self.y + self.h).clamp(0.0, height);
        BBox::new(x1, y1, x2 - x1, y2 - y1)
    }

    /// The same box with every coordinate rounded to 0.1 px, so that serialised output is stable
    /// and readable.
    pub fn rounded(&self) -> BBox {
        let r = |v: f32| (v * 10.0).round() / 10.0;
        BBox::new(r(self.x), r(self.y), r(self.w), r(self.h))
    }
}
