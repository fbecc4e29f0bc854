//! Shared pieces of the FieldSync fuzz targets: the panic policy, fixed
//! keys, a real sample case, re-signing of mutated changes and bundles, and
//! the framing of multi-part inputs.
//!
//! What it is not: a test suite. The targets in `fuzz_targets/` drive these
//! helpers; `examples/seeds.rs` writes the seed corpus from the same
//! fixtures, so seeds and targets agree on keys and layouts.
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Once, OnceLock};

use fieldsync_case::{
    CHANGE_HEADER_LEN, CaseDoc, CaseKind, ChangePayload, Genesis, ItemId, SubjectInput,
    VerifiedChange, VerifiedGenesis, decode_change, encode_change, new_genesis, payload_for_local,
};
use fieldsync_identity::{
    CaseId, DeviceId, Encoded, HqRoot, SecretKey, Timestamp, decode_signed, encode_signed, sign,
};
use fieldsync_store::{BUNDLE_MAGIC, BundleBody, BundleCase, NewDevice, Store, StoreKind};
use sha2::Digest as _;

/// The time every fixture uses.
pub const T0: i64 = 1_790_000_000_000;

/// [`T0`] as a timestamp, plus `secs` seconds.
pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_millis(T0 + secs * 1000)
}

thread_local! {
    /// The last panic seen on this thread: message and location.
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Runs one fuzz input under the targets' panic policy.
///
/// A panic that the code under test catches itself (Automerge panics
/// inside `fieldsync_case::guarded`) is fine: the hook installed here only
/// remembers it, quietly (libFuzzer's own hook would abort the process on
/// every panic, even a caught one). A panic that escapes `f` (an unguarded
/// panic in FieldSync or a broken property asserted by a target) is a
/// crash: its message and location are printed and the process aborts, so
/// libFuzzer saves the input.
pub fn check(f: impl FnOnce()) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let text = format!("{info}");
            if std::env::var_os("FUZZ_SHOW_PANICS").is_some() {
                eprintln!("panic (maybe guarded): {text}");
            }
            LAST_PANIC.with(|p| *p.borrow_mut() = text);
        }));
    });
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        let text = LAST_PANIC.with(|p| p.borrow().clone());
        eprintln!("unguarded panic: {text}");
        std::process::abort();
    }
}

/// The devices of the fixtures: seeds `[n; 32]` for `n` in 1..=3.
pub fn device_key(n: u8) -> SecretKey {
    SecretKey::from_seed(&[n; 32])
}

/// The fixture devices' keys.
pub fn device_keys() -> &'static [SecretKey] {
    static KEYS: OnceLock<Vec<SecretKey>> = OnceLock::new();
    KEYS.get_or_init(|| (1..=3).map(device_key).collect())
}

/// The key of a fixture device, if `device` is one.
pub fn key_of(device: &DeviceId) -> Option<&'static SecretKey> {
    device_keys()
        .iter()
        .find(|k| k.public() == *device.public_key())
}

/// Headquarters of the fixtures.
pub fn hq() -> &'static HqRoot {
    static HQ: OnceLock<HqRoot> = OnceLock::new();
    HQ.get_or_init(|| HqRoot::from_secret(SecretKey::from_seed(&[0x40; 32])))
}

/// The case id of the sample case.
pub const SAMPLE_CASE: [u8; 16] = [0xca; 16];

/// A real case made by fixture devices 1 and 2: its signed genesis, its
/// signed changes (causal order) and the document's snapshot.
pub struct Sample {
    /// The signed genesis.
    pub genesis: VerifiedGenesis,
    /// Every change, dependencies first.
    pub changes: Vec<VerifiedChange>,
    /// `CaseDoc::save` of the whole case.
    pub snapshot: Vec<u8>,
}

/// The sample case (built once).
pub fn sample() -> &'static Sample {
    static SAMPLE: OnceLock<Sample> = OnceLock::new();
    SAMPLE.get_or_init(|| build_sample().unwrap_or_else(|e| panic!("sample case: {e}")))
}

fn build_sample() -> Result<Sample, Box<dyn std::error::Error>> {
    let (k1, k2) = (device_key(1), device_key(2));
    let (d1, d2) = (
        DeviceId::from_public_key(k1.public()),
        DeviceId::from_public_key(k2.public()),
    );
    let case = CaseId::from_bytes(SAMPLE_CASE);
    let genesis = sign(
        new_genesis(
            case,
            CaseKind::CulturalProperty,
            "rome",
            "general",
            d1,
            at(0),
        )?,
        &k1,
    )?;
    let mut changes = Vec::new();
    let mut a = CaseDoc::new(d1.actor(0));
    a.init("Looted stele")?;
    a.splice_summary(0, 0, "Seen at the port.")?;
    let mut signed =
        |key: &SecretKey, c: automerge::Change| -> Result<(), Box<dyn std::error::Error>> {
            let n = changes.len() as u64;
            changes.push(sign(payload_for_local(case, n, c), key)?);
            Ok(())
        };
    let first = a.commit(at(1), "open case")?.ok_or("no change")?;
    signed(&k1, first.clone())?;
    let mut b = CaseDoc::new(d2.actor(0));
    b.apply(vec![first])?;
    a.add_subject(
        ItemId::from_u64(1),
        &SubjectInput {
            name: "M. Rossi".into(),
            role: Some("dealer".into()),
            nationality: Some("IT".into()),
            identifiers: vec![("passport".into(), "YA1234567".into())],
        },
    )?;
    a.add_note(d1, at(2), "Crate 14 matches the photo")?;
    signed(&k1, a.commit(at(2), "subject")?.ok_or("no change")?)?;
    // Concurrent: both devices set the title; b edits the summary and adds a task.
    a.set_title("Looted stele, Civitavecchia")?;
    signed(&k1, a.commit(at(3), "title")?.ok_or("no change")?)?;
    b.set_title("Stele (Etruscan)")?;
    b.splice_summary(0, 4, "Spotted")?;
    b.add_task(
        ItemId::from_u64(2),
        "Call the port authority",
        Some("agent b"),
    )?;
    signed(&k2, b.commit(at(4), "concurrent")?.ok_or("no change")?)?;
    let all: Vec<automerge::Change> = changes
        .iter()
        .map(|c| c.payload().change().clone())
        .collect();
    let mut whole = CaseDoc::new(d1.actor(0));
    whole.apply(all)?;
    let snapshot = whole.save()?;
    Ok(Sample {
        genesis,
        changes,
        snapshot,
    })
}

