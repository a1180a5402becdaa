//! SIP digest authentication (RFC 3261 section 22, with RFC 7616 digest and
//! the RFC 8760 algorithms), `qop=auth` only, MD5 and SHA-256.
//!
//! # Tour
//! - [`Authenticator`] is the one object the registrar holds. It issues
//!   challenges ([`Authenticator::challenge`]) and turns a request's
//!   credentials into a [`Verdict`] ([`Authenticator::verify`]). The
//!   gateway parses them and checks their nonce once per request
//!   ([`Authenticator::present`]): the plugins read the username and
//!   whether the source answered our challenge, then
//!   [`Authenticator::verify_presented`] decides.
//! - `credentials`: parses the Authorization / Proxy-Authorization value
//!   into [`Credentials`].
//! - `digest`: the hash arithmetic, and [`Secrets`], the precomputed HA1s
//!   stored per user so verification never needs the password.
//! - `nonce`: stateless nonces bound to the client's address (an HMAC under
//!   a per-process key), and the nonce-count table that stops replays. Its
//!   module docs explain the design.
//!
//! # What a verdict means for the caller
//! Only [`Verdict::Failed`] is a wrong guess worth counting towards a ban.
//! Challenge, Stale, Replayed and ForeignNonce all mean "send a new
//! challenge" (Stale with `stale=true`); Malformed means 400. A password is
//! only ever checked against a nonce that we issued to this same address and
//! that is still fresh, so guessing costs a round trip per attempt and cannot
//! be done with nonces seen on the wire elsewhere.

pub mod client;
mod credentials;
mod digest;
mod nonce;

pub use credentials::Credentials;
pub use digest::{Algorithm, Secrets};

