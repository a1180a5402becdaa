//! The chain: the configured plugins, in order.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::bindings::sipfence::plugin::types as wit;
use super::runtime::{Plugin, PluginEngine};
use super::state::SharedState;
use super::{
    builtin, conversions, CallInfo, Event, EventKind, PluginError, PluginSpec, Reaction,
    RequestView, RouteDecision, Verdict,
};

/// The loaded plugins of one configuration. Immutable once loaded: share it
/// as `Arc<Chain>` and swap in a new one to reload (counters survive in the
/// [`SharedState`]; calls in flight finish on the old chain).
pub struct Chain {
    pub(super) plugins: Vec<Plugin>,
    /// Indices into `plugins` of those with an `on-request` hook, in order.
    request_hooks: Vec<usize>,
    /// Whether one of those wants the User-Agent in its basics.
    wants_user_agent: bool,
    /// Per [`EventKind`] (by its index), the indices of those that asked
    /// for that kind of event.
    event_hooks: [Vec<usize>; 4],
    /// Indices of those with a `route` hook, in order.
    route_hooks: Vec<usize>,
}

/// One plugin's counters and health, for `sipfence plugins list`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PluginStats {
    pub name: String,
    /// Calls made to the guest (the failure policy's answers during a
    /// backoff are `skipped`, not calls; a failure to create an instance
    /// is a call).
    pub calls: u64,
    /// Traps other than deadline and memory (instance replaced).
    pub traps: u64,
    /// Calls stopped by the deadline (instance replaced).
    pub timeouts: u64,
    /// Calls stopped by the memory cap (instance replaced).
    pub out_of_memory: u64,
    /// Answers the host refused (e.g. reject with status 200).
    pub bad_answers: u64,
    /// Failed attempts to create an instance (instantiate or `init`).
    pub new_instance_failures: u64,
    /// Calls answered by the failure policy during a backoff.
    pub skipped: u64,
    /// Calls saved by the plugin's promises: requests answered `continue`
    /// (`continue-for-user-agent`), successes not delivered
    /// (`none-for-repeats`).
    #[serde(default)]
    pub reused: u64,
    pub instances_created: u64,
    pub idle_instances: usize,
    /// Time in calls, creating instances included.
    pub total_call_ns: u64,
    pub avg_call_ns: u64,
    /// Calls by duration (not cumulative): one count per bound of
    /// `latency_bounds_ns`, then the calls longer than the last bound.
    /// Estimated from one call in eight (weighted), like `total_call_ns`.
    #[serde(default)]
    pub latency_counts: Vec<u64>,
    /// Upper bounds (inclusive) of the latency buckets, in nanoseconds.
    #[serde(default)]
    pub latency_bounds_ns: Vec<u64>,
    pub health: PluginHealth,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum PluginHealth {
    Healthy,
    /// Failing: not entered until `until_ms` (UNIX milliseconds); its
    /// failure policy answers meanwhile.
    Backoff {
        until_ms: u64,
    },
}

impl Chain {
    /// A chain without plugins: every request continues.
    pub fn empty() -> Chain {
        Chain {
            plugins: Vec::new(),
            request_hooks: Vec::new(),
            wants_user_agent: false,
            event_hooks: Default::default(),
            route_hooks: Vec::new(),
        }
    }

    /// Loads the enabled plugins of `specs`, in order: reads (or finds the
    /// built-in) component, compiles it (once per distinct component for the
    /// engine's life), checks its imports against its grants, links it,
    /// creates a first instance (`init` with its config) and asks `hooks`.
    /// The first plugin that fails stops the load; the error names it.
    pub fn load(
        specs: &[PluginSpec],
        engine: &PluginEngine,
        state: Arc<SharedState>,
    ) -> Result<Chain, PluginError> {
        let mut chain = Chain::empty();
        for spec in specs.iter().filter(|s| s.enabled) {
            if chain.plugins.iter().any(|p| *p.name == *spec.name) {
                return Err(PluginError::Duplicate {
                    plugin: spec.name.clone(),
                });
            }
            let bytes = builtin::bytes_of(spec)?;
            let plugin = Plugin::load(spec, &bytes, engine, &state)?;
            let index = chain.plugins.len();
            if plugin.hooks.on_request {
                chain.request_hooks.push(index);
                chain.wants_user_agent |= plugin.hooks.user_agent;
            }
            for kind in EventKind::ALL {
                if plugin.hooks.events[kind.index()] {
                    chain.event_hooks[kind.index()].push(index);
                }
            }
            if plugin.hooks.route {
                chain.route_hooks.push(index);
            }
            tracing::info!(
                plugin = spec.name,
                source = %spec.source,
                on_request = plugin.hooks.on_request,
                events = ?EventKind::ALL
                    .into_iter()
                    .filter(|kind| plugin.hooks.events[kind.index()])
                    .collect::<Vec<_>>(),
                route = plugin.hooks.route,
                on_error = spec.on_error.as_str(),
                "plugin loaded"
            );
            chain.plugins.push(plugin);
        }
        Ok(chain)
    }

