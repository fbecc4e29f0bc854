//! Opening and creating a store; the durable write path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use fieldsync_case::CaseDoc;
use fieldsync_identity::{CaseId, DeviceId, SecretKey, Timestamp};
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableHandle,
    WriteTransaction,
};
use zeroize::{Zeroize as _, Zeroizing};

use crate::audit::{AuditEvent, AuditKind};
use crate::error::{StorageFailure, StoreError};
use crate::migrations;
pub(crate) use crate::rows::DeviceRecord;
use crate::rows::{decode, encode};
use crate::seal::{PlainSeal, Seal, probe};
use crate::tables::{AUDIT, META};

/// This device: its key, name and incarnation, loaded from the store.
pub struct LocalDevice {
    key: SecretKey,
    id: DeviceId,
    name: String,
    incarnation: u32,
    created_at: Timestamp,
}

impl LocalDevice {
    /// The device id (its public key).
    pub fn id(&self) -> DeviceId {
        self.id
    }
    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The device's incarnation (part of its Automerge actor id).
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }
    /// When the store was created.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }
    /// The device's secret key: the key of its TLS identity. Everything
    /// it signs as a record goes through [`Store::sign`].
    pub fn secret_key(&self) -> &SecretKey {
        &self.key
    }

    pub(crate) fn key(&self) -> &SecretKey {
        &self.key
    }
}

impl std::fmt::Debug for LocalDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDevice")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("incarnation", &self.incarnation)
            .finish_non_exhaustive()
    }
}

/// What a store is for, fixed when it is created.
///
/// A device store materializes every case it holds: incoming changes are
/// applied to the case's Automerge document, so listings and records are
/// always current. A relay store never loads a document to store or route a
/// change: it keeps changes by their headers and each case's heads from the
/// changes' dependency lists (headquarters views materialize later, lazily).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// A field device: documents are materialized on import.
    Device,
    /// An office or headquarters relay: changes are stored and forwarded, never materialized.
    Relay,
}

impl StoreKind {
    /// The byte stored in `meta-1/kind`.
    fn to_byte(self) -> u8 {
        match self {
            StoreKind::Device => 0,
            StoreKind::Relay => 1,
        }
    }

    /// Parses the byte stored in `meta-1/kind`.
    fn from_byte(b: &[u8]) -> Result<Self, StoreError> {
        match b {
            [0] => Ok(StoreKind::Device),
            [1] => Ok(StoreKind::Relay),
            _ => Err(StoreError::corrupt(format!("unknown store kind {b:?}"))),
        }
    }
}

/// What `create` needs to make a new store, device or relay (both have a
/// device identity: a relay signs receipts with its key). Randomness and
/// time are the caller's: this crate reads neither the OS clock nor its RNG.
pub struct NewDevice<'a> {
    /// 32 random bytes: the device's ed25519 secret seed.
    pub seed: [u8; 32],
    /// The device name.
    pub name: &'a str,
    /// 16 random bytes naming this store's log epoch.
    pub epoch: [u8; 16],
    /// Creation time.
    pub now: Timestamp,
    /// Whether this is a device or a relay store (fixed for the store's life).
    pub kind: StoreKind,
}

/// Most documents the store keeps loaded between operations.
const DOC_CACHE: usize = 32;

/// How a store file is opened or created: how much memory redb may keep.
///
/// redb keeps the pages it reads, and pages written but not yet on disk, in
/// a page cache of at most [`StoreOptions::cache_size`] bytes. The cache is
/// a ceiling, not an allocation: it fills as pages are touched and then
/// stays full, so a long-running process keeps that much resident. With
/// redb's default (1 GiB) a relay's memory grows with every change it
/// stores or sends until the cache or the file is full; a small cache keeps
/// it flat, and pages beyond it are read again from the file (through the
/// operating system's page cache, which the kernel can reclaim).
///
/// The integrity check every open runs reads the whole file through a
/// cache of its own of at most 1 MiB (and never above this limit): it reads
/// each page once, so a larger one would only leave memory behind.
///
/// ```
/// use fieldsync_store::StoreOptions;
///
/// let relay = StoreOptions::default().with_cache_size(32 * 1024 * 1024);
/// assert_eq!(relay.cache_size, 32 << 20);
/// assert_eq!(StoreOptions::default().cache_size, StoreOptions::DEFAULT_CACHE_SIZE);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreOptions {
    /// Most bytes redb's page cache holds (read and write pages together).
    pub cache_size: usize,
}

