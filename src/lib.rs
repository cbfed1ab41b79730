//! Ocellus: an edge computer-vision telemetry daemon. Cameras -> motion and object detection ->
//! tracking -> events in SQLite, pushed live to WebSocket clients.
//!
//! The library holds every stage so that tests (and `ocellus replay`) drive the same code the
//! daemon runs.

pub mod appearance;
pub mod bus;
pub mod capture;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod db;
pub mod detect;
pub mod encoder;
pub mod errors;
pub mod events;
pub mod expect;
pub mod geometry;
pub mod hub;
pub mod jpeg;
pub mod logging;
pub mod metrics;
pub mod models;
pub mod motion;
pub mod mqtt;
pub mod pipeline;
pub mod prometheus;
pub mod protocol;
pub mod replay;
pub mod rest;
pub mod server;
pub mod state;
pub mod stats;
pub mod systemd;
pub mod tracker;
pub mod ws;
pub mod zones;
