//! Client text (user names, User-Agents, addresses) made fit for keys, log
//! lines and reasons; durations for people.

/// Longest client text kept in a key or shown in a reason.
pub const MAX_SHOWN: usize = 64;

/// Client text made fit for a key: `%` and `/` escaped (so keys cannot
/// collide), cut to a bounded length (so a huge name costs little).
pub fn key_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_SHOWN));
    for c in truncate(s, MAX_SHOWN).chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out
}

/// Client text made fit for a log line or a ban reason: no control
/// characters, a bounded length.
pub fn shown(s: &str) -> String {
    let cut = truncate(s, MAX_SHOWN);
    let mut out: String = cut
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if cut.len() < s.len() {
        out.push('…');
    }
    out
}

/// A tenant for people: "(default)" for the default tenant.
pub fn shown_tenant(tenant: &str) -> String {
    if tenant.is_empty() {
        "(default)".into()
    } else {
        shown(tenant)
    }
}

/// At most `max` bytes of `s`, cut on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A duration for people: "60 s", "10 min", "24 h", "7 d".
pub fn human(ms: u64) -> String {
    if !ms.is_multiple_of(1000) {
        return format!("{ms} ms");
    }
    let s = ms / 1000;
    if s < 120 || !s.is_multiple_of(60) {
        return format!("{s} s");
    }
    let min = s / 60;
    if !min.is_multiple_of(60) {
        return format!("{min} min");
    }
    let h = min / 60;
    if h < 48 || !h.is_multiple_of(24) {
        return format!("{h} h");
    }
    format!("{} d", h / 24)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parts_cannot_collide_or_grow() {
        assert_eq!(key_part("a/b%"), "a%2Fb%25");
        assert_eq!(key_part(&"é".repeat(100)).len(), 64);
    }

    #[test]
    fn shown_text_is_safe_and_short() {
        assert_eq!(shown("a\r\nb"), "a??b");
        assert_eq!(shown(&"x".repeat(100)), format!("{}…", "x".repeat(64)));
        assert_eq!(shown_tenant(""), "(default)");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human(1_500), "1500 ms");
        assert_eq!(human(1_000), "1 s");
        assert_eq!(human(60_000), "60 s");
        assert_eq!(human(600_000), "10 min");
        assert_eq!(human(120_000), "2 min");
        assert_eq!(human(3_600_000), "1 h");
        assert_eq!(human(7_200_000), "2 h");
        assert_eq!(human(86_400_000), "24 h");
        assert_eq!(human(604_800_000), "7 d");
    }
}