impl StoreOptions {
    /// The page cache when none is set: redb's own default, 1 GiB.
    pub const DEFAULT_CACHE_SIZE: usize = 1024 * 1024 * 1024;

    /// These options with a page cache of at most `bytes`.
    #[must_use]
    pub fn with_cache_size(mut self, bytes: usize) -> Self {
        self.cache_size = bytes;
        self
    }

    /// A redb builder with these options.
    pub(crate) fn builder(&self) -> redb::Builder {
        let mut builder = Database::builder();
        builder.set_cache_size(self.cache_size);
        builder
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_size: Self::DEFAULT_CACHE_SIZE,
        }
    }
}

/// A case's id and compartment.
pub(crate) type CaseMeta = (CaseId, std::sync::Arc<str>);

/// A FieldSync store: one redb file holding a node's cases, its signed
/// change log, outbox, quarantine and audit trail.
///
/// Every write is one transaction. A write that holds data (an edit, an
/// ingest, a receipt, a quarantine entry) is durable when it returns `Ok`:
/// it survives a crash or power loss. Two kinds do not wait for the disk:
/// bookkeeping whose loss only repeats work (when a peer was last heard
/// from, how far it acknowledged our log), and [`Store::ingest_deferred`]
/// for group commit, which the next [`Store::flush`] makes durable. After a
/// failed commit the handle is poisoned and refuses further writes.
pub struct Store {
    pub(crate) db: Database,
    pub(crate) seal: Box<dyn Seal>,
    pub(crate) device: LocalDevice,
    kind: StoreKind,
    poisoned: AtomicBool,
    /// Loaded documents, keyed by case, with the change count they reflect.
    docs: Mutex<HashMap<CaseId, (CaseDoc, u64)>>,
    /// What never changes about a case, by case key: its id and
    /// compartment (decoding a genesis checks two public keys, which is
    /// dear when a repair lists every case).
    pub(crate) case_meta: Mutex<HashMap<[u8; 16], CaseMeta>>,
    /// Relay stores: case summaries read for listings, with the change
    /// count they reflect.
    pub(crate) summaries: Mutex<HashMap<CaseId, (u64, fieldsync_case::CaseSummary)>>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

pub(crate) fn open_error(path: &Path, source: redb::DatabaseError) -> StoreError {
    match source {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Busy {
            path: path.to_owned(),
        },
        // The file fails its checksums or its structure is broken.
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
            StoreError::Damaged {
                path: path.to_owned(),
                detail,
            }
        }
        redb::DatabaseError::RepairAborted => StoreError::Damaged {
            path: path.to_owned(),
            detail: "its repair after a crash was aborted".into(),
        },
        // Truncated, or its header is gone.
        redb::DatabaseError::Storage(redb::StorageError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
            ) =>
        {
            StoreError::Damaged {
                path: path.to_owned(),
                detail: e.to_string(),
            }
        }
        source => StoreError::Open {
            path: path.to_owned(),
            source,
        },
    }
}

impl Store {
    /// Creates a new store file at `path` with a new device identity,
    /// stored in the clear (relays; see [`Store::create_sealed`] for field
    /// devices). Fails with [`StoreError::AlreadyExists`] if there is one.
    pub fn create(path: &Path, device: NewDevice<'_>) -> Result<Self, StoreError> {
        Self::create_sealed(path, device, PlainSeal)
    }

