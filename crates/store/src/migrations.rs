//! Numbered schema steps. A store records the schema it was written with in
//! `meta-1/schema`; opening runs every step above it, in one transaction.

use redb::WriteTransaction;

use crate::error::StoreError;
use crate::tables::{
    ACKS, AUDIT, CASES, CHANGES, CURSORS, DEVICES, LOG, META, ORIGINS, PENDING, QUARANTINE,
    RECEIPTS, RELEASES, SNAPSHOTS,
};

/// One schema step.
type Step = fn(&WriteTransaction) -> Result<(), redb::Error>;

/// The schema this build writes.
pub(crate) const CURRENT: u32 = 2;

/// Step 1: create every table.
fn step_1(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(META)?;
    txn.open_table(CASES)?;
    txn.open_table(LOG)?;
    txn.open_table(CHANGES)?;
    txn.open_table(SNAPSHOTS)?;
    txn.open_table(QUARANTINE)?;
    txn.open_table(AUDIT)?;
    txn.open_table(PENDING)?;
    txn.open_table(CURSORS)?;
    txn.open_table(ORIGINS)?;
    txn.open_table(ACKS)?;
    txn.open_table(RECEIPTS)?;
    txn.open_table(DEVICES)?;
    Ok(())
}

/// Step 2: the table of quarantine releases.
fn step_2(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(RELEASES)?;
    Ok(())
}

/// Brings a store from schema `from` to [`CURRENT`] inside `txn`.
pub(crate) fn run(txn: &WriteTransaction, from: u32) -> Result<(), StoreError> {
    if from > CURRENT {
        return Err(StoreError::UnsupportedSchema {
            found: from,
            supported: CURRENT,
        });
    }
    let steps: [Step; 2] = [step_1, step_2];
    for (i, step) in steps.iter().enumerate() {
        let number = i as u32 + 1;
        if number > from {
            step(txn).map_err(|source| StoreError::Db {
                op: "migrate",
                source,
            })?;
        }
    }
    Ok(())
}
