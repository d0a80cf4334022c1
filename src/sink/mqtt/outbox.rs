//! The MQTT outbox: every event waits here, on disk, until the broker has acknowledged it
//! (QoS 1 PUBACK), so that a broker outage, a lost network or a restart of the daemon loses
//! nothing. Bounded: when the undelivered events exceed the cap, the oldest are dropped and
//! counted (and logged), never silently.
//!
//! The file is a log: a 16-byte header (`VGOUTBX1`, then the offset of the first undelivered
//! record, little-endian) and records `[length u32][crc32 u32][payload]` appended at the end.
//! Delivering (or dropping) the oldest records only moves the offset in the header; once
//! everything is delivered the file is cut back to its header, and when the delivered part
//! outgrows the cap the live records are copied into a fresh file (temporary + rename).
//! Records are synced to disk in batches ([`Outbox::sync`]): a SIGKILL loses nothing (the
//! page cache holds them), a power cut at most the last batch. A torn last record (power cut
//! mid-write) fails its checksum and is cut off at the next start, with a warning.
//!
//! The undelivered payloads are also held in memory (a 10,000-event outbox is about 2 MB), so
//! sending never reads the disk. If the file cannot be opened or written, the outbox keeps
//! working in memory only, and says so.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"VGOUTBX1";
const HEADER: u64 = 16;
/// A record's own bytes besides its payload.
const RECORD_HEADER: u64 = 8;
/// The largest payload a record may hold (an event is a few hundred bytes).
const MAX_RECORD: u32 = 1 << 20;

/// The undelivered events, oldest first.
pub struct Outbox {
    path: PathBuf,
    /// `None` once the file failed: memory only.
    file: Option<File>,
    /// Offset of the first undelivered record in the file.
    start: u64,
    /// End of the last record.
    end: u64,
    records: VecDeque<Vec<u8>>,
    /// The id of `records[0]`: each event gets the next id when pushed, so that a sender can
    /// tell which of the events it sent are still here after the oldest were dropped.
    first_id: u64,
    /// Payload bytes in `records` (what the cap limits).
    bytes: u64,
    cap: u64,
    /// Records dropped because the outbox was full, since it was opened.
    dropped: u64,
    /// Records appended since the last sync.
    unsynced: bool,
    /// The thread that runs fdatasync for it (see [`Syncer`]).
    syncer: Option<Syncer>,
}

/// fdatasync on a thread of its own: on this VM's disk (and on SD cards) a sync now and then
/// takes hundreds of milliseconds to seconds, and the client thread must not stop publishing
/// meanwhile. Each request syncs everything written before it starts, so one pending request
/// covers any number of appends (the channel holds one).
struct Syncer {
    tx: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    fn start(file: &File, path: &Path) -> std::io::Result<Syncer> {
        let file = file.try_clone()?;
        let path = path.to_path_buf();
        let (tx, rx) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new().name("mqtt-outbox".into()).spawn(move || {
            let mut warn = crate::util::LogLimiter::new(std::time::Duration::from_secs(60));
            while rx.recv().is_ok() {
                if let Err(e) = file.sync_data() {
                    warn.warn(format_args!("mqtt: cannot sync the outbox {} ({e})", path.display()));
                }
            }
        })?;
        Ok(Syncer { tx: Some(tx), thread: Some(thread) })
    }

