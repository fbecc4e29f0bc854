//! What this node knows of its peers: how much of its log each has
//! acknowledged, the signed receipts relays gave it, the peers' certificates
//! and last contact, and the revocation list.

use fieldsync_identity::{DeviceId, PublicKey, Timestamp};
use redb::{ReadableTable, TableHandle, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::rows::{decode, encode};
use crate::store::{Store, fixed, read_meta, read_meta_u64, write_meta};
use crate::tables::{ACKS, DEVICES, LOG, META, RECEIPTS};

/// A signed receipt from a relay: "relay R holds this device's changes up
/// to position `through` of its log, durably, at time `at`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReceipt {
    /// The relay that signed it.
    pub relay: DeviceId,
    /// The position in this node's log it covers.
    pub through: u64,
    /// The relay's time.
    pub at: Timestamp,
    /// The signed receipt, opaque to the store (the caller verified it).
    pub bytes: Vec<u8>,
}

/// A peer this node knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// Its certificate, as received (the caller verified it).
    pub certificate: Vec<u8>,
    /// When this node last heard from it (directly or through a carrier).
    pub last_contact: Timestamp,
    /// The peer that carried news of it, if this node did not meet it directly.
    pub carried_by: Option<DeviceId>,
}

fn dbe(op: &'static str) -> impl Fn(redb::StorageError) -> StoreError {
    move |e| StoreError::db(op)(e.into())
}

fn tbe(op: &'static str) -> impl Fn(redb::TableError) -> StoreError {
    move |e| StoreError::db(op)(e.into())
}

/// The key bytes a `receipts-1` value is sealed under.
fn receipt_seal_key(relay: &DeviceId, id: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(relay.as_bytes());
    k[32..].copy_from_slice(&id.to_be_bytes());
    k
}

fn device_of(bytes: &[u8]) -> Result<DeviceId, StoreError> {
    let key: [u8; 32] = fixed(bytes, "device id")?;
    PublicKey::from_bytes(&key)
        .map(DeviceId::from_public_key)
        .map_err(|e| StoreError::corrupt(format!("device id: {e}")))
}

impl Store {
    /// Records that `peer` holds this node's log up to position `seq`.
    /// Never moves backwards, and never past the end of the log (a peer
    /// cannot acknowledge what was not written yet). The outbox
    /// ([`Store::outbox_len`]) is the log after the highest acknowledgement.
    /// Committed without waiting for the disk: losing it in a crash only
    /// means sending the peer those changes again (it ignores duplicates).
    pub fn set_peer_ack(&self, peer: &DeviceId, seq: u64) -> Result<(), StoreError> {
        self.write_lazy("acknowledge", |txn| self.ack_in(txn, peer, seq))
    }

    /// The position of this node's log up to which `peer` has acknowledged
    /// everything (0 when it never did).
    pub fn peer_ack(&self, peer: &DeviceId) -> Result<u64, StoreError> {
        let txn = self.read()?;
        let acks = txn.open_table(ACKS).map_err(tbe("read ack"))?;
        self.read_ack(&acks, peer)
    }

    fn read_ack(
        &self,
        acks: &impl ReadableTable<&'static [u8], &'static [u8]>,
        peer: &DeviceId,
    ) -> Result<u64, StoreError> {
        match acks
            .get(peer.as_bytes().as_slice())
            .map_err(dbe("read ack"))?
        {
            Some(v) => {
                let plain = self.seal.open(ACKS.name(), peer.as_bytes(), v.value())?;
                Ok(u64::from_le_bytes(fixed(&plain, "acknowledged position")?))
            }
            None => Ok(0),
        }
    }

