//! The invariants checked after healing.
//!
//! 1. Convergence: every healed node holds exactly headquarters' heads for
//!    every case it may read, no case it may not read, nothing stuck in
//!    pending; devices hold identical merged records of shared cases; every
//!    change a healed device authored is at headquarters.
//! 2. Receipts: every change a node holds a relay's receipt for is at
//!    headquarters (stored, or quarantined when it was unauthorized) and at
//!    that relay.
//! 3. Authorization: no liaison-authored change and no change the revoked
//!    device made beyond its revocation point is stored anywhere but on its
//!    author; every liaison change is in headquarters' quarantine; nothing
//!    authorized is quarantined anywhere. A change that depends on one beyond
//!    the revocation point (a device behind an office built on it before the
//!    office heard of the revocation) is unauthorized too: it cannot stand
//!    without it. Its author keeps both (a node never withdraws its own
//!    changes, nor what they depend on), so it alone may hold them (with the
//!    revoked device, which is refused and never learns it was revoked), and
//!    its copy of that case may differ from headquarters' by them.
//! 4. Durability: every change a store acknowledged to its device is still
//!    in that store (also checked after every crash).

use std::collections::{BTreeMap, BTreeSet};

use fieldsync_case::{CaseRecord, ChangeHash, Genesis, decode_change};
use fieldsync_identity::{CaseId, DeviceId, Role, decode_signed};
use fieldsync_protocol::RelayedReceiptBody;
use fieldsync_store::Store;

use crate::net::NodeIx;
use crate::node::{NodeKind, whole_log};
use crate::report::Check;
use crate::world::{HQ, World};

/// A case as a node holds it: its compartment and heads.
struct Held {
    compartment: String,
    heads: Vec<ChangeHash>,
}

fn held(store: &Store) -> Result<BTreeMap<CaseId, Held>, String> {
    let mut out = BTreeMap::new();
    for h in store.case_heads().map_err(|e| e.to_string())? {
        let g = decode_signed::<Genesis>(&h.genesis).map_err(|e| e.to_string())?;
        out.insert(
            h.case,
            Held {
                compartment: g.payload().value().compartment.clone(),
                heads: h.heads,
            },
        );
    }
    Ok(out)
}

/// A store's quarantine: change → reason.
fn quarantined(store: &Store) -> Result<BTreeMap<(CaseId, ChangeHash), String>, String> {
    let mut out = BTreeMap::new();
    for (_, e) in store.quarantine().map_err(|e| e.to_string())? {
        let c = decode_change(&e.change).map_err(|e| e.to_string())?;
        out.insert((e.case, c.payload().hash()), e.reason);
    }
    Ok(out)
}

fn shorts(heads: &[ChangeHash]) -> String {
    heads
        .iter()
        .map(ChangeHash::short)
        .collect::<Vec<_>>()
        .join(",")
}

/// The changes that must not stand, and who may hold them anyway.
struct Unauthorized {
    /// (author, case, hash, why): liaison changes, changes of the revoked
    /// device beyond its revocation point, and changes that depend on one.
    changes: Vec<(NodeIx, CaseId, ChangeHash, &'static str)>,
    /// For each of those, the nodes whose own unauthorized changes depend
    /// on it: they keep it (a node never withdraws its own changes, nor
    /// what they depend on).
    keepers: BTreeMap<(CaseId, ChangeHash), BTreeSet<NodeIx>>,
    /// (node, case) where a node's own change depends on a change beyond
    /// the revocation point: it keeps them, even in a case headquarters
    /// holds nothing of.
    builds_on_revoked: BTreeSet<(NodeIx, CaseId)>,
}

/// Collected violations (added to the world at the end).
#[derive(Default)]
struct Found(Vec<(Check, String)>);

impl Found {
    fn add(&mut self, check: Check, detail: String) {
        self.0.push((check, detail));
    }
}

impl World {
    /// Checks every invariant on the healed world.
    pub(crate) fn check(&mut self) {
        let mut found = Found::default();
        if let Err(e) = self.check_into(&mut found) {
            found.add(Check::Store, format!("reading a store to check it: {e}"));
        }
        for ix in 0..self.nodes.len() {
            self.check_authored_survived(ix);
        }
        for (check, detail) in found.0 {
            self.violation(check, detail);
        }
    }

