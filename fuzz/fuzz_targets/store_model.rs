//! The store against a plain model: a sequence of operations decoded from
//! the input (`arbitrary`) runs on an in-memory store and on a `BTreeMap`
//! model; after each one the case listing must match the model, and at the
//! end every record, the re-verification of every signature, and an
//! export/import round trip must too.
//!
//! Operations: create a case, set its title or status, add a note, splice
//! the summary, import a subset of a foreign device's changes (in either
//! order; a subset that misses a dependency must be refused whole),
//! export everything and import it again, restart (drop the store and
//! reopen the same in-memory backend), compact.
#![no_main]

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use fieldsync_case::{
    CaseDoc, CaseKind, Status, VerifiedChange, VerifiedGenesis, new_genesis, payload_for_local,
};
use fieldsync_fuzz::{SharedBackend, at, check, device_key, fresh_store, fresh_store_on};
use fieldsync_identity::{CaseId, DeviceId, sign};
use fieldsync_store::{BundleError, NewCase, Store, StoreError, StoreKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| check(|| run(data)));

/// Cases 0..6 are made here; 6 and 7 are a foreign device's.
const CASES: u8 = 8;
const FOREIGN: u8 = 6;
/// Changes in each foreign case: an opening change, then notes.
const FOREIGN_CHANGES: usize = 4;

/// Short text over an alphabet with spaces, a two-byte letter, newline,
/// tab and one control character, so that the model must know the rules.
#[derive(Debug, Clone)]
struct Text(String);

impl<'a> Arbitrary<'a> for Text {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        const ALPHABET: [char; 8] = ['a', 'b', 'q', ' ', 'é', '\n', '\t', '\u{7}'];
        let n = u.int_in_range(0..=12)?;
        let mut s = String::new();
        for _ in 0..n {
            s.push(ALPHABET[usize::from(u.int_in_range(0..=7u8)?)]);
        }
        Ok(Text(s))
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Create(u8),
    SetTitle(u8, Text),
    SetStatus(u8, u8),
    Note(u8, Text),
    Splice {
        case: u8,
        pos: u8,
        del: u8,
        text: Text,
    },
    Import {
        case: u8,
        mask: u8,
        reversed: bool,
    },
    ExportImport,
    Restart,
    Compact,
}

#[derive(Debug, Clone, PartialEq)]
struct Model {
    title: String,
    status: Status,
    summary: Vec<char>,
    notes: Vec<String>,
    changes: u64,
    /// Foreign changes held (by index), for a foreign case.
    foreign: Option<BTreeSet<usize>>,
}

fn case_id(n: u8) -> CaseId {
    CaseId::from_bytes([n + 1; 16])
}

fn blank(s: &str) -> bool {
    s.trim().is_empty()
}

fn line_ok(s: &str) -> bool {
    !blank(s) && !s.chars().any(char::is_control)
}

fn text_ok(s: &str) -> bool {
    !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
}

/// A foreign case (made by fixture device 1): genesis and a chain of changes.
fn foreign(n: u8) -> &'static (VerifiedGenesis, Vec<VerifiedChange>) {
    static FOREIGN_CASES: OnceLock<Vec<(VerifiedGenesis, Vec<VerifiedChange>)>> = OnceLock::new();
    let all = FOREIGN_CASES.get_or_init(|| {
        let key = device_key(1);
        let dev = DeviceId::from_public_key(key.public());
        (FOREIGN..CASES)
            .map(|c| {
                let id = case_id(c);
                let g = new_genesis(
                    id,
                    CaseKind::VisaSecurity,
                    "mexico-city",
                    "general",
                    dev,
                    at(0),
                )
                .unwrap_or_else(|e| panic!("foreign genesis: {e}"));
                let g = sign(g, &key).unwrap_or_else(|e| panic!("signing a genesis: {e}"));
                let mut doc = CaseDoc::new(dev.actor(0));
                let mut changes = Vec::new();
                for i in 0..FOREIGN_CHANGES {
                    let r = if i == 0 {
                        doc.init(&format!("foreign {c}"))
                    } else {
                        doc.add_note(dev, at(1), &format!("foreign note {i}"))
                    };
                    r.unwrap_or_else(|e| panic!("foreign edit: {e}"));
                    let change = doc
                        .commit(at(1), "foreign")
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| panic!("foreign change"));
                    let signed = sign(payload_for_local(id, i as u64, change), &key)
                        .unwrap_or_else(|e| panic!("signing: {e}"));
                    changes.push(signed);
                }
                (g, changes)
            })
            .collect()
    });
    &all[usize::from(n - FOREIGN)]
}

