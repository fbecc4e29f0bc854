//! Reconnection after offline: FieldSync's cursor sync against Automerge's
//! per-document sync protocol (one session per case, fresh sync state, as
//! today's Automerge sync servers run on every reconnect), measured in the
//! same run on the same data, beside the floor (the new changes' bytes plus
//! their signatures).
//!
//! D cases exist on both sides, each with five changes of history; k = 10
//! cases changed on the device and 10 other cases changed at headquarters
//! while the device was offline.
//! Bytes are counted on the wire (frames); round trips are the number of
//! message exchanges until both sides are idle. Time on a link is computed
//! as round trips × RTT + bytes ÷ bandwidth for the "satellite" profile
//! (600 ms RTT, 512 kbit/s).
//!
//! `cargo bench -p fieldsync-tests --bench reconnect` (`BENCH_QUICK=1`: D = 100 and 1,000 only).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Instant;

use automerge::AutoCommit;
use automerge::sync::{State as AmState, SyncDoc};
use fieldsync_case::{CaseKind, decode_change};
use fieldsync_identity::{
    CERTIFICATE_VERSION, CaseId, CertificateBody, Compartment, DeviceCertificate, HqRoot, Role,
    SecretKey, Timestamp,
};
use fieldsync_protocol::{Authority, DEFAULT_MAX_IN_FLIGHT, NodeRole, Session, SessionConfig};
use fieldsync_store::{NewCase, NewDevice, Store, StoreKind};

