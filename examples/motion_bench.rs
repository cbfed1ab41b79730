//! Where the motion stage's time goes, step by step, on real frames, for the motion
//! detector's recipe (src/pipeline/motion.rs) at a few working sizes and orders of the steps.
//!
//!   cargo run --release --example motion_bench -- media/vtest.avi [FRAMES]
//!
//! Prints, per variant, the mean milliseconds per frame of each step and in all.

use std::time::{Duration, Instant};

use opencv::core::{self, Mat, Point, Size, Vector};
use opencv::prelude::*;
use opencv::{imgproc, video, videoio};

/// One way to run the motion recipe.
struct Variant {
    name: &'static str,
    /// Working width (the height follows the frame's aspect).
    width: i32,
    /// Grey at full size first, then resize (one channel to scale instead of three).
    grey_first: bool,
    interpolation: i32,
    /// Halve (area, integer factor: OpenCV's fast path) while the frame is more than twice the
    /// working width, then `interpolation` for the rest.
    halve_first: bool,
    blur: i32,
}

#[derive(Default)]
struct Times {
    resize: Duration,
    grey: Duration,
    blur: Duration,
    mog: Duration,
    morph: Duration,
    contours: Duration,
}

/// The motion recipe on `frames`; its step times, how many frames had motion, and each frame's
/// foreground mask scaled to 320x240 (to compare variants).
fn run(frames: &[Mat], v: &Variant) -> opencv::Result<(Times, usize, Vec<Mat>)> {
    let mut mog = video::create_background_subtractor_mog2(300, 25.0, false)?;
    let kernel = imgproc::get_structuring_element(
        imgproc::MORPH_ELLIPSE,
        Size::new(3, 3),
        Point::new(-1, -1),
    )?;
    let (mut small, mut grey, mut blurred, mut mask, mut cleaned) = (
        Mat::default(),
        Mat::default(),
        Mat::default(),
        Mat::default(),
        Mat::default(),
    );
    let mut contours = Vector::<Vector<Point>>::new();
    let mut t = Times::default();
    let mut moving = 0;
    let mut masks = Vec::new();
    for f in frames {
        let h = (f.rows() as f64 * v.width as f64 / f.cols() as f64).round() as i32;
        let size = Size::new(v.width, h);
        if v.grey_first {
            let t0 = Instant::now();
            imgproc::cvt_color_def(f, &mut grey, imgproc::COLOR_BGR2GRAY)?;
            t.grey += t0.elapsed();
            let t0 = Instant::now();
            while v.halve_first && grey.cols() >= 2 * v.width {
                let half = Size::new(grey.cols() / 2, grey.rows() / 2);
                imgproc::resize(&grey, &mut small, half, 0.0, 0.0, imgproc::INTER_AREA)?;
                std::mem::swap(&mut grey, &mut small);
            }
            imgproc::resize(&grey, &mut small, size, 0.0, 0.0, v.interpolation)?;
            t.resize += t0.elapsed();
            std::mem::swap(&mut grey, &mut small);
        } else {
            let t0 = Instant::now();
            imgproc::resize(f, &mut small, size, 0.0, 0.0, v.interpolation)?;
            t.resize += t0.elapsed();
            let t0 = Instant::now();
            imgproc::cvt_color_def(&small, &mut grey, imgproc::COLOR_BGR2GRAY)?;
            t.grey += t0.elapsed();
        }
        let t0 = Instant::now();
        imgproc::gaussian_blur_def(&grey, &mut blurred, Size::new(v.blur, v.blur), 0.0)?;
        t.blur += t0.elapsed();
        let t0 = Instant::now();
        BackgroundSubtractorMOG2Trait::apply(&mut mog, &blurred, &mut mask, -1.0)?;
        t.mog += t0.elapsed();
        let t0 = Instant::now();
        imgproc::morphology_ex_def(&mask, &mut cleaned, imgproc::MORPH_OPEN, &kernel)?;
        imgproc::dilate_def(&cleaned, &mut mask, &kernel)?;
        t.morph += t0.elapsed();
        let t0 = Instant::now();
        contours.clear();
        imgproc::find_contours_def(
            &mask,
            &mut contours,
            imgproc::RETR_EXTERNAL,
            imgproc::CHAIN_APPROX_SIMPLE,
        )?;
        let min_area = 40.0 * (v.width as f64 / 320.0).powi(2);
        let mut any = false;
        for c in contours.iter() {
            any |= imgproc::contour_area_def(&c)? >= min_area;
        }
        moving += usize::from(any);
        t.contours += t0.elapsed();
        let mut common = Mat::default();
        imgproc::resize(
            &mask,
            &mut common,
            Size::new(320, 240),
            0.0,
            0.0,
            imgproc::INTER_NEAREST,
        )?;
        masks.push(common);
    }
    Ok((t, moving, masks))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).ok_or("usage: motion_bench VIDEO [FRAMES]")?;
    let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(400);
    // The motion stage runs on one thread of its own; time it so.
    core::set_num_threads(1)?;
    let mut cap = videoio::VideoCapture::from_file(path, videoio::CAP_ANY)?;
    let mut frames = Vec::new();
    while frames.len() < n {
        let mut m = Mat::default();
        if !cap.read(&mut m)? || m.empty() {
            break;
        }
        frames.push(m);
    }
    let variants = [
        Variant {
            name: "today: 320 wide, resize (area) then grey, blur 5",
            width: 320,
            grey_first: false,
            interpolation: imgproc::INTER_AREA,
            halve_first: false,
            blur: 5,
        },
        Variant {
            name: "320 wide, grey then resize (area), blur 5",
            width: 320,
            grey_first: true,
            interpolation: imgproc::INTER_AREA,
            halve_first: false,
            blur: 5,
        },
        Variant {
            name: "320 wide, grey then resize (linear), blur 5",
            width: 320,
            grey_first: true,
            interpolation: imgproc::INTER_LINEAR,
            halve_first: false,
            blur: 5,
        },
        Variant {
            name: "240 wide, grey then resize (area), blur 5",
            width: 240,
            grey_first: true,
            interpolation: imgproc::INTER_AREA,
            halve_first: false,
            blur: 5,
        },
        Variant {
            name: "160 wide, grey then resize (area), blur 3",
            width: 160,
            grey_first: true,
            interpolation: imgproc::INTER_AREA,
            halve_first: false,
            blur: 3,
        },
        Variant {
            name: "320 wide, grey, halve (area), then linear, blur 5",
            width: 320,
            grey_first: true,
            interpolation: imgproc::INTER_LINEAR,
            halve_first: true,
            blur: 5,
        },
        Variant {
            name: "384 wide (1/2), grey then resize (area), blur 5",
            width: 384,
            grey_first: true,
            interpolation: imgproc::INTER_AREA,
            halve_first: false,
            blur: 5,
        },
        Variant {
            name: "256 wide (1/3), grey then resize (area), blur 5",
            width: 256,
            grey_first: true,
            interpolation: imgproc::INTER_AREA,
            halve_first: false,
            blur: 5,
        },
    ];
    println!(
        "{} frames of {}x{}, one thread; ms per frame",
        frames.len(),
        frames.first().map_or(0, |f| f.cols()),
        frames.first().map_or(0, |f| f.rows())
    );
    println!("| variant | resize | grey | blur | MOG2 | morphology | contours | all | frames with motion | foreground IoU with today's |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut reference: Option<Vec<Mat>> = None;
    for v in &variants {
        let (t, moving, masks) = run(&frames, v)?;
        let iou = match &reference {
            None => 1.0,
            Some(r) => mean_iou(r, &masks)?,
        };
        if reference.is_none() {
            reference = Some(masks);
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0 / frames.len().max(1) as f64;
        let all = t.resize + t.grey + t.blur + t.mog + t.morph + t.contours;
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | **{:.2}** | {moving} | {iou:.2} |",
            v.name,
            ms(t.resize),
            ms(t.grey),
            ms(t.blur),
            ms(t.mog),
            ms(t.morph),
            ms(t.contours),
            ms(all)
        );
    }
    Ok(())
}

/// The mean over frames (after MOG2's first 50, while it learns) of the IoU of two variants'
/// foreground masks.
fn mean_iou(a: &[Mat], b: &[Mat]) -> opencv::Result<f64> {
    let (mut sum, mut n) = (0.0, 0);
    let (mut and, mut or) = (Mat::default(), Mat::default());
    for (x, y) in a.iter().zip(b).skip(50) {
        core::bitwise_and_def(x, y, &mut and)?;
        core::bitwise_or_def(x, y, &mut or)?;
        let u = core::count_non_zero(&or)?;
        if u > 0 {
            sum += core::count_non_zero(&and)? as f64 / u as f64;
            n += 1;
        }
    }
    Ok(if n == 0 { 1.0 } else { sum / n as f64 })
}
