//! What the sync engine reads: this node's log for a peer, peers' cursors,
//! and per-case heads and changes for repair.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use fieldsync_case::{CHANGE_ENVELOPE_V1, CHANGE_HEADER_LEN, ChangeHash, Genesis};
use fieldsync_identity::{CaseId, DeviceId, decode_signed};
use redb::{ReadableTable, ReadableTableMetadata, TableHandle, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::cases::{case_seqs, genesis_of};
use crate::error::StoreError;
use crate::rows::{CaseRow, decode, encode};
use crate::store::Store;
use crate::tables::{CASES, CHANGES, CURSORS, LOG, ORIGINS, PENDING, READS};

/// Most log entries [`Store::read_log`] examines in one call, readable or
/// not, so that a peer allowed to read little of a large log cannot make one
/// call scan all of it.
pub const READ_LOG_SCAN_LIMIT: usize = 65_536;

/// Where a range of this node's log came from.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin {
    /// Last log position of the range.
    pub(crate) last: u64,
    /// The peer it was stored from (its key bytes: compared, never parsed).
    pub(crate) peer: [u8; 32],
    /// That peer's log epoch.
    pub(crate) epoch: [u8; 16],
}

/// A position in some node's log: the log's epoch (16 random bytes chosen
/// when that node's store was created) and a sequence number in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cursor {
    /// The log's epoch: a new epoch means a new log (restored or wiped node).
    pub epoch: [u8; 16],
    /// The last sequence number covered.
    pub seq: u64,
}

/// One change of this node's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Its log position.
    pub seq: u64,
    /// Its case.
    pub case: CaseId,
    /// The signed change envelope, exactly as stored.
    pub envelope: Vec<u8>,
}

/// A batch of this node's log, for a peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogBatch {
    /// The readable entries, in log order.
    pub entries: Vec<LogEntry>,
    /// The signed genesis bytes of every case with an entry in this batch,
    /// in order of first appearance.
    pub geneses: Vec<(CaseId, Vec<u8>)>,
    /// The position to resume after: the last position examined, including
    /// skipped unreadable entries (`after` when nothing was examined).
    pub next: u64,
    /// Whether `next` is the end of the log (when read).
    pub at_end: bool,
}

/// A case's current heads, for repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseHeads {
    /// The case.
    pub case: CaseId,
    /// Its compartment, as its genesis names it.
    pub compartment: String,
    /// Its signed genesis bytes.
    pub genesis: Vec<u8>,
    /// Its heads, sorted.
    pub heads: Vec<ChangeHash>,
}

/// The case an envelope is signed for, read from its header alone.
fn envelope_case(env: &[u8]) -> Option<CaseId> {
    if env.len() < CHANGE_HEADER_LEN || env[0] != CHANGE_ENVELOPE_V1 {
        return None;
    }
    let mut case = [0u8; 16];
    case.copy_from_slice(&env[1..17]);
    Some(CaseId::from_bytes(case))
}

/// What [`Filler::offer`] did with a log entry.
enum Offer {
    /// It is in the batch (with its case's genesis when the peer lacks it).
    Added,
    /// Its case is not one the peer may read.
    Unreadable,
    /// The position was withdrawn (a tombstone): there is nothing to send.
    Withdrawn,
    /// The batch is full; the entry waits for the next one.
    Full,
}

/// Fills a [`LogBatch`] for a peer, entry by entry, within a byte budget.
struct Filler {
    /// Per case: its genesis bytes when readable, and whether the batch carries it yet.
    seen: HashMap<CaseId, Option<(Vec<u8>, bool)>>,
    bytes: usize,
    peer_holds: u64,
    max_bytes: usize,
}

impl Filler {
    fn new(peer_holds: u64, max_bytes: usize) -> Self {
        Self {
            seen: HashMap::new(),
            bytes: 0,
            peer_holds,
            max_bytes,
        }
    }

