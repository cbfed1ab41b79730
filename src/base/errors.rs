//! What every error shares. The error enums themselves live beside the code that returns them,
//! one or more per area (config::ConfigError, capture::CaptureError, pipeline::detect::DetectError,
//! db::DbError, ...); each message says what went wrong and, where it can, what to do.

/// Formats an error with its whole chain of causes on one line: `a: b: c`.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(cause) = cur {
        let s = cause.to_string();
        // thiserror messages often embed their source already; don't print it twice.
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = cause.source();
    }
    out
}
