//! A redb storage backend that can lose power.
//!
//! It keeps a *live* image (what the running process sees: every write
//! lands there at once) and a *durable* image (what the disk holds:
//! `sync_data` copies the ranges written since the last sync into it). A
//! crash keeps the durable image and, when writes are torn, a seeded random
//! subset of the writes made since the last completed sync, as a disk that
//! reorders its writes would. Power can also be cut at a chosen future sync:
//! that sync and every write after it fail, so the operation in progress
//! fails (and is never acknowledged) and the store is then crashed.
//!
//! The image sits behind `Arc<Mutex<..>>` so the world keeps a handle after
//! handing the backend to redb, and can crash it once the store is dropped.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redb::StorageBackend;

use crate::rng::SimRng;

#[derive(Debug, Default)]
struct Image {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Byte ranges of `live` written (or resized) since the last completed sync.
    dirty: Vec<(u64, u64)>,
    /// Completed syncs.
    syncs: u64,
    /// Syncs to let through before power is cut (`Some(0)`: the next one fails).
    syncs_before_failure: Option<u64>,
    /// Power is gone: writes and syncs fail.
    failed: bool,
}

impl Image {
    fn io_error() -> io::Error {
        io::Error::other("simulated power loss")
    }

    fn mark(&mut self, from: u64, to: u64) {
        if to > from {
            self.dirty.push((from, to));
        }
    }
}

/// A crashable in-memory redb backend (clone it to keep a handle).
#[derive(Debug, Clone, Default)]
pub struct CrashBackend {
    image: Arc<Mutex<Image>>,
}

/// What a crash keeps of the writes made since the last completed sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashKind {
    /// Only what was synced.
    Clean,
    /// What was synced plus a random subset of the later writes (and
    /// perhaps the later file length).
    Torn,
}

impl CrashBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Image> {
        self.image.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Cuts power at a future sync: `after` more syncs complete, the next
    /// one fails, and so does every write and sync after it.
    pub fn fail_after_syncs(&self, after: u64) {
        self.lock().syncs_before_failure = Some(after);
    }

    /// Whether a power cut is armed and has not happened yet.
    pub fn is_armed(&self) -> bool {
        let image = self.lock();
        image.syncs_before_failure.is_some() && !image.failed
    }

    /// Whether power is gone (the node must be crashed and reopened).
    pub fn has_failed(&self) -> bool {
        self.lock().failed
    }

    /// Cuts power now: nothing written from here on reaches either image.
    /// Call it before dropping the store, whose shutdown would otherwise
    /// write and sync a clean close.
    pub fn cut_power(&self) {
        self.lock().failed = true;
    }

    /// Completed syncs so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Bytes in the live image.
    pub fn live_len(&self) -> usize {
        self.lock().live.len()
    }

    /// The backend a restarted node finds: its live image is what survived.
    pub fn crash(&self, kind: CrashKind, rng: &mut SimRng) -> CrashBackend {
        let image = self.lock();
        let mut survived = image.durable.clone();
        if kind == CrashKind::Torn {
            if image.live.len() != survived.len() && rng.chance(1, 2) {
                survived.resize(image.live.len(), 0);
            }
            for &(from, to) in &image.dirty {
                if !rng.chance(1, 2) {
                    continue;
                }
                let (Ok(from), Ok(to)) = (usize::try_from(from), usize::try_from(to)) else {
                    continue;
                };
                let to = to.min(image.live.len());
                if from >= to {
                    continue;
                }
                if survived.len() < to {
                    survived.resize(to, 0);
                }
                if let (Some(dst), Some(src)) =
                    (survived.get_mut(from..to), image.live.get(from..to))
                {
                    dst.copy_from_slice(src);
                }
            }
        }
        CrashBackend {
            image: Arc::new(Mutex::new(Image {
                live: survived.clone(),
                durable: survived,
                ..Image::default()
            })),
        }
    }
}

fn to_usize(v: u64) -> Result<usize, io::Error> {
    usize::try_from(v).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))
}

impl StorageBackend for CrashBackend {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.lock().live.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let image = self.lock();
        let from = to_usize(offset)?;
        let src = from
            .checked_add(out.len())
            .and_then(|to| image.live.get(from..to))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut image = self.lock();
        if image.failed {
            return Err(Image::io_error());
        }
        let old = image.live.len() as u64;
        image.live.resize(to_usize(len)?, 0);
        image.mark(old.min(len), old.max(len));
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut image = self.lock();
        if image.failed {
            return Err(Image::io_error());
        }
        match image.syncs_before_failure {
            Some(0) => {
                image.failed = true;
                return Err(Image::io_error());
            }
            Some(n) => image.syncs_before_failure = Some(n - 1),
            None => {}
        }
        let Image {
            live,
            durable,
            dirty,
            ..
        } = &mut *image;
        durable.resize(live.len(), 0);
        for (from, to) in dirty.drain(..) {
            let (Ok(from), Ok(to)) = (usize::try_from(from), usize::try_from(to)) else {
                continue;
            };
            let to = to.min(live.len());
            if let (Some(dst), Some(src)) = (durable.get_mut(from..to), live.get(from..to)) {
                dst.copy_from_slice(src);
            }
        }
        image.syncs += 1;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut image = self.lock();
        if image.failed {
            return Err(Image::io_error());
        }
        let from = to_usize(offset)?;
        let to = from
            .checked_add(data.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "write past the end"))?;
        if image.live.len() < to {
            image.live.resize(to, 0);
        }
        if let Some(dst) = image.live.get_mut(from..to) {
            dst.copy_from_slice(data);
        }
        image.mark(offset, to as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use redb::{Database, ReadableDatabase, TableDefinition};

    use super::{CrashBackend, CrashKind};
    use crate::rng::SimRng;

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    fn put(db: &Database, k: u64) -> Result<(), redb::Error> {
        let txn = db.begin_write()?;
        {
            let mut t = txn.open_table(T)?;
            t.insert(k, k * 10)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn count(backend: CrashBackend) -> u64 {
        let db = Database::builder().create_with_backend(backend).unwrap();
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(T).unwrap();
        redb::ReadableTableMetadata::len(&t).unwrap()
    }

    #[test]
    fn committed_writes_survive_a_crash() {
        let mut rng = SimRng::new(3);
        for kind in [CrashKind::Clean, CrashKind::Torn] {
            let b = CrashBackend::new();
            let db = Database::builder().create_with_backend(b.clone()).unwrap();
            for k in 0..20 {
                put(&db, k).unwrap();
            }
            b.cut_power();
            drop(db);
            assert_eq!(count(b.crash(kind, &mut rng)), 20);
        }
    }

    #[test]
    fn a_failed_sync_fails_the_commit_and_loses_only_it() {
        let mut rng = SimRng::new(4);
        let b = CrashBackend::new();
        let db = Database::builder().create_with_backend(b.clone()).unwrap();
        for k in 0..5 {
            put(&db, k).unwrap();
        }
        b.fail_after_syncs(0);
        assert!(put(&db, 99).is_err());
        assert!(b.has_failed());
        drop(db);
        assert_eq!(count(b.crash(CrashKind::Torn, &mut rng)), 5);
    }
}
