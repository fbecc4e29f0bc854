//! The FieldSync node driver, shared by the agent and the relay.
//!
//! One engine thread owns the store and every sync session ([`Engine`]);
//! store work (redb commits with their fsync) never runs on the async
//! runtime. Each connection is two small tokio tasks that move bytes
//! between the transport and the engine ([`Node::run_connection`]).
//! Connections come and go; the engine stays. [`Dialer`] keeps one
//! connection to a relay up, reconnecting single-flight with jittered
//! exponential backoff ([`Backoff`]).
#![forbid(unsafe_code)]

mod dial;
mod engine;
mod node;

pub use dial::{Backoff, DialEvent, Dialer};
pub use engine::{
    ConnId, ConnOutcome, DEFAULT_QUEUED_KIB, Engine, Mode, NodeConfig, NodeEvent, NodeEventKind,
    now,
};
pub use node::{Node, NodeStopped};
