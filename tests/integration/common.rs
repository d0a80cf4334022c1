//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::os::fd::{FromRawFd, OwnedFd};
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

/// The light model's sample PNGs in replay order (the files source sorts by name).
pub fn light_model_sample_files() -> Vec<PathBuf> {
    let mut s: Vec<PathBuf> = std::fs::read_dir(light_model_samples())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    s.sort();
    s
}

/// Mean absolute difference of two same-sized grey renderings, in levels.
pub fn grey_difference(a: &image::GrayImage, b: &image::GrayImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a.pixels().zip(b.pixels()).map(|(p, q)| u64::from(p.0[0].abs_diff(q.0[0]))).sum();
    sum as f64 / f64::from(a.width() * a.height())
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

/// One image's scores from `engine`, preprocessed as the daemon does.
pub fn score_image(
    engine: &dyn vigil::engine::InferenceEngine,
    bundle: &vigil::bundle::Bundle,
    image: &Path,
) -> Vec<f32> {
    let mut worker = engine.new_worker().unwrap();
    let mut input = engine.new_input().unwrap();
    let frame = vigil::frame::Frame { data: std::fs::read(image).unwrap(), ..vigil::frame::Frame::empty() };
    vigil::preprocess::Preprocessor::new(&bundle.input).run(&frame, input.as_mut_slice()).unwrap();
    let mut out = vec![0.0; bundle.labels.len()];
    worker.infer(&mut input, &mut out).unwrap();
    out
}

/// A copy of the bundle `from` in `dir/bundle`: its files linked, except `model.toml`, which is
/// copied so that a test may edit it, and the files named in `leave_out`, which are not there.
pub fn bundle_copy(dir: &Path, from: &Path, leave_out: &[&str]) -> PathBuf {
    let b = dir.join("bundle");
    std::fs::create_dir(&b).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        if !path.is_file() || leave_out.iter().any(|l| name == *l) {
            continue;
        }
        if name == "model.toml" {
            std::fs::copy(&path, b.join(name)).unwrap();
        } else {
            std::os::unix::fs::symlink(&path, b.join(name)).unwrap();
        }
    }
    b
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

/// Tests that use pseudo-terminals take turns: hold this for the whole test. A pty's number is
/// reused as soon as it closes, and a daemon reopens its serial port by path (that is what the
/// unplug test exercises), so a port closed by one test can come back as another test's
/// terminal; running the soak beside the serial tests made that show (a console test whose
/// daemon's lines never reached it, 2 runs in 20).
pub fn pty_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that failed while holding it must not fail the others too.
    TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A pseudo-terminal: the daemon opens the slave by path, the test reads the master.
pub struct Pty {
    /// The side the test reads and writes.
    pub master: std::fs::File,
    /// Held open so that the port stays up until the test drops it.
    pub _slave: OwnedFd,
    /// The slave's path, for the config (`/dev/pts/N`).
    pub slave_path: String,
}

/// A new pseudo-terminal pair.
pub fn openpty() -> Pty {
    let (mut m, mut s) = (0, 0);
    let rc = unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(rc, 0, "openpty");
    // Not inherited by the daemons tests spawn (here or on other test threads): a child holding
    // the master open would keep a "vanished" port alive.
    for fd in [m, s] {
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let name = unsafe { std::ffi::CStr::from_ptr(libc::ttyname(s)) }.to_string_lossy().into_owned();
    Pty {
        master: unsafe { std::fs::File::from_raw_fd(m) },
        _slave: unsafe { OwnedFd::from_raw_fd(s) },
        slave_path: name,
    }
}
