//! Running plugins: the process-wide engine, and per plugin a pre-linked
//! component, a pool of ready instances, the sandbox applied to every call,
//! failure handling and restart backoff.
//!
//! ## One call
//! 1. If the plugin is in backoff, its failure policy answers at once (the
//!    guest is not entered).
//! 2. An instance (store + bindings) is taken from the plugin's pool (the
//!    calling thread's own slot, else the shared list: [`super::pool`]), or
//!    created when there is none: instantiate from the `InstancePre`, then
//!    `init(config)`.
//! 3. The store gets its deadline (`timeout_ms`, in 1 ms epoch ticks) and the
//!    call runs. The memory cap is the store's limiter.
//! 4. Success: the instance goes back to the pool (the thread's slot, or
//!    the shared list up to [`EngineOptions::max_idle_instances`]; extras
//!    are dropped).
//!    Failure (trap, deadline, memory cap): logged at warn with the plugin's
//!    name, counted; the instance is dropped — a trapped instance cannot be
//!    entered again — and the policy answers. After
//!    [`RestartPolicy::failures`] failures in a row the plugin goes into
//!    backoff (first [`RestartPolicy::first_backoff`], doubling up to
//!    [`RestartPolicy::max_backoff`]); after a backoff one more failure is
//!    enough for the next, one success ends it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Store, Trap};

use super::bindings::{self, sipfence::plugin::types as wit};
use super::capabilities;
use super::conversions;
use super::imports::HostState;
use super::pool::Pool;
use super::promises::Promises;
use super::repeats::Repeats;
use super::state::SharedState;
use super::{
    AuthAttempt, OnError, PluginError, PluginSpec, Reaction, RequestView, RouteDecision, Verdict,
};

/// `init` may take longer than a request: it gets at least this long.
const INIT_TIMEOUT_MS: u64 = 1000;

/// One call in this many is timed for [`Counters::total_ns`] (weighted by
/// it); calls that create an instance are always timed.
const TIMED_EVERY: u64 = 64;

/// Upper bounds (inclusive) of the call latency histogram's buckets, in
/// nanoseconds; a last bucket takes everything longer.
pub const LATENCY_BUCKETS_NS: [u64; 12] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 5_000_000,
    10_000_000,
];

/// Compiled components kept for reloads (a SIGHUP recompiles nothing that
/// did not change).
const COMPILED_CACHE_ENTRIES: usize = 32;

/// When a failing plugin is restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Failures in a row before the first backoff.
    pub failures: u32,
    /// The first backoff; each next one doubles.
    pub first_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            failures: 3,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Engine-wide settings (per-plugin ones come from [`PluginSpec`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineOptions {
    pub restart: RestartPolicy,
    /// Ready instances kept per plugin. Calls run on the worker threads, so
    /// about one per thread is enough; more concurrent calls create
    /// instances that are dropped afterwards.
    pub max_idle_instances: usize,
    /// The epoch's tick while a call is running. A call runs at least its
    /// timeout and, once the ticker has seen it running, is stopped within
    /// one tick after it; each tick wakes a thread, which under load costs
    /// more than the tick's precision is worth (see
    /// [`EngineOptions::for_plugins`] and [`tick`]).
    pub tick: Duration,
}

impl EngineOptions {
    /// The options for a gateway that runs `plugins`: the tick is half the
    /// shortest timeout of an enabled plugin, between 1 and
    /// [`MAX_BUSY_TICK`] (a plugin with a 10 ms timeout that loops is
    /// stopped 10-15 ms after the ticker first saw it running, and a long
    /// call wakes the ticker 200 times a second, not 1,000).
    pub fn for_plugins(plugins: &[PluginSpec]) -> EngineOptions {
        let shortest = plugins
            .iter()
            .filter(|p| p.enabled)
            .map(|p| p.timeout_ms)
            .min();
        let tick_ms = shortest.map_or(MAX_BUSY_TICK.as_millis() as u64, |ms| ms / 2);
        EngineOptions {
            tick: Duration::from_millis(tick_ms).clamp(Duration::from_millis(1), MAX_BUSY_TICK),
            ..EngineOptions::default()
        }
    }

    /// Ticks to wait for `ms` to pass for sure: the call may start just
    /// before a tick, so one more.
    fn ticks(&self, ms: u64) -> u64 {
        let tick_ms = (self.tick.as_millis() as u64).max(1);
        ms.div_ceil(tick_ms).saturating_add(1)
    }
}

/// The longest busy tick [`EngineOptions::for_plugins`] picks.
pub const MAX_BUSY_TICK: Duration = Duration::from_millis(5);

impl Default for EngineOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        EngineOptions {
            restart: RestartPolicy::default(),
            max_idle_instances: (threads * 2).max(4),
            tick: Duration::from_millis(1),
        }
    }
}

