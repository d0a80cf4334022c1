//! `[snapshots]`: when a label switches on, the camera frame that decided it is saved as a JPEG
//! (the frame as captured, not the model's input), named by time, label and seq, and the
//! event line carries the file name. Retention by count and total size. Optionally the JPEG is
//! also published (retained, size-capped) on `<prefix>/label/<name>/snapshot` over `[mqtt]`.
//!
//! `vigil record` saves frames through the same path ([`SnapshotSettings::record`]): one every
//! `every` of capture time and/or each switch-on, and at its limits it stops instead of deleting.
//!
//! The decide thread only names the file and queues a request; the `snapshots` thread takes the
//! frame from the [`FrameRing`] (which the workers fill), encodes and writes it. A full
//! or read-only disk is logged and counted, never fatal; the run and its events go on.

pub mod ring;
pub mod store;

pub use ring::{FrameRing, HeldFrame};

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde::Deserialize;
use toml::Spanned;

use crate::convert::YuvConverter;
use crate::frame::PixelFormat;
use crate::sink::mqtt::SnapshotPublisher;
use crate::stop::StopFlag;
use crate::tomlfile::{SettingsError, TomlFile};
use crate::util::LogLimiter;
pub use store::WhenFull;
use store::{Store, WriteError};

/// `[snapshots]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotsSection {
    /// The directory the JPEGs go into (must exist).
    pub dir: Spanned<String>,
    /// Keep at most this many (default 1000).
    #[serde(default = "default_max_files")]
    pub max_files: Spanned<u64>,
    /// Keep at most this many MiB of them (default 256).
    #[serde(default = "default_max_mib")]
    pub max_mib: Spanned<u64>,
    /// JPEG quality for frames that are not JPEG already (default 85; 1 to 100).
    #[serde(default = "default_quality")]
    pub quality: Spanned<u64>,
    /// Also publish each snapshot, retained, on `<prefix>/label/<name>/snapshot` (needs `[mqtt]`).
    #[serde(default = "no")]
    pub mqtt: Spanned<bool>,
    /// Publish only snapshots up to this many KiB (default 256; 1 to 65536).
    #[serde(default = "default_mqtt_max_kib")]
    pub mqtt_max_kib: Spanned<u64>,
}

fn no() -> Spanned<bool> {
    Spanned::new(0..0, false)
}
fn default_max_files() -> Spanned<u64> {
    Spanned::new(0..0, 1000)
}
fn default_max_mib() -> Spanned<u64> {
    Spanned::new(0..0, 256)
}
fn default_quality() -> Spanned<u64> {
    Spanned::new(0..0, 85)
}
fn default_mqtt_max_kib() -> Spanned<u64> {
    Spanned::new(0..0, 256)
}

/// What to save and where: `[snapshots]` checked, or `vigil record`'s options.
#[derive(Debug, Clone)]
pub struct SnapshotSettings {
    /// The folder the JPEGs go into.
    pub dir: PathBuf,
    /// At most this many files in it.
    pub max_files: usize,
    /// At most this many bytes of them.
    pub max_bytes: u64,
    /// JPEG quality for frames that are not JPEG already.
    pub quality: u8,
    /// `Some(cap)`: publish over MQTT snapshots of at most `cap` bytes.
    pub mqtt_max_bytes: Option<u64>,
    /// Save the frame of each switch-on (named in its event line).
    pub on_switch: bool,
    /// Also save one frame every this many ms of capture time (`vigil record --every`).
    pub every_ms: Option<u64>,
    /// At a limit: delete the oldest (`[snapshots]`) or save no more and stop the run (`record`).
    pub when_full: WhenFull,
    /// A frame that switches several labels on is saved once, named for the first
    /// (`record`: a data set without duplicates); `[snapshots]` saves one file per label.
    pub once_per_frame: bool,
}

