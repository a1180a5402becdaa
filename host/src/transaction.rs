//! RFC 3261 section 17.2 server transactions.
//!
//! A request is matched to a transaction by its top Via branch, sent-by and
//! method (17.2.3; ACK matches its INVITE). A retransmitted request is
//! answered with the last response from the transaction, without running the
//! work again. Final responses to INVITE are retransmitted over UDP with
//! Timer G (T1 doubling up to T2) until the ACK arrives or Timer H (64*T1)
//! fires (17.2.1). Non-INVITE transactions linger for Timer J (64*T1 over UDP,
//! zero over TCP) to absorb retransmissions (17.2.2).
//!
//! Expiry is driven by one sweeper task over FIFOs of deadlines instead of a
//! timer per transaction: every transaction of one kind lives equally long, so
//! each kind's queue is already in deadline order.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::sip::uri::{Host, Ipv4Text};
use crate::sip::{Message, Method};
use crate::transport::{Outbound, Source};

/// Identifies a server transaction (RFC 3261 17.2.3).
///
/// The branch and the sent-by share one buffer: a key is built for every
/// request and kept by the table for Timer J, so one allocation (and one
/// cache line to compare) instead of two.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// The top Via branch (or, for pre-RFC 3261 peers, Call-ID + CSeq +
    /// From tag), then the top Via sent-by, `host:port`.
    text: Box<str>,
    /// Where the branch ends in `text`.
    branch_len: u32,
    /// INVITE for INVITE and ACK, else the request method.
    pub method: Method,
}

impl Key {
    #[cfg(test)]
    pub fn new(branch: &str, sent_by: &str, method: Method) -> Key {
        Key::joined(format!("{branch}{sent_by}"), branch.len(), method)
    }

    fn joined(text: String, branch_len: usize, method: Method) -> Key {
        Key {
            text: text.into_boxed_str(),
            // Messages are bounded far below 4 GB, so a branch always fits.
            branch_len: u32::try_from(branch_len).unwrap_or(u32::MAX),
            method,
        }
    }

    /// The same branch and sent-by with another method (a CANCEL names the
    /// INVITE it cancels this way, RFC 3261 9.2).
    pub fn with_method(&self, method: Method) -> Key {
        Key {
            method,
            ..self.clone()
        }
    }

    /// The top Via branch (or its pre-RFC 3261 stand-in).
    #[cfg(test)]
    pub fn branch(&self) -> &str {
        &self.text[..self.branch_len as usize]
    }

    /// The top Via sent-by, `host:port`.
    #[cfg(test)]
    pub fn sent_by(&self) -> &str {
        &self.text[self.branch_len as usize..]
    }

    /// The key of a request, or None if it lacks the headers needed. (The
    /// message path takes it from the top Via `mark_received` parsed.)
    #[cfg(test)]
    pub fn of(request: &Message) -> Option<Key> {
        Key::with_top_via(request, &request.top_via().ok()?)
    }

    /// The key of a request whose top Via is already parsed.
    pub fn with_top_via(request: &Message, via: &crate::sip::Via) -> Option<Key> {
        use std::fmt::Write;
        let method = match request.method()? {
            Method::Ack => Method::Invite,
            m => m.clone(),
        };
        let mut text = match via.branch() {
            // The magic cookie says the branch is unique (RFC 3261 8.1.1.7).
            Some(b) if b.starts_with("z9hG4bK") => {
                let mut text = String::with_capacity(b.len() + 48);
                text.push_str(b);
                text
            }
            _ => {
                let from_tag = request.from().ok().and_then(|f| f.tag().map(str::to_owned));
                let cseq = request.cseq().ok()?.seq;
                format!(
                    "rfc2543:{}:{}:{}",
                    request.call_id()?,
                    cseq,
                    from_tag.unwrap_or_default()
                )
            }
        };
        let branch_len = text.len();
        match &via.host {
            Host::Domain(name) => text.push_str(name),
            Host::Ip(IpAddr::V4(ip)) => text.push_str(Ipv4Text::new(*ip).as_str()),
            host => {
                let _ = write!(text, "{host}");
            }
        }
        if let Some(port) = via.port {
            let _ = write!(text, ":{port}");
        }
        Some(Key::joined(text, branch_len, method))
    }
}

