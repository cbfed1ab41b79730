//! systemd integration: READY=1 once the database is open and the port bound, WATCHDOG=1 only
//! while the pipelines make progress, a one-line STATUS=, and STOPPING=1. Every call is a no-op
//! outside systemd (no `NOTIFY_SOCKET`).

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::capture::live::SourceStatus;
use crate::server::state::AppState;
use crate::telemetry::metrics::get;

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

pub(crate) fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub(crate) fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Per-camera progress between two watchdog checks.
#[derive(Clone, Copy, Default)]
struct Progress {
    processed: u64,
}

/// Whether the pipelines are healthy: every camera that says it is connected has processed a
/// frame since the last check, and none has been stuck connecting for over a minute. A camera
/// that is retrying is healthy (its thread keeps trying, and a restart would not bring it back);
/// a connected camera whose frames stopped is a stalled pipeline, which a restart may fix.
fn healthy(state: &AppState, before: &[Progress], now: &[Progress]) -> bool {
    state
        .cameras()
        .iter()
        .enumerate()
        .all(|(i, c)| match c.state.status() {
            SourceStatus::Connected => now[i].processed > before[i].processed,
            SourceStatus::Connecting => {
                crate::base::clock::now_ms() - c.state.current().since_ms < 60_000
            }
            SourceStatus::Retrying | SourceStatus::Stopped => true,
        })
}

fn progress(state: &AppState) -> Vec<Progress> {
    state
        .cameras()
        .iter()
        .map(|c| Progress {
            processed: get(&c.stats.processed),
        })
        .collect()
}

/// The one-line summary for `systemctl status`.
pub(crate) fn status_line(state: &AppState) -> String {
    state.latest_stats().status_line()
}

/// Sends WATCHDOG=1 at half the watchdog period while the pipelines are healthy, and STATUS=
/// every few seconds. Runs until aborted.
pub(crate) async fn watchdog_loop(state: Arc<AppState>) {
    let watchdog = sd_notify::watchdog_enabled();
    let every = watchdog.map(|w| w / 2).unwrap_or(Duration::from_secs(5));
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut before = progress(&state);
    let mut was_healthy = true;
    loop {
        tick.tick().await;
        let now = progress(&state);
        let ok = healthy(&state, &before, &now);
        let status = status_line(&state);
        if watchdog.is_some() && ok {
            notify(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
        } else {
            notify(&[NotifyState::Status(&status)]);
        }
        if ok != was_healthy {
            if ok {
                tracing::info!("pipelines are making progress again");
            } else {
                tracing::error!(
                    "a connected camera has processed no frame for {:?}; withholding the watchdog",
                    every
                );
            }
        }
        was_healthy = ok;
        before = now;
    }
}
