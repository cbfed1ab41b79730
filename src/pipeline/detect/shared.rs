//! More cameras than cores: the cameras' detect threads take turns with as many detectors as
//! the box can run at once. Each detector holds a copy of the network's state (an ONNX Runtime
//! session with NanoDet-g: about 36 MB beyond its shared weights), so sixteen cameras on two
//! cores hold two, not sixteen; and no more inferences run at once than there are cores to run
//! them, where sixteen at once would only take turns on the cores anyway.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use opencv::core::Mat;

use super::{regions, Detection, DetectorInfo, ObjectDetector};
use crate::pipeline::detect::DetectError;

/// How many detectors `cameras` cameras need on `cores` cores when an inference takes
/// `threads` threads (0: one, since with several cameras each inference gets one).
pub(crate) fn needed(cameras: usize, cores: usize, threads: usize) -> usize {
    cameras.min((cores / threads.max(1)).max(1))
}

/// `n` detectors for `n` cameras that share `detectors` (which must not be empty): each call
/// waits for a free one, uses it, and hands it back.
pub(crate) fn share(
    detectors: Vec<Box<dyn ObjectDetector>>,
    n: usize,
) -> Vec<Box<dyn ObjectDetector>> {
    let info = detectors[0].info();
    let pool = Arc::new(Pool {
        state: Mutex::new(State {
            free: detectors,
            next_ticket: 0,
            serving: 0,
        }),
        changed: Condvar::new(),
        info,
    });
    (0..n)
        .map(|_| Box::new(Turn { pool: pool.clone() }) as Box<dyn ObjectDetector>)
        .collect()
}

struct Pool {
    state: Mutex<State>,
    /// A detector came back, or a borrower took its turn and left another one free.
    changed: Condvar,
    info: DetectorInfo,
}

/// The free detectors, and the borrowers' queue as a ticket counter: calls are served in the
/// order they came. Without it, a camera that hands a detector back and asks again at once
/// (every camera, on a box with more work than cores) takes it again before a waiting camera's
/// thread is even scheduled, and some cameras starve.
struct State {
    free: Vec<Box<dyn ObjectDetector>>,
    next_ticket: u64,
    serving: u64,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one still holds a whole state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn borrow(&self) -> Borrowed<'_> {
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        while ticket != state.serving || state.free.is_empty() {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.serving += 1;
        let detector = state.free.pop();
        // The next in the queue can go on only if another detector is free; otherwise the
        // detector that comes back next wakes it.
        let another_free = !state.free.is_empty();
        drop(state);
        if another_free {
            self.changed.notify_all();
        }
        Borrowed {
            pool: self,
            detector,
        }
    }
}

/// A detector out of the pool, back in it when dropped (also when its call panicked).
struct Borrowed<'a> {
    pool: &'a Pool,
    detector: Option<Box<dyn ObjectDetector>>,
}

impl Borrowed<'_> {
    fn get(&mut self) -> &mut dyn ObjectDetector {
        self.detector.as_deref_mut().expect("held until dropped")
    }
}

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        if let Some(detector) = self.detector.take() {
            self.pool.lock().free.push(detector);
            self.pool.changed.notify_all();
        }
    }
}

/// One camera's turn-taking handle on the pool.
struct Turn {
    pool: Arc<Pool>,
}

impl ObjectDetector for Turn {
    fn detect(&mut self, frame: &Mat) -> Result<Vec<Detection>, DetectError> {
        self.pool.borrow().get().detect(frame)
    }

    fn detect_crops(
        &mut self,
        frame: &Mat,
        crops: &[regions::Crop],
    ) -> Result<Vec<Detection>, DetectError> {
        self.pool.borrow().get().detect_crops(frame, crops)
    }

    fn info(&self) -> DetectorInfo {
        self.pool.info.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    /// Counts its calls and how many of its kind run at once.
    struct Probe {
        running: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
        calls: Arc<AtomicUsize>,
    }

    impl ObjectDetector for Probe {
        fn detect(&mut self, _frame: &Mat) -> Result<Vec<Detection>, DetectError> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            // Long enough for the other threads to pile up behind the pool if it let them.
            for _ in 0..1000 {
                std::thread::yield_now();
            }
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.running.fetch_sub(1, Ordering::SeqCst);
            Ok(Vec::new())
        }

        fn info(&self) -> DetectorInfo {
            DetectorInfo::planted("probe")
        }
    }

