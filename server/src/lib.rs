//! The FieldSync relay server, as a library behind the `fieldsync-server`
//! binary: headquarters' administration (enrollment, revocation, quarantine
//! release and the case views), the data directory's files, and the local
//! control socket through which the command line reaches a running server.
//!
//! [`serve`] puts the relay on the network: the sync engine
//! (`fieldsync-protocol`) driven by `fieldsync-node` over
//! `fieldsync-transport`.
//!
//! ```no_run
//! use fieldsync_server::admin::{AdminContext, AdminRequest, execute};
//! use fieldsync_server::keys::DataDir;
//!
//! let dir = DataDir::new("/var/lib/fieldsync-server");
//! let store = fieldsync_store::Store::open(&dir.store())?;
//! let ctx = AdminContext::load(&store, &dir)?;
//! let out = execute(&ctx, &AdminRequest::Cases { json: false })?;
//! print!("{}", out.output);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod admin;
#[cfg(unix)]
pub mod control;
pub mod devices;
pub mod hq;
pub mod keys;
pub mod serve;

use fieldsync_identity::Timestamp;

use crate::admin::AdminError;

/// The OS clock, as a [`Timestamp`].
pub fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Timestamp::from_millis(ms)
}

/// `N` bytes from the OS random generator.
pub(crate) fn random<const N: usize>() -> Result<[u8; N], AdminError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| AdminError::Random(e.to_string()))?;
    Ok(buf)
}