use digest::ResponseInput;
use nonce::{NcStatus, NcTable, NonceKey};
use std::borrow::{Borrow, Cow};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// Why credentials could not be used. The `Display` texts are fixed ASCII
/// with no client input in them, so they are safe as a 400 reason phrase.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authorization scheme is not Digest")]
    NotDigest,
    #[error("malformed credentials: {0}")]
    Syntax(&'static str),
    #[error("missing {0} parameter")]
    MissingParam(&'static str),
    #[error("duplicate {0} parameter")]
    DuplicateParam(&'static str),
    #[error("unsupported digest algorithm")]
    UnsupportedAlgorithm,
    #[error("nc must be 8 hex digits counting from 00000001")]
    BadNonceCount,
    #[error("qop=auth required")]
    QopRequired,
    #[error("only qop=auth is supported")]
    UnsupportedQop,
    #[error("{0} is required with qop")]
    MissingWithQop(&'static str),
}

/// Outcome of checking a request's credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Credentials are right.
    Authenticated,
    /// No credentials for this realm: challenge. Not a failure.
    Challenge,
    /// The nonce was ours and valid, but has expired: challenge with
    /// stale=true (RFC 7616 section 3.3). Not a failure.
    Stale,
    /// The nonce count was not higher than one already accepted for this
    /// nonce (replay). Challenge again. Not a failure.
    Replayed,
    /// The nonce was not issued by us to this source address (forged, or
    /// copied from someone else's exchange). Challenge. Not a failure: we
    /// never checked a password.
    ForeignNonce,
    /// A real guess that was wrong: the nonce is ours, issued to this source,
    /// fresh, and the response is wrong OR the username is unknown. Counts as
    /// an auth failure.
    Failed(Failure),
    /// The header could not be parsed, or qop is not "auth", or nc/cnonce
    /// missing with qop: answer 400 with this reason. Not a failure.
    Malformed(String),
}

/// Why a [`Verdict::Failed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    WrongPassword,
    UnknownUser,
    /// The digest username is not the user the request claims to be.
    UserMismatch,
    /// The digest realm is not the tenant's realm.
    RealmMismatch,
}

/// Issues challenges and verifies digest credentials. Shared by all worker
/// threads (`Send + Sync`); the only lock is a shard of the nonce-count table.
pub struct Authenticator {
    nonces: NonceKey,
    lifetime_ms: u64,
    nc: NcTable,
    /// HA1 for unknown users, so that case costs the same hashing as a wrong
    /// password and timing does not reveal which usernames exist.
    dummy: Secrets,
    /// Algorithms accepted in answers: only those offered, so a client cannot
    /// downgrade to MD5 where the configuration offers SHA-256 alone.
    accepted: Vec<Algorithm>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("lifetime_ms", &self.lifetime_ms)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// `secret`: 32 random bytes (the server generates them at start; nonces
    /// from before a restart then fail as ForeignNonce, which only costs a new
    /// challenge). `nonce_lifetime`: after it a nonce is stale.
    pub fn new(secret: [u8; 32], nonce_lifetime: Duration) -> Authenticator {
        Authenticator {
            nonces: NonceKey::new(secret),
            lifetime_ms: u64::try_from(nonce_lifetime.as_millis()).unwrap_or(u64::MAX),
            nc: NcTable::new(nonce::DEFAULT_MAX_TRACKED),
            dummy: Secrets::new("", "", "sipfence-no-such-user"),
            accepted: vec![Algorithm::Sha256, Algorithm::Md5],
        }
    }

    /// Accepts answers only with these algorithms (default: both).
    pub fn accepting(mut self, algorithms: &[Algorithm]) -> Authenticator {
        self.accepted = algorithms.to_vec();
        self
    }

    /// Forgets nonce counts of expired nonces (call periodically).
    pub fn purge(&self, now_ms: u64) {
        self.nc.purge(now_ms, self.lifetime_ms);
    }

    /// Parses a request's Authorization (or Proxy-Authorization) value and
    /// checks its nonce against `source`, once: the plugins' view of the
    /// request and [`Authenticator::verify_presented`] both read the result.
    pub fn present<'a>(&self, header: &'a str, source: IpAddr) -> Presented<'a> {
        let parsed = credentials::parse_with_raw_nc(header);
        let issued = parsed
            .as_ref()
            .ok()
            .and_then(|(creds, _)| self.nonces.check(&creds.nonce, source));
        Presented { parsed, issued }
    }

    /// Caps how many nonces the replay table tracks (default 262144). When
    /// full, the oldest are forgotten and their clients re-challenged.
    pub fn with_max_tracked_nonces(mut self, max: usize) -> Authenticator {
        self.nc = NcTable::new(max);
        self
    }

    /// The challenge header values (for WWW-Authenticate or
    /// Proxy-Authenticate), one per algorithm in the order given: the
    /// configured order is the preference (RFC 8760 section 2.3: most
    /// preferred first; some clients only read the first challenge),
    /// each `Digest realm="R", nonce="N", algorithm=SHA-256, qop="auth"`, plus
    /// `, stale=TRUE` when `stale`. All share one nonce. `now_ms`:
    /// milliseconds since the UNIX epoch. An empty `algorithms` gives no
    /// values.
    pub fn challenge(
        &self,
        realm: &str,
        source: IpAddr,
        stale: bool,
        algorithms: &[Algorithm],
        now_ms: u64,
    ) -> Vec<String> {
        let mut offered: Vec<Algorithm> = Vec::with_capacity(2);
        for a in algorithms {
            if !offered.contains(a) {
                offered.push(*a);
            }
        }
        if offered.is_empty() {
            return Vec::new();
        }
        let nonce = self.nonces.issue(source, now_ms);
        let realm = quote(realm);
        let stale = if stale { ", stale=TRUE" } else { "" };
        offered
            .into_iter()
            .map(|a| {
                format!(
                    "Digest realm={realm}, nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{stale}",
                    a.as_str()
                )
            })
            .collect()
    }

    /// Checks one request's credentials. `header`: the Authorization (or
    /// Proxy-Authorization) value for `realm`, None if absent. `method`: the
    /// request method (for HA2). `expected_user`: the user the request claims
    /// (To user for REGISTER, From user for calls). `lookup(username)`: the
    /// user's Secrets in this realm, or None if unknown.
    ///
    /// Checks run from cheapest and least revealing to the password check, so
    /// the user table and the hashes are only reached with a fresh nonce we
    /// issued to this address. The nonce count is recorded only for a correct
    /// response: a wrong guess must not burn the legitimate client's next
    /// count, and a correct one must never be accepted twice.
    // The signature is the registrar's contract; a struct would only wrap it.
    #[allow(clippy::too_many_arguments)]
    pub fn verify<S: Borrow<Secrets>>(
        &self,
        header: Option<&str>,
        method: &str,
        realm: &str,
        expected_user: &str,
        source: IpAddr,
        now_ms: u64,
        lookup: impl FnOnce(&str) -> Option<S>,
    ) -> Verdict {
        let presented = header.map(|h| self.present(h, source));
        self.verify_presented(
            presented.as_ref(),
            method,
            realm,
            expected_user,
            now_ms,
            lookup,
        )
    }

    /// [`Authenticator::verify`] of credentials already
    /// [presented](Authenticator::present) (None: the request has none).
    pub fn verify_presented<S: Borrow<Secrets>>(
        &self,
        presented: Option<&Presented<'_>>,
        method: &str,
        realm: &str,
        expected_user: &str,
        now_ms: u64,
        lookup: impl FnOnce(&str) -> Option<S>,
    ) -> Verdict {
        let Some(presented) = presented else {
            return Verdict::Challenge;
        };
        let (creds, nc_raw) = match &presented.parsed {
            Ok(parsed) => parsed,
            Err(e) => return Verdict::Malformed(e.to_string()),
        };
        let q = match QopAuth::from(creds, nc_raw.as_deref()) {
            Ok(q) => q,
            Err(e) => return Verdict::Malformed(e.to_string()),
        };
        if !self.accepted.contains(&creds.algorithm) {
            return Verdict::Malformed("algorithm not offered".into());
        }
        let Some(issued) = &presented.issued else {
            return Verdict::ForeignNonce;
        };
        // Exact comparison: the realm is hashed into HA1, so any other
        // spelling could never verify anyway.
        if creds.realm != realm {
            return Verdict::Failed(Failure::RealmMismatch);
        }
        if creds.username != expected_user {
            return Verdict::Failed(Failure::UserMismatch);
        }
        if nonce::is_stale(issued.issued_ms, now_ms, self.lifetime_ms) {
            return Verdict::Stale;
        }
        match self.nc.check(issued, q.nc) {
            NcStatus::Fresh => {}
            NcStatus::Replayed => return Verdict::Replayed,
            NcStatus::Evicted => return Verdict::Stale,
        }

        let secrets = lookup(&creds.username);
        let ha1 = secrets
            .as_ref()
            .map_or(&self.dummy, Borrow::borrow)
            .ha1(creds.algorithm);
        let expected = digest::response(
            creds.algorithm,
            ha1,
            &ResponseInput {
                nonce: &creds.nonce,
                nc: q.nc_raw,
                cnonce: q.cnonce,
                qop: q.qop,
                method,
                uri: &creds.uri,
            },
        );
        let correct = digest::hex_eq_ct(&expected, &creds.response);
        if secrets.is_none() {
            return Verdict::Failed(Failure::UnknownUser);
        }
        if !correct {
            return Verdict::Failed(Failure::WrongPassword);
        }
        match self.nc.record(issued, q.nc, now_ms, self.lifetime_ms) {
            NcStatus::Fresh => Verdict::Authenticated,
            // Another thread accepted this count first.
            NcStatus::Replayed => Verdict::Replayed,
            NcStatus::Evicted => Verdict::Stale,
        }
    }
}

