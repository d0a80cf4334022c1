//! Small helpers that several stages share and none owns: reconnect backoff,
//! rate-limited warnings, atomic file replacement, bounded reading of regular
//! files, and the message of a caught panic.

pub mod atomic_write;
pub mod backoff;
pub mod file;
pub mod log_limit;
pub mod panic;

pub use atomic_write::{Written, write_atomically};
pub use backoff::Backoff;
pub use log_limit::LogLimiter;
pub use panic::panic_message;
