//! Ocellus: an edge computer-vision telemetry daemon. Cameras -> motion and object detection ->
//! tracking -> events in SQLite, pushed live to WebSocket clients.
//!
//! The modules read as the data flow: `capture` -> `pipeline` -> `bus` -> `db`, `server`,
//! `mqtt`; `encoder` makes the live JPEG frames; `counts` are the per-minute counts over time;
//! `cmd` holds the commands that wire them (run, replay, fleet); `config`, `telemetry` and
//! `base` are what every stage stands on. docs/design.md, "Where things live", says more.
//!
//! The library holds every stage so that tests (and `ocellus replay`) drive the same code the
//! daemon runs. Only the modules the binary, the tests, the examples and the fuzz targets use
//! are public; `unreachable_pub` keeps every other item `pub(crate)`, so dead code shows.

#![warn(unreachable_pub)]

pub mod base;
mod bus;
mod capture;
pub mod cmd;
pub mod config;
pub mod counts;
pub mod db;
mod encoder;
mod mqtt;
pub mod pipeline;
mod record;
pub mod server;
pub mod telemetry;
