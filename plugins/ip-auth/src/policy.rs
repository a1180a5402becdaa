//! The ip-auth policy, in plain Rust: no WIT types, no wasm.
//!
//! Embedded SIP devices (door phones, alarm panels) can neither REGISTER
//! nor answer a digest challenge. Each `device` entry trusts one extension
//! of one tenant when its requests come from a configured address:
//!
//! - the request's source is in the entry's `source` (an address or a CIDR
//!   network), from its `port` and over its `transport` when those are
//!   given;
//! - the request is for the entry's `tenant` ("" is the default tenant);
//! - the request claims the entry's `extension`: the From user, or for a
//!   REGISTER the To user (a trusted device needs no REGISTER, so one that
//!   sends it anyway is answered by trust too).
//!
//! Then the verdict is `trust { tenant, extension }`: the gateway skips
//! digest authentication for it. Anything else continues: the normal digest
//! path applies (and fail-to-ban counts its failures).
//!
//! **The most specific entry owns an address.** Of the entries whose source
//! matches, only those with the longest prefix (then: with a port, then:
//! with a transport) are considered; a request from a door phone's own /32
//! that claims the extension of a /24 entry is not trusted. Several entries
//! with the same source (an adapter with two lines) are all considered.
//!
//! **Trunks** (`trunk` entries: `id`, `source`, `port`) are parsed and
//! checked now; trunk trust comes with trunks. Until then an address whose
//! most specific entry is a trunk's gets no verdict from this plugin, never
//! the trust of a device entry that also covers it.
//!
//! Costs: no device entry, nothing read; otherwise `source-ip` (one getter
//! that allocates nothing), `source-port` and `transport` only when an entry
//! with a port or transport covers the address, and only when the source
//! matches an entry `method`, the From or To user and `tenant`.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use plugin_kit::config::{self, ConfigError};
use plugin_kit::net::{canonical, Net};
use plugin_kit::text::{shown, shown_tenant};
use serde::Deserialize;

pub use plugin_kit::Level;

/// The host's log, as the policy sees it.
pub trait Log {
    fn log(&self, level: Level, message: &str);
}

/// One request, read lazily: in the component each call crosses the sandbox
/// boundary, so the policy calls only what it needs.
pub trait RequestView {
    /// The source IP (an IPv4-mapped IPv6 source as IPv4).
    fn source_ip(&self) -> IpAddr;
    fn source_port(&self) -> u16;
    fn transport(&self) -> Transport;
    /// E.g. "REGISTER".
    fn method(&self) -> String;
    /// The user part of the From URI (the WIT getter `from-user`).
    #[allow(clippy::wrong_self_convention)]
    fn from_user(&self) -> Option<String>;
    /// The user part of the To URI.
    fn to_user(&self) -> Option<String>;
    /// The tenant domain; "" for the default tenant.
    fn tenant(&self) -> String;
}

/// How a request reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
}

/// What the policy decides about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    /// A trusted device: no REGISTER, no digest.
    Trust {
        tenant: String,
        extension: String,
    },
}

/// The plugin's config table (`[plugin.config]`, as JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `[[plugin.config.device]]`: extensions trusted by address.
    pub device: Vec<DeviceEntry>,
    /// `[[plugin.config.trunk]]`: other servers' addresses (checked, no
    /// verdict yet).
    pub trunk: Vec<TrunkEntry>,
}

/// One device: an extension trusted from an address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceEntry {
    /// The tenant domain; "" (the default) for the default tenant.
    #[serde(default)]
    pub tenant: String,
    /// The extension the device is.
    pub extension: String,
    /// Its address, or a CIDR network (`127.0.0.3`, `127.0.0.0/29`, `::1`).
    pub source: String,
    /// Only from this source port.
    #[serde(default)]
    pub port: Option<u16>,
    /// Only over this transport.
    #[serde(default)]
    pub transport: Option<Transport>,
}

/// One trunk: another server's address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkEntry {
    pub id: String,
    pub source: String,
    #[serde(default)]
    pub port: Option<u16>,
}

impl Settings {
    /// Parses the config JSON; empty text or `null` means no entries.
    pub fn from_json(json: &str) -> Result<Settings, ConfigError> {
        config::from_json(json)
    }
}

/// Whose an address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// An index into `Policy::devices`.
    Device(usize),
    /// An index into the trunk entries.
    Trunk(usize),
}

/// An entry's source as a matching rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    net: Net,
    port: Option<u16>,
    transport: Option<Transport>,
    owner: Owner,
}

