//! What happens to the world during the fault phase: local edits,
//! partitions, faults and the revocation.

use std::collections::{BTreeMap, BTreeSet};

use fieldsync_case::{CaseKind, Field, Priority, Status, envelope_hash};
use fieldsync_identity::{CaseId, DeviceId, Revocation, RevocationList, Role};
use fieldsync_protocol::{Authority, apply_release, encode_release, release_body};
use fieldsync_store::NewCase;

use crate::net::{Ev, NodeIx};
use crate::node::{Authored, NodeKind, last_change};
use crate::report::Check;
use crate::world::{HQ, Phase, Revoked, World, ts};

const WORDS: [&str; 12] = [
    "stele",
    "port",
    "courier",
    "ledger",
    "tunnel",
    "icon",
    "visa",
    "manifest",
    "broker",
    "warehouse",
    "passport",
    "shipment",
];

/// One local edit, chosen before the store is touched.
#[derive(Debug, Clone)]
enum EditOp {
    Title(String),
    Status(Status),
    Priority(Priority),
    Note(String),
    Splice { at: u64, del: u64, text: String },
}

impl World {
    fn words(&mut self, n: u64) -> String {
        (0..n)
            .map(|_| *self.edit_rng.pick(&WORDS).unwrap_or(&"case"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn pick_op(&mut self) -> EditOp {
        match self.edit_rng.below(5) {
            0 => {
                let n = self.edit_rng.range(1, 3);
                let serial = self.edit_rng.below(1000);
                EditOp::Title(format!("{} #{serial}", self.words(n)))
            }
            1 => EditOp::Status(*self.edit_rng.pick(Status::ALL).unwrap_or(&Status::Active)),
            2 => EditOp::Priority(*self.edit_rng.pick(Priority::ALL).unwrap_or(&Priority::High)),
            3 => {
                let n = self.edit_rng.range(2, 8);
                EditOp::Note(self.words(n))
            }
            _ => {
                let n = self.edit_rng.range(1, 4);
                EditOp::Splice {
                    at: self.edit_rng.next_u64(),
                    del: self.edit_rng.below(6),
                    text: format!("{} ", self.words(n)),
                }
            }
        }
    }

    /// A device edits: a field device creates a case in a compartment it
    /// may write or edits one it may write; a liaison, now and then, tries
    /// to edit a case it reads (which must end in quarantine).
    pub(crate) fn edit(&mut self, ix: NodeIx) {
        let node = &self.nodes[ix];
        let Some(store) = node.store.as_ref() else {
            return;
        };
        let held = match store.list_cases() {
            Ok(l) => l,
            Err(e) => {
                let detail = format!("{}: listing cases: {e}", node.name);
                self.violation(Check::Store, detail);
                return;
            }
        };
        let liaison = node.role() == Role::Liaison;
        if liaison && (!self.cfg.liaison_edits || !self.edit_rng.chance(1, 3)) {
            return;
        }
        let candidates: Vec<CaseId> = held
            .iter()
            .filter(|c| liaison || node.can_write(&c.compartment))
            .map(|c| c.id)
            .collect();
        let writable: Vec<String> = self
            .compartments
            .iter()
            .filter(|c| node.can_write(c))
            .cloned()
            .collect();
        let create = !liaison
            && !writable.is_empty()
            && (candidates.is_empty() || (candidates.len() < 8 && self.edit_rng.chance(1, 6)));
        let head0 = node.head();
        let now = ts(self.now);
        let device = node.id();
        let outcome = if create {
            let id = CaseId::from_bytes(self.edit_rng.bytes());
            let kind = *self
                .edit_rng
                .pick(CaseKind::ALL)
                .unwrap_or(&CaseKind::CriminalInvestigation);
            let compartment = self.edit_rng.pick(&writable).cloned().unwrap_or_default();
            let title = self.words(2);
            let Some(store) = self.nodes[ix].store.as_ref() else {
                return;
            };
            store
                .create_case(
                    &NewCase {
                        id,
                        kind,
                        office: "rome",
                        compartment: &compartment,
                        title: &title,
                    },
                    now,
                )
                .map(|_| true)
        } else {
            let Some(&case) = self.edit_rng.pick(&candidates) else {
                return;
            };
            let op = self.pick_op();
            let Some(store) = self.nodes[ix].store.as_ref() else {
                return;
            };
            store
                .edit_case(&case, now, "sim edit", |doc| match &op {
                    EditOp::Title(t) => doc.set_field(Field::Title, t),
                    EditOp::Status(s) => doc.set_status(*s),
                    EditOp::Priority(p) => doc.set_priority(*p),
                    EditOp::Note(t) => doc.add_note(device, now, t),
                    EditOp::Splice { at, del, text } => {
                        let len = doc.summary_text()?.chars().count() as u64;
                        let at = at % (len + 1);
                        let del = (*del).min(len - at);
                        doc.splice_summary(
                            usize::try_from(at).unwrap_or(0),
                            usize::try_from(del).unwrap_or(0),
                            text,
                        )
                    }
                })
                .map(|h| h.is_some())
        };
        match outcome {
            Ok(true) => self.record_authored(ix, create),
            Ok(false) => {}
            Err(e) => {
                if self.nodes[ix].backend.has_failed() {
                    self.stats.edits_lost_to_power += 1;
                    self.power_cut(ix);
                    return;
                }
                let detail = format!("{}: local edit failed: {e}", self.nodes[ix].name);
                self.violation(Check::Store, detail);
            }
        }
        if self.nodes[ix].backend.has_failed() {
            self.power_cut(ix);
            return;
        }
        self.log_grew(ix, head0);
    }

    /// Remembers the change just stored by `ix` (the last entry of its log).
    fn record_authored(&mut self, ix: NodeIx, created: bool) {
        let Some(store) = self.nodes[ix].store.as_ref() else {
            return;
        };
        match last_change(store) {
            Ok(Some((case, hash, counter))) => {
                tracing::debug!(now = self.now, node = %self.nodes[ix].name, case = %case.short(), change = %hash.short(), counter, created, "edit");
                self.stats.changes += 1;
                self.stats.cases += usize::from(created);
                let at = self.now;
                self.nodes[ix].authored.push(Authored {
                    case,
                    hash,
                    counter,
                    at,
                });
            }
            Ok(None) => {
                let detail = format!(
                    "{}: an edit succeeded but the log is empty",
                    self.nodes[ix].name
                );
                self.violation(Check::Store, detail);
            }
            Err(e) => {
                let detail = format!("{}: reading the last change: {e}", self.nodes[ix].name);
                self.violation(Check::Store, detail);
            }
        }
    }

    /// A node's link comes up: it dials, and (with faults) goes down again later.
    pub(crate) fn online(&mut self, ix: NodeIx) {
        self.nodes[ix].link_up = true;
        self.schedule_dial(ix, 0);
        if self.cfg.faults && self.phase == Phase::Faults {
            let up_for = self.fault_rng.range(10_000, 120_000);
            self.sched.at(self.now + up_for, Ev::Offline(ix));
        }
    }

    /// A node's link goes down (a partition): its connections to its relay
    /// vanish with whatever was in flight.
    pub(crate) fn offline(&mut self, ix: NodeIx) {
        self.stats.partitions += 1;
        self.nodes[ix].link_up = false;
        self.drop_conns_of(ix, true);
        let down_for = self.fault_rng.range(5_000, 150_000);
        self.sched.at(self.now + down_for, Ev::Online(ix));
    }

    /// The next fault: a link drop, a device or relay crash, a power cut
    /// armed at a future sync, or a duplicated session.
    pub(crate) fn fault(&mut self) {
        let roll = self.fault_rng.below(100);
        let devices: Vec<NodeIx> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].kind == NodeKind::Device && self.nodes[i].store.is_some())
            .collect();
        let relays: Vec<NodeIx> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_relay() && self.nodes[i].store.is_some())
            .collect();
        if roll < 40 {
            let ids: Vec<u64> = self.conns.keys().copied().collect();
            if let Some(&id) = self.fault_rng.pick(&ids) {
                self.stats.link_drops += 1;
                self.trace.update_note(&format!("drop {id}"));
                self.drop_conn(id);
            }
        } else if roll < 60 {
            if let Some(&ix) = self.fault_rng.pick(&devices) {
                self.crash(ix, 0);
            }
        } else if roll < 68 {
            if let Some(&ix) = self.fault_rng.pick(&relays) {
                let downtime = self.fault_rng.range(1_000, 30_000);
                self.crash(ix, downtime);
            }
        } else if roll < 85 {
            if !self.cfg.power_cuts {
                self.schedule_next_fault();
                return;
            }
            let all: Vec<NodeIx> = devices.iter().chain(&relays).copied().collect();
            if let Some(&ix) = self.fault_rng.pick(&all)
                && !self.nodes[ix].backend.is_armed()
            {
                let after = self.fault_rng.below(6);
                self.nodes[ix].backend.fail_after_syncs(after);
                self.stats.power_cuts_armed += 1;
            }
        } else if roll >= 93 && relays.len() > 1 {
            // A field device moves: it syncs with another office, or with
            // headquarters directly, from now on. (A revoked device stays
            // where it was revoked: an office that has not heard of the
            // revocation would accept its later changes.)
            let movable: Vec<NodeIx> = devices
                .iter()
                .copied()
                .filter(|&d| {
                    self.nodes[d].role() == Role::Field && self.revoked.is_none_or(|r| r.node != d)
                })
                .collect();
            if let Some(&d) = self.fault_rng.pick(&movable) {
                let others: Vec<NodeIx> = relays
                    .iter()
                    .copied()
                    .filter(|&r| Some(r) != self.nodes[d].upstream)
                    .collect();
                if let Some(&to) = self.fault_rng.pick(&others) {
                    self.nodes[d].upstream = Some(to);
                    self.stats.moves += 1;
                    self.trace.update_note(&format!("move {d} to {to}"));
                    self.drop_conns_of(d, true);
                    let delay = self.fault_rng.range(200, 3_000);
                    self.schedule_dial(d, delay);
                }
            }
        } else {
            let connected: Vec<NodeIx> = devices
                .iter()
                .copied()
                .filter(|&d| {
                    self.nodes[d].link_up
                        && self.revoked.is_none_or(|r| r.node != d)
                        && self.conns.values().any(|c| c.dialer == d)
                })
                .collect();
            if let Some(&d) = self.fault_rng.pick(&connected)
                && let Some(up) = self.nodes[d].upstream
                && self.now >= self.nodes[up].down_until
                && self.open_conn(d, up, false).is_some()
            {
                self.stats.duplicate_sessions += 1;
            }
        }
        self.schedule_next_fault();
    }

