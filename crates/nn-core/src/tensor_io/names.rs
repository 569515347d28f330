//! Tensor names: mapping our parameter names to another model's (PyTorch imports), and the
//! closest names present when one is missing.
//!
//! A name map is any `Fn(&str) -> String` from our name (`rnn.weight_ih_l0`, `head.weight`) to
//! the file's; [`rename_prefixes`] builds the common one, a list of `(ours, theirs)` prefixes
//! tried in order (the first that matches is replaced; a name no prefix matches is kept):
//! `[("rnn.", "lstm."), ("head.", "fc.")]` reads a `state_dict` of a module with attributes
//! `lstm` and `fc`; `[("", "rnn.")]` reads a layer's names out of a whole model's file.
//!
//! Closest names: the file's names ranked by the longest common suffix of whole dotted segments
//! (the same tensor under another prefix), then the longest common prefix of segments (another
//! tensor of the same module), then edit distance (Levenshtein, on bytes); the first three that
//! share a segment or are within a third of the name's length.

/// A name map replacing the first matching prefix of `pairs` (`(ours, theirs)`).
pub fn rename_prefixes<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> String + 'a {
    move |name: &str| {
        for (ours, theirs) in pairs {
            if let Some(rest) = name.strip_prefix(ours) {
                return format!("{theirs}{rest}");
            }
        }
        name.to_string()
    }
}

/// The Levenshtein distance between two byte strings (insertions, deletions, substitutions).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Length of the longest common suffix made of whole dotted segments.
fn segment_suffix(a: &str, b: &str) -> usize {
    let (sa, sb): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), b.split('.').collect());
    sa.iter()
        .rev()
        .zip(sb.iter().rev())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x.len() + 1)
        .sum()
}

/// Length of the longest common prefix made of whole dotted segments (the last segment, the
/// tensor's own name, excluded).
fn segment_prefix(a: &str, b: &str) -> usize {
    let (sa, sb): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), b.split('.').collect());
    let n = sa.len().min(sb.len()).saturating_sub(1);
    sa[..n]
        .iter()
        .zip(&sb[..n])
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x.len() + 1)
        .sum()
}

/// Up to three of `present` closest to `wanted`, best first.
pub(crate) fn closest<'a>(wanted: &str, present: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut scored: Vec<(usize, usize, usize, &str)> = present
        .map(|p| {
            let (suffix, prefix) = (segment_suffix(wanted, p), segment_prefix(wanted, p));
            (suffix, prefix, edit_distance(wanted, p), p)
        })
        .filter(|&(suffix, prefix, dist, _)| suffix + prefix > 0 || 3 * dist <= wanted.len())
        .collect();
    scored.sort_by(|x, y| (y.0, y.1, x.2, x.3).cmp(&(x.0, x.1, y.2, y.3)));
    scored
        .into_iter()
        .take(3)
        .map(|(_, _, _, p)| p.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_and_rankings() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
        let present = [
            "rnn.weight_ih_l0",
            "rnn.weight_hh_l0",
            "head.weight",
            "step",
        ];
        assert_eq!(
            closest("weight_ih_l0", present.into_iter())[0],
            "rnn.weight_ih_l0"
        );
        assert_eq!(
            closest("lstm.weight_hh_l0", present.into_iter())[0],
            "rnn.weight_hh_l0"
        );
        assert_eq!(closest("fc.weight", present.into_iter())[0], "head.weight");
        assert_eq!(closest("hed.weigth", present.into_iter())[0], "head.weight");
        assert!(closest("zzzzzz", present.into_iter()).is_empty());
        assert_eq!(closest("head.bias", present.into_iter())[0], "head.weight");
        let map = rename_prefixes(&[("rnn.", "lstm."), ("head.", "fc.")]);
        assert_eq!(map("rnn.weight_ih_l0"), "lstm.weight_ih_l0");
        assert_eq!(map("head.bias"), "fc.bias");
        assert_eq!(map("other"), "other");
        assert_eq!(
            rename_prefixes(&[("", "0.")])("weight_ih_l0"),
            "0.weight_ih_l0"
        );
    }
}