    /// Unauthorized changes (see [`Unauthorized`]).
    fn unauthorized(&self) -> Result<Unauthorized, String> {
        let mut out = Vec::new();
        for (ix, n) in self.nodes.iter().enumerate() {
            for a in &n.authored {
                if self.released.contains(&(a.case, a.hash)) {
                    continue;
                }
                if n.role() == Role::Liaison {
                    out.push((ix, a.case, a.hash, "liaison"));
                } else if self
                    .revoked
                    .is_some_and(|r| r.node == ix && a.counter > r.point)
                {
                    out.push((ix, a.case, a.hash, "beyond-revocation-point"));
                }
            }
        }
        let roots: BTreeSet<(CaseId, ChangeHash)> =
            out.iter().map(|(_, c, h, _)| (*c, *h)).collect();
        let mut keepers: BTreeMap<(CaseId, ChangeHash), BTreeSet<NodeIx>> = BTreeMap::new();
        let mut builds_on_revoked = BTreeSet::new();
        if self.revoked.is_none() {
            return Ok(Unauthorized {
                changes: out,
                keepers,
                builds_on_revoked,
            });
        }
        // Changes that depend on one beyond the revocation point, from the
        // dependencies as each author's own store holds them (an author
        // keeps its changes and everything they depend on).
        let graph = self.authored_deps()?;
        let ancestors = |case: CaseId, hash: ChangeHash| -> BTreeSet<ChangeHash> {
            let mut seen = BTreeSet::new();
            let mut stack = vec![hash];
            while let Some(h) = stack.pop() {
                if seen.insert(h)
                    && let Some(deps) = graph.get(&(case, h))
                {
                    stack.extend(deps.iter().copied());
                }
            }
            seen
        };
        let beyond: BTreeSet<(CaseId, ChangeHash)> = out
            .iter()
            .filter(|(_, _, _, why)| *why == "beyond-revocation-point")
            .map(|(_, c, h, _)| (*c, *h))
            .collect();
        for (ix, n) in self.nodes.iter().enumerate() {
            if Some(ix) == self.revoked.map(|r| r.node) {
                continue;
            }
            for a in &n.authored {
                if self.released.contains(&(a.case, a.hash)) {
                    continue;
                }
                let up = ancestors(a.case, a.hash);
                if !up.iter().any(|h| beyond.contains(&(a.case, *h))) {
                    continue;
                }
                // Whatever else it is (a liaison's change, say), its author
                // keeps what it depends on.
                builds_on_revoked.insert((ix, a.case));
                if !roots.contains(&(a.case, a.hash)) {
                    out.push((ix, a.case, a.hash, "depends-on-beyond-revocation-point"));
                }
            }
        }
        let bad: BTreeSet<(CaseId, ChangeHash)> = out.iter().map(|(_, c, h, _)| (*c, *h)).collect();
        for (ix, case, hash, _) in &out {
            for h in ancestors(*case, *hash) {
                if bad.contains(&(*case, h)) {
                    keepers.entry((*case, h)).or_default().insert(*ix);
                }
            }
        }
        Ok(Unauthorized {
            changes: out,
            keepers,
            builds_on_revoked,
        })
    }

