//! The `ocellus` command: parses arguments, sets up logging and hands over to the library.
//!
//! Exit codes: 0 success; 1 the run completed but its result is wrong (an `--expect` mismatch, a
//! truncated video); 2 it could not run (bad config, video, model or database).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use ocellus::base::errors::chain;
use ocellus::cmd::replay::expect::Expectation;
use ocellus::cmd::replay::{self, ReplayOptions};
use ocellus::cmd::run::Daemon;
use ocellus::config::{Config, DetectorKind, DetectorRuntime, ModelFamily};
use ocellus::pipeline::values::{EventKind, EventMsg};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "ocellus",
    version,
    about = "Edge computer-vision telemetry daemon"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline on a recorded video, every frame, on the video's own clock, and report
    /// the events it finds.
    Replay(Box<ReplayArgs>),
    /// Run the daemon: every configured camera, the dashboard, the API and /ws on one port.
    Run(RunArgs),
    /// Run the fleet view: every box that publishes to the [mqtt] broker, in one dashboard, with
    /// their events and counters in a database of its own (docs/fleet.md).
    Fleet(RunArgs),
    /// Check a config file and print the settings it results in.
    CheckConfig {
        /// The TOML config file.
        file: PathBuf,
    },
    /// Write the man page (ocellus.1) and shell completions (bash, zsh, fish) into DIR, for
    /// packaging.
    #[command(hide = true)]
    GenerateDocs {
        /// Where to write them.
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Config file.
    #[arg(long, short)]
    config: PathBuf,
    /// Listen address, overriding server.listen (port 0 picks a free port).
    #[arg(long)]
    listen: Option<String>,
    /// Database file, overriding storage.path.
    #[arg(long)]
    db: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// The video file.
    video: PathBuf,
    /// Config file (defaults apply without one).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Keep the events in this SQLite database (default: a temporary one).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Pace frames at the video's fps instead of as fast as possible.
    #[arg(long)]
    realtime: bool,
    /// Compare the events with this file and exit 1 with a diff when they differ.
    #[arg(long, value_name = "FILE")]
    expect: Option<PathBuf>,
    /// Start/end tolerance for --expect when the file sets none, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    tolerance_ms: i64,
    /// Print each finished event as one JSON line on stdout, and nothing else there.
    #[arg(long)]
    json: bool,
    /// Detector: auto (the model if present, else HOG), dnn, hog or none.
    #[arg(long, value_enum)]
    detector: Option<DetectorKind>,
    /// What runs a DNN model: auto (ONNX Runtime when its library loads, else OpenCV),
    /// onnxruntime or opencv.
    #[arg(long, value_enum)]
    runtime: Option<DetectorRuntime>,
    /// ONNX model file (implies --detector dnn).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output layout of the model.
    #[arg(long, value_enum)]
    family: Option<ModelFamily>,
    /// Labels file of the model, one label a line.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Network input size, WIDTHxHEIGHT (e.g. 640x640).
    #[arg(long, value_parser = parse_size)]
    input_size: Option<(u32, u32)>,
    /// Camera id recorded in the events.
    #[arg(long, default_value = "replay")]
    camera: String,
    /// Record the video's own packets (H.264 or H.265, never re-encoded) into DIR, a new or
    /// empty directory, as its camera records (`[cameras.record]` of --camera; events mode
    /// unless continuous), and write each event's clip to DIR/clips/<event id>.mp4.
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
    /// Also JPEG-encode every frame, as a live viewer would cost (benchmarks).
    #[arg(long)]
    encode_frames: bool,
    /// Run the detector on every frame, whatever motion or its rate say (detector.when =
    /// "always", detector.fps = 0).
    #[arg(long)]
    every_frame: bool,
    /// Write one JSON line per frame to FILE: a hash of the decoded pixels, whether motion was
    /// seen and the detector ran, and every detection with its raw score. For comparing two
    /// builds or machines frame by frame.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Write the tracks of events to FILE in MOTChallenge format (`frame,id,x,y,w,h,score,
    /// -1,-1,-1`, frames 1-based), from each track's first frame: score it against ground truth
    /// with py-motmetrics or TrackEval (bench/mot_eval.py does).
    #[arg(long, value_name = "FILE")]
    tracks: Option<PathBuf>,
    /// With --tracks: only events of this label (repeat for several; default: every label).
    #[arg(long, value_name = "LABEL", requires = "tracks")]
    tracks_label: Vec<String>,
    /// Write the counts over time to FILE as CSV: per-minute buckets of each counting line
    /// (crossings each way), zone (entries, peak and mean objects) and label (events started),
    /// on the clip's clock (docs/counts.md). Compare two configs' counts on one recording.
    #[arg(long, value_name = "FILE")]
    counts: Option<PathBuf>,
    /// Detectors working on consecutive frames at once with --every-frame (each its own copy of
    /// the network; results are put back in frame order and are the same for any number).
    /// Default: the number of CPUs, at most 4.
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
}

