//! Repair: when a peer's cursor into our log is lost or belongs to an older
//! log (a restored relay, a wiped device, a new office relay), compare
//! per-case heads through bucketed digests and send only the changes of the
//! cases that differ, and of those only what the peer lacks.

use std::collections::{BTreeMap, BTreeSet};

use fieldsync_case::{ChangeHash, decode_change};
use fieldsync_identity::{CaseId, DeviceCertificate};
use fieldsync_store::{CaseHeads, Store};

use crate::authority::Authority;
use crate::error::SessionError;
use crate::wire::{REPAIR_BUCKETS, RepairDigest, RepairHeads};

/// The bucket of a case.
pub(crate) fn bucket(case: &CaseId) -> usize {
    usize::from(case.as_bytes()[0]) % REPAIR_BUCKETS
}

/// This node's cases that `reader` may read, with their heads.
pub(crate) fn readable_heads(
    store: &Store,
    reader: &DeviceCertificate,
) -> Result<Vec<CaseHeads>, SessionError> {
    Ok(store
        .case_heads()?
        .into_iter()
        .filter(|h| Authority::may_read_compartment(reader, &h.compartment))
        .collect())
}

/// The digest of a set of case heads (sorted by case, as the store returns them).
pub(crate) fn digest(heads: &[CaseHeads], head: u64) -> RepairDigest {
    let mut hashers: Vec<blake3::Hasher> =
        (0..REPAIR_BUCKETS).map(|_| blake3::Hasher::new()).collect();
    for h in heads {
        let hasher = &mut hashers[bucket(&h.case)];
        hasher.update(h.case.as_bytes());
        hasher.update(&(h.heads.len() as u32).to_be_bytes());
        for head in &h.heads {
            hasher.update(&head.0);
        }
    }
    let buckets = hashers
        .into_iter()
        .map(|h| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h.finalize().as_bytes()[..8]);
            b
        })
        .collect();
    RepairDigest { buckets, head }
}

/// The receiver's answer: its heads for every case in a bucket that differs.
pub(crate) fn answer(mine: &[CaseHeads], theirs: &RepairDigest) -> RepairHeads {
    let ours = digest(mine, 0);
    let differing: BTreeSet<usize> = (0..REPAIR_BUCKETS)
        .filter(|&i| ours.buckets[i] != theirs.buckets[i])
        .collect();
    RepairHeads {
        differing: differing.iter().map(|&i| i as u8).collect(),
        cases: mine
            .iter()
            .filter(|h| differing.contains(&bucket(&h.case)))
            .map(|h| (*h.case.as_bytes(), h.heads.iter().map(|c| c.0).collect()))
            .collect(),
    }
}

/// What to do about the cases of the differing buckets.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Changes the peer lacks, per case (with its genesis), in log order.
    pub(crate) send: Vec<(CaseId, Vec<u8>, Vec<Vec<u8>>)>,
    /// Cases where the peer has changes we do not know: our heads, offered
    /// so that it can say which of our changes it holds.
    pub(crate) offer: RepairHeads,
}

/// Our changes the peer lacks, for the cases in the buckets it found
/// different. Where its heads are all known to us, exactly the changes that
/// are not their ancestors; where it holds changes we do not know, the case
/// is offered instead (see [`holdings`]).
pub(crate) fn plan(
    store: &Store,
    mine: &[CaseHeads],
    theirs: &RepairHeads,
) -> Result<Plan, SessionError> {
    let peer: BTreeMap<CaseId, Vec<ChangeHash>> = theirs
        .cases
        .iter()
        .map(|(c, h)| {
            (
                CaseId::from_bytes(*c),
                h.iter().map(|x| ChangeHash(*x)).collect(),
            )
        })
        .collect();
    let differing: BTreeSet<usize> = theirs.differing.iter().map(|&b| usize::from(b)).collect();
    let mut plan = Plan::default();
    for h in mine {
        if !differing.contains(&bucket(&h.case)) {
            continue;
        }
        let theirs = peer.get(&h.case);
        if theirs == Some(&h.heads) {
            continue;
        }
        let envs = store.case_envelopes(&h.case)?;
        let send = match theirs {
            None => Some(envs),
            Some(their_heads) => lacking(envs, their_heads)?,
        };
        match send {
            Some(send) if !send.is_empty() => plan.send.push((h.case, h.genesis.clone(), send)),
            Some(_) => {}
            None => plan
                .offer
                .cases
                .push((*h.case.as_bytes(), h.heads.iter().map(|c| c.0).collect())),
        }
    }
    Ok(plan)
}

/// The peer's answer to an offer: for each offered case whose heads it does
/// not all hold, every change hash it holds of that case.
pub(crate) fn holdings(store: &Store, offer: &RepairHeads) -> Result<RepairHeads, SessionError> {
    let mut out = RepairHeads::default();
    for (case, heads) in &offer.cases {
        let case = CaseId::from_bytes(*case);
        let mut all_held = true;
        for h in heads {
            if !store.has_change(&case, &ChangeHash(*h))? {
                all_held = false;
                break;
            }
        }
        if all_held {
            continue;
        }
        let mut hashes = Vec::new();
        for env in store.case_envelopes(&case)? {
            let c = decode_change(&env)
                .map_err(|e| SessionError::Protocol(format!("stored change: {e}")))?;
            hashes.push(c.payload().hash().0);
        }
        out.cases.push((*case.as_bytes(), hashes));
    }
    Ok(out)
}

/// Our envelopes of `case` whose hashes are not in `held`.
pub(crate) fn complement(
    store: &Store,
    case: &CaseId,
    held: &[[u8; 32]],
) -> Result<Vec<Vec<u8>>, SessionError> {
    let held: BTreeSet<[u8; 32]> = held.iter().copied().collect();
    let mut out = Vec::new();
    for env in store.case_envelopes(case)? {
        let c = decode_change(&env)
            .map_err(|e| SessionError::Protocol(format!("stored change: {e}")))?;
        if !held.contains(&c.payload().hash().0) {
            out.push(env);
        }
    }
    Ok(out)
}

/// The envelopes not among the ancestors of `heads`; `None` when some of
/// `heads` are unknown to us (the peer holds changes we lack, and we cannot
/// tell from its heads alone which of ours it has).
fn lacking(envs: Vec<Vec<u8>>, heads: &[ChangeHash]) -> Result<Option<Vec<Vec<u8>>>, SessionError> {
    let mut deps: BTreeMap<ChangeHash, Vec<ChangeHash>> = BTreeMap::new();
    let mut order = Vec::with_capacity(envs.len());
    for env in &envs {
        let c = decode_change(env)
            .map_err(|e| SessionError::Protocol(format!("stored change: {e}")))?;
        let p = c.payload();
        order.push(p.hash());
        deps.insert(p.hash(), p.deps());
    }
    if heads.iter().any(|h| !deps.contains_key(h)) {
        return Ok(None);
    }
    let mut held: BTreeSet<ChangeHash> = BTreeSet::new();
    let mut stack: Vec<ChangeHash> = heads.to_vec();
    while let Some(h) = stack.pop() {
        if held.insert(h)
            && let Some(ds) = deps.get(&h)
        {
            stack.extend(ds.iter().copied());
        }
    }
    Ok(Some(
        envs.into_iter()
            .zip(order)
            .filter(|(_, h)| !held.contains(h))
            .map(|(e, _)| e)
            .collect(),
    ))
}
