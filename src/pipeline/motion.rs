//! Motion detection: MOG2 background subtraction on a downscaled grey frame, blobs above a minimum
//! area, and a guard that treats a change of most of the frame as light, not motion.

use opencv::core::{self, Mat, Point, Ptr, Size, Vector};
use opencv::imgproc;
use opencv::prelude::*;
use opencv::video::{self, BackgroundSubtractorMOG2};

use crate::config::{MotionConfig, Polygon};
use crate::pipeline::values::BBox;

/// What the motion detector saw in one frame.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct MotionResult {
    /// At least one moving blob above the minimum area, and no light change.
    pub motion: bool,
    /// Most of the frame changed at once: a light change or a moved camera; the background is
    /// being relearned.
    pub light_change: bool,
    /// Fraction of the (downscaled) frame marked foreground.
    pub foreground: f64,
    /// Moving blobs in source-frame pixels.
    pub regions: Vec<BBox>,
}

/// A `w` x `h` single-channel image: 255 where motion counts, 0 inside the polygons.
fn mask_image(polygons: &[Polygon], w: i32, h: i32) -> opencv::Result<Mat> {
    let mut img = Mat::new_rows_cols_with_default(h, w, core::CV_8UC1, core::Scalar::all(255.0))?;
    let mut polys = Vector::<Vector<Point>>::new();
    for poly in polygons {
        polys.push(
            poly.iter()
                .map(|[x, y]| {
                    Point::new((x * w as f32).round() as i32, (y * h as f32).round() as i32)
                })
                .collect(),
        );
    }
    imgproc::fill_poly_def(&mut img, &polys, core::Scalar::all(0.0))?;
    Ok(img)
}

pub(crate) struct MotionDetector {
    cfg: MotionConfig,
    /// Where motion does not count (relative polygons), and that area drawn at the downscaled
    /// size as a mask of the pixels that count (built for the first frame, and again when the
    /// frame size changes).
    masks: Vec<Polygon>,
    counts: Mat,
    mog: Ptr<BackgroundSubtractorMOG2>,
    /// After a light change the model learns fast for a few frames.
    relearn_frames: u32,
    small: Mat,
    grey: Mat,
    blurred: Mat,
    mask: Mat,
    cleaned: Mat,
    kernel: Mat,
    contours: Vector<Vector<Point>>,
}

impl MotionDetector {
    /// `masks`: polygons in fractions of the frame where motion is ignored.
    pub(crate) fn new(cfg: &MotionConfig, masks: Vec<Polygon>) -> opencv::Result<Self> {
        // Shadows are not motion we care about and would only inflate blobs.
        let mog = video::create_background_subtractor_mog2(cfg.history, cfg.var_threshold, false)?;
        let kernel = imgproc::get_structuring_element(
            imgproc::MORPH_ELLIPSE,
            Size::new(3, 3),
            Point::new(-1, -1),
        )?;
        Ok(Self {
            cfg: cfg.clone(),
            masks,
            counts: Mat::default(),
            mog,
            relearn_frames: 0,
            small: Mat::default(),
            grey: Mat::default(),
            blurred: Mat::default(),
            mask: Mat::default(),
            cleaned: Mat::default(),
            kernel,
            contours: Vector::new(),
        })
    }

    /// `frame` in grey at `size`, into `self.grey`. Grey first (one channel to scale, not
    /// three), then halved by area averaging while it is twice the size or more (OpenCV's fast
    /// integer-factor path, and no aliasing), then the rest bilinearly: on a 768x576 camera
    /// 0.2 ms where one area resize of the colour frame took 1.5-2 ms (examples/motion_bench.rs),
    /// with the same foreground (96 % overlap).
    fn scale_down(&mut self, frame: &Mat, size: Size) -> opencv::Result<()> {
        if frame.channels() == 1 {
            frame.copy_to(&mut self.small)?;
        } else {
            imgproc::cvt_color_def(frame, &mut self.small, imgproc::COLOR_BGR2GRAY)?;
        }
        while self.small.cols() >= 2 * size.width && self.small.rows() >= 2 * size.height {
            let half = Size::new(self.small.cols() / 2, self.small.rows() / 2);
            imgproc::resize(
                &self.small,
                &mut self.grey,
                half,
                0.0,
                0.0,
                imgproc::INTER_AREA,
            )?;
            std::mem::swap(&mut self.small, &mut self.grey);
        }
        if self.small.size()? == size {
            std::mem::swap(&mut self.small, &mut self.grey);
        } else {
            imgproc::resize(
                &self.small,
                &mut self.grey,
                size,
                0.0,
                0.0,
                imgproc::INTER_LINEAR,
            )?;
        }
        Ok(())
    }

