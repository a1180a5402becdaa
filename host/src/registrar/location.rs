//! The location service: the bindings of every address-of-record, in memory,
//! mirrored to the store. Sharded so worker threads rarely meet on one lock.
//!
//! Binding updates follow RFC 3261 10.3 steps 6–8, keyed per RFC 5626: a
//! binding is identified by `+sip.instance` (with `reg-id`) when the phone
//! sends it, else by its Contact URI.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::store::{StoredBinding, Write};
use crate::transport::Transport;

const SHARDS: usize = 64;

/// An address-of-record: an extension of a tenant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Aor {
    /// The tenant's domain, or "" for the default tenant.
    pub tenant: String,
    pub extension: String,
}

/// One registered contact of an extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The binding's identity when it differs from `contact` (instance / reg-id).
    pub instance_key: Option<Box<str>>,
    /// The Contact URI the phone asked to be reached at.
    pub contact: Box<str>,
    /// Where its REGISTER came from (for NATed phones, where it is reachable).
    pub source: SocketAddr,
    pub transport: Transport,
    pub call_id: Box<str>,
    pub cseq: u32,
    pub expires_at_ms: u64,
    /// When this binding was first created; the oldest is replaced when full.
    pub registered_at_ms: u64,
    /// Interned: many phones share one User-Agent string.
    pub user_agent: Option<Arc<str>>,
}

impl Binding {
    /// The identity of the binding within its AOR.
    pub fn key(&self) -> &str {
        self.instance_key.as_deref().unwrap_or(&self.contact)
    }

    pub fn to_stored(&self, aor: &Aor) -> StoredBinding {
        StoredBinding {
            tenant: aor.tenant.clone(),
            extension: aor.extension.clone(),
            key: self.key().to_owned(),
            contact: self.contact.to_string(),
            source: self.source.to_string(),
            transport: self.transport.as_str().to_owned(),
            call_id: self.call_id.to_string(),
            cseq: self.cseq,
            expires_at_ms: self.expires_at_ms,
            registered_at_ms: self.registered_at_ms,
            user_agent: self.user_agent.as_deref().map(str::to_owned),
        }
    }
}

/// One contact of a REGISTER request, already interpreted.
#[derive(Clone, Debug)]
pub struct ContactChange {
    /// Binding identity: instance/reg-id or the contact URI.
    pub key: String,
    pub contact: String,
    /// Seconds; 0 removes the binding.
    pub expires_s: u32,
}

/// What a REGISTER asks for.
#[derive(Clone, Debug)]
pub enum Change {
    /// Query only (no Contact).
    Fetch,
    /// `Contact: *` with `Expires: 0`.
    RemoveAll,
    Update(Vec<ContactChange>),
}

/// The request context a change comes with.
#[derive(Clone, Debug)]
pub struct Origin {
    pub call_id: String,
    pub cseq: u32,
    pub source: SocketAddr,
    pub transport: Transport,
    pub user_agent: Option<String>,
}

/// Why a change was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Same Call-ID with a CSeq not above the stored one (RFC 3261 10.3 step 7).
    OutOfOrder,
}

/// The outcome of an accepted change.
#[derive(Debug)]
pub struct Applied {
    /// The bindings now current, for the 200 OK.
    pub current: Vec<Binding>,
    /// What must be committed before answering.
    pub writes: Vec<Write>,
}

/// foldhash: AORs are inserted only for extensions of the config, so
/// nobody outside can choose colliding ones. Each map has its own seed,
/// not the shard picker's.
type Shard = HashMap<Aor, Vec<Binding>, foldhash::fast::RandomState>;

/// All bindings, sharded by AOR.
pub struct Location {
    picker: foldhash::fast::RandomState,
    shards: Vec<Mutex<Shard>>,
    user_agents: Mutex<HashSet<Arc<str>>>,
}

impl Default for Location {
    fn default() -> Self {
        Location {
            picker: foldhash::fast::RandomState::default(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            user_agents: Mutex::new(HashSet::new()),
        }
    }
}

impl Location {
    fn shard(&self, aor: &Aor) -> &Mutex<Shard> {
        &self.shards[(self.picker.hash_one(aor) as usize) % SHARDS]
    }

    fn intern(&self, ua: Option<String>) -> Option<Arc<str>> {
        let ua = ua?;
        let mut set = self.user_agents.lock().unwrap();
        if let Some(existing) = set.get(ua.as_str()) {
            return Some(existing.clone());
        }
        let arc: Arc<str> = ua.into();
        // Bound the table: an attacker varying User-Agents must not grow it forever.
        if set.len() < 10_000 {
            set.insert(arc.clone());
        }
        Some(arc)
    }

