//! What every stage stands on: the clock, the error helpers, box geometry, the JPEG encoder.

pub mod clock;
pub mod errors;
pub(crate) mod geometry;
pub(crate) mod jpeg;