    pub(crate) fn process(&mut self, frame: &Mat) -> opencv::Result<MotionResult> {
        let (w, h) = (frame.cols(), frame.rows());
        if w <= 0 || h <= 0 {
            return Ok(MotionResult::default());
        }
        let small_w = (self.cfg.width as i32).min(w);
        let scale = small_w as f64 / w as f64;
        let small_h = ((h as f64 * scale).round() as i32).max(1);
        self.scale_down(frame, Size::new(small_w, small_h))?;
        imgproc::gaussian_blur_def(&self.grey, &mut self.blurred, Size::new(5, 5), 0.0)?;
        let rate = if self.relearn_frames > 0 {
            self.relearn_frames -= 1;
            0.5
        } else {
            -1.0 // MOG2's own rate from its history
        };
        BackgroundSubtractorMOG2Trait::apply(&mut self.mog, &self.blurred, &mut self.mask, rate)?;
        if !self.masks.is_empty() {
            if self.counts.size()? != self.mask.size()? {
                self.counts = mask_image(&self.masks, small_w, small_h)?;
            }
            // `cleaned` is free until the morphology below writes it: no allocation per frame.
            core::bitwise_and_def(&self.mask, &self.counts, &mut self.cleaned)?;
            std::mem::swap(&mut self.mask, &mut self.cleaned);
        }

        let total = (small_w * small_h) as f64;
        let foreground = core::count_non_zero(&self.mask)? as f64 / total;
        if foreground > self.cfg.light_change_fraction {
            self.relearn_frames = 5;
            return Ok(MotionResult {
                motion: false,
                light_change: true,
                foreground,
                regions: Vec::new(),
            });
        }

        imgproc::morphology_ex_def(
            &self.mask,
            &mut self.cleaned,
            imgproc::MORPH_OPEN,
            &self.kernel,
        )?;
        imgproc::dilate_def(&self.cleaned, &mut self.mask, &self.kernel)?;
        self.contours.clear();
        imgproc::find_contours_def(
            &self.mask,
            &mut self.contours,
            imgproc::RETR_EXTERNAL,
            imgproc::CHAIN_APPROX_SIMPLE,
        )?;
        let mut regions = Vec::new();
        for c in self.contours.iter() {
            if imgproc::contour_area_def(&c)? < self.cfg.min_area {
                continue;
            }
            let r = imgproc::bounding_rect(&c)?;
            regions.push(BBox::new(
                (r.x as f64 / scale) as f32,
                (r.y as f64 / scale) as f32,
                (r.width as f64 / scale) as f32,
                (r.height as f64 / scale) as f32,
            ));
        }
        Ok(MotionResult {
            motion: !regions.is_empty(),
            light_change: false,
            foreground,
            regions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{Rect, Scalar, CV_8UC3};

    fn frame(level: f64) -> Mat {
        Mat::new_rows_cols_with_default(240, 320, CV_8UC3, Scalar::all(level)).unwrap()
    }

    fn with_square(level: f64, x: i32) -> Mat {
        let mut f = frame(level);
        imgproc::rectangle(
            &mut f,
            Rect::new(x, 100, 40, 40),
            Scalar::all(255.0),
            -1,
            imgproc::LINE_8,
            0,
        )
        .unwrap();
        f
    }

    fn detector() -> MotionDetector {
        MotionDetector::new(&MotionConfig::default(), Vec::new()).unwrap()
    }

    #[test]
    fn motion_inside_a_motion_mask_does_not_count() {
        // The square at x = 100..140 of 320 lies inside the mask; at 240..280 it does not.
        let mask = vec![[0.2, 0.2], [0.5, 0.2], [0.5, 0.8], [0.2, 0.8]];
        let mut m = MotionDetector::new(&MotionConfig::default(), vec![mask]).unwrap();
        for _ in 0..30 {
            m.process(&frame(60.0)).unwrap();
        }
        assert!(!m.process(&with_square(60.0, 100)).unwrap().motion);
        for _ in 0..30 {
            m.process(&frame(60.0)).unwrap();
        }
        assert!(m.process(&with_square(60.0, 240)).unwrap().motion);
    }

    #[test]
    fn static_scene_has_no_motion_and_a_moving_square_has() {
        let mut m = detector();
        for _ in 0..30 {
            m.process(&frame(60.0)).unwrap();
        }
        assert!(!m.process(&frame(60.0)).unwrap().motion);
        let r = m.process(&with_square(60.0, 100)).unwrap();
        assert!(r.motion);
        // The blob is reported in source pixels around the square.
        let b = r.regions[0];
        assert!(
            b.x > 80.0 && b.x < 110.0 && b.w > 30.0 && b.w < 60.0,
            "{b:?}"
        );
    }

    #[test]
    fn sudden_global_brightness_change_is_light_not_motion() {
        let mut m = detector();
        for _ in 0..30 {
            m.process(&frame(60.0)).unwrap();
        }
        let r = m.process(&frame(200.0)).unwrap();
        assert!(r.light_change);
        assert!(!r.motion);
        // The model relearns: a few frames later the new level is background.
        for _ in 0..10 {
            m.process(&frame(200.0)).unwrap();
        }
        let r = m.process(&frame(200.0)).unwrap();
        assert!(!r.motion && !r.light_change, "{r:?}");
    }

    /// A camera frame larger than the working size is scaled down (grey, halved, then
    /// bilinear): a person-sized blob is still found, in source pixels, and a small one of 6x6
    /// pixels of a 768x576 frame (2.5x2.5 at the working size, under `min_area`) is not.
    #[test]
    fn a_large_frame_is_scaled_down_and_blobs_come_back_in_its_pixels() {
        let big = |level: f64, rect: Option<Rect>| {
            let mut f =
                Mat::new_rows_cols_with_default(576, 768, CV_8UC3, Scalar::all(level)).unwrap();
            if let Some(r) = rect {
                imgproc::rectangle(&mut f, r, Scalar::all(255.0), -1, imgproc::LINE_8, 0).unwrap();
            }
            f
        };
        let mut m = detector();
        for _ in 0..30 {
            m.process(&big(60.0, None)).unwrap();
        }
        assert!(
            !m.process(&big(60.0, Some(Rect::new(400, 300, 6, 6))))
                .unwrap()
                .motion
        );
        for _ in 0..30 {
            m.process(&big(60.0, None)).unwrap();
        }
        let r = m
            .process(&big(60.0, Some(Rect::new(400, 200, 48, 120))))
            .unwrap();
        assert!(r.motion);
        let b = r.regions[0];
        assert!(
            (b.x - 400.0).abs() < 12.0 && (b.y - 200.0).abs() < 12.0,
            "{b:?}"
        );
        assert!(
            (b.w - 48.0).abs() < 16.0 && (b.h - 120.0).abs() < 16.0,
            "{b:?}"
        );
    }
}
