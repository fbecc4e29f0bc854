//! What a change does, read from its bytes without Automerge: the actions
//! of its operations, checked against the actions a case document is made of.
//!
//! A case document is maps, lists, text, scalar values, deletions and
//! counters. Automerge 0.12 also has rich-text *marks*, which no case
//! document uses, and its mark index is where malformed changes hurt most:
//! a mark end at an actor's first operation fails an assertion while
//! Automerge splices the index and fails it again in a destructor during
//! the unwinding, which aborts the process, past any `catch_unwind`.
//! So a change holding any mark operation is refused before Automerge sees
//! it, both when it is parsed ([`parse_change`](crate::parse_change)) and
//! when it is applied ([`CaseDoc::apply`](crate::CaseDoc::apply)).
//!
//! Automerge reads operations lazily from the change's columns; this scan
//! reads only the action column: the chunk header, the column directory and
//! one run-length encoded column of small integers: with the other checks
//! of `parse_change`, 1.08× the cost of Automerge's own parse
//! (`cargo bench -p fieldsync-case --bench guard`). Anything it cannot read
//! is refused, never passed on.

use crate::error::ChangeError;

/// Column specification of the action column: column 4, unsigned integers
/// (type 2), not deflated.
const ACTION_COLUMN: u32 = (4 << 4) | 2;
/// Bit of a column specification that marks a deflated column.
const DEFLATE_BIT: u32 = 1 << 3;
/// Automerge's action number of a mark (begin or end).
const ACTION_MARK: u64 = 7;
/// The largest action number Automerge knows.
const ACTION_MAX: u64 = 7;
/// Bytes before a chunk's length: magic (4), checksum (4), chunk type (1).
const CHUNK_PREFIX: usize = 9;
/// Bytes of a change hash in the dependency list.
const HASH_LEN: usize = 32;

/// Refuses a change chunk (magic, checksum, type, length, body) whose
/// operations include an action no case document uses, or whose action
/// column cannot be read.
pub(crate) fn check_actions(chunk: &[u8]) -> Result<(), ChangeError> {
    let column = action_column(chunk).ok_or_else(|| malformed("change header or columns"))?;
    let mut r = Reader(column);
    while !r.is_empty() {
        let run = r.sleb().ok_or_else(|| malformed("action run length"))?;
        if run > 0 {
            // `run` copies of one value.
            check_action(r.uleb().ok_or_else(|| malformed("action"))?)?;
        } else if run < 0 {
            // `-run` literal values.
            for _ in 0..run.unsigned_abs() {
                check_action(r.uleb().ok_or_else(|| malformed("action"))?)?;
            }
        } else {
            // A run of nulls: its length follows.
            r.uleb().ok_or_else(|| malformed("action null run"))?;
        }
    }
    Ok(())
}

fn check_action(action: u64) -> Result<(), ChangeError> {
    match action {
        ACTION_MARK => Err(ChangeError::UnsupportedOperation {
            what: "rich-text marks",
        }),
        a if a > ACTION_MAX => Err(ChangeError::UnsupportedOperation {
            what: "an unknown action",
        }),
        _ => Ok(()),
    }
}

fn malformed(what: &str) -> ChangeError {
    ChangeError::NotAChange {
        detail: format!("unreadable {what}"),
    }
}

/// The bytes of the action column (empty when the change has none), or
/// `None` when the chunk is not laid out as an uncompressed change.
fn action_column(chunk: &[u8]) -> Option<&[u8]> {
    let mut r = Reader(chunk.get(CHUNK_PREFIX..)?);
    let len = usize::try_from(r.uleb()?).ok()?;
    let mut r = Reader(r.take(len)?);
    let deps = usize::try_from(r.uleb()?).ok()?;
    r.take(deps.checked_mul(HASH_LEN)?)?;
    r.bytes()?; // actor
    r.uleb()?; // seq
    r.uleb()?; // start op
    r.sleb()?; // time
    r.bytes()?; // message
    let others = r.uleb()?;
    for _ in 0..others {
        r.bytes()?;
    }
    let columns = r.uleb()?;
    let mut offset = 0usize;
    let mut action = None;
    for _ in 0..columns {
        let spec = u32::try_from(r.uleb()?).ok()?;
        let len = usize::try_from(r.uleb()?).ok()?;
        if spec & DEFLATE_BIT != 0 {
            // Automerge refuses deflated columns in a change; so does this.
            return None;
        }
        if spec == ACTION_COLUMN {
            if action.is_some() {
                return None;
            }
            action = Some(offset..offset.checked_add(len)?);
        }
        offset = offset.checked_add(len)?;
    }
    let data = r.take(offset)?;
    match action {
        Some(range) => data.get(range),
        None => Some(&[]),
    }
}

