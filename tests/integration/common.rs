//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The MobileNetV2 ImageNet bundle: the tests' general-purpose model, with labels any photo
/// exercises (the packaged default is road-scene; `tests/boards.rs` covers it).
pub fn default_bundle() -> PathBuf {
    root().join("models/mobilenetv2-imagenet")
}

/// A `[model]` section for tests about timing (watchdog, outages, stopping), not labels: the
/// small factory model in its cheapest form here. Under qemu-user, MobileNetV2's float
/// convolutions take 9–16 s a frame (qemu emulates NEON float arithmetic in software) and starve
/// the capture thread past a 1 s watchdog; integer NEON runs almost natively there, so aarch64
/// takes the INT8 form, while x86 (where tract's integer kernels are generic) takes fp32.
pub fn light_model_section() -> String {
    let variant = if cfg!(target_arch = "aarch64") { "int8" } else { "fp32" };
    format!(
        "[model]\nbundle = \"{}\"\nvariant = \"{variant}\"\nworkers = 1\n",
        root().join("models/elpv-solar").display()
    )
}

/// The sample images of the light model's bundle.
pub fn light_model_samples() -> PathBuf {
    root().join("models/elpv-solar/samples")
}

/// The built `vigil` binary (run under qemu-user when cross-testing: cargo's runner
/// is not applied to child processes, so honour it here).
pub fn vigil() -> Command {
    let bin = env!("CARGO_BIN_EXE_vigil");
    let runner =
        std::env::var("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER").ok().filter(|_| cfg!(target_arch = "aarch64"));
    let mut cmd = match runner {
        Some(r) => {
            let mut parts = r.split_whitespace();
            let mut c = Command::new(parts.next().expect("runner program"));
            c.args(parts).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.env("RUST_LOG", "info");
    cmd
}

/// Run vigil with `args`; return the output.
pub fn vigil_output(args: &[&str]) -> Output {
    vigil().args(args).output().expect("run vigil")
}

/// Write `text` to `dir/name` and return the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write test file");
    p
}

/// Text of stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Text of stdout.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
