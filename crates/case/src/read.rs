//! Reading a case: the merged [`CaseRecord`] headquarters reads, the
//! [`Conflict`]s Automerge keeps, and a cheap [`CaseSummary`].

use std::collections::BTreeMap;

use automerge::{AutoCommit, ObjId, ObjType, Prop, ROOT, ReadDoc, ScalarValue, Value, ValueRef};
use fieldsync_identity::{ActorBinding, CaseId, DeviceId, Timestamp};

use crate::change::ChangeHash;
use crate::doc::CaseDoc;
use crate::error::{CaseError, am};
use crate::genesis::Genesis;
use crate::record::{
    AttachmentRef, CaseRecord, CaseSummary, Conflict, ConflictValue, CustodyRecord, EvidenceRecord,
    Identifier, LinkRecord, NoteRecord, RECORD_SCHEMA, SubjectRecord, TaskRecord,
};
use crate::schema::{ItemId, Priority, Status, key};

/// Objects nested deeper than this are not read (the schema needs 4 levels;
/// a hostile peer could nest far deeper to exhaust the stack).
const MAX_DEPTH: usize = 8;

/// An owned copy of the document tree (winners only).
enum Node {
    /// A map, with the actor id of the operation that created it (none for
    /// the root): a note's author is the device that made its map.
    Map(BTreeMap<String, Node>, Option<Vec<u8>>),
    List(Vec<Node>),
    Text(String),
    Scalar(ScalarValue),
    /// An object below [`MAX_DEPTH`], not read.
    TooDeep,
}

impl CaseDoc {
    /// The merged record of this case, with its genesis.
    pub fn record(&mut self, genesis: &Genesis) -> Result<CaseRecord, CaseError> {
        self.with_idle("reading a case", |doc| {
            let mut conflicts = Vec::new();
            let root = walk(doc, &ROOT, ObjType::Map, &mut Vec::new(), &mut conflicts)?;
            let mut heads: Vec<ChangeHash> =
                doc.get_heads().into_iter().map(ChangeHash::from).collect();
            heads.sort_unstable();
            let mut problems = Vec::new();
            Ok(build_record(
                genesis,
                &root,
                heads,
                conflicts,
                &mut problems,
            ))
        })
    }

    /// Every field that holds concurrent values, sorted by path.
    pub fn conflicts(&mut self) -> Result<Vec<Conflict>, CaseError> {
        self.with("listing conflicts", |doc| {
            let mut conflicts = Vec::new();
            walk(doc, &ROOT, ObjType::Map, &mut Vec::new(), &mut conflicts)?;
            Ok(conflicts)
        })
    }

    /// The summary text, including pending local edits (positions for
    /// [`CaseDoc::splice_summary`] count its `char`s).
    pub fn summary_text(&mut self) -> Result<String, CaseError> {
        self.with("reading the summary", |doc| {
            match doc
                .get(ROOT, key::SUMMARY)
                .map_err(am("reading the summary"))?
            {
                Some((Value::Object(ObjType::Text), id)) => {
                    doc.text(&id).map_err(am("reading the summary"))
                }
                _ => Err(CaseError::NotACase {
                    missing: "summary text",
                }),
            }
        })
    }

    /// Title, status and priority (values that do not fit the schema read
    /// as empty, `open` and `normal`).
    pub fn summary(&mut self) -> Result<CaseSummary, CaseError> {
        self.with("reading a case summary", |doc| {
            let text = |name: &str| -> Result<Option<String>, CaseError> {
                Ok(
                    match doc.get(ROOT, name).map_err(am("reading a case summary"))? {
                        Some((Value::Scalar(s), _)) => match s.as_ref() {
                            ScalarValue::Str(s) => Some(s.to_string()),
                            _ => None,
                        },
                        _ => None,
                    },
                )
            };
            Ok(CaseSummary {
                title: text(key::TITLE)?.unwrap_or_default(),
                status: text(key::STATUS)?
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(Status::Open),
                priority: text(key::PRIORITY)?
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(Priority::Normal),
            })
        })
    }
}

