//! Multi-label metrics, defined exactly as scikit-learn defines them (with
//! `zero_division=0`), so that numbers from vigil and from a notebook agree.
//!
//! Inputs are a table of `n` images × `k` labels: ground truth (`bool`) and
//! scores (`f32`, after the model's activation). A label is predicted for an
//! image when its score reaches the label's `on` threshold (`score >= on`), the
//! same test the daemon's decide stage and `vigil classify` apply.
//!
//! - **AP** (per label): `average_precision_score`: the step-wise sum
//!   `Σ (R_t − R_{t−1}) · P_t` over thresholds `t` at the distinct score values,
//!   highest first (tied scores enter together); not interpolated. A label
//!   with no positives has no AP (`None`; scikit-learn warns and gives 0).
//! - **mAP**: the mean AP over the labels with at least one positive.
//! - **precision, recall, F1** (per label, at `on`): `tp/(tp+fp)`, `tp/(tp+fn)`,
//!   `2tp/(2tp+fp+fn)`; 0 where the denominator is 0.
//! - **micro** P/R/F1: the same formulas on counts summed over labels.
//! - **macro** P/R/F1: the plain mean of the per-label values over every label
//!   evaluated (a label with no positives and no predictions counts as 0).
//! - **samples-F1**: per image, `2|T∩P| / (|T|+|P|)` (0 when both are empty), averaged.
//! - **Hamming loss**: the fraction of (image, label) cells predicted wrongly.
//! - **subset accuracy**: the fraction of images whose predicted label set equals the truth.

use serde::Serialize;

/// Ground truth and scores of a labelled set, one row per image, one column per evaluated label.
#[derive(Debug, Clone, Default)]
pub struct ScoreTable {
    /// Column names.
    pub labels: Vec<String>,
    /// `truth[i][j]`: image `i` has label `j`.
    pub truth: Vec<Vec<bool>>,
    /// `scores[i][j]`: the model's score for label `j` on image `i`.
    pub scores: Vec<Vec<f32>>,
}

impl ScoreTable {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.truth.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.truth.is_empty()
    }

    /// Column `j` of the truth.
    pub fn truth_column(&self, j: usize) -> Vec<bool> {
        self.truth.iter().map(|row| row[j]).collect()
    }

    /// Column `j` of the scores.
    pub fn score_column(&self, j: usize) -> Vec<f32> {
        self.scores.iter().map(|row| row[j]).collect()
    }
}

/// One point of a precision-recall curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PrPoint {
    /// Predict the label when `score >= threshold`.
    pub threshold: f32,
    /// Precision at this threshold.
    pub precision: f64,
    /// Recall at this threshold.
    pub recall: f64,
}

/// Precision and recall at every distinct score, highest threshold first:
/// scikit-learn's `precision_recall_curve` without its closing (recall 0,
/// precision 1) point. With no positives, recall is 1 everywhere (as sklearn).
pub fn pr_curve(truth: &[bool], scores: &[f32]) -> Vec<PrPoint> {
    assert_eq!(truth.len(), scores.len(), "one score per truth value");
    let positives = truth.iter().filter(|&&t| t).count();
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut points = Vec::new();
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        // Every image with this exact score crosses the threshold together.
        while i < order.len() && same_score(scores[order[i]], s) {
            if truth[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        let recall = if positives == 0 { 1.0 } else { ratio(tp, positives) };
        points.push(PrPoint { threshold: s, precision: ratio(tp, tp + fp), recall });
    }
    points
}

/// Equal scores tie (0.0 and -0.0 included); NaNs tie with each other so a bad score cannot hang the sweep.
fn same_score(a: f32, b: f32) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// `a / b`, or 0 when `b` is 0 (scikit-learn's `zero_division=0`).
pub fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// scikit-learn's `average_precision_score` for one label; `None` when it has no positives.
pub fn average_precision(truth: &[bool], scores: &[f32]) -> Option<f64> {
    if !truth.iter().any(|&t| t) {
        return None;
    }
    let mut ap = 0.0;
    let mut previous_recall = 0.0;
    for p in pr_curve(truth, scores) {
        ap += (p.recall - previous_recall) * p.precision;
        previous_recall = p.recall;
    }
    Some(ap)
}

/// Confusion counts of one label at one threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Predicted and true.
    pub tp: usize,
    /// Predicted, not true.
    pub fp: usize,
    /// True, not predicted.
    #[serde(rename = "fn")]
    pub fn_: usize,
    /// Neither.
    pub tn: usize,
}

impl Counts {
    /// Count `score >= on` against the truth.
    pub fn at(truth: &[bool], scores: &[f32], on: f32) -> Counts {
        let mut c = Counts::default();
        for (&t, &s) in truth.iter().zip(scores) {
            match (t, s >= on) {
                (true, true) => c.tp += 1,
                (false, true) => c.fp += 1,
                (true, false) => c.fn_ += 1,
                (false, false) => c.tn += 1,
            }
        }
        c
    }

