//! Group commit: a batch stored with `ingest_deferred` is visible at once,
//! lost whole in a crash before `flush`, and kept after it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fieldsync_case::{CaseKind, Genesis, decode_change, verify_genesis};
use fieldsync_identity::{CaseId, Timestamp, decode_signed, verify_batch};
use fieldsync_sim::{CrashBackend, CrashKind, SimRng};
use fieldsync_store::{Cursor, Ingest, NewCase, NewDevice, Store, StoreKind};

fn now() -> Timestamp {
    Timestamp::from_millis(1_790_000_000_000)
}

fn device(seed: u8, kind: StoreKind, backend: Option<CrashBackend>) -> Store {
    let new = NewDevice {
        seed: [seed; 32],
        name: "n",
        epoch: [seed; 16],
        now: now(),
        kind,
    };
    match backend {
        Some(b) => Store::create_with_backend(b, new).unwrap(),
        None => Store::create_in_memory(new).unwrap(),
    }
}

/// A batch of `source`'s whole log, as a peer would send it.
fn batch_of(source: &Store) -> Ingest {
    let b = source.read_log(0, 512, 1 << 20, |_| true).unwrap();
    let (_, g) = &b.geneses[0];
    let g = verify_genesis(decode_signed::<Genesis>(g).unwrap()).unwrap();
    let changes = verify_batch(
        b.entries
            .iter()
            .map(|e| decode_change(&e.envelope).unwrap())
            .collect(),
    )
    .unwrap();
    Ingest {
        cases: vec![(g, changes)],
        peer_cursor: Some((
            source.device().id(),
            Cursor {
                epoch: [2; 16],
                seq: b.next,
            },
        )),
        ..Ingest::default()
    }
}

#[test]
fn a_deferred_batch_is_durable_only_after_the_flush() {
    let source = device(2, StoreKind::Device, None);
    let case = source
        .create_case(
            &NewCase {
                id: CaseId::from_bytes([7; 16]),
                kind: CaseKind::CriminalInvestigation,
                office: "rome",
                compartment: "general",
                title: "Ledger",
            },
            now(),
        )
        .unwrap();
    let mut rng = SimRng::new(1);
    for flush in [false, true] {
        let backend = CrashBackend::new();
        let relay = device(1, StoreKind::Relay, Some(backend.clone()));
        let r = relay.ingest_deferred(batch_of(&source), now()).unwrap();
        assert_eq!(r.stored, 1);
        assert!(
            relay
                .has_change(&case, &first_change_hash(&source))
                .unwrap(),
            "visible at once"
        );
        if flush {
            relay.flush().unwrap();
        }
        backend.cut_power();
        drop(relay);
        let back = Store::open_with_backend(backend.crash(CrashKind::Clean, &mut rng)).unwrap();
        assert_eq!(
            back.log_head().unwrap(),
            u64::from(flush),
            "flushed: kept; not flushed: gone"
        );
        // The cursor went with the batch: a resumed sync starts where the data ends.
        let cursor = back.peer_cursor(&source.device().id()).unwrap();
        assert_eq!(cursor.map(|c| c.seq).unwrap_or(0), u64::from(flush));
    }
}

fn first_change_hash(source: &Store) -> fieldsync_case::ChangeHash {
    let env = &source.read_log(0, 1, 1 << 20, |_| true).unwrap().entries[0].envelope;
    decode_change(env).unwrap().payload().hash()
}
