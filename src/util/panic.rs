//! Turning a caught panic into a message a log line or an error can carry.
//!
//! vigil's threads run their loops under [`std::panic::catch_unwind`], so that a bug
//! met on some input ends the run with a clear error (and exit code 1, and systemd's
//! restart) instead of leaving a dead thread behind a live-looking daemon.

use std::any::Any;

/// The text a panic was raised with (`panic!("...")`, `expect`, an index out of range).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_of_both_payload_kinds() {
        let literal = std::panic::catch_unwind(|| panic!("literal")).unwrap_err();
        let formatted = std::panic::catch_unwind(|| panic!("index {}", 7)).unwrap_err();
        assert_eq!(panic_message(&*literal), "literal");
        assert_eq!(panic_message(&*formatted), "index 7");
    }
}