    fn schedule_next_fault(&mut self) {
        let gap = self.cfg.fault_every_ms.max(100);
        let next = self.fault_rng.range(gap / 2, gap * 3 / 2);
        self.sched.at(self.now + next, Ev::Fault);
    }

    /// Headquarters revokes a field device it serves directly (or, with
    /// `revoke_behind_office`, one an office serves), accepting its
    /// work up to its current log head. Headquarters' driver then restarts
    /// its sessions so that they carry the new list. The revoked device
    /// keeps editing offline and keeps trying to connect.
    pub(crate) fn revoke(&mut self) {
        if self.revoked.is_some() {
            return; // an earlier attempt reached the disk after all
        }
        let candidates: Vec<NodeIx> = (0..self.nodes.len())
            .filter(|&i| {
                let n = &self.nodes[i];
                n.kind == NodeKind::Device
                    && n.role() == Role::Field
                    && n.upstream.is_some()
                    && (n.upstream == Some(HQ)) != self.cfg.revoke_behind_office
                    && n.store.is_some()
            })
            .collect();
        let Some(&ix) = self.fault_rng.pick(&candidates) else {
            return;
        };
        let point = self.nodes[ix].head();
        let now = ts(self.now);
        let hq = &self.nodes[HQ];
        let Some(hq_store) = hq.store.as_ref() else {
            return;
        };
        let previous = match hq_store.revocations() {
            Ok(Some(bytes)) => RevocationList::from_bytes(&bytes, &self.hq_root.public()).ok(),
            _ => None,
        };
        let entry =
            Revocation::new(self.nodes[ix].id(), now, "lost in the field").accepting(0, point);
        let list = match self.hq_root.revoke(previous.as_ref(), entry, now) {
            Ok(l) => l,
            Err(e) => {
                self.violation(Check::Setup, format!("issuing the revocation list: {e}"));
                return;
            }
        };
        if let Err(e) = hq_store.adopt_revocations(&list, now) {
            if self.nodes[HQ].backend.has_failed() {
                self.power_cut(HQ);
                self.sched.at(self.now + 5_000, Ev::Revoke);
                return;
            }
            self.violation(
                Check::Store,
                format!("hq: storing the revocation list: {e}"),
            );
            return;
        }
        self.revoked = Some(Revoked { node: ix, point });
        self.stats.revoked = true;
        self.trace
            .update_note(&format!("revoke {ix} through {point}"));
        self.drop_conns_of(HQ, false);
        let end = self.cfg.fault_phase_ms;
        if self.now + 1_000 < end {
            for _ in 0..self.edit_rng.range(3, 6) {
                let at = self.edit_rng.range(self.now + 1_000, end - 1);
                self.sched.at(at, Ev::Edit(ix));
            }
        }
    }
}

