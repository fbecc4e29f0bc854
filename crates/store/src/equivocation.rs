//! Equivocation: a device that signs two different changes as the same
//! change (one case, one Automerge actor, one sequence number).
//!
//! An honest device never does: its actor's sequence numbers count its
//! changes to a case, one by one. Two changes under one number cannot both
//! stand (Automerge refuses the second, so a relay that stored both could
//! never show the case), and which one is "the" change is the device's
//! word against itself. So both are held: every change found to equivocate
//! goes to the quarantine with the reason, and so does every change that
//! depends on one. When the first of the two is already stored, it is
//! *withdrawn* (its log position keeps a tombstone, as a withdrawal after a
//! revocation does: see `withdraw.rs`) with the stored changes that depend
//! on it, and its case is rebuilt from what remains, except that a node
//! never withdraws its own changes, nor what they depend on. The device is
//! flagged: an audit entry, and [`Store::equivocations`] lists every
//! equivocation found for headquarters. A supervisor may release one of
//! the two (a released change is stored whatever its number).
//!
//! Detection rests on `seqs-1`, (case key ‖ actor, sequence number) →
//! hash, written with every log append; `equivocations-1` remembers the
//! changes found and those held as their dependents, so that a copy
//! arriving again from another peer, and later changes that depend on one,
//! are held too.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use fieldsync_case::{ChangeHash, SignedChange, decode_change};
use fieldsync_identity::{ActorBinding, CaseId, DeviceId, Timestamp};
use redb::{ReadableTable, Table, TableHandle, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, AuditKind, QuarantineEntry};
use crate::cases::{WriteTables, case_seqs};
use crate::error::StoreError;
use crate::rows::{decode, encode};
use crate::store::Store;
use crate::tables::{EQUIVOCATIONS, LOG};

/// `equivocations-1` value: a change found to equivocate.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct EquivocationRow {
    /// Its case.
    pub(crate) case: CaseId,
    /// The device that signed it.
    pub(crate) device: DeviceId,
    /// The device's incarnation (part of the actor).
    pub(crate) incarnation: u32,
    /// The sequence number it shares with another change.
    pub(crate) seq: u64,
    /// When this node found it.
    pub(crate) at: Timestamp,
    /// `None` for a change that equivocates; for a change held because it
    /// depends on one, that change.
    pub(crate) depends_on: Option<ChangeHash>,
}

/// Two (or more) different changes signed by one device as the same change
/// of a case: what headquarters sees of an equivocating device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Equivocation {
    /// The case.
    pub case: CaseId,
    /// The device that signed them.
    pub device: DeviceId,
    /// Its incarnation.
    pub incarnation: u32,
    /// The sequence number they share.
    pub seq: u64,
    /// The changes, by hash: each held in the quarantine unless released.
    pub changes: Vec<ChangeHash>,
    /// Changes held because they depend on one of them (any device's).
    pub dependents: usize,
    /// When this node first found one of them.
    pub since: Timestamp,
}

/// The quarantine reason of a change that equivocates.
pub fn equivocation_reason(device: &DeviceId, seq: u64, case: &CaseId) -> String {
    format!(
        "equivocation: device {} signed different changes as its change {seq} to case {}; all of them are held",
        device.short(),
        case.short()
    )
}

/// The quarantine reason of a change that depends on `root`, an equivocating change.
pub fn equivocation_dependent_reason(root: &ChangeHash, device: &DeviceId) -> String {
    format!(
        "depends on change {}, which device {} signed in equivocation",
        root.short(),
        device.short()
    )
}

/// The incarnation of a change's actor and its sequence number.
pub(crate) fn actor_seq(change: &SignedChange) -> (u32, u64) {
    let p = change.payload();
    (p.actor().map_or(0, |a| a.incarnation), p.seq())
}

/// The `equivocations-1` row of a change held because it depends on `root`.
pub(crate) fn dependent_row(
    key: &[u8; 16],
    case: &CaseId,
    hash: &ChangeHash,
    device: DeviceId,
    (incarnation, seq): (u32, u64),
    root: &ChangeHash,
    at: Timestamp,
) -> ([u8; 16], ChangeHash, EquivocationRow) {
    (
        *key,
        *hash,
        EquivocationRow {
            case: *case,
            device,
            incarnation,
            seq,
            at,
            depends_on: Some(*root),
        },
    )
}

/// The first part of a `seqs-1` key: case key ‖ actor.
fn seq_key(key: &[u8; 16], actor: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + actor.len());
    k.extend_from_slice(key);
    k.extend_from_slice(actor);
    k
}

