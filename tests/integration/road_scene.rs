//! The shipped road-scene bundle on real stills from cameras it never trained on
//! (`models/road-scene/eval`: hand-labelled, sources and licences in its SOURCES.md), scored
//! with `vigil eval`'s own machinery at the manifest's thresholds.
//!
//! Two tests: the numbers the model card reports must be what the daemon's code computes (and
//! must not get worse), and issue 13's targets (macro F1 >= 0.7 over the labels with positives,
//! no label on for at least 90 % of the negatives, person AP >= 0.9). The bundle does not meet
//! the targets yet (its MODEL_CARD.md says which and why), so that test is `#[ignore]`d with the
//! measured values in its reason: `cargo test --release -- --ignored road_scene` runs it.

use std::sync::OnceLock;

use serde_json::Value;
use vigil::bundle::{Bundle, Variant};
use vigil::engine::EngineChoice;
use vigil::evaluate::{EvalOptions, EvalReport, LabelChoice, Quiet, evaluate};

use crate::common::root;

/// The shipped bundle over the committed set, every model label evaluated (scored once per run).
fn report() -> &'static EvalReport {
    static REPORT: OnceLock<EvalReport> = OnceLock::new();
    REPORT.get_or_init(|| {
        let model = root().join("models/road-scene");
        let bundle = Bundle::load(&model).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
        // The cheapest variant the bundle has (it ships fp32 only today).
        let variant =
            if bundle.model_int8.is_some() && cfg!(target_arch = "aarch64") { Variant::Int8 } else { Variant::Fp32 };
        let opts = EvalOptions {
            model,
            variant,
            data: root().join("models/road-scene/eval/labels.csv"),
            thresholds: None,
            labels: LabelChoice::All,
            workers: 2,
            engine: EngineChoice::Tract,
        };
        evaluate(&opts, &Quiet).unwrap_or_else(|e| panic!("vigil eval on the road-scene set: {e}"))
    })
}

/// Issue 13's three figures: (macro F1 over the labels with positives, share of negatives with
/// no label on, person AP). Negatives are the images with none of the bundle's labels: the set's 30
/// (none of the eight road labels) plus its bicycle and motorcycle photos, whose labels the bundle
/// does not have.
fn targets(r: &EvalReport) -> (f64, f64, f64) {
    let m = &r.metrics;
    let with_positives: Vec<_> = m.labels.iter().filter(|l| l.support > 0).collect();
    let macro_f1 = with_positives.iter().map(|l| l.f1).sum::<f64>() / with_positives.len() as f64;
    let on: Vec<f32> = m.labels.iter().map(|l| l.on).collect();
    let negatives: Vec<&Vec<f32>> =
        r.table.truth.iter().zip(&r.table.scores).filter(|(t, _)| !t.iter().any(|&b| b)).map(|(_, s)| s).collect();
    let clean =
        negatives.iter().filter(|s| s.iter().zip(&on).all(|(v, t)| v < t)).count() as f64 / negatives.len() as f64;
    let person = m.labels.iter().find(|l| l.label == "person").expect("the bundle ships `person`");
    (macro_f1, clean, person.ap.expect("the set has people in it"))
}

#[test]
fn road_scene_scores_on_real_stills_are_the_model_cards_and_do_not_regress() {
    let r = report();
    let m = &r.metrics;
    assert_eq!(m.images, 50, "the committed set");
    let negatives = r.table.truth.iter().filter(|t| !t.iter().any(|&b| b)).count();
    assert!(negatives * 3 >= m.images, "at least a third of the set are negatives: {negatives} of {}", m.images);

    // metrics.json holds what `vigil eval --labels all --json` printed when the bundle was built.
    let card: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("models/road-scene/metrics.json")).unwrap()).unwrap();
    let shipped = if card["shipped"] == "plain" { "fp32" } else { "mnv2_fp32" };
    for (ours, theirs) in m.labels.iter().zip(card["eval"][shipped]["metrics"]["labels"].as_array().unwrap()) {
        assert_eq!(ours.label, theirs["label"].as_str().unwrap());
        assert_eq!(ours.support as u64, theirs["support"].as_u64().unwrap(), "{}", ours.label);
        if let Some(ap) = ours.ap {
            let want = theirs["ap"].as_f64().unwrap();
            assert!((ap - want).abs() < 1e-3, "{} AP: vigil {ap}, model card {want}", ours.label);
        }
    }

    let (macro_f1, clean, person_ap) = targets(r);
    eprintln!(
        "road-scene on real stills: macro F1 {macro_f1:.3}, negatives clean {clean:.3}, person AP {person_ap:.3}"
    );
    // Floors at the shipped bundle's figures (MODEL_CARD.md): a rebuild may not do worse.
    assert!(clean >= 0.9, "a label switched on for {:.0} % of the negatives", 100.0 * (1.0 - clean));
    assert!(person_ap >= 0.70, "person AP {person_ap:.3} fell below the shipped bundle's 0.71");
    assert!(m.map.unwrap() >= 0.55, "mAP {:?} fell below the shipped bundle's 0.574", m.map);
}

#[test]
#[ignore = "issue 13's targets are not met yet: macro F1 0.167 (target 0.7), person AP 0.715 (0.9); negatives clean 1.0 (0.9) is met"]
fn road_scene_meets_issue_13_targets_on_real_stills() {
    let (macro_f1, clean, person_ap) = targets(report());
    assert!(macro_f1 >= 0.7, "macro F1 {macro_f1:.3} < 0.7");
    assert!(clean >= 0.9, "a label switched on for {:.0} % of the negatives (at most 10 %)", 100.0 * (1.0 - clean));
    assert!(person_ap >= 0.9, "person AP {person_ap:.3} < 0.9");
}