/// The genesis record of the sample case.
pub fn sample_genesis() -> &'static Genesis {
    sample().genesis.payload().value()
}

/// Sets an Automerge change chunk's checksum (bytes 4..8) to the first bytes
/// of its hash, as Automerge defines it: SHA-256 over the chunk after its
/// checksum. Mutated changes then pass the checksum check and reach the
/// parser and the document behind it. Bytes too short to be a chunk stay as
/// they are.
pub fn fix_checksum(chunk: &mut [u8]) {
    if chunk.len() < 8 {
        return;
    }
    let hash = sha2::Sha256::digest(&chunk[8..]);
    chunk[4..8].copy_from_slice(&hash[..4]);
}

/// Re-signs a change envelope the way a rogue but enrolled device would
/// sign whatever it likes: fixes the change's checksum, and when the
/// change's actor is a fixture device, signs it (same case and counter)
/// with that device's key. `None` when the envelope does not decode after
/// the fix or its actor is no fixture device.
pub fn resign_envelope(envelope: &[u8]) -> Option<Vec<u8>> {
    let mut bytes = envelope.to_vec();
    if let Some(chunk) = bytes.get_mut(CHANGE_HEADER_LEN..) {
        fix_checksum(chunk);
    }
    let signed = decode_change(&bytes).ok()?;
    let payload: ChangePayload = signed.payload().clone();
    let key = key_of(&payload.actor()?.device)?;
    let resigned = sign(payload, key).ok()?;
    Some(encode_change(resigned.as_signed()))
}

/// Re-signs a signed genesis envelope with its creator's key when the
/// creator is a fixture device; the bytes unchanged otherwise.
pub fn resign_genesis(envelope: &[u8]) -> Vec<u8> {
    let resigned = decode_signed::<Genesis>(envelope).ok().and_then(|signed| {
        let body: Encoded<Genesis> = signed.payload().clone();
        let key = key_of(&body.value().creator)?;
        sign(body, key).ok()
    });
    match resigned {
        Some(g) => encode_signed(g.as_signed()),
        None => envelope.to_vec(),
    }
}

/// Builds a bundle file from a bundle body's postcard bytes (as a fuzz
/// input): every genesis and change whose author is a fixture device is
/// re-signed by it, and the whole is signed by fixture device 3 as the
/// exporter. `None` when the bytes are not a bundle body.
pub fn resign_bundle(body: &[u8]) -> Option<Vec<u8>> {
    let body = Encoded::<BundleBody>::decode(body).ok()?;
    let exporter = device_key(3);
    let cases = body
        .value()
        .cases
        .iter()
        .map(|c| BundleCase {
            genesis: resign_genesis(&c.genesis),
            changes: c
                .changes
                .iter()
                .map(|env| resign_envelope(env).unwrap_or_else(|| env.clone()))
                .collect(),
        })
        .collect();
    let fresh = Encoded::new(BundleBody {
        version: body.value().version,
        exporter: exporter.public(),
        created_at: body.value().created_at,
        cases,
    })
    .ok()?;
    let signed = sign(fresh, &exporter).ok()?;
    let mut file = BUNDLE_MAGIC.to_vec();
    file.extend_from_slice(&encode_signed(signed.as_signed()));
    Some(file)
}

/// Splits a multi-part input: each part is a big-endian `u16` length and
/// that many bytes (the last part takes whatever is left).
pub fn split_parts(mut data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    while data.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([data[0], data[1]]));
        let rest = &data[2..];
        let (part, next) = rest.split_at(len.min(rest.len()));
        parts.push(part);
        data = next;
    }
    parts
}

/// Joins parts the way [`split_parts`] reads them (for seeds). Parts longer
/// than 65,535 bytes are cut.
pub fn join_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        let p = &p[..p.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(p.len() as u16).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// A fresh in-memory store of `kind` for fixture device 3 (seed `[3; 32]`).
pub fn fresh_store(kind: StoreKind) -> Store {
    fresh_store_on(redb::backends::InMemoryBackend::new(), kind)
}

/// A fresh store of `kind` for fixture device 3 on `backend`.
pub fn fresh_store_on(backend: impl redb::StorageBackend, kind: StoreKind) -> Store {
    Store::create_with_backend(
        backend,
        NewDevice {
            seed: [3; 32],
            name: "fuzz",
            epoch: [3; 16],
            now: at(0),
            kind,
        },
    )
    .unwrap_or_else(|e| panic!("creating an in-memory store: {e}"))
}

/// An in-memory redb backend that outlives a store: dropping the store and
/// opening the same backend again is a restart.
#[derive(Debug, Clone, Default)]
pub struct SharedBackend(Arc<redb::backends::InMemoryBackend>);

impl SharedBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self(Arc::new(redb::backends::InMemoryBackend::new()))
    }
}

impl redb::StorageBackend for SharedBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.0.write(offset, data)
    }
}