    /// [`Store::set_peer_ack`] inside `txn`.
    fn ack_in(&self, txn: &WriteTransaction, peer: &DeviceId, seq: u64) -> Result<(), StoreError> {
        let head = txn
            .open_table(LOG)
            .map_err(tbe("acknowledge"))?
            .last()
            .map_err(dbe("acknowledge"))?
            .map(|(k, _)| k.value())
            .unwrap_or(0);
        let seq = seq.min(head);
        let mut acks = txn.open_table(ACKS).map_err(tbe("acknowledge"))?;
        let current = self.read_ack(&acks, peer)?;
        if seq > current {
            let sealed = self
                .seal
                .seal(ACKS.name(), peer.as_bytes(), &seq.to_le_bytes());
            acks.insert(peer.as_bytes().as_slice(), sealed.as_slice())
                .map_err(dbe("acknowledge"))?;
        }
        let mut meta = txn.open_table(META).map_err(tbe("acknowledge"))?;
        let acked = read_meta_u64(&meta, self.seal.as_ref(), "outbox-acked")?;
        if seq > acked {
            write_meta(
                &mut meta,
                self.seal.as_ref(),
                "outbox-acked",
                &seq.to_le_bytes(),
            )?;
        }
        Ok(())
    }

    /// Stores a relay's signed receipt and records its acknowledgement
    /// ([`Store::set_peer_ack`] with `through`) in the same transaction.
    /// Only the receipt covering the most is kept per relay (a receipt
    /// covers everything before its position); on a relay, custody
    /// checkpoints the receipt makes useless are dropped.
    pub fn store_receipt(&self, r: &StoredReceipt) -> Result<(), StoreError> {
        self.write("store receipt", |txn| {
            self.keep_receipt_in(txn, r)?;
            self.ack_in(txn, &r.relay, r.through)?;
            if self.kind() == crate::StoreKind::Relay {
                self.prune_custody_in(txn, r.through)?;
            }
            Ok(())
        })
    }

    /// Stores a receipt of `r.relay` that another relay carried down: it
    /// says how far that relay holds this node's log, but that relay did not
    /// acknowledge anything to this node, so its acknowledgement (the
    /// position sessions with it resume from) is left as it is. Kept only
    /// if it covers more than the receipt held for that relay; returns
    /// whether it was kept.
    pub fn store_relayed_receipt(&self, r: &StoredReceipt) -> Result<bool, StoreError> {
        self.write("store relayed receipt", |txn| self.keep_receipt_in(txn, r))
    }

    /// Keeps `r` as the receipt of its relay if it covers at least as much
    /// as the one held; drops the older ones. Returns whether it was kept.
    fn keep_receipt_in(
        &self,
        txn: &WriteTransaction,
        r: &StoredReceipt,
    ) -> Result<bool, StoreError> {
        let mut table = txn.open_table(RECEIPTS).map_err(tbe("store receipt"))?;
        let relay = r.relay.as_bytes().as_slice();
        let held: Vec<(u64, StoredReceipt)> = table
            .range((relay, 0)..=(relay, u64::MAX))
            .map_err(dbe("store receipt"))?
            .map(|entry| {
                let (k, v) = entry.map_err(dbe("store receipt"))?;
                let id = k.value().1;
                let plain =
                    self.seal
                        .open(RECEIPTS.name(), &receipt_seal_key(&r.relay, id), v.value())?;
                Ok((id, decode::<StoredReceipt>(&plain, "receipt")?))
            })
            .collect::<Result<_, StoreError>>()?;
        if held.iter().any(|(_, h)| h.through > r.through) {
            return Ok(false);
        }
        let id = held.last().map_or(1, |(id, _)| id + 1);
        for (old, _) in &held {
            table.remove((relay, *old)).map_err(dbe("store receipt"))?;
        }
        let sealed = self.seal.seal(
            RECEIPTS.name(),
            &receipt_seal_key(&r.relay, id),
            &encode(r)?,
        );
        table
            .insert((relay, id), sealed.as_slice())
            .map_err(dbe("store receipt"))?;
        Ok(true)
    }

