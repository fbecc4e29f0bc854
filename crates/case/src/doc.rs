//! [`CaseDoc`]: one case as an Automerge document, with a poison flag.
//!
//! Editing lives in `edit.rs`, reading in `read.rs` and `history.rs`; this
//! file holds the document's life cycle: create, load, save, apply, commit.

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, AutoCommit, LoadOptions, ReadDoc, TextEncoding, VerificationMode};
use fieldsync_identity::{ActorBinding, Timestamp};

use crate::actions::check_actions;
use crate::change::{ChangeHash, MAX_CHANGE_LEN};
use crate::error::{CaseError, am};
use crate::guard::guarded;

/// How summary positions are counted: Unicode code points (Rust `char`s).
pub(crate) const TEXT_ENCODING: TextEncoding = TextEncoding::UnicodeCodePoint;

/// One case document.
///
/// Local edits are made with the mutators (`set_field`, `add_subject`, …),
/// which add operations to a pending transaction; [`CaseDoc::commit`] seals
/// them into one Automerge change, which the caller signs and stores.
/// Operations that would seal pending edits implicitly (`apply`, `save`,
/// `heads`, `history`, …) refuse with [`CaseError::UncommittedEdits`] instead,
/// so that no change escapes signing.
///
/// Every Automerge call runs behind [`guarded`]. If Automerge panics (it
/// does on some malformed changes) the document is *poisoned*: every later
/// call returns [`CaseError::Poisoned`], and the caller reloads the case
/// from its store.
#[derive(Debug)]
pub struct CaseDoc {
    doc: AutoCommit,
    poisoned: bool,
}

impl CaseDoc {
    /// An empty document whose local changes are made by `actor`.
    /// Call [`CaseDoc::init`] once, on the creating device, to make it a case.
    pub fn new(actor: ActorBinding) -> Self {
        Self {
            doc: AutoCommit::new_with_encoding(TEXT_ENCODING).with_actor(actor_id(actor)),
            poisoned: false,
        }
    }

    /// Loads a snapshot written by [`CaseDoc::save`]. Never panics: a
    /// snapshot that makes Automerge panic gives [`CaseError::Panicked`].
    ///
    /// Head hashes are verified (`VerificationMode::Check`). Skipping that
    /// check (`DontCheck`) was measured at only 10–25 % faster (28–30 ms
    /// against 34–37 ms for a 10,000-change case, release build), because
    /// Automerge rebuilds and hashes every change while loading either way;
    /// not worth loading a corrupt snapshot unnoticed.
    pub fn load(snapshot: &[u8], actor: ActorBinding) -> Result<Self, CaseError> {
        let options = LoadOptions::new()
            .text_encoding(TEXT_ENCODING)
            .verification_mode(VerificationMode::Check);
        let doc = guarded("loading a case snapshot", || {
            AutoCommit::load_with_options(snapshot, options)
        })?
        .map_err(am("loading a case snapshot"))?;
        Ok(Self {
            doc: doc.with_actor(actor_id(actor)),
            poisoned: false,
        })
    }

    /// Whether an earlier Automerge panic poisoned this document.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The number of operations in the pending (uncommitted) local transaction.
    pub fn pending_edits(&self) -> usize {
        if self.poisoned {
            0
        } else {
            self.doc.pending_ops()
        }
    }

