//! Human and JSON output: prints what `fieldsync-view` renders.

use anyhow::Result;
use fieldsync_case::{CaseRecord, Conflict, HistoryEntry};
use fieldsync_identity::DeviceId;
use fieldsync_store::{AuditEvent, CaseListing, ImportReport, Store, VerifyReport};
use fieldsync_view::{DeviceNames, Format};

/// Writes a rendered view (it carries its own trailing newline).
fn emit(rendered: Result<String, fieldsync_view::ViewError>) -> Result<()> {
    print!("{}", rendered?);
    Ok(())
}

pub(crate) fn identity(store: &Store, as_json: bool) -> Result<()> {
    let d = store.device();
    let path = store
        .path()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if as_json {
        let value = serde_json::json!({
            "device": d.id().to_string(),
            "short": d.id().short(),
            "name": d.name(),
            "incarnation": d.incarnation(),
            "created_at": d.created_at().to_string(),
            "store": path,
            "encrypted": store.is_encrypted(),
            "pending": store.outbox_len()?,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("device      {}", d.id());
    println!("name        {}", d.name());
    println!("incarnation {}", d.incarnation());
    println!("created     {}", d.created_at());
    println!("store       {path}");
    if store.is_encrypted() {
        println!("encrypted   yes, at rest (XChaCha20-Poly1305; its key is in fieldsync.key)");
    } else {
        println!("encrypted   no (made before encryption at rest)");
    }
    println!(
        "pending     {} changes not yet acknowledged by a relay",
        store.outbox_len()?
    );
    Ok(())
}

pub(crate) fn listing(cases: &[CaseListing], as_json: bool) -> Result<()> {
    emit(fieldsync_view::listing(
        cases,
        "no cases yet; create one with `case new --kind KIND --title TITLE`",
        Format::json(as_json),
    ))
}

pub(crate) fn record(r: &CaseRecord, as_json: bool) -> Result<()> {
    emit(fieldsync_view::record(
        r,
        &DeviceNames::new(),
        Format::json(as_json),
    ))
}

pub(crate) fn conflicts(conflicts: &[Conflict], as_json: bool) -> Result<()> {
    emit(fieldsync_view::conflicts(
        conflicts,
        &DeviceNames::new(),
        Format::json(as_json),
    ))
}

pub(crate) fn history(entries: &[HistoryEntry], me: DeviceId, as_json: bool) -> Result<()> {
    emit(fieldsync_view::history(
        entries,
        &DeviceNames::new().with_this_device(me),
        Format::json(as_json),
    ))
}

pub(crate) fn import(r: &ImportReport, as_json: bool) -> Result<()> {
    emit(fieldsync_view::import(r, Format::json(as_json)))
}

pub(crate) fn verify(r: &VerifyReport, as_json: bool) -> Result<()> {
    emit(fieldsync_view::verify(r, Format::json(as_json)))
}

pub(crate) fn audit(events: &[AuditEvent], as_json: bool) -> Result<()> {
    emit(fieldsync_view::audit(events, Format::json(as_json)))
}

/// What `repair` did.
pub(crate) fn repair(report: &fieldsync_store::RepairReport, as_json: bool) -> Result<()> {
    emit(fieldsync_view::repair(
        report,
        "relays",
        Format::json(as_json),
    ))
}