    /// Creates a new store file at `path` whose every value passes through
    /// `seal` (an [`AeadSeal`](crate::AeadSeal) for a store encrypted at
    /// rest). The store opens again only with a seal of the same kind and
    /// key ([`Store::open_sealed`]). Fails with [`StoreError::AlreadyExists`]
    /// if there is one.
    pub fn create_sealed(
        path: &Path,
        device: NewDevice<'_>,
        seal: impl Seal + 'static,
    ) -> Result<Self, StoreError> {
        Self::create_with(path, device, seal, StoreOptions::default())
    }

    /// Like [`Store::create_sealed`], with `options` (the page cache: see
    /// [`StoreOptions`]). Only this handle uses them; the next open sets
    /// its own.
    pub fn create_with(
        path: &Path,
        device: NewDevice<'_>,
        seal: impl Seal + 'static,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        if path.exists() {
            return Err(StoreError::AlreadyExists {
                path: path.to_owned(),
            });
        }
        let db = options
            .builder()
            .create(path)
            .map_err(|e| open_error(path, e))?;
        Self::initialize(db, device, Some(path.to_owned()), Box::new(seal))
    }

    /// Creates a store in memory (for simulations and tests).
    pub fn create_in_memory(device: NewDevice<'_>) -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| open_error(Path::new(":memory:"), e))?;
        Self::initialize(db, device, None, Box::new(PlainSeal))
    }

    /// Creates a store on any redb storage backend (simulations use this to
    /// inject crashes and I/O failures).
    pub fn create_with_backend(
        backend: impl redb::StorageBackend,
        device: NewDevice<'_>,
    ) -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(|e| open_error(Path::new(":backend:"), e))?;
        Self::initialize(db, device, None, Box::new(PlainSeal))
    }

    /// Opens an existing store on any redb storage backend (simulations
    /// reopen a crashed node from the image that survived this way).
    pub fn open_with_backend(backend: impl redb::StorageBackend) -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(|e| open_error(Path::new(":backend:"), e))?;
        Self::from_db(db, None, Box::new(PlainSeal))
    }

    /// Opens an existing store kept in the clear. A store encrypted at rest
    /// refuses with [`SealError::StoreEncrypted`](crate::SealError::StoreEncrypted)
    /// ("this store is encrypted; it needs its key").
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_sealed(path, PlainSeal)
    }

    /// Opens an existing store with `seal`. The seal must be of the kind
    /// the store was created with: a store in the clear refuses an
    /// encrypting seal ([`SealError::StoreNotEncrypted`](crate::SealError::StoreNotEncrypted)),
    /// and a key that is not the store's gives
    /// [`SealError::WrongKey`](crate::SealError::WrongKey). Nothing is
    /// written before these checks pass.
    pub fn open_sealed(path: &Path, seal: impl Seal + 'static) -> Result<Self, StoreError> {
        Self::open_with(path, seal, StoreOptions::default())
    }

    /// Like [`Store::open_sealed`], with `options`: a relay that runs for
    /// months bounds its memory with a small page cache (see
    /// [`StoreOptions`]).
    pub fn open_with(
        path: &Path,
        seal: impl Seal + 'static,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        if !path.is_file() {
            return Err(StoreError::NotInitialized {
                path: path.to_owned(),
            });
        }
        let db = crate::repair::open_checked(path, &options)?;
        Self::from_db(db, Some(path.to_owned()), Box::new(seal))
    }

    fn initialize(
        db: Database,
        mut new: NewDevice<'_>,
        path: Option<PathBuf>,
        seal: Box<dyn Seal>,
    ) -> Result<Self, StoreError> {
        let record = DeviceRecord {
            seed: new.seed,
            name: new.name.to_owned(),
            incarnation: 0,
            created_at: new.now.as_millis(),
        };
        new.seed.zeroize();
        let device_bytes = Zeroizing::new(encode(&record)?);
        drop(record);
        let mut txn = db
            .begin_write()
            .map_err(|e| StoreError::db("create")(e.into()))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| StoreError::db("create")(e.into()))?;
        migrations::run(&txn, 0, seal.as_ref())?;
        {
            let mut meta = txn
                .open_table(META)
                .map_err(|e| StoreError::db("create")(e.into()))?;
            let put = |meta: &mut redb::Table<&str, &[u8]>, k: &str, v: &[u8]| {
                meta.insert(k, seal.seal(META.name(), k.as_bytes(), v).as_slice())
                    .map(|_| ())
                    .map_err(|e| StoreError::db("create")(e.into()))
            };
            put(&mut meta, "schema", &migrations::CURRENT.to_le_bytes())?;
            put(&mut meta, "device", &device_bytes)?;
            put(&mut meta, "epoch", &new.epoch)?;
            put(&mut meta, "kind", &[new.kind.to_byte()])?;
        }
        {
            let mut audit = txn
                .open_table(AUDIT)
                .map_err(|e| StoreError::db("create")(e.into()))?;
            let ev = AuditEvent {
                at: new.now,
                kind: AuditKind::StoreCreated,
                detail: format!("device '{}' created", new.name),
            };
            audit
                .insert(
                    1,
                    seal.seal(AUDIT.name(), &1u64.to_be_bytes(), &encode(&ev)?)
                        .as_slice(),
                )
                .map_err(|e| StoreError::db("create")(e.into()))?;
        }
        txn.commit()
            .map_err(|e| StoreError::db("commit")(e.into()))?;
        Self::from_db(db, path, seal)
    }

    fn from_db(
        db: Database,
        path: Option<PathBuf>,
        seal: Box<dyn Seal>,
    ) -> Result<Self, StoreError> {
        // Check the seal against the store, then bring the schema up to
        // date (a no-op on current stores).
        let schema = {
            let txn = db
                .begin_read()
                .map_err(|e| StoreError::db("open")(e.into()))?;
            let meta = txn.open_table(META).map_err(|e| match e {
                redb::TableError::TableDoesNotExist(_) => {
                    StoreError::corrupt("the file has no FieldSync tables")
                }
                e => StoreError::db("open")(e.into()),
            })?;
            let raw = meta
                .get("schema")
                .map_err(|e| StoreError::db("open")(e.into()))?
                .ok_or_else(|| StoreError::corrupt("missing schema version"))?;
            let v = probe(seal.as_ref(), META.name(), b"schema", raw.value())?;
            u32::from_le_bytes(fixed(&v, "schema version")?)
        };
        if schema != migrations::CURRENT {
            let mut txn = db
                .begin_write()
                .map_err(|e| StoreError::db("migrate")(e.into()))?;
            txn.set_durability(Durability::Immediate)
                .map_err(|e| StoreError::db("migrate")(e.into()))?;
            migrations::run(&txn, schema, seal.as_ref())?;
            {
                let mut meta = txn
                    .open_table(META)
                    .map_err(|e| StoreError::db("migrate")(e.into()))?;
                meta.insert(
                    "schema",
                    seal.seal(META.name(), b"schema", &migrations::CURRENT.to_le_bytes())
                        .as_slice(),
                )
                .map_err(|e| StoreError::db("migrate")(e.into()))?;
            }
            txn.commit()
                .map_err(|e| StoreError::db("commit")(e.into()))?;
        }
        let (record, kind): (DeviceRecord, StoreKind) = {
            let txn = db
                .begin_read()
                .map_err(|e| StoreError::db("open")(e.into()))?;
            let meta = txn
                .open_table(META)
                .map_err(|e| StoreError::db("open")(e.into()))?;
            let v = Zeroizing::new(
                read_meta(&meta, seal.as_ref(), "device")?
                    .ok_or_else(|| StoreError::corrupt("missing device identity"))?,
            );
            let k = read_meta(&meta, seal.as_ref(), "kind")?
                .ok_or_else(|| StoreError::corrupt("missing store kind"))?;
            (decode(&v, "device identity")?, StoreKind::from_byte(&k)?)
        };
        let key = SecretKey::from_seed(&record.seed);
        let device = LocalDevice {
            id: DeviceId::from_public_key(key.public()),
            key,
            name: record.name.clone(),
            incarnation: record.incarnation,
            created_at: Timestamp::from_millis(record.created_at),
        };
        Ok(Self {
            db,
            seal,
            device,
            kind,
            poisoned: AtomicBool::new(false),
            docs: Mutex::new(HashMap::new()),
            case_meta: Mutex::new(HashMap::new()),
            summaries: Mutex::new(HashMap::new()),
            path,
        })
    }

    /// This device.
    pub fn device(&self) -> &LocalDevice {
        &self.device
    }

    /// Whether this is a device or a relay store.
    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    /// Whether the store is encrypted at rest (opened with an encrypting seal).
    pub fn is_encrypted(&self) -> bool {
        self.seal.encrypted()
    }

    /// The file this store lives in (`None` in memory).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether an earlier commit failed (the handle then refuses writes).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    /// Signs `payload` with this node's key (receipts, bundles). The secret
    /// key never leaves the store.
    pub fn sign<T: fieldsync_identity::Signable>(
        &self,
        payload: T,
    ) -> Result<fieldsync_identity::Verified<T>, StoreError> {
        Ok(fieldsync_identity::sign(payload, self.device.key())?)
    }

    /// This log's epoch: 16 bytes chosen when the store was created.
    pub fn epoch(&self) -> Result<[u8; 16], StoreError> {
        let txn = self.read()?;
        let meta = txn
            .open_table(META)
            .map_err(|e| StoreError::db("read epoch")(e.into()))?;
        let v = read_meta(&meta, self.seal.as_ref(), "epoch")?
            .ok_or_else(|| StoreError::corrupt("missing epoch"))?;
        fixed(&v, "epoch")
    }

    pub(crate) fn read(&self) -> Result<ReadTransaction, StoreError> {
        self.db
            .begin_read()
            .map_err(|e| StoreError::db("begin read")(e.into()))
    }

    /// Runs `f` in one write transaction and commits it durably. If `f`
    /// fails, nothing is written. If the commit fails, the store is poisoned.
    pub(crate) fn write<R, E: From<StoreError> + StorageFailure>(
        &self,
        op: &'static str,
        f: impl FnOnce(&WriteTransaction) -> Result<R, E>,
    ) -> Result<R, E> {
        self.write_with(op, Durability::Immediate, f)
    }

    /// Like [`Store::write`], without waiting for the disk: for bookkeeping
    /// whose loss in a crash costs only repeated work, never data (when a
    /// peer was last heard from, how far it acknowledged our log). The next
    /// durable commit persists it too; a crash before that rolls it back.
    pub(crate) fn write_lazy<R, E: From<StoreError> + StorageFailure>(
        &self,
        op: &'static str,
        f: impl FnOnce(&WriteTransaction) -> Result<R, E>,
    ) -> Result<R, E> {
        self.write_with(op, Durability::None, f)
    }

    /// Makes every commit so far durable (those of [`Store::ingest_deferred`]
    /// and the other bookkeeping that does not wait for the disk): one
    /// durable commit, one fsync.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.write("flush", |_| Ok::<_, StoreError>(()))
    }

    pub(crate) fn write_with<R, E: From<StoreError> + StorageFailure>(
        &self,
        op: &'static str,
        durability: Durability,
        f: impl FnOnce(&WriteTransaction) -> Result<R, E>,
    ) -> Result<R, E> {
        if self.is_poisoned() {
            return Err(StoreError::Poisoned.into());
        }
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| StoreError::db(op)(e.into()))?;
        txn.set_durability(durability)
            .map_err(|e| StoreError::db(op)(e.into()))?;
        let result = match f(&txn) {
            Ok(r) => r,
            Err(e) => {
                // After an I/O failure redb's state is suspect: refuse writes until reopened.
                if e.is_storage_failure() {
                    self.poisoned.store(true, Ordering::SeqCst);
                    tracing::error!(op, "I/O failure in a write; store poisoned");
                }
                // Aborting discards every write of `f`; an abort error adds nothing useful.
                let _ = txn.abort();
                return Err(e);
            }
        };
        if let Err(e) = txn.commit() {
            self.poisoned.store(true, Ordering::SeqCst);
            tracing::error!(op, error = %e, "commit failed; store poisoned");
            return Err(StoreError::db("commit")(e.into()).into());
        }
        Ok(result)
    }

    /// Takes a cached document for `case` if it reflects `change_count` changes.
    pub(crate) fn take_cached(&self, case: &CaseId, change_count: u64) -> Option<CaseDoc> {
        let mut docs = self.docs.lock().ok()?;
        match docs.remove(case) {
            Some((doc, n)) if n == change_count => Some(doc),
            _ => None,
        }
    }

    /// Drops what is cached of `case` (its document, and on a relay its
    /// listing summary): after a withdrawal, a change count no longer names
    /// one set of changes.
    pub(crate) fn forget_cached(&self, case: &CaseId) {
        if let Ok(mut docs) = self.docs.lock() {
            docs.remove(case);
        }
        if let Ok(mut summaries) = self.summaries.lock() {
            summaries.remove(case);
        }
    }

    /// Returns a document to the cache (only after its state is committed).
    pub(crate) fn put_cached(&self, case: CaseId, doc: CaseDoc, change_count: u64) {
        if let Ok(mut docs) = self.docs.lock() {
            if docs.len() >= DOC_CACHE
                && !docs.contains_key(&case)
                && let Some(victim) = docs.keys().next().copied()
            {
                docs.remove(&victim);
            }
            docs.insert(case, (doc, change_count));
        }
    }

    /// Gives freed pages back to the file system (redb does not on its own:
    /// many small durable commits grow the file). Run it when idle.
    pub fn compact(&mut self) -> Result<bool, StoreError> {
        if self.is_poisoned() {
            return Err(StoreError::Poisoned);
        }
        self.db
            .compact()
            .map_err(|e| StoreError::db("compact")(e.into()))
    }

    /// A device setting (e.g. the default office), if set.
    pub fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let txn = self.read()?;
        let meta = txn
            .open_table(META)
            .map_err(|e| StoreError::db("read setting")(e.into()))?;
        read_meta(&meta, self.seal.as_ref(), &format!("setting/{name}"))?
            .map(|v| String::from_utf8(v).map_err(|_| StoreError::corrupt("setting is not UTF-8")))
            .transpose()
    }

    /// Sets a device setting, durably.
    pub fn set_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let key = format!("setting/{name}");
        self.write("write setting", |txn| {
            let mut meta = txn
                .open_table(META)
                .map_err(|e| StoreError::db("write setting")(e.into()))?;
            meta.insert(
                key.as_str(),
                self.seal
                    .seal(META.name(), key.as_bytes(), value.as_bytes())
                    .as_slice(),
            )
            .map_err(|e| StoreError::db("write setting")(e.into()))?;
            Ok(())
        })
    }

    /// Appends an audit event inside `txn`.
    pub(crate) fn audit_in(
        &self,
        txn: &WriteTransaction,
        ev: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut audit = txn
            .open_table(AUDIT)
            .map_err(|e| StoreError::db("audit")(e.into()))?;
        let next = audit
            .last()
            .map_err(|e| StoreError::db("audit")(e.into()))?
            .map(|(k, _)| k.value() + 1)
            .unwrap_or(1);
        let bytes = self
            .seal
            .seal(AUDIT.name(), &next.to_be_bytes(), &encode(ev)?);
        audit
            .insert(next, bytes.as_slice())
            .map_err(|e| StoreError::db("audit")(e.into()))?;
        Ok(())
    }

    /// Records an audit event in its own durable transaction.
    pub fn audit(&self, ev: &AuditEvent) -> Result<(), StoreError> {
        self.write("audit", |txn| self.audit_in(txn, ev))
    }
}