impl SnapshotSettings {
    /// `vigil record`'s: frames into `dir`, one every `every_ms` and/or at each switch-on,
    /// until `max_files` or `max_bytes` is reached, which stops the run; nothing is deleted.
    pub fn record(dir: PathBuf, every_ms: Option<u64>, on_switch: bool, max_files: usize, max_bytes: u64) -> Self {
        SnapshotSettings {
            dir,
            max_files,
            max_bytes,
            quality: 90,
            mqtt_max_bytes: None,
            on_switch,
            every_ms,
            when_full: WhenFull::Stop,
            once_per_frame: true,
        }
    }
}

impl SnapshotsSection {
    /// Check the keys; `mqtt`: whether the config has an `[mqtt]` section.
    pub fn check(&self, file: &TomlFile, mqtt: bool) -> Result<SnapshotSettings, SettingsError> {
        let dir = file.resolve(self.dir.get_ref());
        if !dir.is_dir() {
            return Err(file.error_at(
                self.dir.span(),
                "snapshots.dir",
                format!(
                    "`{}` is not a directory: expected an existing folder (paths are relative to this config)",
                    dir.display()
                ),
            ));
        }
        let ranged = |v: &Spanned<u64>, key: &str, range: std::ops::RangeInclusive<u64>, unit: &str| {
            if range.contains(v.get_ref()) {
                Ok(*v.get_ref())
            } else {
                Err(file.error_at(
                    v.span(),
                    key,
                    format!("{}: expected {} to {} {unit}", v.get_ref(), range.start(), range.end()),
                ))
            }
        };
        let max_files = ranged(&self.max_files, "snapshots.max_files", 1..=1_000_000, "files")?;
        let max_mib = ranged(&self.max_mib, "snapshots.max_mib", 1..=1 << 20, "MiB")?;
        let quality = ranged(&self.quality, "snapshots.quality", 1..=100, "")?;
        let mqtt_kib = ranged(&self.mqtt_max_kib, "snapshots.mqtt_max_kib", 1..=65_536, "KiB")?;
        if *self.mqtt.get_ref() && !mqtt {
            return Err(file.error_at(
                self.mqtt.span(),
                "snapshots.mqtt",
                "snapshots are to be published over MQTT and there is no [mqtt] section: expected one (or `mqtt = false`)",
            ));
        }
        Ok(SnapshotSettings {
            dir,
            max_files: max_files as usize,
            max_bytes: max_mib << 20,
            quality: quality as u8,
            mqtt_max_bytes: self.mqtt.get_ref().then_some(mqtt_kib << 10),
            on_switch: true,
            every_ms: None,
            when_full: WhenFull::DeleteOldest,
            once_per_frame: false,
        })
    }
}

/// Snapshot requests waiting for the thread, at most; more are skipped (and counted) rather
/// than slow the decide thread.
const QUEUE: usize = 64;

struct Request {
    seq: u64,
    /// The label that switched on; `None` for a frame saved by time.
    label: Option<usize>,
    name: String,
}

/// The decide thread's handle: names each snapshot and queues it.
pub struct Snapshots {
    ring: Arc<FrameRing>,
    tx: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    labels: Arc<[String]>,
    /// Unix time of the process start, ms (frame times are ms after it).
    epoch_ms: u64,
    name: String,
    /// Requests the writer had no room for.
    skipped: u64,
    warn: LogLimiter,
    on_switch: bool,
    every_ms: Option<u64>,
    /// Capture time from which the next frame is saved by time.
    next_due_ms: u64,
    /// The last frame queued, so that a frame is saved once when it is due and switches a label on.
    last_queued: Option<u64>,
    once_per_frame: bool,
}

impl Snapshots {
    /// Start the snapshot thread; the ring holds `ring_frames` frames. `publish`: where
    /// snapshots go over MQTT, if they do. `stop`: the run's flag, raised when a
    /// [`WhenFull::Stop`] store is full.
    pub fn start(
        settings: &SnapshotSettings,
        labels: Arc<[String]>,
        started: Instant,
        ring_frames: usize,
        publish: Option<SnapshotPublisher>,
        stop: StopFlag,
    ) -> Snapshots {
        let ring = Arc::new(FrameRing::new(ring_frames));
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let (thread_ring, thread_settings) = (Arc::clone(&ring), settings.clone());
        let publish = publish.filter(|_| settings.mqtt_max_bytes.is_some());
        let thread = std::thread::Builder::new()
            .name("snapshots".into())
            .spawn(move || write_loop(&thread_settings, &thread_ring, &rx, publish.as_ref(), &stop))
            .expect("spawn the snapshots thread");
        let epoch_ms = crate::util::unix_ms_at(started);
        Snapshots {
            ring,
            tx: Some(tx),
            thread: Some(thread),
            labels,
            epoch_ms,
            name: String::with_capacity(64),
            skipped: 0,
            warn: LogLimiter::new(Duration::from_secs(60)),
            on_switch: settings.on_switch,
            every_ms: settings.every_ms,
            next_due_ms: 0,
            last_queued: None,
            once_per_frame: settings.once_per_frame,
        }
    }