/// A request's digest credentials, parsed, with its nonce checked against
/// the request's source ([`Authenticator::present`]).
pub struct Presented<'a> {
    /// The credentials and `nc` as sent, or why they could not be parsed.
    parsed: Result<(Credentials<'a>, Option<Cow<'a, str>>), AuthError>,
    /// Some when the nonce is one this gateway issued to the source.
    issued: Option<nonce::Issued>,
}

impl Presented<'_> {
    /// The digest username, if the credentials parsed.
    pub fn username(&self) -> Option<&str> {
        self.parsed.as_ref().ok().map(|(creds, _)| &*creds.username)
    }

    /// True when the nonce was issued by this gateway to the request's
    /// source (expired or not): the source answered a challenge it
    /// received, so its address is not spoofed.
    pub fn answers_our_challenge(&self) -> bool {
        self.issued.is_some()
    }
}

/// The `qop=auth` fields, required since every challenge of ours offers qop
/// (RFC 7616 section 3.4 requires qop, cnonce and nc; RFC 8760 makes qop
/// required in SIP too). Without them there is no nonce count, hence no
/// replay protection within a nonce's lifetime.
struct QopAuth<'a> {
    qop: &'a str,
    nc: u32,
    nc_raw: &'a str,
    cnonce: &'a str,
}

