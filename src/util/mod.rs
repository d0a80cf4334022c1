//! Small helpers that several stages share and none owns: reconnect backoff,
//! rate-limited warnings, atomic file replacement, bounded reading of regular
//! files, the message of a caught panic, and ending a writer thread within a budget.

pub mod atomic_write;
pub mod backoff;
pub mod file;
pub mod log_limit;
pub mod panic;
pub mod thread;

pub use atomic_write::{Written, write_atomically};
pub use backoff::Backoff;
pub use log_limit::LogLimiter;
pub use panic::panic_message;
pub use thread::{join_within, unix_ms_at, unix_ms_now};
