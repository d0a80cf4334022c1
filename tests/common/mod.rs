//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped default bundle.
pub fn default_bundle() -> PathBuf {
    root().join("models/mobilenetv2-imagenet")
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
