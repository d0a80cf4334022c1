//! The fuzz corpora and every crash the fuzzers found, replayed through the same entry points
//! as the fuzz targets (`vigil::fuzz`), on stable: a parser regression fails the README's test
//! command without nightly. Adding a crash: put the input in `fuzz/regressions/<target>/`.

use std::path::Path;

/// The inputs of `target` in `folder` (corpus or regressions), in name order.
fn inputs(folder: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(folder).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (format!("{folder}/{target}/{}", p.file_name().unwrap().to_string_lossy()), std::fs::read(&p).unwrap())
        })
        .collect()
}

#[test]
fn every_fuzz_corpus_and_regression_input_is_handled_without_a_panic() {
    let mut failed = Vec::new();
    for &(target, entry) in vigil::fuzz::TARGETS {
        let corpus = inputs("corpus", target);
        assert!(!corpus.is_empty(), "fuzz/corpus/{target} is empty: the target would be replayed on nothing");
        for (name, bytes) in corpus.iter().chain(&inputs("regressions", target)) {
            if let Err(payload) = std::panic::catch_unwind(|| entry(bytes)) {
                let why = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failed.push(format!("{name}: {why}"));
            }
        }
    }
    assert!(failed.is_empty(), "inputs that panicked:\n{}", failed.join("\n"));
}

#[test]
fn every_fuzz_target_file_has_an_entry_point_and_back() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut entries: Vec<String> = vigil::fuzz::TARGETS.iter().map(|(t, _)| t.to_string()).collect();
    entries.sort();
    assert_eq!(files, entries, "fuzz/fuzz_targets/*.rs and vigil::fuzz::TARGETS disagree");
}
