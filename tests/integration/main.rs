//! The integration tests, one binary (one link of OpenCV and the daemon's library instead of one
//! per file): each module drives the real `ocellus` binary or library against real parts (a
//! SQLite file, WebSocket clients, Chromium, an RTSP server, Mosquitto) and `harness` starts and
//! cleans them up. Run one area with `cargo test --test integration rtsp::`.

mod harness;

mod cameras;
mod counts;
mod daemon;
mod dashboard;
mod detectors;
mod fleet;
mod journal;
mod mqtt;
mod recording;
mod reliability;
mod replay;
mod rtsp;
mod runtime;
mod systemd;
mod tls;
mod video;
