//! The history of a case: every change, in causal order, attributed to the
//! device whose actor made it, and described from its actual operations
//! (never from the self-declared commit message alone).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use automerge::legacy::{Key, ObjectId, Op, OpType};
use automerge::{ActorId, AutoCommit, ObjId, ObjType, Prop, ReadDoc};
use fieldsync_identity::{ActorBinding, DeviceId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::change::ChangeHash;
use crate::doc::CaseDoc;
use crate::error::CaseError;
use crate::guard::guarded;
use crate::read::scalar_json;
use crate::schema::key;

/// Longest value quoted in a description, in characters.
const QUOTE_MAX: usize = 60;

/// One change of a case's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The change hash.
    pub hash: ChangeHash,
    /// The device whose actor made it; `None` if the actor is not a FieldSync actor.
    pub device: Option<DeviceId>,
    /// The device incarnation of the actor.
    pub incarnation: Option<u32>,
    /// The actor, in hex.
    pub actor: String,
    /// The change's sequence number among its actor's changes.
    pub seq: u64,
    /// The author's clock when committing (whole seconds).
    pub time: Timestamp,
    /// The author's commit message, as the author wrote it.
    pub message: Option<String>,
    /// What the change does, computed from its operations.
    pub description: Vec<String>,
}

impl CaseDoc {
    /// Every applied change in causal order (ties broken by time, then
    /// hash, so every replica lists the same order).
    pub fn history(&mut self) -> Result<Vec<HistoryEntry>, CaseError> {
        self.with_idle("reading history", |doc| {
            let changes = doc.get_changes(&[]);
            let mut cache = PathCache::default();
            Ok(causal_order(&changes)
                .into_iter()
                .map(|i| entry(doc, &changes[i], &mut cache))
                .collect())
        })
    }
}

/// Kahn's topological sort, smallest (time, hash) first among the ready ones.
fn causal_order(changes: &[automerge::Change]) -> Vec<usize> {
    let index: HashMap<automerge::ChangeHash, usize> = changes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.hash(), i))
        .collect();
    let mut waiting = vec![0usize; changes.len()];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); changes.len()];
    for (i, c) in changes.iter().enumerate() {
        for d in c.deps() {
            if let Some(&j) = index.get(d) {
                waiting[i] += 1;
                children[j].push(i);
            }
        }
    }
    let key_of = |i: usize| Reverse((changes[i].timestamp(), changes[i].hash().0, i));
    let mut ready: BinaryHeap<_> = (0..changes.len())
        .filter(|&i| waiting[i] == 0)
        .map(key_of)
        .collect();
    let mut out = Vec::with_capacity(changes.len());
    while let Some(Reverse((_, _, i))) = ready.pop() {
        out.push(i);
        for &c in &children[i] {
            waiting[c] -= 1;
            if waiting[c] == 0 {
                ready.push(key_of(c));
            }
        }
    }
    out
}

fn entry(doc: &AutoCommit, change: &automerge::Change, cache: &mut PathCache) -> HistoryEntry {
    let actor = change.actor_id().to_bytes();
    let binding = ActorBinding::parse(actor);
    HistoryEntry {
        hash: change.hash().into(),
        device: binding.map(|b| b.device),
        incarnation: binding.map(|b| b.incarnation),
        actor: hex::encode(actor),
        seq: change.seq(),
        time: Timestamp::from_millis(change.timestamp().saturating_mul(1000)),
        message: change.message().map(str::to_owned),
        description: describe(doc, change, cache),
    }
}

/// The deepest object a history line places (a case document's deepest is
/// 4: `subjects` → subject → `identifiers` → identifier); an object deeper
/// than this, or inside a cycle, is described as of unknown place.
const MAX_DEPTH: usize = 16;

/// Where an object sits: its path from the root and its type.
#[derive(Clone)]
struct Loc {
    path: Vec<String>,
    typ: ObjType,
}

/// Object id → location, looked up in the document once per object.
#[derive(Default)]
struct PathCache(HashMap<(u64, ActorId), Option<Loc>>);

