//! Ending a sink's writer thread within a stop's budget, and the wall clock of the frames' clock.

use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Wait up to `budget` for `thread` to finish, then join it; `false` if it is still running
/// (it is left to end on its own: a stop never waits longer than its budget).
pub fn join_within(thread: JoinHandle<()>, budget: Duration) -> bool {
    let deadline = Instant::now() + budget;
    while !thread.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let finished = thread.is_finished();
    if finished {
        let _ = thread.join();
    }
    finished
}

/// Milliseconds since 1970 (UTC) now.
pub fn unix_ms_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// The Unix time, in ms, of the instant `started` (frame times `t_ms` count from it).
pub fn unix_ms_at(started: Instant) -> u64 {
    unix_ms_now().saturating_sub(started.elapsed().as_millis() as u64)
}
