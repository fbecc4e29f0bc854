//! Human and JSON output.

use anyhow::Result;
use fieldsync_case::{CaseRecord, Conflict, HistoryEntry};
use fieldsync_identity::DeviceId;
use fieldsync_store::{AuditEvent, CaseListing, ImportReport, Store, VerifyReport};
use serde::Serialize;

fn json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

pub(crate) fn identity(store: &Store, as_json: bool) -> Result<()> {
    let d = store.device();
    let path = store
        .path()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if as_json {
        return json(&serde_json::json!({
            "device": d.id().to_string(),
            "short": d.id().short(),
            "name": d.name(),
            "incarnation": d.incarnation(),
            "created_at": d.created_at().to_string(),
            "store": path,
            "pending": store.outbox_len()?,
        }));
    }
    println!("device      {}", d.id());
    println!("name        {}", d.name());
    println!("incarnation {}", d.incarnation());
    println!("created     {}", d.created_at());
    println!("store       {path}");
    println!(
        "pending     {} changes not yet acknowledged by a relay",
        store.outbox_len()?
    );
    Ok(())
}

pub(crate) fn listing(cases: &[CaseListing], as_json: bool) -> Result<()> {
    if as_json {
        return json(cases);
    }
    if cases.is_empty() {
        println!("no cases yet; create one with `case new --kind KIND --title TITLE`");
        return Ok(());
    }
    for c in cases {
        println!(
            "{}  {:<9} {:<7} {:<22} {:<12} {}",
            c.id.short(),
            c.status,
            c.priority,
            c.kind.to_string(),
            c.office,
            c.title
        );
    }
    Ok(())
}

pub(crate) fn record(r: &CaseRecord, as_json: bool) -> Result<()> {
    if as_json {
        return json(r);
    }
    println!("case      {}", r.id);
    println!("title     {}", r.title);
    println!("kind      {}", r.kind);
    println!("status    {}   priority {}", r.status, r.priority);
    println!("office    {}   compartment {}", r.office, r.compartment);
    println!("created   {} by {}", r.created_at, r.creator.short());
    if !r.summary.is_empty() {
        println!("\nsummary\n  {}", r.summary.replace('\n', "\n  "));
    }
    if !r.subjects.is_empty() {
        println!("\nsubjects");
        for s in &r.subjects {
            let ids: Vec<String> = s
                .identifiers
                .iter()
                .map(|i| format!("{}={}", i.kind, i.value))
                .collect();
            println!(
                "  {}  {}  role {}  nationality {}{}",
                short(&s.id.to_string()),
                s.name,
                opt(&s.role),
                opt(&s.nationality),
                if ids.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", ids.join(", "))
                }
            );
        }
    }
    if !r.evidence.is_empty() {
        println!("\nevidence");
        for e in &r.evidence {
            println!(
                "  {}  {}  found at {}",
                short(&e.id.to_string()),
                e.description,
                opt(&e.found_at)
            );
            for c in &e.custody {
                println!(
                    "      {}  {}  by {}  holder {}  location {}",
                    c.at,
                    c.action,
                    c.by.short(),
                    opt(&c.holder),
                    opt(&c.location)
                );
            }
        }
    }
    if !r.tasks.is_empty() {
        println!("\ntasks");
        for t in &r.tasks {
            println!(
                "  [{}] {}  {}{}",
                if t.done { "x" } else { " " },
                short(&t.id.to_string()),
                t.text,
                t.assignee
                    .as_deref()
                    .map(|a| format!("  ({a})"))
                    .unwrap_or_default()
            );
        }
    }
    if !r.notes.is_empty() {
        println!("\nnotes");
        for n in &r.notes {
            println!("  {}  {}  {}", n.at, n.author.short(), n.text);
        }
    }
    if !r.links.is_empty() {
        println!("\nlinks");
        for l in &r.links {
            println!("  {}  {}", l.case, l.relation);
        }
    }
    if !r.attachments.is_empty() {
        println!("\nattachments");
        for a in &r.attachments {
            println!(
                "  {}  {}  {} bytes  {}",
                short(&a.hash),
                a.name,
                a.size,
                a.media_type
            );
        }
    }
    if !r.conflicts.is_empty() {
        println!("\nconflicts (concurrent edits; resolve by setting the field again)");
        print_conflicts(&r.conflicts);
    }
    Ok(())
}

fn short(s: &str) -> &str {
    s.get(..8).unwrap_or(s)
}

fn print_conflicts(conflicts: &[Conflict]) {
    for c in conflicts {
        println!("  {}", c.path);
        for v in &c.values {
            println!(
                "      {}  {}",
                v.device
                    .map(|d| d.short())
                    .unwrap_or_else(|| "unknown".into()),
                v.value
            );
        }
    }
}

pub(crate) fn conflicts(conflicts: &[Conflict], as_json: bool) -> Result<()> {
    if as_json {
        return json(conflicts);
    }
    if conflicts.is_empty() {
        println!("no conflicts");
    } else {
        print_conflicts(conflicts);
    }
    Ok(())
}

pub(crate) fn history(entries: &[HistoryEntry], me: DeviceId, as_json: bool) -> Result<()> {
    if as_json {
        return json(entries);
    }
    for h in entries {
        let who = match h.device {
            Some(d) if d == me => format!("{} (this device)", d.short()),
            Some(d) => d.short(),
            None => "unknown actor".to_owned(),
        };
        println!(
            "{}  {}  {}  {}",
            short(&h.hash.to_string()),
            h.time,
            who,
            h.description.join("; ")
        );
    }
    Ok(())
}

pub(crate) fn import(r: &ImportReport, as_json: bool) -> Result<()> {
    if as_json {
        return json(r);
    }
    println!(
        "imported {} cases ({} new): {} changes stored, {} already here",
        r.cases, r.new_cases, r.stored, r.duplicates
    );
    Ok(())
}

pub(crate) fn verify(r: &VerifyReport, as_json: bool) -> Result<()> {
    if as_json {
        return json(r);
    }
    for p in &r.problems {
        println!("problem: {p}");
    }
    println!(
        "verified {} case geneses and {} signed changes: {}",
        r.cases,
        r.changes,
        if r.problems.is_empty() {
            "all signatures good".to_owned()
        } else {
            format!("{} problems", r.problems.len())
        }
    );
    Ok(())
}

pub(crate) fn audit(events: &[AuditEvent], as_json: bool) -> Result<()> {
    if as_json {
        return json(events);
    }
    for e in events {
        println!(
            "{}  {:<16} {}",
            e.at,
            serde_json::to_value(e.kind)?.as_str().unwrap_or("?"),
            e.detail
        );
    }
    Ok(())
}
