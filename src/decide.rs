//! The decide stage: per-label state machines with hysteresis, N-of-M
//! confirmation and a cool-down before switching off.
//!
//! For each label, independently, on every frame with score `s` at time `t`:
//! - **off → on**: the frame counts as *high* when `s >= on`. The label
//!   switches on when at least `min_frames` of the last `window` frames
//!   (including this one) were high. `window == min_frames` means
//!   "`min_frames` consecutive frames".
//! - **on → off**: while on, a frame with `s < off` starts (or continues) a
//!   cool-down; a frame with `s >= off` cancels it. The label switches off on
//!   the first frame below `off` that is at least `hold_ms` after the
//!   cool-down began (`hold_ms == 0`: on the first frame below `off`). The
//!   high-frame history is cleared on switching off, so switching on again
//!   needs a fresh `min_frames` of `window`.
//!
//! Scores between `off` and `on` never change the state (hysteresis).

use std::sync::Arc;

/// One label's decision rule (validated by [`crate::thresholds::resolve`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelRule {
    /// Score at or above which a frame is high.
    pub on: f32,
    /// Score below which an on label cools down towards off. `off <= on`.
    pub off: f32,
    /// High frames needed within `window` to switch on (N of N-of-M).
    pub min_frames: u32,
    /// Frames considered for `min_frames` (M of N-of-M), 1..=64.
    pub window: u32,
    /// Cool-down below `off` before switching off, in milliseconds.
    pub hold_ms: u64,
}

/// The live state of one label.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LabelState {
    /// Whether the label is currently detected.
    pub on: bool,
    /// The score of the latest frame.
    pub last_score: f32,
    /// Bit i set: the frame i frames ago was high.
    history: u64,
    /// When the current cool-down began, if one is running.
    below_since_ms: Option<u64>,
}

/// A state change of one label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    /// Frame that caused it.
    pub seq: u64,
    /// Capture time of that frame, ms since the run started.
    pub t_ms: u64,
    /// Index of the label in the model's label list.
    pub label: usize,
    /// The new state.
    pub on: bool,
    /// The score that caused it.
    pub score: f32,
}

/// All labels' rules and states.
#[derive(Debug, Clone)]
pub struct Decider {
    labels: Arc<[String]>,
    rules: Vec<LabelRule>,
    states: Vec<LabelState>,
}

impl Decider {
    /// One rule per label, in the model's output order.
    pub fn new(labels: Arc<[String]>, rules: Vec<LabelRule>) -> Decider {
        assert_eq!(labels.len(), rules.len(), "one rule per label");
        let states = vec![LabelState::default(); labels.len()];
        Decider { labels, rules, states }
    }

    /// Feed one frame's scores (in label order); push every state change onto
    /// `events` (which is not cleared, so the caller can reuse it).
    pub fn update(&mut self, seq: u64, t_ms: u64, scores: &[f32], events: &mut Vec<Event>) {
        debug_assert_eq!(scores.len(), self.states.len());
        for (label, ((state, rule), &score)) in self.states.iter_mut().zip(&self.rules).zip(scores).enumerate() {
            state.last_score = score;
            let window_mask = if rule.window >= 64 { u64::MAX } else { (1u64 << rule.window) - 1 };
            state.history = (state.history << 1) | u64::from(score >= rule.on);
            if !state.on {
                if (state.history & window_mask).count_ones() >= rule.min_frames {
                    state.on = true;
                    state.below_since_ms = None;
                    events.push(Event { seq, t_ms, label, on: true, score });
                }
            } else if score >= rule.off {
                state.below_since_ms = None;
            } else {
                let since = *state.below_since_ms.get_or_insert(t_ms);
                if t_ms.saturating_sub(since) >= rule.hold_ms {
                    state.on = false;
                    state.history = 0;
                    state.below_since_ms = None;
                    events.push(Event { seq, t_ms, label, on: false, score });
                }
            }
        }
    }

    /// Label names, in output order.
    pub fn labels(&self) -> &Arc<[String]> {
        &self.labels
    }

    /// Current state of every label.
    pub fn states(&self) -> &[LabelState] {
        &self.states
    }

    /// Current rules.
    pub fn rules(&self) -> &[LabelRule] {
        &self.rules
    }

    /// Replace one label's rule (e.g. a threshold changed at run time); its state is kept.
    pub fn set_rule(&mut self, label: usize, rule: LabelRule) {
        self.rules[label] = rule;
    }

    /// Take over the label states of `previous` (the run before a reload) for every label
    /// of the same name, so that a label that was on stays on without a second ON event,
    /// and one that was off needs its `min_frames` again as usual.
    pub fn take_states_from(&mut self, previous: &Decider) {
        for (label, state) in self.labels.iter().zip(self.states.iter_mut()) {
            if let Some(i) = previous.labels.iter().position(|l| l == label) {
                *state = previous.states[i];
                // A cool-down counts in the old run's time; start it again on fresh frames.
                state.below_since_ms = None;
            }
        }
    }

    /// The source was lost: what the labels showed is unknown now, not unchanged. Every label
    /// that is on switches off (an event each, with its last score, at frame `seq`), and every
    /// history is cleared, so decisions start again from fresh frames.
    pub fn forget(&mut self, seq: u64, t_ms: u64, events: &mut Vec<Event>) {
        for (label, state) in self.states.iter_mut().enumerate() {
            if state.on {
                events.push(Event { seq, t_ms, label, on: false, score: state.last_score });
            }
            *state = LabelState { last_score: state.last_score, ..LabelState::default() };
        }
    }

    /// Indices of the labels that are on.
    pub fn on_labels(&self) -> impl Iterator<Item = usize> + '_ {
        self.states.iter().enumerate().filter(|(_, s)| s.on).map(|(i, _)| i)
    }
}
