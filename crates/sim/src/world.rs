//! The world: nodes, connections, the virtual clock, and the driver loop
//! that moves frames between real sessions on real stores.
//!
//! The loop does what `fieldsync-node` does for one node, for all of them:
//! feed what arrives (`handle_input`), tell the other sessions of that node
//! when its log grew (`handle_log_grew`), drain frames and events. Time is
//! the event's; nothing reads the OS clock.

use std::collections::{BTreeMap, BTreeSet};

use fieldsync_case::ChangeHash;
use fieldsync_identity::{
    CERTIFICATE_VERSION, CaseId, CertificateBody, Compartment, HqRoot, Role, SecretKey, Timestamp,
};
use fieldsync_protocol::{CloseCode, Event, Session, SessionError};
use fieldsync_store::{NewDevice, Store, StoreKind};

use crate::config::SimConfig;
use crate::crash_backend::{CrashBackend, CrashKind};
use crate::net::{Conn, Ev, LinkSpec, Millis, NodeIx, Scheduler, Side};
use crate::node::{Node, NodeKind};
use crate::report::{Check, Stats, Violation};
use crate::rng::SimRng;

/// Wall-clock time of virtual time 0 (late 2026).
const T0: i64 = 1_790_000_000_000;

/// The timestamp of virtual time `ms`.
pub(crate) fn ts(ms: Millis) -> Timestamp {
    Timestamp::from_millis(T0.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX / 2)))
}

/// Compartment names, in the order they come into use.
const COMPARTMENTS: [&str; 4] = ["general", "narcotics", "visa-screening", "antiquities"];

/// The device headquarters revoked, and up to where its work was accepted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Revoked {
    /// The device.
    pub(crate) node: NodeIx,
    /// The last accepted signing counter (its log head when revoked).
    pub(crate) point: u64,
}

/// Which part of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Edits and faults.
    Faults,
    /// No faults: everyone reconnects until all sessions are synced.
    Heal,
}

/// Everything simulated.
pub(crate) struct World {
    pub(crate) cfg: SimConfig,
    /// Topology and links.
    pub(crate) rng: SimRng,
    /// Edit times and contents.
    pub(crate) edit_rng: SimRng,
    /// Faults, presence and crash images.
    pub(crate) fault_rng: SimRng,
    pub(crate) hq_root: HqRoot,
    pub(crate) nodes: Vec<Node>,
    pub(crate) conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    pub(crate) sched: Scheduler,
    pub(crate) now: Millis,
    pub(crate) trace: blake3::Hasher,
    pub(crate) stats: Stats,
    pub(crate) violations: Vec<Violation>,
    pub(crate) revoked: Option<Revoked>,
    /// Changes headquarters released from its quarantine.
    pub(crate) released: BTreeSet<(CaseId, ChangeHash)>,
    pub(crate) phase: Phase,
    pub(crate) compartments: Vec<String>,
    serial: u64,
    /// Nodes where a session adopted a newer revocation list while the
    /// frame being delivered was handled: their other sessions are told.
    relisted: BTreeSet<NodeIx>,
}

/// Headquarters is always node 0.
pub(crate) const HQ: NodeIx = 0;

