//! Writes the first N frames of a video as an MJPEG AVI (OpenCV's built-in writer).
//!
//! cargo run --example cut_clip -- IN OUT N

use opencv::core::{Mat, Size};
use opencv::prelude::*;
use opencv::videoio::{VideoCapture, VideoWriter, CAP_ANY};

fn main() -> opencv::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output, n] = args.as_slice() else {
        eprintln!("usage: cut_clip IN OUT N");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("N is a number");
    let mut cap = VideoCapture::from_file(input, CAP_ANY)?;
    let fps = cap.get(opencv::videoio::CAP_PROP_FPS)?;
    let mut writer: Option<VideoWriter> = None;
    let mut frame = Mat::default();
    for _ in 0..n {
        if !cap.read(&mut frame)? {
            break;
        }
        let w = match writer.as_mut() {
            Some(w) => w,
            None => writer.insert(VideoWriter::new(
                output,
                VideoWriter::fourcc('M', 'J', 'P', 'G')?,
                fps,
                Size::new(frame.cols(), frame.rows()),
                true,
            )?),
        };
        w.write(&frame)?;
    }
    Ok(())
}
