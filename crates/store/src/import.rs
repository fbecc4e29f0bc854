//! Import and export of signed changes (bundles now, sync sessions later),
//! and re-verification of everything stored.

use fieldsync_case::{
    Genesis, SignedChange, VerifiedChange, VerifiedGenesis, decode_change, verify_genesis,
};
use fieldsync_identity::{
    CaseId, Encoded, Timestamp, decode_signed, encode_signed, sign, verify_batch,
};
use redb::{ReadableTable, TableHandle};
use serde::Serialize;

use crate::audit::{AuditEvent, AuditKind};
use crate::bundle::{BUNDLE_MAGIC, BUNDLE_VERSION, BundleBody, BundleCase, MAX_BUNDLE_LEN};
use crate::cases::case_seqs;
use crate::error::{BundleError, StoreError};
use crate::ingest::{Tally, Unplaced};
use crate::rows::{CaseRow, decode};
use crate::store::Store;
use crate::tables::{CASES, CHANGES, LOG};

/// What an import stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Cases the import carried.
    pub cases: usize,
    /// Cases this node did not have before.
    pub new_cases: usize,
    /// Changes stored.
    pub stored: usize,
    /// Changes already held (acknowledged and ignored).
    pub duplicates: usize,
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Genesis records checked.
    pub cases: usize,
    /// Signed changes checked.
    pub changes: usize,
    /// Every problem found, one line each (empty when all is well).
    pub problems: Vec<String>,
}

/// Batch size for signature verification.
const VERIFY_BATCH: usize = 256;

impl Store {
    /// Stores verified cases and changes in one durable transaction:
    /// geneses first seen, then every change not already held, each case's
    /// new changes applied to its document in one Automerge call (on a device
    /// store; a relay store touches no document). All or nothing: any error
    /// leaves the store as it was. A bundle must be self-contained: a change
    /// whose dependencies are neither in the batch nor stored refuses the
    /// whole batch ([`BundleError::MissingDependencies`]). This is
    /// [`Store::ingest`] without a cursor, a quarantine or pending changes.
    pub fn import_verified(
        &self,
        batch: Vec<(VerifiedGenesis, Vec<VerifiedChange>)>,
        now: Timestamp,
    ) -> Result<ImportReport, BundleError> {
        let cases = batch.len();
        let mut tally = Tally::default();
        let docs = self.write("import", |txn| {
            self.store_cases(txn, batch, Unplaced::Refuse, now, &mut tally)
        })?;
        self.cache_all(docs);
        Ok(ImportReport {
            cases,
            new_cases: tally.new_cases,
            stored: tally.stored,
            duplicates: tally.duplicates,
        })
    }

    /// Exports the given cases (all cases when `cases` is empty) as a bundle
    /// signed by this device.
    pub fn export_bundle(&self, cases: &[CaseId], now: Timestamp) -> Result<Vec<u8>, StoreError> {
        let wanted: Vec<CaseId> = if cases.is_empty() {
            self.list_cases()?.into_iter().map(|c| c.id).collect()
        } else {
            cases.to_vec()
        };
        let txn = self.read()?;
        let e = |e: redb::TableError| StoreError::db("export")(e.into());
        let rows = txn.open_table(CASES).map_err(e)?;
        let index = txn.open_table(CHANGES).map_err(e)?;
        let log = txn.open_table(LOG).map_err(e)?;
        let mut out = Vec::with_capacity(wanted.len());
        let mut total = 0usize;
        for case in &wanted {
            let key = self.seal.case_key(case);
            let row = self
                .read_row(&rows, &key)?
                .ok_or_else(|| StoreError::UnknownCase {
                    query: case.to_string(),
                })?;
            let mut changes = Vec::with_capacity(row.change_count as usize);
            for seq in case_seqs(&index, &key, 0)? {
                changes.push(self.read_log_bytes(&log, seq)?);
            }
            total += changes.len();
            out.push(BundleCase {
                genesis: row.genesis,
                changes,
            });
        }
        drop((rows, index, log, txn));
        let body = Encoded::new(BundleBody {
            version: BUNDLE_VERSION,
            exporter: self.device.id().public_key().to_owned(),
            created_at: now,
            cases: out,
        })?;
        let signed = sign(body, self.device.key())?;
        let mut file = BUNDLE_MAGIC.to_vec();
        file.extend_from_slice(&encode_signed(signed.as_signed()));
        self.audit(&AuditEvent {
            at: now,
            kind: AuditKind::BundleExported,
            detail: format!("{} cases, {total} changes exported", wanted.len()),
        })?;
        Ok(file)
    }

    /// Imports a bundle: checks its framing and the exporter's signature,
    /// verifies every genesis and change signature, and only then stores
    /// everything in one durable transaction. On any error nothing is stored.
    pub fn import_bundle(&self, bytes: &[u8], now: Timestamp) -> Result<ImportReport, BundleError> {
        let result = decode_bundle(bytes).and_then(|batch| self.import_verified(batch, now));
        let ev = match &result {
            Ok(r) => AuditEvent {
                at: now,
                kind: AuditKind::BundleImported,
                detail: format!(
                    "{} cases ({} new), {} changes stored, {} already held",
                    r.cases, r.new_cases, r.stored, r.duplicates
                ),
            },
            Err(e) => AuditEvent {
                at: now,
                kind: AuditKind::BundleRejected,
                detail: e.to_string(),
            },
        };
        // The audit entry is best effort once the import itself has an outcome,
        // except after a successful import, where a failing store must be reported.
        if let (Err(e), Ok(_)) = (self.audit(&ev), &result) {
            return Err(BundleError::Store(e));
        }
        result
    }

