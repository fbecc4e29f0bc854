//! Local edits of a [`CaseDoc`]. Each mutator validates its input first,
//! then adds operations to the pending transaction; [`CaseDoc::commit`]
//! seals them into a change.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, Value};
use fieldsync_identity::{CaseId, DeviceId, Timestamp};

use crate::doc::CaseDoc;
use crate::error::{CaseError, am};
use crate::record::AttachmentRef;
use crate::schema::{
    DOC_SCHEMA, Field, ItemId, NAME_MAX_CHARS, Priority, SUBJECT_FIELDS, SUMMARY_MAX_CHARS, Status,
    TEXT_MAX_CHARS, TITLE_MAX_CHARS, check_line, check_text, key,
};

/// Most identifiers one subject may carry.
pub const MAX_IDENTIFIERS: usize = 64;

/// A new subject (a person or organisation of interest).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubjectInput {
    /// Name, as known.
    pub name: String,
    /// Role in the case ("suspect", "witness", "victim", …).
    pub role: Option<String>,
    /// Nationality.
    pub nationality: Option<String>,
    /// Identifiers as (kind, value): ("passport", "X1234567"), ("phone", …).
    pub identifiers: Vec<(String, String)>,
}

/// One chain-of-custody entry of an evidence item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustodyInput {
    /// When it happened.
    pub at: Timestamp,
    /// The device that records it.
    pub by: DeviceId,
    /// What happened ("seized", "transferred", "sealed", …).
    pub action: String,
    /// Who holds the item afterwards.
    pub holder: Option<String>,
    /// Where the item is afterwards.
    pub location: Option<String>,
}

pub(crate) fn check_blake3(hash: &str) -> Result<(), CaseError> {
    if hash.len() != 64
        || !hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(CaseError::InvalidValue {
            field: "attachment hash",
            reason: format!("{hash:?} is not 64 lowercase hex digits (a BLAKE3 hash)"),
        });
    }
    Ok(())
}

fn check_opt_line(field: &'static str, value: Option<&str>) -> Result<(), CaseError> {
    value.map_or(Ok(()), |v| check_line(field, v, NAME_MAX_CHARS, false))
}

/// The object stored under a root key, if it has the expected type.
pub(crate) fn root_obj(
    doc: &AutoCommit,
    name: &'static str,
    typ: ObjType,
    missing: &'static str,
) -> Result<ObjId, CaseError> {
    match doc.get(ROOT, name).map_err(am("reading the case"))? {
        Some((Value::Object(t), id)) if t == typ => Ok(id),
        _ => Err(CaseError::NotACase { missing }),
    }
}

/// The map of an item under `map`, or [`CaseError::UnknownItem`].
fn item_obj(
    doc: &AutoCommit,
    map: &ObjId,
    kind: &'static str,
    id: &str,
) -> Result<ObjId, CaseError> {
    match doc.get(map, id).map_err(am("reading the case"))? {
        Some((Value::Object(ObjType::Map), obj)) => Ok(obj),
        _ => Err(CaseError::UnknownItem {
            kind,
            id: id.to_owned(),
        }),
    }
}

fn require_case(doc: &AutoCommit) -> Result<(), CaseError> {
    match doc.get(ROOT, key::SCHEMA).map_err(am("reading the case"))? {
        Some(_) => Ok(()),
        None => Err(CaseError::NotACase {
            missing: "schema version",
        }),
    }
}

fn put_opt(
    doc: &mut AutoCommit,
    obj: &ObjId,
    name: &str,
    value: Option<&str>,
) -> Result<(), CaseError> {
    if let Some(v) = value {
        doc.put(obj, name, v).map_err(am("writing a field"))?;
    }
    Ok(())
}

/// Sets `name` to `value`, or deletes it when `value` is `None`.
fn put_or_clear(
    doc: &mut AutoCommit,
    obj: &ObjId,
    name: &str,
    value: Option<&str>,
) -> Result<(), CaseError> {
    match value {
        Some(v) => doc.put(obj, name, v).map_err(am("writing a field")),
        None if doc.get(obj, name).map_err(am("reading a field"))?.is_some() => {
            doc.delete(obj, name).map_err(am("clearing a field"))
        }
        None => Ok(()),
    }
}

