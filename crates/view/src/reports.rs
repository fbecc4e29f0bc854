//! Store-wide views: the audit trail, the quarantine, and import and verify reports.

use fieldsync_case::decode_change;
use fieldsync_identity::{CaseId, DeviceId, Timestamp};
use fieldsync_store::{AuditEvent, ImportReport, QuarantineEntry, VerifyReport};
use serde::Serialize;

use crate::{DeviceNames, Format, ViewError, json, put};

/// The audit trail, oldest first: time, kind, detail.
pub fn audit(events: &[AuditEvent], format: Format) -> Result<String, ViewError> {
    if format == Format::Json {
        return json(events);
    }
    let mut out = String::new();
    for e in events {
        put!(
            out,
            "{}  {:<16} {}",
            e.at,
            serde_json::to_value(e.kind)?.as_str().unwrap_or("?"),
            e.detail
        );
    }
    Ok(out)
}

/// What an import stored.
pub fn import(r: &ImportReport, format: Format) -> Result<String, ViewError> {
    if format == Format::Json {
        return json(r);
    }
    let mut out = String::new();
    put!(
        out,
        "imported {} cases ({} new): {} changes stored, {} already here",
        r.cases,
        r.new_cases,
        r.stored,
        r.duplicates
    );
    Ok(out)
}

/// What re-verifying every stored signature found.
pub fn verify(r: &VerifyReport, format: Format) -> Result<String, ViewError> {
    if format == Format::Json {
        return json(r);
    }
    let mut out = String::new();
    for p in &r.problems {
        put!(out, "problem: {p}");
    }
    put!(
        out,
        "verified {} case geneses and {} signed changes: {}",
        r.cases,
        r.changes,
        if r.problems.is_empty() {
            "all signatures good".to_owned()
        } else {
            format!("{} problems", r.problems.len())
        }
    );
    Ok(out)
}

/// One held change as the quarantine view shows it (the JSON shape of
/// [`quarantine`]): the signed bytes stay in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantineItem {
    /// The quarantine id (what `quarantine release ID` takes).
    pub id: u64,
    /// When the change was quarantined.
    pub at: Timestamp,
    /// The case it belongs to.
    pub case: CaseId,
    /// The device that signed it.
    pub signer: DeviceId,
    /// The signer's name, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer_name: Option<String>,
    /// The change hash (64 hex digits); `None` when the held bytes do not
    /// decode as a change.
    pub change: Option<String>,
    /// Why it is held.
    pub reason: String,
}

impl QuarantineItem {
    /// Describes entry `id`, naming its signer from `names`.
    pub fn new(id: u64, entry: &QuarantineEntry, names: &DeviceNames) -> Self {
        Self {
            id,
            at: entry.at,
            case: entry.case,
            signer: entry.signer,
            signer_name: names.name(&entry.signer).map(str::to_owned),
            change: decode_change(&entry.change)
                .ok()
                .map(|c| c.payload().hash().to_string()),
            reason: entry.reason.clone(),
        }
    }
}

/// The quarantine: each held change with its case, signer and reason.
pub fn quarantine(
    entries: &[(u64, QuarantineEntry)],
    names: &DeviceNames,
    format: Format,
) -> Result<String, ViewError> {
    let items: Vec<QuarantineItem> = entries
        .iter()
        .map(|(id, e)| QuarantineItem::new(*id, e, names))
        .collect();
    if format == Format::Json {
        return json(&items);
    }
    let mut out = String::new();
    if items.is_empty() {
        put!(out, "the quarantine is empty");
        return Ok(out);
    }
    for (item, (_, entry)) in items.iter().zip(entries) {
        put!(
            out,
            "{:<4} {}  case {}  change {}  by {}",
            item.id,
            item.at,
            item.case.short(),
            item.change
                .as_deref()
                .and_then(|h| h.get(..8))
                .unwrap_or("(undecodable)"),
            names.label(&entry.signer)
        );
        put!(out, "     {}", item.reason);
    }
    Ok(out)
}

/// What `repair` did: where the damaged file was kept, what came back and
/// what was lost. `resend` names who sends the lost changes back ("relays"
/// for a device, "devices and offices" for a relay).
pub fn repair(
    r: &fieldsync_store::RepairReport,
    resend: &str,
    format: Format,
) -> Result<String, ViewError> {
    if format == Format::Json {
        return json(r);
    }
    let mut out = String::new();
    match &r.check {
        Some(found) => put!(out, "damaged     {found}"),
        None => put!(
            out,
            "the file passed its checksums; values that failed to decode were left out"
        ),
    }
    put!(out, "kept aside  {}", r.damaged.display());
    put!(out, "new store   {}", r.path.display());
    put!(
        out,
        "recovered   {} cases, {} changes ({} waiting for lost dependencies), {} quarantine entries, {} peers, {} audit events",
        r.cases,
        r.changes,
        r.pending,
        r.quarantined,
        r.peers,
        r.audit
    );
    put!(out, "lost        {}", r.lost);
    for p in &r.problems {
        put!(out, "  {p}");
    }
    if r.lost > 0 {
        put!(out, "{resend} send back what they hold at the next sync");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use fieldsync_identity::SecretKey;

    #[test]
    fn quarantine_text_and_json() {
        let signer = DeviceId::from_public_key(SecretKey::from_seed(&[5; 32]).public());
        let entry = QuarantineEntry {
            at: Timestamp::from_millis(1_790_000_000_000),
            reason: "device 1 may not write compartment visa".into(),
            case: CaseId::from_bytes([0xab; 16]),
            signer,
            genesis: vec![],
            change: vec![1, 2, 3],
        };
        let empty = DeviceNames::new();
        assert_eq!(
            quarantine(&[], &empty, Format::Text).unwrap(),
            "the quarantine is empty\n"
        );
        assert_eq!(quarantine(&[], &empty, Format::Json).unwrap(), "[]\n");
        let mut names = DeviceNames::new();
        names.insert(signer, "Liaison");
        let text = quarantine(&[(3, entry.clone())], &names, Format::Text).unwrap();
        assert_eq!(
            text,
            format!(
                "3    2026-09-21T14:13:20.000Z  case abababab  change (undecodable)  by {} (Liaison)\n     device 1 may not write compartment visa\n",
                signer.short()
            )
        );
        let json: serde_json::Value =
            serde_json::from_str(&quarantine(&[(3, entry)], &names, Format::Json).unwrap())
                .unwrap();
        assert_eq!(json[0]["id"], 3);
        assert_eq!(json[0]["signer_name"], "Liaison");
        assert_eq!(json[0]["change"], serde_json::Value::Null);
        assert_eq!(json[0]["case"], "ab".repeat(16));
    }
}
