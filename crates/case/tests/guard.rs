//! The guard: Automerge panics on some malformed changes. Find such changes
//! by mutating a valid one, sign them as a rogue (but enrolled) device
//! would, and show that the process lives, the error is named, and a
//! poisoned document refuses work.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::{AutoCommit, Change};
use common::{Device, base, case_id, genesis, replica, t};
use fieldsync_case::{
    CaseDoc, CaseError, ChangeError, GuardError, ItemId, SubjectInput, decode_change,
    encode_change, guarded, payload_for_local,
};
use fieldsync_identity::{ActorBinding, sign};

/// A deterministic stream of pseudo-random numbers (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Runs `f` with the panic hook silenced (the search provokes thousands of panics).
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let out = f();
    std::panic::set_hook(hook);
    out
}

/// A base change and a second change with several kinds of operations.
fn valid(a: &Device) -> (Change, Change) {
    let (mut doc, first) = base(a, "Guarded");
    doc.splice_summary(0, 0, "hello world").unwrap();
    let subject = SubjectInput {
        name: "X".into(),
        role: Some("r".into()),
        ..Default::default()
    };
    doc.add_subject(ItemId::from_u64(5), &subject).unwrap();
    doc.add_note(a.id, t(3), "note").unwrap();
    (first, doc.commit(t(2), "edit").unwrap().unwrap())
}

/// Mutants of `change` that parse, carry a correct checksum and keep the
/// actor of `a` (so `a` can sign them), in a deterministic order.
fn mutants<'a>(a: &'a Device, change: &'a Change, seed: u64) -> impl Iterator<Item = Change> + 'a {
    let mut rng = Rng(seed);
    let bytes = change.raw_bytes().to_vec();
    std::iter::from_fn(move || {
        let mut b = bytes.clone();
        for _ in 0..1 + rng.next() % 3 {
            let i = 9 + (rng.next() as usize) % (b.len() - 9);
            b[i] = rng.next() as u8;
        }
        Some(b)
    })
    .take(50_000)
    .filter_map(move |mut b| {
        let parsed = catch_unwind(AssertUnwindSafe(|| Change::from_bytes(b.clone())))
            .ok()?
            .ok()?;
        b[4..8].copy_from_slice(&parsed.hash().0[..4]);
        let fixed = Change::from_bytes(b).ok()?;
        let actor = ActorBinding::parse(fixed.actor_id().to_bytes())?;
        (actor == a.actor()).then_some(fixed)
    })
}

/// Whether applying `change` on top of `first` panics inside Automerge.
fn apply_panics(first: &Change, change: &Change) -> bool {
    let mut doc = AutoCommit::new();
    doc.apply_changes(vec![first.clone()]).unwrap();
    catch_unwind(AssertUnwindSafe(|| doc.apply_changes(vec![change.clone()]))).is_err()
}

#[test]
fn a_signed_change_that_panics_automerge_poisons_only_its_document() {
    let a = Device::new(1);
    let b = Device::new(2);
    let (first, second) = valid(&a);
    let bomb = quietly(|| mutants(&a, &second, 0x5eed).find(|m| apply_panics(&first, m)))
        .expect("no mutant made apply_changes panic");

    // A rogue device can sign it: it is its own change, well formed on the wire.
    let signed = sign(payload_for_local(case_id(), 7, bomb.clone()), &a.key).unwrap();
    let wire = encode_change(signed.as_signed());
    let received = decode_change(&wire).unwrap().verify().unwrap();

    // Applying it: a named error, not a crash; the document is poisoned.
    let mut doc = replica(&b, std::slice::from_ref(&first));
    let err = quietly(|| doc.apply(vec![received.payload().change().clone()])).unwrap_err();
    assert!(
        matches!(
            err,
            CaseError::Panicked(GuardError::Panicked {
                what: "applying changes",
                ..
            })
        ),
        "{err}"
    );
    println!("caught: {err}");
    assert!(doc.is_poisoned());
    assert!(matches!(doc.heads(), Err(CaseError::Poisoned)));
    assert!(matches!(doc.save(), Err(CaseError::Poisoned)));
    assert!(matches!(doc.record(&genesis(&a)), Err(CaseError::Poisoned)));
    assert!(matches!(doc.set_title("x"), Err(CaseError::Poisoned)));
    assert!(matches!(
        doc.apply(vec![second.clone()]),
        Err(CaseError::Poisoned)
    ));
    assert!(matches!(doc.commit(t(9), "x"), Err(CaseError::Poisoned)));
    assert!(matches!(doc.history(), Err(CaseError::Poisoned)));

    // apply_atomic keeps the last good state instead.
    let mut kept = replica(&b, std::slice::from_ref(&first));
    let heads = kept.heads().unwrap();
    let err = quietly(|| kept.apply_atomic(vec![bomb])).unwrap_err();
    assert!(matches!(err, CaseError::Panicked(_)), "{err}");
    assert!(!kept.is_poisoned());
    assert_eq!(kept.heads().unwrap(), heads);
    kept.apply_atomic(vec![second.clone()]).unwrap();
    kept.set_title("still works").unwrap();
    let mine = kept.commit(t(9), "after the bomb").unwrap().unwrap();
    let r = kept.record(&genesis(&a)).unwrap();
    assert_eq!(r.title, "still works");
    assert_eq!(r.heads, vec![mine.hash().into()]);
    assert_eq!(
        kept.get_change(&mine.hash().into())
            .unwrap()
            .unwrap()
            .hash(),
        mine.hash()
    );
    // The actor survived the copy: the change is still B's.
    assert_eq!(fieldsync_case::change_device(&mine), Some(b.id));
}

#[test]
fn garbage_snapshots_do_not_crash_load() {
    let a = Device::new(1);
    let (mut doc, _) = base(&a, "Snapshot");
    let (_, second) = valid(&a);
    doc.apply(vec![second]).unwrap();
    let snapshot = doc.save().unwrap();
    let mut rng = Rng(0xfeed);
    let (mut loaded, mut refused, mut panicked) = (0, 0, 0);
    quietly(|| {
        for _ in 0..3000 {
            let mut s = snapshot.clone();
            for _ in 0..1 + rng.next() % 3 {
                let i = (rng.next() as usize) % s.len();
                s[i] = rng.next() as u8;
            }
            match CaseDoc::load(&s, a.actor()) {
                Ok(mut d) => {
                    loaded += 1;
                    // Whatever loads can be read without crashing the process.
                    let _ = d.record(&genesis(&a));
                    let _ = d.history();
                }
                Err(CaseError::Panicked(_)) => panicked += 1,
                Err(_) => refused += 1,
            }
        }
    });
    println!("mutated snapshots: {loaded} loaded, {refused} refused, {panicked} panicked (caught)");
    assert_eq!(loaded + refused + panicked, 3000);
}

#[test]
fn parse_panics_map_to_a_named_change_error() {
    // No mutant found so far makes `Change::from_bytes` itself panic, but
    // `decode_change` runs it behind the guard all the same; this is the mapping.
    let err = guarded("parsing a change", || -> u8 {
        panic!("index out of bounds")
    })
    .unwrap_err();
    let err = ChangeError::from(err);
    assert!(
        matches!(&err, ChangeError::AutomergePanic { message } if message == "index out of bounds")
    );
}