fn add_identifier(
    doc: &mut AutoCommit,
    list: &ObjId,
    kind: &str,
    value: &str,
) -> Result<(), CaseError> {
    let at = doc.length(list);
    let entry = doc
        .insert_object(list, at, ObjType::Map)
        .map_err(am("adding an identifier"))?;
    doc.put(&entry, key::KIND, kind)
        .map_err(am("adding an identifier"))?;
    doc.put(&entry, key::VALUE, value)
        .map_err(am("adding an identifier"))
}

fn check_identifier(kind: &str, value: &str) -> Result<(), CaseError> {
    check_line("identifier kind", kind, NAME_MAX_CHARS, false)?;
    check_line("identifier value", value, NAME_MAX_CHARS, false)
}

impl CaseDoc {
    /// Makes an empty document a case (schema 1): title, status `open`,
    /// priority `normal`, an empty summary, and empty subjects, evidence,
    /// tasks, notes, links and attachments. Called once, by the device that
    /// creates the case; every other device starts from its changes.
    pub fn init(&mut self, title: &str) -> Result<(), CaseError> {
        check_line("title", title, TITLE_MAX_CHARS, false)?;
        self.with("initializing a case", |doc| {
            if doc
                .get(ROOT, key::SCHEMA)
                .map_err(am("reading the case"))?
                .is_some()
            {
                return Err(CaseError::AlreadyInitialized);
            }
            let op = "initializing a case";
            doc.put(ROOT, key::SCHEMA, ScalarValue::Uint(DOC_SCHEMA))
                .map_err(am(op))?;
            doc.put(ROOT, key::TITLE, title).map_err(am(op))?;
            doc.put(ROOT, key::STATUS, Status::Open.name())
                .map_err(am(op))?;
            doc.put(ROOT, key::PRIORITY, Priority::Normal.name())
                .map_err(am(op))?;
            for (name, typ) in [
                (key::SUMMARY, ObjType::Text),
                (key::SUBJECTS, ObjType::Map),
                (key::EVIDENCE, ObjType::Map),
                (key::TASKS, ObjType::Map),
                (key::NOTES, ObjType::List),
                (key::LINKS, ObjType::Map),
                (key::ATTACHMENTS, ObjType::Map),
            ] {
                doc.put_object(ROOT, name, typ).map_err(am(op))?;
            }
            Ok(())
        })
    }

    /// Sets a top-level field from text, as `case set CASE FIELD VALUE` does.
    pub fn set_field(&mut self, field: Field, value: &str) -> Result<(), CaseError> {
        match field {
            Field::Title => self.set_title(value),
            Field::Status => self.set_status(value.parse()?),
            Field::Priority => self.set_priority(value.parse()?),
            Field::Summary => self.set_summary(value),
        }
    }

    /// Sets the title (1..=512 characters, one line).
    pub fn set_title(&mut self, title: &str) -> Result<(), CaseError> {
        check_line("title", title, TITLE_MAX_CHARS, false)?;
        self.put_root(key::TITLE, title)
    }

    /// Sets the status.
    pub fn set_status(&mut self, status: Status) -> Result<(), CaseError> {
        self.put_root(key::STATUS, status.name())
    }

    /// Sets the priority.
    pub fn set_priority(&mut self, priority: Priority) -> Result<(), CaseError> {
        self.put_root(key::PRIORITY, priority.name())
    }

    fn put_root(&mut self, name: &'static str, value: &str) -> Result<(), CaseError> {
        self.with("setting a field", |doc| {
            require_case(doc)?;
            doc.put(ROOT, name, value).map_err(am("setting a field"))
        })
    }

    /// Replaces the whole summary with `text`. Only the difference is
    /// written (by character), so concurrent edits elsewhere in the summary
    /// merge instead of being overwritten.
    pub fn set_summary(&mut self, text: &str) -> Result<(), CaseError> {
        check_text("summary", text, SUMMARY_MAX_CHARS, true)?;
        self.with("editing the summary", |doc| {
            let summary = root_obj(doc, key::SUMMARY, ObjType::Text, "summary text")?;
            doc.update_text(&summary, text)
                .map_err(am("editing the summary"))
        })
    }

