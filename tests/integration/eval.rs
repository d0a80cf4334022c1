//! `vigil eval` and `vigil calibrate`: metrics against scikit-learn's own
//! numbers, calibration on the default bundle's real photos, thresholds written
//! where the daemon reads them, refused sets, and the `--report` folder.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{default_bundle, root, stderr, stdout, vigil_output, write};
use serde_json::Value;
use vigil::evaluate::ScoreTable;
use vigil::evaluate::metrics;

const TOLERANCE: f64 = 1e-6;

// ---------------------------------------------------------------- metrics vs scikit-learn

fn golden_dir() -> PathBuf {
    root().join("tests/golden/metrics")
}

/// Rows of a CSV with a header, as strings.
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r.records().map(|rec| rec.unwrap().iter().map(String::from).collect()).collect();
    (header, rows)
}

fn close(what: &str, got: f64, want: &Value) {
    let want = want.as_f64().unwrap_or_else(|| panic!("{what}: expected a number in the golden file, got {want}"));
    assert!((got - want).abs() <= TOLERANCE, "{what}: vigil {got}, sklearn {want}");
}

/// Compare everything vigil computes for `table` at `on` with sklearn's numbers in `expected`.
fn check_against_sklearn(case: &str, table: &ScoreTable, on: &[f32], expected: &Value) {
    let m = metrics::compute(table, on);
    for (j, l) in m.labels.iter().enumerate() {
        let what = |field: &str| format!("{case}: label `{}` {field}", l.label);
        match (&l.ap, &expected["ap"][j]) {
            (None, Value::Null) => {}
            (Some(ap), want) => close(&what("AP"), *ap, want),
            (None, want) => panic!("{}: vigil has no AP, sklearn {want}", what("AP")),
        }
        close(&what("precision"), l.precision, &expected["precision"][j]);
        close(&what("recall"), l.recall, &expected["recall"][j]);
        close(&what("F1"), l.f1, &expected["f1"][j]);
        assert_eq!(Some(l.support as u64), expected["support"][j].as_u64(), "{}", what("support"));
    }
    match (m.map, &expected["map"]) {
        (None, Value::Null) => {}
        (Some(v), want) => close(&format!("{case}: mAP"), v, want),
        (None, want) => panic!("{case}: vigil has no mAP, sklearn {want}"),
    }
    assert_eq!(Some(m.map_labels as u64), expected["map_labels"].as_u64(), "{case}: labels in mAP");
    for (name, got) in [
        ("micro_precision", m.micro_precision),
        ("micro_recall", m.micro_recall),
        ("micro_f1", m.micro_f1),
        ("macro_precision", m.macro_precision),
        ("macro_recall", m.macro_recall),
        ("macro_f1", m.macro_f1),
        ("samples_f1", m.samples_f1),
        ("hamming_loss", m.hamming_loss),
        ("subset_accuracy", m.subset_accuracy),
    ] {
        close(&format!("{case}: {name}"), got, &expected[name]);
    }
    let co: Vec<Vec<u64>> =
        metrics::cooccurrence(table).iter().map(|r| r.iter().map(|&c| c as u64).collect()).collect();
    let want: Vec<Vec<u64>> = serde_json::from_value(expected["cooccurrence"].clone()).unwrap();
    assert_eq!(co, want, "{case}: co-occurrence");
}

fn thresholds_of(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|t| t.as_f64().unwrap() as f32).collect()
}

