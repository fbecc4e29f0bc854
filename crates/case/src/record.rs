//! The merged case record and its parts: the stable JSON format
//! headquarters reads (see [`CaseRecord`]).

use fieldsync_identity::{CaseId, DeviceId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::change::ChangeHash;
use crate::edit::check_blake3;
use crate::error::CaseError;
use crate::schema::{CaseKind, ItemId, NAME_MAX_CHARS, Priority, Status, check_line};

/// Version of the [`CaseRecord`] JSON format.
pub const RECORD_SCHEMA: u32 = 1;

/// One merged, attributable case record: what headquarters reads.
///
/// Its JSON form is a stable format (`"schema": 1`):
///
/// ```text
/// { "schema": 1, "id": "<32 hex>", "kind": "criminal-investigation", "office": "…",
///   "compartment": "…", "creator": "<64 hex device>", "created_at": "2026-11-28T15:12:11.000Z",
///   "title": "…", "status": "open", "priority": "normal", "summary": "…",
///   "subjects": [{"id": "<16 hex>", "name": "…", "role": "…"|null, "nationality": "…"|null,
///                 "identifiers": [{"kind": "…", "value": "…"}]}],
///   "evidence": [{"id": "<16 hex>", "description": "…", "found_at": "…"|null,
///                 "custody": [{"at": "<RFC 3339>", "by": "<64 hex>", "action": "…",
///                              "holder": "…"|null, "location": "…"|null}]}],
///   "tasks": [{"id": "<16 hex>", "text": "…", "assignee": "…"|null, "done": false}],
///   "notes": [{"author": "<64 hex>", "at": "<RFC 3339>", "text": "…"}],
///             (+ "claimed_author": "<64 hex>" when the note names another author)
///   "links": [{"case": "<32 hex>", "relation": "…"}],
///   "attachments": [{"hash": "<64 hex BLAKE3>", "name": "…", "size": 123, "media_type": "…"}],
///   "heads": ["<64 hex>"],
///   "conflicts": [{"path": "title", "values": [{"value": "…", "device": "<64 hex>"|null, "actor": "<hex>"}]}],
///   "problems": ["…"] }
/// ```
///
/// Subjects, evidence, tasks, links and attachments are sorted by id; notes
/// and custody entries keep their list order. Where a field holds concurrent
/// values, the record shows Automerge's deterministic winner and `conflicts`
/// lists every value. `problems` lists values that do not fit the schema
/// (written by a buggy or hostile peer): they are shown as described there,
/// never silently.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseRecord {
    /// Format version, [`RECORD_SCHEMA`].
    pub schema: u32,
    /// The case id (from the genesis).
    pub id: CaseId,
    /// Its kind (from the genesis).
    pub kind: CaseKind,
    /// Owning office (from the genesis).
    pub office: String,
    /// Compartment (from the genesis).
    pub compartment: String,
    /// Creating device (from the genesis).
    pub creator: DeviceId,
    /// Creation time (from the genesis).
    pub created_at: Timestamp,
    /// Title.
    pub title: String,
    /// Status.
    pub status: Status,
    /// Priority.
    pub priority: Priority,
    /// Summary text.
    pub summary: String,
    /// Subjects, by id.
    pub subjects: Vec<SubjectRecord>,
    /// Evidence items, by id.
    pub evidence: Vec<EvidenceRecord>,
    /// Tasks, by id.
    pub tasks: Vec<TaskRecord>,
    /// Notes, in log order.
    pub notes: Vec<NoteRecord>,
    /// Links to other cases, by case id.
    pub links: Vec<LinkRecord>,
    /// Attachment references, by hash.
    pub attachments: Vec<AttachmentRef>,
    /// The document heads this record reflects, sorted.
    pub heads: Vec<ChangeHash>,
    /// Fields holding concurrent values.
    pub conflicts: Vec<Conflict>,
    /// Values that do not fit the schema, and how they are shown.
    pub problems: Vec<String>,
}

/// A subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectRecord {
    /// Its id.
    pub id: ItemId,
    /// Name.
    pub name: String,
    /// Role in the case.
    pub role: Option<String>,
    /// Nationality.
    pub nationality: Option<String>,
    /// Identifiers, in list order.
    pub identifiers: Vec<Identifier>,
}

/// An identifier of a subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identifier {
    /// Kind ("passport").
    pub kind: String,
    /// Value.
    pub value: String,
}

/// An evidence item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRecord {
    /// Its id.
    pub id: ItemId,
    /// Description.
    pub description: String,
    /// Where it was found.
    pub found_at: Option<String>,
    /// Chain of custody, in list order.
    pub custody: Vec<CustodyRecord>,
}

/// A chain-of-custody entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustodyRecord {
    /// When.
    pub at: Timestamp,
    /// Recording device.
    pub by: DeviceId,
    /// What happened.
    pub action: String,
    /// Holder afterwards.
    pub holder: Option<String>,
    /// Location afterwards.
    pub location: Option<String>,
}

/// A task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Its id.
    pub id: ItemId,
    /// What to do.
    pub text: String,
    /// Who does it.
    pub assignee: Option<String>,
    /// Whether it is done.
    pub done: bool,
}

/// A note of the append-only log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteRecord {
    /// The device that wrote the note: the one whose signed change created
    /// it (its Automerge actor is bound to the signing key), whatever the
    /// note's own `author` field says.
    pub author: DeviceId,
    /// What the note's `author` field claims, when it names another device
    /// than [`NoteRecord::author`] (a forged or mistaken attribution; also
    /// listed in the record's `problems`). Absent from the JSON otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_author: Option<DeviceId>,
    /// When it was written.
    pub at: Timestamp,
    /// Text.
    pub text: String,
}

/// A link to another case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    /// The other case.
    pub case: CaseId,
    /// How they relate.
    pub relation: String,
}

/// A field holding concurrent values. `path` names it: `title`, `status`,
/// `tasks/<id>/assignee`, `notes/3/text`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    /// Where.
    pub path: String,
    /// Every concurrent value, in Automerge's order (the winner last).
    pub values: Vec<ConflictValue>,
}

/// One of the concurrent values of a field, and who wrote it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictValue {
    /// The value; an object is shown as `"(map)"`, `"(list)"` or `"(text)"`.
    pub value: serde_json::Value,
    /// The device whose actor wrote it; `None` when the actor is not a FieldSync actor.
    pub device: Option<DeviceId>,
    /// The writing actor, in hex (device key ‖ incarnation).
    pub actor: String,
}

/// The cheap part of a case, for listings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseSummary {
    /// Title.
    pub title: String,
    /// Status.
    pub status: Status,
    /// Priority.
    pub priority: Priority,
}

/// A reference to an attachment stored outside the document, by content hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRef {
    /// BLAKE3 hash of the content: 64 lowercase hex digits.
    pub hash: String,
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Media type ("image/jpeg").
    pub media_type: String,
}

impl AttachmentRef {
    /// Checks the hash, name and media type.
    pub fn validate(&self) -> Result<(), CaseError> {
        check_blake3(&self.hash)?;
        check_line("attachment name", &self.name, NAME_MAX_CHARS, false)?;
        check_line("media type", &self.media_type, 127, false)?;
        if !self.media_type.contains('/') || self.media_type.contains(' ') {
            return Err(CaseError::InvalidValue {
                field: "media type",
                reason: format!("{:?} is not of the form type/subtype", self.media_type),
            });
        }
        Ok(())
    }
}
