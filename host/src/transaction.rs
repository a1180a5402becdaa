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
//! Expiry is driven by one sweeper task over a FIFO of deadlines instead of a
//! timer per transaction: every transaction of one kind lives equally long, so
//! the queue is already in deadline order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::sip::{Message, Method};
use crate::transport::{Outbound, Source};

/// Identifies a server transaction (RFC 3261 17.2.3).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// The top Via branch (or, for pre-RFC 3261 peers, Call-ID + CSeq + From tag).
    pub branch: String,
    /// The top Via sent-by, `host:port`.
    pub sent_by: String,
    /// INVITE for INVITE and ACK, else the request method.
    pub method: Method,
}

impl Key {
    /// The key of a request, or None if it lacks the headers needed.
    pub fn of(request: &Message) -> Option<Key> {
        let via = request.top_via().ok()?;
        let method = match request.method()? {
            Method::Ack => Method::Invite,
            m => m.clone(),
        };
        let sent_by = match via.port {
            Some(port) => format!("{}:{}", via.host, port),
            None => via.host.to_string(),
        };
        let branch = match via.branch() {
            // The magic cookie says the branch is unique (RFC 3261 8.1.1.7).
            Some(b) if b.starts_with("z9hG4bK") => b.to_owned(),
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
        Some(Key {
            branch,
            sent_by,
            method,
        })
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
}

#[derive(Debug)]
struct Entry {
    last_response: Option<Arc<[u8]>>,
    /// INVITE: a final response was sent and its ACK has arrived.
    confirmed: bool,
    /// Bumps on every new response, so a retransmission task can tell it is stale.
    generation: u64,
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
    entries: HashMap<Key, Entry, foldhash::fast::RandomState>,
    /// (deadline, key) of transactions that have finished, oldest first.
    expiry: VecDeque<(Instant, Key)>,
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

    pub fn timers(&self) -> Timers {
        self.timers
    }

    /// Matches a request against the table, creating a transaction if new.
    pub fn incoming(&self, key: &Key, is_ack: bool) -> Incoming {
        let mut table = self.table.lock().unwrap();
        match table.entries.get_mut(key) {
            Some(entry) if is_ack => {
                entry.confirmed = true;
                entry.generation += 1;
                Incoming::AckAbsorbed
            }
            Some(entry) => Incoming::Retransmission(entry.last_response.clone()),
            None if is_ack => Incoming::StrayAck,
            None => {
                table.entries.insert(
                    key.clone(),
                    Entry {
                        last_response: None,
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
        out.send(to, response.clone());
        let is_final = code >= 200;
        let reliable = to.transport.is_reliable();
        let generation = {
            let mut table = self.table.lock().unwrap();
            let Some(entry) = table.entries.get_mut(key) else {
                return;
            };
            entry.last_response = Some(response.clone());
            entry.generation += 1;
            let generation = entry.generation;
            if is_final {
                let linger = match (&key.method, reliable) {
                    // Timer J: 64*T1 on UDP, 0 on TCP.
                    (m, false) if *m != Method::Invite => 64 * self.timers.t1,
                    (m, true) if *m != Method::Invite => Duration::ZERO,
                    // INVITE: Timer H bounds the wait for the ACK; then Timer I (T4)
                    // would absorb ACK retransmissions. One deadline covers both.
                    (_, false) => 64 * self.timers.t1 + self.timers.t4,
                    (_, true) => 64 * self.timers.t1,
                };
                if linger.is_zero() {
                    table.entries.remove(key);
                } else {
                    table
                        .expiry
                        .push_back((Instant::now() + linger, key.clone()));
                }
            }
            generation
        };
        if is_final && key.method == Method::Invite && !reliable && !(200..300).contains(&code) {
            self.spawn_retransmitter(key.clone(), response, generation, *to, out.clone());
        }
    }

    /// Ends a transaction without any response (a plugin dropped the
    /// request): it lingers like a finished one, so retransmissions are
    /// absorbed silently instead of running the plugins again.
    pub fn finish_silently(&self, key: &Key, reliable: bool) {
        let mut table = self.table.lock().unwrap();
        if reliable {
            table.entries.remove(key);
        } else {
            let deadline = Instant::now() + 64 * self.timers.t1;
            table.expiry.push_back((deadline, key.clone()));
        }
    }

    /// Timer G: retransmit the final response until ACK, generation change or Timer H.
    fn spawn_retransmitter(
        self: &Arc<Self>,
        key: Key,
        response: Arc<[u8]>,
        generation: u64,
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
                    matches!(table.entries.get(&key),
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
        let mut removed = 0;
        while let Some((deadline, _)) = table.expiry.front() {
            if *deadline > now {
                break;
            }
            let (_, key) = table.expiry.pop_front().expect("front exists");
            if table.entries.remove(&key).is_some() {
                removed += 1;
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
        self.table.lock().unwrap().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
