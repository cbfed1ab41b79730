//! How the daemon reports on itself: per-camera counters, the box's health, the journal.

pub(crate) mod health;
pub(crate) mod live_counts;
pub mod logging;
pub mod metrics;
