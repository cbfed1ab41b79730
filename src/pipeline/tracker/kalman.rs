//! The box filter: four independent constant-velocity Kalman filters (centre x, centre y,
//! width, height), as in SORT and ByteTrack.

use crate::pipeline::values::BBox;

/// One coordinate of a box under a constant-velocity Kalman filter: position and velocity, with
/// their 2x2 covariance. Time is in units of 100 ms, so the noise figures read as per frame of a
/// 10 fps camera.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Axis {
    pos: f32,
    vel: f32,
    p: [[f32; 2]; 2],
}

impl Axis {
    fn new(pos: f32, pos_sd: f32, vel_sd: f32) -> Self {
        Self {
            pos,
            vel: 0.0,
            p: [[pos_sd * pos_sd, 0.0], [0.0, vel_sd * vel_sd]],
        }
    }

    fn predict(&mut self, dt: f32, pos_sd: f32, vel_sd: f32) {
        self.pos += self.vel * dt;
        let [[a, b], [c, d]] = self.p;
        // P = F P F^T + Q, F = [[1, dt], [0, 1]], Q growing with dt.
        self.p = [
            [
                a + dt * (b + c) + dt * dt * d + pos_sd * pos_sd * dt,
                b + dt * d,
            ],
            [c + dt * d, d + vel_sd * vel_sd * dt],
        ];
    }

    fn update(&mut self, z: f32, meas_sd: f32) {
        let [[a, b], [c, d]] = self.p;
        let s = a + meas_sd * meas_sd;
        let (k0, k1) = (a / s, c / s);
        let innovation = z - self.pos;
        self.pos += k0 * innovation;
        self.vel += k1 * innovation;
        self.p = [[(1.0 - k0) * a, (1.0 - k0) * b], [c - k1 * a, d - k1 * b]];
    }
}

/// A box (centre x, centre y, width, height) under four independent constant-velocity filters.
/// The noise is proportional to the box's height, as in SORT and ByteTrack: a box twice as tall
/// jitters twice as many pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct BoxFilter {
    axes: [Axis; 4],
    at_ms: i64,
}

impl BoxFilter {
    const POS: f32 = 1.0 / 20.0;
    const VEL: f32 = 1.0 / 160.0;
    const MEAS: f32 = 1.0 / 20.0;

    pub(super) fn new(b: BBox, ts_ms: i64) -> Self {
        let (cx, cy) = b.center();
        let h = b.h.max(1.0);
        let axis = |v| Axis::new(v, 2.0 * Self::POS * h, 10.0 * Self::VEL * h);
        Self {
            axes: [axis(cx), axis(cy), axis(b.w), axis(b.h)],
            at_ms: ts_ms,
        }
    }

    pub(super) fn bbox(&self) -> BBox {
        let [cx, cy, w, h] = self.axes.map(|a| a.pos);
        BBox::from_center(cx, cy, w.max(1.0), h.max(1.0))
    }

    /// The centre's velocity (x, y), in pixels per 100 ms.
    pub(super) fn velocity(&self) -> (f32, f32) {
        (self.axes[0].vel, self.axes[1].vel)
    }

    /// The box at `ts_ms`, without changing the filter.
    pub(super) fn peek(&self, ts_ms: i64) -> BBox {
        let mut f = *self;
        f.predict(ts_ms);
        f.bbox()
    }

    pub(super) fn predict(&mut self, ts_ms: i64) {
        let dt = (ts_ms - self.at_ms) as f32 / 100.0;
        if dt <= 0.0 {
            return;
        }
        let h = self.axes[3].pos.max(1.0);
        for a in &mut self.axes {
            a.predict(dt, Self::POS * h, Self::VEL * h);
        }
        self.at_ms = ts_ms;
    }

    pub(super) fn update(&mut self, b: BBox, ts_ms: i64) {
        self.predict(ts_ms);
        let (cx, cy) = b.center();
        let sd = Self::MEAS * self.axes[3].pos.max(1.0);
        for (a, z) in self.axes.iter_mut().zip([cx, cy, b.w, b.h]) {
            a.update(z, sd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kalman_filter_follows_a_steady_walk_and_predicts_ahead() {
        let mut f = BoxFilter::new(BBox::new(0.0, 0.0, 40.0, 100.0), 0);
        for i in 1..30 {
            f.update(BBox::new(5.0 * i as f32, 0.0, 40.0, 100.0), i * 100);
        }
        let (cx, _) = f.peek(3000).center();
        assert!((cx - (150.0 + 20.0)).abs() < 2.0, "predicted centre {cx}");
    }
}