const T0: i64 = 1_790_000_000_000;
const K: usize = 10;
/// Notes added to every case before the offline period (its history);
/// `BENCH_HISTORY` sets another number. The per-document baseline grows with
/// it (its Bloom filter covers the whole history on a fresh connection);
/// FieldSync's bytes do not.
fn history() -> usize {
    std::env::var("BENCH_HISTORY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

fn t(s: i64) -> Timestamp {
    Timestamp::from_millis(T0 + s * 1000)
}

struct Node {
    store: Store,
    cfg: SessionConfig,
}

fn node(hq: &HqRoot, seed: u8, role: Role, serial: u64) -> Node {
    let kind = if role == Role::Relay {
        StoreKind::Relay
    } else {
        StoreKind::Device
    };
    let store = Store::create_in_memory(NewDevice {
        seed: [seed; 32],
        name: "n",
        epoch: [seed; 16],
        now: t(0),
        kind,
    })
    .unwrap();
    let general = vec![Compartment::new("general").unwrap()];
    let cert: DeviceCertificate = hq
        .issue(CertificateBody {
            version: CERTIFICATE_VERSION,
            serial,
            issuer: hq.public(),
            device: store.device().id(),
            name: format!("node {seed}"),
            office: "rome".into(),
            role,
            read: general.clone(),
            write: general,
            not_before: t(-10),
            not_after: t(1_000_000),
        })
        .unwrap();
    let cfg = SessionConfig {
        role: if role == Role::Relay {
            NodeRole::Relay
        } else {
            NodeRole::Device
        },
        certificate: cert,
        authority: Authority::new(hq.public(), None),
        max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        deferred_commits: false,
    };
    Node { store, cfg }
}

#[derive(Debug, Default, Clone, Copy)]
struct Cost {
    up: usize,
    down: usize,
    rounds: usize,
    cpu_ms: f64,
}

/// One FieldSync session between a device and a relay until both are idle.
fn fieldsync(a: &Node, b: &Node, now: Timestamp) -> Cost {
    let started = Instant::now();
    let mut sa = Session::new(a.cfg.clone(), &a.store, b.store.device().id(), now).unwrap();
    let mut sb = Session::new(b.cfg.clone(), &b.store, a.store.device().id(), now).unwrap();
    let mut c = Cost::default();
    loop {
        let fa: Vec<Vec<u8>> = std::iter::from_fn(|| sa.poll_transmit()).collect();
        let fb: Vec<Vec<u8>> = std::iter::from_fn(|| sb.poll_transmit()).collect();
        if fa.is_empty() && fb.is_empty() {
            break;
        }
        c.rounds += 1;
        for f in fa {
            c.up += f.len();
            sb.handle_input(&b.store, &f, now).unwrap();
        }
        for f in fb {
            c.down += f.len();
            sa.handle_input(&a.store, &f, now).unwrap();
        }
    }
    assert!(sa.is_synced() && sb.is_synced());
    c.cpu_ms = started.elapsed().as_secs_f64() * 1000.0;
    c
}

/// Automerge's sync protocol, one document at a time, fresh state each.
fn per_document(a: &mut [AutoCommit], b: &mut [AutoCommit]) -> Cost {
    let started = Instant::now();
    let mut c = Cost::default();
    for (da, db) in a.iter_mut().zip(b.iter_mut()) {
        let (mut sa, mut sb) = (AmState::new(), AmState::new());
        let mut rounds = 0;
        loop {
            let ma = da.sync().generate_sync_message(&mut sa);
            let mb = db.sync().generate_sync_message(&mut sb);
            if ma.is_none() && mb.is_none() {
                break;
            }
            rounds += 1;
            if let Some(m) = ma {
                let bytes = m.encode();
                c.up += bytes.len() + 4; // the same 4-byte frame prefix
                db.sync()
                    .receive_sync_message(
                        &mut sb,
                        automerge::sync::Message::decode(&bytes).unwrap(),
                    )
                    .unwrap();
            }
            if let Some(m) = mb {
                let bytes = m.encode();
                c.down += bytes.len() + 4;
                da.sync()
                    .receive_sync_message(
                        &mut sa,
                        automerge::sync::Message::decode(&bytes).unwrap(),
                    )
                    .unwrap();
            }
        }
        // Documents sync concurrently: round trips are the longest exchange.
        c.rounds = c.rounds.max(rounds);
    }
    c.cpu_ms = started.elapsed().as_secs_f64() * 1000.0;
    c
}

fn docs_of(store: &Store, cases: &[CaseId]) -> Vec<AutoCommit> {
    cases
        .iter()
        .map(|c| {
            let changes: Vec<automerge::Change> = store
                .case_envelopes(c)
                .unwrap()
                .iter()
                .map(|e| decode_change(e).unwrap().payload().change().clone())
                .collect();
            let mut d = AutoCommit::new();
            d.apply_changes(changes).unwrap();
            d
        })
        .collect()
}

thread_local! {
    static REPAIRS: std::cell::RefCell<Vec<(usize, Cost, Cost)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A relay holding the same cases and changes as `from`, under a new log epoch.
fn restored_copy(hq_key: &HqRoot, from: &Node, seed: u8) -> Node {
    use fieldsync_case::{Genesis, verify_genesis};
    use fieldsync_identity::decode_signed;
    let copy = node(hq_key, seed, Role::Relay, u64::from(seed));
    let mut batch = Vec::new();
    for h in from.store.case_heads().unwrap() {
        let g = verify_genesis(decode_signed::<Genesis>(&h.genesis).unwrap()).unwrap();
        let changes = from
            .store
            .case_envelopes(&h.case)
            .unwrap()
            .iter()
            .map(|e| decode_change(e).unwrap().verify().unwrap())
            .collect();
        batch.push((g, changes));
        if batch.len() == 500 {
            copy.store
                .ingest(
                    fieldsync_store::Ingest {
                        cases: std::mem::take(&mut batch),
                        ..Default::default()
                    },
                    t(0),
                )
                .unwrap();
        }
    }
    copy.store
        .ingest(
            fieldsync_store::Ingest {
                cases: batch,
                ..Default::default()
            },
            t(0),
        )
        .unwrap();
    copy
}

fn satellite_secs(c: &Cost) -> f64 {
    c.rounds as f64 * 0.6 + (c.up + c.down) as f64 * 8.0 / 512_000.0
}

fn scenario(d: usize) {
    let hq_key = HqRoot::from_secret(SecretKey::from_seed(&[99; 32]));
    let hq = node(&hq_key, 1, Role::Relay, 1);
    let dev = node(&hq_key, 2, Role::Field, 2);
    let other = node(&hq_key, 3, Role::Field, 3);
    let mut cases = Vec::with_capacity(d);
    for i in 0..d {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(i as u64 * 0x9e37_79b9_7f4a_7c15).to_be_bytes());
        let id = dev
            .store
            .create_case(
                &NewCase {
                    id: CaseId::from_bytes(id),
                    kind: CaseKind::CriminalInvestigation,
                    office: "rome",
                    compartment: "general",
                    title: &format!("case {i}"),
                },
                t(1),
            )
            .unwrap();
        // A little history per case, as real cases have (the baseline's
        // per-document messages grow with it; FieldSync's do not).
        dev.store
            .edit_case(&id, t(1), "triage", |doc| {
                doc.set_field(fieldsync_case::Field::Status, "active")?;
                doc.set_field(fieldsync_case::Field::Priority, "high")?;
                doc.set_field(
                    fieldsync_case::Field::Summary,
                    "Container flagged at the port; manifest under review.",
                )
            })
            .unwrap();
        for n in 0..history() {
            dev.store
                .edit_case(&id, t(1), "note", |doc| {
                    doc.add_note(dev.store.device().id(), t(1), &format!("observation {n}"))
                })
                .unwrap();
        }
        cases.push(id);
    }
    fieldsync(&dev, &hq, t(2));
    fieldsync(&other, &hq, t(3));
    // Offline: k changes on the device, k on other cases at headquarters.
    let mut floor = 0usize;
    let before_dev = dev.store.log_head().unwrap();
    for c in cases.iter().take(K) {
        dev.store
            .edit_case(c, t(10), "note", |doc| {
                doc.add_note(
                    dev.store.device().id(),
                    t(10),
                    "vehicle seen at the north gate",
                )
            })
            .unwrap();
    }
    let before_other = other.store.log_head().unwrap();
    for c in cases.iter().skip(K).take(K) {
        other
            .store
            .edit_case(c, t(11), "note", |doc| {
                doc.add_note(
                    other.store.device().id(),
                    t(11),
                    "confirmed by the harbour master",
                )
            })
            .unwrap();
    }
    for (s, from) in [(&dev.store, before_dev), (&other.store, before_other)] {
        for e in s
            .read_log(from, usize::MAX, usize::MAX, |_| true)
            .unwrap()
            .entries
        {
            floor += decode_change(&e.envelope)
                .unwrap()
                .payload()
                .raw_bytes()
                .len()
                + 64;
        }
    }
    fieldsync(&other, &hq, t(12));
    // Baseline documents: the device's and headquarters' copies, now.
    let mut da = docs_of(&dev.store, &cases);
    let mut dh = docs_of(&hq.store, &cases);
    let fs = fieldsync(&dev, &hq, t(13));
    let am = per_document(&mut da, &mut dh);
    // Repair: headquarters restored from a copy (same data, new log epoch)
    // while the device changed k cases; against a full resync to an empty relay.
    let restored = restored_copy(&hq_key, &hq, 4);
    for c in cases.iter().skip(2 * K).take(K) {
        dev.store
            .edit_case(c, t(20), "note", |doc| {
                doc.add_note(dev.store.device().id(), t(20), "after the restore")
            })
            .unwrap();
    }
    let repair = fieldsync(&dev, &restored, t(21));
    let empty = node(&hq_key, 5, Role::Relay, 5);
    let full = fieldsync(&dev, &empty, t(22));
    REPAIRS.with(|r| r.borrow_mut().push((d, repair, full)));
    let total = |c: &Cost| c.up + c.down;
    println!(
        "| {d:>6} | {:>8} | {:>7} / {:>7} | {:>3} | {:>7.1} | {:>6.1}s | {:>10} / {:>10} | {:>3} | {:>8.1} | {:>7.1}s | {:>6.2}x | {:>7.0}x |",
        floor,
        fs.up,
        fs.down,
        fs.rounds,
        fs.cpu_ms,
        satellite_secs(&fs),
        am.up,
        am.down,
        am.rounds,
        am.cpu_ms,
        satellite_secs(&am),
        total(&fs) as f64 / floor as f64,
        total(&am) as f64 / total(&fs) as f64,
    );
}

fn main() {
    println!(
        "Reconnection after offline, k = {K} changed cases on each side, {} notes of history per case",
        history()
    );
    println!(
        "| D | floor B | FieldSync up / down B | RTs | CPU ms | satellite | per-doc up / down B | RTs | CPU ms | satellite | FS / floor | per-doc / FS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let ds: Vec<usize> = if std::env::var_os("BENCH_QUICK").is_some() {
        vec![100, 1_000]
    } else if let Some(d) = std::env::var("BENCH_D").ok().and_then(|v| v.parse().ok()) {
        vec![d]
    } else {
        vec![100, 1_000, 10_000]
    };
    for d in ds {
        scenario(d);
    }
    println!();
    println!("Repair after headquarters is restored (new log epoch), k = {K} cases changed since");
    println!("| D | repair up / down B | RTs | full resync up / down B | RTs | repair / full |");
    println!("|---|---|---|---|---|---|");
    REPAIRS.with(|r| {
        for (d, rep, full) in r.borrow().iter() {
            println!(
                "| {d:>6} | {:>8} / {:>8} | {:>3} | {:>10} / {:>6} | {:>3} | {:>6.2}% |",
                rep.up,
                rep.down,
                rep.rounds,
                full.up,
                full.down,
                full.rounds,
                100.0 * (rep.up + rep.down) as f64 / (full.up + full.down) as f64
            );
        }
    });
}