    /// Deletes `del` characters at `pos` of the summary and inserts `text`
    /// there. Positions count Unicode code points (`char`s).
    pub fn splice_summary(&mut self, pos: usize, del: usize, text: &str) -> Result<(), CaseError> {
        check_text("summary", text, SUMMARY_MAX_CHARS, true)?;
        self.with("editing the summary", |doc| {
            let summary = root_obj(doc, key::SUMMARY, ObjType::Text, "summary text")?;
            let len = doc.length(&summary);
            let end = pos.checked_add(del).filter(|&e| e <= len);
            let Some(end) = end else {
                return Err(CaseError::InvalidValue {
                    field: "summary splice",
                    reason: format!(
                        "{pos}+{del} is past the end of the summary ({len} characters)"
                    ),
                });
            };
            let new_len = len - (end - pos) + text.chars().count();
            if new_len > SUMMARY_MAX_CHARS {
                return Err(CaseError::InvalidValue {
                    field: "summary",
                    reason: format!(
                        "{new_len} characters is longer than the limit of {SUMMARY_MAX_CHARS}"
                    ),
                });
            }
            let del = isize::try_from(del).map_err(|_| CaseError::InvalidValue {
                field: "summary splice",
                reason: "deletion too long".into(),
            })?;
            doc.splice_text(&summary, pos, del, text)
                .map_err(am("editing the summary"))
        })
    }

    /// Adds a subject under a fresh id.
    pub fn add_subject(&mut self, id: ItemId, s: &SubjectInput) -> Result<(), CaseError> {
        check_line("subject name", &s.name, NAME_MAX_CHARS, false)?;
        check_opt_line("subject role", s.role.as_deref())?;
        check_opt_line("subject nationality", s.nationality.as_deref())?;
        if s.identifiers.len() > MAX_IDENTIFIERS {
            return Err(CaseError::InvalidValue {
                field: "subject identifiers",
                reason: format!(
                    "{} identifiers; at most {MAX_IDENTIFIERS}",
                    s.identifiers.len()
                ),
            });
        }
        for (kind, value) in &s.identifiers {
            check_identifier(kind, value)?;
        }
        let id = id.to_string();
        self.with("adding a subject", |doc| {
            let subjects = root_obj(doc, key::SUBJECTS, ObjType::Map, "subjects map")?;
            if doc
                .get(&subjects, &id)
                .map_err(am("reading the case"))?
                .is_some()
            {
                return Err(CaseError::DuplicateItem {
                    kind: "subject",
                    id,
                });
            }
            let op = "adding a subject";
            let subject = doc
                .put_object(&subjects, &id, ObjType::Map)
                .map_err(am(op))?;
            doc.put(&subject, key::NAME, s.name.as_str())
                .map_err(am(op))?;
            put_opt(doc, &subject, key::ROLE, s.role.as_deref())?;
            put_opt(doc, &subject, key::NATIONALITY, s.nationality.as_deref())?;
            let list = doc
                .put_object(&subject, key::IDENTIFIERS, ObjType::List)
                .map_err(am(op))?;
            for (kind, value) in &s.identifiers {
                add_identifier(doc, &list, kind, value)?;
            }
            Ok(())
        })
    }

    /// Sets one field of a subject: `name`, `role` or `nationality`. An
    /// empty value clears `role` and `nationality`; `name` cannot be empty.
    pub fn set_subject_field(
        &mut self,
        id: ItemId,
        name: &str,
        value: &str,
    ) -> Result<(), CaseError> {
        let Some(&field) = SUBJECT_FIELDS.iter().find(|f| **f == name) else {
            return Err(CaseError::UnknownName {
                what: "subject field",
                name: name.to_owned(),
                valid: SUBJECT_FIELDS.join(", "),
            });
        };
        let value = if field == key::NAME {
            check_line("subject name", value, NAME_MAX_CHARS, false)?;
            Some(value)
        } else {
            check_line("subject field", value, NAME_MAX_CHARS, true)?;
            Some(value).filter(|v| !v.trim().is_empty())
        };
        let id = id.to_string();
        self.with("editing a subject", |doc| {
            let subjects = root_obj(doc, key::SUBJECTS, ObjType::Map, "subjects map")?;
            let subject = item_obj(doc, &subjects, "subject", &id)?;
            put_or_clear(doc, &subject, field, value)
        })
    }

    /// Adds an identifier (kind, value) to a subject.
    pub fn add_subject_identifier(
        &mut self,
        id: ItemId,
        kind: &str,
        value: &str,
    ) -> Result<(), CaseError> {
        check_identifier(kind, value)?;
        let id = id.to_string();
        self.with("editing a subject", |doc| {
            let subjects = root_obj(doc, key::SUBJECTS, ObjType::Map, "subjects map")?;
            let subject = item_obj(doc, &subjects, "subject", &id)?;
            let list = match doc
                .get(&subject, key::IDENTIFIERS)
                .map_err(am("reading the case"))?
            {
                Some((Value::Object(ObjType::List), list)) => list,
                _ => doc
                    .put_object(&subject, key::IDENTIFIERS, ObjType::List)
                    .map_err(am("editing a subject"))?,
            };
            if doc.length(&list) >= MAX_IDENTIFIERS {
                return Err(CaseError::InvalidValue {
                    field: "subject identifiers",
                    reason: format!("at most {MAX_IDENTIFIERS}"),
                });
            }
            add_identifier(doc, &list, kind, value)
        })
    }