    /// Offers log entry `seq` (its sealed value) to `batch`.
    fn offer(
        &mut self,
        store: &Store,
        cases: &impl ReadableTable<&'static [u8], &'static [u8]>,
        batch: &mut LogBatch,
        seq: u64,
        sealed: &[u8],
        readable: &impl Fn(&Genesis) -> bool,
    ) -> Result<Offer, StoreError> {
        let envelope = store.seal.open(LOG.name(), &seq.to_be_bytes(), sealed)?;
        if crate::withdraw::is_tombstone(&envelope) {
            return Ok(Offer::Withdrawn);
        }
        let case = envelope_case(&envelope)
            .ok_or_else(|| StoreError::corrupt(format!("log entry {seq}: bad envelope")))?;
        let peer_holds = self.peer_holds;
        let state = match self.seen.entry(case) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => v.insert(
                store
                    .readable_genesis(cases, &case, readable)?
                    .map(|(g, first)| (g, first <= peer_holds)),
            ),
        };
        let Some((genesis, carried)) = state else {
            return Ok(Offer::Unreadable);
        };
        let cost = envelope.len() + if *carried { 0 } else { genesis.len() };
        if !batch.entries.is_empty() && self.bytes.saturating_add(cost) > self.max_bytes {
            return Ok(Offer::Full);
        }
        if !*carried {
            *carried = true;
            batch.geneses.push((case, genesis.clone()));
        }
        self.bytes = self.bytes.saturating_add(cost);
        batch.entries.push(LogEntry {
            seq,
            case,
            envelope,
        });
        Ok(Offer::Added)
    }
}

fn dbe(op: &'static str) -> impl Fn(redb::StorageError) -> StoreError {
    move |e| StoreError::db(op)(e.into())
}

fn tbe(op: &'static str) -> impl Fn(redb::TableError) -> StoreError {
    move |e| StoreError::db(op)(e.into())
}

impl Store {
    /// The last position of this node's log (0 when it is empty).
    pub fn log_head(&self) -> Result<u64, StoreError> {
        let txn = self.read()?;
        let log = txn.open_table(LOG).map_err(tbe("log head"))?;
        Ok(log
            .last()
            .map_err(dbe("log head"))?
            .map(|(k, _)| k.value())
            .unwrap_or(0))
    }

    /// Reads this node's log after position `after`, for a peer: the entries
    /// of cases whose genesis is `readable` (asked once per case), with those
    /// cases' geneses. Unreadable entries are skipped but advance `next`.
    ///
    /// Stops after `max_changes` entries, or before an entry that would take
    /// the batch over `max_bytes` (counting envelopes and the geneses the
    /// batch carries), but always returns at least one entry if one is
    /// readable; and stops after examining [`READ_LOG_SCAN_LIMIT`] entries,
    /// so `entries` may be empty while `at_end` is false: call again from
    /// `next`. Only envelope headers are read: no change is parsed and no
    /// document loaded.
    pub fn read_log(
        &self,
        after: u64,
        max_changes: usize,
        max_bytes: usize,
        readable: impl Fn(&Genesis) -> bool,
    ) -> Result<LogBatch, StoreError> {
        self.read_log_for_peer(after, 0, None, max_changes, max_bytes, readable)
    }

    /// Like [`Store::read_log`], for a peer known to hold this log through
    /// `peer_holds`: the genesis of a case whose first change here is at or
    /// before that position is not carried (the peer stored it with that change).
    ///
    /// With `from_peer` (the peer and its log epoch), entries stored from
    /// that peer's log are skipped too: it holds them already.
    pub fn read_log_for_peer(
        &self,
        after: u64,
        peer_holds: u64,
        from_peer: Option<(&DeviceId, [u8; 16])>,
        max_changes: usize,
        max_bytes: usize,
        readable: impl Fn(&Genesis) -> bool,
    ) -> Result<LogBatch, StoreError> {
        let skip = match from_peer {
            Some((peer, epoch)) => self.origin_ranges(after, peer, epoch)?,
            None => Vec::new(),
        };
        let mut skip = skip.into_iter().peekable();
        let txn = self.read()?;
        let log = txn.open_table(LOG).map_err(tbe("read log"))?;
        let cases = txn.open_table(CASES).map_err(tbe("read log"))?;
        let last = log
            .last()
            .map_err(dbe("read log"))?
            .map(|(k, _)| k.value())
            .unwrap_or(0);
        let mut batch = LogBatch {
            next: after,
            ..LogBatch::default()
        };
        let Some(first) = after.checked_add(1) else {
            batch.at_end = true;
            return Ok(batch);
        };
        let mut filler = Filler::new(peer_holds, max_bytes);
        let mut examined = 0usize;
        for entry in log.range(first..).map_err(dbe("read log"))? {
            if batch.entries.len() >= max_changes || examined >= READ_LOG_SCAN_LIMIT {
                break;
            }
            let (k, v) = entry.map_err(dbe("read log"))?;
            let seq = k.value();
            while skip.peek().is_some_and(|&(_, last)| last < seq) {
                skip.next();
            }
            if skip.peek().is_some_and(|&(first, _)| first <= seq) {
                examined += 1;
                batch.next = seq;
                continue;
            }
            match filler.offer(self, &cases, &mut batch, seq, v.value(), &readable)? {
                Offer::Added | Offer::Unreadable | Offer::Withdrawn => {
                    examined += 1;
                    batch.next = seq;
                }
                Offer::Full => break,
            }
        }
        batch.at_end = batch.next >= last;
        Ok(batch)
    }