/// A `--input-size` that is not WIDTHxHEIGHT with each side 1-4096.
#[derive(Debug, thiserror::Error)]
enum SizeError {
    #[error("{0:?} is not WIDTHxHEIGHT")]
    Form(String),
    #[error("{0:?} is not a size between 1 and 4096")]
    Side(String),
}

fn parse_size(s: &str) -> Result<(u32, u32), SizeError> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| SizeError::Form(s.to_string()))?;
    let n = |v: &str| {
        v.trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=4096).contains(n))
            .ok_or_else(|| SizeError::Side(v.to_string()))
    };
    Ok((n(w)?, n(h)?))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // The daemon's log level comes from its config, so it sets up logging itself.
        Command::Run(args) => run_cmd(args),
        Command::Fleet(args) => fleet_cmd(args),
        Command::Replay(args) => {
            // Warnings only by default, so that a replay's own output stays readable.
            ocellus::telemetry::logging::init("warn");
            replay_cmd(*args)
        }
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(cfg) => {
                eprintln!("{}: ok; {} camera(s)", file.display(), cfg.cameras.len());
                let text = format!(
                    "# The effective configuration of {}, every default filled in.\n{}",
                    file.display(),
                    cfg.with_absolute_paths().to_toml()
                );
                // A closed pipe (`| head`) is the reader's choice, not an error.
                let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Command::GenerateDocs { dir } => match generate_docs(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}: {e}", dir.display());
                ExitCode::from(2)
            }
        },
    }
}

/// The man page and completions, from the same clap definitions the binary parses with.
fn generate_docs(dir: &Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    std::fs::write(dir.join("ocellus.1"), page)?;
    // A page per subcommand, as the main page refers to them (ocellus-run(1), ...).
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("ocellus-{}", sub.get_name());
        let file = dir.join(format!("{name}.1"));
        // clap names are static strings; this command runs once and exits.
        let sub = sub.clone().name(&*name.leak());
        let mut page = Vec::new();
        clap_mangen::Man::new(sub).render(&mut page)?;
        std::fs::write(file, page)?;
    }
    for (shell, name) in [
        (clap_complete::Shell::Bash, "ocellus.bash"),
        (clap_complete::Shell::Zsh, "_ocellus"),
        (clap_complete::Shell::Fish, "ocellus.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "ocellus", &mut out);
        std::fs::write(dir.join(name), out)?;
    }
    Ok(())
}

fn fail(e: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!("error: {}", chain(e));
    ExitCode::from(2)
}

/// What `run` and `fleet` start from: the config as check-config resolves it with the command
/// line on top, logging started, the listen address parsed, and a runtime (not yet entered).
struct Service {
    cfg: Config,
    addr: std::net::SocketAddr,
    runtime: tokio::runtime::Runtime,
}

