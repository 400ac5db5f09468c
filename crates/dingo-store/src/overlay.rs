//! Writes on their way into sled: an applied batch is readable from here at once, and sled only
//! gets it once its log record is durable (so sled never holds a write a crash could take back
//! from the log). Reads merge this over sled.

use sled::IVec;
use std::collections::{BTreeMap, VecDeque};
use std::iter::Peekable;
use std::ops::Bound;

/// A value, or `None` for a delete.
pub(crate) type Value = Option<IVec>;
/// One write of a batch on its way into sled.
pub(crate) type Pending = (IVec, Value);

/// The newest write of each key not yet in sled, with the number of the record that holds it.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    writes: BTreeMap<Vec<u8>, (u64, Value)>,
}

impl Overlay {
    /// Adds the writes of record `lsn` (later records win).
    pub(crate) fn insert(&mut self, lsn: u64, writes: &[Pending]) {
        for (k, v) in writes {
            self.writes.insert(k.to_vec(), (lsn, v.clone()));
        }
    }

    /// Drops each key's write of the given record, now in sled, unless a later record wrote the
    /// key again.
    pub(crate) fn remove_applied<'a>(&mut self, applied: impl IntoIterator<Item = (&'a [u8], u64)>) {
        for (k, lsn) in applied {
            if self.writes.get(k).is_some_and(|(at, _)| *at == lsn) {
                self.writes.remove(k);
            }
        }
    }

    /// The pending write of `key`, if any.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Value> {
        self.writes.get(key).map(|(_, v)| v.clone())
    }

    /// The pending writes from `lower` on whose keys start with `prefix`, in key order.
    pub(crate) fn range(&self, lower: Bound<&[u8]>, prefix: &[u8]) -> VecDeque<(IVec, Value)> {
        self.writes
            .range::<[u8], _>((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (_, v))| (IVec::from(k.as_slice()), v.clone()))
            .collect()
    }

    /// Number of keys with a pending write.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.writes.len()
    }
}

/// sled's records in key order with pending writes laid over them: a pending value replaces
/// sled's, a pending delete hides it.
pub(crate) struct Merged<I: Iterator<Item = sled::Result<(IVec, IVec)>>> {
    sled: Peekable<I>,
    pending: VecDeque<(IVec, Value)>,
}

impl<I: Iterator<Item = sled::Result<(IVec, IVec)>>> Merged<I> {
    pub(crate) fn new(sled: I, pending: VecDeque<(IVec, Value)>) -> Self {
        Self { sled: sled.peekable(), pending }
    }
}

impl<I: Iterator<Item = sled::Result<(IVec, IVec)>>> Iterator for Merged<I> {
    type Item = sled::Result<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        use std::cmp::Ordering;
        loop {
            let Some((pending_key, _)) = self.pending.front() else { return self.sled.next() };
            let order = match self.sled.peek() {
                None => Ordering::Less,
                Some(Err(_)) => return self.sled.next(),
                Some(Ok((sled_key, _))) => pending_key.as_ref().cmp(sled_key.as_ref()),
            };
            if order == Ordering::Greater {
                return self.sled.next();
            }
            if order == Ordering::Equal {
                self.sled.next();
            }
            if let Some((k, Some(v))) = self.pending.pop_front() {
                return Some(Ok((k, v)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(s: &str) -> IVec {
        IVec::from(s.as_bytes())
    }

    #[test]
    fn pending_writes_replace_hide_and_join_sled_records_in_order() {
        let sled: Vec<sled::Result<(IVec, IVec)>> =
            ["a", "c", "e", "g"].iter().map(|k| Ok((iv(k), iv(&format!("sled {k}"))))).collect();
        let mut o = Overlay::default();
        o.insert(1, &[(iv("b"), Some(iv("new b"))), (iv("c"), None), (iv("e"), Some(iv("new e")))]);
        o.insert(2, &[(iv("h"), Some(iv("new h"))), (iv("i"), None)]);
        let got: Vec<(IVec, IVec)> =
            Merged::new(sled.into_iter(), o.range(Bound::Unbounded, b"")).map(|r| r.expect("ok")).collect();
        let want = [("a", "sled a"), ("b", "new b"), ("e", "new e"), ("g", "sled g"), ("h", "new h")];
        assert_eq!(got, want.iter().map(|(k, v)| (iv(k), iv(v))).collect::<Vec<_>>());
    }

    #[test]
    fn a_write_leaves_once_applied_unless_written_again() {
        let mut o = Overlay::default();
        let first = [(iv("k"), Some(iv("1"))), (iv("x"), Some(iv("x")))];
        o.insert(1, &first);
        o.insert(2, &[(iv("k"), Some(iv("2")))]);
        o.remove_applied(first.iter().map(|(k, _)| (k.as_ref(), 1)));
        assert_eq!(o.get(b"k"), Some(Some(iv("2"))), "record 2's write stays until it is applied");
        assert_eq!(o.get(b"x"), None);
        assert_eq!(o.len(), 1);
        assert_eq!(o.range(Bound::Excluded(b"k".as_slice()), b"").len(), 0);
        assert_eq!(o.range(Bound::Included(b"k".as_slice()), b"k").len(), 1);
    }
}