    /// Like [`Store::read_log_for_peer`], for a peer that may read the cases
    /// of `compartments`: only their entries are read (through the
    /// `reads-1` index), so the cost follows what the peer may read, not
    /// the size of the log. `next` covers everything else in between.
    pub fn read_log_for_reader(
        &self,
        after: u64,
        peer_holds: u64,
        from_peer: Option<(&DeviceId, [u8; 16])>,
        compartments: &[&str],
        max_changes: usize,
        max_bytes: usize,
    ) -> Result<LogBatch, StoreError> {
        let max_changes = max_changes.max(1);
        let skip = match from_peer {
            Some((peer, epoch)) => self.origin_ranges(after, peer, epoch)?,
            None => Vec::new(),
        };
        let mut skip = skip.into_iter().peekable();
        let txn = self.read()?;
        let log = txn.open_table(LOG).map_err(tbe("read log"))?;
        let cases = txn.open_table(CASES).map_err(tbe("read log"))?;
        let reads = txn.open_table(READS).map_err(tbe("read log"))?;
        let last = log
            .last()
            .map_err(dbe("read log"))?
            .map(|(k, _)| k.value())
            .unwrap_or(0);
        let mut batch = LogBatch {
            next: after,
            ..LogBatch::default()
        };
        let Some(first) = after.checked_add(1) else {
            batch.at_end = true;
            return Ok(batch);
        };
        // The first `max_changes` entries of each compartment after `after`;
        // where one had more, nothing past its last collected entry is
        // complete, so the batch stops there (`bound`).
        let mut seqs = Vec::new();
        let mut bound = last;
        let mut keys: Vec<[u8; 16]> = compartments
            .iter()
            .map(|c| self.seal.compartment_key(c))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        for key in &keys {
            let mut last_taken = after;
            for (taken, entry) in reads
                .range((key.as_slice(), first)..=(key.as_slice(), u64::MAX))
                .map_err(dbe("read log"))?
                .enumerate()
            {
                let (k, _) = entry.map_err(dbe("read log"))?;
                let seq = k.value().1;
                if taken == max_changes {
                    bound = bound.min(last_taken);
                    break;
                }
                seqs.push(seq);
                last_taken = seq;
            }
        }
        seqs.retain(|&s| s <= bound);
        seqs.sort_unstable();
        seqs.dedup();
        let mut filler = Filler::new(peer_holds, max_bytes);
        let mut cut = false;
        for seq in seqs {
            if batch.entries.len() >= max_changes {
                cut = true;
                break;
            }
            while skip.peek().is_some_and(|&(_, last)| last < seq) {
                skip.next();
            }
            if skip.peek().is_some_and(|&(first, _)| first <= seq) {
                batch.next = seq;
                continue;
            }
            let Some(v) = log.get(seq).map_err(dbe("read log"))? else {
                return Err(StoreError::corrupt(format!(
                    "the compartment index names log entry {seq}, which does not exist"
                )));
            };
            match filler.offer(self, &cases, &mut batch, seq, v.value(), &|_: &Genesis| {
                true
            })? {
                // A withdrawal takes its position out of the index; a
                // tombstone met anyway is skipped like any other gap.
                Offer::Added | Offer::Withdrawn => batch.next = seq,
                Offer::Unreadable => {
                    return Err(StoreError::corrupt(format!(
                        "log entry {seq} belongs to a case with no row"
                    )));
                }
                Offer::Full => {
                    cut = true;
                    break;
                }
            }
        }
        if !cut {
            batch.next = batch.next.max(bound);
        }
        batch.at_end = batch.next >= last;
        Ok(batch)
    }

