//! Case-insensitive search of a User-Agent for scanner names, without
//! allocating: every request with a User-Agent goes through it.
//!
//! At `init` the patterns are lower-cased and indexed by their first byte;
//! a search walks the User-Agent once and, at each byte that starts some
//! pattern, compares only the patterns starting with it (ASCII
//! case-insensitively, like `to_ascii_lowercase` + `contains`).

/// The scanner patterns, prepared for searching.
#[derive(Debug, Clone, Default)]
pub struct Scanners {
    /// The patterns, ASCII-lower-cased, never empty.
    patterns: Vec<Box<[u8]>>,
    /// For each byte value: 1 + the index into `starting` of the patterns
    /// that start with it (lower-cased); 0: none does.
    first: Vec<u8>,
    /// Pattern indices grouped by first byte.
    starting: Vec<Vec<usize>>,
}

impl Scanners {
    /// Prepares `patterns` (empty ones are skipped: the settings refuse
    /// them, since they would match everything).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Scanners {
        let mut s = Scanners {
            patterns: Vec::new(),
            first: vec![0; 256],
            starting: Vec::new(),
        };
        for pattern in patterns {
            let lower = pattern.as_ref().to_ascii_lowercase().into_bytes();
            let Some(&b) = lower.first() else { continue };
            let index = s.patterns.len();
            s.patterns.push(lower.into_boxed_slice());
            match s.first[usize::from(b)] {
                0 => {
                    s.starting.push(vec![index]);
                    // At most 256 groups: one per byte value.
                    s.first[usize::from(b)] = s.starting.len() as u8;
                }
                group => s.starting[usize::from(group) - 1].push(index),
            }
        }
        // More than 255 distinct first bytes cannot happen with u8 groups
        // (the 256th would wrap): ASCII-lower-casing leaves at most 230.
        s
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The first pattern (lower-cased) that `text` contains, ignoring ASCII
    /// case.
    pub fn find(&self, text: &str) -> Option<&[u8]> {
        if self.patterns.is_empty() {
            return None;
        }
        let hay = text.as_bytes();
        for (at, &b) in hay.iter().enumerate() {
            let group = self.first[usize::from(b.to_ascii_lowercase())];
            if group == 0 {
                continue;
            }
            let rest = &hay[at..];
            for &i in &self.starting[usize::from(group) - 1] {
                let p = &self.patterns[i];
                if rest.len() >= p.len() && rest[..p.len()].eq_ignore_ascii_case(p) {
                    return Some(p);
                }
            }
        }
        None
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
}
