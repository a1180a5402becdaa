//! The directory: every extension the gateway serves, by tenant, with what
//! the message path needs per request (digest secrets, contact limit), in
//! hash maps so a lookup costs the same with ten extensions or ten thousand.

use std::collections::HashMap;

use crate::auth::Secrets;

/// One extension as the message path sees it.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Precomputed digest HA1s; the password itself is not kept.
    pub secrets: Secrets,
    /// Devices that may register at once.
    pub max_contacts: usize,
}

/// foldhash: looked up twice per request, and its keys come from the
/// config, so nobody outside can choose colliding ones.
type Map<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// Extensions by tenant key ("" for the default tenant), then by number.
#[derive(Debug, Default)]
pub struct Directory {
    tenants: Map<Map<Entry>>,
}

impl Directory {
    pub fn insert(&mut self, tenant: &str, extension: &str, entry: Entry) {
        self.tenants
            .entry(tenant.to_owned())
            .or_default()
            .insert(extension.to_owned(), entry);
    }

    pub fn get(&self, tenant: &str, extension: &str) -> Option<&Entry> {
        self.tenants.get(tenant)?.get(extension)
    }

    pub fn len(&self) -> usize {
        self.tenants.values().map(Map::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
