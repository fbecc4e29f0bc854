//! The FieldSync sync protocol: wire messages, signed receipts, and the sync
//! engine as a sans-IO state machine.
//!
//! What it is: everything two nodes say to each other, and the rules by which
//! each side verifies, authorizes, stores and acknowledges what it is sent.
//! What it is not: it opens no sockets, spawns no tasks and reads neither the
//! clock nor the OS random generator; a driver (`fieldsync-node`, or the
//! simulator) moves its frames and passes the time. See [`Session`] for the
//! order of calls.
#![forbid(unsafe_code)]

mod authority;
mod error;
mod receipt;
mod release;
mod repair;
mod session;
mod wire;

pub use authority::Authority;
pub use error::SessionError;
pub use receipt::{
    RECEIPT_VERSION, RELAYED_RECEIPT_VERSION, Receipt, ReceiptBody, ReceiptError, RelayedReceipt,
    RelayedReceiptBody, encode_receipt, encode_relayed_receipt, verify_receipt,
    verify_relayed_receipt,
};
pub use release::{
    MAX_RELEASE_REASON, RELEASE_VERSION, Release, ReleaseBody, apply_release, encode_release,
    release_body, verify_release,
};
pub use session::{
    DEFAULT_MAX_IN_FLIGHT, Event, Inbound, MAX_IGNORED_ORDERS, Session, SessionConfig,
};
pub use wire::{
    Ack, Batch, CloseCode, DEFLATED_BATCHES_SINCE, FrameDecoder, Hello, MAX_BATCH_BYTES,
    MAX_BATCH_CHANGES, MAX_FRAME_LEN, MAX_REASON_LEN, MAX_REPAIR_CASES, MIN_PROTOCOL_VERSION,
    Message, NodeRole, PROTOCOL_VERSION, RELAYED_SINCE, REPAIR_BUCKETS, RepairDigest, RepairHeads,
    WIPE_ORDERS_SINCE, WireCursor, WireError, encode_batch_deflated,
};