/// The wasmtime engine of the process (Cranelift, component model, epoch
/// interruption). Cheap to clone. A background thread increments the epoch
/// every [`EngineOptions::tick`] while a call is running, and backs off to
/// [`IDLE_TICK`] while none is (see [`tick`]).
#[derive(Clone)]
pub struct PluginEngine(Arc<EngineInner>);

/// The epoch ticker's longest sleep while no call is running.
const IDLE_TICK: Duration = Duration::from_millis(50);

/// What the epoch ticker looks at: how many calls are running now.
#[derive(Default)]
struct Ticks {
    in_flight: AtomicUsize,
}

/// A call into a guest, counted in [`Ticks::in_flight`] until dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct EngineInner {
    engine: Engine,
    /// Shared with the epoch ticker.
    ticks: Arc<Ticks>,
    /// The zero of [`PluginEngine::now_ms`] (backoff times).
    started: Instant,
    options: EngineOptions,
    /// Compiled components by the SHA-256 of their bytes.
    compiled: Mutex<HashMap<[u8; 32], Component>>,
}

impl PluginEngine {
    pub fn new() -> Result<PluginEngine, PluginError> {
        PluginEngine::with_options(EngineOptions::default())
    }

    pub fn with_options(options: EngineOptions) -> Result<PluginEngine, PluginError> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        // `perf record` names the plugins' functions with this set (it writes
        // /tmp/perf-PID.map): `SIPFENCE_PERF_MAP=1 perf record -g ...`.
        if std::env::var_os("SIPFENCE_PERF_MAP").is_some_and(|v| v == "1") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine {
            message: format!("{e:#}"),
        })?;
        let weak = engine.weak();
        let ticks = Arc::new(Ticks::default());
        let ticker = ticks.clone();
        let busy_tick = options.tick;
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                let mut sleep = busy_tick;
                loop {
                    std::thread::sleep(sleep);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                    let busy = ticker.in_flight.load(Ordering::Relaxed) > 0;
                    sleep = tick(sleep, busy, busy_tick);
                }
            })
            .map_err(|e| PluginError::Engine {
                message: format!("cannot start the epoch thread: {e}"),
            })?;
        Ok(PluginEngine(Arc::new(EngineInner {
            engine,
            ticks,
            started: Instant::now(),
            options,
            compiled: Mutex::new(HashMap::new()),
        })))
    }

    pub fn options(&self) -> &EngineOptions {
        &self.0.options
    }

    /// Milliseconds since the engine started (monotonic).
    pub(super) fn now_ms(&self) -> u64 {
        self.0.started.elapsed().as_millis() as u64
    }

    fn engine(&self) -> &Engine {
        &self.0.engine
    }

    /// Marks a call into a guest as running until the guard drops: while
    /// one is, the epoch ticker ticks every busy tick.
    fn calling(&self) -> InFlight<'_> {
        let in_flight = &self.0.ticks.in_flight;
        in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(in_flight)
    }

    /// Compiles `bytes`, or returns the component compiled from the same
    /// bytes before.
    fn compile(&self, plugin: &str, bytes: &[u8]) -> Result<Component, PluginError> {
        check_magic(plugin, bytes)?;
        let hash: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(component) = lock(&self.0.compiled).get(&hash) {
            return Ok(component.clone());
        }
        let component = Component::new(self.engine(), bytes).map_err(|e| PluginError::Compile {
            plugin: plugin.to_owned(),
            message: format!("{e:#}"),
        })?;
        let mut cache = lock(&self.0.compiled);
        if cache.len() >= COMPILED_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(hash, component.clone());
        Ok(component)
    }
}