fn new_case(id: CaseId) -> NewCase<'static> {
    NewCase {
        id,
        kind: CaseKind::CriminalInvestigation,
        office: "rome",
        compartment: "general",
        title: "new",
    }
}

fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(ops) = u
        .arbitrary_iter::<Op>()
        .and_then(|i| i.take(40).collect::<Result<Vec<_>, _>>())
    else {
        return;
    };
    let backend = SharedBackend::new();
    let mut store = Some(fresh_store_on(backend.clone(), StoreKind::Device));
    let mut model: BTreeMap<u8, Model> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        let now = at(10 + i as i64);
        let Some(s) = store.as_ref() else { return };
        step(s, &mut model, op, now);
        match op {
            Op::Restart => {
                drop(store.take());
                store = Some(
                    Store::open_with_backend(backend.clone())
                        .unwrap_or_else(|e| panic!("reopening after a restart: {e}")),
                );
            }
            Op::Compact => {
                if let Some(s) = store.as_mut() {
                    s.compact().unwrap_or_else(|e| panic!("compact: {e}"));
                }
            }
            _ => {}
        }
        let Some(s) = store.as_ref() else { return };
        compare_listing(s, &model);
    }
    if let Some(s) = store.as_ref() {
        compare_records(s, &model);
        let v = s
            .verify_all(at(1000))
            .unwrap_or_else(|e| panic!("verify_all: {e}"));
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        let total: u64 = model.values().map(|m| m.changes).sum();
        assert_eq!(v.changes as u64, total, "stored changes");
    }
}

fn step(s: &Store, model: &mut BTreeMap<u8, Model>, op: &Op, now: fieldsync_identity::Timestamp) {
    let me = s.device().id();
    match op {
        Op::Create(c) => {
            let c = c % CASES;
            let r = s.create_case(&new_case(case_id(c)), now);
            match model.entry(c) {
                Entry::Occupied(_) => {
                    assert!(matches!(r, Err(StoreError::CaseExists { .. })), "{r:?}");
                }
                Entry::Vacant(v) => {
                    r.unwrap_or_else(|e| panic!("create: {e}"));
                    v.insert(Model {
                        title: "new".into(),
                        status: Status::Open,
                        summary: Vec::new(),
                        notes: Vec::new(),
                        changes: 1,
                        foreign: None,
                    });
                }
            }
        }
        Op::SetTitle(c, Text(t)) => {
            let c = c % CASES;
            let r = s.edit_case(&case_id(c), now, "title", |d| d.set_title(t));
            edited(model, c, r, line_ok(t), |m| m.title = t.clone());
        }
        Op::SetStatus(c, k) => {
            let c = c % CASES;
            let status = Status::ALL[usize::from(*k) % Status::ALL.len()];
            let r = s.edit_case(&case_id(c), now, "status", |d| d.set_status(status));
            edited(model, c, r, true, |m| m.status = status);
        }
        Op::Note(c, Text(t)) => {
            let c = c % CASES;
            let r = s.edit_case(&case_id(c), now, "note", |d| d.add_note(me, now, t));
            edited(model, c, r, !blank(t) && text_ok(t), |m| {
                m.notes.push(t.clone())
            });
        }
        Op::Splice {
            case,
            pos,
            del,
            text: Text(t),
        } => {
            let c = case % CASES;
            let (pos, del) = (usize::from(*pos % 32), usize::from(*del % 8));
            let r = s.edit_case(&case_id(c), now, "summary", |d| {
                d.splice_summary(pos, del, t)
            });
            let fits = model.get(&c).is_some_and(|m| pos + del <= m.summary.len());
            edited(model, c, r, fits && text_ok(t), |m| {
                m.summary.splice(pos..pos + del, t.chars());
            });
        }
        Op::Import {
            case,
            mask,
            reversed,
        } => import(
            s,
            model,
            FOREIGN + case % (CASES - FOREIGN),
            *mask,
            *reversed,
            now,
        ),
        Op::ExportImport => export_import(s, model, now),
        Op::Restart | Op::Compact => {}
    }
}

/// Checks an edit's outcome against the model: unknown case, refused
/// value, or done (one change more, unless the edit changed nothing).
fn edited(
    model: &mut BTreeMap<u8, Model>,
    c: u8,
    r: Result<Option<fieldsync_case::ChangeHash>, StoreError>,
    valid: bool,
    apply: impl FnOnce(&mut Model),
) {
    let Some(m) = model.get_mut(&c) else {
        assert!(matches!(r, Err(StoreError::UnknownCase { .. })), "{r:?}");
        return;
    };
    if !valid {
        assert!(r.is_err(), "an invalid edit was accepted");
        return;
    }
    match r {
        Ok(Some(_)) => {
            m.changes += 1;
            apply(m);
        }
        Ok(None) => apply(m),
        Err(e) => panic!("a valid edit failed: {e}"),
    }
}