impl World {
    /// Builds the world of `seed`: headquarters, offices and devices with
    /// their certificates and empty stores, and the first scheduled events.
    pub(crate) fn new(seed: u64, cfg: SimConfig) -> Result<Self, String> {
        let mut rng = SimRng::new(seed);
        let edit_rng = rng.fork();
        let fault_rng = rng.fork();
        let hq_root = HqRoot::from_secret(SecretKey::from_seed(&rng.bytes()));
        let compartments: Vec<String> = COMPARTMENTS[..cfg.compartments.clamp(1, 4)]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let mut w = World {
            cfg,
            rng,
            edit_rng,
            fault_rng,
            hq_root,
            nodes: Vec::new(),
            conns: BTreeMap::new(),
            next_conn: 0,
            sched: Scheduler::default(),
            now: 0,
            trace: blake3::Hasher::new(),
            stats: Stats::default(),
            violations: Vec::new(),
            revoked: None,
            released: BTreeSet::new(),
            phase: Phase::Faults,
            compartments,
            serial: 0,
            relisted: BTreeSet::new(),
        };
        let all = w.compartments.clone();
        w.add_node("hq".into(), NodeKind::Hq, Role::Relay, &all, &all, None)?;
        for i in 0..w.cfg.offices {
            w.add_node(
                format!("office-{}", i + 1),
                NodeKind::Office,
                Role::Relay,
                &all,
                &all,
                Some(HQ),
            )?;
        }
        let devices = w.cfg.devices;
        let mut liaison = vec![false; devices];
        for _ in 0..w.cfg.liaisons.min(devices) {
            let free: Vec<usize> = (0..devices).filter(|&i| !liaison[i]).collect();
            if let Some(&i) = w.rng.pick(&free) {
                liaison[i] = true;
            }
        }
        for (i, &is_liaison) in liaison.iter().enumerate() {
            let mut read: Vec<String> =
                all.iter().filter(|_| w.rng.chance(1, 2)).cloned().collect();
            if read.is_empty()
                && let Some(c) = w.rng.pick(&all)
            {
                read.push(c.clone());
            }
            let mut write: Vec<String> = Vec::new();
            if !is_liaison {
                write = read
                    .iter()
                    .filter(|_| w.rng.chance(2, 3))
                    .cloned()
                    .collect();
                if write.is_empty()
                    && let Some(c) = w.rng.pick(&read)
                {
                    write.push(c.clone());
                }
            }
            let offices = w.cfg.offices;
            let upstream = if offices > 0 && w.rng.chance(1, 2) {
                1 + w.rng.index(offices)
            } else {
                HQ
            };
            let (name, role) = if is_liaison {
                (format!("liaison-{}", i + 1), Role::Liaison)
            } else {
                (format!("field-{}", i + 1), Role::Field)
            };
            w.add_node(name, NodeKind::Device, role, &read, &write, Some(upstream))?;
        }
        w.stats.nodes = w.nodes.len();
        w.stats.offices = w.cfg.offices;
        w.stats.devices = devices;
        w.stats.liaisons = liaison.iter().filter(|l| **l).count();
        w.schedule_start();
        Ok(w)
    }

    fn add_node(
        &mut self,
        name: String,
        kind: NodeKind,
        role: Role,
        read: &[String],
        write: &[String],
        upstream: Option<NodeIx>,
    ) -> Result<(), String> {
        let backend = CrashBackend::new();
        let store = Store::create_with_backend(
            backend.clone(),
            NewDevice {
                seed: self.rng.bytes(),
                name: &name,
                epoch: self.rng.bytes(),
                now: ts(0),
                kind: if kind == NodeKind::Device {
                    StoreKind::Device
                } else {
                    StoreKind::Relay
                },
            },
        )
        .map_err(|e| format!("creating the store of {name}: {e}"))?;
        let compartments = |v: &[String]| -> Result<Vec<Compartment>, String> {
            v.iter()
                .map(|c| Compartment::new(c).map_err(|e| e.to_string()))
                .collect()
        };
        self.serial += 1;
        let cert = self
            .hq_root
            .issue(CertificateBody {
                version: CERTIFICATE_VERSION,
                serial: self.serial,
                issuer: self.hq_root.public(),
                device: store.device().id(),
                name: name.clone(),
                office: "hq".into(),
                role,
                read: compartments(read)?,
                write: compartments(write)?,
                not_before: Timestamp::from_millis(T0 - 86_400_000),
                not_after: ts(0).plus_days(365),
            })
            .map_err(|e| format!("certifying {name}: {e}"))?;
        self.nodes.push(Node {
            name,
            kind,
            cert,
            store: Some(store),
            backend,
            upstream,
            link_up: false,
            down_until: 0,
            dial_scheduled: false,
            authored: Vec::new(),
        });
        Ok(())
    }

    fn schedule_start(&mut self) {
        let end = self.cfg.fault_phase_ms.max(2_000);
        for ix in 1..self.nodes.len() {
            if self.nodes[ix].kind == NodeKind::Device {
                let n = self.edit_rng.range(self.cfg.edits.0, self.cfg.edits.1);
                for _ in 0..n {
                    let at = self.edit_rng.range(500, end - 1);
                    self.sched.at(at, Ev::Edit(ix));
                }
            }
            let starts_up = !self.cfg.faults
                || self.nodes[ix].kind == NodeKind::Office
                || self.fault_rng.chance(3, 4);
            let at = if starts_up {
                self.fault_rng.range(0, 2_000)
            } else {
                self.fault_rng.range(5_000, 60_000)
            };
            self.sched.at(at, Ev::Online(ix));
        }
        if self.cfg.faults {
            let gap = self.cfg.fault_every_ms.max(100);
            let at = self.fault_rng.range(gap / 2, gap * 2);
            self.sched.at(at, Ev::Fault);
        }
        if self.cfg.revoke {
            let at = self.fault_rng.range(end * 3 / 10, end * 6 / 10);
            self.sched.at(at, Ev::Revoke);
        }
        if self.cfg.releases && self.cfg.liaisons > 0 && self.cfg.liaison_edits {
            for _ in 0..2 {
                let at = self.fault_rng.range(end * 4 / 10, end * 9 / 10);
                self.sched.at(at, Ev::Release);
            }
        }
    }

