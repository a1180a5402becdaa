//! The digest arithmetic: HA1, HA2 and the `qop=auth` response (RFC 7616
//! sections 3.4.1 to 3.4.3), for MD5 and SHA-256 (the algorithms RFC 8760
//! section 2.1 brings to SIP). The `-sess` variants and `auth-int` are not
//! offered, so they are not computed.

use md5::Md5;
use sha2::{Digest, Sha256};
use std::fmt;

/// A digest algorithm from the IANA "HTTP Digest Algorithm Values" registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// The token as it appears in `algorithm=` (RFC 7616 section 3.3).
    pub fn as_str(&self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// Case-insensitive, as RFC 7616 section 3.3 defines the token. A
    /// missing `algorithm` parameter means MD5; the credentials parser
    /// handles that, since an empty string is not an algorithm.
    pub fn parse(s: &str) -> Option<Algorithm> {
        if s.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }
}

/// Precomputed HA1 = H(username ":" realm ":" password), hex, for both
/// algorithms, so verifying costs one or two hashes and the password itself
/// is not needed per request.
///
/// HA1 is password-equivalent for this realm (anyone holding it can answer
/// any challenge), so `Debug` does not print it.
#[derive(Clone)]
pub struct Secrets {
    pub md5: String,
    pub sha256: String,
}

impl Secrets {
    /// HA1 for both algorithms (RFC 7616 section 3.4.2, non-`-sess` form).
    pub fn new(username: &str, realm: &str, password: &str) -> Secrets {
        Secrets {
            md5: hash_hex(Algorithm::Md5, &[username, realm, password]),
            sha256: hash_hex(Algorithm::Sha256, &[username, realm, password]),
        }
    }

    /// The HA1 for `algorithm`.
    pub(crate) fn ha1(&self, algorithm: Algorithm) -> &str {
        match algorithm {
            Algorithm::Md5 => &self.md5,
            Algorithm::Sha256 => &self.sha256,
        }
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("md5", &"<redacted>")
            .field("sha256", &"<redacted>")
            .finish()
    }
}

/// H(p1 ":" p2 ":" ...) in lowercase hex (RFC 7616 section 3.2 / RFC 8760
/// section 2.2: lowercase hex digits).
pub(crate) fn hash_hex(algorithm: Algorithm, parts: &[&str]) -> String {
    fn run<D: Digest>(parts: &[&str]) -> String {
        let mut h = D::new();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                h.update(b":");
            }
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }
    match algorithm {
        Algorithm::Md5 => run::<Md5>(parts),
        Algorithm::Sha256 => run::<Sha256>(parts),
    }
}

/// The inputs of a `qop=auth` response besides HA1. `nc` is the nonce count
/// exactly as the client sent it, since the client hashed its own spelling.
pub(crate) struct ResponseInput<'a> {
    pub nonce: &'a str,
    pub nc: &'a str,
    pub cnonce: &'a str,
    pub qop: &'a str,
    pub method: &'a str,
    pub uri: &'a str,
}

/// response = H(HA1 ":" nonce ":" nc ":" cnonce ":" qop ":" H(method ":" uri))
/// (RFC 7616 section 3.4.1, A2 from section 3.4.3 for qop=auth).
pub(crate) fn response(algorithm: Algorithm, ha1: &str, input: &ResponseInput<'_>) -> String {
    let ha2 = hash_hex(algorithm, &[input.method, input.uri]);
    hash_hex(
        algorithm,
        &[ha1, input.nonce, input.nc, input.cnonce, input.qop, &ha2],
    )
}

/// Compares our lowercase hex digest with the client's, ignoring ASCII case,
/// in time that depends only on the lengths: an early exit would let a client
/// learn the expected response byte by byte. Lengths are public (they follow
/// from the algorithm).
pub(crate) fn hex_eq_ct(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | (x ^ y.to_ascii_lowercase()));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 section 3.5, the published MD5 qop=auth example.
    #[test]
    fn rfc2617_md5_example() {
        let secrets = Secrets::new("Mufasa", "testrealm@host.com", "Circle Of Life");
        let got = response(
            Algorithm::Md5,
            secrets.ha1(Algorithm::Md5),
            &ResponseInput {
                nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
                nc: "00000001",
                cnonce: "0a4f113b",
                qop: "auth",
                method: "GET",
                uri: "/dir/index.html",
            },
        );
        assert_eq!(got, "6629fae49393a05397450978507c4ef1");
    }

    /// RFC 7616 section 3.9.1, the published SHA-256 example.
    #[test]
    fn rfc7616_sha256_example() {
        let secrets = Secrets::new("Mufasa", "http-auth@example.org", "Circle of Life");
        let got = response(
            Algorithm::Sha256,
            secrets.ha1(Algorithm::Sha256),
            &ResponseInput {
                nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
                nc: "00000001",
                cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
                qop: "auth",
                method: "GET",
                uri: "/dir/index.html",
            },
        );
        assert_eq!(
            got,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    /// HA1 of the RFC 2617 example, worked out independently (md5sum of
    /// "Mufasa:testrealm@host.com:Circle Of Life").
    #[test]
    fn ha1_md5() {
        let s = Secrets::new("Mufasa", "testrealm@host.com", "Circle Of Life");
        assert_eq!(s.md5, "939e7578ed9e3c518a452acee763bce9");
        assert_eq!(s.sha256.len(), 64);
    }

    #[test]
    fn algorithm_names() {
        assert_eq!(Algorithm::parse("md5"), Some(Algorithm::Md5));
        assert_eq!(Algorithm::parse("MD5"), Some(Algorithm::Md5));
        assert_eq!(Algorithm::parse("sha-256"), Some(Algorithm::Sha256));
        assert_eq!(Algorithm::parse("SHA-256"), Some(Algorithm::Sha256));
        assert_eq!(Algorithm::parse("MD5-sess"), None);
        assert_eq!(Algorithm::parse("SHA-512-256"), None);
        assert_eq!(Algorithm::parse(""), None);
        assert_eq!(Algorithm::Md5.as_str(), "MD5");
        assert_eq!(Algorithm::Sha256.as_str(), "SHA-256");
    }

    #[test]
    fn hex_compare() {
        assert!(hex_eq_ct("00ff", "00ff"));
        assert!(hex_eq_ct("00ff", "00FF"));
        assert!(!hex_eq_ct("00ff", "00fe"));
        assert!(!hex_eq_ct("00ff", "00ff0"));
        assert!(!hex_eq_ct("00ff", ""));
    }

    #[test]
    fn debug_hides_ha1() {
        let s = Secrets::new("u", "r", "p");
        let shown = format!("{s:?}");
        assert!(!shown.contains(&s.md5));
        assert!(!shown.contains(&s.sha256));
    }
}
