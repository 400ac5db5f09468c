//! A line diff that turns "the text was A, now it is B" into text splices, so an edit made in
//! `$EDITOR` becomes automerge text edits of just the lines that changed (and blame stays
//! right for the others).

/// Above this many line pairs the middle part is replaced whole (quadratic table otherwise).
const MAX_TABLE: usize = 4_000_000;

/// One splice: at char position `at` of the text as it is when applied, delete `delete` chars
/// and insert `insert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Splice {
    pub at: usize,
    pub delete: usize,
    pub insert: String,
}

fn chars(lines: &[&str]) -> usize {
    lines.iter().map(|l| l.chars().count()).sum()
}

/// The splices that turn `old` into `new`, last first (so each position is still valid when it
/// is applied).
pub(crate) fn splices(old: &str, new: &str) -> Vec<Splice> {
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..].iter().rev().zip(b[prefix..].iter().rev()).take_while(|(x, y)| x == y).count();
    let (ma, mb) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let base = chars(&a[..prefix]);
    let mut hunks = Vec::new();
    if ma.len().saturating_mul(mb.len()) > MAX_TABLE {
        hunks.push((0, ma.len(), 0, mb.len()));
    } else {
        // Longest common subsequence of lines, walked forwards into hunks.
        let (n, m) = (ma.len(), mb.len());
        let mut lcs = vec![0u32; (n + 1) * (m + 1)];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i * (m + 1) + j] = if ma[i] == mb[j] {
                    lcs[(i + 1) * (m + 1) + j + 1] + 1
                } else {
                    lcs[(i + 1) * (m + 1) + j].max(lcs[i * (m + 1) + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        let mut start: Option<(usize, usize)> = None;
        while i < n || j < m {
            if i < n && j < m && ma[i] == mb[j] {
                if let Some((si, sj)) = start.take() {
                    hunks.push((si, i, sj, j));
                }
                i += 1;
                j += 1;
                continue;
            }
            start.get_or_insert((i, j));
            if j < m && (i == n || lcs[i * (m + 1) + j + 1] >= lcs[(i + 1) * (m + 1) + j]) {
                j += 1;
            } else {
                i += 1;
            }
        }
        if let Some((si, sj)) = start {
            hunks.push((si, n, sj, m));
        }
    }
    let mut out: Vec<Splice> = hunks
        .into_iter()
        .map(|(ia, ja, ib, jb)| Splice {
            at: base + chars(&ma[..ia]),
            delete: chars(&ma[ia..ja]),
            insert: mb[ib..jb].concat(),
        })
        .collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn apply(text: &str, splices: &[Splice]) -> String {
        let mut chars: Vec<char> = text.chars().collect();
        for s in splices {
            chars.splice(s.at..s.at + s.delete, s.insert.chars());
        }
        chars.into_iter().collect()
    }

    #[test]
    fn only_changed_lines_are_touched() {
        let old = "one\ntwo\nthree\nfour\n";
        let new = "one\n2\nthree\nfour\nfive\n";
        let s = splices(old, new);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(apply(old, &s), new);
        assert!(s.iter().all(|s| !s.insert.contains("three")));
    }

    proptest! {
        #[test]
        fn splices_turn_old_into_new(
            old in proptest::collection::vec("[abé]{0,3}\n?", 0..12),
            new in proptest::collection::vec("[abé]{0,3}\n?", 0..12),
        ) {
            let (old, new) = (old.concat(), new.concat());
            prop_assert_eq!(apply(&old, &splices(&old, &new)), new);
        }
    }
}