    /// The receipt held from each relay (the one covering the most).
    pub fn receipts(&self) -> Result<Vec<StoredReceipt>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(RECEIPTS).map_err(tbe("read receipts"))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(dbe("read receipts"))? {
            let (k, v) = entry.map_err(dbe("read receipts"))?;
            let (relay, id) = k.value();
            let relay = device_of(relay)?;
            let plain =
                self.seal
                    .open(RECEIPTS.name(), &receipt_seal_key(&relay, id), v.value())?;
            out.push(decode(&plain, "receipt")?);
        }
        Ok(out)
    }

    /// The latest receipt `relay` gave this node, if any.
    pub fn latest_receipt(&self, relay: &DeviceId) -> Result<Option<StoredReceipt>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(RECEIPTS).map_err(tbe("read receipts"))?;
        let r = relay.as_bytes().as_slice();
        let last = table
            .range((r, 0)..=(r, u64::MAX))
            .map_err(dbe("read receipts"))?
            .next_back()
            .transpose()
            .map_err(dbe("read receipts"))?;
        match last {
            Some((k, v)) => {
                let plain = self.seal.open(
                    RECEIPTS.name(),
                    &receipt_seal_key(relay, k.value().1),
                    v.value(),
                )?;
                Ok(Some(decode(&plain, "receipt")?))
            }
            None => Ok(None),
        }
    }

    /// Stores the revocation list (its signed bytes; the caller verified
    /// them and checked that they are newer than the stored list).
    pub fn set_revocations(&self, bytes: &[u8]) -> Result<(), StoreError> {
        self.write("store revocations", |txn| {
            let mut meta = txn.open_table(META).map_err(tbe("store revocations"))?;
            write_meta(&mut meta, self.seal.as_ref(), "revocations", bytes)
        })
    }

    /// The stored revocation list bytes, if any (verify them before use).
    pub fn revocations(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.read()?;
        let meta = txn.open_table(META).map_err(tbe("read revocations"))?;
        read_meta(&meta, self.seal.as_ref(), "revocations")
    }

    /// Records (or replaces) what this node knows of `device`. Committed
    /// without waiting for the disk (the next durable commit, such as the
    /// batch the peer sends next, persists it): a crash can only roll back
    /// when the peer was last heard from.
    pub fn record_peer(&self, device: &DeviceId, rec: &PeerRecord) -> Result<(), StoreError> {
        self.write_lazy("record peer", |txn| self.record_peer_in(txn, device, rec))
    }

    /// Records a peer inside `txn`.
    pub(crate) fn record_peer_in(
        &self,
        txn: &redb::WriteTransaction,
        device: &DeviceId,
        rec: &PeerRecord,
    ) -> Result<(), StoreError> {
        let mut table = txn.open_table(DEVICES).map_err(tbe("record peer"))?;
        let sealed = self
            .seal
            .seal(DEVICES.name(), device.as_bytes(), &encode(rec)?);
        table
            .insert(device.as_bytes().as_slice(), sealed.as_slice())
            .map_err(dbe("record peer"))?;
        Ok(())
    }

    /// What this node knows of `device`, if anything.
    pub fn peer(&self, device: &DeviceId) -> Result<Option<PeerRecord>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(DEVICES).map_err(tbe("read peers"))?;
        let Some(v) = table
            .get(device.as_bytes().as_slice())
            .map_err(dbe("read peers"))?
        else {
            return Ok(None);
        };
        let plain = self
            .seal
            .open(DEVICES.name(), device.as_bytes(), v.value())?;
        Ok(Some(decode(&plain, "peer record")?))
    }

    /// Every peer this node knows, by device id.
    pub fn peers(&self) -> Result<Vec<(DeviceId, PeerRecord)>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(DEVICES).map_err(tbe("read peers"))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(dbe("read peers"))? {
            let (k, v) = entry.map_err(dbe("read peers"))?;
            let device = device_of(k.value())?;
            let plain = self.seal.open(DEVICES.name(), k.value(), v.value())?;
            out.push((device, decode(&plain, "peer record")?));
        }
        Ok(out)
    }
}
