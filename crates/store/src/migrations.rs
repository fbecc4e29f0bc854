//! Numbered schema steps. A store records the schema it was written with in
//! `meta-1/schema`; opening runs every step above it, in one transaction.

use fieldsync_case::Genesis;
use fieldsync_identity::decode_signed;
use redb::{ReadableTable, TableHandle, WriteTransaction};

use crate::error::StoreError;
use crate::rows::{CaseRow, decode};
use crate::seal::Seal;
use crate::tables::{
    ACKS, AUDIT, CASES, CHANGES, CURSORS, CUSTODY, DEVICES, EQUIVOCATIONS, LOG, META, ORIGINS,
    PENDING, QUARANTINE, READS, RECEIPTS, RELEASES, SEQS, SNAPSHOTS,
};

/// One schema step.
type Step = fn(&WriteTransaction, &dyn Seal) -> Result<(), StoreError>;

/// The schema this build writes.
pub(crate) const CURRENT: u32 = 5;

/// Step 1: create every table.
fn step_1(txn: &WriteTransaction, _: &dyn Seal) -> Result<(), StoreError> {
    step_1_tables(txn).map_err(|source| StoreError::Db {
        op: "migrate",
        source,
    })
}

fn step_1_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
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
fn step_2(txn: &WriteTransaction, _: &dyn Seal) -> Result<(), StoreError> {
    txn.open_table(RELEASES)
        .map_err(|e| StoreError::db("migrate")(e.into()))?;
    Ok(())
}

/// Step 3: the per-compartment index of the log, filled from the log.
fn step_3(txn: &WriteTransaction, seal: &dyn Seal) -> Result<(), StoreError> {
    let e = |e: redb::Error| StoreError::db("migrate")(e);
    let mut reads = txn.open_table(READS).map_err(|x| e(x.into()))?;
    let log = txn.open_table(LOG).map_err(|x| e(x.into()))?;
    let cases = txn.open_table(CASES).map_err(|x| e(x.into()))?;
    let mut compartments = std::collections::HashMap::new();
    for entry in log.iter().map_err(|x| e(x.into()))? {
        let (k, v) = entry.map_err(|x| e(x.into()))?;
        let seq = k.value();
        let env = seal.open(LOG.name(), &seq.to_be_bytes(), v.value())?;
        let case = env
            .get(1..17)
            .ok_or_else(|| StoreError::corrupt(format!("log entry {seq}: bad envelope")))?;
        let key: [u8; 16] = case
            .try_into()
            .map_err(|_| StoreError::corrupt(format!("log entry {seq}: bad envelope")))?;
        let key = seal.case_key(&fieldsync_identity::CaseId::from_bytes(key));
        let ckey = match compartments.get(&key) {
            Some(c) => *c,
            None => {
                let row = cases
                    .get(key.as_slice())
                    .map_err(|x| e(x.into()))?
                    .ok_or_else(|| StoreError::corrupt(format!("log entry {seq}: no case row")))?;
                let plain = seal.open(CASES.name(), &key, row.value())?;
                let row: CaseRow = decode(&plain, "case row")?;
                let c = seal.compartment_key(&compartment_of(&row.genesis)?);
                compartments.insert(key, c);
                c
            }
        };
        reads
            .insert((ckey.as_slice(), seq), ())
            .map_err(|x| e(x.into()))?;
    }
    Ok(())
}

/// The compartment a signed genesis names.
pub(crate) fn compartment_of(genesis: &[u8]) -> Result<String, StoreError> {
    decode_signed::<Genesis>(genesis)
        .map(|g| g.payload().value().compartment.clone())
        .map_err(|e| StoreError::corrupt(format!("stored genesis: {e}")))
}

/// Step 4: the custody checkpoints of relays (empty: custody starts with
/// the next ingest).
fn step_4(txn: &WriteTransaction, _: &dyn Seal) -> Result<(), StoreError> {
    txn.open_table(CUSTODY)
        .map_err(|e| StoreError::db("migrate")(e.into()))?;
    Ok(())
}

/// Step 5: the equivocation index (`seqs-1`), filled from the log, and the
/// table of equivocations found (`equivocations-1`, empty). Every change of
/// the log is parsed once (about 22 µs each). A log that already holds two
/// changes under one actor and number (stored before this index existed)
/// keeps them; the second is noted in the tracing log, and the next change
/// that equivocates against either is held.
fn step_5(txn: &WriteTransaction, seal: &dyn Seal) -> Result<(), StoreError> {
    let e = |e: redb::Error| StoreError::db("migrate")(e);
    txn.open_table(EQUIVOCATIONS).map_err(|x| e(x.into()))?;
    let mut seqs = txn.open_table(SEQS).map_err(|x| e(x.into()))?;
    let log = txn.open_table(LOG).map_err(|x| e(x.into()))?;
    for entry in log.iter().map_err(|x| e(x.into()))? {
        let (k, v) = entry.map_err(|x| e(x.into()))?;
        let seq = k.value();
        let env = seal.open(LOG.name(), &seq.to_be_bytes(), v.value())?;
        if crate::withdraw::is_tombstone(&env) {
            continue;
        }
        let change = fieldsync_case::decode_change(&env)
            .map_err(|x| StoreError::corrupt(format!("log entry {seq}: {x}")))?;
        let p = change.payload();
        let mut first = seal.case_key(&p.case()).to_vec();
        first.extend_from_slice(p.change().actor_id().to_bytes());
        let held = seqs
            .get((first.as_slice(), p.seq()))
            .map_err(|x| e(x.into()))?
            .map(|v| v.value().to_vec());
        match held {
            None => {
                seqs.insert((first.as_slice(), p.seq()), p.hash().0.as_slice())
                    .map_err(|x| e(x.into()))?;
            }
            Some(h) if h != p.hash().0 => {
                tracing::warn!(
                    log_entry = seq,
                    "the log holds two changes under one actor and sequence number"
                );
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Brings a store from schema `from` to [`CURRENT`] inside `txn`.
pub(crate) fn run(txn: &WriteTransaction, from: u32, seal: &dyn Seal) -> Result<(), StoreError> {
    if from > CURRENT {
        return Err(StoreError::UnsupportedSchema {
            found: from,
            supported: CURRENT,
        });
    }
    let steps: [Step; 5] = [step_1, step_2, step_3, step_4, step_5];
    for (i, step) in steps.iter().enumerate() {
        let number = i as u32 + 1;
        if number > from {
            step(txn, seal)?;
        }
    }
    Ok(())
}
