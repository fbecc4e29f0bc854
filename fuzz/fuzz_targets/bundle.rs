//! Bundle import into a fresh in-memory store.
//!
//! Input: `[mode][bytes]`. Bit 0 of the mode: 0, the bytes are a bundle
//! file as found on a USB stick; 1, they are a bundle body (postcard) that
//! is re-signed before import, each genesis and change by its fixture
//! author and the whole by a fixture exporter, so that mutated cases and
//! changes get past the signatures into the store (a rogue but enrolled
//! device). Bit 1: a device store (documents materialized) or a relay store.
//!
//! A refused import leaves the store empty; an accepted one leaves a store
//! whose every signature re-verifies, and importing it again stores nothing.
#![no_main]

use fieldsync_fuzz::{at, check, fresh_store, resign_bundle};
use fieldsync_store::StoreKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| check(|| run(data)));

fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let kind = if mode & 2 == 0 {
        StoreKind::Device
    } else {
        StoreKind::Relay
    };
    let file = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        match resign_bundle(rest) {
            Some(f) => f,
            None => return,
        }
    };
    let store = fresh_store(kind);
    let now = at(100);
    match store.import_bundle(&file, now) {
        Err(e) => {
            let _ = e.to_string();
            assert!(
                store.list_cases().map(|l| l.is_empty()).unwrap_or(false),
                "a refused import stored a case: {e}"
            );
            assert_eq!(
                store.log_head().ok(),
                Some(0),
                "a refused import logged changes: {e}"
            );
        }
        Ok(report) => {
            let cases = store
                .list_cases()
                .unwrap_or_else(|e| panic!("listing after an import: {e}"));
            assert_eq!(cases.len(), report.new_cases);
            let head = store
                .log_head()
                .unwrap_or_else(|e| panic!("log head after an import: {e}"));
            assert_eq!(head, report.stored as u64);
            let verified = store
                .verify_all(now)
                .unwrap_or_else(|e| panic!("verify after an import: {e}"));
            assert!(verified.problems.is_empty(), "{:?}", verified.problems);
            assert_eq!(verified.changes, report.stored);
            for c in &cases {
                // A case whose changes do not make a case document gives a
                // named error; it must not take the process down.
                let _ = store.case_record(&c.id);
                let _ = store.case_history(&c.id);
            }
            let _ = store.list_cases_with_summaries();
            match store.import_bundle(&file, now) {
                Ok(again) => assert_eq!(again.stored, 0, "a second import stored changes"),
                Err(e) => panic!("a bundle imported once is refused the second time: {e}"),
            }
        }
    }
}
