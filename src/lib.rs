//! Ocellus: an edge computer-vision telemetry daemon. Cameras -> motion and object detection ->
//! tracking -> events in SQLite, pushed live to WebSocket clients.
//!
//! The library holds every stage so that tests (and `ocellus replay`) drive the same code the
//! daemon runs. Only the modules the binary, the tests, the examples and the fuzz targets use
//! are public; `unreachable_pub` keeps every other item `pub(crate)`, so dead code shows.

#![warn(unreachable_pub)]

mod appearance;
mod bus;
mod capture;
pub mod clock;
pub mod config;
pub mod counts;
pub mod daemon;
mod dashboard;
pub mod db;
pub mod detect;
mod encoder;
pub mod errors;
mod events;
pub mod expect;
pub mod fleet;
mod geometry;
mod health;
mod hub;
mod jpeg;
pub mod logging;
pub mod metrics;
pub mod models;
mod motion;
mod mqtt;
mod pipeline;
mod prometheus;
pub mod protocol;
pub mod replay;
mod rest;
mod server;
mod state;
mod stats;
mod systemd;
mod tls;
mod tracker;
mod ws;
mod zones;