    /// Whether the frame of each switch-on is saved (and named in its event line).
    pub fn saves_switch_ons(&self) -> bool {
        self.on_switch
    }

    /// The ring the workers keep frames in.
    pub fn ring(&self) -> Arc<FrameRing> {
        Arc::clone(&self.ring)
    }

    /// `label` switched on at frame `seq` (captured at `t_ms`): queue its snapshot; the file
    /// name the event carries.
    pub fn switched_on(&mut self, seq: u64, t_ms: u64, label: usize) -> &str {
        // The frame's events come one after another: `name` is still this frame's file.
        if !(self.once_per_frame && self.last_queued == Some(seq)) {
            self.queue(seq, t_ms, Some(label));
        }
        &self.name
    }

    /// Frame `seq` (captured at `t_ms`) was decided: with `every_ms`, save it if it is due,
    /// so that saved frames are at least `every_ms` apart in capture time.
    pub fn decided(&mut self, seq: u64, t_ms: u64) {
        let Some(every) = self.every_ms else { return };
        if t_ms < self.next_due_ms {
            return;
        }
        self.next_due_ms = t_ms + every;
        if self.last_queued != Some(seq) {
            self.queue(seq, t_ms, None);
        }
    }

    fn queue(&mut self, seq: u64, t_ms: u64, label: Option<usize>) {
        store::file_name(&mut self.name, self.epoch_ms + t_ms, label.map(|l| self.labels[l].as_str()), seq);
        self.last_queued = Some(seq);
        let request = Request { seq, label, name: self.name.clone() };
        if let Some(tx) = &self.tx
            && tx.try_send(request).is_err()
        {
            self.skipped += 1;
            self.warn.warn(format_args!(
                "snapshots: the writer is behind; {} skipped so far (frame {seq} not saved)",
                self.skipped
            ));
        }
    }

    /// Write what is queued, within `budget`.
    pub fn finish(&mut self, budget: Duration) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            crate::util::join_within(t, budget);
        }
        if self.skipped > 0 {
            log::warn!("snapshots: {} frames not saved because the writer was behind", self.skipped);
            self.skipped = 0;
        }
    }
}

impl Drop for Snapshots {
    fn drop(&mut self) {
        self.finish(Duration::from_millis(500));
    }
}