#[test]
fn metrics_match_sklearn_on_committed_predictions() {
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(golden_dir().join("sklearn.json")).unwrap()).unwrap();
    let (label_header, label_rows) = read_csv(&golden_dir().join("labels.csv"));
    let (score_header, score_rows) = read_csv(&golden_dir().join("scores.csv"));
    assert_eq!(label_header, score_header, "labels.csv and scores.csv have the same columns");
    assert_eq!(label_rows.len(), score_rows.len());
    let table = ScoreTable {
        labels: label_header[1..].to_vec(),
        truth: label_rows.iter().map(|r| r[1..].iter().map(|v| v == "1").collect()).collect(),
        scores: score_rows
            .iter()
            .zip(&label_rows)
            .map(|(s, l)| {
                assert_eq!(s[0], l[0], "same image on the same row");
                s[1..].iter().map(|v| v.parse::<f32>().unwrap()).collect()
            })
            .collect(),
    };
    // The file exercises the edge cases it promises.
    let support = |j: usize| table.truth.iter().filter(|r| r[j]).count();
    assert_eq!(support(3), 0, "`never` has no positives");
    assert!(table.scores.iter().all(|r| r[4] == 0.0) && support(4) > 0, "`silent` is scored 0 everywhere");
    check_against_sklearn("main set", &table, &thresholds_of(&golden["thresholds"]), &golden["expected"]);
}

#[test]
fn metrics_edge_cases_match_sklearn() {
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(golden_dir().join("sklearn.json")).unwrap()).unwrap();
    let cases = golden["edge_cases"].as_array().unwrap();
    let names: Vec<&str> = cases.iter().map(|c| c["name"].as_str().unwrap()).collect();
    for wanted in ["all_zero_predictions", "ties", "no_positives_label", "nothing_anywhere"] {
        assert!(names.contains(&wanted), "edge case {wanted} in the golden file: {names:?}");
    }
    for case in cases {
        let table = ScoreTable {
            labels: serde_json::from_value(case["labels"].clone()).unwrap(),
            truth: case["y_true"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_array().unwrap().iter().map(|v| v.as_u64() == Some(1)).collect())
                .collect(),
            scores: case["y_score"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect())
                .collect(),
        };
        let name = case["name"].as_str().unwrap();
        check_against_sklearn(name, &table, &thresholds_of(&case["thresholds"]), &case["expected"]);
    }
}

// ---------------------------------------------------------------- the sample photos

fn samples_csv() -> PathBuf {
    root().join("tests/data/samples.csv")
}

