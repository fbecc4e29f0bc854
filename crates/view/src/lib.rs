//! FieldSync views: what the agent and the server show a person, rendered
//! as text or as pretty JSON.
//!
//! What it is: pure functions from store values (case listings, merged
//! records, conflicts, history, the audit trail, the quarantine, import and
//! verify reports) to the exact `String` a command writes to standard
//! output, trailing newline included. The agent prints them; the server
//! prints them too, or sends them over its control socket.
//!
//! What it is not: it opens no store, reads no clock and prints nothing.
//!
//! ```
//! use fieldsync_view::{DeviceNames, Format};
//! let out = fieldsync_view::conflicts(&[], &DeviceNames::new(), Format::Text)?;
//! assert_eq!(out, "no conflicts\n");
//! assert_eq!(fieldsync_view::conflicts(&[], &DeviceNames::new(), Format::Json)?, "[]\n");
//! # Ok::<(), fieldsync_view::ViewError>(())
//! ```
#![forbid(unsafe_code)]

mod case;
mod names;
mod reports;

pub use case::{conflicts, history, listing, record};
pub use names::DeviceNames;
pub use reports::{QuarantineItem, audit, import, quarantine, repair, verify};

use serde::Serialize;

/// How a view is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Aligned text for a terminal.
    Text,
    /// Pretty-printed JSON, for scripts.
    Json,
}

impl Format {
    /// [`Format::Json`] when `json` is set (a command's `--json` flag), else [`Format::Text`].
    pub fn json(json: bool) -> Self {
        if json { Format::Json } else { Format::Text }
    }
}

/// Rendering a view failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    /// A value could not be serialized as JSON.
    #[error("rendering JSON failed: {0}")]
    Json(#[from] serde_json::Error),
}

/// `value` as pretty JSON with a trailing newline.
pub(crate) fn json<T: Serialize + ?Sized>(value: &T) -> Result<String, ViewError> {
    let mut out = serde_json::to_string_pretty(value)?;
    out.push('\n');
    Ok(out)
}

/// Appends one formatted line (with its newline) to a `String`. Writing to
/// a `String` cannot fail, so the `fmt::Result` carries nothing.
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}
pub(crate) use put;

/// The first 8 characters of an id's text form.
pub(crate) fn short(s: &str) -> &str {
    s.get(..8).unwrap_or(s)
}

/// An optional text, or `-`.
pub(crate) fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}