    /// Applies a REGISTER's change atomically for its AOR. The returned writes
    /// must be queued to the store before the lock order matters again, which
    /// the caller does right away (the store keeps queue order).
    pub fn apply(
        &self,
        aor: &Aor,
        change: &Change,
        origin: &Origin,
        max_contacts: usize,
        now_ms: u64,
    ) -> Result<Applied, Refused> {
        let user_agent = self.intern(origin.user_agent.clone());
        let mut shard = self.shard(aor).lock().unwrap();
        // The key is cloned only for a new AOR, and its list starts with
        // room for the one device most extensions have.
        if !shard.contains_key(aor) {
            shard.insert(aor.clone(), Vec::with_capacity(1));
        }
        let bindings = shard.get_mut(aor).expect("inserted above");
        bindings.retain(|b| b.expires_at_ms > now_ms);

        let stale = |b: &Binding| b.call_id.as_ref() == origin.call_id && origin.cseq <= b.cseq;
        let mut writes = Vec::new();
        match change {
            Change::Fetch => {}
            Change::RemoveAll => {
                if bindings.iter().any(stale) {
                    return Err(Refused::OutOfOrder);
                }
                for b in bindings.drain(..) {
                    writes.push(delete(aor, b.key()));
                }
            }
            Change::Update(contacts) => {
                if contacts
                    .iter()
                    .any(|c| bindings.iter().any(|b| b.key() == c.key && stale(b)))
                {
                    return Err(Refused::OutOfOrder);
                }
                for c in contacts {
                    let existing = bindings.iter().position(|b| b.key() == c.key);
                    if c.expires_s == 0 {
                        if let Some(i) = existing {
                            let b = bindings.remove(i);
                            writes.push(delete(aor, b.key()));
                        }
                        continue;
                    }
                    let binding = Binding {
                        instance_key: (c.key != c.contact).then(|| c.key.clone().into()),
                        contact: c.contact.clone().into(),
                        source: origin.source,
                        transport: origin.transport,
                        call_id: origin.call_id.clone().into(),
                        cseq: origin.cseq,
                        expires_at_ms: now_ms + u64::from(c.expires_s) * 1000,
                        registered_at_ms: existing
                            .map(|i| bindings[i].registered_at_ms)
                            .unwrap_or(now_ms),
                        user_agent: user_agent.clone(),
                    };
                    writes.push(Write::UpsertBinding(binding.to_stored(aor)));
                    match existing {
                        Some(i) => bindings[i] = binding,
                        None => bindings.push(binding),
                    }
                }
                // Full: the oldest bindings make room, never the new phone.
                while bindings.len() > max_contacts {
                    let oldest = bindings
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, b)| b.registered_at_ms)
                        .map(|(i, _)| i)
                        .expect("non-empty");
                    let b = bindings.remove(oldest);
                    writes.push(delete(aor, b.key()));
                }
            }
        }
        let current = bindings.clone();
        if bindings.is_empty() {
            shard.remove(aor);
        } else {
            // Most extensions have one device: keep no spare slots per AOR.
            bindings.shrink_to_fit();
        }
        Ok(Applied { current, writes })
    }

    /// Current bindings of an AOR.
    pub fn lookup(&self, aor: &Aor, now_ms: u64) -> Vec<Binding> {
        let shard = self.shard(aor).lock().unwrap();
        shard
            .get(aor)
            .map(|v| {
                v.iter()
                    .filter(|b| b.expires_at_ms > now_ms)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes the current binding `key` of `aor` (an operator's request, a
    /// phone that stopped answering pings) and returns it; the caller commits
    /// [`delete`] for it.
    pub fn remove(&self, aor: &Aor, key: &str, now_ms: u64) -> Option<Binding> {
        let mut shard = self.shard(aor).lock().unwrap();
        let bindings = shard.get_mut(aor)?;
        let index = bindings
            .iter()
            .position(|b| b.key() == key && b.expires_at_ms > now_ms)?;
        let removed = bindings.remove(index);
        if bindings.is_empty() {
            shard.remove(aor);
        }
        Some(removed)
    }

    /// How many bindings are current (for metrics).
    pub fn count(&self, now_ms: u64) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard.lock().unwrap();
                shard
                    .values()
                    .map(|v| v.iter().filter(|b| b.expires_at_ms > now_ms).count())
                    .sum::<usize>()
            })
            .sum()
    }

    /// Every current binding, for listings.
    pub fn all(&self, now_ms: u64) -> Vec<(Aor, Binding)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap();
            for (aor, bindings) in shard.iter() {
                for b in bindings.iter().filter(|b| b.expires_at_ms > now_ms) {
                    out.push((aor.clone(), b.clone()));
                }
            }
        }
        out.sort_by(|a, b| {
            (&a.0.tenant, &a.0.extension, a.1.registered_at_ms).cmp(&(
                &b.0.tenant,
                &b.0.extension,
                b.1.registered_at_ms,
            ))
        });
        out
    }

    /// Drops expired bindings from memory; returns how many.
    pub fn purge(&self, now_ms: u64) -> usize {
        let mut removed = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap();
            shard.retain(|_, bindings| {
                let before = bindings.len();
                bindings.retain(|b| b.expires_at_ms > now_ms);
                removed += before - bindings.len();
                !bindings.is_empty()
            });
        }
        removed
    }

    /// Restores bindings loaded from the store at start.
    pub fn restore(&self, stored: Vec<StoredBinding>) -> usize {
        let mut count = 0;
        for s in stored {
            let (Ok(source), Some(transport)) = (
                s.source.parse::<SocketAddr>(),
                match s.transport.as_str() {
                    "UDP" => Some(Transport::Udp),
                    "TCP" => Some(Transport::Tcp),
                    _ => None,
                },
            ) else {
                tracing::warn!(extension = %s.extension, key = %s.key, "skipping unreadable stored binding");
                continue;
            };
            let aor = Aor {
                tenant: s.tenant,
                extension: s.extension,
            };
            let binding = Binding {
                instance_key: (s.key != s.contact).then(|| s.key.into()),
                contact: s.contact.into(),
                source,
                transport,
                call_id: s.call_id.into(),
                cseq: s.cseq,
                expires_at_ms: s.expires_at_ms,
                registered_at_ms: s.registered_at_ms,
                user_agent: self.intern(s.user_agent),
            };
            self.shard(&aor)
                .lock()
                .unwrap()
                .entry(aor)
                .or_insert_with(|| Vec::with_capacity(1))
                .push(binding);
            count += 1;
        }
        // An extension with several devices grew its list by doubling.
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap();
            shard.values_mut().for_each(Vec::shrink_to_fit);
            shard.shrink_to_fit();
        }
        count
    }
}

