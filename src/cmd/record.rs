//! `vigil record`: save frames from a config's source, for tuning a model to this camera
//! (`models/train/adapt.sh`, docs/adapt.md). One frame every `--every` seconds of capture time
//! and/or the frame of each switch-on, as JPEGs named by their capture time, into a folder,
//! until `--max-files` or `--max-mib` is reached (then it stops; nothing is ever deleted),
//! the source ends, or SIGINT/SIGTERM.
//!
//! It is `vigil run` on the same config with the field outputs (serial, GPIO, MQTT, metrics)
//! left out and `[snapshots]` replaced by the recording: the same source, model, thresholds
//! and frame path, so what it saves is what the daemon would have seen.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{EXIT_OK, Error};
use vigil::config::Config;
use vigil::setup::prepare;
use vigil::snapshots::SnapshotSettings;
use vigil::stop::StopFlag;

/// What `vigil record` was asked for.
pub struct Options {
    /// The run config whose source (and model, for switch-ons) is recorded.
    pub config: PathBuf,
    /// The folder the JPEGs go into (made if missing).
    pub out: PathBuf,
    /// Save a frame every this many seconds of capture time (0: every frame decided).
    pub every_s: Option<f64>,
    /// Save the frame of each switch-on.
    pub on_switch: bool,
    /// Stop once the folder holds this many of vigil's JPEGs.
    pub max_files: usize,
    /// Stop before the folder's JPEGs would go past this many MiB.
    pub max_mib: u64,
}

/// Largest `--max-mib` (1 TiB), as `[snapshots] max_mib`: also keeps `MiB << 20` in range.
const MAX_MIB: u64 = 1 << 20;

/// Longest `--every`: a day.
const MAX_EVERY_S: f64 = 86_400.0;

/// Record until the source ends, a limit is reached, or SIGINT/SIGTERM.
pub fn run(opts: &Options, process_start: Instant) -> Result<i32, Error> {
    let every_ms = match opts.every_s {
        None => None,
        Some(s) if s.is_finite() && (0.0..=MAX_EVERY_S).contains(&s) => Some((s * 1000.0).round() as u64),
        Some(s) => return Err(Error::Usage(format!("--every {s}: expected 0 to {MAX_EVERY_S} seconds"))),
    };
    if every_ms.is_none() && !opts.on_switch {
        return Err(Error::Usage(
            "nothing to record: expected --every SECONDS (a frame that often), --on-switch (the frame of each \
             switch-on), or both"
                .into(),
        ));
    }
    if opts.max_files == 0 || !(1..=MAX_MIB).contains(&opts.max_mib) {
        return Err(Error::Usage(format!(
            "--max-files {} / --max-mib {}: expected at least 1 file and 1 to {MAX_MIB} MiB",
            opts.max_files, opts.max_mib
        )));
    }
    let mut config = Config::load(&opts.config)?;
    prepare_folder(&opts.out)?;
    let settings =
        SnapshotSettings::record(opts.out.clone(), every_ms, opts.on_switch, opts.max_files, opts.max_mib << 20);
    check_room(&settings)?;
    let stop = StopFlag::new();
    stop.register_signals().map_err(|e| Error::Runtime(format!("cannot install signal handlers: {e}")))?;
    super::run::guard_stop(stop.clone());
    // A recording signals nothing: the field outputs stay with the daemon (which may hold
    // their devices), the console with them. stdout stays as configured, to watch events.
    config.serial = None;
    config.gpio = None;
    config.mqtt = None;
    config.metrics_file = None;
    config.snapshots = Some(settings);
    let prepared = prepare(config, process_start)?;
    log::info!("source: {}", prepared.source.describe());
    log::info!(
        "recording into {}: {}{}{}; at most {} files, {} MiB",
        opts.out.display(),
        every_ms.map_or(String::new(), |ms| format!("a frame every {:.3} s", ms as f64 / 1000.0)),
        if every_ms.is_some() && opts.on_switch { " and " } else { "" },
        if opts.on_switch { "the frame of each switch-on" } else { "" },
        opts.max_files,
        opts.max_mib
    );
    let summary = prepared.run(&stop, process_start, None)?;
    let c = summary.counters;
    log::info!(
        "record: {} frames decided, {} dropped (corrupt {}, source {}, engine {}); the folder's count is in the \
         snapshots line above",
        c.decided,
        c.dropped(),
        c.dropped_corrupt,
        c.dropped_source,
        c.dropped_engine
    );
    Ok(EXIT_OK)
}

/// Make `dir` if it is missing; refuse a path that is something else.
fn prepare_folder(dir: &Path) -> Result<(), Error> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            Err(Error::Usage(format!("--out {}: not a directory: expected a folder (or a new path)", dir.display())))
        }
        Err(_) => std::fs::create_dir_all(dir)
            .map_err(|e| Error::Usage(format!("--out {}: cannot make the folder ({e})", dir.display()))),
    }
}

/// Refuse at start a folder already at a limit (an earlier recording's files count): the run
/// would save nothing.
fn check_room(s: &SnapshotSettings) -> Result<(), Error> {
    let store = vigil::snapshots::store::Store::open(&s.dir, s.max_files, s.max_bytes, s.when_full);
    let (files, bytes) = store.kept();
    if store.is_full() || bytes >= s.max_bytes {
        return Err(Error::Usage(format!(
            "--out {}: already holds {files} recorded frames ({} MiB), at the limit of {} files / {} MiB: expected \
             room for more (raise --max-files / --max-mib, or use another folder)",
            s.dir.display(),
            bytes >> 20,
            s.max_files,
            s.max_bytes >> 20
        )));
    }
    if files > 0 {
        log::info!("{} already holds {files} recorded frames ({} KiB); adding to them", s.dir.display(), bytes >> 10);
    }
    Ok(())
}
