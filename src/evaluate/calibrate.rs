//! Choosing per-label thresholds on a labelled set (written by
//! [`crate::thresholds::file`], the one thresholds writer).
//!
//! For each label, the candidate `on` thresholds are the distinct scores the
//! model gave on the set (every other value predicts the same images as one of
//! them). The objective picks one candidate:
//!
//! - `f1`: the highest F1; on a tie, the highest threshold (fewer alarms for the same F1).
//! - `precision>=P`: the highest recall among thresholds with precision ≥ P (on a tie,
//!   the highest threshold). If no threshold reaches P, the highest precision is
//!   taken and the label is reported as not meeting the objective.
//! - `recall>=R`: the highest precision among thresholds with recall ≥ R (on a tie,
//!   the highest threshold). Always reachable when the label has positives.
//!
//! The threshold written is not the candidate score itself but the "roundest"
//! number (fewest decimals) strictly above the next lower score and at most the
//! candidate, closest to their midpoint: it predicts the same images on this
//! set, and leaves a margin on both sides for images the set does not have.
//! `off` is `on - margin`, but at least `on / 2`, so that it stays above 0 (a sigmoid
//! never reaches 0: such a label could never switch off) and below `on`. A label with no positives in the set
//! keeps its thresholds: nothing on the set can say where they should be.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::metrics::ratio;
use crate::thresholds::file::as_decimal;

/// What `vigil calibrate` optimises, per label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Objective {
    /// Maximise F1.
    F1,
    /// Maximise recall subject to precision ≥ the value.
    MinPrecision(f64),
    /// Maximise precision subject to recall ≥ the value.
    MinRecall(f64),
}

impl FromStr for Objective {
    type Err = String;

    fn from_str(s: &str) -> Result<Objective, String> {
        let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_lowercase();
        if compact == "f1" {
            return Ok(Objective::F1);
        }
        let bound = |rest: &str| -> Result<f64, String> {
            match rest.parse::<f64>() {
                Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
                _ => Err(format!("`{rest}`: expected a number from 0 to 1 after `>=`")),
            }
        };
        if let Some(rest) = compact.strip_prefix("precision>=") {
            return bound(rest).map(Objective::MinPrecision);
        }
        if let Some(rest) = compact.strip_prefix("recall>=") {
            return bound(rest).map(Objective::MinRecall);
        }
        Err(format!("`{s}`: expected `f1`, `precision>=P` or `recall>=R` (P, R from 0 to 1)"))
    }
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Objective::F1 => write!(f, "f1"),
            Objective::MinPrecision(p) => write!(f, "precision>={p}"),
            Objective::MinRecall(r) => write!(f, "recall>={r}"),
        }
    }
}

