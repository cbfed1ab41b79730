//! What a pipeline reads: a feed (the replay's in-order channel, or the live daemon's newest-wins
//! slot) of frames with what the stages before it already found.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::Detected;
use crate::capture::live::FrameSlot;
use crate::capture::Frame;
use crate::pipeline::detect::DetectError;
use crate::pipeline::motion::MotionResult;
use crate::pipeline::values::Detection;

/// What reaches the detect stage: a frame (owned, or shared with the live stream) and what the
/// stages before it have already found.
pub(crate) enum Staged<F> {
    /// Straight from capture.
    Captured(F),
    /// Through a [`motion_stage`](super::motion_stage).
    Moved(F, MotionResult),
    /// Through a [`DetectorPool`](super::DetectorPool) too (`None`: the detector did not run).
    Detected(F, MotionResult, Option<Result<Vec<Detection>, DetectError>>),
}

impl From<Arc<Frame>> for Staged<Arc<Frame>> {
    fn from(frame: Arc<Frame>) -> Self {
        Staged::Captured(frame)
    }
}

impl From<(Frame, MotionResult)> for Staged<Frame> {
    fn from((frame, motion): (Frame, MotionResult)) -> Self {
        Staged::Moved(frame, motion)
    }
}

impl From<Detected> for Staged<Frame> {
    fn from((frame, motion, result): Detected) -> Self {
        Staged::Detected(frame, motion, result)
    }
}

/// What a feed has for the pipeline after a wait.
pub(crate) enum Next<T> {
    Item(T),
    /// Nothing yet.
    Idle,
    /// Nothing ever again.
    Closed,
}

/// Where a pipeline's input comes from.
pub(crate) trait Feed {
    type Item;
    /// The next item, waiting at most `wait`.
    fn next(&self, wait: Duration) -> Next<Self::Item>;
}

/// An in-order channel: nothing is dropped (replay).
impl<T> Feed for Receiver<T> {
    type Item = T;
    fn next(&self, wait: Duration) -> Next<T> {
        match self.recv_timeout(wait) {
            Ok(item) => Next::Item(item),
            Err(RecvTimeoutError::Timeout) => Next::Idle,
            Err(RecvTimeoutError::Disconnected) => Next::Closed,
        }
    }
}

/// The newest frame, whichever it is (the live daemon); the slot never closes, the pipeline
/// stops on its cancel token.
impl Feed for FrameSlot {
    type Item = Arc<Frame>;
    fn next(&self, wait: Duration) -> Next<Arc<Frame>> {
        match self.take(wait) {
            Some(frame) => Next::Item(frame),
            None => Next::Idle,
        }
    }
}