pub(crate) fn read_meta(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    seal: &dyn Seal,
    key: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    match meta
        .get(key)
        .map_err(|e| StoreError::db("read meta")(e.into()))?
    {
        Some(v) => Ok(Some(seal.open(META.name(), key.as_bytes(), v.value())?)),
        None => Ok(None),
    }
}

pub(crate) fn fixed<const N: usize>(v: &[u8], what: &str) -> Result<[u8; N], StoreError> {
    v.try_into()
        .map_err(|_| StoreError::corrupt(format!("{what}: expected {N} bytes, found {}", v.len())))
}

/// Reads a u64 LE meta value (0 when absent).
pub(crate) fn read_meta_u64(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    seal: &dyn Seal,
    key: &str,
) -> Result<u64, StoreError> {
    read_meta(meta, seal, key)?
        .map(|v| fixed::<8>(&v, key).map(u64::from_le_bytes))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// Writes a meta value inside a write transaction.
pub(crate) fn write_meta(
    meta: &mut redb::Table<'_, &'static str, &'static [u8]>,
    seal: &dyn Seal,
    key: &str,
    value: &[u8],
) -> Result<(), StoreError> {
    meta.insert(
        key,
        seal.seal(META.name(), key.as_bytes(), value).as_slice(),
    )
    .map(|_| ())
    .map_err(|e| StoreError::db("write meta")(e.into()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use fieldsync_case::CaseKind;

    use super::*;
    use crate::NewCase;

    /// Reads every case row and every stored change of `store`.
    fn read_everything(store: &Store) -> usize {
        let cases = store.list_cases().unwrap();
        cases
            .iter()
            .map(|c| store.case_envelopes(&c.id).unwrap().len())
            .sum()
    }

    // redb's `cache_metrics` feature (enabled for this crate's tests) counts
    // the bytes its page cache holds.
    #[test]
    fn the_page_cache_size_reaches_redb() {
        const SMALL: usize = 64 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let now = Timestamp::from_millis(1_700_000_000_000);
        let small = StoreOptions::default().with_cache_size(SMALL);
        let changes = {
            let store = Store::create_with(
                &path,
                NewDevice {
                    seed: [3; 32],
                    name: "rome-laptop",
                    epoch: [4; 16],
                    now,
                    kind: StoreKind::Device,
                },
                PlainSeal,
                small,
            )
            .unwrap();
            let me = store.device().id();
            // Text that does not compress (Automerge deflates large changes).
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let mut text = || {
                (0..2000)
                    .map(|_| {
                        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        format!("{:x}", x >> 60)
                    })
                    .collect::<String>()
            };
            for i in 0..40u8 {
                let case = store
                    .create_case(
                        &NewCase {
                            id: CaseId::from_bytes([i; 16]),
                            kind: CaseKind::CulturalProperty,
                            office: "rome",
                            compartment: "antiquities",
                            title: &format!("case {i}"),
                        },
                        now,
                    )
                    .unwrap();
                for _ in 0..3 {
                    store
                        .edit_case(&case, now, "note", |d| d.add_note(me, now, &text()))
                        .unwrap();
                }
            }
            let stats = store.db.cache_stats();
            assert!(stats.used_bytes() <= SMALL, "{stats:?}");
            assert!(stats.evictions() > 0, "{stats:?}");
            read_everything(&store)
        };
        assert_eq!(changes, 40 * 4);
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size > 8 * SMALL as u64, "{size}");

        // Reopened with the small cache: every page read, the cache stays
        // within its size.
        let store = Store::open_with(&path, PlainSeal, small).unwrap();
        assert_eq!(read_everything(&store), changes);
        let stats = store.db.cache_stats();
        assert!(stats.used_bytes() <= SMALL, "{stats:?}");
        assert!(stats.evictions() > 0, "{stats:?}");
        drop(store);

        // The default cache keeps what the same reads touched.
        let store = Store::open(&path).unwrap();
        assert_eq!(read_everything(&store), changes);
        let stats = store.db.cache_stats();
        assert!(stats.used_bytes() > 4 * SMALL, "{stats:?}");
        assert_eq!(stats.evictions(), 0, "{stats:?}");
    }
}