impl World {
    /// Headquarters releases, with its root key, every quarantined change
    /// one liaison made to one case (all of them, so that none waits on a
    /// dependency still held back). They must then reach every node that
    /// may read the case, carried with their releases.
    pub(crate) fn release(&mut self) {
        let Some(hq_store) = self.nodes[HQ].store.as_ref() else {
            return;
        };
        let entries = match hq_store.quarantine() {
            Ok(q) => q,
            Err(e) => {
                self.violation(Check::Store, format!("hq: reading the quarantine: {e}"));
                return;
            }
        };
        let liaisons: BTreeSet<DeviceId> = self
            .nodes
            .iter()
            .filter(|n| n.role() == Role::Liaison)
            .map(|n| n.id())
            .collect();
        let groups: Vec<(CaseId, DeviceId)> = entries
            .iter()
            .filter(|(_, e)| liaisons.contains(&e.signer))
            .map(|(_, e)| (e.case, e.signer))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let Some(&(case, signer)) = self.fault_rng.pick(&groups) else {
            return;
        };
        let head0 = self.nodes[HQ].head();
        let now = ts(self.now);
        let authority = Authority::new(self.hq_root.public(), None);
        let mut released = Vec::new();
        for (id, entry) in entries
            .iter()
            .filter(|(_, e)| e.case == case && e.signer == signer)
        {
            let Some(hash) = envelope_hash(&entry.change) else {
                continue;
            };
            if released.contains(&(case, hash)) {
                continue; // the same change, held twice, left with the first release
            }
            let body =
                match release_body(entry, self.hq_root.public(), "confirmed by the desk", now) {
                    Ok(b) => b,
                    Err(e) => {
                        self.violation(Check::Store, format!("hq: a quarantined change: {e}"));
                        return;
                    }
                };
            let signed = match self.hq_root.sign(body) {
                Ok(s) => s,
                Err(e) => {
                    self.violation(Check::Setup, format!("signing a release: {e}"));
                    return;
                }
            };
            let result = apply_release(
                hq_store,
                &authority,
                *id,
                &encode_release(signed.as_signed()),
                &BTreeMap::new(),
                now,
            );
            match result {
                Ok(_) => released.push((case, hash)),
                Err(e) => {
                    if self.nodes[HQ].backend.has_failed() {
                        self.power_cut(HQ);
                        break;
                    }
                    self.violation(Check::Store, format!("hq: releasing quarantine {id}: {e}"));
                    return;
                }
            }
        }
        self.trace.update_note(&format!(
            "release {} changes of case {}",
            released.len(),
            case.short()
        ));
        self.stats.released += released.len() as u64;
        self.released.extend(released);
        if self.nodes[HQ].store.is_some() {
            self.log_grew(HQ, head0);
        }
    }
}

/// Notes for the trace.
trait TraceNote {
    fn update_note(&mut self, note: &str);
}

impl TraceNote for blake3::Hasher {
    fn update_note(&mut self, note: &str) {
        self.update(note.as_bytes());
        self.update(b"\n");
    }
}