    /// `tp / (tp + fp)`, 0 when nothing is predicted.
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    /// `tp / (tp + fn)`, 0 when there are no positives.
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// `2tp / (2tp + fp + fn)`, 0 when there are neither positives nor predictions.
    pub fn f1(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
}

/// One label's numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelMetrics {
    /// Label name.
    pub label: String,
    /// Images that have the label.
    pub support: usize,
    /// `support / images`.
    pub frequency: f64,
    /// Average precision; `None` (JSON `null`) when the label has no positives.
    pub ap: Option<f64>,
    /// The `on` threshold the counts below were taken at.
    pub on: f32,
    /// Precision at `on`.
    pub precision: f64,
    /// Recall at `on`.
    pub recall: f64,
    /// F1 at `on`.
    pub f1: f64,
    /// Confusion counts at `on`.
    pub counts: Counts,
}

/// The whole set's numbers at one set of thresholds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// Images.
    pub images: usize,
    /// Per label, in column order.
    pub labels: Vec<LabelMetrics>,
    /// Mean AP over the labels with at least one positive; `None` if no label has one.
    pub map: Option<f64>,
    /// How many labels `map` averages over.
    pub map_labels: usize,
    /// Precision of the pooled counts.
    pub micro_precision: f64,
    /// Recall of the pooled counts.
    pub micro_recall: f64,
    /// F1 of the pooled counts.
    pub micro_f1: f64,
    /// Mean per-label precision.
    pub macro_precision: f64,
    /// Mean per-label recall.
    pub macro_recall: f64,
    /// Mean per-label F1.
    pub macro_f1: f64,
    /// Mean per-image F1.
    pub samples_f1: f64,
    /// Fraction of wrong (image, label) cells.
    pub hamming_loss: f64,
    /// Fraction of images predicted exactly right.
    pub subset_accuracy: f64,
}

/// All metrics of `table` with label `j` predicted when its score is `>= on[j]`.
pub fn compute(table: &ScoreTable, on: &[f32]) -> Metrics {
    let (n, k) = (table.len(), table.labels.len());
    assert_eq!(on.len(), k, "one threshold per label");
    let mut labels = Vec::with_capacity(k);
    let mut pooled = Counts::default();
    for (j, name) in table.labels.iter().enumerate() {
        let (truth, scores) = (table.truth_column(j), table.score_column(j));
        let counts = Counts::at(&truth, &scores, on[j]);
        pooled.tp += counts.tp;
        pooled.fp += counts.fp;
        pooled.fn_ += counts.fn_;
        pooled.tn += counts.tn;
        let support = counts.tp + counts.fn_;
        labels.push(LabelMetrics {
            label: name.clone(),
            support,
            frequency: ratio(support, n),
            ap: average_precision(&truth, &scores),
            on: on[j],
            precision: counts.precision(),
            recall: counts.recall(),
            f1: counts.f1(),
            counts,
        });
    }
    let aps: Vec<f64> = labels.iter().filter_map(|l| l.ap).collect();
    let mean = |f: fn(&LabelMetrics) -> f64| if k == 0 { 0.0 } else { labels.iter().map(f).sum::<f64>() / k as f64 };
    let (mut samples_f1, mut exact) = (0.0, 0usize);
    for (truth, scores) in table.truth.iter().zip(&table.scores) {
        let (mut both, mut truths, mut predicted) = (0, 0, 0);
        for ((&t, &s), &o) in truth.iter().zip(scores).zip(on) {
            let p = s >= o;
            both += usize::from(t && p);
            truths += usize::from(t);
            predicted += usize::from(p);
        }
        samples_f1 += ratio(2 * both, truths + predicted);
        exact += usize::from(both == truths && both == predicted);
    }
    Metrics {
        images: n,
        map: (!aps.is_empty()).then(|| aps.iter().sum::<f64>() / aps.len() as f64),
        map_labels: aps.len(),
        micro_precision: pooled.precision(),
        micro_recall: pooled.recall(),
        micro_f1: pooled.f1(),
        macro_precision: mean(|l| l.precision),
        macro_recall: mean(|l| l.recall),
        macro_f1: mean(|l| l.f1),
        samples_f1: if n == 0 { 0.0 } else { samples_f1 / n as f64 },
        hamming_loss: ratio(pooled.fp + pooled.fn_, n * k),
        subset_accuracy: ratio(exact, n),
        labels,
    }
}

/// `c[a][b]`: images that have both label `a` and label `b` (the diagonal is each label's support).
pub fn cooccurrence(table: &ScoreTable) -> Vec<Vec<usize>> {
    let k = table.labels.len();
    let mut c = vec![vec![0usize; k]; k];
    for row in &table.truth {
        let present: Vec<usize> = (0..k).filter(|&j| row[j]).collect();
        for &a in &present {
            for &b in &present {
                c[a][b] += 1;
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ap_of_a_perfect_ranking_is_one_and_ties_enter_together() {
        assert_eq!(average_precision(&[true, false, true], &[0.9, 0.1, 0.8]), Some(1.0));
        // All tied: one threshold, precision = prevalence.
        assert_eq!(average_precision(&[true, false, false, false], &[0.5; 4]), Some(0.25));
        assert_eq!(average_precision(&[false, false], &[0.5, 0.1]), None);
    }

    #[test]
    fn counts_use_greater_or_equal() {
        let c = Counts::at(&[true, false, true], &[0.5, 0.5, 0.49], 0.5);
        assert_eq!(c, Counts { tp: 1, fp: 1, fn_: 1, tn: 0 });
        assert_eq!(c.f1(), 0.5);
    }
}
