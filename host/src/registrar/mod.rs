//! The registrar (RFC 3261 section 10.3): turns an authenticated REGISTER into
//! binding changes, commits them, and says what to answer.
//!
//! - [`location`]: the bindings in memory, and the binding update rules.
//!
//! The answer waits for the store's commit: a 200 OK means the binding
//! survives `kill -9`.

pub mod location;

use std::sync::Arc;

use crate::config::Registrar as RegistrarConfig;
use crate::sip::{Contact, Message};
use crate::store::{Store, Write};
use crate::transport::Source;
use location::{Aor, Applied, Change, ContactChange, Location, Origin, Refused};

/// What the registrar answers.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub code: u16,
    pub reason: String,
    /// Extra headers, in order.
    pub headers: Vec<(&'static str, String)>,
}

impl Answer {
    fn new(code: u16, reason: impl Into<String>) -> Answer {
        Answer {
            code,
            reason: reason.into(),
            headers: Vec::new(),
        }
    }
}

/// The registrar: location service plus store.
pub struct Registrar {
    pub location: Arc<Location>,
    store: Store,
    config: RegistrarConfig,
}

impl Registrar {
    pub fn new(location: Arc<Location>, store: Store, config: RegistrarConfig) -> Registrar {
        Registrar {
            location,
            store,
            config,
        }
    }

    /// Handles an authenticated REGISTER for `aor`: the answer, and the
    /// writes that must be committed (with [`Registrar::commit`]) before the
    /// answer may leave.
    pub fn register(
        &self,
        request: &Message,
        aor: &Aor,
        max_contacts: usize,
        source: &Source,
        now_ms: u64,
    ) -> (Answer, Vec<Write>) {
        let change = match interpret(request, &self.config) {
            Ok(change) => change,
            Err(answer) => return (answer, Vec::new()),
        };
        let origin = Origin {
            call_id: request.call_id().unwrap_or_default().to_owned(),
            cseq: request.cseq().map(|c| c.seq).unwrap_or(0),
            source: source.addr,
            transport: source.transport,
            user_agent: request.headers.get("User-Agent").map(str::to_owned),
        };
        let Applied { current, writes } =
            match self
                .location
                .apply(aor, &change, &origin, max_contacts, now_ms)
            {
                Ok(applied) => applied,
                Err(Refused::OutOfOrder) => {
                    return (
                        Answer::new(400, "Out-of-order CSeq for this Call-ID"),
                        Vec::new(),
                    )
                }
            };
        let mut answer = Answer::new(200, "OK");
        for b in &current {
            let remaining = b.expires_at_ms.saturating_sub(now_ms).div_ceil(1000);
            answer
                .headers
                .push(("Contact", format!("<{}>;expires={}", b.contact, remaining)));
        }
        // Path (RFC 3327): echoed to a UA that supports it. Calls need no
        // stored route set here: they go to the address this REGISTER came
        // from, which is the proxy that wrote the first Path entry.
        let supports_path = request
            .headers
            .get_all("Supported")
            .flat_map(crate::sip::split_list)
            .any(|option| option.eq_ignore_ascii_case("path"));
        if supports_path {
            for path in request.headers.get_all("Path") {
                answer.headers.push(("Path", path.to_owned()));
            }
        }
        (answer, writes)
    }

    /// Commits binding changes; `done` runs on the store's writer thread
    /// right after the commit, with whether it succeeded.
    pub fn commit(&self, writes: Vec<Write>, done: impl FnOnce(bool) + Send + 'static) {
        self.store.write_then(
            writes,
            Box::new(move |committed| {
                if let Err(e) = &committed {
                    tracing::error!(error = %e, "binding not stored");
                }
                done(committed.is_ok())
            }),
        );
    }

    /// Removes one binding from memory; the write that removes it from the
    /// store (the caller commits it), or None if there is no such binding.
    pub fn remove(&self, aor: &Aor, key: &str, now_ms: u64) -> Option<Write> {
        self.location
            .remove(aor, key, now_ms)
            .map(|_| location::delete(aor, key))
    }

    /// Removes one binding from memory and the database; `emit` gets the
    /// unregistration event once it is committed.
    pub fn forget(
        &self,
        aor: &Aor,
        key: &str,
        source: std::net::SocketAddr,
        now_ms: u64,
        emit: impl FnOnce(crate::plugins::Event) + Send + 'static,
    ) -> bool {
        let Some(binding) = self.location.remove(aor, key, now_ms) else {
            return false;
        };
        let event = crate::plugins::Event::Unregistered(crate::plugins::Registration {
            source,
            tenant: aor.tenant.clone(),
            extension: aor.extension.clone(),
            contact: binding.contact.to_string(),
        });
        self.commit(vec![location::delete(aor, key)], move |committed| {
            if committed {
                emit(event);
            }
        });
        true
    }

    /// Drops expired bindings from memory and the database.
    pub fn purge(&self, now_ms: u64) {
        let removed = self.location.purge(now_ms);
        if removed > 0 {
            tracing::debug!(removed, "expired bindings purged");
        }
        self.store
            .write_detached(vec![Write::PurgeExpired { now_ms }]);
    }
}

/// Reads what a REGISTER asks for (RFC 3261 10.3 steps 6–7), or the error answer.
fn interpret(request: &Message, config: &RegistrarConfig) -> Result<Change, Answer> {
    let contacts = request.contacts().map_err(|e| Answer::new(400, e.reason))?;
    let header_expires = request
        .expires()
        .map_err(|_| Answer::new(400, "Malformed Expires"))?;
    if contacts.is_empty() {
        return Ok(Change::Fetch);
    }
    if contacts.iter().any(|c| matches!(c, Contact::Star)) {
        // RFC 3261 10.3 step 6: "*" only alone and only with Expires: 0.
        if contacts.len() > 1 || header_expires != Some(0) {
            return Err(Answer::new(
                400,
                "Contact: * needs Expires: 0 and no other Contact",
            ));
        }
        return Ok(Change::RemoveAll);
    }
    let mut changes = Vec::with_capacity(contacts.len());
    for contact in contacts {
        let Contact::Addr(addr) = contact else {
            continue;
        };
        let expires = match addr.param("expires") {
            Some(Some(v)) => v
                .parse::<u32>()
                .map_err(|_| Answer::new(400, "Malformed expires parameter"))?,
            Some(None) => return Err(Answer::new(400, "Malformed expires parameter")),
            None => header_expires.unwrap_or(config.default_expires_s),
        };
        if expires != 0 && expires < config.min_expires_s {
            let mut answer = Answer::new(423, "Interval Too Brief");
            answer
                .headers
                .push(("Min-Expires", config.min_expires_s.to_string()));
            return Err(answer);
        }
        let expires = expires.min(config.max_expires_s);
        let contact = addr.uri.to_string();
        // RFC 5626 section 6: a binding is identified by instance and reg-id.
        let key = match (addr.param("+sip.instance"), addr.param("reg-id")) {
            (Some(Some(instance)), Some(Some(reg_id))) => format!("{instance};reg-id={reg_id}"),
            (Some(Some(instance)), _) => instance.to_owned(),
            _ => contact.clone(),
        };
        changes.push(ContactChange {
            key,
            contact,
            expires_s: expires,
        });
    }
    Ok(Change::Update(changes))
}
