//! Case views: the listing, the merged record, conflicts and history.

use fieldsync_case::{CaseRecord, Conflict, ConflictValue, HistoryEntry};
use fieldsync_store::CaseListing;
use serde::Serialize;

use crate::{DeviceNames, Format, ViewError, json, opt, put, short};

/// A value with the name of its device, when known: in JSON, the value's
/// own fields followed by `device_name`.
#[derive(Serialize)]
struct Named<'a, T> {
    #[serde(flatten)]
    item: &'a T,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_name: Option<&'a str>,
}

/// A [`Conflict`] whose values carry device names.
#[derive(Serialize)]
struct NamedConflict<'a> {
    path: &'a str,
    values: Vec<Named<'a, ConflictValue>>,
}

/// The case listing: one line per case (short id, status, priority, kind,
/// office, title), or `when_empty` (plus a newline) when there is none.
pub fn listing(
    cases: &[CaseListing],
    when_empty: &str,
    format: Format,
) -> Result<String, ViewError> {
    if format == Format::Json {
        return json(cases);
    }
    let mut out = String::new();
    if cases.is_empty() {
        put!(out, "{when_empty}");
        return Ok(out);
    }
    for c in cases {
        put!(
            out,
            "{}  {:<9} {:<7} {:<22} {:<12} {}",
            c.id.short(),
            c.status,
            c.priority,
            c.kind.to_string(),
            c.office,
            c.title
        );
    }
    Ok(out)
}