/// The store write that deletes binding `key` of `aor`.
pub(crate) fn delete(aor: &Aor, key: &str) -> Write {
    Write::DeleteBinding {
        tenant: aor.tenant.clone(),
        extension: aor.extension.clone(),
        key: key.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aor(ext: &str) -> Aor {
        Aor {
            tenant: String::new(),
            extension: ext.into(),
        }
    }

    fn origin(call_id: &str, cseq: u32) -> Origin {
        Origin {
            call_id: call_id.into(),
            cseq,
            source: "127.0.0.1:5062".parse().unwrap(),
            transport: Transport::Udp,
            user_agent: Some("phone".into()),
        }
    }

    fn contact(uri: &str, expires_s: u32) -> ContactChange {
        ContactChange {
            key: uri.into(),
            contact: uri.into(),
            expires_s,
        }
    }

    #[test]
    fn several_devices_share_an_extension_and_the_oldest_makes_room() {
        let loc = Location::default();
        let a = aor("100");
        for (i, now) in [(1, 1000), (2, 2000), (3, 3000)] {
            let c = Change::Update(vec![contact(&format!("sip:100@127.0.0.{i}"), 60)]);
            loc.apply(&a, &c, &origin(&format!("call{i}"), 1), 3, now)
                .unwrap();
        }
        assert_eq!(loc.lookup(&a, 3000).len(), 3);
        let c = Change::Update(vec![contact("sip:100@127.0.0.4", 60)]);
        let applied = loc.apply(&a, &c, &origin("call4", 1), 3, 4000).unwrap();
        let contacts: Vec<_> = applied.current.iter().map(|b| &*b.contact).collect();
        assert_eq!(
            contacts,
            [
                "sip:100@127.0.0.2",
                "sip:100@127.0.0.3",
                "sip:100@127.0.0.4"
            ]
        );
        assert!(
            matches!(&applied.writes[1], Write::DeleteBinding { key, .. } if key == "sip:100@127.0.0.1")
        );
    }

    #[test]
    fn restored_bindings_keep_no_spare_slots() {
        let loc = Location::default();
        let stored = |ext: &str, uri: &str| StoredBinding {
            tenant: String::new(),
            extension: ext.into(),
            key: uri.into(),
            contact: uri.into(),
            source: "127.0.0.1:5062".into(),
            transport: "UDP".into(),
            call_id: format!("call-{uri}"),
            cseq: 1,
            expires_at_ms: 60_000,
            registered_at_ms: 1_000,
            user_agent: None,
        };
        let restored = loc.restore(vec![
            stored("100", "sip:100@127.0.0.1"),
            stored("101", "sip:101@127.0.0.1"),
            stored("101", "sip:101@127.0.0.2"),
            stored("101", "sip:101@127.0.0.3"),
        ]);
        assert_eq!(restored, 4);
        assert_eq!(loc.lookup(&aor("101"), 2_000).len(), 3);
        // Pushing grew each list to room for four: 100,000 restored bindings
        // took 670 bytes each of resident memory instead of 280.
        for (ext, devices) in [("100", 1), ("101", 3)] {
            let shard = loc.shard(&aor(ext)).lock().unwrap();
            assert_eq!(shard[&aor(ext)].capacity(), devices, "extension {ext}");
        }
    }

    #[test]
    fn same_call_id_needs_a_higher_cseq() {
        let loc = Location::default();
        let a = aor("100");
        let c = Change::Update(vec![contact("sip:100@127.0.0.1", 60)]);
        loc.apply(&a, &c, &origin("x", 5), 3, 0).unwrap();
        assert_eq!(
            loc.apply(&a, &c, &origin("x", 5), 3, 0).unwrap_err(),
            Refused::OutOfOrder
        );
        assert_eq!(
            loc.apply(&a, &c, &origin("x", 4), 3, 0).unwrap_err(),
            Refused::OutOfOrder
        );
        loc.apply(&a, &c, &origin("x", 6), 3, 0).unwrap();
        // Another Call-ID (a rebooted phone) may always update.
        loc.apply(&a, &c, &origin("y", 1), 3, 0).unwrap();
    }

    #[test]
    fn instance_keyed_binding_replaces_itself_when_the_contact_changes() {
        let loc = Location::default();
        let a = aor("100");
        let with_port = |port: u16| ContactChange {
            key: "<urn:uuid:1>;reg-id=1".into(),
            contact: format!("sip:100@127.0.0.1:{port}"),
            expires_s: 60,
        };
        loc.apply(
            &a,
            &Change::Update(vec![with_port(5000)]),
            &origin("x", 1),
            3,
            0,
        )
        .unwrap();
        let applied = loc
            .apply(
                &a,
                &Change::Update(vec![with_port(6000)]),
                &origin("x", 2),
                3,
                0,
            )
            .unwrap();
        assert_eq!(applied.current.len(), 1);
        assert_eq!(&*applied.current[0].contact, "sip:100@127.0.0.1:6000");
    }

    #[test]
    fn expires_zero_and_star_remove_and_expired_bindings_vanish() {
        let loc = Location::default();
        let a = aor("100");
        let c = Change::Update(vec![
            contact("sip:100@127.0.0.1", 60),
            contact("sip:100@127.0.0.2", 1),
        ]);
        loc.apply(&a, &c, &origin("x", 1), 3, 0).unwrap();
        assert_eq!(loc.lookup(&a, 1500).len(), 1);
        assert_eq!(loc.purge(1500), 1);
        let remove = Change::Update(vec![contact("sip:100@127.0.0.1", 0)]);
        let applied = loc.apply(&a, &remove, &origin("x", 2), 3, 2000).unwrap();
        assert!(applied.current.is_empty());
        loc.apply(&a, &c, &origin("x", 3), 3, 3000).unwrap();
        let applied = loc
            .apply(&a, &Change::RemoveAll, &origin("x", 4), 3, 3000)
            .unwrap();
        assert!(applied.current.is_empty());
        assert_eq!(applied.writes.len(), 2);
        assert!(loc.all(3000).is_empty());
    }

    #[test]
    fn tenants_never_share_bindings() {
        let loc = Location::default();
        let a = Aor {
            tenant: "a.example".into(),
            extension: "100".into(),
        };
        let b = Aor {
            tenant: "b.example".into(),
            extension: "100".into(),
        };
        let c = Change::Update(vec![contact("sip:100@127.0.0.1", 60)]);
        loc.apply(&a, &c, &origin("x", 1), 3, 0).unwrap();
        assert_eq!(loc.lookup(&a, 0).len(), 1);
        assert!(loc.lookup(&b, 0).is_empty());
    }
}