impl Service {
    fn prepare(args: RunArgs, what: &str) -> Result<Service, ExitCode> {
        let cfg = Config::load_with(&args.config, |cfg| {
            if let Some(listen) = args.listen {
                cfg.server.listen = listen;
            }
            if let Some(db) = args.db {
                cfg.storage.path = db;
            }
        })
        .map_err(|e| fail(&e))?;
        let target = ocellus::telemetry::logging::init(&cfg.log.level);
        ocellus::config::warn_if_readable_by_others(&args.config, &cfg);
        tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %args.config.display(), logs = target, "{what} {} starting with {}", env!("CARGO_PKG_VERSION"), args.config.display());
        let Ok(addr) = cfg.server.listen.parse() else {
            eprintln!(
                "error: listen address {:?} is not address:port",
                cfg.server.listen
            );
            return Err(ExitCode::from(2));
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("ocellus-rt")
            .build()
            .map_err(|e| fail(&e))?;
        Ok(Service { cfg, addr, runtime })
    }

    /// Binds the address, says where it listens (the first line on stdout, which scripts and
    /// tests read), and runs `serve` until the first SIGTERM or SIGINT.
    fn serve<F, Fut, E>(self, scheme: &str, serve: F) -> ExitCode
    where
        F: FnOnce(tokio::net::TcpListener, CancellationToken) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
        E: std::error::Error + 'static,
    {
        let addr = self.addr;
        self.runtime.block_on(async move {
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: cannot listen on {addr}: {e}");
                    return ExitCode::from(2);
                }
            };
            let local = listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            tracing::info!(address = %local, "listening on {scheme}://{local}/");
            println!("ocellus listening on {scheme}://{local}/");
            let stop = CancellationToken::new();
            tokio::spawn(watch_signals(stop.clone()));
            match serve(listener, stop).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        })
    }
}

/// `ocellus fleet`: the config's [server], [storage] and [mqtt] sections (its cameras, if any,
/// are not run).
fn fleet_cmd(args: RunArgs) -> ExitCode {
    let service = match Service::prepare(args, "ocellus fleet") {
        Ok(s) => s,
        Err(code) => return code,
    };
    let fleet = match ocellus::cmd::fleet::Fleet::start(&service.cfg) {
        Ok(f) => f,
        Err(e) => return fail(&e),
    };
    service.serve(fleet.scheme(), |listener, stop| fleet.run(listener, stop))
}

fn run_cmd(args: RunArgs) -> ExitCode {
    let service = match Service::prepare(args, "ocellus") {
        Ok(s) => s,
        Err(code) => return code,
    };
    let daemon = match Daemon::start(&service.cfg) {
        Ok(d) => d,
        Err(e) => return fail(&e),
    };
    service.serve(daemon.scheme(), |listener, stop| daemon.run(listener, stop))
}

/// The first SIGTERM or SIGINT starts a clean stop; a second one exits at once. One that comes
/// within a second of the first is the same signal sent twice (`timeout`, and a shell killing a
/// process group, send it to the process and to its group): the stop goes on.
async fn watch_signals(stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    stop.cancel();
    let first = tokio::time::Instant::now();
    loop {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        if first.elapsed() >= std::time::Duration::from_secs(1) {
            break;
        }
    }
    eprintln!("second signal: exiting now");
    std::process::exit(130);
}