    /// Runs the plugins with an `on-request` hook in order; the first
    /// verdict other than [`Verdict::Continue`] wins and is returned with the
    /// name of the plugin that gave it. A plugin that fails gives its
    /// policy's verdict (`fail-closed`: [`Verdict::Drop`]).
    pub fn on_request(&self, request: &RequestView) -> (Verdict, Option<String>) {
        if self.request_hooks.is_empty() {
            return (Verdict::Continue, None);
        }
        let mut basics = conversions::basics(request);
        let mut with_user_agent = self.wants_user_agent.then(|| wit::RequestBasics {
            user_agent: user_agent_in_buffer(request),
            ..basics.clone()
        });
        let user_agent = conversions::user_agent_str(request);
        let mut request = Some(request.clone());
        for &index in &self.request_hooks {
            let plugin = &self.plugins[index];
            let basics = match &mut with_user_agent {
                Some(with) if plugin.hooks.user_agent => with,
                _ => &mut basics,
            };
            basics.kv_generation = plugin.kv_generation();
            let verdict = plugin.on_request(&mut request, basics, user_agent);
            if verdict != Verdict::Continue {
                keep_buffer(with_user_agent);
                return (verdict, Some(plugin.name.to_string()));
            }
        }
        keep_buffer(with_user_agent);
        (Verdict::Continue, None)
    }

    /// Whether every plugin with an `on-request` hook promised `continue`
    /// (`continue-for-user-agent`) for requests with this User-Agent at its
    /// kv-generation now. Then the chain's verdict is `continue` and
    /// [`Chain::on_request`] need not be called, nor the request's view
    /// built.
    pub fn promised_continue(&self, user_agent: Option<&str>) -> bool {
        let promised = self.request_hooks.iter().all(|&index| {
            let plugin = &self.plugins[index];
            plugin.promised_continue(user_agent, plugin.kv_generation())
        });
        if promised {
            for &index in &self.request_hooks {
                self.plugins[index].count_reused();
            }
        }
        promised
    }

    /// Whether a plugin asked for this kind of event: when none did, the
    /// gateway need not build the event at all.
    pub fn hears(&self, kind: EventKind) -> bool {
        !self.event_hooks[kind.index()].is_empty()
    }

    /// Whether a plugin wants to hear of this success: one asked for
    /// authentication events and did not answer an earlier success of
    /// `user` of `tenant` from `ip` with `none-for-repeats` that still
    /// holds. When none does, the gateway need not build the event (and
    /// the saved calls are counted as reused).
    pub fn hears_success(&self, ip: IpAddr, tenant: &str, user: &str) -> bool {
        let listeners = &self.event_hooks[EventKind::Auth.index()];
        let hears = listeners
            .iter()
            .any(|&index| !self.plugins[index].quiet_about(ip, tenant, user));
        if !hears {
            for &index in listeners {
                self.plugins[index].count_reused();
            }
        }
        hears
    }