/// Copies the tree under `obj`, collecting conflicts on the way.
fn walk(
    doc: &AutoCommit,
    obj: &ObjId,
    typ: ObjType,
    path: &mut Vec<String>,
    conflicts: &mut Vec<Conflict>,
) -> Result<Node, CaseError> {
    if path.len() > MAX_DEPTH {
        return Ok(Node::TooDeep);
    }
    match typ {
        ObjType::Map | ObjType::Table => {
            let creator = match obj {
                ObjId::Id(_, actor, _) => Some(actor.to_bytes().to_vec()),
                ObjId::Root => None,
            };
            let mut out = BTreeMap::new();
            for item in doc.map_range(obj, ..) {
                let k = item.key.to_string();
                path.push(k.clone());
                if item.conflict {
                    conflicts.push(conflict_at(doc, obj, Prop::Map(k.clone()), path)?);
                }
                let node = match item.value {
                    ValueRef::Object(t) => walk(doc, &item.id(), t, path, conflicts)?,
                    scalar => scalar_node(scalar),
                };
                path.pop();
                out.insert(k, node);
            }
            Ok(Node::Map(out, creator))
        }
        ObjType::List => {
            let mut out = Vec::new();
            for item in doc.list_range(obj, ..) {
                path.push(item.index.to_string());
                if item.conflict {
                    conflicts.push(conflict_at(doc, obj, Prop::Seq(item.index), path)?);
                }
                let node = match item.value {
                    ValueRef::Object(t) => walk(doc, &item.id(), t, path, conflicts)?,
                    scalar => scalar_node(scalar),
                };
                path.pop();
                out.push(node);
            }
            Ok(Node::List(out))
        }
        ObjType::Text => Ok(Node::Text(doc.text(obj).map_err(am("reading text"))?)),
    }
}

fn scalar_node(v: ValueRef<'_>) -> Node {
    match v.into_value() {
        Value::Scalar(s) => Node::Scalar(s.into_owned()),
        Value::Object(_) => Node::TooDeep,
    }
}

fn conflict_at(
    doc: &AutoCommit,
    obj: &ObjId,
    prop: Prop,
    path: &[String],
) -> Result<Conflict, CaseError> {
    let values = doc
        .get_all(obj, prop)
        .map_err(am("reading a conflict"))?
        .into_iter()
        .map(|(value, id)| {
            let actor = match &id {
                ObjId::Id(_, actor, _) => actor.to_bytes().to_vec(),
                ObjId::Root => Vec::new(),
            };
            ConflictValue {
                value: value_json(&value),
                device: ActorBinding::parse(&actor).map(|b| b.device),
                actor: hex::encode(&actor),
            }
        })
        .collect();
    Ok(Conflict {
        path: path.join("/"),
        values,
    })
}

fn value_json(v: &Value<'_>) -> serde_json::Value {
    match v {
        Value::Object(ObjType::Map | ObjType::Table) => "(map)".into(),
        Value::Object(ObjType::List) => "(list)".into(),
        Value::Object(ObjType::Text) => "(text)".into(),
        Value::Scalar(s) => scalar_json(s),
    }
}

/// A scalar as JSON: timestamps as RFC 3339 text, bytes as hex.
pub(crate) fn scalar_json(s: &ScalarValue) -> serde_json::Value {
    use serde_json::Value as J;
    match s {
        ScalarValue::Str(s) => J::String(s.to_string()),
        ScalarValue::Int(i) => J::from(*i),
        ScalarValue::Uint(u) => J::from(*u),
        ScalarValue::F64(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        ScalarValue::Counter(c) => J::from(i64::from(c)),
        ScalarValue::Timestamp(ms) => J::String(Timestamp::from_millis(*ms).to_string()),
        ScalarValue::Boolean(b) => J::Bool(*b),
        ScalarValue::Bytes(b) => J::String(hex::encode(b)),
        ScalarValue::Unknown { .. } | ScalarValue::Null => J::Null,
    }
}

/// Reads typed values out of a [`Node`] tree, noting what does not fit.
struct Fields<'a> {
    problems: &'a mut Vec<String>,
    /// Device ids already parsed (parsing decompresses a curve point; a case
    /// has thousands of entries by a handful of devices).
    devices: BTreeMap<String, DeviceId>,
    /// Actor ids already parsed, to their device (`None`: not a FieldSync actor).
    actors: BTreeMap<Vec<u8>, Option<DeviceId>>,
}