fn write_loop(
    s: &SnapshotSettings,
    ring: &FrameRing,
    rx: &Receiver<Request>,
    publish: Option<&SnapshotPublisher>,
    stop: &StopFlag,
) {
    let mut store = Store::open(&s.dir, s.max_files, s.max_bytes, s.when_full);
    let mut held = HeldFrame::default();
    let mut jpeg = Vec::new();
    let mut rgb = Vec::new();
    let (mut written, mut failed, mut missed, mut over_limit) = (0u64, 0u64, 0u64, 0u64);
    let mut warn = LogLimiter::new(Duration::from_secs(60));
    while let Ok(r) = rx.recv() {
        if over_limit > 0 {
            // Full, and the run is stopping: what is still queued is skipped, and counted.
            over_limit += 1;
            continue;
        }
        if !ring.copy_out(r.seq, &mut held) {
            missed += 1;
            warn.warn(format_args!("snapshots: frame {} is no longer held; {missed} missed so far", r.seq));
            continue;
        }
        if let Err(why) = encode(&held, s.quality, &mut rgb, &mut jpeg) {
            failed += 1;
            warn.warn(format_args!("snapshots: frame {} not saved: {why}; {failed} failed so far", r.seq));
            continue;
        }
        match store.write(&r.name, &jpeg) {
            Ok(()) => written += 1,
            Err(full @ WriteError::Full { .. }) => {
                over_limit += 1;
                log::info!("snapshots: {full} in {}: frame {} not saved; stopping", s.dir.display(), r.seq);
                stop.stop();
                continue;
            }
            Err(e) => {
                failed += 1;
                warn.warn(format_args!(
                    "snapshots: cannot write {} in {} ({e}); {failed} failed so far, the run goes on",
                    r.name,
                    s.dir.display()
                ));
            }
        }
        if let (Some(p), Some(cap), Some(label)) = (publish, s.mqtt_max_bytes, r.label) {
            if jpeg.len() as u64 <= cap {
                p.publish(label, jpeg.clone());
            } else {
                log::debug!("snapshots: {} is {} KiB, over mqtt_max_kib: not published", r.name, jpeg.len() / 1024);
            }
        }
    }
    let (kept, bytes) = store.kept();
    log::info!(
        "snapshots: {written} written, {failed} failed, {missed} missed, {over_limit} over the limit in this run; \
         {kept} kept ({} KiB) in {}",
        bytes / 1024,
        s.dir.display()
    );
}

/// The frame as a JPEG in `jpeg`: a JPEG frame (MJPEG, a .jpg file) as it is, anything else
/// encoded at `quality` (YUV converted to RGB at full size first, in `rgb`).
fn encode(f: &HeldFrame, quality: u8, rgb: &mut Vec<u8>, jpeg: &mut Vec<u8>) -> Result<(), String> {
    use image::ExtendedColorType;
    use image::codecs::jpeg::JpegEncoder;
    jpeg.clear();
    let (w, h) = (f.width, f.height);
    let mut encoder = JpegEncoder::new_with_quality(&mut *jpeg, quality);
    let result = match f.format.ok_or("an empty slot")? {
        PixelFormat::Encoded if f.data.starts_with(&[0xff, 0xd8, 0xff]) => {
            jpeg.extend_from_slice(&f.data);
            return Ok(());
        }
        PixelFormat::Encoded => {
            let picture = image::load_from_memory(&f.data).map_err(|e| format!("cannot decode the frame ({e})"))?;
            let picture = picture.to_rgb8();
            encoder.encode(picture.as_raw(), picture.width(), picture.height(), ExtendedColorType::Rgb8)
        }
        PixelFormat::Rgb24 => encoder.encode(&f.data, w, h, ExtendedColorType::Rgb8),
        PixelFormat::Grey => encoder.encode(&f.data, w, h, ExtendedColorType::L8),
        yuv => {
            YuvConverter::new(f.colour).to_rgb(yuv, w, h, &f.data, rgb);
            encoder.encode(rgb, w, h, ExtendedColorType::Rgb8)
        }
    };
    result.map_err(|e| format!("JPEG encoding failed ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_format_becomes_a_jpeg_of_its_own_size() {
        let (w, h) = (64u32, 48u32);
        let mut rgb = Vec::new();
        let mut jpeg = Vec::new();
        for format in [PixelFormat::Rgb24, PixelFormat::Grey, PixelFormat::Yuyv, PixelFormat::Nv12, PixelFormat::I420] {
            let len = format.frame_len(w, h).unwrap();
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let f = HeldFrame { seq: Some(1), format: Some(format), width: w, height: h, data, ..HeldFrame::default() };
            encode(&f, 85, &mut rgb, &mut jpeg).unwrap();
            let back = image::load_from_memory(&jpeg).unwrap();
            assert_eq!((back.width(), back.height()), (w, h), "{format:?}");
        }
        // A JPEG frame is kept as it came.
        let f =
            HeldFrame { seq: Some(2), format: Some(PixelFormat::Encoded), data: jpeg.clone(), ..HeldFrame::default() };
        let mut again = Vec::new();
        encode(&f, 85, &mut rgb, &mut again).unwrap();
        assert_eq!(again, jpeg);
    }
}