/// What to do with an incoming request.
#[derive(Debug)]
pub enum Incoming {
    /// A new transaction: do the work, then call [`Transactions::respond`].
    New,
    /// A retransmission: send this response again (if one exists yet).
    Retransmission(Option<Arc<[u8]>>),
    /// The ACK of a non-2xx final response: absorbed by the transaction.
    AckAbsorbed,
    /// An ACK matching no transaction (the ACK for a 2xx, end to end).
    StrayAck,
}

/// RFC 3261 timer values.
#[derive(Clone, Copy, Debug)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
    /// Linger of finished non-INVITE transactions over UDP.
    pub j: Duration,
}

#[derive(Debug)]
struct Entry {
    last_response: Option<Arc<[u8]>>,
    /// Status of `last_response` (0 before any).
    last_code: u16,
    /// INVITE: a final response was sent and its ACK has arrived.
    confirmed: bool,
    /// Bumps on every new response, so a retransmission task can tell it is stale.
    generation: u32,
}

/// The server transaction table.
pub struct Transactions {
    timers: Timers,
    table: Mutex<Table>,
    /// Where retransmission timers run (responses may be sent from plain threads).
    runtime: tokio::runtime::Handle,
}

#[derive(Default)]
struct Table {
    /// foldhash: fast, and seeded per process, so chosen branches cannot
    /// force collisions.
    hasher: foldhash::fast::RandomState,
    /// Each slot keeps its key's hash, so growing the table and expiring a
    /// slot never hash a key again.
    slots: hashbrown::HashTable<Slot>,
    /// Finished transactions, one queue per linger time (non-INVITE,
    /// INVITE), so each queue is in deadline order. A queue names its slot by
    /// hash and serial: no copy of the key, and it can only ever remove the
    /// very transaction it was queued for.
    expiry: [VecDeque<Expiry>; 2],
    /// Serial of the next slot.
    next_serial: u64,
}

/// Names one transaction of the table for as long as it lives: its key's
/// hash, and a serial no later transaction with the same key shares.
#[derive(Clone, Copy)]
struct SlotId {
    hash: u64,
    serial: u64,
}

struct Slot {
    id: SlotId,
    key: Key,
    entry: Entry,
}

struct Expiry {
    deadline: Instant,
    id: SlotId,
}

impl Table {
    fn find_mut(&mut self, key: &Key) -> Option<&mut Slot> {
        let hash = self.hasher.hash_one(key);
        self.slots
            .find_mut(hash, |s| s.id.hash == hash && s.key == *key)
    }

    fn find(&self, key: &Key) -> Option<&Slot> {
        let hash = self.hasher.hash_one(key);
        self.slots
            .find(hash, |s| s.id.hash == hash && s.key == *key)
    }

    fn insert(&mut self, key: &Key, entry: Entry) {
        let hash = self.hasher.hash_one(key);
        let id = SlotId {
            hash,
            serial: self.next_serial,
        };
        self.next_serial += 1;
        let slot = Slot {
            id,
            key: key.clone(),
            entry,
        };
        self.slots.insert_unique(hash, slot, |s| s.id.hash);
    }

    /// Ends the transaction `id` now; false if it has already ended.
    fn remove(&mut self, id: SlotId) -> bool {
        match self.slots.find_entry(id.hash, |s| s.id.serial == id.serial) {
            Ok(found) => {
                found.remove();
                true
            }
            Err(_) => false,
        }
    }

    /// Queues the transaction `id` (of `method`) to end at `deadline`.
    fn expire(&mut self, id: SlotId, method: &Method, deadline: Instant) {
        self.expiry[queue(method)].push_back(Expiry { deadline, id });
    }

    /// Removes the transactions whose deadline has come; returns how many.
    fn remove_expired(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        for q in 0..self.expiry.len() {
            while let Some(expiry) = self.expiry[q].front().filter(|e| e.deadline <= now) {
                let id = expiry.id;
                self.expiry[q].pop_front();
                removed += usize::from(self.remove(id));
            }
        }
        removed
    }
}

/// Index into `Table::expiry`.
fn queue(method: &Method) -> usize {
    usize::from(*method == Method::Invite)
}