impl PathCache {
    fn lookup(&mut self, doc: &AutoCommit, counter: u64, actor: &ActorId) -> Option<Loc> {
        self.0
            .entry((counter, actor.clone()))
            .or_insert_with(|| {
                // The actor index is only a hint; Automerge looks the actor up.
                let id = ObjId::Id(counter, actor.clone(), 0);
                let typ = doc.object_type(&id).ok()?;
                // Walk up at most `MAX_DEPTH` parents: forged operations can
                // make an object its own ancestor, and Automerge's walk to the
                // root would then never end. No case document is that deep.
                let mut path: Vec<String> = doc
                    .parents(&id)
                    .ok()?
                    .take(MAX_DEPTH + 1)
                    .map(|parent| match parent.prop {
                        Prop::Map(k) => k,
                        Prop::Seq(i) => i.to_string(),
                    })
                    .collect();
                if path.len() > MAX_DEPTH {
                    return None;
                }
                path.reverse();
                Some(Loc { path, typ })
            })
            .clone()
    }
}

/// One line of a description, or a running count of text edits.
enum Line {
    Plain(String),
    Text {
        path: String,
        inserted: usize,
        deleted: usize,
    },
}

fn describe(doc: &AutoCommit, change: &automerge::Change, cache: &mut PathCache) -> Vec<String> {
    // `decode` panics on operations it does not know; the change is already
    // applied, so a panic here says nothing about the document.
    let expanded = match guarded("decoding a change", || change.decode()) {
        Ok(e) => e,
        Err(e) => return vec![format!("(operations could not be decoded: {e})")],
    };
    let actor = expanded.actor_id.clone();
    let start = expanded.start_op.get();
    let mut created: HashMap<(u64, ActorId), Loc> = HashMap::new();
    let mut lines: Vec<Line> = Vec::new();
    for (i, op) in expanded.operations.iter().enumerate() {
        let (loc, inside_new) = match &op.obj {
            ObjectId::Root => (
                Some(Loc {
                    path: Vec::new(),
                    typ: ObjType::Map,
                }),
                false,
            ),
            ObjectId::Id(id) => match created.get(&(id.0, id.1.clone())) {
                Some(loc) => (Some(loc.clone()), true),
                None => (cache.lookup(doc, id.0, &id.1), false),
            },
        };
        let k = match &op.key {
            Key::Map(k) => Some(k.to_string()),
            Key::Seq(_) => None,
        };
        if let (OpType::Make(typ), Some(loc)) = (&op.action, &loc) {
            let mut path = loc.path.clone();
            path.push(k.clone().unwrap_or_else(|| "*".to_owned()));
            let counter = start.saturating_add(u64::try_from(i).unwrap_or(u64::MAX));
            created.insert((counter, actor.clone()), Loc { path, typ: *typ });
        }
        if inside_new {
            continue; // folded into the description of the object's creation
        }
        match loc {
            Some(loc) => describe_op(&loc, k.as_deref(), op, &mut lines),
            None => push_once(
                &mut lines,
                "changed an object this document cannot place".into(),
            ),
        }
    }
    let mut out: Vec<String> = Vec::new();
    for line in lines {
        match line {
            Line::Plain(s) => out.push(s),
            Line::Text {
                path,
                inserted,
                deleted,
            } => {
                if inserted > 0 {
                    out.push(format!("inserted {} into {path}", chars(inserted)));
                }
                if deleted > 0 {
                    out.push(format!("deleted {} from {path}", chars(deleted)));
                }
            }
        }
    }
    if out.is_empty() {
        out.push("made no edits".into());
    }
    out
}

fn chars(n: usize) -> String {
    if n == 1 {
        "1 character".into()
    } else {
        format!("{n} characters")
    }
}

fn push_once(lines: &mut Vec<Line>, s: String) {
    if !lines.iter().any(|l| matches!(l, Line::Plain(p) if *p == s)) {
        lines.push(Line::Plain(s));
    }
}