    /// Every authored change's dependencies, by (case, hash), read from
    /// its author's store (with those of the changes it depends on).
    fn authored_deps(&self) -> Result<BTreeMap<(CaseId, ChangeHash), Vec<ChangeHash>>, String> {
        let mut graph = BTreeMap::new();
        for n in &self.nodes {
            let Some(store) = n.store.as_ref() else {
                continue;
            };
            let cases: BTreeSet<CaseId> = n.authored.iter().map(|a| a.case).collect();
            for case in cases {
                for env in store.case_envelopes(&case).map_err(|e| e.to_string())? {
                    let c = decode_change(&env).map_err(|e| e.to_string())?;
                    graph.insert((case, c.payload().hash()), c.payload().deps());
                }
            }
        }
        Ok(graph)
    }

    fn check_into(&self, found: &mut Found) -> Result<(), String> {
        let Some(hq) = self.nodes[HQ].store.as_ref() else {
            found.add(Check::Durability, "headquarters is dead".into());
            return Ok(());
        };
        let hq_held = held(hq)?;
        let hq_quarantine = quarantined(hq)?;
        let Unauthorized {
            changes: bad,
            keepers,
            builds_on_revoked,
        } = self.unauthorized()?;
        let bad_set: BTreeSet<(CaseId, ChangeHash)> =
            bad.iter().map(|(_, c, h, _)| (*c, *h)).collect();
        let tainted: BTreeSet<(NodeIx, CaseId)> = bad.iter().map(|(n, c, _, _)| (*n, *c)).collect();
        let revoked = self.revoked.map(|r| r.node);
        let pending = hq.pending_len().map_err(|e| e.to_string())?;
        if pending > 0 {
            found.add(
                Check::Convergence,
                format!("hq holds {pending} changes in pending"),
            );
        }

        // 1. Convergence.
        let mut records: BTreeMap<CaseId, (NodeIx, CaseRecord)> = BTreeMap::new();
        for (ix, node) in self.nodes.iter().enumerate() {
            if ix == HQ || Some(ix) == revoked {
                continue;
            }
            let Some(store) = node.store.as_ref() else {
                found.add(Check::Durability, format!("{} is dead", node.name));
                continue;
            };
            let mine = held(store)?;
            if tracing::enabled!(tracing::Level::DEBUG) {
                let known: BTreeSet<DeviceId> = store
                    .peers()
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|(d, _)| d)
                    .collect();
                for h in store.case_heads().map_err(|e| e.to_string())? {
                    let g = decode_signed::<Genesis>(&h.genesis).map_err(|e| e.to_string())?;
                    let creator = g.payload().value().creator;
                    if creator != node.id() && !known.contains(&creator) {
                        tracing::debug!(node = %node.name, case = %h.case.short(), creator = %creator.short(), "holds a case whose creator's certificate it does not know");
                    }
                }
            }
            for (case, h) in &hq_held {
                if !node.can_read(&h.compartment) {
                    continue;
                }
                match mine.get(case) {
                    None => found.add(
                        Check::Convergence,
                        format!(
                            "{} lacks case {} ({})",
                            node.name,
                            case.short(),
                            h.compartment
                        ),
                    ),
                    Some(m) if m.heads == h.heads => {}
                    Some(m) if tainted.contains(&(ix, *case)) => {
                        for head in &h.heads {
                            if !store.has_change(case, head).map_err(|e| e.to_string())? {
                                found.add(
                                    Check::Convergence,
                                    format!(
                                        "{} lacks hq's head {} of case {} (its heads {})",
                                        node.name,
                                        head.short(),
                                        case.short(),
                                        shorts(&m.heads)
                                    ),
                                );
                            }
                        }
                    }
                    Some(m) => found.add(
                        Check::Convergence,
                        format!(
                            "{} case {}: heads [{}], hq [{}]",
                            node.name,
                            case.short(),
                            shorts(&m.heads),
                            shorts(&h.heads)
                        ),
                    ),
                }
            }
            for (case, m) in &mine {
                if !node.can_read(&m.compartment) {
                    found.add(
                        Check::Compartments,
                        format!(
                            "{} holds case {} of compartment {}, which it may not read",
                            node.name,
                            case.short(),
                            m.compartment
                        ),
                    );
                }
                if !hq_held.contains_key(case) && !builds_on_revoked.contains(&(ix, *case)) {
                    found.add(
                        Check::Convergence,
                        format!("{} holds case {} which hq lacks", node.name, case.short()),
                    );
                }
                if node.kind == NodeKind::Device && !tainted.contains(&(ix, *case)) {
                    let rec = store.case_record(case).map_err(|e| e.to_string())?;
                    match records.get(case) {
                        None => {
                            records.insert(*case, (ix, rec));
                        }
                        Some((other, r)) if *r != rec => found.add(
                            Check::Convergence,
                            format!(
                                "case {}: {} and {} hold different records (titles {:?} / {:?}, heads [{}] / [{}])",
                                case.short(),
                                self.nodes[*other].name,
                                node.name,
                                r.title,
                                rec.title,
                                shorts(&r.heads),
                                shorts(&rec.heads)
                            ),
                        ),
                        Some(_) => {}
                    }
                }
            }
            let pending = store.pending_len().map_err(|e| e.to_string())?;
            if pending > 0 {
                found.add(
                    Check::Convergence,
                    format!("{} holds {pending} changes in pending", node.name),
                );
            }
            if node.kind == NodeKind::Device {
                for a in &node.authored {
                    if !bad_set.contains(&(a.case, a.hash))
                        && !hq.has_change(&a.case, &a.hash).map_err(|e| e.to_string())?
                    {
                        found.add(
                            Check::Convergence,
                            format!(
                                "{}'s change {} (counter {}) of case {} never reached hq",
                                node.name,
                                a.hash.short(),
                                a.counter,
                                a.case.short()
                            ),
                        );
                    }
                }
            }
        }