    /// Runs `f` on the document behind the guard; a panic poisons the document.
    pub(crate) fn with<T>(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&mut AutoCommit) -> Result<T, CaseError>,
    ) -> Result<T, CaseError> {
        if self.poisoned {
            return Err(CaseError::Poisoned);
        }
        let doc = &mut self.doc;
        match guarded(what, move || f(doc)) {
            Ok(result) => result,
            Err(panic) => {
                self.poisoned = true;
                Err(CaseError::Panicked(panic))
            }
        }
    }

    /// Like [`CaseDoc::with`], but refuses while local edits are pending.
    pub(crate) fn with_idle<T>(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&mut AutoCommit) -> Result<T, CaseError>,
    ) -> Result<T, CaseError> {
        self.with(what, |doc| {
            if doc.pending_ops() > 0 {
                return Err(CaseError::UncommittedEdits);
            }
            f(doc)
        })
    }

    /// A compact snapshot of the whole document (every applied change, not
    /// the changes still waiting for their dependencies).
    pub fn save(&mut self) -> Result<Vec<u8>, CaseError> {
        self.with_idle("saving a case", |doc| Ok(doc.save()))
    }

    /// The current heads, sorted.
    pub fn heads(&mut self) -> Result<Vec<ChangeHash>, CaseError> {
        self.with_idle("reading heads", |doc| Ok(sorted_hashes(doc.get_heads())))
    }

    /// Applies changes (already verified by the caller) in one Automerge
    /// call. Changes already present are ignored; changes whose
    /// dependencies are missing wait inside the document until they arrive
    /// (see [`CaseDoc::missing_deps`]). If Automerge panics the document is
    /// poisoned.
    ///
    /// A change holding operations no case document is made of (rich-text
    /// marks: Automerge 0.12 can abort the process on a malformed one, which
    /// no guard catches) is refused before Automerge sees any of the changes:
    /// [`CaseError::Refused`], the document unchanged.
    pub fn apply(&mut self, changes: Vec<automerge::Change>) -> Result<(), CaseError> {
        self.with_idle("applying changes", |doc| {
            admit(&changes)?;
            doc.apply_changes(changes).map_err(am("applying changes"))
        })
    }

    /// Like [`CaseDoc::apply`], but applies to a copy of the document and
    /// keeps it only if Automerge succeeds: on a panic (or an error) this
    /// document is left exactly as it was, not poisoned. Costs one copy of
    /// the document (about 0.2 ms for a 10,000-change case, less than the
    /// apply itself) and twice its memory for a moment: use it to bisect a
    /// batch that made [`CaseDoc::apply`] panic, or wherever reloading is dear.
    pub fn apply_atomic(&mut self, changes: Vec<automerge::Change>) -> Result<(), CaseError> {
        let next = self.with_idle("applying changes", |doc| {
            admit(&changes)?;
            let actor = doc.get_actor().clone();
            let mut copy = doc.fork().with_actor(actor);
            Ok(guarded("applying changes", move || {
                copy.apply_changes(changes).map(|()| copy)
            }))
        })?;
        self.doc = next?.map_err(am("applying changes"))?;
        Ok(())
    }

    /// Hashes of changes that applied changes depend on but that are not
    /// here yet, sorted.
    pub fn missing_deps(&mut self) -> Result<Vec<ChangeHash>, CaseError> {
        self.with_idle("listing missing dependencies", |doc| {
            Ok(sorted_hashes(doc.get_missing_deps(&[])))
        })
    }

    /// Whether the change is applied in this document.
    pub fn has_change(&mut self, h: &ChangeHash) -> Result<bool, CaseError> {
        let h = h.to_automerge();
        self.with_idle("looking up a change", |doc| {
            Ok(doc.get_change_meta_by_hash(&h).is_some())
        })
    }

    /// The number of applied changes.
    pub fn change_count(&mut self) -> Result<usize, CaseError> {
        self.with_idle("counting changes", |doc| {
            Ok(usize::try_from(doc.stats().num_changes).unwrap_or(usize::MAX))
        })
    }

    /// The applied change with this hash.
    pub fn get_change(&mut self, h: &ChangeHash) -> Result<Option<automerge::Change>, CaseError> {
        let h = h.to_automerge();
        self.with_idle("reading a change", |doc| Ok(doc.get_change_by_hash(&h)))
    }

    /// The applied changes that are not (transitive) dependencies of `have`,
    /// in causal order; with an empty `have`, all of them.
    pub fn changes_since(
        &mut self,
        have: &[ChangeHash],
    ) -> Result<Vec<automerge::Change>, CaseError> {
        let have: Vec<automerge::ChangeHash> = have.iter().map(|h| h.to_automerge()).collect();
        self.with_idle("listing changes", |doc| Ok(doc.get_changes(&have)))
    }

    /// Seals the pending local edits into one change with the author's
    /// `message` and time `now` (Automerge stores whole seconds) and returns
    /// it, for signing. `None` when nothing is pending.
    ///
    /// A change larger than [`MAX_CHANGE_LEN`] could never be sent: it is
    /// refused with [`CaseError::ChangeTooLarge`], and as Automerge has
    /// already sealed it into the document, the document is poisoned (the
    /// store discards it with the edit's transaction).
    pub fn commit(
        &mut self,
        now: Timestamp,
        message: &str,
    ) -> Result<Option<automerge::Change>, CaseError> {
        let change = self.commit_unchecked(now, message)?;
        if let Some(c) = &change
            && c.raw_bytes().len() > MAX_CHANGE_LEN
        {
            self.poisoned = true;
            return Err(CaseError::ChangeTooLarge {
                len: c.raw_bytes().len(),
                limit: MAX_CHANGE_LEN,
            });
        }
        Ok(change)
    }

    fn commit_unchecked(
        &mut self,
        now: Timestamp,
        message: &str,
    ) -> Result<Option<automerge::Change>, CaseError> {
        let options = CommitOptions::default()
            .with_message(message)
            .with_time(now.as_millis().div_euclid(1000));
        self.with("committing local edits", |doc| {
            if doc.pending_ops() == 0 {
                return Ok(None);
            }
            let Some(hash) = doc.commit_with(options) else {
                return Ok(None);
            };
            match doc.get_last_local_change() {
                Some(change) if change.hash() == hash => Ok(Some(change)),
                _ => Err(CaseError::CommitLost),
            }
        })
    }

    /// Discards the pending local edits; returns how many operations were dropped.
    pub fn rollback(&mut self) -> Result<usize, CaseError> {
        self.with("rolling back local edits", |doc| Ok(doc.rollback()))
    }
}

/// The Automerge actor id of a device incarnation.
fn actor_id(actor: ActorBinding) -> ActorId {
    ActorId::from(actor.to_bytes())
}

fn sorted_hashes(hashes: Vec<automerge::ChangeHash>) -> Vec<ChangeHash> {
    let mut out: Vec<ChangeHash> = hashes.into_iter().map(ChangeHash::from).collect();
    out.sort_unstable();
    out
}

/// Refuses the first change whose operations no case document is made of.
fn admit(changes: &[automerge::Change]) -> Result<(), CaseError> {
    for c in changes {
        check_actions(c.raw_bytes()).map_err(|source| CaseError::Refused {
            hash: c.hash().into(),
            source,
        })?;
    }
    Ok(())
}
