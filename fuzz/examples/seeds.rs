//! Writes the seed corpus of every fuzz target from real data: frames and
//! messages carrying real certificates, changes, receipts and revocation
//! lists; signed change envelopes and raw changes; exported bundles;
//! case snapshots and change sequences.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds [DIR]`
//! (default `fuzz/seeds`); writes `DIR/<target>/<name>`.
#![forbid(unsafe_code)]

use std::error::Error;
use std::path::{Path, PathBuf};

use fieldsync_case::{
    CaseDoc, CaseKind, Field, ItemId, encode_change, parse_change, payload_for_local,
};
use fieldsync_fuzz::{SAMPLE_CASE, at, device_key, fresh_store, hq, join_parts, sample};
use fieldsync_identity::{
    CERTIFICATE_VERSION, CaseId, CertificateBody, Compartment, DeviceId, Encoded, Revocation, Role,
    encode_signed, sign,
};
use fieldsync_protocol::{
    Ack, Batch, CloseCode, Hello, MIN_PROTOCOL_VERSION, Message, NodeRole, PROTOCOL_VERSION,
    RECEIPT_VERSION, REPAIR_BUCKETS, ReceiptBody, RepairDigest, RepairHeads, WireCursor,
    encode_receipt,
};
use fieldsync_store::{NewCase, StoreKind};

type Res<T> = Result<T, Box<dyn Error>>;

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> Res<()> {
    let d = dir.join(target);
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join(name), bytes)?;
    Ok(())
}

fn messages() -> Res<Vec<(&'static str, Message)>> {
    let s = sample();
    let general: Compartment = "general".parse()?;
    let dev3 = DeviceId::from_public_key(device_key(3).public());
    let cert = hq().issue(CertificateBody {
        version: CERTIFICATE_VERSION,
        serial: 7,
        issuer: hq().public(),
        device: dev3,
        name: "fuzz laptop".into(),
        office: "rome".into(),
        role: Role::Field,
        read: vec![general.clone()],
        write: vec![general],
        not_before: at(0),
        not_after: at(0).plus_days(30),
    })?;
    let receipt = sign(
        Encoded::new(ReceiptBody {
            version: RECEIPT_VERSION,
            relay: device_key(3).public(),
            device: DeviceId::from_public_key(device_key(1).public()),
            epoch: [1; 16],
            through: 4,
            at: at(5),
        })?,
        &device_key(3),
    )?;
    let list = hq().revoke(
        None,
        Revocation::new(
            DeviceId::from_public_key(device_key(2).public()),
            at(6),
            "lost at the airport",
        )
        .accepting(0, 3),
        at(6),
    )?;
    Ok(vec![
        (
            "hello",
            Message::Hello(Hello {
                version: PROTOCOL_VERSION,
                min_version: MIN_PROTOCOL_VERSION,
                role: NodeRole::Device,
                certificate: cert.to_bytes(),
                epoch: [3; 16],
                head: 12,
                want: Some(WireCursor {
                    epoch: [9; 16],
                    seq: 4,
                }),
                revocations: 1,
            }),
        ),
        (
            "batch",
            Message::Batch(Batch {
                certificates: vec![cert.to_bytes()],
                geneses: vec![encode_signed(s.genesis.as_signed())],
                changes: s
                    .changes
                    .iter()
                    .map(|c| encode_change(c.as_signed()))
                    .collect(),
                through: 4,
                releases: vec![],
            }),
        ),
        (
            "ack",
            Message::Ack(Ack {
                through: 4,
                receipt: Some(encode_receipt(receipt.as_signed())),
            }),
        ),
        ("caught-up", Message::CaughtUp { head: 4 }),
        ("revocations", Message::Revocations(list.to_bytes())),
        (
            "repair-digest",
            Message::RepairDigest(RepairDigest {
                buckets: vec![[5; 8]; REPAIR_BUCKETS],
                head: 4,
            }),
        ),
        (
            "repair-heads",
            Message::RepairHeads(RepairHeads {
                differing: vec![3],
                cases: vec![(SAMPLE_CASE, vec![s.changes[3].payload().hash().0])],
            }),
        ),
        (
            "repair-need",
            Message::RepairNeed(RepairHeads {
                differing: vec![],
                cases: vec![(SAMPLE_CASE, vec![[7; 32], [8; 32]])],
            }),
        ),
        (
            "relayed",
            Message::Relayed(encode_receipt(receipt.as_signed())),
        ),
        (
            "close",
            Message::Close {
                code: CloseCode::Limit,
                reason: "too many streams".into(),
            },
        ),
    ])
}

