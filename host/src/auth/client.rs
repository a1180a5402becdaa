//! The other side of digest: answering a challenge, as the gateway does
//! towards a trunk peer that asks who it is (RFC 3261 22.2, RFC 7616 3.4,
//! RFC 8760 for SHA-256).

use super::digest::{self, Algorithm, ResponseInput, Secrets};

/// The Authorization (or Proxy-Authorization) value answering `challenge`
/// (a WWW-Authenticate / Proxy-Authenticate value), or None when it is not
/// a digest challenge we can answer (unknown algorithm, no nonce, a qop
/// other than auth).
pub fn answer(
    challenge: &str,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
) -> Option<String> {
    let challenge = challenge.trim_start();
    let scheme_end = challenge.find(char::is_whitespace)?;
    if !challenge[..scheme_end].eq_ignore_ascii_case("Digest") {
        return None;
    }
    let mut realm = None;
    let mut nonce = None;
    let mut opaque = None;
    let mut algorithm = Algorithm::Md5;
    let mut qop_auth = false;
    for param in crate::sip::split_list(&challenge[scheme_end..]) {
        let (name, value) = param.split_once('=')?;
        let value = crate::sip::unquote(value.trim()).into_owned();
        match name.trim().to_ascii_lowercase().as_str() {
            "realm" => realm = Some(value),
            "nonce" => nonce = Some(value),
            "opaque" => opaque = Some(value),
            "algorithm" => algorithm = Algorithm::parse(&value)?,
            "qop" => {
                qop_auth = value
                    .split(',')
                    .any(|q| q.trim().eq_ignore_ascii_case("auth"))
            }
            _ => {}
        }
    }
    let (realm, nonce) = (realm?, nonce?);
    let ha1 = Secrets::new(username, &realm, password);
    let ha1 = ha1.ha1(algorithm);
    let nc = "00000001";
    let (response, qop_part) = if qop_auth {
        let input = ResponseInput {
            nonce: &nonce,
            nc,
            cnonce,
            qop: "auth",
            method,
            uri,
        };
        (
            digest::response(algorithm, ha1, &input),
            format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""),
        )
    } else {
        // RFC 2069 compatibility: no qop offered.
        let ha2 = digest::hash_hex(algorithm, &[method, uri]);
        (
            digest::hash_hex(algorithm, &[ha1, &nonce, &ha2]),
            String::new(),
        )
    };
    let opaque = opaque
        .map(|o| format!(", opaque=\"{o}\""))
        .unwrap_or_default();
    Some(format!(
        "Digest username=\"{username}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm={}{qop_part}{opaque}",
        algorithm.as_str()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Authenticator, Verdict};
    use std::time::Duration;

    /// What our own registrar offers, our own client answers, both algorithms.
    #[test]
    fn answers_our_own_challenges() {
        for algorithm in [Algorithm::Sha256, Algorithm::Md5] {
            let auth = Authenticator::new([3; 32], Duration::from_secs(60)).accepting(&[algorithm]);
            let ip = "127.0.0.1".parse().unwrap();
            let challenge =
                auth.challenge("peer.example", ip, false, &[algorithm], 1_000)[0].clone();
            let answer = answer(
                &challenge,
                "office1",
                "s3cret",
                "INVITE",
                "sip:201@127.0.2.1",
                "abc",
            )
            .expect("answerable");
            let verdict = auth.verify(
                Some(&answer),
                "INVITE",
                "peer.example",
                "office1",
                ip,
                1_001,
                |_| Some(Secrets::new("office1", "peer.example", "s3cret")),
            );
            assert!(
                matches!(verdict, Verdict::Authenticated),
                "{algorithm:?}: {verdict:?}"
            );
        }
    }

    #[test]
    fn unanswerable_challenges() {
        for challenge in [
            "Basic realm=\"x\"",
            "Digest realm=\"x\"",
            "Digest realm=\"x\", nonce=\"n\", algorithm=SHA-512-256",
        ] {
            assert!(
                answer(challenge, "u", "p", "INVITE", "sip:x", "c").is_none(),
                "{challenge}"
            );
        }
    }
}