    /// Removes a subject.
    pub fn remove_subject(&mut self, id: ItemId) -> Result<(), CaseError> {
        self.remove_item(key::SUBJECTS, "subjects map", "subject", id.to_string())
    }

    fn remove_item(
        &mut self,
        map: &'static str,
        missing: &'static str,
        kind: &'static str,
        id: String,
    ) -> Result<(), CaseError> {
        self.with("removing an item", |doc| {
            let obj = root_obj(doc, map, ObjType::Map, missing)?;
            if doc
                .get(&obj, &id)
                .map_err(am("reading the case"))?
                .is_none()
            {
                return Err(CaseError::UnknownItem { kind, id });
            }
            doc.delete(&obj, &id).map_err(am("removing an item"))
        })
    }

    /// Adds an evidence item with an empty chain of custody.
    pub fn add_evidence(
        &mut self,
        id: ItemId,
        description: &str,
        found_at: Option<&str>,
    ) -> Result<(), CaseError> {
        check_text("evidence description", description, TEXT_MAX_CHARS, false)?;
        check_opt_line("evidence found_at", found_at)?;
        let id = id.to_string();
        self.with("adding evidence", |doc| {
            let evidence = root_obj(doc, key::EVIDENCE, ObjType::Map, "evidence map")?;
            if doc
                .get(&evidence, &id)
                .map_err(am("reading the case"))?
                .is_some()
            {
                return Err(CaseError::DuplicateItem {
                    kind: "evidence",
                    id,
                });
            }
            let op = "adding evidence";
            let item = doc
                .put_object(&evidence, &id, ObjType::Map)
                .map_err(am(op))?;
            doc.put(&item, key::DESCRIPTION, description)
                .map_err(am(op))?;
            put_opt(doc, &item, key::FOUND_AT, found_at)?;
            doc.put_object(&item, key::CUSTODY, ObjType::List)
                .map_err(am(op))?;
            Ok(())
        })
    }

    /// Appends an entry to an evidence item's chain of custody.
    pub fn add_custody(&mut self, evidence: ItemId, entry: &CustodyInput) -> Result<(), CaseError> {
        check_line("custody action", &entry.action, NAME_MAX_CHARS, false)?;
        check_opt_line("custody holder", entry.holder.as_deref())?;
        check_opt_line("custody location", entry.location.as_deref())?;
        let id = evidence.to_string();
        self.with("recording custody", |doc| {
            let map = root_obj(doc, key::EVIDENCE, ObjType::Map, "evidence map")?;
            let item = item_obj(doc, &map, "evidence", &id)?;
            let list = match doc
                .get(&item, key::CUSTODY)
                .map_err(am("reading the case"))?
            {
                Some((Value::Object(ObjType::List), list)) => list,
                _ => {
                    return Err(CaseError::NotACase {
                        missing: "custody list",
                    });
                }
            };
            let op = "recording custody";
            let at = doc.length(&list);
            let e = doc.insert_object(&list, at, ObjType::Map).map_err(am(op))?;
            doc.put(&e, key::AT, ScalarValue::Timestamp(entry.at.as_millis()))
                .map_err(am(op))?;
            doc.put(&e, key::BY, entry.by.to_string()).map_err(am(op))?;
            doc.put(&e, key::ACTION, entry.action.as_str())
                .map_err(am(op))?;
            put_opt(doc, &e, key::HOLDER, entry.holder.as_deref())?;
            put_opt(doc, &e, key::LOCATION, entry.location.as_deref())
        })
    }

