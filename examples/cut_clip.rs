//! Writes the first N frames of a video as an MJPEG AVI (OpenCV's built-in writer), or, when OUT
//! is a numbered pattern such as `frames/%04d.png`, as lossless PNG frames.
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
    let frames = output.contains('%');
    for i in 0..n {
        if !cap.read(&mut frame)? {
            break;
        }
        if frames {
            let path = sprintf_index(output, i);
            if !opencv::imgcodecs::imwrite(&path, &frame, &opencv::core::Vector::new())? {
                eprintln!("cut_clip: cannot write {path}");
                std::process::exit(1);
            }
            continue;
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

/// Expands the first `%d` / `%0Nd` in `pattern` with `i`.
fn sprintf_index(pattern: &str, i: usize) -> String {
    let start = pattern.find('%').expect("pattern has a %");
    let rest = &pattern[start + 1..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    assert_eq!(
        rest.as_bytes().get(digits),
        Some(&b'd'),
        "pattern needs %d or %0Nd"
    );
    let width: usize = rest[..digits].parse().unwrap_or(0);
    format!("{}{i:0width$}{}", &pattern[..start], &rest[digits + 1..])
}