/// The epoch ticker's next sleep: `busy_tick` while a call is running
/// (`busy`), else twice the last, up to [`IDLE_TICK`].
///
/// Deadlines count ticks, so a call that starts during one of the ticker's
/// long sleeps has its deadline late by at most [`IDLE_TICK`], never early;
/// from the next tick on, ticks are `busy_tick` apart until it ends. Calls
/// take about a microsecond, so even under load a tick rarely finds one
/// running and the ticker wakes ~20 times a second, not 200 (each wake-up
/// cost ~12 µs of CPU on the benchmark VM: a microsecond per registration
/// at 2,000/s). The price: a plugin that loops is stopped up to
/// [`IDLE_TICK`] after its timeout rather than one busy tick after it.
fn tick(last: Duration, busy: bool, busy_tick: Duration) -> Duration {
    if busy {
        busy_tick
    } else {
        (last * 2).min(IDLE_TICK)
    }
}

/// A component starts with `\0asm` and the component-model layer; a core
/// module has version 1, layer 0.
fn check_magic(plugin: &str, bytes: &[u8]) -> Result<(), PluginError> {
    let what = match bytes.get(..8) {
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => return Ok(()),
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {
            "a core module; build for wasm32-wasip2 or run wasm-tools component new"
        }
        _ if bytes.is_empty() => "the file is empty",
        _ => "no WebAssembly header",
    };
    Err(PluginError::NotAComponent {
        plugin: plugin.to_owned(),
        what,
    })
}

/// Locks `m`, going on past a poisoned lock: what it guards are plain
/// counts and ready instances, still usable after a panic elsewhere.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------
// One plugin

/// A ready instance: its store and the bindings to its exports.
pub(super) struct Instance {
    store: Store<HostState>,
    bindings: bindings::Plugin,
}

/// A loaded plugin: everything needed to create instances, the pool of
/// ready ones, its health and counters.
pub(super) struct Plugin {
    pub name: Arc<str>,
    engine: PluginEngine,
    pre: bindings::PluginPre<HostState>,
    /// The `[plugin.config]` table as JSON, for `init` of every new instance.
    config_json: String,
    on_error: OnError,
    memory_limit: usize,
    /// Epoch ticks a call may run.
    deadline_ticks: u64,
    /// Epoch ticks instantiation plus `init` may run.
    init_ticks: u64,
    /// What its `hooks()` said (none until then).
    pub hooks: conversions::Hooks,
    state: Arc<super::PluginState>,
    /// The SMTP queue behind `mail.send` (None: the gateway has none).
    mail: Option<Arc<dyn super::MailService>>,
    /// Ready instances: each calling thread's own, then a shared list.
    pool: Arc<Pool>,
    pub health: Health,
    pub counters: Counters,
    /// The `continue-for-user-agent` answers it gave, kept for it.
    promises: Promises,
    /// The `none-for-repeats` answers it gave to successes, kept for it.
    repeats: Repeats,
}

/// Why a call did not produce a usable answer.
#[derive(Debug)]
enum Failure {
    /// The epoch deadline passed.
    Timeout,
    /// A memory grew past the plugin's limit.
    OutOfMemory(String),
    /// Any other trap (`unreachable`, out-of-bounds access, a trapping WASI
    /// stub, stack overflow...).
    Trap(String),
    /// Creating a new instance (instantiation or `init`) failed.
    NewInstance(String),
    /// The guest answered something the host cannot use.
    BadAnswer(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => f.write_str("deadline exceeded"),
            Failure::OutOfMemory(e) => write!(f, "out of memory: {e}"),
            Failure::Trap(e) => write!(f, "trap: {e}"),
            Failure::NewInstance(e) => write!(f, "cannot create an instance: {e}"),
            Failure::BadAnswer(e) => write!(f, "unusable answer: {e}"),
        }
    }
}