    /// Records a violated invariant.
    pub(crate) fn violation(&mut self, check: Check, detail: String) {
        self.violations.push(Violation {
            at: self.now,
            check,
            detail,
        });
    }

    /// The trace hash so far.
    pub(crate) fn trace_hash(&self) -> [u8; 32] {
        *self.trace.finalize().as_bytes()
    }

    /// Runs events until `end` (exclusive); false if the event budget ran out.
    pub(crate) fn run_until(&mut self, end: Option<Millis>) -> bool {
        while let Some(t) = self.sched.peek_time() {
            if end.is_some_and(|e| t >= e) {
                break;
            }
            let Some((t, ev)) = self.sched.pop() else {
                break;
            };
            self.now = self.now.max(t);
            self.stats.events += 1;
            if self.stats.events > self.cfg.max_events {
                self.violation(
                    Check::Liveness,
                    format!(
                        "event budget of {} exhausted ({} events queued): livelock?",
                        self.cfg.max_events,
                        self.sched.len()
                    ),
                );
                return false;
            }
            self.handle(ev);
        }
        if let Some(e) = end {
            self.now = self.now.max(e);
        }
        true
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { conn, to, frame } => self.deliver(conn, to, &frame),
            Ev::Edit(ix) => self.edit(ix),
            Ev::Online(ix) => self.online(ix),
            Ev::Offline(ix) => self.offline(ix),
            Ev::Dial(ix) => self.dial(ix),
            Ev::Restart(ix) => self.restart(ix),
            Ev::Fault => self.fault(),
            Ev::Revoke => self.revoke(),
            Ev::Release => self.release(),
        }
    }

    /// A frame reaches one end of a connection.
    fn deliver(&mut self, id: u64, to: Side, frame: &[u8]) {
        let now = ts(self.now);
        let Some(conn) = self.conns.get_mut(&id) else {
            return; // the connection is gone: the frame is lost
        };
        let ix = conn.node(to);
        let peer = conn.node(to.other());
        let Some(store) = self.nodes[ix].store.as_ref() else {
            return;
        };
        if conn.session(to).is_closed() {
            return;
        }
        self.stats.frames += 1;
        self.stats.bytes += frame.len() as u64;
        self.trace.update(&id.to_le_bytes());
        self.trace.update(&[u8::from(to == Side::Dialer)]);
        self.trace.update(frame);
        let head0 = store.log_head().unwrap_or(0);
        let result = conn.session_mut(to).handle_input(store, frame, now);
        if let Err(e) = result {
            debug_frame(self.now, &self.nodes[ix].name, frame, &e);
            self.session_failed(to, ix, peer, &e);
        }
        if self.nodes[ix].backend.has_failed() {
            self.power_cut(ix);
            return;
        }
        self.flush(id, to);
        if self.relisted.remove(&ix) {
            self.revocations_changed(ix, id);
        }
        self.log_grew(ix, head0);
        self.reap(id);
    }

    /// A session of `ix` adopted (and stored, withdrawing what it puts
    /// beyond a revocation point) a newer revocation list: like
    /// `fieldsync-node`'s engine, pass it to every other session of `ix`,
    /// which ends those whose peer is now revoked.
    fn revocations_changed(&mut self, ix: NodeIx, except: u64) {
        let Some(store) = self.nodes[ix].store.as_ref() else {
            return;
        };
        let list = match store.revocations() {
            Ok(Some(bytes)) => {
                fieldsync_identity::RevocationList::from_bytes(&bytes, &self.hq_root.public()).ok()
            }
            _ => None,
        };
        let Some(list) = list else {
            return;
        };
        let now = ts(self.now);
        let ids: Vec<(u64, Side)> = self
            .conns
            .iter()
            .filter(|(id, _)| **id != except)
            .filter_map(|(id, c)| c.side_of(ix).map(|s| (*id, s)))
            .collect();
        for (id, side) in ids {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            if conn.session(side).is_closed() {
                continue;
            }
            let peer = conn.node(side.other());
            if let Err(e) = conn.session_mut(side).handle_revocations(list.clone(), now) {
                self.session_failed(side, ix, peer, &e);
            }
            self.flush(id, side);
            self.reap(id);
        }
    }

    /// Drains one session's frames onto the link and its events into the trace.
    pub(crate) fn flush(&mut self, id: u64, side: Side) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let mut frames = Vec::new();
        while let Some(f) = conn.session_mut(side).poll_transmit() {
            let at = conn.send_time(side, f.len(), now);
            frames.push((at, f));
        }
        let mut events = Vec::new();
        while let Some(e) = conn.session_mut(side).poll_event() {
            events.push(e);
        }
        let ix = conn.node(side);
        if tracing::enabled!(tracing::Level::TRACE) {
            for e in &events {
                tracing::trace!(now, conn = id, node = %self.nodes[ix].name, event = ?e);
            }
        }
        for (at, frame) in frames {
            self.sched.at(
                at,
                Ev::Deliver {
                    conn: id,
                    to: side.other(),
                    frame,
                },
            );
        }
        for e in events {
            self.trace
                .update(format!("{now} {id} {ix} {e:?}\n").as_bytes());
            match e {
                Event::Stored { report, .. } => {
                    self.stats.received += report.stored as u64;
                    self.stats.duplicates += report.duplicates as u64;
                    self.stats.quarantined += report.quarantined as u64;
                }
                Event::RelayedReceipt { .. } => self.stats.relayed += 1,
                Event::RevocationsUpdated { .. } => {
                    self.relisted.insert(ix);
                }
                _ => {}
            }
        }
    }

    /// Tells every open session of `ix` that its log grew past `head0`.
    pub(crate) fn log_grew(&mut self, ix: NodeIx, head0: u64) {
        if self.nodes[ix].head() <= head0 {
            return;
        }
        let now = ts(self.now);
        let ids: Vec<(u64, Side)> = self
            .conns
            .iter()
            .filter_map(|(id, c)| c.side_of(ix).map(|s| (*id, s)))
            .collect();
        for (id, side) in ids {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            let Some(store) = self.nodes[ix].store.as_ref() else {
                return;
            };
            if conn.session(side).is_closed() {
                continue;
            }
            let peer = conn.node(side.other());
            let result = conn.session_mut(side).handle_log_grew(store, now);
            if let Err(e) = result {
                self.session_failed(side, ix, peer, &e);
            }
            if self.nodes[ix].backend.has_failed() {
                self.power_cut(ix);
                return;
            }
            self.flush(id, side);
            self.reap(id);
        }
    }

    /// Removes a connection whose sessions have both closed.
    fn reap(&mut self, id: u64) {
        if self.conns.get(&id).is_some_and(Conn::is_closed) {
            self.drop_conn(id);
        }
    }

    /// Discards a connection: both sessions and every frame in flight.
    pub(crate) fn drop_conn(&mut self, id: u64) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        tracing::debug!(now = self.now, conn = id, "connection gone");
        if self.phase == Phase::Faults {
            let d = conn.dialer;
            let delay = if self.revoked.is_some_and(|r| r.node == d) {
                self.fault_rng.range(20_000, 60_000)
            } else {
                self.fault_rng.range(1_000, 8_000)
            };
            self.schedule_dial(d, delay);
        }
    }

    /// Discards every connection of `ix`.
    pub(crate) fn drop_conns_of(&mut self, ix: NodeIx, only_dialed: bool) {
        let ids: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.dialer == ix || (!only_dialed && c.acceptor == ix))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.drop_conn(id);
        }
    }

    /// Classifies a session error: expected (a refused revoked device, a
    /// node losing power) or a violation.
    fn session_failed(&mut self, side: Side, ix: NodeIx, peer: NodeIx, e: &SessionError) {
        if self.nodes[ix].backend.has_failed() {
            return;
        }
        let revoked = self.revoked.map(|r| r.node);
        let expected = match (e, side) {
            (SessionError::Certificate(_), Side::Acceptor) if revoked == Some(peer) => {
                self.stats.refused += 1;
                true
            }
            (
                SessionError::PeerClosed {
                    code: CloseCode::Certificate,
                    ..
                },
                Side::Dialer,
            ) => revoked == Some(ix),
            _ => false,
        };
        if !expected {
            let detail = format!(
                "{} ({side:?}) with {}: {e}",
                self.nodes[ix].name, self.nodes[peer].name
            );
            self.violation(Check::Session, detail);
        }
    }

    /// Schedules a dial of `ix` after `delay`, unless one is scheduled.
    pub(crate) fn schedule_dial(&mut self, ix: NodeIx, delay: Millis) {
        let node = &mut self.nodes[ix];
        if node.upstream.is_none() || node.dial_scheduled {
            return;
        }
        node.dial_scheduled = true;
        self.sched.at(self.now + delay, Ev::Dial(ix));
    }

    fn dial(&mut self, ix: NodeIx) {
        self.nodes[ix].dial_scheduled = false;
        if self.phase != Phase::Faults {
            return;
        }
        let node = &self.nodes[ix];
        let (Some(up), true, true) = (node.upstream, node.link_up, node.store.is_some()) else {
            return;
        };
        if self.now < node.down_until || self.conns.values().any(|c| c.dialer == ix) {
            return;
        }
        if self.nodes[up].store.is_none() {
            return;
        }
        if self.now < self.nodes[up].down_until {
            let wait = self.nodes[up].down_until - self.now + self.fault_rng.range(500, 5_000);
            self.schedule_dial(ix, wait);
            return;
        }
        self.open_conn(ix, up, false);
    }

    /// Opens a connection from `d` to the relay `a`: two fresh sessions,
    /// each configured from its node's store (certificate, revocations).
    pub(crate) fn open_conn(&mut self, d: NodeIx, a: NodeIx, heal: bool) -> Option<u64> {
        let now = ts(self.now);
        let hq = self.hq_root.public();
        let (dn, an) = (&self.nodes[d], &self.nodes[a]);
        let (Some(ds), Some(as_)) = (dn.store.as_ref(), an.store.as_ref()) else {
            return None;
        };
        let opened = dn
            .session_config(hq)
            .and_then(|c| Session::new(c, ds, an.id(), now).map_err(|e| e.to_string()))
            .and_then(|sd| {
                an.session_config(hq)
                    .and_then(|c| Session::new(c, as_, dn.id(), now).map_err(|e| e.to_string()))
                    .map(|sa| (sd, sa))
            });
        let (sd, sa) = match opened {
            Ok(s) => s,
            Err(e) => {
                let detail = format!("opening a session {} → {}: {e}", dn.name, an.name);
                self.violation(Check::Session, detail);
                return None;
            }
        };
        let link = if an.kind == NodeKind::Office && dn.kind == NodeKind::Device {
            if self.rng.chance(1, 2) {
                LinkSpec::lan(&mut self.rng)
            } else {
                LinkSpec::field(&mut self.rng)
            }
        } else {
            LinkSpec::field(&mut self.rng)
        };
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(id, Conn::new(d, a, sd, sa, link));
        self.stats.sessions += 2;
        self.trace
            .update(format!("open {id} {d} {a} {link:?}\n").as_bytes());
        tracing::debug!(now = self.now, conn = id, dialer = %self.nodes[d].name, relay = %self.nodes[a].name, ?link, heal, "connect");
        self.flush(id, Side::Dialer);
        self.flush(id, Side::Acceptor);
        Some(id)
    }

    /// Power was cut during an operation on `ix`: crash it now.
    pub(crate) fn power_cut(&mut self, ix: NodeIx) {
        self.stats.power_cuts += 1;
        let downtime = if self.nodes[ix].is_relay() {
            self.fault_rng.range(1_000, 20_000)
        } else {
            0
        };
        self.crash(ix, downtime);
    }

    /// Crashes `ix`: its connections vanish, its store is dropped without a
    /// clean shutdown and reopened on the image that survived, and every
    /// change it acknowledged must still be there.
    pub(crate) fn crash(&mut self, ix: NodeIx, downtime: Millis) {
        self.drop_conns_of(ix, false);
        let kind = if self.cfg.torn_writes && self.fault_rng.chance(1, 2) {
            self.stats.torn_crashes += 1;
            CrashKind::Torn
        } else {
            CrashKind::Clean
        };
        self.stats.crashes += 1;
        self.trace
            .update(format!("crash {} {ix} {kind:?}\n", self.now).as_bytes());
        tracing::debug!(now = self.now, node = %self.nodes[ix].name, ?kind, downtime, "crash");
        if self.nodes[ix].store.is_none() {
            return;
        }
        let head_before = self.nodes[ix].head();
        let crashed = self.nodes[ix].crash(kind, &mut self.fault_rng);
        tracing::debug!(now = self.now, node = %self.nodes[ix].name, head_before, head_after = self.nodes[ix].head(), "reopened");
        if let Err(e) = crashed {
            let detail = format!(
                "{} did not reopen after a {kind:?} crash: {e}",
                self.nodes[ix].name
            );
            self.violation(Check::Durability, detail);
            return;
        }
        self.check_authored_survived(ix);
        if ix == HQ {
            self.adopt_surviving_revocation();
        }
        self.nodes[ix].down_until = self.now + downtime;
        if downtime > 0 {
            self.sched.at(self.now + downtime, Ev::Restart(ix));
        } else {
            let delay = self.fault_rng.range(1_000, 5_000);
            self.schedule_dial(ix, delay);
        }
    }

    /// A revocation whose commit failed in a power cut may still have
    /// reached the disk (a torn crash keeps part of the unsynced writes):
    /// what headquarters' store holds after the crash is what stands.
    fn adopt_surviving_revocation(&mut self) {
        if self.revoked.is_some() {
            return;
        }
        let Some(store) = self.nodes[HQ].store.as_ref() else {
            return;
        };
        let list = match store.revocations() {
            Ok(Some(bytes)) => {
                fieldsync_identity::RevocationList::from_bytes(&bytes, &self.hq_root.public()).ok()
            }
            _ => None,
        };
        let Some(entry) = list.as_ref().and_then(|l| l.entries().first()) else {
            return;
        };
        if let Some(ix) = self.nodes.iter().position(|n| n.id() == entry.device) {
            let point = entry.accepted_through(0).unwrap_or(0);
            self.revoked = Some(Revoked { node: ix, point });
            self.stats.revoked = true;
            self.trace
                .update(format!("revocation of {ix} through {point} survived\n").as_bytes());
        }
    }

    /// Every change `ix` acknowledged locally is still in its store.
    pub(crate) fn check_authored_survived(&mut self, ix: NodeIx) {
        let node = &self.nodes[ix];
        let Some(store) = node.store.as_ref() else {
            return;
        };
        let mut lost = Vec::new();
        for a in &node.authored {
            match store.has_change(&a.case, &a.hash) {
                Ok(true) => {}
                Ok(false) => lost.push(format!(
                    "{}: acknowledged change {} (counter {}, made at {} ms) of case {} is gone",
                    node.name,
                    a.hash.short(),
                    a.counter,
                    a.at,
                    a.case.short()
                )),
                Err(e) => lost.push(format!("{}: reading its log: {e}", node.name)),
            }
        }
        for detail in lost {
            self.violation(Check::Durability, detail);
        }
    }

    fn restart(&mut self, ix: NodeIx) {
        if self.phase == Phase::Faults && self.nodes[ix].link_up {
            let delay = self.fault_rng.range(100, 2_000);
            self.schedule_dial(ix, delay);
        }
    }
}

/// Describes, at debug level, the batch a session failed on.
fn debug_frame(now: Millis, node: &str, frame: &[u8], e: &SessionError) {
    use fieldsync_protocol::Message;
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    if let Some(body) = frame.get(4..)
        && let Ok(Message::Batch(b)) = Message::decode(body)
    {
        let geneses: Vec<String> = b
            .geneses
            .iter()
            .filter_map(|g| fieldsync_identity::decode_signed::<fieldsync_case::Genesis>(g).ok())
            .map(|g| g.payload().value().case.short())
            .collect();
        let changes: Vec<String> = b
            .changes
            .iter()
            .filter_map(|c| fieldsync_case::decode_change(c).ok())
            .map(|c| {
                format!(
                    "{}:{}@{}",
                    c.payload().case().short(),
                    fieldsync_identity::DeviceId::from_public_key(*c.signer()).short(),
                    c.payload().counter()
                )
            })
            .collect();
        tracing::debug!(now, node, error = %e, through = b.through, ?geneses, ?changes, "failed batch");
    }
}
