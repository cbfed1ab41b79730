//! The commands: `run` (the daemon), `replay` (a recording through the same stages) and `fleet`
//! (many boxes through one broker). Each wires the stages below it; none is imported by them.

pub mod fleet;
pub mod replay;
pub mod run;
pub(crate) mod systemd;