/// A cursor over bytes, reading LEB128 numbers and length-prefixed fields.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    /// A length (unsigned LEB128) and that many bytes.
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.uleb()?).ok()?;
        self.take(n)
    }

    /// An unsigned LEB128 number of at most 64 bits.
    fn uleb(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self.0.split_first()?;
            self.0 = rest;
            let bits = u64::from(byte & 0x7f);
            if i == 9 && bits > 1 {
                return None;
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// A signed LEB128 number of at most 64 bits.
    fn sleb(&mut self) -> Option<i64> {
        let mut value = 0i64;
        for i in 0..10 {
            let (&byte, rest) = self.0.split_first()?;
            self.0 = rest;
            let shift = 7 * i;
            if i == 9 && !matches!(byte, 0x00 | 0x7f) {
                return None;
            }
            value |= i64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                if shift + 7 < 64 && byte & 0x40 != 0 {
                    value |= -1i64 << (shift + 7);
                }
                return Some(value);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uleb(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut v = v;
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    fn sleb(v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut v = v;
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            let done = (v == 0 && byte & 0x40 == 0) || (v == -1 && byte & 0x40 != 0);
            if done {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    #[test]
    fn leb128_round_trips_at_the_edges() {
        for v in [0, 1, 63, 64, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(Reader(&uleb(v)).uleb(), Some(v), "{v}");
        }
        for v in [0, 1, -1, 63, -64, 64, -65, 1000, -1000, i64::MAX, i64::MIN] {
            assert_eq!(Reader(&sleb(v)).sleb(), Some(v), "{v}");
        }
        // Truncated and over-long numbers are refused.
        assert_eq!(Reader(&[0x80]).uleb(), None);
        assert_eq!(Reader(&[0xff; 10]).uleb(), None);
        assert_eq!(Reader(&[0xff; 11]).sleb(), None);
    }

    /// A change chunk around one column directory and its data.
    fn chunk(columns: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(uleb(0)); // no deps
        body.extend(uleb(2));
        body.extend([0xab, 0xcd]); // actor
        body.extend(uleb(1)); // seq
        body.extend(uleb(1)); // start op
        body.extend(sleb(0)); // time
        body.extend(uleb(0)); // message
        body.extend(uleb(0)); // other actors
        body.extend(uleb(columns.len() as u64));
        for (spec, data) in columns {
            body.extend(uleb(u64::from(*spec)));
            body.extend(uleb(data.len() as u64));
        }
        for (_, data) in columns {
            body.extend(data);
        }
        let mut out = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 1];
        out.extend(uleb(body.len() as u64));
        out.extend(body);
        out
    }

    fn actions(runs: &[u8]) -> Vec<u8> {
        chunk(&[
            (0x34, vec![]),
            (ACTION_COLUMN, runs.to_vec()),
            (0x56, vec![1, 2]),
        ])
    }

    #[test]
    fn reads_every_kind_of_run() {
        // A run of three puts, two literals (make map, delete), two nulls.
        assert_eq!(check_actions(&actions(&[3, 1, 0x7e, 0, 3, 0, 2])), Ok(()));
        // No action column at all: no operations to refuse.
        assert_eq!(check_actions(&chunk(&[(0x34, vec![])])), Ok(()));
    }

    #[test]
    fn refuses_marks_and_unknown_actions_wherever_they_sit() {
        let mark = Err(ChangeError::UnsupportedOperation {
            what: "rich-text marks",
        });
        assert_eq!(check_actions(&actions(&[2, 7])), mark);
        assert_eq!(check_actions(&actions(&[2, 1, 0x7d, 0, 1, 7])), mark);
        assert_eq!(
            check_actions(&actions(&[1, 8])),
            Err(ChangeError::UnsupportedOperation {
                what: "an unknown action",
            })
        );
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for bad in [
            actions(&[3]),       // a run without its value
            actions(&[0x7e, 1]), // a literal run one value short
            actions(&[0]),       // a null run without its length
            actions(&[0x80]),    // a truncated run length
            chunk(&[(ACTION_COLUMN | DEFLATE_BIT, vec![1, 1])]),
            chunk(&[(ACTION_COLUMN, vec![1, 1]), (ACTION_COLUMN, vec![1, 1])]),
        ] {
            assert!(
                matches!(check_actions(&bad), Err(ChangeError::NotAChange { .. })),
                "{bad:02x?}"
            );
        }
        let good = actions(&[1, 1]);
        for cut in 0..good.len() {
            assert!(check_actions(&good[..cut]).is_err(), "cut at {cut}");
        }
    }
}