fn import(
    s: &Store,
    model: &mut BTreeMap<u8, Model>,
    c: u8,
    mask: u8,
    reversed: bool,
    now: fieldsync_identity::Timestamp,
) {
    let (genesis, changes) = foreign(c);
    let mut picked: Vec<usize> = (0..FOREIGN_CHANGES)
        .filter(|i| mask & (1 << i) != 0)
        .collect();
    if picked.is_empty() {
        return;
    }
    if reversed {
        picked.reverse();
    }
    let batch = vec![(
        genesis.clone(),
        picked.iter().map(|&i| changes[i].clone()).collect(),
    )];
    let r = s.import_verified(batch, now);
    let existing = model.get(&c);
    if let Some(m) = existing
        && m.foreign.is_none()
    {
        // The id is taken by a case made here: another genesis is refused.
        assert!(
            matches!(r, Err(BundleError::GenesisConflict { .. })),
            "{r:?}"
        );
        return;
    }
    let held: BTreeSet<usize> = existing.and_then(|m| m.foreign.clone()).unwrap_or_default();
    let after: BTreeSet<usize> = held
        .union(&picked.iter().copied().collect())
        .copied()
        .collect();
    let closed = after.iter().copied().eq(0..after.len());
    if !closed {
        assert!(
            matches!(r, Err(BundleError::MissingDependencies { .. })),
            "an import with a missing dependency gave {r:?}"
        );
        return;
    }
    let report = r.unwrap_or_else(|e| panic!("a self-contained import failed: {e}"));
    let new: usize = picked.iter().filter(|i| !held.contains(i)).count();
    assert_eq!(
        (report.stored, report.duplicates),
        (new, picked.len() - new)
    );
    assert_eq!(report.new_cases, usize::from(existing.is_none()));
    let m = model.entry(c).or_insert_with(|| Model {
        title: format!("foreign {c}"),
        status: Status::Open,
        summary: Vec::new(),
        notes: Vec::new(),
        changes: 0,
        foreign: Some(BTreeSet::new()),
    });
    for i in picked {
        if m.foreign.as_mut().is_some_and(|f| f.insert(i)) {
            m.changes += 1;
            if i > 0 {
                m.notes.push(format!("foreign note {i}"));
            }
        }
    }
}

fn export_import(s: &Store, model: &BTreeMap<u8, Model>, now: fieldsync_identity::Timestamp) {
    let file = s
        .export_bundle(&[], now)
        .unwrap_or_else(|e| panic!("export: {e}"));
    let again = s
        .import_bundle(&file, now)
        .unwrap_or_else(|e| panic!("re-importing an export: {e}"));
    assert_eq!(again.stored, 0);
    let other = fresh_store(StoreKind::Device);
    let r = other
        .import_bundle(&file, now)
        .unwrap_or_else(|e| panic!("importing an export elsewhere: {e}"));
    assert_eq!(r.new_cases, model.len());
    compare_records(&other, model);
}

fn compare_listing(s: &Store, model: &BTreeMap<u8, Model>) {
    let listed: BTreeMap<CaseId, (String, String, u64)> = s
        .list_cases()
        .unwrap_or_else(|e| panic!("list: {e}"))
        .into_iter()
        .map(|c| (c.id, (c.title, c.status, c.changes)))
        .collect();
    let expected: BTreeMap<CaseId, (String, String, u64)> = model
        .iter()
        .map(|(c, m)| {
            (
                case_id(*c),
                (m.title.clone(), m.status.to_string(), m.changes),
            )
        })
        .collect();
    assert_eq!(listed, expected, "the listing differs from the model");
}

fn compare_records(s: &Store, model: &BTreeMap<u8, Model>) {
    for (c, m) in model {
        let r = s
            .case_record(&case_id(*c))
            .unwrap_or_else(|e| panic!("record of case {c}: {e}"));
        assert_eq!(r.title, m.title);
        assert_eq!(r.status, m.status);
        assert_eq!(r.summary, m.summary.iter().collect::<String>());
        // Local and foreign notes are concurrent: compare them as sets.
        let mut notes: Vec<String> = r.notes.iter().map(|n| n.text.clone()).collect();
        let mut want = m.notes.clone();
        notes.sort();
        want.sort();
        assert_eq!(notes, want, "notes of case {c}");
    }
}