impl Serialize for Objective {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The threshold chosen for one label, and what it gives on the set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Choice {
    /// The `on` threshold.
    pub on: f32,
    /// Whether the objective's constraint is met (always true for `f1`).
    pub met: bool,
    /// Precision on the set at `on`.
    pub precision: f64,
    /// Recall on the set at `on`.
    pub recall: f64,
    /// F1 on the set at `on`.
    pub f1: f64,
}

/// One candidate: predict every image scoring at least `score`.
struct Candidate {
    score: f32,
    /// The next lower distinct score, if any.
    below: Option<f32>,
    tp: usize,
    fp: usize,
}

/// Pick `on` for one label by `objective`; `None` when the label has no positives.
pub fn choose(truth: &[bool], scores: &[f32], objective: Objective) -> Option<Choice> {
    let positives = truth.iter().filter(|&&t| t).count();
    if positives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).filter(|&i| !scores[i].is_nan()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut candidates: Vec<Candidate> = Vec::new();
    let (mut tp, mut fp) = (0, 0);
    let mut i = 0;
    while i < order.len() {
        let score = scores[order[i]];
        while i < order.len() && scores[order[i]] == score {
            if truth[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        if let Some(last) = candidates.last_mut() {
            last.below = Some(score);
        }
        candidates.push(Candidate { score, below: None, tp, fp });
    }
    let precision = |c: &Candidate| ratio(c.tp, c.tp + c.fp);
    let recall = |c: &Candidate| ratio(c.tp, positives);
    let f1 = |c: &Candidate| ratio(2 * c.tp, positives + c.tp + c.fp);
    // Candidates run from the highest threshold down, so keeping the first of equal keys keeps the
    // highest threshold among the best. Keys compare lexicographically: (what is maximised, tie-break).
    let best_by = |ok: &dyn Fn(&Candidate) -> bool, key: &dyn Fn(&Candidate) -> (f64, f64)| -> Option<usize> {
        let mut best: Option<(usize, (f64, f64))> = None;
        for (i, c) in candidates.iter().enumerate().filter(|(_, c)| ok(c)) {
            let k = key(c);
            if best.is_none_or(|(_, b)| k > b) {
                best = Some((i, k));
            }
        }
        best.map(|(i, _)| i)
    };
    let (index, met) = match objective {
        Objective::F1 => (best_by(&|_| true, &|c| (f1(c), 0.0)), true),
        Objective::MinPrecision(p) => match best_by(&|c| precision(c) >= p, &|c| (recall(c), 0.0)) {
            Some(i) => (Some(i), true),
            // Unreachable: the most precise threshold, and among those the one that finds the most.
            None => (best_by(&|_| true, &|c| (precision(c), recall(c))), false),
        },
        Objective::MinRecall(r) => (best_by(&|c| recall(c) >= r, &|c| (precision(c), 0.0)), true),
    };
    let c = &candidates[index?];
    Some(Choice {
        on: round_between(c.below.unwrap_or(0.0), c.score),
        met,
        precision: precision(c),
        recall: recall(c),
        f1: f1(c),
    })
}

/// The number with the fewest decimals in `(low, high]`, nearest the midpoint;
/// `high` when there is no room (adjacent floats, or `high <= 0`).
pub fn round_between(low: f32, high: f32) -> f32 {
    if high <= low || high <= 0.0 {
        return high.max(0.0);
    }
    let mid = (f64::from(low) + f64::from(high)) / 2.0;
    for decimals in 1..=9 {
        let scale = 10f64.powi(decimals);
        let r = ((mid * scale).round() / scale) as f32;
        if r > low && r <= high {
            return r;
        }
    }
    high
}

/// `on - margin`, but never below `on / 2`, rounded to 6 decimals so `0.4 - 0.1` reads as `0.3`.
///
/// The floor keeps `off` above 0 and a real step below `on` for a low `on` (a label whose `off`
/// were 0 could switch on but never off: a sigmoid never reaches 0). `on <= 0` gives 0.
pub fn off_below(on: f32, margin: f32) -> f32 {
    if on <= 0.0 {
        return 0.0;
    }
    let on_decimal = as_decimal(on);
    let off = ((on_decimal - f64::from(margin)).max(on_decimal / 2.0) * 1e6).round() / 1e6;
    if off > 0.0 && off < on_decimal { off as f32 } else { on / 2.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objectives_parse() {
        assert_eq!("f1".parse::<Objective>(), Ok(Objective::F1));
        assert_eq!("precision >= 0.9".parse::<Objective>(), Ok(Objective::MinPrecision(0.9)));
        assert_eq!("recall>=1".parse::<Objective>(), Ok(Objective::MinRecall(1.0)));
        assert!("precision>=1.5".parse::<Objective>().is_err());
        assert!("accuracy".parse::<Objective>().is_err());
    }

    #[test]
    fn f1_choice_sits_between_scores() {
        // Positives 0.9, 0.6; negatives 0.7, 0.1. Best F1: threshold 0.6 (tp 2, fp 1) -> 0.8.
        let c = choose(&[true, true, false, false], &[0.9, 0.6, 0.7, 0.1], Objective::F1).unwrap();
        assert_eq!(c.f1, 0.8);
        assert!(c.on > 0.1 && c.on <= 0.6, "{c:?}");
        assert_eq!(c.on, 0.4);
        assert_eq!(choose(&[false, false], &[0.5, 0.2], Objective::F1), None);
    }

    #[test]
    fn precision_and_recall_objectives() {
        let truth = [true, false, true, false, true];
        let scores = [0.9, 0.8, 0.7, 0.3, 0.2];
        let p = choose(&truth, &scores, Objective::MinPrecision(0.99)).unwrap();
        assert!(p.met && p.precision == 1.0 && p.on > 0.8 && p.on <= 0.9, "{p:?}");
        let r = choose(&truth, &scores, Objective::MinRecall(1.0)).unwrap();
        assert!(r.met && r.recall == 1.0 && r.on <= 0.2, "{r:?}");
        let never = choose(&[true, false], &[0.1, 0.9], Objective::MinPrecision(0.9)).unwrap();
        assert!(!never.met, "{never:?}");
    }

    #[test]
    fn rounding_and_margin() {
        assert_eq!(round_between(0.0001, 0.745), 0.4);
        assert_eq!(round_between(0.5, 0.5), 0.5);
        assert_eq!(off_below(0.4, 0.1), 0.3);
        // A low `on` keeps half of itself as `off`: above 0, below `on` (issue 19: calibrate
        // wrote tabby 0.05 / 0.0, a label that could switch on but never off).
        assert_eq!(off_below(0.05, 0.1), 0.025);
        assert_eq!(off_below(0.15, 0.1), 0.075);
        assert_eq!(off_below(0.3, 0.1), 0.2);
        let tiny = off_below(1e-7, 0.1);
        assert!(tiny > 0.0 && tiny < 1e-7, "{tiny}");
    }
}