fn main() -> Res<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("fuzz/seeds"));
    let s = sample();
    let msgs = messages()?;

    // message: each message's encoding.
    for (name, m) in &msgs {
        write(&dir, "message", name, &m.encode())?;
    }
    // frame: [piece sizes][pending][end] + frames of several messages.
    let stream: Vec<u8> = msgs.iter().flat_map(|(_, m)| m.to_frame()).collect();
    for (i, ctl) in [[0u8, 0, 0], [3, 2, 1], [63, 5, 2], [200, 7, 0]]
        .iter()
        .enumerate()
    {
        let mut bytes = ctl.to_vec();
        bytes.extend_from_slice(&stream[..stream.len() * (i + 1) / 4]);
        write(&dir, "frame", &format!("stream-{i}"), &bytes)?;
    }
    write(
        &dir,
        "frame",
        "empty-frame",
        &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 9],
    )?;

    // change: envelopes (mode 0) and raw change chunks (mode 1).
    for (i, c) in s.changes.iter().enumerate() {
        let mut env = vec![0u8];
        env.extend_from_slice(&encode_change(c.as_signed()));
        write(&dir, "change", &format!("envelope-{i}"), &env)?;
        let mut raw = vec![1u8];
        raw.extend_from_slice(c.payload().raw_bytes());
        write(&dir, "change", &format!("raw-{i}"), &raw)?;
    }

    // bundle: exported files (modes 0 and 2) and their bodies (1 and 3).
    let store = fresh_store(StoreKind::Device);
    store.import_verified(vec![(s.genesis.clone(), s.changes.clone())], at(10))?;
    let own = store.create_case(
        &NewCase {
            id: CaseId::from_bytes([0x33; 16]),
            kind: CaseKind::PersonnelRecovery,
            office: "nairobi",
            compartment: "general",
            title: "Missing courier",
        },
        at(11),
    )?;
    let me = store.device().id();
    store.edit_case(&own, at(12), "note", |d| {
        d.add_note(me, at(12), "Last seen at the border")
    })?;
    store.edit_case(&CaseId::from_bytes(SAMPLE_CASE), at(13), "status", |d| {
        d.set_field(Field::Status, "active")
    })?;
    for (name, cases) in [
        ("all", vec![]),
        ("sample", vec![CaseId::from_bytes(SAMPLE_CASE)]),
        ("own", vec![own]),
    ] {
        let file = store.export_bundle(&cases, at(14))?;
        let body = &file[8 + 1 + 32 + 64..];
        for mode in [0u8, 2] {
            let mut b = vec![mode];
            b.extend_from_slice(&file);
            write(&dir, "bundle", &format!("file-{name}-{mode}"), &b)?;
            let mut b = vec![mode | 1];
            b.extend_from_slice(body);
            write(&dir, "bundle", &format!("body-{name}-{}", mode | 1), &b)?;
        }
    }

    // guard: snapshots (mode 0), change sequences on an empty document (1)
    // and on the sample case (2).
    let mut snap = vec![0u8];
    snap.extend_from_slice(&s.snapshot);
    write(&dir, "guard", "snapshot-sample", &snap)?;
    let raw: Vec<&[u8]> = s.changes.iter().map(|c| c.payload().raw_bytes()).collect();
    let mut seq = vec![1u8];
    seq.extend_from_slice(&join_parts(raw.iter().copied()));
    write(&dir, "guard", "changes-all", &seq)?;
    let dev3 = DeviceId::from_public_key(device_key(3).public());
    let mut doc = CaseDoc::load(&s.snapshot, dev3.actor(0))?;
    doc.splice_summary(3, 2, "Seen")?;
    doc.add_task(ItemId::from_u64(9), "Photograph the crate", None)?;
    doc.set_field(Field::Priority, "high")?;
    let next = doc.commit(at(20), "more")?.ok_or("no change")?;
    parse_change(next.raw_bytes())?;
    let mut seq = vec![2u8];
    seq.extend_from_slice(&join_parts([next.raw_bytes()]));
    write(&dir, "guard", "changes-next", &seq)?;
    let mut snap = vec![0u8];
    snap.extend_from_slice(&doc.save()?);
    write(&dir, "guard", "snapshot-next", &snap)?;
    let signed = sign(
        payload_for_local(CaseId::from_bytes(SAMPLE_CASE), 9, next),
        &device_key(3),
    )?;
    let mut env = vec![0u8];
    env.extend_from_slice(&encode_change(signed.as_signed()));
    write(&dir, "change", "envelope-next", &env)?;

    // store_model: pseudo-random operation streams (xorshift).
    let mut x: u64 = 0x5eed_f00d;
    for n in [64usize, 256, 1024] {
        let bytes: Vec<u8> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        write(&dir, "store_model", &format!("ops-{n}"), &bytes)?;
    }
    eprintln!("seeds written under {}", dir.display());
    Ok(())
}
