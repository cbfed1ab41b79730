//! The detector alone: milliseconds per `detect` call (input tensor, inference, decoding,
//! filtering) on frames of a video, with one runtime and thread count.
//!
//!     cargo run --release --example detector_bench -- VIDEO RUNTIME THREADS [CALLS [CONFIG]]
//!
//! RUNTIME: onnxruntime or opencv; THREADS: threads one inference may use (0: the library's
//! default); CONFIG: a config file whose `[detector]` is the model (a `model.toml`), else the
//! default model. Prints: `RUNTIME threads T: M ms per inference (median of CALLS, after 20 warm-up)`.

use opencv::prelude::*;
use opencv::videoio;

use ocellus::config::{DetectorConfig, DetectorKind, DetectorRuntime};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: detector_bench VIDEO onnxruntime|opencv THREADS [CALLS [CONFIG]]");
        std::process::exit(2);
    }
    let runtime = match args[2].as_str() {
        "onnxruntime" => DetectorRuntime::Onnxruntime,
        "opencv" => DetectorRuntime::Opencv,
        other => return Err(format!("unknown runtime {other}").into()),
    };
    let threads: i32 = args[3].parse()?;
    let calls: usize = args.get(4).map(|c| c.parse()).transpose()?.unwrap_or(300);
    let model = match args.get(5) {
        Some(path) => ocellus::config::Config::read(std::path::Path::new(path))?.detector,
        None => DetectorConfig::default(),
    };
    let cfg = DetectorConfig {
        kind: DetectorKind::Dnn,
        runtime,
        threads,
        ..model
    };
    let mut det = ocellus::pipeline::detect::build(&cfg)?.ok_or("no detector")?;
    // A few dozen real frames, cycled: the decoder's work depends on what is in them.
    let mut cap = videoio::VideoCapture::from_file(&args[1], videoio::CAP_ANY)?;
    let mut frames = Vec::new();
    let mut frame = opencv::core::Mat::default();
    while frames.len() < 50 && cap.read(&mut frame)? {
        frames.push(frame.clone());
    }
    if frames.is_empty() {
        return Err(format!("no frames in {}", args[1]).into());
    }
    for f in frames.iter().cycle().take(20) {
        det.detect(f)?;
    }
    let mut ms = Vec::with_capacity(calls);
    for f in frames.iter().cycle().take(calls) {
        let t0 = std::time::Instant::now();
        det.detect(f)?;
        ms.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "{} threads {threads}: {:.2} ms per inference (median of {calls}, after 20 warm-up; {})",
        args[2],
        ms[ms.len() / 2],
        det.describe()
    );
    Ok(())
}