    /// A case's signed genesis bytes if `readable` accepts its genesis.
    fn readable_genesis(
        &self,
        cases: &impl ReadableTable<&'static [u8], &'static [u8]>,
        case: &CaseId,
        readable: &impl Fn(&Genesis) -> bool,
    ) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        let row = self
            .read_row(cases, &self.seal.case_key(case))?
            .ok_or_else(|| StoreError::corrupt(format!("case {case} has changes but no row")))?;
        let signed = decode_signed::<Genesis>(&row.genesis)
            .map_err(|e| StoreError::corrupt(format!("case {case} genesis: {e}")))?;
        Ok(readable(signed.payload().value()).then_some((row.genesis, row.first_seq)))
    }

    /// The log's last position, inside a write transaction.
    pub(crate) fn log_head_in(&self, txn: &WriteTransaction) -> Result<u64, StoreError> {
        let log = txn.open_table(LOG).map_err(tbe("log head"))?;
        Ok(log
            .last()
            .map_err(dbe("log head"))?
            .map(|(k, _)| k.value())
            .unwrap_or(0))
    }

    /// Records that log positions `first..=last` came from `peer`'s log.
    pub(crate) fn write_origin_in(
        &self,
        txn: &WriteTransaction,
        first: u64,
        last: u64,
        peer: &DeviceId,
        epoch: [u8; 16],
    ) -> Result<(), StoreError> {
        let mut table = txn.open_table(ORIGINS).map_err(tbe("write origin"))?;
        let origin = Origin {
            last,
            peer: *peer.as_bytes(),
            epoch,
        };
        table
            .insert(
                first,
                self.seal
                    .seal(ORIGINS.name(), &first.to_be_bytes(), &encode(&origin)?)
                    .as_slice(),
            )
            .map_err(dbe("write origin"))?;
        Ok(())
    }

    /// Log ranges after `after` that were stored from `peer`'s log at `epoch`, in order.
    fn origin_ranges(
        &self,
        after: u64,
        peer: &DeviceId,
        epoch: [u8; 16],
    ) -> Result<Vec<(u64, u64)>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(ORIGINS).map_err(tbe("read origins"))?;
        // One ingest stores a batch plus what it releases from pending, so a
        // range that reaches past `after` starts at most this far before it.
        let reach = (crate::ingest::MAX_PENDING_CHANGES + 4096) as u64;
        let mut out = Vec::new();
        for entry in table
            .range(after.saturating_sub(reach)..)
            .map_err(dbe("read origins"))?
        {
            let (k, v) = entry.map_err(dbe("read origins"))?;
            let first = k.value();
            let plain = self
                .seal
                .open(ORIGINS.name(), &first.to_be_bytes(), v.value())?;
            let o: Origin = decode(&plain, "origin")?;
            if o.last > after && o.peer == *peer.as_bytes() && o.epoch == epoch {
                out.push((first, o.last));
            }
        }
        Ok(out)
    }

    /// A case's signed genesis bytes, if this node holds the case.
    ///
    /// A case whose changes are all in quarantine or pending has no row; its
    /// genesis is found with them (a peer that sent the genesis once does not
    /// send it again).
    pub fn case_genesis(&self, case: &CaseId) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.seal.case_key(case);
        let txn = self.read()?;
        let cases = txn.open_table(CASES).map_err(tbe("read case"))?;
        if let Some(row) = self.read_row(&cases, &key)? {
            return Ok(Some(row.genesis));
        }
        let pending = txn.open_table(PENDING).map_err(tbe("read pending"))?;
        let lo: &[u8] = &[0u8; 32];
        let hi: &[u8] = &[0xffu8; 32];
        if let Some(entry) = pending
            .range((key.as_slice(), lo)..=(key.as_slice(), hi))
            .map_err(dbe("read pending"))?
            .next()
        {
            let (k, v) = entry.map_err(dbe("read pending"))?;
            let (ck, hash) = k.value();
            let mut id = Vec::with_capacity(48);
            id.extend_from_slice(ck);
            id.extend_from_slice(hash);
            let plain = self.seal.open(PENDING.name(), &id, v.value())?;
            let row: crate::rows::PendingRow = decode(&plain, "pending change")?;
            return Ok(Some(row.genesis));
        }
        drop((cases, pending, txn));
        Ok(self
            .quarantine()?
            .into_iter()
            .rev()
            .find(|(_, q)| q.case == *case)
            .map(|(_, q)| q.genesis))
    }

    /// How far this node has ingested `peer`'s log, if it ever did.
    pub fn peer_cursor(&self, peer: &DeviceId) -> Result<Option<Cursor>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(CURSORS).map_err(tbe("read cursor"))?;
        match table
            .get(peer.as_bytes().as_slice())
            .map_err(dbe("read cursor"))?
        {
            Some(v) => {
                let plain = self.seal.open(CURSORS.name(), peer.as_bytes(), v.value())?;
                Ok(Some(decode(&plain, "cursor")?))
            }
            None => Ok(None),
        }
    }

    /// Writes `peer`'s cursor inside `txn`; returns the one it replaced.
    pub(crate) fn write_cursor_in(
        &self,
        txn: &WriteTransaction,
        peer: &DeviceId,
        cursor: &Cursor,
    ) -> Result<Option<Cursor>, StoreError> {
        let mut table = txn.open_table(CURSORS).map_err(tbe("write cursor"))?;
        let sealed = self
            .seal
            .seal(CURSORS.name(), peer.as_bytes(), &encode(cursor)?);
        let old = table
            .insert(peer.as_bytes().as_slice(), sealed.as_slice())
            .map_err(dbe("write cursor"))?;
        match old {
            Some(v) => {
                let plain = self.seal.open(CURSORS.name(), peer.as_bytes(), v.value())?;
                Ok(Some(decode(&plain, "cursor")?))
            }
            None => Ok(None),
        }
    }

    /// Every case with its genesis and current heads, sorted by case (from
    /// the case rows alone: no document is loaded).
    pub fn case_heads(&self) -> Result<Vec<CaseHeads>, StoreError> {
        let txn = self.read()?;
        let cases = txn.open_table(CASES).map_err(tbe("case heads"))?;
        let mut out = Vec::with_capacity(usize::try_from(cases.len().unwrap_or(0)).unwrap_or(0));
        for entry in cases.iter().map_err(dbe("case heads"))? {
            let (k, v) = entry.map_err(dbe("case heads"))?;
            let plain = self.seal.open(CASES.name(), k.value(), v.value())?;
            let row: CaseRow = decode(&plain, "case row")?;
            let key: [u8; 16] = k
                .value()
                .try_into()
                .map_err(|_| StoreError::corrupt("a case key is not 16 bytes"))?;
            let (case, compartment) = self.case_meta(&key, &row)?;
            out.push(CaseHeads {
                case,
                compartment: compartment.to_string(),
                heads: row.heads.iter().copied().map(ChangeHash).collect(),
                genesis: row.genesis,
            });
        }
        out.sort_by_key(|h| h.case);
        Ok(out)
    }

    /// A case's id and compartment, from the cache or its genesis.
    pub(crate) fn case_meta(
        &self,
        key: &[u8; 16],
        row: &CaseRow,
    ) -> Result<crate::store::CaseMeta, StoreError> {
        if let Some(hit) = self.case_meta.lock().ok().and_then(|m| m.get(key).cloned()) {
            return Ok(hit);
        }
        let g = genesis_of(row)?;
        let meta = (
            g.value().case,
            std::sync::Arc::from(g.value().compartment.as_str()),
        );
        if let Ok(mut m) = self.case_meta.lock() {
            m.insert(*key, meta.clone());
        }
        Ok(meta)
    }

    /// Every stored change envelope of a case, in log order (which is
    /// causal). Empty for a case this node does not hold.
    pub fn case_envelopes(&self, case: &CaseId) -> Result<Vec<Vec<u8>>, StoreError> {
        let key = self.seal.case_key(case);
        let txn = self.read()?;
        let index = txn.open_table(CHANGES).map_err(tbe("case envelopes"))?;
        let log = txn.open_table(LOG).map_err(tbe("case envelopes"))?;
        case_seqs(&index, &key, 0)?
            .into_iter()
            .map(|seq| self.read_log_bytes(&log, seq))
            .collect()
    }

    /// Whether a change of `case` is stored in the log (a change held in
    /// pending is not).
    pub fn has_change(&self, case: &CaseId, hash: &ChangeHash) -> Result<bool, StoreError> {
        let key = self.seal.case_key(case);
        let txn = self.read()?;
        let index = txn.open_table(CHANGES).map_err(tbe("look up a change"))?;
        self.is_stored(&index, &key, hash)
    }
}