    /// Re-verifies every stored genesis and change signature.
    pub fn verify_all(&self, now: Timestamp) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        {
            let txn = self.read()?;
            let e = |e: redb::TableError| StoreError::db("verify")(e.into());
            let rows = txn.open_table(CASES).map_err(e)?;
            for entry in rows
                .iter()
                .map_err(|e| StoreError::db("verify")(e.into()))?
            {
                let (k, v) = entry.map_err(|e| StoreError::db("verify")(e.into()))?;
                report.cases += 1;
                let plain = self.seal.open(CASES.name(), k.value(), v.value())?;
                let row: CaseRow = decode(&plain, "case row")?;
                let ok = decode_signed::<Genesis>(&row.genesis)
                    .map_err(|e| e.to_string())
                    .and_then(|s| verify_genesis(s).map(|_| ()).map_err(|e| e.to_string()));
                if let Err(problem) = ok {
                    report.problems.push(format!(
                        "case key {}: genesis: {problem}",
                        hex::encode(k.value())
                    ));
                }
            }
            let log = txn.open_table(LOG).map_err(e)?;
            let mut chunk: Vec<(u64, SignedChange)> = Vec::with_capacity(VERIFY_BATCH);
            for entry in log.iter().map_err(|e| StoreError::db("verify")(e.into()))? {
                let (k, v) = entry.map_err(|e| StoreError::db("verify")(e.into()))?;
                let seq = k.value();
                let opened = self.seal.open(LOG.name(), &seq.to_be_bytes(), v.value());
                // A withdrawn position holds a tombstone, not a change: its
                // change is in the quarantine.
                if opened.as_deref().is_ok_and(crate::withdraw::is_tombstone) {
                    continue;
                }
                report.changes += 1;
                let decoded = opened
                    .map_err(|e| e.to_string())
                    .and_then(|plain| decode_change(&plain).map_err(|e| e.to_string()));
                match decoded {
                    Ok(signed) => chunk.push((seq, signed)),
                    Err(problem) => report.problems.push(format!("log entry {seq}: {problem}")),
                }
                if chunk.len() == VERIFY_BATCH {
                    verify_chunk(std::mem::take(&mut chunk), &mut report.problems);
                }
            }
            verify_chunk(chunk, &mut report.problems);
        }
        self.audit(&AuditEvent {
            at: now,
            kind: AuditKind::Verified,
            detail: format!(
                "{} geneses and {} changes re-verified, {} problems",
                report.cases,
                report.changes,
                report.problems.len()
            ),
        })?;
        Ok(report)
    }
}

fn verify_chunk(chunk: Vec<(u64, SignedChange)>, problems: &mut Vec<String>) {
    if chunk.is_empty() {
        return;
    }
    let (seqs, signed): (Vec<u64>, Vec<SignedChange>) = chunk.into_iter().unzip();
    if verify_batch(signed.clone()).is_ok() {
        return;
    }
    for (seq, s) in seqs.into_iter().zip(signed) {
        if let Err(e) = s.verify() {
            problems.push(format!("log entry {seq}: {e}"));
        }
    }
}

/// Decodes and verifies a whole bundle, stopping at the first problem.
pub fn decode_bundle(
    bytes: &[u8],
) -> Result<Vec<(VerifiedGenesis, Vec<VerifiedChange>)>, BundleError> {
    if bytes.len() > MAX_BUNDLE_LEN + BUNDLE_MAGIC.len() {
        return Err(BundleError::TooLarge {
            len: bytes.len(),
            limit: MAX_BUNDLE_LEN,
        });
    }
    let body = bytes
        .strip_prefix(BUNDLE_MAGIC.as_slice())
        .ok_or(BundleError::NotABundle)?;
    let signed = decode_signed::<BundleBody>(body).map_err(BundleError::Malformed)?;
    let verified = signed.verify().map_err(BundleError::BadBundleSignature)?;
    let (body, _, _) = verified.into_parts();
    let body = body.value();
    if body.version != BUNDLE_VERSION {
        return Err(BundleError::Malformed(
            fieldsync_identity::DecodeError::UnsupportedVersion {
                what: "bundle",
                version: body.version,
            },
        ));
    }
    let mut out = Vec::with_capacity(body.cases.len());
    for (ci, bc) in body.cases.iter().enumerate() {
        let genesis = decode_signed::<Genesis>(&bc.genesis)
            .map_err(|e| BundleError::BadGenesis {
                case: format!("#{ci}"),
                detail: e.to_string(),
            })
            .and_then(|signed| {
                verify_genesis(signed).map_err(|e| BundleError::BadGenesis {
                    case: format!("#{ci}"),
                    detail: e.to_string(),
                })
            })?;
        let case = genesis.payload().value().case;
        let mut signed = Vec::with_capacity(bc.changes.len());
        for (index, env) in bc.changes.iter().enumerate() {
            let change = decode_change(env).map_err(|error| BundleError::BadChange {
                case: case.to_string(),
                index,
                error,
            })?;
            if change.payload().case() != case {
                return Err(BundleError::WrongCase {
                    case: case.to_string(),
                    index,
                    signed_for: change.payload().case().to_string(),
                });
            }
            signed.push(change);
        }
        let changes = verify_batch(signed).map_err(|e| BundleError::BadChangeSignature {
            case: case.to_string(),
            index: e.index,
            error: e.error,
        })?;
        out.push((genesis, changes));
    }
    Ok(out)
}
