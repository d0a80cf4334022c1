//! Links libjpeg-turbo's TurboJPEG library statically (src/jpeg.rs), so the binary needs no
//! JPEG library on the board. The archive comes from the build machine's
//! `libturbojpeg0-dev` for the target architecture (Debian, Ubuntu, Raspberry Pi OS; for a
//! cross build, `libturbojpeg0-dev:arm64`), found in the target's multiarch library
//! directory, or from `VIGIL_TURBOJPEG_LIB_DIR` (a directory holding `libturbojpeg.a`).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=VIGIL_TURBOJPEG_LIB_DIR");
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    let dir = match std::env::var_os("VIGIL_TURBOJPEG_LIB_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from("/usr/lib").join(multiarch(&target)),
    };
    let archive = dir.join("libturbojpeg.a");
    if !archive.is_file() {
        let arch = match target.split('-').next() {
            Some("aarch64") => ":arm64",
            Some(a) if a.starts_with("armv7") => ":armhf",
            _ => "",
        };
        panic!(
            "{} not found: vigil links libjpeg-turbo statically. Install libturbojpeg0-dev{arch} \
             (.ci/setup-host does), or set VIGIL_TURBOJPEG_LIB_DIR to a directory with libturbojpeg.a",
            archive.display()
        );
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=static=turbojpeg");
}

/// Debian's multiarch directory name for a Rust target triple.
fn multiarch(target: &str) -> String {
    let arch = target.split('-').next().unwrap_or("");
    match arch {
        "x86_64" => "x86_64-linux-gnu".into(),
        "aarch64" => "aarch64-linux-gnu".into(),
        a if a.starts_with("armv7") || a == "arm" => "arm-linux-gnueabihf".into(),
        "i686" | "i586" => "i386-linux-gnu".into(),
        "riscv64gc" => "riscv64-linux-gnu".into(),
        other => format!("{other}-linux-gnu"),
    }
}
