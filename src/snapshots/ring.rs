//! The frames a snapshot may still need: every frame a worker has turned into a tensor, held
//! until the decide thread is past it. A label switches on at frame `seq` only after that
//! frame went through a worker, which has handed the frame back to the source by then; this
//! ring keeps the last few frames' pixels for the snapshot thread to take.
//!
//! No copy per frame: the worker swaps the frame's `data` buffer with the slot of its `seq`
//! (so the frame goes back to the source's pool carrying that slot's buffer, which the source
//! refills). Workers finish frames out of order; slots are found by `seq`, and the ring holds as
//! many frames as can be between the workers and decide ([`crate::pipeline::frames_in_flight`]),
//! plus spare, so a frame is there when it is asked for.

use std::sync::Mutex;

use crate::frame::{Frame, PixelFormat, YuvColour};

/// A frame's pixels and what is needed to read them.
#[derive(Debug, Default)]
pub struct HeldFrame {
    /// The frame's sequence number (`None`: an empty slot).
    pub seq: Option<u64>,
    pub format: Option<PixelFormat>,
    pub width: u32,
    pub height: u32,
    pub colour: YuvColour,
    pub data: Vec<u8>,
}

/// The ring, shared by the workers (which fill it) and the snapshot thread.
#[derive(Debug)]
pub struct FrameRing {
    slots: Mutex<Vec<HeldFrame>>,
}

impl FrameRing {
    /// A ring of `capacity` frames.
    pub fn new(capacity: usize) -> FrameRing {
        FrameRing { slots: Mutex::new((0..capacity.max(1)).map(|_| HeldFrame::default()).collect()) }
    }

    /// Keep `frame`'s pixels, in the slot of its `seq`; the frame leaves with that slot's
    /// old buffer (no copy, no allocation).
    pub fn keep(&self, frame: &mut Frame) {
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = slots.len();
        let held = &mut slots[(frame.seq % n as u64) as usize];
        std::mem::swap(&mut held.data, &mut frame.data);
        held.seq = Some(frame.seq);
        held.format = Some(frame.format);
        (held.width, held.height, held.colour) = (frame.width, frame.height, frame.colour);
    }

    /// Copy frame `seq` into `into` (reusing its buffer); `false` if it is no longer held.
    pub fn copy_out(&self, seq: u64, into: &mut HeldFrame) -> bool {
        let slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let held = &slots[(seq % slots.len() as u64) as usize];
        if held.seq != Some(seq) {
            return false;
        }
        into.seq = held.seq;
        into.format = held.format;
        (into.width, into.height, into.colour) = (held.width, held.height, held.colour);
        into.data.clear();
        into.data.extend_from_slice(&held.data);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_frame_is_there_until_its_slot_is_reused() {
        let ring = FrameRing::new(3);
        let mut frame = Frame::empty();
        for seq in 0..5u64 {
            frame.seq = seq;
            frame.data.clear();
            frame.data.extend_from_slice(&[seq as u8; 4]);
            ring.keep(&mut frame);
        }
        let mut out = HeldFrame::default();
        assert!(!ring.copy_out(1, &mut out), "seq 1 was overwritten by seq 4");
        assert!(ring.copy_out(4, &mut out));
        assert_eq!(out.data, [4; 4]);
        assert!(ring.copy_out(2, &mut out));
        assert_eq!(out.data, [2; 4]);
    }
}
