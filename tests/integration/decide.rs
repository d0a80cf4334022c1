//! The decide stage's documented behaviour: hysteresis, N-of-M, hold, on
//! flickering scores (see the module docs of `vigil::decide`).

use std::sync::Arc;

use vigil::decide::{Decider, Event, LabelRule};

fn rule(on: f32, off: f32, min_frames: u32, window: u32, hold_ms: u64) -> LabelRule {
    LabelRule { on, off, min_frames, window, hold_ms }
}

/// Feed one label a score sequence at 100 ms per frame; return (frame index, on?) per event.
fn run(rule: LabelRule, scores: &[f32]) -> Vec<(u64, bool)> {
    let mut d = Decider::new(Arc::from(vec!["x".to_string()]), vec![rule]);
    let mut events: Vec<Event> = Vec::new();
    for (i, &s) in scores.iter().enumerate() {
        d.update(i as u64, i as u64 * 100, &[s], &mut events);
    }
    events.iter().map(|e| (e.seq, e.on)).collect()
}

#[test]
fn single_frame_rule_follows_thresholds_with_hysteresis() {
    // on at 0.6, off below 0.4: 0.5 neither switches on nor off.
    let r = rule(0.6, 0.4, 1, 1, 0);
    assert_eq!(run(r, &[0.5, 0.6, 0.5, 0.41, 0.4, 0.39, 0.5, 0.59, 0.61]), vec![(1, true), (5, false), (8, true)]);
}

#[test]
fn score_equal_to_on_counts_as_high_and_equal_to_off_keeps_on() {
    let r = rule(0.5, 0.3, 1, 1, 0);
    assert_eq!(run(r, &[0.5, 0.3, 0.2999]), vec![(0, true), (2, false)]);
}

#[test]
fn min_frames_needs_consecutive_high_frames_by_default() {
    let r = rule(0.5, 0.5, 3, 3, 0);
    // Two highs, a low, then three highs: on at the third consecutive high.
    assert_eq!(run(r, &[0.9, 0.9, 0.1, 0.9, 0.9, 0.9]), vec![(5, true)]);
}

#[test]
fn n_of_m_tolerates_gaps() {
    // 3 of the last 5 frames high.
    let r = rule(0.5, 0.2, 3, 5, 0);
    assert_eq!(run(r, &[0.9, 0.1, 0.9, 0.1, 0.9]), vec![(4, true)]);
    // Spread too thin: never 3 of 5.
    assert_eq!(run(r, &[0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 0.9, 0.1, 0.1]), vec![]);
}

#[test]
fn hold_keeps_label_on_through_short_dips() {
    // 100 ms per frame; hold 250 ms: off only once the score has been below `off` for >= 250 ms.
    let r = rule(0.5, 0.4, 1, 1, 250);
    // On at 0; dips at 1-2 (200 ms) recover at 3; dip from 4: 4,5,6 -> 6 is 200 ms, 7 is 300 ms -> off at 7.
    assert_eq!(run(r, &[0.9, 0.1, 0.1, 0.45, 0.1, 0.1, 0.1, 0.1, 0.1]), vec![(0, true), (7, false)]);
}

#[test]
fn flickering_score_is_debounced() {
    // A score flickering across a single 0.5 threshold every frame.
    let flicker: Vec<f32> = (0..40).map(|i| if i % 2 == 0 { 0.55 } else { 0.45 }).collect();
    // With no hysteresis and no debounce: an event on every frame.
    assert_eq!(run(rule(0.5, 0.5, 1, 1, 0), &flicker).len(), 40);
    // Hysteresis (off at 0.4): one switch-on and nothing else.
    assert_eq!(run(rule(0.5, 0.4, 1, 1, 0), &flicker), vec![(0, true)]);
    // No hysteresis but a 150 ms hold: the 100 ms dips never last long enough.
    assert_eq!(run(rule(0.5, 0.5, 1, 1, 150), &flicker), vec![(0, true)]);
    // 3 consecutive needed: a flicker never produces three in a row.
    assert_eq!(run(rule(0.5, 0.5, 3, 3, 0), &flicker), vec![]);
    // 3 of 5: it does (frames 0, 2, 4 are high).
    assert_eq!(run(rule(0.5, 0.5, 3, 5, 0), &flicker).first(), Some(&(4, true)));
}

#[test]
fn switching_off_clears_history() {
    // 2 of 3 needed. After switching off, old highs must not count again.
    let r = rule(0.5, 0.5, 2, 3, 0);
    assert_eq!(run(r, &[0.9, 0.9, 0.1, 0.9, 0.9]), vec![(1, true), (2, false), (4, true)]);
}

#[test]
fn labels_are_independent_and_state_is_kept() {
    let labels: Arc<[String]> = Arc::from(vec!["person".to_string(), "car".to_string(), "bus".to_string()]);
    let rules = vec![rule(0.5, 0.3, 1, 1, 0), rule(0.7, 0.6, 2, 2, 0), rule(0.5, 0.5, 1, 1, 0)];
    let mut d = Decider::new(labels, rules);
    let mut ev = Vec::new();
    d.update(0, 0, &[0.9, 0.8, 0.1], &mut ev);
    d.update(1, 100, &[0.4, 0.8, 0.1], &mut ev);
    let got: Vec<(u64, usize, bool)> = ev.iter().map(|e| (e.seq, e.label, e.on)).collect();
    assert_eq!(got, vec![(0, 0, true), (1, 1, true)]);
    let states = d.states();
    assert!(states[0].on && states[1].on && !states[2].on);
    assert_eq!(states[0].last_score, 0.4);
    assert_eq!(d.on_labels().collect::<Vec<_>>(), vec![0, 1]);
}

#[test]
fn window_of_64_frames_is_supported() {
    let r = rule(0.5, 0.5, 64, 64, 0);
    let mut scores = vec![0.9f32; 63];
    assert_eq!(run(r, &scores), vec![]);
    scores.push(0.9);
    assert_eq!(run(r, &scores), vec![(63, true)]);
}