    /// Tells every plugin that asked for this kind of event (a success only
    /// those not quiet about it, see [`Chain::hears_success`]); returns the
    /// reactions other than [`Reaction::None`], with the plugin that asked.
    pub fn on_event(&self, event: &Event) -> Vec<(String, Reaction)> {
        let listeners = &self.event_hooks[event.kind().index()];
        if listeners.is_empty() {
            return Vec::new();
        }
        let success = match event {
            Event::AuthSucceeded(attempt) => Some(attempt),
            _ => None,
        };
        let mut built = None;
        let mut reactions = Vec::new();
        for &index in listeners {
            let plugin = &self.plugins[index];
            if let Some(a) = success {
                if plugin.quiet_about(a.source.ip(), &a.tenant, &a.user) {
                    plugin.count_reused();
                    continue;
                }
            }
            let event = built.get_or_insert_with(|| conversions::event(event));
            let reaction = plugin.on_event(event, success);
            if reaction != Reaction::None {
                reactions.push((plugin.name.to_string(), reaction));
            }
        }
        reactions
    }

    /// Whether any plugin has a `route` hook.
    pub fn routes(&self) -> bool {
        !self.route_hooks.is_empty()
    }

    /// Asks the plugins with a `route` hook, in order, where a new call
    /// goes; `accept` checks a decision (the gateway refuses one naming
    /// something the tenant does not have, and the next plugin is asked).
    /// Returns the first accepted decision other than
    /// [`RouteDecision::NoOpinion`], with the plugin that gave it.
    pub fn route(
        &self,
        call: &CallInfo,
        mut accept: impl FnMut(&str, &RouteDecision) -> bool,
    ) -> Option<(RouteDecision, String)> {
        if self.route_hooks.is_empty() {
            return None;
        }
        let call = conversions::call_info(call);
        for &index in &self.route_hooks {
            let plugin = &self.plugins[index];
            let decision = plugin.route(&call);
            if decision != RouteDecision::NoOpinion && accept(&plugin.name, &decision) {
                return Some((decision, plugin.name.to_string()));
            }
        }
        None
    }

    /// The plugins' names, in chain order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.plugins.iter().map(|p| &*p.name)
    }

    /// The names of the plugins [`Chain::on_request`] calls (those with an
    /// `on-request` hook), in chain order.
    pub fn on_request_names(&self) -> impl Iterator<Item = &str> {
        self.request_hooks.iter().map(|&i| &*self.plugins[i].name)
    }

    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    pub fn len(&self) -> usize {
        self.plugins.len()
    }

    pub fn stats(&self) -> Vec<PluginStats> {
        self.plugins
            .iter()
            .map(|p| {
                let c = &p.counters;
                let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                let calls = p.calls();
                let total = get(&c.total_ns);
                let now = p.engine().now_ms();
                let health = match p.backoff_until(now) {
                    Some(until) => PluginHealth::Backoff {
                        until_ms: crate::server::now_ms() + (until - now),
                    },
                    None => PluginHealth::Healthy,
                };
                PluginStats {
                    name: p.name.to_string(),
                    calls,
                    traps: get(&c.traps),
                    timeouts: get(&c.timeouts),
                    out_of_memory: get(&c.out_of_memory),
                    bad_answers: get(&c.bad_answers),
                    new_instance_failures: get(&c.new_instance_failures),
                    skipped: get(&c.skipped),
                    reused: get(&c.reused),
                    instances_created: get(&c.instances_created),
                    idle_instances: p.idle_instances(),
                    total_call_ns: total,
                    avg_call_ns: total.checked_div(calls).unwrap_or(0),
                    latency_counts: c.latency.iter().map(get).collect(),
                    latency_bounds_ns: super::runtime::LATENCY_BUCKETS_NS.to_vec(),
                    health,
                }
            })
            .collect()
    }
}

thread_local! {
    /// The User-Agent's buffer, reused from request to request on this
    /// thread: the chain copies the header into it instead of allocating.
    static USER_AGENT: std::cell::Cell<String> = const { std::cell::Cell::new(String::new()) };
}

/// `request-basics.user-agent`, copied into this thread's buffer.
fn user_agent_in_buffer(request: &RequestView) -> Option<String> {
    let value = conversions::user_agent_str(request)?;
    let mut buffer = USER_AGENT.take();
    buffer.clear();
    buffer.push_str(value);
    Some(buffer)
}

/// Gives the User-Agent's buffer back for the next request.
fn keep_buffer(basics: Option<wit::RequestBasics>) {
    if let Some(buffer) = basics.and_then(|b| b.user_agent) {
        USER_AGENT.set(buffer);
    }
}