impl Failure {
    fn classify(error: &wasmtime::Error, memory_exceeded: bool) -> Failure {
        if memory_exceeded {
            return Failure::OutOfMemory(error_text(error));
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Failure::Timeout,
            _ => Failure::Trap(error_text(error)),
        }
    }
}

/// An error and its causes on one line, without the wasm backtrace (which
/// is logged at debug level).
fn error_text(error: &wasmtime::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        let first = cause.lines().next().unwrap_or("").trim_end_matches(':');
        if first.is_empty() || first.ends_with("wasm backtrace") || text.contains(first) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(first);
    }
    text
}

impl Plugin {
    /// Compiles and links `bytes`, creates the first instance (`init`) and
    /// asks it for its `hooks`.
    pub fn load(
        spec: &PluginSpec,
        bytes: &[u8],
        engine: &PluginEngine,
        shared: &SharedState,
    ) -> Result<Plugin, PluginError> {
        let name = spec.name.as_str();
        let component = engine.compile(name, bytes)?;
        capabilities::check_imports(name, engine.engine(), &component, &spec.grants)?;
        let link_error = |e: wasmtime::Error| PluginError::Link {
            plugin: name.to_owned(),
            message: error_text(&e),
        };
        let linker =
            capabilities::linker(engine.engine(), &component, &spec.grants).map_err(link_error)?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(bindings::PluginPre::new)
            .map_err(link_error)?;
        let timeout_ms = spec.timeout_ms.max(1);
        let mut plugin = Plugin {
            name: name.into(),
            engine: engine.clone(),
            pre,
            config_json: spec.config.to_string(),
            on_error: spec.on_error,
            memory_limit: usize::try_from(spec.memory_limit_bytes).unwrap_or(usize::MAX),
            deadline_ticks: engine.options().ticks(timeout_ms),
            init_ticks: engine.options().ticks(timeout_ms.max(INIT_TIMEOUT_MS)),
            hooks: conversions::Hooks::default(),
            state: shared.plugin(name),
            mail: shared.mail(),
            pool: Pool::new(engine.options().max_idle_instances),
            health: Health::default(),
            counters: Counters::default(),
            promises: Promises::default(),
            repeats: Repeats::default(),
        };
        let mut first = plugin.instantiate().map_err(|message| PluginError::Init {
            plugin: name.to_owned(),
            message,
        })?;
        first.store.set_epoch_deadline(plugin.init_ticks);
        let hooks = {
            let _running = engine.calling();
            first.bindings.call_hooks(&mut first.store)
        }
        .map_err(|e| PluginError::Hooks {
            plugin: name.to_owned(),
            message: Failure::classify(&e, first.store.data().limiter.memory_exceeded).to_string(),
        })?;
        plugin.hooks = conversions::hooks(hooks);
        plugin.pool.seed(first);
        Ok(plugin)
    }

