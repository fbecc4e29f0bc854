//! The guard between Automerge and bytes from outside.
//!
//! Automerge 0.12 panics on some malformed change and document bytes (in
//! `Change::from_bytes`, `Change::decode`, `apply_changes` and `load`).
//! Everything in this crate that hands foreign bytes to Automerge does so
//! inside [`guarded`], which turns a panic into a [`GuardError`].
//!
//! The panic hook still runs (it prints the panic to stderr by default); a
//! library does not own the process-wide hook, so it leaves it alone.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::GuardError;

/// Runs `f`, turning a panic into [`GuardError::Panicked`].
///
/// `what` names the operation for the error message ("applying changes").
/// State that `f` mutated may be inconsistent after a panic: callers must
/// stop using it (see [`CaseDoc`](crate::CaseDoc), which poisons itself).
pub fn guarded<T>(what: &'static str, f: impl FnOnce() -> T) -> Result<T, GuardError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| GuardError::Panicked {
        what,
        message: panic_message(payload.as_ref()),
    })
}

/// The text of a panic payload, when it has one.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_values_through() {
        assert_eq!(guarded("adding", || 1 + 1).unwrap(), 2);
    }

    #[test]
    fn turns_panics_into_errors() {
        let err = guarded("exploding", || -> u8 { panic!("boom {}", 7) }).unwrap_err();
        let GuardError::Panicked { what, message } = err;
        assert_eq!(what, "exploding");
        assert_eq!(message, "boom 7");
        let err = guarded("static", || -> u8 { panic!("static text") }).unwrap_err();
        assert!(err.to_string().contains("static text"));
    }
}