/// `path/k`, or `k` at the root.
fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_owned()
    } else {
        format!("{path}/{k}")
    }
}

impl Fields<'_> {
    fn problem(&mut self, path: &str, what: &str) {
        self.problems.push(format!("{path}: {what}"));
    }

    fn map<'n>(
        &mut self,
        node: Option<&'n Node>,
        path: &str,
    ) -> Option<&'n BTreeMap<String, Node>> {
        match node {
            Some(Node::Map(m, _)) => Some(m),
            None => None,
            Some(_) => {
                self.problem(path, "is not a map; ignored");
                None
            }
        }
    }

    fn list<'n>(&mut self, node: Option<&'n Node>, path: &str) -> &'n [Node] {
        match node {
            Some(Node::List(l)) => l,
            None => &[],
            Some(_) => {
                self.problem(path, "is not a list; ignored");
                &[]
            }
        }
    }

    /// An optional string; anything else is a problem and reads as absent.
    fn opt_str(&mut self, m: &BTreeMap<String, Node>, k: &str, path: &str) -> Option<String> {
        match m.get(k) {
            None => None,
            Some(Node::Scalar(ScalarValue::Str(s))) => Some(s.to_string()),
            Some(Node::Text(s)) => Some(s.clone()),
            Some(_) => {
                self.problem(&join(path, k), "is not text; shown as absent");
                None
            }
        }
    }

    /// A required string; absence or anything else reads as "".
    fn str(&mut self, m: &BTreeMap<String, Node>, k: &str, path: &str) -> String {
        if !m.contains_key(k) {
            self.problem(&join(path, k), "is missing; shown as empty");
        }
        self.opt_str(m, k, path).unwrap_or_default()
    }

    fn time(&mut self, m: &BTreeMap<String, Node>, k: &str, path: &str) -> Option<Timestamp> {
        match m.get(k) {
            Some(Node::Scalar(ScalarValue::Timestamp(ms) | ScalarValue::Int(ms))) => {
                Some(Timestamp::from_millis(*ms))
            }
            _ => {
                self.problem(&join(path, k), "is not a time; entry left out");
                None
            }
        }
    }

    fn device(&mut self, m: &BTreeMap<String, Node>, k: &str, path: &str) -> Option<DeviceId> {
        let parsed = match m.get(k) {
            Some(Node::Scalar(ScalarValue::Str(s))) => match self.devices.get(s.as_str()) {
                Some(d) => Some(*d),
                None => {
                    let d: Option<DeviceId> = s.parse().ok();
                    if let Some(d) = d {
                        self.devices.insert(s.to_string(), d);
                    }
                    d
                }
            },
            _ => None,
        };
        if parsed.is_none() {
            self.problem(&join(path, k), "is not a device id; entry left out");
        }
        parsed
    }

    /// The device whose operation created the map `node`, when its actor is
    /// a FieldSync actor (every stored change's actor is bound to its signer).
    fn creator(&mut self, node: &Node) -> Option<DeviceId> {
        let Node::Map(_, Some(actor)) = node else {
            return None;
        };
        if let Some(d) = self.actors.get(actor) {
            return *d;
        }
        let d = ActorBinding::parse(actor).map(|b| b.device);
        self.actors.insert(actor.clone(), d);
        d
    }

    /// Entries of an item map whose keys parse with `parse`, sorted by the parsed key.
    fn items<'n, K: Ord>(
        &mut self,
        map: Option<&'n BTreeMap<String, Node>>,
        path: &str,
        parse: impl Fn(&str) -> Option<K>,
    ) -> Vec<(K, String, &'n Node)> {
        let mut out = Vec::new();
        for (k, v) in map.into_iter().flatten() {
            match parse(k) {
                Some(id) => out.push((id, join(path, k), v)),
                None => self.problem(&join(path, k), "is not a valid id; item left out"),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

fn build_record(
    genesis: &Genesis,
    root: &Node,
    heads: Vec<ChangeHash>,
    conflicts: Vec<Conflict>,
    problems: &mut Vec<String>,
) -> CaseRecord {
    let mut f = Fields {
        problems,
        devices: BTreeMap::new(),
        actors: BTreeMap::new(),
    };
    let empty = BTreeMap::new();
    let root = f.map(Some(root), "document").unwrap_or(&empty);
    if !root.contains_key(key::SCHEMA) {
        f.problem("schema", "is missing: the case was never initialized");
    }
    let title = f.opt_str(root, key::TITLE, "").unwrap_or_default();
    let status = match f.opt_str(root, key::STATUS, "") {
        Some(s) => s.parse().unwrap_or_else(|_| {
            f.problem("status", &format!("{s:?} is not a status; shown as open"));
            Status::Open
        }),
        None => Status::Open,
    };
    let priority = match f.opt_str(root, key::PRIORITY, "") {
        Some(p) => p.parse().unwrap_or_else(|_| {
            f.problem(
                "priority",
                &format!("{p:?} is not a priority; shown as normal"),
            );
            Priority::Normal
        }),
        None => Priority::Normal,
    };
    let summary = f.opt_str(root, key::SUMMARY, "").unwrap_or_default();
    CaseRecord {
        schema: RECORD_SCHEMA,
        id: genesis.case,
        kind: genesis.kind,
        office: genesis.office.clone(),
        compartment: genesis.compartment.clone(),
        creator: genesis.creator,
        created_at: genesis.created_at,
        title,
        status,
        priority,
        summary,
        subjects: subjects(&mut f, root),
        evidence: evidence(&mut f, root),
        tasks: tasks(&mut f, root),
        notes: notes(&mut f, root),
        links: links(&mut f, root),
        attachments: attachments(&mut f, root),
        heads,
        conflicts,
        problems: std::mem::take(f.problems),
    }
}

fn item_id(s: &str) -> Option<ItemId> {
    s.parse().ok()
}

fn subjects(f: &mut Fields<'_>, root: &BTreeMap<String, Node>) -> Vec<SubjectRecord> {
    let map = f.map(root.get(key::SUBJECTS), key::SUBJECTS);
    let mut out = Vec::new();
    for (id, path, node) in f.items(map, key::SUBJECTS, item_id) {
        let Some(m) = f.map(Some(node), &path) else {
            continue;
        };
        let ids_path = format!("{path}/{}", key::IDENTIFIERS);
        let mut identifiers = Vec::new();
        for (i, e) in f
            .list(m.get(key::IDENTIFIERS), &ids_path)
            .iter()
            .enumerate()
        {
            let p = format!("{ids_path}/{i}");
            if let Some(e) = f.map(Some(e), &p) {
                identifiers.push(Identifier {
                    kind: f.str(e, key::KIND, &p),
                    value: f.str(e, key::VALUE, &p),
                });
            }
        }
        out.push(SubjectRecord {
            id,
            name: f.str(m, key::NAME, &path),
            role: f.opt_str(m, key::ROLE, &path),
            nationality: f.opt_str(m, key::NATIONALITY, &path),
            identifiers,
        });
    }
    out
}

fn evidence(f: &mut Fields<'_>, root: &BTreeMap<String, Node>) -> Vec<EvidenceRecord> {
    let map = f.map(root.get(key::EVIDENCE), key::EVIDENCE);
    let mut out = Vec::new();
    for (id, path, node) in f.items(map, key::EVIDENCE, item_id) {
        let Some(m) = f.map(Some(node), &path) else {
            continue;
        };
        let c_path = format!("{path}/{}", key::CUSTODY);
        let mut custody = Vec::new();
        for (i, e) in f.list(m.get(key::CUSTODY), &c_path).iter().enumerate() {
            let p = format!("{c_path}/{i}");
            let Some(e) = f.map(Some(e), &p) else {
                continue;
            };
            let (Some(at), Some(by)) = (f.time(e, key::AT, &p), f.device(e, key::BY, &p)) else {
                continue;
            };
            custody.push(CustodyRecord {
                at,
                by,
                action: f.str(e, key::ACTION, &p),
                holder: f.opt_str(e, key::HOLDER, &p),
                location: f.opt_str(e, key::LOCATION, &p),
            });
        }
        out.push(EvidenceRecord {
            id,
            description: f.str(m, key::DESCRIPTION, &path),
            found_at: f.opt_str(m, key::FOUND_AT, &path),
            custody,
        });
    }
    out
}

fn tasks(f: &mut Fields<'_>, root: &BTreeMap<String, Node>) -> Vec<TaskRecord> {
    let map = f.map(root.get(key::TASKS), key::TASKS);
    let mut out = Vec::new();
    for (id, path, node) in f.items(map, key::TASKS, item_id) {
        let Some(m) = f.map(Some(node), &path) else {
            continue;
        };
        let done = match m.get(key::DONE) {
            Some(Node::Scalar(ScalarValue::Boolean(b))) => *b,
            None => false,
            Some(_) => {
                f.problem(
                    &format!("{path}/done"),
                    "is not true or false; shown as false",
                );
                false
            }
        };
        out.push(TaskRecord {
            id,
            text: f.str(m, key::TEXT, &path),
            assignee: f.opt_str(m, key::ASSIGNEE, &path),
            done,
        });
    }
    out
}

fn notes(f: &mut Fields<'_>, root: &BTreeMap<String, Node>) -> Vec<NoteRecord> {
    let mut out = Vec::new();
    for (i, node) in f.list(root.get(key::NOTES), key::NOTES).iter().enumerate() {
        let p = format!("{}/{i}", key::NOTES);
        let Some(m) = f.map(Some(node), &p) else {
            continue;
        };
        // The author is the device whose change created the note: its
        // actor is bound to the change's signature. The note's own
        // `author` field is only the editor's claim.
        let written_by = f.creator(node);
        let claimed = f.device(m, key::AUTHOR, &p);
        let (author, claimed_author) = match (written_by, claimed) {
            (Some(by), Some(claim)) if by == claim => (by, None),
            (Some(by), claim) => {
                let said = claim.map_or_else(|| "no author".to_owned(), |c| c.to_string());
                f.problem(
                    &join(&p, key::AUTHOR),
                    &format!("names {said}, but device {by} wrote the note; shown as {by}"),
                );
                (by, claim)
            }
            (None, Some(claim)) => {
                f.problem(
                    &p,
                    "was not created by a FieldSync device; its author is unverified",
                );
                (claim, None)
            }
            (None, None) => continue,
        };
        let Some(at) = f.time(m, key::AT, &p) else {
            continue;
        };
        out.push(NoteRecord {
            author,
            claimed_author,
            at,
            text: f.str(m, key::TEXT, &p),
        });
    }
    out
}

fn links(f: &mut Fields<'_>, root: &BTreeMap<String, Node>) -> Vec<LinkRecord> {
    let map = f.map(root.get(key::LINKS), key::LINKS);
    let mut out = Vec::new();
    for (case, path, node) in f.items(map, key::LINKS, |s| s.parse::<CaseId>().ok()) {
        match node {
            Node::Scalar(ScalarValue::Str(r)) => out.push(LinkRecord {
                case,
                relation: r.to_string(),
            }),
            _ => f.problem(&path, "is not a relation text; link left out"),
        }
    }
    out
}

fn attachments(f: &mut Fields<'_>, root: &BTreeMap<String, Node>) -> Vec<AttachmentRef> {
    let map = f.map(root.get(key::ATTACHMENTS), key::ATTACHMENTS);
    let mut out = Vec::new();
    for (hash, path, node) in f.items(map, key::ATTACHMENTS, |s| Some(s.to_owned())) {
        let Some(m) = f.map(Some(node), &path) else {
            continue;
        };
        let size = match m.get(key::SIZE) {
            Some(Node::Scalar(ScalarValue::Uint(n))) => *n,
            Some(Node::Scalar(ScalarValue::Int(n))) if *n >= 0 => n.unsigned_abs(),
            _ => {
                f.problem(&format!("{path}/size"), "is not a size; shown as 0");
                0
            }
        };
        out.push(AttachmentRef {
            hash,
            name: f.str(m, key::NAME, &path),
            size,
            media_type: f.str(m, key::MEDIA_TYPE, &path),
        });
    }
    out
}
