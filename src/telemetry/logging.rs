//! Log output: to the journal with structured fields when running under systemd, readable text
//! on stderr otherwise.
//!
//! Under journald every tracing field becomes a journal field in upper case, with no prefix, so
//! `tracing::info!(camera = %id, event_id = 7, ...)` can be found with
//! `journalctl -u ocellus CAMERA=front EVENT_ID=7` (tests/integration/journal.rs runs the documented
//! queries against a real journald). No field may be named like journald's own (`MESSAGE`,
//! `PRIORITY`, `CODE_*`, `SYSLOG_*`, `ERRNO`, `MESSAGE_ID`, anything starting with `_`).

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `OCELLUS_LOG` (then `RUST_LOG`) overrides `default_filter`.
/// Returns where logs go, for the first log line.
pub fn init(default_filter: &str) -> &'static str {
    let filter = std::env::var("OCELLUS_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default_filter.to_string());
    let filter = quiet_dependencies(&filter);
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("warning: log filter {filter:?} is not valid ({e}); using \"info\"");
        EnvFilter::new("info")
    });
    // systemd sets JOURNAL_STREAM when stderr is connected to the journal.
    let to_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let journald = if to_journal {
        tracing_journald::layer()
            .map(|l| {
                l.with_syslog_identifier("ocellus".into())
                    .with_field_prefix(None)
            })
            .ok()
    } else {
        None
    };
    let target = if journald.is_some() {
        "journal"
    } else {
        "stderr"
    };
    let fmt = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
    });
    quiet_ffmpeg(
        filter
            .max_level_hint()
            .is_some_and(|l| l >= tracing::Level::DEBUG),
    );
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(fmt)
        .try_init();
    // OpenCV's own warnings (FFmpeg probing a non-video, say) would interleave with ours; its
    // failures reach us as errors anyway.
    let _ = opencv::core::set_log_level(opencv::core::LogLevel::LOG_LEVEL_ERROR);
    target
}

/// ONNX Runtime reports its start-up (some 300 lines of graph optimisation and allocator
/// notes) at info through the `ort` crate: detail for whoever debugs a model, noise in the
/// daemon's log. So `ort` is at `warn` unless the filter names it or asks for debug everywhere.
fn quiet_dependencies(spec: &str) -> String {
    let directives: Vec<&str> = spec.split(',').map(str::trim).collect();
    let names_ort = directives.iter().any(|d| {
        d.split('=')
            .next()
            .is_some_and(|t| t == "ort" || t.starts_with("ort::"))
    });
    let debug_everywhere = directives
        .iter()
        .any(|d| matches!(d.to_ascii_lowercase().as_str(), "debug" | "trace"));
    if names_ort || debug_everywhere {
        spec.to_string()
    } else {
        format!("{spec},ort=warn")
    }
}

/// FFmpeg prints its own errors (`[h264 @ 0x55d0...] co located POCs unavailable`) straight to
/// stderr, with no camera and in no format of ours; what they mean reaches the camera's state
/// and our log as a reason. So they are silenced unless our own log is at debug (then they help),
/// or the user set OpenCV's `OPENCV_FFMPEG_LOGLEVEL` themselves. OpenCV reads the variable once,
/// when the first capture opens; this runs before any thread that could.
fn quiet_ffmpeg(debug: bool) {
    if !debug && std::env::var_os("OPENCV_FFMPEG_LOGLEVEL").is_none() {
        // AV_LOG_QUIET
        std::env::set_var("OPENCV_FFMPEG_LOGLEVEL", "-8");
    }
}

#[cfg(test)]
mod tests {
    use super::quiet_dependencies;

    #[test]
    fn onnx_runtime_start_up_chatter_is_kept_out_of_the_log_unless_asked_for() {
        assert_eq!(quiet_dependencies("info"), "info,ort=warn");
        assert_eq!(
            quiet_dependencies("warn,ocellus=debug"),
            "warn,ocellus=debug,ort=warn"
        );
        assert_eq!(quiet_dependencies("debug"), "debug");
        assert_eq!(quiet_dependencies("info,ort=info"), "info,ort=info");
        assert_eq!(
            quiet_dependencies("info,ort::logging=trace"),
            "info,ort::logging=trace"
        );
    }
}