        // 2. Receipts.
        let ids: BTreeMap<DeviceId, NodeIx> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id(), i))
            .collect();
        for node in &self.nodes {
            let Some(store) = node.store.as_ref() else {
                continue;
            };
            // (position covered, the office that carried it down, if one did).
            let mut through: BTreeMap<DeviceId, (u64, Option<DeviceId>)> = BTreeMap::new();
            for r in store.receipts().map_err(|e| e.to_string())? {
                let carrier = decode_signed::<RelayedReceiptBody>(&r.bytes)
                    .ok()
                    .map(|b| DeviceId::from_public_key(b.payload().value().relay));
                let t = through.entry(r.relay).or_insert((0, None));
                if r.through >= t.0 {
                    *t = (r.through, carrier);
                }
            }
            if through.is_empty() {
                continue;
            }
            let log = whole_log(store)?;
            for (relay, (t, carrier)) in through {
                let Some(&rix) = ids.get(&relay) else {
                    found.add(
                        Check::Receipts,
                        format!("{} holds a receipt from an unknown relay", node.name),
                    );
                    continue;
                };
                let relay_store = self.nodes[rix].store.as_ref();
                let relay_q = match relay_store {
                    Some(s) if rix != HQ => quarantined(s)?,
                    _ => BTreeMap::new(),
                };
                // The quarantine of the office that carried hq's receipt down.
                let carrier_q = match carrier.and_then(|c| ids.get(&c)) {
                    Some(&cix) => match self.nodes[cix].store.as_ref() {
                        Some(s) => quarantined(s)?,
                        None => BTreeMap::new(),
                    },
                    None => BTreeMap::new(),
                };
                let mut missing = Vec::new();
                for (seq, case, hash) in log.iter().filter(|(s, _, _)| *s <= t) {
                    // An office that quarantined a change keeps it (it never
                    // forwards quarantine): its quarantine counts for hq. A
                    // receipt of hq an office carried down covers what that
                    // office quarantined (or withdrew) the same way.
                    let at_hq = hq.has_change(case, hash).map_err(|e| e.to_string())?
                        || hq_quarantine.contains_key(&(*case, *hash))
                        || relay_q.contains_key(&(*case, *hash))
                        || carrier_q.contains_key(&(*case, *hash));
                    let at_relay = match relay_store {
                        Some(s) if rix != HQ => {
                            s.has_change(case, hash).map_err(|e| e.to_string())?
                                || relay_q.contains_key(&(*case, *hash))
                        }
                        _ => true,
                    };
                    if !at_hq || !at_relay {
                        missing.push(format!(
                            "{} (position {seq}, case {}, at hq {at_hq}, at relay {at_relay})",
                            hash.short(),
                            case.short()
                        ));
                    }
                }
                if !missing.is_empty() {
                    found.add(
                        Check::Receipts,
                        format!(
                            "{} holds a receipt from {} through {t}, but {} covered changes are missing: {}",
                            node.name,
                            self.nodes[rix].name,
                            missing.len(),
                            missing.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
                        ),
                    );
                }
            }
        }

        // 3. Authorization.
        for (author, case, hash, why) in &bad {
            for (ix, node) in self.nodes.iter().enumerate() {
                // Its author keeps it, and so does a node whose own change
                // depends on it. The revoked device, refused everywhere,
                // never learns of its revocation: it keeps what others built
                // on its changes beyond the point, as it keeps those.
                if ix == *author
                    || keepers
                        .get(&(*case, *hash))
                        .is_some_and(|k| k.contains(&ix))
                    || (Some(ix) == revoked && *why == "depends-on-beyond-revocation-point")
                {
                    continue;
                }
                let Some(store) = node.store.as_ref() else {
                    continue;
                };
                if store.has_change(case, hash).map_err(|e| e.to_string())? {
                    found.add(
                        Check::Authorization,
                        format!(
                            "{why} change {} of case {} by {} is applied at {}",
                            hash.short(),
                            case.short(),
                            self.nodes[*author].name,
                            node.name
                        ),
                    );
                }
            }
            // The liaison healed, so its change reached its relay, which
            // quarantined it (an office keeps its quarantine: hq never sees it).
            let home = self.nodes[*author].upstream.unwrap_or(HQ);
            let in_home_quarantine = if home == HQ {
                hq_quarantine.contains_key(&(*case, *hash))
            } else {
                match self.nodes[home].store.as_ref() {
                    Some(s) => quarantined(s)?.contains_key(&(*case, *hash)),
                    None => true,
                }
            };
            if *why == "liaison" && !in_home_quarantine {
                found.add(
                    Check::Authorization,
                    format!(
                        "liaison change {} of case {} by {} is not in the quarantine of {}",
                        hash.short(),
                        case.short(),
                        self.nodes[*author].name,
                        self.nodes[home].name
                    ),
                );
            }
        }
        // A liaison's edit whose commit failed in a power cut may still
        // have reached the disk (a torn crash keeps part of the unsynced
        // writes): the world never counted it as authored, yet it is a
        // liaison's change all the same, and held back rightly unless
        // headquarters released it.
        let liaisons: BTreeSet<DeviceId> = self
            .nodes
            .iter()
            .filter(|n| n.role() == Role::Liaison)
            .map(|n| n.id())
            .collect();
        for node in &self.nodes {
            let Some(store) = node.store.as_ref() else {
                continue;
            };
            let signers: BTreeMap<(CaseId, ChangeHash), DeviceId> = store
                .quarantine()
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter_map(|(_, e)| {
                    let c = decode_change(&e.change).ok()?;
                    Some(((e.case, c.payload().hash()), e.signer))
                })
                .collect();
            for ((case, hash), reason) in quarantined(store)? {
                let by_liaison = signers
                    .get(&(case, hash))
                    .is_some_and(|s| liaisons.contains(s));
                let held_rightly = bad_set.contains(&(case, hash))
                    || (by_liaison && !self.released.contains(&(case, hash)));
                if !held_rightly {
                    found.add(
                        Check::Authorization,
                        format!(
                            "{} quarantined the authorized change {} of case {}: {reason}",
                            node.name,
                            hash.short(),
                            case.short()
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}