/// The key bytes an `equivocations-1` value is sealed under.
fn row_seal_key(key: &[u8; 16], hash: &ChangeHash) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..16].copy_from_slice(key);
    k[16..].copy_from_slice(&hash.0);
    k
}

fn dbe<E: Into<redb::Error>>(op: &'static str) -> impl Fn(E) -> StoreError {
    move |e| StoreError::db(op)(e.into())
}

/// Records in `seqs-1` the change about to be appended to the log, unless
/// a change with its actor and number is recorded already (then an
/// ingest has judged it: see [`Store::sort_equivocations`]).
pub(crate) fn index_seq(
    seqs: &mut Table<'_, (&'static [u8], u64), &'static [u8]>,
    key: &[u8; 16],
    change: &SignedChange,
) -> Result<(), StoreError> {
    let p = change.payload();
    let k = seq_key(key, p.change().actor_id().to_bytes());
    if seqs
        .get((k.as_slice(), p.seq()))
        .map_err(dbe("index a change"))?
        .is_none()
    {
        seqs.insert((k.as_slice(), p.seq()), p.hash().0.as_slice())
            .map_err(dbe("index a change"))?;
    }
    Ok(())
}

/// What the equivocation checks of an ingest found, written once the
/// ingest's tables are closed ([`Store::record_equivocations_in`]).
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// Changes to hold: equivocating, or depending on one.
    pub(crate) quarantine: Vec<QuarantineEntry>,
    /// Changes newly found to equivocate.
    pub(crate) rows: Vec<([u8; 16], ChangeHash, EquivocationRow)>,
    /// One event per equivocation found.
    pub(crate) audit: Vec<AuditEvent>,
    /// Cases whose stored changes were withdrawn (their cached documents are stale).
    pub(crate) rebuilt: Vec<CaseId>,
}

/// A stored change being withdrawn, while its case is worked on.
struct Out {
    seq: u64,
    signer: DeviceId,
    /// Its actor's incarnation and its sequence number.
    actor_seq: (u32, u64),
    deps_out: Vec<ChangeHash>,
    /// The equivocating change it is (`None`) or depends on.
    root: Option<(ChangeHash, DeviceId)>,
    envelope: Vec<u8>,
}

