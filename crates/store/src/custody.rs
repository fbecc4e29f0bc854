//! Custody: which part of a peer's log this relay has placed where in its
//! own log, so that when a relay further up acknowledges this relay's log,
//! this relay can tell the peer how much of *its* log is now held up there
//! ("safe at headquarters", carried down by the office that forwarded it).
//!
//! Each ingest from a peer that leaves nothing pending adds a checkpoint
//! `(peer, epoch, log head) → peer position`: every change of the peer's log
//! through that position that this node stored is in its log at or before
//! that head. A change held in the quarantine is not in the log and never
//! travels on; a change held pending (its dependencies missing) would enter
//! the log later, so while any change is pending no checkpoint is written.
//! Checkpoints grow monotonically in both positions for one peer log. A
//! change from the peer put in the quarantine stays here (the quarantine
//! never travels): from then on the peer's log is covered at most up to
//! where that batch started (its ceiling), so that "safe at headquarters"
//! is never said of a change headquarters does not have.

use fieldsync_identity::DeviceId;
use redb::{ReadableTable, TableHandle, WriteTransaction};

use crate::error::StoreError;
use crate::rows::decode;
use crate::store::{Store, StoreKind, fixed, read_meta};
use crate::tables::{CUSTODY, META};

/// Length of a custody key prefix: the peer's device id and its log epoch.
const PREFIX_LEN: usize = 32 + 16;

fn prefix(peer: &DeviceId, epoch: &[u8; 16]) -> [u8; PREFIX_LEN] {
    let mut k = [0u8; PREFIX_LEN];
    k[..32].copy_from_slice(peer.as_bytes());
    k[32..].copy_from_slice(epoch);
    k
}

/// The key of a peer log's ceiling: its prefix and one more byte, so that
/// it sorts apart from the checkpoints (whose keys are the bare prefix).
fn ceiling_key(prefix: &[u8; PREFIX_LEN]) -> [u8; PREFIX_LEN + 1] {
    let mut k = [b'q'; PREFIX_LEN + 1];
    k[..PREFIX_LEN].copy_from_slice(prefix);
    k
}

/// The key bytes a `custody-1` value is sealed under.
fn seal_key(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 8);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn dbe(op: &'static str) -> impl Fn(redb::StorageError) -> StoreError {
    move |e| StoreError::db(op)(e.into())
}

fn tbe(op: &'static str) -> impl Fn(redb::TableError) -> StoreError {
    move |e| StoreError::db(op)(e.into())
}

/// Whether any change waits in `pending-1` (from the running totals).
fn anything_pending(txn: &WriteTransaction, store: &Store) -> Result<bool, StoreError> {
    let meta = txn.open_table(META).map_err(tbe("custody"))?;
    match read_meta(&meta, store.seal.as_ref(), "pending")? {
        Some(v) => Ok(decode::<(u64, u64)>(&v, "pending totals")?.0 != 0),
        None => Ok(false),
    }
}

impl Store {
    /// Records, inside an ingest from `peer` that brought its log (epoch
    /// `epoch`) from position `batch.start()` to `batch.end()` and this
    /// node's log to `head`, that the peer's log through `batch.end()` is
    /// placed at or before `head`, unless something is pending. When the
    /// batch put something in the quarantine (it stays here and never
    /// travels on), the peer's log is covered through `batch.start()` at
    /// most, from now on. Only relays keep custody.
    pub(crate) fn write_custody_in(
        &self,
        txn: &WriteTransaction,
        peer: &DeviceId,
        epoch: [u8; 16],
        batch: std::ops::RangeInclusive<u64>,
        head: u64,
        quarantined: bool,
    ) -> Result<(), StoreError> {
        if self.kind() != StoreKind::Relay {
            return Ok(());
        }
        let p = prefix(peer, &epoch);
        let c = ceiling_key(&p);
        let mut table = txn.open_table(CUSTODY).map_err(tbe("custody"))?;
        if quarantined {
            let old = self.read_position(&table, &c, 0)?;
            let ceiling = old.map_or(*batch.start(), |o| o.min(*batch.start()));
            let sealed = self
                .seal
                .seal(CUSTODY.name(), &seal_key(&c, 0), &ceiling.to_le_bytes());
            table
                .insert((c.as_slice(), 0), sealed.as_slice())
                .map_err(dbe("custody"))?;
        }
        drop(table);
        if anything_pending(txn, self)? {
            return Ok(());
        }
        let mut table = txn.open_table(CUSTODY).map_err(tbe("custody"))?;
        let sealed = self.seal.seal(
            CUSTODY.name(),
            &seal_key(&p, head),
            &batch.end().to_le_bytes(),
        );
        table
            .insert((p.as_slice(), head), sealed.as_slice())
            .map_err(dbe("custody"))?;
        Ok(())
    }

    fn read_position(
        &self,
        table: &impl ReadableTable<(&'static [u8], u64), &'static [u8]>,
        key: &[u8],
        seq: u64,
    ) -> Result<Option<u64>, StoreError> {
        match table.get((key, seq)).map_err(dbe("read custody"))? {
            Some(v) => {
                let plain = self
                    .seal
                    .open(CUSTODY.name(), &seal_key(key, seq), v.value())?;
                Ok(Some(u64::from_le_bytes(fixed(&plain, "custody position")?)))
            }
            None => Ok(None),
        }
    }

    /// How far `peer`'s log (epoch `epoch`) is covered by this node's log
    /// through position `upto`: every change of the peer's log through the
    /// returned position is in this node's log at or before `upto`.
    /// `None` when no checkpoint lies at or before `upto`.
    pub fn custody_through(
        &self,
        peer: &DeviceId,
        epoch: [u8; 16],
        upto: u64,
    ) -> Result<Option<u64>, StoreError> {
        let p = prefix(peer, &epoch);
        let txn = self.read()?;
        let table = txn.open_table(CUSTODY).map_err(tbe("read custody"))?;
        let last = table
            .range((p.as_slice(), 0)..=(p.as_slice(), upto))
            .map_err(dbe("read custody"))?
            .next_back()
            .transpose()
            .map_err(dbe("read custody"))?;
        let Some((k, _)) = last else {
            return Ok(None);
        };
        let through = self.read_position(&table, &p, k.value().1)?;
        let ceiling = self.read_position(&table, &ceiling_key(&p), 0)?;
        Ok(match (through, ceiling) {
            (Some(t), Some(c)) => Some(t.min(c)),
            (t, _) => t,
        })
    }

    /// Drops checkpoints made useless by an acknowledgement through `upto`
    /// of this node's log: for each peer log, all but the last at or before
    /// `upto` (a relay acknowledging less later only finds an earlier,
    /// smaller coverage: never a wrong one).
    pub(crate) fn prune_custody_in(
        &self,
        txn: &WriteTransaction,
        upto: u64,
    ) -> Result<(), StoreError> {
        let mut table = txn.open_table(CUSTODY).map_err(tbe("prune custody"))?;
        let mut doomed: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut last: Option<(Vec<u8>, u64)> = None;
        for entry in table.iter().map_err(dbe("prune custody"))? {
            let (k, _) = entry.map_err(dbe("prune custody"))?;
            let (p, seq) = k.value();
            if seq > upto || p.len() != PREFIX_LEN {
                continue;
            }
            if let Some((lp, ls)) = last.take()
                && lp == p
            {
                doomed.push((lp, ls));
            }
            last = Some((p.to_vec(), seq));
        }
        for (p, seq) in doomed {
            table
                .remove((p.as_slice(), seq))
                .map_err(dbe("prune custody"))?;
        }
        Ok(())
    }
}