    /// Adds a task, not done.
    pub fn add_task(
        &mut self,
        id: ItemId,
        text: &str,
        assignee: Option<&str>,
    ) -> Result<(), CaseError> {
        check_text("task text", text, TEXT_MAX_CHARS, false)?;
        check_opt_line("task assignee", assignee)?;
        let id = id.to_string();
        self.with("adding a task", |doc| {
            let tasks = root_obj(doc, key::TASKS, ObjType::Map, "tasks map")?;
            if doc
                .get(&tasks, &id)
                .map_err(am("reading the case"))?
                .is_some()
            {
                return Err(CaseError::DuplicateItem { kind: "task", id });
            }
            let op = "adding a task";
            let task = doc.put_object(&tasks, &id, ObjType::Map).map_err(am(op))?;
            doc.put(&task, key::TEXT, text).map_err(am(op))?;
            put_opt(doc, &task, key::ASSIGNEE, assignee)?;
            doc.put(&task, key::DONE, false).map_err(am(op))
        })
    }

    /// Marks a task done or not done.
    pub fn set_task_done(&mut self, id: ItemId, done: bool) -> Result<(), CaseError> {
        let id = id.to_string();
        self.with("editing a task", |doc| {
            let tasks = root_obj(doc, key::TASKS, ObjType::Map, "tasks map")?;
            let task = item_obj(doc, &tasks, "task", &id)?;
            doc.put(&task, key::DONE, done)
                .map_err(am("editing a task"))
        })
    }

    /// Assigns a task, or unassigns it with `None`.
    pub fn assign_task(&mut self, id: ItemId, assignee: Option<&str>) -> Result<(), CaseError> {
        check_opt_line("task assignee", assignee)?;
        let id = id.to_string();
        self.with("editing a task", |doc| {
            let tasks = root_obj(doc, key::TASKS, ObjType::Map, "tasks map")?;
            let task = item_obj(doc, &tasks, "task", &id)?;
            put_or_clear(doc, &task, key::ASSIGNEE, assignee)
        })
    }

    /// Appends a note to the append-only notes log.
    pub fn add_note(
        &mut self,
        author: DeviceId,
        at: Timestamp,
        text: &str,
    ) -> Result<(), CaseError> {
        check_text("note", text, TEXT_MAX_CHARS, false)?;
        self.with("adding a note", |doc| {
            let notes = root_obj(doc, key::NOTES, ObjType::List, "notes list")?;
            let op = "adding a note";
            let end = doc.length(&notes);
            let note = doc
                .insert_object(&notes, end, ObjType::Map)
                .map_err(am(op))?;
            doc.put(&note, key::AUTHOR, author.to_string())
                .map_err(am(op))?;
            doc.put(&note, key::AT, ScalarValue::Timestamp(at.as_millis()))
                .map_err(am(op))?;
            doc.put(&note, key::TEXT, text).map_err(am(op))
        })
    }

    /// Links this case to another (or changes the relation of an existing link).
    pub fn add_link(&mut self, other: CaseId, relation: &str) -> Result<(), CaseError> {
        check_line("link relation", relation, NAME_MAX_CHARS, false)?;
        self.with("adding a link", |doc| {
            let links = root_obj(doc, key::LINKS, ObjType::Map, "links map")?;
            doc.put(&links, other.to_string(), relation)
                .map_err(am("adding a link"))
        })
    }

    /// Removes the link to another case.
    pub fn remove_link(&mut self, other: CaseId) -> Result<(), CaseError> {
        self.remove_item(key::LINKS, "links map", "link", other.to_string())
    }

    /// Adds a reference to an attachment, keyed by its hash.
    pub fn add_attachment(&mut self, r: &AttachmentRef) -> Result<(), CaseError> {
        r.validate()?;
        self.with("adding an attachment", |doc| {
            let map = root_obj(doc, key::ATTACHMENTS, ObjType::Map, "attachments map")?;
            if doc
                .get(&map, &r.hash)
                .map_err(am("reading the case"))?
                .is_some()
            {
                return Err(CaseError::DuplicateItem {
                    kind: "attachment",
                    id: r.hash.clone(),
                });
            }
            let op = "adding an attachment";
            let a = doc
                .put_object(&map, r.hash.as_str(), ObjType::Map)
                .map_err(am(op))?;
            doc.put(&a, key::NAME, r.name.as_str()).map_err(am(op))?;
            doc.put(&a, key::SIZE, ScalarValue::Uint(r.size))
                .map_err(am(op))?;
            doc.put(&a, key::MEDIA_TYPE, r.media_type.as_str())
                .map_err(am(op))
        })
    }

    /// Removes the reference to an attachment (the content stays where it is).
    pub fn remove_attachment(&mut self, hash: &str) -> Result<(), CaseError> {
        check_blake3(hash)?;
        self.remove_item(
            key::ATTACHMENTS,
            "attachments map",
            "attachment",
            hash.to_owned(),
        )
    }
}
