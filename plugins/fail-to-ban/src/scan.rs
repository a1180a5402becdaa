//! Case-insensitive search of a User-Agent for scanner names, without
//! allocating: every request with a User-Agent goes through it.
//!
//! At `init` the patterns are lower-cased and compiled into one automaton
//! (Aho-Corasick, as a DFA over byte classes): a search reads each byte of
//! the User-Agent once, one table look-up per byte, however many patterns
//! there are. ASCII letters match either case, like `to_ascii_lowercase` +
//! `contains`; other bytes match exactly.
//!
//! Before it, a filter: a pattern can only be there if its rarest byte
//! pair is. Each step of the DFA waits for the load of the step before; the
//! filter's loads do not depend on each other, so the processor overlaps
//! them, and an ordinary User-Agent (which has none of the pairs) costs a
//! fraction of a DFA pass.

/// No transition yet (only while building).
const NONE: u32 = u32::MAX;

/// Set in a transition that enters a matching state: the search tests the
/// value it already loaded instead of loading a per-state flag.
const MATCH: u32 = 1 << 31;

/// The scanner patterns, prepared for searching.
#[derive(Debug, Clone)]
pub struct Scanners {
    /// The patterns, ASCII-lower-cased, never empty.
    patterns: Vec<Box<[u8]>>,
    /// Byte classes: each byte that occurs in a pattern has its own (an
    /// ASCII letter shares its lower case's); every other byte is class 0.
    /// An array: indexing it with a byte needs no bounds check.
    class: [u16; 256],
    /// Classes in use, class 0 included: the width of a row of `next`.
    classes: usize,
    /// The DFA, by rows: after reading a byte of class `c` in the state
    /// whose row starts at `r`, the next state's row starts at
    /// `next[r + c] & !MATCH`, and [`MATCH`] is set if that state matches.
    /// State 0 (row 0) is the start.
    next: Vec<u32>,
    /// Per state: 1 + the index of a pattern that ends there; 0: none.
    matched: Vec<u32>,
    /// The filter: bit `a << 8 | b` is set when the byte pair `a b`
    /// (ASCII letters lower-cased) is the rarest pair of some pattern.
    /// None when a pattern is one byte long (it has no pair).
    pairs: Option<Box<[u64; 1024]>>,
}

/// ASCII letters by how common they are in text, most common first: a
/// pattern's filter pair is the one whose letters come last. Other bytes
/// (digits, punctuation: common in User-Agents) count as most common,
/// bytes of other scripts as rarest.
const LETTERS_BY_FREQUENCY: &[u8] = b"etaoinsrhldcupmfgywbvkxjqz";

fn rarity(b: u8) -> usize {
    match LETTERS_BY_FREQUENCY.iter().position(|&l| l == b) {
        Some(rank) => rank + 1,
        None if b.is_ascii() => 0,
        None => LETTERS_BY_FREQUENCY.len() + 1,
    }
}

/// The filter of `patterns` (lower-cased), if every one has a pair.
fn filter_pairs(patterns: &[Box<[u8]>]) -> Option<Box<[u64; 1024]>> {
    let mut bits = Box::new([0u64; 1024]);
    for pattern in patterns {
        let pair = pattern
            .windows(2)
            .max_by_key(|w| rarity(w[0]) + rarity(w[1]))?;
        let i = usize::from(pair[0]) << 8 | usize::from(pair[1]);
        bits[i >> 6] |= 1 << (i & 63);
    }
    Some(bits)
}

impl Default for Scanners {
    /// No patterns: nothing matches.
    fn default() -> Scanners {
        Scanners::new::<&str>(&[])
    }
}

impl Scanners {
    /// Prepares `patterns` (empty ones are skipped: the settings refuse
    /// them, since they would match everything).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Scanners {
        let patterns: Vec<Box<[u8]>> = patterns
            .iter()
            .map(|p| {
                p.as_ref()
                    .to_ascii_lowercase()
                    .into_bytes()
                    .into_boxed_slice()
            })
            .filter(|p| !p.is_empty())
            .collect();
        let mut class = [0u16; 256];
        let mut classes = 1;
        for &b in patterns.iter().flat_map(|p| p.iter()) {
            if class[usize::from(b)] == 0 {
                class[usize::from(b)] = classes as u16;
                classes += 1;
            }
        }
        for upper in b'A'..=b'Z' {
            class[usize::from(upper)] = class[usize::from(upper.to_ascii_lowercase())];
        }

        // The trie of the patterns: goto[state][class], NONE for no child.
        let mut goto: Vec<Vec<u32>> = vec![vec![NONE; classes]];
        let mut matched = vec![0u32];
        for (index, pattern) in patterns.iter().enumerate() {
            let mut state = 0;
            for &b in pattern.iter() {
                let c = usize::from(class[usize::from(b)]);
                if goto[state][c] == NONE {
                    goto[state][c] = goto.len() as u32;
                    goto.push(vec![NONE; classes]);
                    matched.push(0);
                }
                state = goto[state][c] as usize;
            }
            if matched[state] == 0 {
                matched[state] = index as u32 + 1;
            }
        }