    fn request(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(());
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        // The last request still runs: a clean stop leaves everything on the disk.
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Outbox {
    /// Open the outbox at `path` (created if missing), holding at most `cap` payload bytes,
    /// with the records a previous run left undelivered. Never fails: a file that cannot be
    /// used is logged and the outbox runs in memory.
    pub fn open(path: &Path, cap: u64) -> Outbox {
        let mut outbox = Outbox::empty(path.to_path_buf(), cap);
        match outbox.load() {
            Ok(()) => {
                if !outbox.records.is_empty() {
                    log::info!(
                        "mqtt: {} event(s) left undelivered by an earlier run are in the outbox {}; they go first",
                        outbox.records.len(),
                        path.display()
                    );
                }
            }
            Err(e) => {
                log::error!(
                    "mqtt: cannot use the outbox {} ({e}); events wait in memory only (lost if the daemon stops before the broker has them)",
                    path.display()
                );
                outbox.file = None;
            }
        }
        outbox
    }

    /// An empty outbox without a file (until [`Outbox::open`] replaces it).
    pub fn in_memory() -> Outbox {
        Outbox::empty(PathBuf::new(), u64::MAX)
    }

    fn empty(path: PathBuf, cap: u64) -> Outbox {
        Outbox {
            path,
            file: None,
            start: HEADER,
            end: HEADER,
            records: VecDeque::new(),
            first_id: 0,
            bytes: 0,
            cap,
            dropped: 0,
            unsynced: false,
            syncer: None,
        }
    }

    fn load(&mut self) -> std::io::Result<()> {
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&self.path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        if bytes.len() < HEADER as usize || &bytes[..8] != MAGIC {
            if !bytes.is_empty() {
                let aside = self.path.with_extension("unreadable");
                log::warn!(
                    "mqtt: the outbox {} is not a vigil outbox (or its header is cut); moved aside to {} and starting empty",
                    self.path.display(),
                    aside.display()
                );
                std::fs::rename(&self.path, &aside)?;
                file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&self.path)?;
            }
            self.file = Some(file);
            return self.reset_file();
        }
        let start = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let mut at = usize::try_from(start).unwrap_or(usize::MAX).clamp(HEADER as usize, bytes.len());
        while let Some(record) = bytes.get(at..at + RECORD_HEADER as usize) {
            let len = u32::from_le_bytes(record[..4].try_into().expect("4 bytes"));
            let crc = u32::from_le_bytes(record[4..8].try_into().expect("4 bytes"));
            let body = at + RECORD_HEADER as usize;
            let Some(payload) = (len <= MAX_RECORD).then(|| bytes.get(body..body + len as usize)).flatten() else {
                break;
            };
            if crc32fast::hash(payload) != crc {
                break;
            }
            self.bytes += payload.len() as u64;
            self.records.push_back(payload.to_vec());
            at = body + len as usize;
        }
        if at < bytes.len() {
            log::warn!(
                "mqtt: the outbox {} ends in {} byte(s) of a record cut short (a power cut while writing?); cut off",
                self.path.display(),
                bytes.len() - at
            );
            file.set_len(at as u64)?;
        }
        (self.start, self.end) = (start.clamp(HEADER, at as u64), at as u64);
        self.file = Some(file);
        if self.records.is_empty() {
            self.reset_file()?;
        }
        // A previous run may have ended over the cap (a smaller cap configured now).
        self.enforce_cap();
        Ok(())
    }

    /// Undelivered events.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether everything has been delivered.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Events dropped because the outbox was full, since it was opened.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The `i`-th undelivered event, oldest first.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.records.get(i).map(Vec::as_slice)
    }

    /// The id of the oldest undelivered event (the id the next push gets, when empty).
    pub fn front_id(&self) -> u64 {
        self.first_id
    }

    /// The event with id `id`, if it is still here.
    pub fn by_id(&self, id: u64) -> Option<&[u8]> {
        let i = usize::try_from(id.checked_sub(self.first_id)?).ok()?;
        self.get(i)
    }

    /// Add an event at the end (dropping the oldest ones if it makes the outbox too big).
    pub fn push(&mut self, payload: Vec<u8>) {
        let payload =
            if payload.len() > MAX_RECORD as usize { payload[..MAX_RECORD as usize].to_vec() } else { payload };
        if let Some(file) = &self.file {
            let mut record = Vec::with_capacity(RECORD_HEADER as usize + payload.len());
            record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            record.extend_from_slice(&payload);
            match file.write_all_at(&record, self.end) {
                Ok(()) => {
                    self.end += record.len() as u64;
                    self.unsynced = true;
                }
                Err(e) => self.file_failed("write", &e),
            }
        }
        self.bytes += payload.len() as u64;
        self.records.push_back(payload);
        self.enforce_cap();
    }

    /// The oldest `n` events reached the broker.
    pub fn delivered(&mut self, n: usize) {
        self.remove_oldest(n);
    }

    /// Have what was appended since the last call put on the disk (fdatasync, on the
    /// outbox's own thread: this returns at once).
    pub fn sync(&mut self) {
        if !std::mem::take(&mut self.unsynced) || self.file.is_none() {
            return;
        }
        if self.syncer.is_none() {
            match Syncer::start(self.file.as_ref().expect("checked"), &self.path) {
                Ok(s) => self.syncer = Some(s),
                Err(e) => return self.file_failed("sync", &e),
            }
        }
        if let Some(s) = &self.syncer {
            s.request();
        }
    }

    fn enforce_cap(&mut self) {
        let mut over = 0;
        let mut bytes = self.bytes;
        while bytes > self.cap && over < self.records.len() {
            bytes -= self.records[over].len() as u64;
            over += 1;
        }
        if over > 0 {
            self.dropped += over as u64;
            self.remove_oldest(over);
            log::warn!(
                "mqtt: outbox full ({} KiB of events undelivered): dropped the {over} oldest; {} dropped since the start",
                self.cap / 1024,
                self.dropped
            );
        }
    }

    fn remove_oldest(&mut self, n: usize) {
        for _ in 0..n.min(self.records.len()) {
            let payload = self.records.pop_front().expect("counted");
            self.first_id += 1;
            self.bytes -= payload.len() as u64;
            self.start += RECORD_HEADER + payload.len() as u64;
        }
        if self.file.is_none() {
            return;
        }
        let result = if self.records.is_empty() {
            self.reset_file()
        } else if self.start - HEADER > self.cap.max(1 << 20) {
            self.compact()
        } else {
            self.write_start()
        };
        if let Err(e) = result {
            self.file_failed("update", &e);
        }
    }