impl Rule {
    /// Greater is more specific: the longer prefix, then a port, then a
    /// transport.
    fn specificity(&self) -> (u8, bool, bool) {
        (
            self.net.prefix(),
            self.port.is_some(),
            self.transport.is_some(),
        )
    }

    /// The same source as `other` (an address cannot be two owners').
    fn same_source(&self, other: &Rule) -> bool {
        (self.net, self.port, self.transport) == (other.net, other.port, other.transport)
    }
}

/// A device entry, ready for matching.
#[derive(Debug, Clone)]
struct Device {
    /// ASCII-lower-cased (domains compare without case).
    tenant: String,
    extension: String,
    /// Its position in the config, for logs.
    index: usize,
}

/// The ip-auth policy: the entries, indexed for matching.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    devices: Vec<Device>,
    /// Rules for single addresses (/32, /128) by address, most specific
    /// first.
    hosts: BTreeMap<IpAddr, Vec<Rule>>,
    /// Rules for networks, most specific first.
    nets: Vec<Rule>,
}

impl Policy {
    /// Checks the entries and indexes them. Errors name the entry and key,
    /// e.g. `device[2].source: invalid address or CIDR "10.0.0/33"`.
    pub fn new(settings: Settings) -> Result<Policy, ConfigError> {
        let mut policy = Policy::default();
        let mut rules: Vec<(Rule, String)> = Vec::new();
        for (i, d) in settings.device.iter().enumerate() {
            let at = format!("device[{i}]");
            if d.extension.trim().is_empty() {
                return Err(ConfigError::new(
                    format!("{at}.extension"),
                    "must not be empty",
                ));
            }
            if d.extension
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(ConfigError::new(
                    format!("{at}.extension"),
                    format!("{:?} is not a SIP user (no spaces)", d.extension),
                ));
            }
            if d.tenant
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(ConfigError::new(
                    format!("{at}.tenant"),
                    format!("{:?} is not a domain", d.tenant),
                ));
            }
            let tenant = d.tenant.to_ascii_lowercase();
            if let Some(first) = policy
                .devices
                .iter()
                .find(|o| o.tenant == tenant && o.extension == d.extension)
            {
                return Err(ConfigError::new(
                    format!("{at}.extension"),
                    format!(
                        "extension {:?} of tenant {} is already device[{}]",
                        d.extension,
                        shown_tenant(&tenant),
                        first.index
                    ),
                ));
            }
            let net = parse_net(&at, &d.source)?;
            policy.devices.push(Device {
                tenant,
                extension: d.extension.clone(),
                index: i,
            });
            let rule = Rule {
                net,
                port: d.port,
                transport: d.transport,
                owner: Owner::Device(policy.devices.len() - 1),
            };
            rules.push((rule, at));
        }
        for (i, t) in settings.trunk.iter().enumerate() {
            let at = format!("trunk[{i}]");
            if t.id.trim().is_empty() {
                return Err(ConfigError::new(format!("{at}.id"), "must not be empty"));
            }
            if let Some(first) = settings.trunk[..i].iter().position(|o| o.id == t.id) {
                return Err(ConfigError::new(
                    format!("{at}.id"),
                    format!("{:?} is already trunk[{first}]", t.id),
                ));
            }
            let rule = Rule {
                net: parse_net(&at, &t.source)?,
                port: t.port,
                transport: None,
                owner: Owner::Trunk(i),
            };
            if let Some((_, device)) = rules
                .iter()
                .find(|(r, _)| matches!(r.owner, Owner::Device(_)) && r.same_source(&rule))
            {
                return Err(ConfigError::new(
                    format!("{at}.source"),
                    format!(
                        "{} is also {device}'s source: an address is a device's or a trunk's",
                        source_text(&rule)
                    ),
                ));
            }
            rules.push((rule, at));
        }
        for (rule, _) in rules {
            if rule.net.is_host() {
                policy.hosts.entry(rule.net.addr()).or_default().push(rule);
            } else {
                policy.nets.push(rule);
            }
        }
        // Most specific first; the config's order among equals.
        for list in policy.hosts.values_mut() {
            list.sort_by_key(|r| std::cmp::Reverse(r.specificity()));
        }
        policy
            .nets
            .sort_by_key(|r| std::cmp::Reverse(r.specificity()));
        Ok(policy)
    }

    /// Parses and checks the config JSON handed to `init`.
    pub fn from_json(json: &str) -> Result<Policy, ConfigError> {
        Policy::new(Settings::from_json(json)?)
    }

    /// Decides about one request (see the module doc). Reads `source`
    /// first and nothing else unless it matches an entry.
    pub fn on_request(&self, log: &impl Log, req: &impl RequestView) -> Verdict {
        if self.devices.is_empty() {
            return Verdict::Continue;
        }
        let ip = canonical(req.source_ip());
        // Read only if some rule asks.
        let port = Cell::new(None);
        let port_is = |wanted: u16| {
            let p = port.get().unwrap_or_else(|| {
                let p = req.source_port();
                port.set(Some(p));
                p
            });
            p == wanted
        };
        let transport: Cell<Option<Transport>> = Cell::new(None);
        let transport_is = |wanted: Transport| {
            let t = transport.get().unwrap_or_else(|| {
                let t = req.transport();
                transport.set(Some(t));
                t
            });
            t == wanted
        };

        // The matching rules of the highest specificity (usually one).
        let mut best = None;
        let mut owners: Vec<Owner> = Vec::new();
        let candidates = self.hosts.get(&ip).into_iter().flatten().chain(&self.nets);
        for rule in candidates {
            if best.is_some_and(|b| rule.specificity() < b) {
                break;
            }
            if !rule.net.contains(ip)
                || rule.port.is_some_and(|p| !port_is(p))
                || rule.transport.is_some_and(|t| !transport_is(t))
            {
                continue;
            }
            best = Some(rule.specificity());
            owners.push(rule.owner);
        }
        if owners.is_empty() || owners.iter().any(|o| matches!(o, Owner::Trunk(_))) {
            return Verdict::Continue;
        }

        // For the log: the port is read only to be shown.
        let here = || endpoint(ip, port.get().unwrap_or_else(|| req.source_port()));
        let method = req.method();
        let user = if method == "REGISTER" {
            req.to_user()
        } else {
            req.from_user()
        };
        let devices = || {
            owners.iter().filter_map(|o| match o {
                Owner::Device(d) => Some(&self.devices[*d]),
                Owner::Trunk(_) => None,
            })
        };
        let claimed = user
            .as_deref()
            .and_then(|user| devices().find(|d| d.extension == user).map(|d| (d, user)));
        let Some((_, user)) = claimed else {
            self.not_trusted(log, &method, &here(), user.as_deref(), devices());
            return Verdict::Continue;
        };
        let tenant = req.tenant();
        let Some(device) =
            devices().find(|d| d.extension == user && d.tenant.eq_ignore_ascii_case(&tenant))
        else {
            log.log(
                Level::Debug,
                &format!(
                    "not trusting {} from {}: extension {} is trusted there for another tenant, \
                     not {}",
                    shown(&method),
                    here(),
                    shown(user),
                    shown_tenant(&tenant)
                ),
            );
            return Verdict::Continue;
        };
        log.log(
            Level::Debug,
            &format!(
                "trusting {} from {} as extension {} of tenant {} (device[{}])",
                shown(&method),
                here(),
                shown(&device.extension),
                shown_tenant(&tenant),
                device.index
            ),
        );
        Verdict::Trust {
            // The host's spelling of the tenant: it looks the extension up.
            tenant,
            extension: device.extension.clone(),
        }
    }

    /// A request from a device's address that claims no extension trusted
    /// there: said at debug (it goes the digest way).
    fn not_trusted<'a>(
        &self,
        log: &impl Log,
        method: &str,
        here: &str,
        user: Option<&str>,
        devices: impl Iterator<Item = &'a Device>,
    ) {
        let trusted: Vec<String> = devices
            .map(|d| format!("{} (device[{}])", shown(&d.extension), d.index))
            .collect();
        log.log(
            Level::Debug,
            &format!(
                "not trusting {} from {}: it claims {}, the address trusts {}",
                shown(method),
                here,
                user.map_or_else(|| "no user".to_owned(), |u| format!("user {}", shown(u))),
                trusted.join(", ")
            ),
        );
    }
}

fn parse_net(at: &str, source: &str) -> Result<Net, ConfigError> {
    Net::parse(source).map_err(|why| {
        ConfigError::new(
            format!("{at}.source"),
            format!("invalid address or CIDR {source:?}{why}"),
        )
    })
}

/// A rule's source for people: `127.0.0.3`, `127.0.0.0/29 port 5060`.
fn source_text(rule: &Rule) -> String {
    let mut text = rule.net.to_string();
    if let Some(port) = rule.port {
        text += &format!(" port {port}");
    }
    if let Some(t) = rule.transport {
        text += &format!(" over {t}");
    }
    text
}

/// `ip:port`, IPv6 in brackets.
fn endpoint(ip: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}