impl Store {
    /// Sorts the changes of one case about to be stored (in causal order)
    /// into those that stand and those to hold (see the module docs):
    /// returns the ones that stand, in order, and whether stored changes of
    /// the case were withdrawn (its row was rebuilt: read it again).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn sort_equivocations(
        &self,
        t: &mut WriteTables<'_>,
        released: &impl ReadableTable<(&'static [u8], &'static [u8]), &'static [u8]>,
        key: &[u8; 16],
        case: &CaseId,
        genesis: &[u8],
        ordered: Vec<SignedChange>,
        now: Timestamp,
        found: &mut Found,
    ) -> Result<(Vec<SignedChange>, bool), StoreError> {
        // Pass 1: which changes equivocate, here or with a stored one.
        let mut seen: HashMap<(Vec<u8>, u64), ChangeHash> = HashMap::new();
        // Equivocating changes of the batch, and stored ones to withdraw,
        // each with the device that signed it.
        let mut bad: BTreeMap<ChangeHash, DeviceId> = BTreeMap::new();
        let mut twins: BTreeSet<ChangeHash> = BTreeSet::new();
        let mut flagged: BTreeMap<(DeviceId, u32, u64), BTreeSet<ChangeHash>> = BTreeMap::new();
        // Changes held before as dependents of an equivocating change, sent again.
        let mut again: BTreeMap<ChangeHash, (ChangeHash, DeviceId)> = BTreeMap::new();
        for c in &ordered {
            let p = c.payload();
            let hash = p.hash();
            if released
                .get((key.as_slice(), hash.0.as_slice()))
                .map_err(dbe("read releases"))?
                .is_some()
            {
                continue;
            }
            let actor = p.change().actor_id().to_bytes().to_vec();
            let seq = p.seq();
            let known = match self.equivocation_row(t, key, &hash)? {
                Some(EquivocationRow {
                    depends_on: Some(root),
                    ..
                }) => {
                    let by = self
                        .equivocation_row(t, key, &root)?
                        .map_or_else(|| DeviceId::from_public_key(*c.signer()), |r| r.device);
                    again.insert(hash, (root, by));
                    continue;
                }
                Some(_) => true,
                None => false,
            };
            let stored = t
                .seqs
                .get((seq_key(key, &actor).as_slice(), seq))
                .map_err(dbe("read seqs"))?
                .and_then(|v| <[u8; 32]>::try_from(v.value()).ok())
                .map(ChangeHash)
                .filter(|h| *h != hash);
            let earlier = seen
                .get(&(actor.clone(), seq))
                .copied()
                .filter(|h| *h != hash);
            if !known && stored.is_none() && earlier.is_none() {
                seen.insert((actor, seq), hash);
                continue;
            }
            let device = DeviceId::from_public_key(*c.signer());
            let incarnation = ActorBinding::parse(&actor).map_or(0, |a| a.incarnation);
            let group = flagged.entry((device, incarnation, seq)).or_default();
            group.insert(hash);
            bad.insert(hash, device);
            if let Some(h) = earlier {
                bad.insert(h, device);
                group.insert(h);
            }
            if let Some(h) = stored {
                group.insert(h);
                if self.is_stored(&t.changes, key, &h)? {
                    twins.insert(h);
                }
            }
        }
        if bad.is_empty() && again.is_empty() {
            return Ok((ordered, false));
        }
        for ((device, incarnation, seq), hashes) in &flagged {
            let mut new = 0;
            for h in hashes {
                if self.equivocation_row(t, key, h)?.is_none() {
                    new += 1;
                    found.rows.push((
                        *key,
                        *h,
                        EquivocationRow {
                            case: *case,
                            device: *device,
                            incarnation: *incarnation,
                            seq: *seq,
                            at: now,
                            depends_on: None,
                        },
                    ));
                }
            }
            if new > 0 {
                tracing::warn!(case = %case.short(), device = %device.short(), seq, "equivocation: two different changes under one sequence number; holding both");
                found.audit.push(AuditEvent {
                    at: now,
                    kind: AuditKind::Equivocation,
                    detail: format!(
                        "device {device} signed {} different changes as its change {seq} (incarnation {incarnation}) to case {case}: {}; all are held in the quarantine",
                        hashes.len(),
                        hashes.iter().map(ChangeHash::short).collect::<Vec<_>>().join(", ")
                    ),
                });
            }
        }

        // Pass 2: withdraw the stored twins, with what depends on them.
        let out = self.stored_out(t, key, &twins)?;
        let withdrew = !out.is_empty();
        if withdrew {
            let Some(mut row) = self.read_row(&t.cases, key)? else {
                return Err(StoreError::corrupt(
                    "a stored change belongs to a case with no row",
                ));
            };
            let compartment = self
                .seal
                .compartment_key(&crate::migrations::compartment_of(&row.genesis)?);
            let mut gone: Vec<(&ChangeHash, &Out)> = out.iter().collect();
            gone.sort_by_key(|(_, o)| o.seq);
            for (hash, o) in gone {
                let tomb = crate::withdraw::tombstone(case, hash);
                t.log
                    .insert(
                        o.seq,
                        self.seal
                            .seal(LOG.name(), &o.seq.to_be_bytes(), &tomb)
                            .as_slice(),
                    )
                    .map_err(dbe("withdraw"))?;
                t.changes
                    .remove((key.as_slice(), hash.0.as_slice()))
                    .map_err(dbe("withdraw"))?;
                t.reads
                    .remove((compartment.as_slice(), o.seq))
                    .map_err(dbe("withdraw"))?;
                if let Some((root, _)) = &o.root {
                    found.rows.push(dependent_row(
                        key,
                        case,
                        hash,
                        o.signer,
                        o.actor_seq,
                        root,
                        now,
                    ));
                }
                found.quarantine.push(QuarantineEntry {
                    at: now,
                    reason: match &o.root {
                        None => equivocation_reason(&o.signer, o.actor_seq.1, case),
                        Some((root, device)) => equivocation_dependent_reason(root, device),
                    },
                    case: *case,
                    signer: o.signer,
                    genesis: row.genesis.clone(),
                    change: o.envelope.clone(),
                });
            }
            self.forget_cached(case);
            self.rebuild_case(t, key, case, &mut row, now)?;
            found.rebuilt.push(*case);
        }

        // Pass 3: the batch's changes that stand.
        let mut roots: BTreeMap<ChangeHash, (ChangeHash, DeviceId)> = out
            .iter()
            .map(|(h, o)| (*h, o.root.unwrap_or((*h, o.signer))))
            .collect();
        for (h, d) in &bad {
            roots.insert(*h, (*h, *d));
        }
        roots.extend(again.iter().map(|(h, root)| (*h, *root)));
        let mut keep = Vec::with_capacity(ordered.len());
        for c in ordered {
            let p = c.payload();
            let hash = p.hash();
            let signer = DeviceId::from_public_key(*c.signer());
            let reason = if bad.contains_key(&hash) {
                equivocation_reason(&signer, p.seq(), case)
            } else if let Some((root, by)) = again.get(&hash) {
                equivocation_dependent_reason(root, by)
            } else if let Some(root) = p.deps().iter().find_map(|d| roots.get(d).copied()) {
                roots.insert(hash, root);
                found.rows.push(dependent_row(
                    key,
                    case,
                    &hash,
                    signer,
                    actor_seq(&c),
                    &root.0,
                    now,
                ));
                equivocation_dependent_reason(&root.0, &root.1)
            } else {
                keep.push(c);
                continue;
            };
            found.quarantine.push(QuarantineEntry {
                at: now,
                reason,
                case: *case,
                signer,
                genesis: genesis.to_vec(),
                change: fieldsync_case::encode_change(&c),
            });
        }
        Ok((keep, withdrew))
    }

    /// The `equivocations-1` row of the change `hash` of the case stored
    /// under `key`: whether it was found to equivocate, or held as depending
    /// on a change that did.
    pub(crate) fn equivocation_row(
        &self,
        t: &WriteTables<'_>,
        key: &[u8; 16],
        hash: &ChangeHash,
    ) -> Result<Option<EquivocationRow>, StoreError> {
        let Some(v) = t
            .equivocations
            .get((key.as_slice(), hash.0.as_slice()))
            .map_err(dbe("read equivocations"))?
        else {
            return Ok(None);
        };
        let plain = self
            .seal
            .open(EQUIVOCATIONS.name(), &row_seal_key(key, hash), v.value())?;
        Ok(Some(decode(&plain, "equivocation")?))
    }

    /// Of the changes `waiting` (not placeable: a dependency is missing),
    /// those whose missing dependency is an equivocating change of the case
    /// stored under `key`, directly or through other waiting changes: each
    /// with the equivocating change it comes down to.
    pub(crate) fn doomed_by_equivocation(
        &self,
        t: &WriteTables<'_>,
        key: &[u8; 16],
        waiting: &BTreeMap<ChangeHash, Vec<ChangeHash>>,
    ) -> Result<BTreeMap<ChangeHash, ChangeHash>, StoreError> {
        let lo: &[u8] = &[0u8; 32];
        let hi: &[u8] = &[0xffu8; 32];
        let mut roots: BTreeMap<ChangeHash, ChangeHash> = BTreeMap::new();
        for entry in t
            .equivocations
            .range((key.as_slice(), lo)..=(key.as_slice(), hi))
            .map_err(dbe("read equivocations"))?
        {
            let (k, v) = entry.map_err(dbe("read equivocations"))?;
            let hash = ChangeHash(crate::store::fixed(k.value().1, "equivocation hash")?);
            let plain =
                self.seal
                    .open(EQUIVOCATIONS.name(), &row_seal_key(key, &hash), v.value())?;
            let row: EquivocationRow = decode(&plain, "equivocation")?;
            roots.insert(hash, row.depends_on.unwrap_or(hash));
        }
        if roots.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut doomed = BTreeMap::new();
        loop {
            let mut grew = false;
            for (hash, deps) in waiting {
                if doomed.contains_key(hash) {
                    continue;
                }
                if let Some(root) = deps.iter().find_map(|d| roots.get(d).copied()) {
                    doomed.insert(*hash, root);
                    roots.insert(*hash, root);
                    grew = true;
                }
            }
            if !grew {
                return Ok(doomed);
            }
        }
    }

    /// The stored changes to withdraw for the stored equivocating changes
    /// `twins`: those, and every stored change that depends on one, less
    /// this node's own changes and what they depend on.
    fn stored_out(
        &self,
        t: &WriteTables<'_>,
        key: &[u8; 16],
        twins: &BTreeSet<ChangeHash>,
    ) -> Result<HashMap<ChangeHash, Out>, StoreError> {
        let mut out: HashMap<ChangeHash, Out> = HashMap::new();
        if twins.is_empty() {
            return Ok(out);
        }
        let mut first = u64::MAX;
        for h in twins {
            if let Some(seq) = t
                .changes
                .get((key.as_slice(), h.0.as_slice()))
                .map_err(dbe("withdraw"))?
            {
                first = first.min(seq.value());
            }
        }
        // Log order is causal: nothing before the first twin depends on one.
        for seq in case_seqs(&t.changes, key, first.saturating_sub(1))? {
            let envelope = self.read_log_bytes(&t.log, seq)?;
            let change = decode_change(&envelope)
                .map_err(|e| StoreError::corrupt(format!("log entry {seq}: {e}")))?;
            let p = change.payload();
            let hash = p.hash();
            let signer = DeviceId::from_public_key(*change.signer());
            let deps_out: Vec<ChangeHash> = p
                .deps()
                .into_iter()
                .filter(|d| out.contains_key(d))
                .collect();
            let root = if twins.contains(&hash) {
                None
            } else if let Some(dep) = deps_out.first() {
                match out.get(dep) {
                    Some(o) => Some(o.root.unwrap_or((*dep, o.signer))),
                    None => continue,
                }
            } else {
                continue;
            };
            out.insert(
                hash,
                Out {
                    seq,
                    signer,
                    actor_seq: actor_seq(&change),
                    deps_out,
                    root,
                    envelope,
                },
            );
        }
        // This node's own changes stay, and so does everything they depend on.
        let me = self.device.id();
        let mut keep: Vec<ChangeHash> = out
            .iter()
            .filter(|(_, o)| o.signer == me)
            .map(|(h, _)| *h)
            .collect();
        while let Some(h) = keep.pop() {
            if let Some(o) = out.remove(&h) {
                keep.extend(o.deps_out);
            }
        }
        Ok(out)
    }

    /// Writes what an ingest's equivocation checks found, inside `txn` once
    /// its tables are closed; returns how many entries the quarantine gained.
    pub(crate) fn record_equivocations_in(
        &self,
        txn: &WriteTransaction,
        found: Found,
    ) -> Result<usize, StoreError> {
        if !found.rows.is_empty() {
            let mut table = txn
                .open_table(EQUIVOCATIONS)
                .map_err(dbe("record equivocations"))?;
            for (key, hash, row) in &found.rows {
                let sealed = self.seal.seal(
                    EQUIVOCATIONS.name(),
                    &row_seal_key(key, hash),
                    &encode(row)?,
                );
                table
                    .insert((key.as_slice(), hash.0.as_slice()), sealed.as_slice())
                    .map_err(dbe("record equivocations"))?;
            }
        }
        for ev in &found.audit {
            self.audit_in(txn, ev)?;
        }
        self.quarantine_in(txn, found.quarantine)
    }

    /// Every equivocation this node has found, by case, device and number:
    /// the devices headquarters should look at (and probably revoke).
    pub fn equivocations(&self) -> Result<Vec<Equivocation>, StoreError> {
        let txn = self.read()?;
        let table = txn
            .open_table(EQUIVOCATIONS)
            .map_err(dbe("read equivocations"))?;
        let mut groups: BTreeMap<(CaseId, DeviceId, u32, u64), Equivocation> = BTreeMap::new();
        // Dependents, by the equivocating change they come down to.
        let mut dependents: BTreeMap<ChangeHash, usize> = BTreeMap::new();
        for entry in table.iter().map_err(dbe("read equivocations"))? {
            let (k, v) = entry.map_err(dbe("read equivocations"))?;
            let (key, hash) = k.value();
            let key: [u8; 16] = crate::store::fixed(key, "equivocation case key")?;
            let hash = ChangeHash(crate::store::fixed(hash, "equivocation hash")?);
            let plain =
                self.seal
                    .open(EQUIVOCATIONS.name(), &row_seal_key(&key, &hash), v.value())?;
            let row: EquivocationRow = decode(&plain, "equivocation")?;
            if let Some(root) = row.depends_on {
                *dependents.entry(root).or_default() += 1;
                continue;
            }
            let e = groups
                .entry((row.case, row.device, row.incarnation, row.seq))
                .or_insert_with(|| Equivocation {
                    case: row.case,
                    device: row.device,
                    incarnation: row.incarnation,
                    seq: row.seq,
                    changes: Vec::new(),
                    dependents: 0,
                    since: row.at,
                });
            e.changes.push(hash);
            e.since = e.since.min(row.at);
        }
        let mut out: Vec<Equivocation> = groups.into_values().collect();
        for e in &mut out {
            e.dependents = e.changes.iter().filter_map(|h| dependents.get(h)).sum();
        }
        Ok(out)
    }
}