        // Breadth first, so a state's failure state (shorter) is complete
        // before it: a missing transition becomes the failure state's, and
        // a state matches what its failure state matches.
        let mut fail = vec![0u32; goto.len()];
        let mut queue = std::collections::VecDeque::from([0u32]);
        while let Some(u) = queue.pop_front() {
            let u = u as usize;
            // Where the failure state goes on each class (the start state's
            // own failure transitions all lead back to it).
            let fallback = match u {
                0 => vec![0; classes],
                _ => goto[fail[u] as usize].clone(),
            };
            for (next, f) in goto[u].iter_mut().zip(fallback) {
                if *next == NONE {
                    *next = f;
                    continue;
                }
                let v = *next as usize;
                fail[v] = f;
                if matched[v] == 0 {
                    matched[v] = matched[f as usize];
                }
                queue.push_back(*next);
            }
        }
        let next = goto
            .into_iter()
            .flatten()
            .map(|state| {
                let row = state * classes as u32;
                if matched[state as usize] != 0 {
                    row | MATCH
                } else {
                    row
                }
            })
            .collect();
        Scanners {
            pairs: filter_pairs(&patterns),
            patterns,
            class,
            classes,
            next,
            matched,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The first pattern that `text` contains (lower-cased), if any.
    pub fn find(&self, text: &str) -> Option<&[u8]> {
        if self.patterns.is_empty() || !self.may_contain(text.as_bytes()) {
            return None;
        }
        let mut row = 0;
        for &b in text.as_bytes() {
            let to = self.next[row + usize::from(self.class[usize::from(b)])];
            if to & MATCH != 0 {
                let state = (to & !MATCH) as usize / self.classes;
                return Some(&self.patterns[self.matched[state] as usize - 1]);
            }
            row = to as usize;
        }
        None
    }

    /// False when `text` has none of the filter's pairs: no pattern is in it.
    fn may_contain(&self, text: &[u8]) -> bool {
        let Some(pairs) = &self.pairs else {
            return true;
        };
        let Some((&first, rest)) = text.split_first() else {
            return false;
        };
        let mut before = first.to_ascii_lowercase();
        let mut found = 0;
        for &b in rest {
            let b = b.to_ascii_lowercase();
            let i = usize::from(before) << 8 | usize::from(b);
            found |= pairs[i >> 6] >> (i & 63);
            before = b;
        }
        found & 1 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::DEFAULT_SCANNERS;

    /// The obvious way, which this must agree with.
    fn naive(patterns: &[&str], text: &str) -> bool {
        let text = text.to_ascii_lowercase();
        patterns
            .iter()
            .any(|p| text.contains(&p.to_ascii_lowercase()))
    }

    #[test]
    fn agrees_with_lowercase_and_contains() {
        let s = Scanners::new(DEFAULT_SCANNERS);
        for ua in [
            "friendly-scanner",
            "FRIENDLY-SCANNER",
            "Yealink SIP-T46U 108.86.0.20",
            "sipvicious/0.3.4",
            "x SIPcli/v1.8",
            "VaxSIPUserAgent/3.1",
            "iwar",
            "IWAR",
            "sundayddr",
            "smap 0.6",
            "sip-scan",
            "sip-sca",
            "Grandstream GXP2170 1.0.11.23",
            "Linphone/5.2 (belle-sip/5.2)",
            "",
            "s",
            "friendly-scanne",
            "ﬁriendly-scanner sipsak",
            "é sipsak é",
            "siPSaK",
        ] {
            assert_eq!(s.find(ua).is_some(), naive(DEFAULT_SCANNERS, ua), "{ua:?}");
        }
    }

    #[test]
    fn the_filter_passes_ordinary_user_agents_over_and_never_hides_a_match() {
        let s = Scanners::new(DEFAULT_SCANNERS);
        for ua in [
            "Yealink SIP-T46U 108.86.0.20",
            "Grandstream GXP2170 1.0.11.23",
            "Linphone/5.2 (belle-sip/5.2)",
            "Zoiper rv2.10.20.2",
        ] {
            assert!(!s.may_contain(ua.as_bytes()), "{ua} should skip the DFA");
        }
        for pattern in DEFAULT_SCANNERS {
            let ua = format!("x/{} 1.0", pattern.to_ascii_uppercase());
            assert!(s.may_contain(ua.as_bytes()), "{ua}");
            assert!(s.find(&ua).is_some(), "{ua}");
        }
        // A one-byte pattern has no pair: no filter, the DFA decides.
        let one = Scanners::new(&["sipsak", "%"]);
        assert!(one.pairs.is_none());
        assert_eq!(one.find("100%"), Some(&b"%"[..]));
    }

    #[test]
    fn finds_the_pattern_and_handles_shared_first_bytes() {
        let s = Scanners::new(&["SIPScan", "sipsak", "smap", "Ωmega"]);
        assert_eq!(s.find("my sipsak"), Some(&b"sipsak"[..]));
        assert_eq!(s.find("SIPSCAN!"), Some(&b"sipscan"[..]));
        assert_eq!(s.find("sipsa"), None);
        assert_eq!(s.find("the ωmega"), None, "ASCII case only, like before");
        assert_eq!(s.find("the Ωmega"), Some("Ωmega".as_bytes()));
        assert!(Scanners::new::<&str>(&[]).find("anything").is_none());
        assert!(Scanners::new(&[""]).is_empty());
    }

    #[test]
    fn overlapping_patterns_agree_with_contains() {
        // Patterns that are prefixes, suffixes and infixes of each other,
        // and texts over a small alphabet made by a fixed pseudo-random walk.
        let patterns = ["abcd", "bc", "bcx", "cd", "aab", "Ab", "dda"];
        let s = Scanners::new(&patterns);
        let mut seed = 12345u32;
        for _ in 0..5000 {
            let len = (seed % 9) as usize;
            let text: String = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    ['a', 'b', 'c', 'd', 'x', 'A', 'B'][(seed >> 16) as usize % 7]
                })
                .collect();
            assert_eq!(s.find(&text).is_some(), naive(&patterns, &text), "{text:?}");
        }
    }
}