fn replay_cmd(args: ReplayArgs) -> ExitCode {
    let cfg = match replay_config(&args) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    if !ocellus::config::valid_camera_id(&args.camera) {
        eprintln!(
            "error: --camera {:?} must be 1-64 letters, digits, '-' or '_'",
            args.camera
        );
        return ExitCode::from(2);
    }
    // Read the expectations first: a typo there should not cost a whole replay.
    let expectation = match &args.expect {
        Some(path) => match Expectation::load(path) {
            Ok(e) => Some(e),
            Err(msg) => {
                eprintln!("error: {msg}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let bar = progress_bar();
    let mut on_progress = |done: u64, total: Option<u64>| {
        if let Some(bar) = &bar {
            bar.set_length(total.unwrap_or(done).max(done));
            bar.set_position(done);
        }
    };
    let result = replay::run(
        &cfg,
        &replay_options(&args),
        print_ended(args.json),
        &mut on_progress,
    );
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    eprintln!("{}", report.summary(&args.video));
    if let Some(db) = &args.db {
        eprintln!("database {}", display(db));
    }
    let mut code = ExitCode::SUCCESS;
    if let Some(err) = &report.truncated {
        eprintln!("error: {err}");
        code = ExitCode::from(1);
    }
    if let Some(exp) = expectation {
        match exp.compare(&report.events, args.tolerance_ms) {
            Ok(msg) => eprintln!("{msg}"),
            Err(diff) => {
                eprint!("{diff}");
                code = ExitCode::from(1);
            }
        }
    }
    code
}

/// The file's settings (or the defaults) with the command line's on top, settled once, on what
/// will run, as `run` and `check-config` settle theirs.
fn replay_config(args: &ReplayArgs) -> Result<Config, ocellus::config::ConfigError> {
    let overrides = |cfg: &mut Config| {
        if let Some(model) = &args.model {
            cfg.detector.model = model.clone();
            cfg.detector.kind = DetectorKind::Dnn;
        }
        if let Some(kind) = args.detector {
            cfg.detector.kind = kind;
        }
        if let Some(runtime) = args.runtime {
            cfg.detector.runtime = runtime;
        }
        if let Some(family) = args.family {
            cfg.detector.family = family;
        }
        if let Some(labels) = &args.labels {
            cfg.detector.labels = labels.clone();
        }
        if args.every_frame {
            cfg.detector.when = ocellus::config::DetectWhen::Always;
            cfg.detector.fps = 0.0;
            for cam in &mut cfg.cameras {
                cam.detector_fps = None;
            }
        }
        if let Some((w, h)) = args.input_size {
            (cfg.detector.input_width, cfg.detector.input_height) = (w, h);
        }
    };
    match &args.config {
        Some(path) => Config::load_with(path, overrides),
        None => Config::default().settle(Path::new("(defaults)"), overrides),
    }
}

fn replay_options(args: &ReplayArgs) -> ReplayOptions {
    ReplayOptions {
        video: args.video.clone(),
        db: args.db.clone(),
        realtime: args.realtime,
        camera: args.camera.clone(),
        encode_frames: args.encode_frames,
        trace: args.trace.clone(),
        tracks: args.tracks.clone(),
        tracks_labels: args.tracks_label.clone(),
        counts: args.counts.clone(),
        record: args.record.clone(),
        detect_workers: args
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(4))),
    }
}

/// Prints each finished event on stdout: a line for a person, or its JSON with `--json`.
fn print_ended(json: bool) -> impl FnMut(&EventMsg) + Send + 'static {
    move |msg: &EventMsg| {
        if msg.kind != EventKind::End {
            return;
        }
        let mut out = std::io::stdout().lock();
        let e = &msg.event;
        let line = if json {
            serde_json::to_string(e).unwrap_or_default()
        } else {
            format!(
                "event {:>4}  {:<10} {:>8.1}s - {:>7.1}s  score {:.2}  track {:<4} box {:.0},{:.0} {:.0}x{:.0}",
                e.id,
                e.label,
                e.start_ms as f64 / 1000.0,
                e.end_ms.unwrap_or(e.start_ms) as f64 / 1000.0,
                e.top_score,
                e.track_id,
                e.best_box.x,
                e.best_box.y,
                e.best_box.w,
                e.best_box.h
            )
        };
        // A closed pipe (`| head`) is not worth a panic.
        let _ = writeln!(out, "{line}");
    }
}

/// A progress bar on a terminal; none when stderr is a file or a pipe.
fn progress_bar() -> Option<ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} frames {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    })
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