fn json_of(o: &Output) -> Value {
    assert_eq!(o.status.code(), Some(0), "vigil failed: {}", stderr(o));
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

/// The committed sample set plus a mirrored and a centre-cropped (80 %) copy of
/// each photo, written as PNGs into `dir`, listed in `dir/set.csv` with the same labels.
fn augmented_set(dir: &Path) -> PathBuf {
    let mut reader = csv::ReaderBuilder::new().comment(Some(b'#')).from_path(samples_csv()).unwrap();
    let mut lines = vec!["path,labels".to_string()];
    for rec in reader.records() {
        let rec = rec.unwrap();
        let original = samples_csv().parent().unwrap().join(&rec[0]);
        let labels = &rec[1];
        let quote = |p: &Path| format!("\"{}\"", p.display());
        lines.push(format!("{},{labels}", quote(&original)));
        let img = image::open(&original).unwrap_or_else(|e| panic!("{}: {e}", original.display())).to_rgb8();
        let stem = original.file_stem().unwrap().to_string_lossy().into_owned();
        let flipped = image::imageops::flip_horizontal(&img);
        flipped.save(dir.join(format!("{stem}.flip.png"))).unwrap();
        let (w, h) = img.dimensions();
        let crop = image::imageops::crop_imm(&img, w / 10, h / 10, w * 8 / 10, h * 8 / 10).to_image();
        crop.save(dir.join(format!("{stem}.crop.png"))).unwrap();
        lines.push(format!("{stem}.flip.png,{labels}"));
        lines.push(format!("{stem}.crop.png,{labels}"));
    }
    write(dir, "set.csv", &(lines.join("\n") + "\n"))
}

#[test]
fn calibrate_improves_macro_f1_on_the_sample_photos() {
    let dir = tempfile::tempdir().unwrap();
    let set = augmented_set(dir.path());
    let bundle = default_bundle();
    let (bundle, set) = (bundle.to_str().unwrap(), set.to_str().unwrap());
    let eval = json_of(&vigil_output(&["eval", "--model", bundle, "--data", set, "--json"]));
    assert_eq!(eval["timing"]["images"], 24);
    assert_eq!(eval["labels"].as_array().unwrap().len(), 9, "the set names 9 labels: {}", eval["labels"]);
    let manifest_f1 = eval["metrics"]["macro_f1"].as_f64().unwrap();
    // The manifest's thresholds are 0.5 for every label.
    assert!(eval["metrics"]["labels"].as_array().unwrap().iter().all(|l| l["on"] == 0.5));

    let thresholds = dir.path().join("calibrated.toml");
    let out = vigil_output(&[
        "calibrate",
        "--model",
        bundle,
        "--data",
        set,
        "--output",
        thresholds.to_str().unwrap(),
        "--json",
    ]);
    let cal = json_of(&out);
    let (before, after) = (cal["before"]["macro_f1"].as_f64().unwrap(), cal["after"]["macro_f1"].as_f64().unwrap());
    eprintln!("macro F1 on {} images: 0.5 thresholds {before:.4}, calibrated {after:.4}", cal["timing"]["images"]);
    assert_eq!(before, manifest_f1, "calibrate's `before` is eval's number");
    assert!(after >= before, "calibration must not lower macro F1: {before} -> {after}");
    assert!(
        after > before,
        "on these photos 0.5 misses tabby, cup, pickup, pole, street sign, tripod: {before} -> {after}"
    );
    assert!(cal["written"]["path"].as_str().unwrap().ends_with("calibrated.toml"));
    assert_eq!(cal["written"]["backup"], Value::Null, "a new file has no backup");
    for t in cal["thresholds"].as_array().unwrap() {
        let (on, off) = (t["on"].as_f64().unwrap(), t["off"].as_f64().unwrap());
        assert!((0.0..=1.0).contains(&on) && off < on && off > 0.0, "off above 0 and below on: {t}");
        assert!(((on - 0.1).max(on / 2.0) - off).abs() < 1e-6, "off = on - margin, at least on / 2: {t}");
    }

    // The written file, read back the way the daemon reads it, gives exactly the `after` numbers.
    let reeval = json_of(&vigil_output(&[
        "eval",
        "--model",
        bundle,
        "--data",
        set,
        "--thresholds",
        thresholds.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(reeval["metrics"], cal["after"], "eval with the calibrated file reproduces calibrate's after");
}

/// A copy of the default bundle (the ONNX files linked, not copied) that calibrate may edit.
fn scratch_bundle(dir: &Path) -> PathBuf {
    crate::common::bundle_copy(dir, &default_bundle(), &[])
}

#[test]
fn calibrate_edits_the_manifest_in_place_and_keeps_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = scratch_bundle(dir.path());
    let original = std::fs::read_to_string(bundle.join("model.toml")).unwrap();
    let out = vigil_output(&[
        "calibrate",
        "--model",
        bundle.to_str().unwrap(),
        "--data",
        samples_csv().to_str().unwrap(),
        "--labels",
        "tabby;espresso",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("macro F1") && text.contains("before") && text.contains("after"), "{text}");
    assert_eq!(std::fs::read_to_string(bundle.join("model.toml.bak")).unwrap(), original, "backup is the old file");
    let edited = std::fs::read_to_string(bundle.join("model.toml")).unwrap();
    // Everything else in the manifest is kept, comments included.
    for line in original.lines().filter(|l| !l.trim().is_empty()) {
        assert!(edited.contains(line), "line {line:?} lost from:\n{edited}");
    }
    let parsed: toml::Table = toml::from_str(&edited).unwrap();
    let labels = parsed["thresholds"]["labels"].as_table().unwrap();
    assert_eq!(labels.keys().collect::<Vec<_>>(), ["espresso", "tabby"], "only the calibrated labels");
    let tabby_on = labels["tabby"]["on"].as_float().unwrap();
    assert!(tabby_on < 0.5, "chelsea's tabby score is ~0.09, so tabby's on must drop: {tabby_on}");
    assert!(
        !dir.path().join("bundle").read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".tmp"))
    );
    // The bundle now detects tabby on chelsea.png, as the daemon and `classify` read it.
    let chelsea = default_bundle().join("samples/chelsea.png");
    let c =
        json_of(&vigil_output(&["classify", "--model", bundle.to_str().unwrap(), "--json", chelsea.to_str().unwrap()]));
    let detected: Vec<&str> = c["detected"].as_array().unwrap().iter().map(|d| d["label"].as_str().unwrap()).collect();
    assert!(detected.contains(&"tabby"), "{c}");
}

#[test]
fn the_daemon_uses_a_calibrated_thresholds_file() {
    let dir = tempfile::tempdir().unwrap();
    let thresholds = dir.path().join("calibrated.toml");
    let out = vigil_output(&[
        "calibrate",
        "--model",
        default_bundle().to_str().unwrap(),
        "--data",
        samples_csv().to_str().unwrap(),
        "--output",
        thresholds.to_str().unwrap(),
        "--json",
    ]);
    let cal = json_of(&out);
    let tabby = cal["thresholds"].as_array().unwrap().iter().find(|t| t["label"] == "tabby").unwrap().clone();
    assert!(tabby["on"].as_f64().unwrap() < 0.09, "tabby on below chelsea's 0.09: {tabby}");

    let config = |extra: &str| {
        format!(
            "[model]\nbundle = \"{}\"\nworkers = 2\n{extra}\n[source]\nkind = \"files\"\npath = \"{}\"\nfps = 0\n\n[status]\ninterval_s = 0\n",
            default_bundle().display(),
            default_bundle().join("samples").display()
        )
    };
    let with = write(dir.path(), "with.toml", &config("thresholds = \"calibrated.toml\"\n"));
    let without = write(dir.path(), "without.toml", &config(""));
    let check = vigil_output(&["check", "--config", with.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    assert!(
        stdout(&check).contains("thresholds: ") && stdout(&check).contains("calibrated.toml"),
        "{}",
        stdout(&check)
    );

    let tabby_on_events = |cfg: &Path| -> usize {
        let out = vigil_output(&["run", "--config", cfg.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        stdout(&out)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
            .filter(|v| v["type"] == "event" && v["label"] == "tabby" && v["state"] == "on")
            .count()
    };
    assert_eq!(tabby_on_events(&without), 0, "at the manifest's 0.5, tabby never switches on");
    assert_eq!(tabby_on_events(&with), 1, "with the calibrated file, tabby switches on for chelsea.png");

    // A config naming a thresholds file that is not there yet is accepted (`save` creates it);
    // one in a folder that is not there is refused with the key.
    let later = write(dir.path(), "later.toml", &config("thresholds = \"not-saved-yet.toml\"\n"));
    let out = vigil_output(&["check", "--config", later.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let missing = write(dir.path(), "missing.toml", &config("thresholds = \"no-such-folder/t.toml\"\n"));
    let out = vigil_output(&["check", "--config", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("missing.toml:4:") && err.contains("model.thresholds") && err.contains("does not exist"),
        "{err}"
    );
}

// ---------------------------------------------------------------- refused sets

/// `vigil eval` on a set written as `csv` in a fresh folder (with `files` copied from the samples).
fn eval_set(csv: &str, extra: &[(&str, &[u8])]) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(default_bundle().join("samples/chelsea.png"), dir.path().join("chelsea.png")).unwrap();
    for (name, bytes) in extra {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let set = write(dir.path(), "set.csv", csv);
    let out = vigil_output(&["eval", "--model", default_bundle().to_str().unwrap(), "--data", set.to_str().unwrap()]);
    (out, dir)
}

fn assert_refused(out: &Output, code: i32, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "exit code; stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
    assert!(stdout(out).is_empty(), "no metrics printed for a refused set: {}", stdout(out));
}

#[test]
fn an_unreadable_image_is_reported_with_its_line_and_reason() {
    let (out, _dir) = eval_set("path,labels\nchelsea.png,tabby\nbroken.jpg,tabby\n", &[("broken.jpg", b"not a jpeg")]);
    assert_refused(&out, 1, &["set.csv:3", "broken.jpg", "cannot decode image", "no metrics"]);
}

#[test]
fn an_unknown_label_is_refused_with_its_line() {
    let (out, _dir) = eval_set("path,labels\nchelsea.png,tabbby\n", &[]);
    assert_refused(&out, 2, &["set.csv:2", "unknown label `tabbby`", "did you mean `tabby`"]);
    let (out, _dir) = eval_set("path,tabby,gato\nchelsea.png,1,0\n", &[]);
    assert_refused(&out, 2, &["set.csv:1", "unknown label `gato`"]);
}

#[test]
fn a_missing_file_is_refused_with_its_line() {
    let (out, _dir) = eval_set("chelsea.png,tabby\nghost.jpg,tabby\n", &[]);
    assert_refused(&out, 2, &["set.csv:2", "image `ghost.jpg` not found", "relative to the CSV"]);
}

#[test]
fn an_empty_set_is_refused() {
    let (out, _dir) = eval_set("path,labels\n# nothing yet\n", &[]);
    assert_refused(&out, 2, &["set.csv", "empty", "expected at least one labelled image"]);
    let dir = tempfile::tempdir().unwrap();
    let out = vigil_output(&[
        "calibrate",
        "--model",
        default_bundle().to_str().unwrap(),
        "--data",
        dir.path().to_str().unwrap(),
        "--dry-run",
    ]);
    assert_refused(&out, 2, &["empty"]);
}

#[test]
fn a_directory_set_with_an_unknown_label_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["tabby", "kitty"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
        std::fs::copy(default_bundle().join("samples/chelsea.png"), dir.path().join(sub).join("chelsea.png")).unwrap();
    }
    let out =
        vigil_output(&["eval", "--model", default_bundle().to_str().unwrap(), "--data", dir.path().to_str().unwrap()]);
    assert_refused(&out, 2, &["kitty", "directory name: unknown label `kitty`"]);
}

// ---------------------------------------------------------------- --report

#[test]
fn report_writes_markdown_html_and_svg_plots() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let out = vigil_output(&[
        "eval",
        "--model",
        default_bundle().to_str().unwrap(),
        "--data",
        samples_csv().to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.contains("mAP") && table.contains("Hamming loss") && table.contains("co-occurrence"), "{table}");
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    for label in ["tabby", "espresso", "cup", "pickup", "bald eagle", "fox squirrel", "pole", "street sign", "tripod"] {
        assert!(md.contains(&format!("| {label} |")), "{label} in report.md");
        assert!(html.contains(&format!("<td>{label}</td>")), "{label} in report.html");
    }
    assert!(md.contains("](pr_curves.svg)") && md.contains("](cooccurrence.svg)"));
    let svg = |name: &str| {
        let text = std::fs::read_to_string(report.join(name)).unwrap();
        assert!(
            text.trim_start().starts_with("<svg") && text.trim_end().ends_with("</svg>"),
            "{name} is an SVG document"
        );
        assert_eq!(text.matches('<').count(), text.matches('>').count(), "{name}: balanced tags");
        text
    };
    // One curve per label with positives, all 9 here: the blue polylines (the black ones are axes and ticks).
    let pr = svg("pr_curves.svg");
    let curves = pr.lines().filter(|l| l.starts_with("<polyline") && l.contains("stroke=\"#0000FF\"")).count();
    assert_eq!(curves, 9, "one PR curve per label");
    assert_eq!(pr.matches("<circle").count(), 9, "one operating point per label");
    assert!(pr.contains("bald eagle (AP "));
    // A 9 x 9 grid of cells on a white background.
    let heat = svg("cooccurrence.svg");
    assert_eq!(heat.matches("<rect").count(), 9 * 9 + 1, "one cell per label pair, plus the background");
}