impl<'a> QopAuth<'a> {
    fn from(c: &'a Credentials, nc_raw: Option<&'a str>) -> Result<QopAuth<'a>, AuthError> {
        let qop = c.qop.as_deref().ok_or(AuthError::QopRequired)?;
        if !qop.eq_ignore_ascii_case("auth") {
            return Err(AuthError::UnsupportedQop);
        }
        let (Some(nc), Some(nc_raw)) = (c.nc, nc_raw) else {
            return Err(AuthError::MissingWithQop("nc"));
        };
        // The count includes the current request, so it starts at 1.
        if nc == 0 {
            return Err(AuthError::BadNonceCount);
        }
        let cnonce = c
            .cnonce
            .as_deref()
            .ok_or(AuthError::MissingWithQop("cnonce"))?;
        Ok(QopAuth {
            qop,
            nc,
            nc_raw,
            cnonce,
        })
    }
}

/// A quoted-string (RFC 7230 section 3.2.6). Control characters are dropped
/// rather than escaped: CR or LF would split the header, and a realm holding
/// them is a configuration mistake that should fail closed (clients then
/// answer with a realm that does not match).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const REALM: &str = "sip.example.com";
    const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
    const SRC6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 3, 4, 5, 6));
    const T0: u64 = 1_700_000_000_000;
    const LIFETIME: Duration = Duration::from_secs(300);

    fn auth() -> Authenticator {
        Authenticator::new([42; 32], LIFETIME)
    }

    /// For verdicts that must come before the user is looked up.
    fn no_lookup(_: &str) -> Option<Secrets> {
        panic!("lookup must not run")
    }

    fn users(name: &str) -> Option<Secrets> {
        match name {
            "1001" => Some(Secrets::new("1001", REALM, "s3cret")),
            "1002" => Some(Secrets::new("1002", REALM, "other")),
            _ => None,
        }
    }

    /// The quoted value of `name` in a challenge we produced.
    fn param(challenge: &str, name: &str) -> String {
        let start = challenge.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        let len = challenge[start..].find('"').unwrap();
        challenge[start..start + len].to_owned()
    }

    struct Client<'a> {
        user: &'a str,
        realm: &'a str,
        password: &'a str,
        method: &'a str,
        uri: &'a str,
        algorithm: Algorithm,
    }

    impl Client<'_> {
        fn new(algorithm: Algorithm) -> Self {
            Client {
                user: "1001",
                realm: REALM,
                password: "s3cret",
                method: "REGISTER",
                uri: "sip:sip.example.com",
                algorithm,
            }
        }

        /// An Authorization value computed as a UA would.
        fn answer(&self, nonce: &str, nc: &str) -> String {
            let ha1 = Secrets::new(self.user, self.realm, self.password);
            let response = digest::response(
                self.algorithm,
                ha1.ha1(self.algorithm),
                &ResponseInput {
                    nonce,
                    nc,
                    cnonce: "deadbeef",
                    qop: "auth",
                    method: self.method,
                    uri: self.uri,
                },
            );
            format!(
                "Digest username=\"{}\", realm=\"{}\", nonce=\"{nonce}\", uri=\"{}\", \
                 response=\"{response}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"deadbeef\"",
                self.user,
                self.realm,
                self.uri,
                self.algorithm.as_str()
            )
        }
    }

    fn nonce_for(a: &Authenticator, src: IpAddr, now: u64) -> String {
        let ch = a.challenge(REALM, src, false, &[Algorithm::Sha256, Algorithm::Md5], now);
        param(&ch[0], "nonce")
    }

    fn verify(a: &Authenticator, header: &str, src: IpAddr, now: u64) -> Verdict {
        a.verify(Some(header), "REGISTER", REALM, "1001", src, now, users)
    }

    #[test]
    fn round_trip_both_algorithms() {
        let a = auth();
        for alg in [Algorithm::Sha256, Algorithm::Md5] {
            let ch = a.challenge(REALM, SRC, false, &[alg], T0);
            assert_eq!(ch.len(), 1);
            assert!(ch[0].contains(&format!("algorithm={}", alg.as_str())));
            let h = Client::new(alg).answer(&param(&ch[0], "nonce"), "00000001");
            assert_eq!(
                verify(&a, &h, SRC, T0 + 1000),
                Verdict::Authenticated,
                "{alg:?}"
            );
        }
    }

    #[test]
    fn round_trip_ipv6() {
        let a = auth();
        let h = Client::new(Algorithm::Sha256).answer(&nonce_for(&a, SRC6, T0), "00000001");
        assert_eq!(verify(&a, &h, SRC6, T0), Verdict::Authenticated);
    }

    #[test]
    fn md5_without_algorithm_param_and_upper_case_hex() {
        let a = auth();
        let nonce = nonce_for(&a, SRC, T0);
        let h = Client::new(Algorithm::Md5).answer(&nonce, "0000000A");
        let h = h.replace(", algorithm=MD5", "");
        // Upper-case response hex is the same digest.
        let start = h.find("response=\"").unwrap() + 10;
        let h = format!(
            "{}{}{}",
            &h[..start],
            h[start..start + 32].to_uppercase(),
            &h[start + 32..]
        );
        assert_eq!(verify(&a, &h, SRC, T0), Verdict::Authenticated);
    }

    #[test]
    fn wrong_password_does_not_burn_the_count() {
        let a = auth();
        let nonce = nonce_for(&a, SRC, T0);
        let bad = Client {
            password: "guess",
            ..Client::new(Algorithm::Sha256)
        };
        assert_eq!(
            verify(&a, &bad.answer(&nonce, "00000001"), SRC, T0),
            Verdict::Failed(Failure::WrongPassword)
        );
        let good = Client::new(Algorithm::Sha256).answer(&nonce, "00000001");
        assert_eq!(verify(&a, &good, SRC, T0), Verdict::Authenticated);
    }

    #[test]
    fn other_method_is_wrong_password() {
        let a = auth();
        let nonce = nonce_for(&a, SRC, T0);
        let h = Client {
            method: "INVITE",
            ..Client::new(Algorithm::Sha256)
        }
        .answer(&nonce, "00000001");
        assert_eq!(
            verify(&a, &h, SRC, T0),
            Verdict::Failed(Failure::WrongPassword)
        );
    }

    #[test]
    fn unknown_user() {
        let a = auth();
        let nonce = nonce_for(&a, SRC, T0);
        let h = Client {
            user: "9999",
            ..Client::new(Algorithm::Md5)
        }
        .answer(&nonce, "00000001");
        let mut asked = None;
        let v = a.verify(Some(&h), "REGISTER", REALM, "9999", SRC, T0, |u| {
            asked = Some(u.to_owned());
            None::<Secrets>
        });
        assert_eq!(v, Verdict::Failed(Failure::UnknownUser));
        assert_eq!(asked.as_deref(), Some("9999"));
    }

    #[test]
    fn user_mismatch_skips_lookup() {
        let a = auth();
        let nonce = nonce_for(&a, SRC, T0);
        // 1002 authenticates correctly, but claims to be 1001.
        let h = Client {
            user: "1002",
            password: "other",
            ..Client::new(Algorithm::Sha256)
        }
        .answer(&nonce, "00000001");
        let v = a.verify(Some(&h), "REGISTER", REALM, "1001", SRC, T0, no_lookup);
        assert_eq!(v, Verdict::Failed(Failure::UserMismatch));
    }

    #[test]
    fn realm_mismatch() {
        let a = auth();
        let nonce = nonce_for(&a, SRC, T0);
        let h = Client {
            realm: "other.example.com",
            ..Client::new(Algorithm::Sha256)
        }
        .answer(&nonce, "00000001");
        assert_eq!(
            verify(&a, &h, SRC, T0),
            Verdict::Failed(Failure::RealmMismatch)
        );
    }

    #[test]
    fn presented_credentials_say_who_and_whether_our_challenge_was_answered() {
        let a = auth();
        let h = Client::new(Algorithm::Md5).answer(&nonce_for(&a, SRC, T0), "00000001");
        let here = a.present(&h, SRC);
        assert_eq!(here.username(), Some("1001"));
        assert!(here.answers_our_challenge());
        let elsewhere = a.present(&h, SRC6);
        assert_eq!(elsewhere.username(), Some("1001"));
        assert!(!elsewhere.answers_our_challenge());
        let garbage = a.present("Digest username=", SRC);
        assert_eq!(
            (garbage.username(), garbage.answers_our_challenge()),
            (None, false)
        );
        // Verifying what was presented is verifying the header.
        let verdict =
            |p: &Presented<'_>| a.verify_presented(Some(p), "REGISTER", REALM, "1001", T0, users);
        assert_eq!(verdict(&elsewhere), Verdict::ForeignNonce);
        assert!(matches!(verdict(&garbage), Verdict::Malformed(_)));
        assert_eq!(verdict(&here), Verdict::Authenticated);
        // Presented again, the same count is a replay.
        assert_eq!(verdict(&a.present(&h, SRC)), Verdict::Replayed);
    }

    #[test]
    fn nonce_from_another_source() {
        let a = auth();
        let other4 = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 8));
        let other6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 3, 4, 5, 7));
        let h4 = Client::new(Algorithm::Sha256).answer(&nonce_for(&a, SRC, T0), "00000001");
        assert_eq!(verify(&a, &h4, other4, T0), Verdict::ForeignNonce);
        assert_eq!(verify(&a, &h4, SRC6, T0), Verdict::ForeignNonce);
        let h6 = Client::new(Algorithm::Sha256).answer(&nonce_for(&a, SRC6, T0), "00000001");
        assert_eq!(verify(&a, &h6, other6, T0), Verdict::ForeignNonce);
        assert_eq!(verify(&a, &h6, SRC, T0), Verdict::ForeignNonce);
        // And still good from where they were issued.
        assert_eq!(verify(&a, &h4, SRC, T0), Verdict::Authenticated);
        assert_eq!(verify(&a, &h6, SRC6, T0), Verdict::Authenticated);
    }

    #[test]
    fn tampered_and_made_up_nonces() {
        let a = auth();
        let nonce = nonce_for(&a, SRC, T0);
        let mut t = nonce.clone().into_bytes();
        t[3] = if t[3] == b'x' { b'y' } else { b'x' };
        let tampered = String::from_utf8(t).unwrap();
        for n in [tampered.as_str(), "dcd98b7102dd2f0e8b11d0f600bfb0c093", ""] {
            let h = Client::new(Algorithm::Sha256).answer(n, "00000001");
            assert_eq!(verify(&a, &h, SRC, T0), Verdict::ForeignNonce, "{n}");
        }
    }

    #[test]
    fn nonce_from_before_restart() {
        let old = auth();
        let h = Client::new(Algorithm::Sha256).answer(&nonce_for(&old, SRC, T0), "00000001");
        let restarted = Authenticator::new([43; 32], LIFETIME);
        assert_eq!(verify(&restarted, &h, SRC, T0), Verdict::ForeignNonce);
    }

    #[test]
    fn expiry() {
        let a = auth();
        let life = LIFETIME.as_millis() as u64;
        let h = Client::new(Algorithm::Sha256).answer(&nonce_for(&a, SRC, T0), "00000001");
        assert_eq!(verify(&a, &h, SRC, T0 + life + 1), Verdict::Stale);
        // A clock stepped far back also makes it stale.
        assert_eq!(verify(&a, &h, SRC, T0 - life - 1), Verdict::Stale);
        assert_eq!(verify(&a, &h, SRC, T0 + life), Verdict::Authenticated);
        let h2 = Client::new(Algorithm::Sha256).answer(&nonce_for(&a, SRC, T0), "00000002");
        // Stale wins over a replay: the client needs a new nonce either way.
        assert_eq!(verify(&a, &h2, SRC, T0 + life + 1), Verdict::Stale);
    }

    #[test]
    fn replay_and_increasing_counts() {
        let a = auth();
        let nonce = nonce_for(&a, SRC, T0);
        let c = Client::new(Algorithm::Sha256);
        assert_eq!(
            verify(&a, &c.answer(&nonce, "00000001"), SRC, T0),
            Verdict::Authenticated
        );
        assert_eq!(
            verify(&a, &c.answer(&nonce, "00000001"), SRC, T0),
            Verdict::Replayed
        );
        assert_eq!(
            verify(&a, &c.answer(&nonce, "00000002"), SRC, T0),
            Verdict::Authenticated
        );
        assert_eq!(
            verify(&a, &c.answer(&nonce, "00000005"), SRC, T0),
            Verdict::Authenticated
        );
        assert_eq!(
            verify(&a, &c.answer(&nonce, "00000004"), SRC, T0),
            Verdict::Replayed
        );
        assert_eq!(
            verify(&a, &c.answer(&nonce, "ffffffff"), SRC, T0),
            Verdict::Authenticated
        );
        assert_eq!(
            verify(&a, &c.answer(&nonce, "FFFFFFFF"), SRC, T0),
            Verdict::Replayed
        );
        // A replay is refused before the password is looked at.
        let bad = Client {
            password: "guess",
            ..Client::new(Algorithm::Sha256)
        };
        assert_eq!(
            verify(&a, &bad.answer(&nonce, "00000001"), SRC, T0),
            Verdict::Replayed
        );
    }

    #[test]
    fn concurrent_copies_accepted_once() {
        let a = auth();
        let h = Client::new(Algorithm::Md5).answer(&nonce_for(&a, SRC, T0), "00000001");
        let verdicts: Vec<Verdict> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| verify(&a, &h, SRC, T0)))
                .collect();
            handles.into_iter().map(|j| j.join().unwrap()).collect()
        });
        let ok = verdicts
            .iter()
            .filter(|v| **v == Verdict::Authenticated)
            .count();
        assert_eq!(ok, 1, "{verdicts:?}");
        assert!(verdicts
            .iter()
            .all(|v| matches!(v, Verdict::Authenticated | Verdict::Replayed)));
    }

    #[test]
    fn missing_header_challenges() {
        let a = auth();
        let v = a.verify(None, "REGISTER", REALM, "1001", SRC, T0, no_lookup);
        assert_eq!(v, Verdict::Challenge);
    }

    #[test]
    fn malformed() {
        let a = auth();
        let nonce = nonce_for(&a, SRC, T0);
        let good = Client::new(Algorithm::Sha256).answer(&nonce, "00000001");
        let cases = [
            ("garbage".to_owned(), None),
            ("Digest ,,, \"".to_owned(), None),
            ("Basic dXNlcjpwYXNz".to_owned(), None),
            (good.replace(", qop=auth", ""), Some("qop=auth required")),
            (
                good.replace("qop=auth", "qop=auth-int"),
                Some("only qop=auth is supported"),
            ),
            (
                good.replace(", nc=00000001", ""),
                Some("nc is required with qop"),
            ),
            (
                good.replace(", cnonce=\"deadbeef\"", ""),
                Some("cnonce is required with qop"),
            ),
            (good.replace("nc=00000001", "nc=00000000"), None),
            (good.replace("nc=00000001", "nc=1"), None),
            (
                good.replace("algorithm=SHA-256", "algorithm=SHA-512-256"),
                None,
            ),
        ];
        for (h, reason) in cases {
            let v = a.verify(Some(&h), "REGISTER", REALM, "1001", SRC, T0, no_lookup);
            let Verdict::Malformed(got) = &v else {
                panic!("{h}: {v:?}");
            };
            if let Some(reason) = reason {
                assert_eq!(got, reason);
            }
            assert!(got.bytes().all(|b| (0x20..0x7f).contains(&b)));
        }
    }

    #[test]
    fn check_order() {
        let a = auth();
        let nonce = nonce_for(&a, SRC, T0);
        let life = LIFETIME.as_millis() as u64;
        let wrong_user = Client {
            user: "1002",
            password: "other",
            ..Client::new(Algorithm::Sha256)
        }
        .answer(&nonce, "00000001");
        // Foreign before user mismatch, user mismatch before stale.
        assert_eq!(verify(&a, &wrong_user, SRC6, T0), Verdict::ForeignNonce);
        assert_eq!(
            verify(&a, &wrong_user, SRC, T0 + life + 1),
            Verdict::Failed(Failure::UserMismatch)
        );
        // Malformed before foreign.
        let h = wrong_user.replace(", qop=auth", "");
        assert!(matches!(verify(&a, &h, SRC6, T0), Verdict::Malformed(_)));
    }

    #[test]
    fn answers_with_an_algorithm_not_offered_are_refused() {
        let a = auth().accepting(&[Algorithm::Sha256]);
        let ch = a.challenge(REALM, SRC, false, &[Algorithm::Sha256], T0);
        assert_eq!(ch.len(), 1);
        let nonce = param(&ch[0], "nonce");
        let md5 = format!(
            "Digest username=\"alice\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"sip:x\", \
             response=\"00\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"c\""
        );
        assert_eq!(
            verify(&a, &md5, SRC, T0),
            Verdict::Malformed("algorithm not offered".into())
        );
    }

    #[test]
    fn challenge_format() {
        let a = auth();
        // The configured order is the preference order.
        let ch = a.challenge(REALM, SRC, false, &[Algorithm::Sha256, Algorithm::Md5], T0);
        assert_eq!(ch.len(), 2);
        let md5_first = a.challenge(REALM, SRC, false, &[Algorithm::Md5, Algorithm::Sha256], T0);
        assert!(md5_first[0].contains("algorithm=MD5"));
        assert!(md5_first[1].contains("algorithm=SHA-256"));
        let nonce = param(&ch[0], "nonce");
        assert_eq!(nonce.len(), 43);
        assert_eq!(
            ch[0],
            format!("Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=SHA-256, qop=\"auth\"")
        );
        assert_eq!(
            ch[1],
            format!("Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=MD5, qop=\"auth\"")
        );

        let stale = a.challenge(REALM, SRC, true, &[Algorithm::Sha256, Algorithm::Md5], T0);
        assert_eq!(stale.len(), 2);
        for h in &stale {
            assert!(h.ends_with(", qop=\"auth\", stale=TRUE"), "{h}");
            assert_eq!(h.matches("stale").count(), 1);
        }
        assert!(stale[0].contains("algorithm=SHA-256"));
        assert_ne!(param(&stale[0], "nonce"), nonce);

        let md5_only = a.challenge(REALM, SRC, false, &[Algorithm::Md5, Algorithm::Md5], T0);
        assert_eq!(md5_only.len(), 1);
        assert!(md5_only[0].contains("algorithm=MD5"));
        assert!(a.challenge(REALM, SRC, false, &[], T0).is_empty());
    }

    #[test]
    fn challenge_realm_is_quoted() {
        let a = auth();
        let ch = a.challenge("a\"b\\c\r\nX-Evil: 1", SRC, false, &[Algorithm::Sha256], T0);
        assert!(
            ch[0].starts_with(r#"Digest realm="a\"b\\cX-Evil: 1", nonce=""#),
            "{}",
            ch[0]
        );
        assert!(!ch[0].contains('\r') && !ch[0].contains('\n'));
    }

    #[test]
    fn table_pressure_never_accepts_replays() {
        let a = auth().with_max_tracked_nonces(32);
        let c = Client::new(Algorithm::Sha256);
        let headers: Vec<String> = (0..200)
            .map(|i| c.answer(&nonce_for(&a, SRC, T0 + i), "00000001"))
            .collect();
        for h in &headers {
            assert_eq!(verify(&a, h, SRC, T0 + 200), Verdict::Authenticated);
        }
        for h in &headers {
            let v = verify(&a, h, SRC, T0 + 200);
            assert!(matches!(v, Verdict::Replayed | Verdict::Stale), "{v:?}");
        }
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Authenticator>();
    }

    #[test]
    fn parse_reexport() {
        let header = Client::new(Algorithm::Md5).answer("n", "00000001");
        let c = Credentials::parse(&header).unwrap();
        assert_eq!(c.username, "1001");
        assert_eq!(c.nc, Some(1));
    }
}