    /// A new instance with `init` done, or why not.
    pub(super) fn instantiate(&self) -> Result<Box<Instance>, String> {
        let mut state = HostState::new(self.name.clone(), self.memory_limit, self.state.clone());
        state.mail = self.mail.clone();
        let mut store = Store::new(self.engine.engine(), state);
        store.limiter(|s| &mut s.limiter);
        let _running = self.engine.calling();
        store.set_epoch_deadline(self.init_ticks);
        let failed = |e: wasmtime::Error, store: &Store<HostState>| {
            Failure::classify(&e, store.data().limiter.memory_exceeded).to_string()
        };
        let bindings = match self.pre.instantiate(&mut store) {
            Ok(b) => b,
            Err(e) => return Err(failed(e, &store)),
        };
        match bindings.call_init(&mut store, &self.config_json) {
            Ok(Ok(())) => {}
            Ok(Err(message)) => return Err(conversions::one_line(message)),
            Err(e) => return Err(failed(e, &store)),
        }
        self.counters
            .instances_created
            .fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(Instance { store, bindings }))
    }

    /// Runs `f` on a ready instance under the sandbox. None: the call failed
    /// (logged, counted) and the failure policy must answer.
    fn call<R>(
        &self,
        hook: &'static str,
        f: impl FnOnce(&mut Instance) -> wasmtime::Result<Result<R, String>>,
    ) -> Option<R> {
        // A healthy plugin reads no clock here: only a backoff set since
        // the last success costs a look at it.
        let until = self.health.backoff_until.load(Ordering::Relaxed);
        if until != 0 {
            if self.engine.now_ms() < until {
                self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            // Over: forget it (unless a failure just set a new one).
            let _ = self.health.backoff_until.compare_exchange(
                until,
                0,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        let span = tracing::debug_span!("plugin", plugin = &*self.name, hook);
        let _entered = span.enter();
        let (popped, call) = self.pool.take();
        // Reading the clock twice would be a tenth of a cheap call: time
        // every call that creates an instance (weight 1), and one other
        // call in TIMED_EVERY (weighted).
        let creating = popped.is_none().then(Instant::now);
        let mut instance = match popped {
            Some(instance) => instance,
            None => match self.instantiate() {
                Ok(instance) => instance,
                Err(e) => {
                    self.counters
                        .new_instance_failures
                        .fetch_add(1, Ordering::Relaxed);
                    self.failed(hook, Failure::NewInstance(e));
                    return None;
                }
            },
        };
        let (started, weight) = match creating {
            Some(started) => (Some(started), 1),
            None if call.is_multiple_of(TIMED_EVERY) => (Some(Instant::now()), TIMED_EVERY),
            None => (None, 0),
        };
        instance.store.set_epoch_deadline(self.deadline_ticks);
        instance.store.data_mut().limiter.memory_exceeded = false;
        let result = {
            let _running = self.engine.calling();
            f(&mut instance)
        };
        if let Some(started) = started {
            let ns = started.elapsed().as_nanos() as u64;
            self.counters
                .total_ns
                .fetch_add(ns.saturating_mul(weight), Ordering::Relaxed);
            let bucket = LATENCY_BUCKETS_NS.partition_point(|bound| *bound < ns);
            self.counters.latency[bucket].fetch_add(weight, Ordering::Relaxed);
        }
        match result {
            Ok(Ok(answer)) => {
                self.pool.put(instance);
                self.health.succeeded();
                Some(answer)
            }
            Ok(Err(unusable)) => {
                // The guest is fine; its answer is not.
                self.pool.put(instance);
                self.counters.bad_answers.fetch_add(1, Ordering::Relaxed);
                self.failed(hook, Failure::BadAnswer(unusable));
                None
            }
            Err(e) => {
                tracing::debug!(plugin = &*self.name, hook, error = ?e, "plugin call failed");
                let failure = Failure::classify(&e, instance.store.data().limiter.memory_exceeded);
                // Never reused: a trapped instance cannot be entered again.
                drop(instance);
                let counter = match failure {
                    Failure::Timeout => &self.counters.timeouts,
                    Failure::OutOfMemory(_) => &self.counters.out_of_memory,
                    _ => &self.counters.traps,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                self.failed(hook, failure);
                None
            }
        }
    }

    fn failed(&self, hook: &'static str, failure: Failure) {
        // What a failing plugin promised is not to be trusted either: it is
        // asked again once it answers.
        self.promises.forget();
        self.repeats.forget();
        let now = self.engine.now_ms();
        tracing::warn!(
            plugin = &*self.name,
            hook,
            error = %failure,
            policy = self.on_error.as_str(),
            "plugin call failed; its failure policy answers"
        );
        if let Some(backoff) = self.health.failed(now, &self.engine.options().restart) {
            // Restart from scratch after the backoff.
            self.pool.clear();
            tracing::warn!(
                plugin = &*self.name,
                backoff_ms = backoff.as_millis() as u64,
                policy = self.on_error.as_str(),
                "plugin keeps failing: its failure policy answers every call until it is restarted"
            );
        }
    }

    /// `on-request`: the plugin's verdict, or its policy's when it failed.
    /// The chain builds the request's `basics` once for all its plugins, and
    /// passes the request itself from plugin to plugin in `request` (moved
    /// into the store for the call and back, never cloned). A `continue`
    /// promised for this User-Agent at `basics.kv-generation` answers
    /// without a call.
    pub(super) fn on_request(
        &self,
        request: &mut Option<RequestView>,
        basics: &wit::RequestBasics,
        user_agent: Option<&str>,
    ) -> Verdict {
        if self.promised_continue(user_agent, basics.kv_generation) {
            self.count_reused();
            return Verdict::Continue;
        }
        let answer = self.call("on-request", |instance| {
            Plugin::run_on_request(instance, request, basics)
        });
        match answer {
            Some((verdict, promised)) => {
                if promised {
                    self.promises.remember(user_agent, basics.kv_generation);
                }
                verdict
            }
            None => match self.on_error {
                OnError::FailOpen => Verdict::Continue,
                OnError::FailClosed => Verdict::Drop,
            },
        }
    }

    /// Whether this plugin promised `continue` for requests with this
    /// User-Agent at this kv-generation.
    pub(super) fn promised_continue(&self, user_agent: Option<&str>, generation: u64) -> bool {
        self.promises.hold(user_agent, generation)
    }

    /// Counts a call saved by a promise (a request answered `continue`, a
    /// success not delivered).
    pub(super) fn count_reused(&self) {
        self.counters.reused.fetch_add(1, Ordering::Relaxed);
    }

    /// Calls `on-request` on `instance`: the request is the store's request
    /// in progress for the call (what the `request` getters read), its
    /// basics go with the call. The verdict comes with whether the plugin
    /// promised it for the User-Agent (`continue-for-user-agent`).
    pub(super) fn run_on_request(
        instance: &mut Instance,
        request: &mut Option<RequestView>,
        basics: &wit::RequestBasics,
    ) -> wasmtime::Result<Result<(Verdict, bool), String>> {
        instance.store.data_mut().request = request.take();
        let result = instance
            .bindings
            .call_on_request(&mut instance.store, basics);
        *request = instance.store.data_mut().request.take();
        let result = result?;
        let promised = matches!(result, wit::Verdict::ContinueForUserAgent);
        Ok(conversions::verdict(result).map(|verdict| (verdict, promised)))
    }

    /// `on-event`: the plugin's reaction; none when it failed (whatever the
    /// policy: an event has no request left to drop). `success` is the
    /// event's attempt when it is `auth-succeeded`: a `none-for-repeats`
    /// answer is kept for it.
    pub fn on_event(&self, event: &wit::Event, success: Option<&AuthAttempt>) -> Reaction {
        let answer = self.call("on-event", |instance| {
            Ok(Ok(instance
                .bindings
                .call_on_event(&mut instance.store, event)?))
        });
        match answer {
            Some(wit::Reaction::NoneForRepeats(ms)) => {
                if let Some(a) = success {
                    let now = self.engine.now_ms();
                    self.repeats
                        .remember(a.source.ip(), &a.tenant, &a.user, now, ms);
                }
                Reaction::None
            }
            Some(reaction) => conversions::reaction(reaction),
            None => Reaction::None,
        }
    }

    /// Whether this plugin asked not to hear, for now, of a success of
    /// `user` of `tenant` from `ip` (it answered an earlier one with
    /// `none-for-repeats`).
    pub(super) fn quiet_about(&self, ip: IpAddr, tenant: &str, user: &str) -> bool {
        self.repeats.quiet(ip, tenant, user, self.engine.now_ms())
    }

    /// `route`: the plugin's decision; no opinion when it failed (whatever
    /// the policy: the built-in lookup or the next plugin decides).
    pub fn route(&self, call: &wit::CallInfo) -> RouteDecision {
        self.call("route", |instance| {
            let decision = instance.bindings.call_route(&mut instance.store, call)?;
            Ok(conversions::route_decision(decision))
        })
        .unwrap_or(RouteDecision::NoOpinion)
    }

    /// `request-basics.kv-generation` for this plugin, now.
    pub fn kv_generation(&self) -> u64 {
        self.state.kv_generation()
    }

    /// Calls that entered the guest (or tried: instance creation failures
    /// included).
    pub fn calls(&self) -> u64 {
        self.pool.calls()
    }

    /// Instances ready in the pool.
    pub fn idle_instances(&self) -> usize {
        self.pool.idle()
    }

    /// When the current backoff ends, on the engine clock (None: healthy).
    pub fn backoff_until(&self, now: u64) -> Option<u64> {
        let until = self.health.backoff_until.load(Ordering::Relaxed);
        (now < until).then_some(until)
    }

    pub fn engine(&self) -> &PluginEngine {
        &self.engine
    }
}

/// Counters of one plugin (the chain reports them as `PluginStats`).
#[derive(Default)]
pub(super) struct Counters {
    pub traps: AtomicU64,
    pub timeouts: AtomicU64,
    pub out_of_memory: AtomicU64,
    /// Answers the host could not use (e.g. reject with status 200).
    pub bad_answers: AtomicU64,
    /// Failed attempts to create an instance (instantiate or `init`).
    pub new_instance_failures: AtomicU64,
    /// Calls answered by the failure policy during a backoff.
    pub skipped: AtomicU64,
    /// Calls saved by the plugin's promises: requests answered `continue`
    /// (`continue-for-user-agent`), successes not delivered
    /// (`none-for-repeats`).
    pub reused: AtomicU64,
    pub instances_created: AtomicU64,
    /// Time spent in calls (including creating instances), nanoseconds:
    /// an estimate from one call in [`TIMED_EVERY`] plus every call that
    /// created an instance.
    pub total_ns: AtomicU64,
    /// Calls by duration, one counter per [`LATENCY_BUCKETS_NS`] bucket plus
    /// one for longer calls; estimated the same way as `total_ns`.
    pub latency: [AtomicU64; LATENCY_BUCKETS_NS.len() + 1],
}

/// Failures in a row and the backoff they caused. Atomics: the healthy path
/// costs two relaxed loads.
#[derive(Default)]
pub(super) struct Health {
    /// Engine-clock ms before which the guest is not entered; 0: none.
    pub backoff_until: AtomicU64,
    /// Failures since the last success or backoff.
    consecutive: AtomicU32,
    /// Backoffs since the last success: the next lasts 2^level times the first.
    level: AtomicU32,
}

impl Health {
    #[cfg(test)]
    pub fn in_backoff(&self, now: u64) -> bool {
        now < self.backoff_until.load(Ordering::Relaxed)
    }

    pub fn succeeded(&self) {
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
        if self.level.load(Ordering::Relaxed) != 0 {
            self.level.store(0, Ordering::Relaxed);
        }
    }

    /// Records a failure at `now`; returns the backoff it starts, if any.
    pub fn failed(&self, now: u64, policy: &RestartPolicy) -> Option<Duration> {
        let level = self.level.load(Ordering::Relaxed);
        let threshold = if level > 0 { 1 } else { policy.failures.max(1) };
        let failures = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < threshold {
            return None;
        }
        self.consecutive.store(0, Ordering::Relaxed);
        let level = self.level.fetch_add(1, Ordering::Relaxed);
        let backoff = policy
            .first_backoff
            .saturating_mul(1u32 << level.min(20))
            .min(policy.max_backoff);
        self.backoff_until.store(
            now.saturating_add(backoff.as_millis() as u64),
            Ordering::Relaxed,
        );
        Some(backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_and_a_success_ends_it() {
        let policy = RestartPolicy::default();
        let h = Health::default();
        assert_eq!(h.failed(0, &policy), None);
        assert_eq!(h.failed(1, &policy), None);
        assert_eq!(h.failed(2, &policy), Some(Duration::from_millis(100)));
        assert!(h.in_backoff(2) && h.in_backoff(101));
        assert!(!h.in_backoff(102));
        // After a backoff, one failure is enough for the next, twice as long.
        assert_eq!(h.failed(102, &policy), Some(Duration::from_millis(200)));
        let mut now = 302;
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            last = h.failed(now, &policy).unwrap();
            now += last.as_millis() as u64;
        }
        assert_eq!(last, Duration::from_secs(30));
        h.succeeded();
        assert_eq!(h.failed(now, &policy), None);
    }

    #[test]
    fn the_epoch_ticker_backs_off_when_idle_and_returns_at_once() {
        let ms = Duration::from_millis;
        assert_eq!(tick(ms(1), false, ms(1)), ms(2));
        assert_eq!(tick(ms(32), false, ms(1)), IDLE_TICK);
        assert_eq!(tick(IDLE_TICK, false, ms(5)), IDLE_TICK);
        assert_eq!(tick(IDLE_TICK, true, ms(1)), ms(1));
        assert_eq!(tick(IDLE_TICK, true, ms(5)), ms(5));
    }

    #[test]
    fn the_ticker_sees_a_call_running_until_it_ends() {
        let engine = PluginEngine::new().unwrap();
        let running = || engine.0.ticks.in_flight.load(Ordering::Relaxed);
        assert_eq!(running(), 0);
        let outer = engine.calling();
        {
            // A call that creates its instance first: both count.
            let _inner = engine.calling();
            assert_eq!(running(), 2);
        }
        assert_eq!(running(), 1);
        drop(outer);
        assert_eq!(running(), 0);
    }

    #[test]
    fn the_busy_tick_is_half_the_shortest_timeout_and_deadlines_never_early() {
        let spec = |timeout_ms, enabled| PluginSpec {
            name: "p".into(),
            source: crate::config::PluginSource::Builtin("fail-to-ban".into()),
            on_error: OnError::FailClosed,
            grants: Vec::new(),
            memory_limit_bytes: 1 << 20,
            timeout_ms,
            enabled,
            config: serde_json::json!({}),
        };
        let ms = Duration::from_millis;
        let tick_for = |specs: &[PluginSpec]| EngineOptions::for_plugins(specs).tick;
        assert_eq!(tick_for(&[]), MAX_BUSY_TICK);
        assert_eq!(tick_for(&[spec(10, true)]), ms(5));
        assert_eq!(tick_for(&[spec(1000, true), spec(4, true)]), ms(2));
        assert_eq!(tick_for(&[spec(1, true)]), ms(1));
        assert_eq!(tick_for(&[spec(3, true), spec(1000, false)]), ms(1));
        assert_eq!(tick_for(&[spec(2, false), spec(1000, true)]), MAX_BUSY_TICK);
        // A call may start just before a tick: the deadline is one more.
        for (tick, timeout, ticks) in [(1, 10, 11), (5, 10, 3), (5, 11, 4), (2, 1, 2)] {
            let options = EngineOptions {
                tick: ms(tick),
                ..EngineOptions::default()
            };
            assert_eq!(
                options.ticks(timeout),
                ticks,
                "tick {tick} ms, timeout {timeout} ms"
            );
            assert!((ticks - 1) * tick >= timeout);
        }
    }

    #[test]
    fn magic_tells_modules_from_components() {
        assert!(check_magic("p", b"\0asm\x0d\0\x01\0").is_ok());
        let e = check_magic("p", b"\0asm\x01\0\0\0")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "plugin \"p\": not a WebAssembly component (a core module; build for \
             wasm32-wasip2 or run wasm-tools component new)"
        );
        let e = check_magic("p", b"").unwrap_err().to_string();
        assert_eq!(
            e,
            "plugin \"p\": not a WebAssembly component (the file is empty)"
        );
        let e = check_magic("p", b"MZ\x90\0\x03\0\0\0")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "plugin \"p\": not a WebAssembly component (no WebAssembly header)"
        );
    }
}
