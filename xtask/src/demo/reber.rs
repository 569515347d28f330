//! The embedded Reber grammar (Reber 1967; embedded form from Hochreiter & Schmidhuber 1997).
//!
//! Symbols `B T P S X V E`. A Reber string walks this graph from `B` to `E`:
//! ```text
//! 0 -B-> 1;  1 -T-> 2, 1 -P-> 3;  2 -S-> 2, 2 -X-> 4;  3 -T-> 3, 3 -V-> 5;
//! 4 -X-> 3, 4 -S-> 6;  5 -P-> 4, 5 -V-> 6;  6 -E-> end
//! ```
//! An embedded string is `B`, `T` or `P`, a Reber string, the same `T` or `P` again, `E`.
//! Predicting the second `T`/`P` needs the memory of the first across the whole inner string.

use nn_core::Rng;

/// The alphabet, in index order.
pub const SYMBOLS: [char; 7] = ['B', 'T', 'P', 'S', 'X', 'V', 'E'];
const B: usize = 0;
const T: usize = 1;
const P: usize = 2;
const E: usize = 6;

/// Transitions of the inner graph: `(state, symbol, next state)`.
const GRAPH: [(usize, usize, usize); 10] = [
    (1, 1, 2),
    (1, 2, 3),
    (2, 3, 2),
    (2, 4, 4),
    (3, 1, 3),
    (3, 5, 5),
    (4, 4, 3),
    (4, 3, 6),
    (5, 2, 4),
    (5, 5, 6),
];

/// One embedded Reber string as symbol indices.
pub fn generate(rng: &mut Rng) -> Vec<usize> {
    let outer = if rng.below(2) == 0 { T } else { P };
    let mut s = vec![B, outer, B];
    let mut state = 1;
    while state != 6 {
        let choices: Vec<&(usize, usize, usize)> =
            GRAPH.iter().filter(|(from, _, _)| *from == state).collect();
        let &(_, sym, next) = choices[rng.below(choices.len())];
        s.push(sym);
        state = next;
    }
    s.extend([E, outer, E]);
    s
}

/// For each position `i` but the last of an embedded string, the set (bit mask over symbols) of
/// symbols that may legally follow the prefix `s[..=i]`.
pub fn legal_next(s: &[usize]) -> Vec<u8> {
    let bit = |sym: usize| 1u8 << sym;
    let mut out = Vec::with_capacity(s.len().saturating_sub(1));
    let n = s.len();
    // Walk the inner graph alongside; positions: 0 B, 1 outer, 2 inner B, 3.. inner, n-3 inner E,
    // n-2 outer again, n-1 E.
    let mut state = 1;
    for i in 0..n - 1 {
        let mask = match i {
            0 => bit(T) | bit(P),
            1 => bit(B),
            _ if i == n - 3 => bit(s[1]),
            _ if i == n - 2 => bit(E),
            _ => {
                if i > 2 {
                    state = GRAPH
                        .iter()
                        .find(|(from, sym, _)| *from == state && *sym == s[i])
                        .map_or(6, |t| t.2);
                }
                if state == 6 {
                    bit(E)
                } else {
                    GRAPH
                        .iter()
                        .filter(|(from, _, _)| *from == state)
                        .fold(0, |m, (_, sym, _)| m | bit(*sym))
                }
            }
        };
        out.push(mask);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_follow_their_own_legal_sets() {
        let mut rng = Rng::seed_from(3);
        for _ in 0..200 {
            let s = generate(&mut rng);
            assert_eq!((s[0], s[2], s[s.len() - 1]), (B, B, E));
            assert_eq!(s[1], s[s.len() - 2]);
            let legal = legal_next(&s);
            assert_eq!(legal.len(), s.len() - 1);
            for i in 0..s.len() - 1 {
                assert!(legal[i] & (1 << s[i + 1]) != 0, "{s:?} at {i}");
            }
        }
    }

    #[test]
    fn shortest_string_by_hand() {
        // B T B T X S E T E: inner string B T X S E.
        let s = vec![B, T, B, 1, 4, 3, E, T, E];
        let legal = legal_next(&s);
        let b = |x: usize| 1u8 << x;
        assert_eq!(
            legal,
            vec![
                b(T) | b(P),
                b(B),
                b(T) | b(P),
                b(3) | b(4),
                b(4) | b(3),
                b(E),
                b(T),
                b(E)
            ]
        );
    }
}