impl Transactions {
    /// Must be called within a tokio runtime, whose handle runs the timers.
    pub fn new(timers: Timers) -> Arc<Transactions> {
        Arc::new(Transactions {
            timers,
            table: Mutex::new(Table::default()),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Matches a request against the table, creating a transaction if new.
    pub fn incoming(&self, key: &Key, is_ack: bool) -> Incoming {
        let mut table = self.table.lock().unwrap();
        match table.find_mut(key).map(|slot| &mut slot.entry) {
            // The ACK of a 2xx is a request of its own, end to end (RFC 3261
            // 17.2.3): a UA that reuses the INVITE's branch must not have it
            // swallowed here.
            Some(entry) if is_ack && (200..300).contains(&entry.last_code) => Incoming::StrayAck,
            Some(entry) if is_ack => {
                entry.confirmed = true;
                entry.generation = entry.generation.wrapping_add(1);
                Incoming::AckAbsorbed
            }
            Some(entry) => Incoming::Retransmission(entry.last_response.clone()),
            None if is_ack => Incoming::StrayAck,
            None => {
                table.insert(
                    key,
                    Entry {
                        last_response: None,
                        last_code: 0,
                        confirmed: false,
                        generation: 0,
                    },
                );
                Incoming::New
            }
        }
    }

    /// Records and sends a response of the transaction. Final responses start
    /// the transaction's end: Timer J for non-INVITE, Timer G/H for INVITE
    /// over UDP.
    pub fn respond(
        self: &Arc<Self>,
        key: &Key,
        response: Arc<[u8]>,
        code: u16,
        to: &Source,
        out: &Outbound,
    ) {
        let is_final = code >= 200;
        let reliable = to.transport.is_reliable();
        let generation = {
            let mut table = self.table.lock().unwrap();
            let Some(slot) = table.find_mut(key) else {
                drop(table);
                out.send(to, response);
                return;
            };
            let id = slot.id;
            let entry = &mut slot.entry;
            entry.last_response = Some(response.clone());
            entry.last_code = code;
            entry.generation = entry.generation.wrapping_add(1);
            let generation = entry.generation;
            if is_final {
                let linger = match (&key.method, reliable) {
                    // Timer J on UDP (configurable, see config), 0 on TCP.
                    (m, false) if *m != Method::Invite => self.timers.j,
                    (m, true) if *m != Method::Invite => Duration::ZERO,
                    // INVITE: Timer H bounds the wait for the ACK; then Timer I (T4)
                    // would absorb ACK retransmissions. One deadline covers both.
                    (_, false) => 64 * self.timers.t1 + self.timers.t4,
                    (_, true) => 64 * self.timers.t1,
                };
                if linger.is_zero() {
                    table.remove(id);
                } else {
                    table.expire(id, &key.method, Instant::now() + linger);
                }
            }
            generation
        };
        // Recorded first, sent second: a retransmission that races the
        // answer must find it in the transaction.
        out.send(to, response.clone());
        // A challenge is not retransmitted by timer: the client's own INVITE
        // retransmissions get it again from the transaction. An unverified UDP
        // source can thus not turn one INVITE into eleven answers (Kamailio
        // challenges statelessly for the same reason).
        let challenge = matches!(code, 401 | 407);
        if is_final
            && key.method == Method::Invite
            && !reliable
            && !(200..300).contains(&code)
            && !challenge
        {
            self.spawn_retransmitter(key.clone(), response, generation, *to, out.clone());
        }
    }

    /// Ends a transaction without any response (a plugin dropped the
    /// request): it lingers like a finished one, so retransmissions are
    /// absorbed silently instead of running the plugins again.
    pub fn finish_silently(&self, key: &Key, reliable: bool) {
        let mut table = self.table.lock().unwrap();
        let Some(id) = table.find(key).map(|slot| slot.id) else {
            return;
        };
        if reliable {
            table.remove(id);
        } else {
            let deadline = Instant::now() + self.timers.j;
            table.expire(id, &key.method, deadline);
        }
    }

    /// Timer G: retransmit the final response until ACK, generation change or Timer H.
    fn spawn_retransmitter(
        self: &Arc<Self>,
        key: Key,
        response: Arc<[u8]>,
        generation: u32,
        to: Source,
        out: Outbound,
    ) {
        let this = self.clone();
        self.runtime.spawn(async move {
            let started = Instant::now();
            let mut interval = this.timers.t1;
            loop {
                tokio::time::sleep(interval).await;
                if started.elapsed() >= 64 * this.timers.t1 {
                    break; // Timer H: the ACK never came.
                }
                let still_waiting = {
                    let table = this.table.lock().unwrap();
                    matches!(table.find(&key).map(|slot| &slot.entry),
                        Some(e) if e.generation == generation && !e.confirmed)
                };
                if !still_waiting {
                    break;
                }
                out.send(&to, response.clone());
                interval = (interval * 2).min(this.timers.t2);
            }
        });
    }

    /// Removes finished transactions whose time is up; returns how many.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut table = self.table.lock().unwrap();
        let removed = table.remove_expired(now);
        // Give memory back after a burst: the table only ever grows otherwise.
        if table.slots.capacity() > 4096 && table.slots.len() < table.slots.capacity() / 4 {
            table.slots.shrink_to_fit(|s| s.id.hash);
            for expiry in &mut table.expiry {
                expiry.shrink_to_fit();
            }
        }
        removed
    }

    /// Runs [`Self::sweep`] every `period` until the returned task is dropped.
    pub fn spawn_sweeper(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                this.sweep();
            }
        })
    }

    pub fn len(&self) -> usize {
        self.table.lock().unwrap().slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    //! Timers run on tokio's paused clock: no sleeps, exact instants.
    use super::*;
    use crate::transport::{Route, Transport};
    use std::net::UdpSocket;

    const T1: Duration = Duration::from_millis(500);

    fn timers() -> Timers {
        Timers {
            t1: T1,
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            j: 64 * T1,
        }
    }

    fn key(method: Method) -> Key {
        Key::new("z9hG4bKtest", "127.0.0.1:5999", method)
    }

    /// A gateway-side socket and a peer socket that counts what arrives.
    fn sockets() -> (Outbound, Source, UdpSocket) {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_nonblocking(true).unwrap();
        let source = Source {
            addr: peer.local_addr().unwrap(),
            transport: Transport::Udp,
            via: Route::UdpSocket(0),
        };
        (Outbound::new(vec![Arc::new(server)]), source, peer)
    }

    fn drain(peer: &UdpSocket) -> usize {
        // Loopback delivery is immediate, but give the kernel a moment.
        std::thread::sleep(Duration::from_millis(5));
        let mut buf = [0u8; 64];
        let mut n = 0;
        while peer.recv_from(&mut buf).is_ok() {
            n += 1;
        }
        n
    }

    /// Advances the paused clock in small steps, letting timers fire (and
    /// first letting freshly spawned timer tasks start their clocks).
    async fn advance(by: Duration) {
        tokio::task::yield_now().await;
        let step = Duration::from_millis(10);
        let mut left = by;
        while !left.is_zero() {
            let d = step.min(left);
            tokio::time::advance(d).await;
            tokio::task::yield_now().await;
            left -= d;
        }
    }

    fn fresh() -> Entry {
        Entry {
            last_response: None,
            last_code: 0,
            confirmed: false,
            generation: 0,
        }
    }

    #[test]
    fn a_slot_is_small_and_a_key_is_one_allocation() {
        // The table holds every transaction of the last Timer J (5 s): at
        // 12,000 a second, the slot's size is most of its cache misses.
        assert!(
            std::mem::size_of::<Slot>() <= 88,
            "{}",
            std::mem::size_of::<Slot>()
        );
        let k = key(Method::Register);
        assert_eq!(k.branch(), "z9hG4bKtest");
        assert_eq!(k.sent_by(), "127.0.0.1:5999");
        assert_ne!(
            k,
            Key::new("z9hG4bKtest1", "27.0.0.1:5999", Method::Register)
        );
        assert_ne!(k, k.with_method(Method::Options));
    }

    #[tokio::test(start_paused = true)]
    async fn an_expiry_removes_only_the_transaction_it_was_queued_for() {
        let mut table = Table::default();
        let k = key(Method::Register);
        let other = Key::new("z9hG4bKother", "127.0.0.1:5999", Method::Register);
        let now = Instant::now();
        table.insert(&k, fresh());
        table.insert(&other, fresh());
        let first = table.find(&k).unwrap().id;
        table.expire(first, &k.method, now);
        // The transaction ends early (as over TCP) and one with the same key
        // starts again: the old expiry must not take the new one.
        assert!(table.remove(first));
        table.insert(&k, fresh());
        assert_eq!(table.remove_expired(now), 0);
        assert!(table.find(&k).is_some());
        // Its own expiry does take it, and nothing else.
        let second = table.find(&k).unwrap().id;
        table.expire(second, &k.method, now + Duration::from_millis(1));
        assert_eq!(table.remove_expired(now), 0, "not due yet");
        assert_eq!(table.remove_expired(now + Duration::from_millis(1)), 1);
        assert!(table.find(&k).is_none());
        assert!(table.find(&other).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn invite_final_response_is_retransmitted_with_timer_g_until_ack() {
        let tx = Transactions::new(timers());
        let (out, to, peer) = sockets();
        let k = key(Method::Invite);
        assert!(matches!(tx.incoming(&k, false), Incoming::New));
        tx.respond(&k, Arc::from(&b"SIP/2.0 486"[..]), 486, &to, &out);
        assert_eq!(drain(&peer), 1, "sent at once");
        // Timer G: T1, then 2*T1, 4*T1 ... (RFC 3261 17.2.1).
        advance(T1).await;
        assert_eq!(drain(&peer), 1, "first retransmission after T1");
        advance(2 * T1).await;
        assert_eq!(drain(&peer), 1, "second after 2*T1 more");
        advance(T1).await;
        assert_eq!(drain(&peer), 0, "nothing in between");
        advance(3 * T1).await;
        assert_eq!(drain(&peer), 1, "third after 4*T1");
        // The ACK ends the retransmissions.
        assert!(matches!(tx.incoming(&k, true), Incoming::AckAbsorbed));
        advance(Duration::from_secs(10)).await;
        assert_eq!(drain(&peer), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn timer_g_is_capped_at_t2_and_timer_h_gives_up() {
        let tx = Transactions::new(timers());
        let (out, to, peer) = sockets();
        let k = key(Method::Invite);
        tx.incoming(&k, false);
        tx.respond(&k, Arc::from(&b"SIP/2.0 486"[..]), 486, &to, &out);
        drain(&peer);
        // Retransmissions at 0.5, 1.5, 3.5, 7.5, then every 4 s (T2) until 32 s (Timer H).
        advance(64 * T1 + Duration::from_secs(1)).await;
        let sent = drain(&peer);
        assert_eq!(sent, 4 + 6, "0.5 1.5 3.5 7.5 11.5 15.5 19.5 23.5 27.5 31.5");
        advance(Duration::from_secs(10)).await;
        assert_eq!(drain(&peer), 0, "Timer H: no ACK came, give up");
    }

    #[tokio::test(start_paused = true)]
    async fn a_challenge_to_invite_is_not_retransmitted_by_timer() {
        let tx = Transactions::new(timers());
        let (out, to, peer) = sockets();
        let k = key(Method::Invite);
        tx.incoming(&k, false);
        tx.respond(&k, Arc::from(&b"SIP/2.0 407"[..]), 407, &to, &out);
        advance(Duration::from_secs(10)).await;
        assert_eq!(drain(&peer), 1, "sent once");
        // The INVITE's own retransmission gets it again.
        assert!(matches!(
            tx.incoming(&k, false),
            Incoming::Retransmission(Some(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_2xx_to_invite_and_non_invite_answers_are_not_retransmitted_by_timers() {
        let tx = Transactions::new(timers());
        let (out, to, peer) = sockets();
        let register = key(Method::Register);
        tx.incoming(&register, false);
        tx.respond(&register, Arc::from(&b"SIP/2.0 200"[..]), 200, &to, &out);
        advance(Duration::from_secs(5)).await;
        assert_eq!(drain(&peer), 1);
        // A retransmitted request gets the stored answer.
        match tx.incoming(&register, false) {
            Incoming::Retransmission(Some(bytes)) => assert_eq!(&bytes[..], b"SIP/2.0 200"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn timer_j_keeps_a_finished_transaction_for_64_t1_on_udp() {
        let tx = Transactions::new(timers());
        let (out, to, _peer) = sockets();
        let k = key(Method::Register);
        tx.incoming(&k, false);
        tx.respond(&k, Arc::from(&b"SIP/2.0 200"[..]), 200, &to, &out);
        advance(64 * T1 - Duration::from_millis(10)).await;
        assert_eq!(tx.sweep(), 0);
        assert_eq!(tx.len(), 1);
        advance(Duration::from_millis(20)).await;
        assert_eq!(tx.sweep(), 1);
        assert!(tx.is_empty());
        // Over TCP the transaction ends with its answer (Timer J = 0).
        let tcp = Source {
            transport: Transport::Tcp,
            ..to
        };
        tx.incoming(&k, false);
        tx.respond(&k, Arc::from(&b"x"[..]), 200, &tcp, &out);
        assert!(tx.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silently_dropped_request_absorbs_its_retransmissions() {
        let tx = Transactions::new(timers());
        let k = key(Method::Register);
        tx.incoming(&k, false);
        tx.finish_silently(&k, false);
        assert!(matches!(
            tx.incoming(&k, false),
            Incoming::Retransmission(None)
        ));
        advance(64 * T1 + Duration::from_millis(10)).await;
        tx.sweep();
        assert!(matches!(tx.incoming(&k, false), Incoming::New));
    }
}
