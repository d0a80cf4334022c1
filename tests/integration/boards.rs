//! Board profiles (`boards/*.toml`) are configs users edit and flash: each must be accepted
//! as it ships (keys, values, the bundle it names, thresholds against the bundle's labels,
//! GPIO outputs naming real labels). Devices are not opened here — the boards' GPIO chips and
//! serial ports exist only on the boards (and in the emulated-board test).

use vigil::bundle::Bundle;
use vigil::config::Config;

#[test]
fn every_board_profile_is_a_valid_config_for_its_bundle() {
    let mut profiles: Vec<_> = std::fs::read_dir(crate::common::root().join("boards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    profiles.sort();
    let names: Vec<String> = profiles.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for expected in ["default.toml", "rpi4.toml", "rpi5.toml", "jetson-orin-nano.toml", "jetson-nano.toml"] {
        assert!(names.iter().any(|n| n == expected), "boards/{expected} is shipped: {names:?}");
    }
    for path in &profiles {
        let config = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
        let bundle = Bundle::load(&config.bundle_dir).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        config.rules(&bundle).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        check_gpio_labels(path, &config, &bundle);
    }

    // The packaged /etc/vigil/vigil.toml names the bundle where the package installs it;
    // check the rest of it against the same bundle in this tree.
    let packaged = std::fs::read_to_string(crate::common::root().join("boards/debian/vigil.toml")).unwrap();
    let installed = "/usr/share/vigil/models/road-scene";
    assert!(packaged.contains(installed));
    let dir = tempfile::tempdir().unwrap();
    let here = crate::common::write(
        dir.path(),
        "vigil.toml",
        &packaged.replace(installed, &crate::common::root().join("models/road-scene").display().to_string()),
    );
    let config = Config::load(&here).unwrap_or_else(|e| panic!("boards/debian/vigil.toml: {e}"));
    let bundle = Bundle::load(&config.bundle_dir).unwrap();
    config.rules(&bundle).unwrap();
}

/// Every `[[gpio.outputs]]` names a label of the bundle.
fn check_gpio_labels(path: &std::path::Path, config: &Config, bundle: &Bundle) {
    for out in config.gpio.iter().flat_map(|g| &g.outputs) {
        let label = out.label.get_ref();
        assert!(
            bundle.labels.iter().any(|l| l == label),
            "{}: GPIO output for unknown label `{label}`",
            path.display()
        );
    }
}

#[test]
fn a_profile_copied_elsewhere_finds_its_bundle_in_the_installed_models_folder() {
    // As each profile's header suggests: copied to /etc/vigil/vigil.toml, its
    // `bundle = "../models/road-scene"` no longer points anywhere; the installed models
    // folder (VIGIL_MODELS here, /usr/share/vigil/models in the package) has it by name.
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    let copied = etc.join("vigil.toml");
    std::fs::copy(crate::common::root().join("boards/default.toml"), &copied).unwrap();
    let text = std::fs::read_to_string(&copied).unwrap();
    // Its sample images are not installed beside it either: replay the bundle's own.
    let samples = crate::common::root().join("models/road-scene/samples");
    std::fs::write(
        &copied,
        text.replace("../models/road-scene/samples/*.png", &format!("{}/*.png", samples.display())),
    )
    .unwrap();
    let check = |models: &std::path::Path| {
        crate::common::vigil().args(["check", "--config"]).arg(&copied).env("VIGIL_MODELS", models).output().unwrap()
    };
    let out = check(&crate::common::root().join("models"));
    let err = crate::common::stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("not beside") && err.contains("using the installed"), "the log says which bundle: {err}");

    let empty = dir.path().join("no-models");
    std::fs::create_dir(&empty).unwrap();
    let out = check(&empty);
    let err = crate::common::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("vigil.toml:") && err.contains("model.bundle") && err.contains("looked in"), "{err}");
}