    fn write_start(&self) -> std::io::Result<()> {
        let file = self.file.as_ref().expect("file");
        file.write_all_at(&self.start.to_le_bytes(), 8)
    }

    /// Everything delivered: back to an empty file.
    fn reset_file(&mut self) -> std::io::Result<()> {
        let file = self.file.as_mut().expect("file");
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(MAGIC)?;
        file.write_all(&HEADER.to_le_bytes())?;
        (self.start, self.end) = (HEADER, HEADER);
        Ok(())
    }

    /// The delivered part is big: write the live records into a new file and rename it over.
    fn compact(&mut self) -> std::io::Result<()> {
        let temporary = self.path.with_extension("compacting");
        let mut out = Vec::with_capacity(HEADER as usize + self.bytes as usize + self.records.len() * 8);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&HEADER.to_le_bytes());
        for payload in &self.records {
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            out.extend_from_slice(payload);
        }
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&temporary)?;
        file.write_all(&out)?;
        file.sync_data()?;
        std::fs::rename(&temporary, &self.path)?;
        (self.start, self.end) = (HEADER, out.len() as u64);
        // The syncer holds the old file: the next sync starts one for the new.
        self.syncer = None;
        self.file = Some(file);
        Ok(())
    }

    fn file_failed(&mut self, what: &str, e: &std::io::Error) {
        log::error!(
            "mqtt: outbox {} failed ({what}: {e}); from now on events wait in memory only",
            self.path.display()
        );
        self.file = None;
        self.syncer = None;
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.sync();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(o: &Outbox) -> Vec<String> {
        (0..o.len()).map(|i| String::from_utf8(o.get(i).unwrap().to_vec()).unwrap()).collect()
    }

    #[test]
    fn undelivered_events_survive_a_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox");
        {
            let mut o = Outbox::open(&path, 1 << 20);
            for i in 0..5 {
                o.push(format!("event {i}").into_bytes());
            }
            o.delivered(2);
            o.sync();
        }
        let mut o = Outbox::open(&path, 1 << 20);
        assert_eq!(contents(&o), ["event 2", "event 3", "event 4"]);
        o.delivered(3);
        assert!(o.is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), HEADER, "an empty outbox is cut back to its header");
        drop(o);
        assert!(Outbox::open(&path, 1 << 20).is_empty());
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox");
        let mut o = Outbox::open(&path, 30);
        for i in 0..10 {
            o.push(format!("event {i}").into_bytes()); // 7 bytes each: 4 fit in 30
        }
        assert_eq!(contents(&o), ["event 6", "event 7", "event 8", "event 9"]);
        assert_eq!(o.dropped(), 6);
        drop(o);
        assert_eq!(contents(&Outbox::open(&path, 30)), ["event 6", "event 7", "event 8", "event 9"]);
    }

    #[test]
    fn ids_name_the_same_event_after_the_oldest_are_dropped() {
        // A sender keeps the ids of what it sent: a drop at the cap must not shift them.
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(&dir.path().join("outbox"), 30);
        for i in 0..4 {
            o.push(format!("event {i}").into_bytes());
        }
        assert_eq!((o.front_id(), o.by_id(3)), (0, Some(&b"event 3"[..])));
        o.push(b"event 4".to_vec()); // drops event 0
        assert_eq!((o.front_id(), o.by_id(0), o.by_id(4)), (1, None, Some(&b"event 4"[..])));
        o.delivered(1);
        assert_eq!((o.front_id(), o.by_id(1), o.by_id(2)), (2, None, Some(&b"event 2"[..])));
    }

    #[test]
    fn a_record_cut_short_by_a_power_cut_is_cut_off_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox");
        {
            let mut o = Outbox::open(&path, 1 << 20);
            o.push(b"first".to_vec());
            o.push(b"second".to_vec());
        }
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 2).unwrap();
        let mut o = Outbox::open(&path, 1 << 20);
        assert_eq!(contents(&o), ["first"]);
        o.push(b"third".to_vec());
        drop(o);
        assert_eq!(contents(&Outbox::open(&path, 1 << 20)), ["first", "third"]);
    }

    #[test]
    fn a_file_that_is_not_an_outbox_is_moved_aside_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox");
        std::fs::write(&path, b"something else entirely").unwrap();
        let o = Outbox::open(&path, 1 << 20);
        assert!(o.is_empty());
        assert_eq!(std::fs::read(path.with_extension("unreadable")).unwrap(), b"something else entirely");
    }

    #[test]
    fn compaction_keeps_the_live_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox");
        let mut o = Outbox::open(&path, 100);
        // The delivered part passes 1 MiB while one record stays undelivered.
        o.push(b"oldest".to_vec());
        let big = vec![b'x'; 60];
        for _ in 0..20_000 {
            o.push(big.clone());
        }
        assert!(std::fs::metadata(&path).unwrap().len() < 4 << 20);
        o.push(b"newest".to_vec());
        drop(o);
        let o = Outbox::open(&path, 100);
        assert_eq!(o.get(o.len() - 1), Some(&b"newest"[..]));
    }
}
