//! What the commands print for people and scripts, on stdout.
//!
//! `println!` panics when stdout's reader has gone (`vigil classify *.jpg | head -1`):
//! Rust ignores SIGPIPE, so the write fails with EPIPE. Here a closed stdout is the
//! end of the output, as it is for every Unix tool: the command ends quietly, with
//! exit code 0 (the reader took what it wanted).

use std::io::Write;

use super::{EXIT_OK, EXIT_RUNTIME};

/// Write to stdout; end the process if stdout is closed or fails.
pub fn write(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(EXIT_OK);
        }
        log::error!("cannot write to stdout: {e}");
        std::process::exit(EXIT_RUNTIME);
    }
}

/// `println!` for the commands, through [`write`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cmd::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for the commands, through [`write`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cmd::out::write(format_args!($($arg)*))
    };
}
