//! Choosing the response a forked request answers with when no branch
//! answered 2xx (RFC 3261 16.7 step 6).

/// Rank of a final non-2xx response; lower is better.
///
/// - A 6xx ends the search and wins (16.7 step 5).
/// - Otherwise the lowest class wins: a redirect (3xx) says more than a
///   failure (4xx), a client failure more than a server failure (5xx).
/// - Within 4xx, answers the caller can act on come first (401, 407, 415,
///   420, 484, as 16.7 asks), then "busy" (the caller learns someone is
///   there), then the rest, and last the "nobody answered" kinds (408, 480),
///   which a timed-out branch produces itself.
fn rank(code: u16) -> (u8, u8) {
    let class = match code / 100 {
        6 => 0,
        3 => 1,
        4 => 2,
        _ => 3,
    };
    let within = match code {
        401 | 407 | 415 | 420 | 484 => 0,
        486 | 600 => 1,
        408 | 480 => 3,
        _ => 2,
    };
    (class, within)
}

/// Whether `new` should replace `current` as the best response (ties keep
/// the first received).
pub fn better(new: u16, current: Option<u16>) -> bool {
    match current {
        None => true,
        Some(current) => rank(new) < rank(current),
    }
}

/// The status forwarded for a chosen response: 503 would tell the caller the
/// gateway itself is overloaded, so it becomes 500 (16.7 step 6).
pub fn forwarded_code(code: u16) -> u16 {
    if code == 503 {
        500
    } else {
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn best(codes: &[u16]) -> u16 {
        let mut current = None;
        for &code in codes {
            if better(code, current) {
                current = Some(code);
            }
        }
        current.unwrap()
    }

    #[test]
    fn six_hundreds_win_over_everything() {
        assert_eq!(best(&[486, 302, 603, 404]), 603);
    }

    #[test]
    fn lowest_class_wins() {
        assert_eq!(best(&[503, 404]), 404);
        assert_eq!(best(&[404, 302]), 302);
    }

    #[test]
    fn within_4xx_challenges_then_busy_then_the_rest_then_timeouts() {
        assert_eq!(best(&[480, 404, 486, 407]), 407);
        assert_eq!(best(&[480, 404, 486]), 486);
        assert_eq!(best(&[408, 480, 404]), 404);
        assert_eq!(best(&[480, 408]), 480);
    }

    #[test]
    fn ties_keep_the_first_and_503_becomes_500() {
        assert_eq!(best(&[404, 403]), 404);
        assert_eq!(forwarded_code(503), 500);
        assert_eq!(forwarded_code(486), 486);
    }
}
