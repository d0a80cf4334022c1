//! The fixed pools of buffers that circulate between the pipeline's threads,
//! and the channel ends each thread holds.
//!
//! ```text
//!           frames                       done
//! source ──────────▶ infer-0..N-1 ──────────▶ decide
//!   ▲ free frames ◀────┘  ▲ free scores ◀──────┘
//! ```
//! Every buffer is made once, here, and comes back to its pool after use, so a
//! warm pipeline allocates none. Each channel holds a whole pool, so returning a
//! buffer never blocks. Each worker owns its input tensor (it fills and runs it).

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::frame::Frame;

use super::threads::Done;

/// How many of each buffer circulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSizes {
    /// Frames: one per worker being prepared, and two for the source to fill meanwhile.
    pub frames: usize,
    /// Score buffers: they bound how far results run ahead of the oldest
    /// undecided frame, and so the decide thread's reorder ring.
    pub scores: usize,
}

impl PoolSizes {
    /// The sizes for `workers` inference workers.
    pub fn for_workers(workers: usize) -> PoolSizes {
        let workers = workers.max(1);
        PoolSizes { frames: workers + 2, scores: workers * 2 + 1 }
    }
}

/// The source thread's ends.
pub struct SourceEnds {
    /// Empty frames to fill.
    pub free_frames: Receiver<Frame>,
    /// Filled frames, to the workers.
    pub frames: Sender<Frame>,
}

/// One inference worker's ends (each worker holds clones).
#[derive(Clone)]
pub struct WorkerEnds {
    /// Filled frames from the source.
    pub frames: Receiver<Frame>,
    /// Frames back to the source once their pixels are in the worker's tensor.
    pub free_frames: Sender<Frame>,
    /// Empty score buffers; a worker takes one *before* a job.
    pub free_scores: Receiver<Vec<f32>>,
    /// Results, to the decide thread.
    pub done: Sender<Done>,
}

/// The decide thread's ends.
pub struct DecideEnds {
    /// Results from the workers, in any order.
    pub done: Receiver<Done>,
    /// Score buffers back to their pool once decided.
    pub free_scores: Sender<Vec<f32>>,
}

/// Every thread's ends, with the pools filled.
pub struct Pools {
    /// For the source thread.
    pub source: SourceEnds,
    /// For the workers (clone per worker).
    pub worker: WorkerEnds,
    /// For the decide thread.
    pub decide: DecideEnds,
}

impl Pools {
    /// Make the channels and fill them: empty frames and score buffers of `labels` scores.
    pub fn new(sizes: PoolSizes, labels: usize) -> Pools {
        let (frame_tx, frame_rx) = bounded::<Frame>(sizes.frames);
        let (free_frame_tx, free_frame_rx) = bounded::<Frame>(sizes.frames);
        let (free_scores_tx, free_scores_rx) = bounded::<Vec<f32>>(sizes.scores);
        let (done_tx, done_rx) = bounded::<Done>(sizes.scores);
        for _ in 0..sizes.frames {
            free_frame_tx.send(Frame::empty()).expect("pool channel has room");
        }
        for _ in 0..sizes.scores {
            free_scores_tx.send(vec![0.0; labels]).expect("pool channel has room");
        }
        Pools {
            source: SourceEnds { free_frames: free_frame_rx, frames: frame_tx },
            worker: WorkerEnds {
                frames: frame_rx,
                free_frames: free_frame_tx,
                free_scores: free_scores_rx,
                done: done_tx,
            },
            decide: DecideEnds { done: done_rx, free_scores: free_scores_tx },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_grow_with_workers_and_bound_the_reorder_ring() {
        assert_eq!(PoolSizes::for_workers(1), PoolSizes { frames: 3, scores: 3 });
        assert_eq!(PoolSizes::for_workers(4), PoolSizes { frames: 6, scores: 9 });
        assert_eq!(PoolSizes::for_workers(0), PoolSizes::for_workers(1), "at least one worker");
    }
}
