//! Healing: no more faults; every node reconnects, round after round, until
//! every session reports synced in two rounds in a row.

use crate::net::{NodeIx, Side};
use crate::node::NodeKind;
use crate::report::Check;
use crate::world::{Phase, World};

impl World {
    /// Ends the fault phase: pending faults and edits are dropped, armed
    /// power cuts strike now (at an idle moment), crashed relays come back.
    fn end_faults(&mut self) {
        self.phase = Phase::Heal;
        self.sched.clear();
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            self.drop_conn(id);
        }
        for ix in 0..self.nodes.len() {
            if self.nodes[ix].backend.is_armed() {
                self.stats.power_cuts += 1;
                self.crash(ix, 0);
            }
            self.nodes[ix].down_until = 0;
            self.nodes[ix].link_up = true;
        }
    }

    /// Heals the world; returns whether it converged.
    pub(crate) fn heal(&mut self) -> bool {
        self.end_faults();
        let revoked = self.revoked.map(|r| r.node);
        let mut streak = 0;
        let mut unsynced = Vec::new();
        for round in 1..=self.cfg.max_heal_rounds {
            self.stats.heal_rounds = round;
            self.now += 1_000;
            self.sched.clear();
            let ids: Vec<u64> = self.conns.keys().copied().collect();
            for id in ids {
                self.drop_conn(id);
            }
            // Offices first, so that they hold the newest revocation list
            // from headquarters before their devices come.
            let mut dialers: Vec<NodeIx> = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].kind == NodeKind::Office)
                .collect();
            dialers.extend(
                (0..self.nodes.len())
                    .filter(|&i| self.nodes[i].kind == NodeKind::Device && Some(i) != revoked),
            );
            let mut expected = Vec::new();
            for d in dialers {
                let Some(up) = self.nodes[d].upstream else {
                    continue;
                };
                if self.nodes[d].store.is_none() || self.nodes[up].store.is_none() {
                    continue;
                }
                if let Some(id) = self.open_conn(d, up, true) {
                    expected.push((id, d));
                }
            }
            if !self.run_until(None) {
                return false;
            }
            // The revoked device tries too, from the second round on (by
            // then every office has the list): it must be refused.
            if let Some(r) = revoked
                && round >= 2
            {
                self.try_revoked(r);
            }
            unsynced.clear();
            for (id, d) in &expected {
                match self.conns.get(id) {
                    Some(c) if c.is_synced() => {}
                    Some(c) => unsynced.push(format!(
                        "{} (dialer synced {}, relay synced {})",
                        self.nodes[*d].name,
                        c.session(Side::Dialer).is_synced(),
                        c.session(Side::Acceptor).is_synced()
                    )),
                    None => unsynced.push(format!("{} (session closed)", self.nodes[*d].name)),
                }
            }
            streak = if unsynced.is_empty() { streak + 1 } else { 0 };
            if streak >= 2 {
                break;
            }
        }
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            self.drop_conn(id);
        }
        if streak < 2 {
            let detail = format!(
                "not synced after {} heal rounds: {}",
                self.cfg.max_heal_rounds,
                unsynced.join(", ")
            );
            self.violation(Check::Liveness, detail);
            return false;
        }
        true
    }

    /// The revoked device dials its relay once; the relay must refuse it.
    fn try_revoked(&mut self, r: NodeIx) {
        let Some(up) = self.nodes[r].upstream else {
            return;
        };
        let refused_before = self.stats.refused;
        let Some(id) = self.open_conn(r, up, true) else {
            return;
        };
        self.run_until(None);
        if self.stats.refused == refused_before {
            let still_open = self.conns.contains_key(&id);
            let detail = format!(
                "the revoked device {} was not refused by {} (connection still open: {still_open})",
                self.nodes[r].name, self.nodes[up].name
            );
            self.violation(Check::Authorization, detail);
        }
        if self.conns.contains_key(&id) {
            self.drop_conn(id);
        }
    }
}
