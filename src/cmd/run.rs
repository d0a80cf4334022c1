//! `vigil run`: the daemon's life. Prepare the config, tell systemd it is ready, run the
//! pipeline; SIGINT/SIGTERM stop it; SIGHUP reloads the config file (and the thresholds file it
//! names).
//!
//! A reload checks the new config first (syntax, keys, bundle, thresholds against the labels).
//! A bad one is refused with the usual file:line:col message and the running pipeline is not
//! touched. A good one stops the running pipeline cleanly (sinks flushed, GPIO lines to their
//! inactive level), prepares the new one (model, camera, lines) and runs it; if that fails (a
//! device busy, say) the previous config is prepared again. Frame counters restart with the
//! new pipeline; times keep counting from the process start.
//!
//! A reload carries the run on ([`Resume`]): event `seq` keeps counting; a label that was on
//! stays on (its GPIO line is driven again after the brief inactive spell of the hand-over)
//! without a second ON event; thresholds set from the console hold (logged per label) until set
//! again, and `save` still writes them — a reload only drops one when the new config gives it
//! the same value.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Error;
use vigil::bundle::Bundle;
use vigil::config::Config;
use vigil::notify::Notifier;
use vigil::setup::{Resume, prepare};
use vigil::stop::StopFlag;

/// Run the daemon on the config at `path` until SIGINT/SIGTERM or the source ends.
pub fn run(path: &Path, process_start: Instant) -> Result<(), Error> {
    let terminate = StopFlag::new();
    terminate.register_signals().map_err(|e| Error::Runtime(format!("cannot install signal handlers: {e}")))?;
    let hangup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hangup))
        .map_err(|e| Error::Runtime(format!("cannot install the SIGHUP handler: {e}")))?;
    let notifier = Arc::new(Notifier::from_env());
    guard_stop(terminate.clone());

    let mut config = Config::load(path)?;
    let mut prepared = prepare(config.clone(), process_start)?;
    let mut resume: Option<Resume> = None;
    loop {
        log::info!("model: {}", prepared.engine.describe());
        log::info!("source: {}", prepared.source.describe());
        // Model loaded, source open, GPIO lines held: ready as far as systemd is concerned.
        notifier.send("READY=1\nSTATUS=running");
        let run_stop = StopFlag::new();
        let pinger = Arc::clone(&notifier).watch_frames(Arc::clone(&prepared.health), run_stop.clone());
        let next: Arc<Mutex<Option<Config>>> = Arc::default();
        let watcher = {
            let (terminate, hangup, run_stop, next, notifier) =
                (terminate.clone(), Arc::clone(&hangup), run_stop.clone(), Arc::clone(&next), Arc::clone(&notifier));
            let path = path.to_path_buf();
            std::thread::Builder::new()
                .name("signals".into())
                .spawn(move || watch_signals(&path, &terminate, &hangup, &run_stop, &next, &notifier))
                .expect("spawn signal watcher")
        };
        let config_rules = prepared.rules.clone();
        let result = prepared.run(&run_stop, process_start, resume.as_ref());
        run_stop.stop();
        let _ = watcher.join();
        if let Some(p) = pinger {
            let _ = p.join();
        }
        let summary = result?;
        let c = summary.counters;
        resume = Some(Resume { decider: summary.decider, config_rules, next_seq: summary.next_seq });
        let reload = next.lock().expect("reload slot").take();
        let why = match (&reload, terminate.is_stopped()) {
            (_, true) => "stopped",
            (Some(_), false) => "reloading",
            (None, false) => "source ended",
        };
        log::info!("{why} after {} frames decided, {} dropped, {} events", c.decided, c.dropped(), c.events);
        match reload {
            Some(new) if !terminate.is_stopped() => {
                prepared = match prepare(new.clone(), process_start) {
                    Ok(p) => {
                        log::info!("reloaded {}", path.display());
                        config = new;
                        p
                    }
                    Err(e) => {
                        log::error!("reload failed ({e}); starting again with the previous config");
                        prepare(config.clone(), process_start)?
                    }
                };
            }
            _ => {
                notifier.send("STOPPING=1");
                return Ok(());
            }
        }
    }
}

/// How long a stop may take, from SIGINT/SIGTERM to the process's end, before the guard ends
/// it. A stop normally takes the sinks' flush budget plus the frame already inside the model
/// (which tract cannot interrupt): well under a second on a Pi with the shipped models, but
/// seconds a frame for a big float model under emulation. 30 s covers any frame and stays
/// well inside systemd's stop timeout (90 s), after which it would SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// A last resort: once a stop is asked for, the process ends within [`STOP_GRACE`] even if
/// some stage is wedged (a device read the kernel never returns from, a bug), with exit
/// code 1 and a log line saying so. A daemon that ignores SIGTERM gets SIGKILLed by
/// systemd after its timeout, with its sinks unflushed and no word of why.
pub fn guard_stop(terminate: StopFlag) {
    std::thread::Builder::new()
        .name("stop-guard".into())
        .spawn(move || {
            while !terminate.is_stopped() {
                std::thread::sleep(Duration::from_millis(50));
            }
            std::thread::sleep(STOP_GRACE);
            log::error!("stop: the pipeline did not wind down within {STOP_GRACE:?} of the stop; exiting now");
            std::process::exit(super::EXIT_RUNTIME);
        })
        .expect("spawn the stop guard");
}

/// Until the run ends: forward SIGINT/SIGTERM to the run; on SIGHUP, check the config file
/// and, if it is good, hand it over and end the run.
fn watch_signals(
    path: &Path,
    terminate: &StopFlag,
    hangup: &AtomicBool,
    run_stop: &StopFlag,
    next: &Mutex<Option<Config>>,
    notifier: &Notifier,
) {
    while !run_stop.is_stopped() {
        if terminate.is_stopped() {
            run_stop.stop();
            return;
        }
        if hangup.swap(false, Ordering::SeqCst) {
            log::info!("SIGHUP: checking {}", path.display());
            match check(path) {
                Ok(config) => {
                    *next.lock().expect("reload slot") = Some(config);
                    notifier.send("RELOADING=1");
                    run_stop.stop();
                    return;
                }
                Err(e) => log::error!("reload refused, the running config stays: {e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Everything about a config that can be checked without opening devices or loading the model.
fn check(path: &Path) -> Result<Config, Error> {
    let config = Config::load(path)?;
    let bundle = Bundle::load(&config.bundle_dir)?;
    config.rules(&bundle)?;
    Ok(config)
}
