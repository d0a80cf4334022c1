//! `vigil check`: load and check everything a config names (bundle, model,
//! thresholds, source, GPIO lines, serial device) without running anything.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{EXIT_OK, Error};
use vigil::config::Config;
use vigil::setup::prepare;
use vigil::sink::serial::DevicePresence;

/// Most per-label rule lines `check` prints (ImageNet's 1000 would drown the rest).
const MAX_RULES_SHOWN: usize = 64;

/// Check the config at `path`; print what it will run.
pub fn run(path: &Path, process_start: Instant) -> Result<i32, Error> {
    let config = Config::load(path)?;
    let serial = config.serial.clone();
    let prepared = prepare(config, process_start)?;
    outln!("config: {} ok", prepared.config.file.path.display());
    outln!(
        "bundle: {} ({} labels, {})",
        prepared.bundle.dir.display(),
        prepared.bundle.labels.len(),
        prepared.bundle.provenance.licence
    );
    outln!("model: {}", prepared.engine.describe());
    if let Some(e) = &prepared.engine_fell_back {
        outln!("engine: FELL BACK to tract ([onnxruntime] fallback = \"tract\"): {e}");
    }
    if prepared.health.source_lost.load(Ordering::Relaxed) {
        outln!(
            "source: {} NOT AVAILABLE now (a run keeps retrying; see the warning above)",
            prepared.source.describe()
        );
    } else {
        outln!("source: {}", prepared.source.describe());
    }
    if let Some(t) = &prepared.config.thresholds_file {
        outln!("thresholds: {} (between the bundle's and this config's)", t.file.path.display());
    }
    // Each label's rule and where its on/off came from: a config default that a manifest's
    // per-label value shadows shows here instead of silently doing nothing.
    let traced = prepared.config.rules_traced(&prepared.bundle)?;
    for (label, (rule, source)) in prepared.bundle.labels.iter().zip(&traced).take(MAX_RULES_SHOWN) {
        outln!(
            "rule {label}: on={} from {}; off={} from {}; min_frames={} window={} hold_ms={}",
            rule.on,
            source.on,
            rule.off,
            source.off,
            rule.min_frames,
            rule.window,
            rule.hold_ms
        );
    }
    if traced.len() > MAX_RULES_SHOWN {
        outln!("rule …: {} more labels (`get thresholds` on the console lists rules)", traced.len() - MAX_RULES_SHOWN);
    }
    if let Some(s) = serial {
        let device = s.device.get_ref();
        match prepared.serial {
            Some(DevicePresence::Absent) => {
                outln!("serial: {device} NOT AVAILABLE now (a run keeps retrying; see the warning above)")
            }
            _ => outln!("serial: {device} at {} baud, {:?}", s.baud.get_ref(), s.format),
        }
    }
    if let Some(m) = &prepared.config.mqtt {
        // Checked, not connected: a broker that is down now is a run-time matter (retried).
        outln!(
            "mqtt: {} as `{}`{}, topics under `{}/`, outbox {} (at most {} KiB){}{}",
            m.broker,
            m.client_id,
            m.username.as_deref().map_or(String::new(), |u| format!(" (user `{u}`)")),
            m.prefix,
            m.outbox.display(),
            m.outbox_max_bytes / 1024,
            if m.discovery_prefix.is_some() { ", Home Assistant discovery" } else { "" },
            if m.commands { ", commands on <prefix>/cmd" } else { "" }
        );
    }
    if let Some(s) = &prepared.config.snapshots {
        outln!(
            "snapshots: {} (at most {} files, {} MiB){}",
            s.dir.display(),
            s.max_files,
            s.max_bytes >> 20,
            if s.mqtt_max_bytes.is_some() { ", published over MQTT" } else { "" }
        );
    }
    Ok(EXIT_OK)
}