fn describe_op(loc: &Loc, k: Option<&str>, op: &Op, lines: &mut Vec<Line>) {
    let p = loc.path.join("/");
    let segs: Vec<&str> = loc.path.iter().map(String::as_str).collect();
    if loc.typ == ObjType::Text {
        let (ins, del) = match &op.action {
            OpType::Put(automerge::ScalarValue::Str(s)) => (s.chars().count(), 0),
            OpType::Put(_) => (1, 0),
            OpType::Delete => (0, 1),
            OpType::MarkBegin(_) | OpType::MarkEnd(_) => {
                push_once(lines, format!("formatted text in {p}"));
                return;
            }
            _ => {
                push_once(lines, format!("changed the structure of {p}"));
                return;
            }
        };
        let existing = lines.iter_mut().find_map(|l| match l {
            Line::Text {
                path,
                inserted,
                deleted,
            } if *path == p => Some((inserted, deleted)),
            _ => None,
        });
        match existing {
            Some((inserted, deleted)) => {
                *inserted += ins;
                *deleted += del;
            }
            None => lines.push(Line::Text {
                path: p,
                inserted: ins,
                deleted: del,
            }),
        }
        return;
    }
    let line = match k {
        Some(k) => describe_map_op(&segs, &p, k, op),
        None => describe_list_op(&segs, &p, op),
    };
    lines.push(Line::Plain(line));
}

fn full(p: &str, k: &str) -> String {
    if p.is_empty() {
        k.to_owned()
    } else {
        format!("{p}/{k}")
    }
}

fn item_kind(segs: &[&str]) -> Option<&'static str> {
    match segs {
        [key::SUBJECTS] => Some("subject"),
        [key::EVIDENCE] => Some("evidence"),
        [key::TASKS] => Some("task"),
        [key::ATTACHMENTS] => Some("attachment"),
        _ => None,
    }
}

fn describe_map_op(segs: &[&str], p: &str, k: &str, op: &Op) -> String {
    match &op.action {
        OpType::Make(_) => match item_kind(segs) {
            Some(kind) => format!("added {kind} {k}"),
            None => format!("created {}", full(p, k)),
        },
        OpType::Put(v) if segs == [key::LINKS] => {
            if op.pred.is_empty() {
                format!("added link to case {k} ({})", quote(v))
            } else {
                format!("set link to case {k} = {}", quote(v))
            }
        }
        OpType::Put(v) => format!("set {} = {}", full(p, k), quote(v)),
        OpType::Delete => match (segs, item_kind(segs)) {
            (_, Some(kind)) => format!("removed {kind} {k}"),
            ([key::LINKS], None) => format!("removed link to case {k}"),
            _ => format!("cleared {}", full(p, k)),
        },
        OpType::Increment(n) => format!("incremented {} by {n}", full(p, k)),
        OpType::MarkBegin(_) | OpType::MarkEnd(_) => format!("marked {}", full(p, k)),
    }
}

fn describe_list_op(segs: &[&str], p: &str, op: &Op) -> String {
    match (&op.action, segs) {
        (OpType::Make(_), [key::NOTES]) if op.insert => "appended a note".into(),
        (OpType::Make(_), [key::EVIDENCE, id, key::CUSTODY]) if op.insert => {
            format!("added a custody entry to evidence {id}")
        }
        (OpType::Make(_), [key::SUBJECTS, id, key::IDENTIFIERS]) if op.insert => {
            format!("added an identifier to subject {id}")
        }
        (OpType::Make(_), _) if op.insert => format!("inserted an item into {p}"),
        (OpType::Make(_), _) => format!("replaced an item of {p}"),
        (OpType::Put(v), _) if op.insert => format!("inserted {} into {p}", quote(v)),
        (OpType::Put(v), _) => format!("set an item of {p} = {}", quote(v)),
        (OpType::Delete, [key::NOTES]) => "deleted a note".into(),
        (OpType::Delete, _) => format!("deleted an item from {p}"),
        (OpType::Increment(n), _) => format!("incremented an item of {p} by {n}"),
        (OpType::MarkBegin(_) | OpType::MarkEnd(_), _) => format!("marked {p}"),
    }
}

/// A value as JSON, shortened to [`QUOTE_MAX`] characters.
fn quote(v: &automerge::ScalarValue) -> String {
    let s = scalar_json(v).to_string();
    if s.chars().count() <= QUOTE_MAX {
        s
    } else {
        let mut t: String = s.chars().take(QUOTE_MAX - 1).collect();
        t.push('…');
        t
    }
}