    #[test]
    fn the_detectors_needed_are_the_cores_an_inference_can_have_and_never_more_than_the_cameras() {
        assert_eq!(needed(1, 2, 0), 1);
        assert_eq!(needed(8, 2, 0), 2);
        assert_eq!(needed(16, 6, 0), 6);
        assert_eq!(needed(3, 8, 0), 3);
        assert_eq!(needed(8, 8, 2), 4);
        assert_eq!(needed(8, 2, 4), 1);
    }

    #[test]
    fn eight_cameras_on_two_detectors_never_run_more_than_two_at_once_and_every_call_is_answered() {
        let (running, most, calls) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let detectors: Vec<Box<dyn ObjectDetector>> = (0..2)
            .map(|_| {
                Box::new(Probe {
                    running: running.clone(),
                    most: most.clone(),
                    calls: calls.clone(),
                }) as Box<dyn ObjectDetector>
            })
            .collect();
        let cameras = share(detectors, 8);
        assert_eq!(cameras[3].info().kind, "probe");
        let start = Arc::new(Barrier::new(cameras.len()));
        let threads: Vec<_> = cameras
            .into_iter()
            .map(|mut camera| {
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    let frame = Mat::default();
                    for _ in 0..50 {
                        camera.detect(&frame).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 8 * 50);
        assert!(
            most.load(Ordering::SeqCst) <= 2,
            "{} at once",
            most.load(Ordering::SeqCst)
        );
        assert_eq!(
            most.load(Ordering::SeqCst),
            2,
            "the two detectors were used side by side"
        );
    }

    /// Cameras that want the detector again the moment they hand it back (an overloaded box:
    /// each has its next frame waiting) still take turns: none gets ahead of the others by more
    /// than a call, where the last one to hand it back could otherwise take it again before a
    /// waiting camera wakes.
    #[test]
    fn cameras_that_always_want_the_detector_take_it_in_turn() {
        let calls = Arc::new(AtomicUsize::new(0));
        let probe = Probe {
            running: Arc::new(AtomicUsize::new(0)),
            most: Arc::new(AtomicUsize::new(0)),
            calls: calls.clone(),
        };
        let cameras = share(vec![Box::new(probe)], 4);
        let done: Vec<_> = (0..4).map(|_| Arc::new(AtomicUsize::new(0))).collect();
        let start = Arc::new(Barrier::new(cameras.len()));
        let threads: Vec<_> = cameras
            .into_iter()
            .zip(done.clone())
            .map(|(mut camera, done)| {
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    let frame = Mat::default();
                    for _ in 0..200 {
                        camera.detect(&frame).unwrap();
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        // When the first camera is through, every other one has had nearly as many turns.
        let first_through = loop {
            let counts: Vec<usize> = done.iter().map(|d| d.load(Ordering::SeqCst)).collect();
            if counts.contains(&200) {
                break counts;
            }
            std::thread::yield_now();
        };
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 4 * 200);
        let least = *first_through.iter().min().unwrap();
        assert!(
            least >= 195,
            "turns when the first camera was through: {first_through:?}"
        );
    }

    #[test]
    fn a_detector_whose_call_panicked_goes_back_to_the_pool() {
        struct Panics;
        impl ObjectDetector for Panics {
            fn detect(&mut self, frame: &Mat) -> Result<Vec<Detection>, DetectError> {
                if frame.empty() {
                    panic!("planted");
                }
                Ok(Vec::new())
            }
            fn info(&self) -> DetectorInfo {
                DetectorInfo::planted("panics")
            }
        }
        let mut cameras = share(vec![Box::new(Panics)], 2);
        let mut first = cameras.remove(0);
        let caught = std::thread::spawn(move || first.detect(&Mat::default())).join();
        assert!(caught.is_err());
        // The one detector is back: the other camera's call does not wait forever.
        let frame = Mat::new_rows_cols_with_default(
            2,
            2,
            opencv::core::CV_8UC3,
            opencv::core::Scalar::all(0.0),
        )
        .unwrap();
        assert!(cameras[0].detect(&frame).unwrap().is_empty());
    }
}