/// The merged record of a case. Devices (creator, note authors, custody,
/// conflicting values) are labelled with `names`.
pub fn record(r: &CaseRecord, names: &DeviceNames, format: Format) -> Result<String, ViewError> {
    if format == Format::Json {
        return json(r);
    }
    let mut out = String::new();
    put!(out, "case      {}", r.id);
    put!(out, "title     {}", r.title);
    put!(out, "kind      {}", r.kind);
    put!(out, "status    {}   priority {}", r.status, r.priority);
    put!(
        out,
        "office    {}   compartment {}",
        r.office,
        r.compartment
    );
    put!(
        out,
        "created   {} by {}",
        r.created_at,
        names.label(&r.creator)
    );
    if !r.summary.is_empty() {
        put!(out, "\nsummary\n  {}", r.summary.replace('\n', "\n  "));
    }
    if !r.subjects.is_empty() {
        put!(out, "\nsubjects");
        for s in &r.subjects {
            let ids: Vec<String> = s
                .identifiers
                .iter()
                .map(|i| format!("{}={}", i.kind, i.value))
                .collect();
            put!(
                out,
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
        put!(out, "\nevidence");
        for e in &r.evidence {
            put!(
                out,
                "  {}  {}  found at {}",
                short(&e.id.to_string()),
                e.description,
                opt(&e.found_at)
            );
            for c in &e.custody {
                put!(
                    out,
                    "      {}  {}  by {}  holder {}  location {}",
                    c.at,
                    c.action,
                    names.label(&c.by),
                    opt(&c.holder),
                    opt(&c.location)
                );
            }
        }
    }
    if !r.tasks.is_empty() {
        put!(out, "\ntasks");
        for t in &r.tasks {
            put!(
                out,
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
        put!(out, "\nnotes");
        for n in &r.notes {
            put!(out, "  {}  {}  {}", n.at, names.label(&n.author), n.text);
        }
    }
    if !r.links.is_empty() {
        put!(out, "\nlinks");
        for l in &r.links {
            put!(out, "  {}  {}", l.case, l.relation);
        }
    }
    if !r.attachments.is_empty() {
        put!(out, "\nattachments");
        for a in &r.attachments {
            put!(
                out,
                "  {}  {}  {} bytes  {}",
                short(&a.hash),
                a.name,
                a.size,
                a.media_type
            );
        }
    }
    if !r.conflicts.is_empty() {
        put!(
            out,
            "\nconflicts (concurrent edits; resolve by setting the field again)"
        );
        conflict_lines(&mut out, &r.conflicts, names);
    }
    Ok(out)
}

fn conflict_lines(out: &mut String, conflicts: &[Conflict], names: &DeviceNames) {
    for c in conflicts {
        put!(out, "  {}", c.path);
        for v in &c.values {
            put!(
                out,
                "      {}  {}",
                v.device
                    .map(|d| names.label(&d))
                    .unwrap_or_else(|| "unknown".into()),
                v.value
            );
        }
    }
}

/// The fields of a case holding concurrent values, each value with the
/// device that wrote it (`device_name` in JSON where known).
pub fn conflicts(
    conflicts: &[Conflict],
    names: &DeviceNames,
    format: Format,
) -> Result<String, ViewError> {
    if format == Format::Json {
        let named: Vec<NamedConflict<'_>> = conflicts
            .iter()
            .map(|c| NamedConflict {
                path: &c.path,
                values: c
                    .values
                    .iter()
                    .map(|v| Named {
                        item: v,
                        device_name: v.device.as_ref().and_then(|d| names.name(d)),
                    })
                    .collect(),
            })
            .collect();
        return json(&named);
    }
    let mut out = String::new();
    if conflicts.is_empty() {
        put!(out, "no conflicts");
    } else {
        conflict_lines(&mut out, conflicts, names);
    }
    Ok(out)
}

/// Every change of a case: short hash, time, device and what it changed
/// (`device_name` in JSON where known).
pub fn history(
    entries: &[HistoryEntry],
    names: &DeviceNames,
    format: Format,
) -> Result<String, ViewError> {
    if format == Format::Json {
        let named: Vec<Named<'_, HistoryEntry>> = entries
            .iter()
            .map(|h| Named {
                item: h,
                device_name: h.device.as_ref().and_then(|d| names.name(d)),
            })
            .collect();
        return json(&named);
    }
    let mut out = String::new();
    for h in entries {
        let who = match h.device {
            Some(d) => names.label(&d),
            None => "unknown actor".to_owned(),
        };
        put!(
            out,
            "{}  {}  {}  {}",
            short(&h.hash.to_string()),
            h.time,
            who,
            h.description.join("; ")
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use fieldsync_case::{CaseKind, ChangeHash};
    use fieldsync_identity::{DeviceId, SecretKey, Timestamp};
    use fieldsync_store::{NewCase, NewDevice, Store, StoreKind};

    fn device(n: u8) -> DeviceId {
        DeviceId::from_public_key(SecretKey::from_seed(&[n; 32]).public())
    }

    fn entry(d: Option<DeviceId>) -> HistoryEntry {
        HistoryEntry {
            hash: ChangeHash([7; 32]),
            device: d,
            incarnation: Some(0),
            actor: "00".into(),
            seq: 1,
            time: Timestamp::from_millis(1_790_000_000_000),
            message: Some("m".into()),
            description: vec!["set title".into(), "add note".into()],
        }
    }

    #[test]
    fn names_extend_json_without_changing_it() {
        let (a, b) = (device(1), device(2));
        let entries = vec![entry(Some(a)), entry(Some(b)), entry(None)];
        let plain = serde_json::to_string_pretty(&entries).unwrap() + "\n";
        let none = DeviceNames::new().with_this_device(a);
        assert_eq!(history(&entries, &none, Format::Json).unwrap(), plain);
        let mut names = DeviceNames::new();
        names.insert(b, "R. Alvarez");
        let named: serde_json::Value =
            serde_json::from_str(&history(&entries, &names, Format::Json).unwrap()).unwrap();
        assert_eq!(named[1]["device_name"], "R. Alvarez");
        assert!(named[0].get("device_name").is_none());
        assert_eq!(named[1]["description"][1], "add note");

        let conflicts_in = vec![Conflict {
            path: "title".into(),
            values: vec![
                ConflictValue {
                    value: "A".into(),
                    device: Some(a),
                    actor: "aa".into(),
                },
                ConflictValue {
                    value: "B".into(),
                    device: Some(b),
                    actor: "bb".into(),
                },
            ],
        }];
        let plain = serde_json::to_string_pretty(&conflicts_in).unwrap() + "\n";
        assert_eq!(
            conflicts(&conflicts_in, &DeviceNames::new(), Format::Json).unwrap(),
            plain
        );
        let text = conflicts(&conflicts_in, &names, Format::Text).unwrap();
        assert_eq!(
            text,
            format!(
                "  title\n      {}  \"A\"\n      {} (R. Alvarez)  \"B\"\n",
                a.short(),
                b.short()
            )
        );
    }

    #[test]
    fn text_views_label_devices() {
        let (a, b) = (device(1), device(2));
        let mut names = DeviceNames::new().with_this_device(a);
        names.insert(b, "R. Alvarez");
        let text = history(
            &[entry(Some(a)), entry(Some(b)), entry(None)],
            &names,
            Format::Text,
        )
        .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "07070707  2026-09-21T14:13:20.000Z  {} (this device)  set title; add note",
                a.short()
            )
        );
        assert!(lines[1].contains(&format!("{} (R. Alvarez)", b.short())));
        assert!(lines[2].contains("unknown actor"));
        assert_eq!(
            conflicts(&[], &names, Format::Text).unwrap(),
            "no conflicts\n"
        );
    }

    #[test]
    fn listing_and_record_of_a_real_case() {
        let now = Timestamp::from_millis(1_790_000_000_000);
        let store = Store::create_in_memory(NewDevice {
            seed: [3; 32],
            name: "rome-1",
            epoch: [4; 16],
            now,
            kind: StoreKind::Device,
        })
        .unwrap();
        assert_eq!(
            listing(&[], "nothing here", Format::Text).unwrap(),
            "nothing here\n"
        );
        let me = store.device().id();
        let id = store
            .create_case(
                &NewCase {
                    id: fieldsync_identity::CaseId::from_bytes([9; 16]),
                    kind: CaseKind::CulturalProperty,
                    office: "rome",
                    compartment: "general",
                    title: "Looted stele",
                },
                now,
            )
            .unwrap();
        store
            .edit_case(&id, now, "note", |d| {
                d.add_note(me, now, "seen at the port")
            })
            .unwrap();
        let cases = store.list_cases().unwrap();
        let text = listing(&cases, "-", Format::Text).unwrap();
        assert!(
            text.starts_with("09090909  ") && text.ends_with("Looted stele\n"),
            "{text}"
        );
        let record_text = record(
            &store.case_record(&id).unwrap(),
            &DeviceNames::new(),
            Format::Text,
        )
        .unwrap();
        assert!(record_text.starts_with(&format!("case      {id}\ntitle     Looted stele\n")));
        assert!(record_text.contains(&format!("  {}  seen at the port\n", me.short())));
        let mut names = DeviceNames::new();
        names.insert(me, "R. Alvarez");
        let named = record(&store.case_record(&id).unwrap(), &names, Format::Text).unwrap();
        assert!(named.contains(&format!("by {} (R. Alvarez)", me.short())));
        let json: serde_json::Value = serde_json::from_str(
            &record(&store.case_record(&id).unwrap(), &names, Format::Json).unwrap(),
        )
        .unwrap();
        assert_eq!(json["title"], "Looted stele");
    }
}
