//! Tiny plugin components written in WebAssembly text, for tests: no wasm
//! toolchain needed, and a sandbox test can make a guest misbehave in
//! exactly one way.
//!
//! [`TestPlugin`] renders a component that implements the `plugin` world of
//! `wit/sipfence.wit` by hand, the way `wit-component` would:
//!
//! ```text
//! (component
//!   import sipfence:plugin/types@0.6.0   the named types of the exports
//!   import sipfence:plugin/request@0.6.0 the getters the tests use
//!   import counter / kv / wasi / ...     only those the test asks for
//!   core module $Mem                     memory + a bump `realloc`: the host
//!                                        writes strings it passes in (init's
//!                                        config, events, getter results) here
//!   canon lower ...                      imports as core functions
//!   core module $Main                    the test's code: hooks, init,
//!                                        on-request, on-event
//!   canon lift ... / export ...          the four exports of the world
//! )
//! ```
//!
//! ## The canonical ABI in two paragraphs
//! A function whose results flatten to more than one core value returns a
//! pointer to them in linear memory instead. So `on-request` returns an
//! `i32` address of a `verdict` laid out as: discriminant byte at +0 (0
//! continue, 1 reject, 2 drop, 3 ban, 4 trust, 5 continue-for-user-agent), payload at +8: reject = u16
//! code at +8, reason (ptr, len) at +12/+16; ban = u64 duration at +8,
//! reason at +16/+20; trust = tenant at +8/+12, extension at +16/+20.
//! `reaction` is the same with 0 none, 1 ban, 2 none-for-repeats (u64 ms
//! at +8). `init`'s `result<_, string>`:
//! discriminant at +0 (0 ok, 1 err), message (ptr, len) at +4/+8.
//! [`verdict_bytes`] and friends write those layouts as data segments.
//!
//! Parameters flatten too: `request-basics` is eleven values (an enum is an
//! `i32`, the `ip-address` variant a discriminant and two `i64`s, the
//! optional User-Agent a discriminant, pointer and length, `kv-generation`
//! an `i64`);
//! `init(config: string)` gets `(ptr, len)` after the host called `realloc`.
//! Parameters that flatten to more than 16 core values are passed in linear
//! memory instead: `event` is one (call-ended's record alone is 27), so
//! `on-event` gets one `i32`, the address where the host wrote the event
//! (with `realloc`): discriminant byte at +0 (0 auth-failed, 1
//! auth-succeeded, 2 registered, 3 unregistered, 4 call-started, 5
//! call-ended), payload at +8 (call-record holds `u64`s, so every case is
//! 8-aligned); see [`TestPlugin::echoes`]. Lowered imports taking strings
//! take `(ptr, len)`; those returning a string or an option take a last
//! `i32`: where to write it.
//!
//! Memory map of every test component: `0..1024` zero (a `continue` verdict
//! lives at [`CONTINUE_AT`]), return areas at [`VERDICT_AT`],
//! [`REACTION_AT`], [`INIT_AT`], [`ROUTE_AT`], [`SCRATCH_AT`], string data from
//! [`STRINGS_AT`], and the bump heap from [`HEAP_AT`], reset at the start of
//! every export.

use std::fmt::Write as _;

use super::{Reaction, RouteDecision, Verdict};

/// All zeros: a `continue` verdict / `none` reaction / `ok` result.
pub const CONTINUE_AT: u32 = 512;
/// Where [`TestPlugin::returns`] puts its verdict.
pub const VERDICT_AT: u32 = 1024;
/// Where [`TestPlugin::reacts`] puts its reaction.
pub const REACTION_AT: u32 = 1056;
/// Where [`TestPlugin::routes`] puts its route decision.
pub const ROUTE_AT: u32 = 1120;
/// Where an `init` error result goes.
pub const INIT_AT: u32 = 1088;
/// Free space for getters' results (ptr, len) and other scratch.
pub const SCRATCH_AT: u32 = 1200;
/// String data of the data segments.
pub const STRINGS_AT: u32 = 2048;
/// Start of the bump heap that `realloc` hands out.
pub const HEAP_AT: u32 = 16384;

/// An interface the test component imports besides `types`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Import {
    /// `sipfence:plugin/counter@0.6.0` with `add`, lowered as core import
    /// `host.counter-add: (key_ptr, key_len, by, window: i64) -> i64`.
    Counter,
    /// `sipfence:plugin/kv@0.6.0` (declared, not lowered).
    Kv,
    /// `wasi:cli/environment@0.2.0` with `get-environment`, lowered as
    /// `host.get-environment: (retptr)`: calling it must trap.
    WasiEnvironment,
    /// An interface no host provides.
    Unknown,
}

/// The `hooks()` bits, in the order of the WIT `hooks` flags.
pub mod hook {
    pub const ON_REQUEST: u8 = 1;
    pub const AUTH_EVENTS: u8 = 2;
    pub const REGISTRATION_EVENTS: u8 = 4;
    pub const CALL_EVENTS: u8 = 8;
    pub const VOICEMAIL_EVENTS: u8 = 16;
    pub const ALL_EVENTS: u8 = AUTH_EVENTS | REGISTRATION_EVENTS | CALL_EVENTS | VOICEMAIL_EVENTS;
    pub const ROUTE: u8 = 32;
    pub const USER_AGENT: u8 = 64;
}

/// A test plugin, rendered to component text by [`TestPlugin::wat`].
#[derive(Clone, Debug)]
pub struct TestPlugin {
    /// `hooks()` bits, from [`hook`].
    pub hooks: u8,
    pub imports: Vec<Import>,
    /// Body of `init (param $ptr i32) (param $len i32) (result i32)`:
    /// returns the address of its `result<_, string>`.
    pub init: String,
    /// Body of `on-request` (the flattened `request-basics`: `$method`,
    /// `$ip?`, `$ip-hi`, `$ip-lo`, `$port`, `$transport`, `$verified`,
    /// `$ua?`, `$ua`, `$ua-len`, `$kv-generation`; result i32): the address
    /// of its verdict. Core imports available:
    /// `$method (retptr)` and `$cseq () -> i32` of the `request` interface,
    /// and those of [`TestPlugin::imports`].
    pub on_request: String,
    /// Body of `on-event (param $event i32) (result i32)`: gets the address
    /// of the event, returns the address of its reaction.
    pub on_event: String,
    /// Body of `route` (13 parameters, the flattened `call-info`, named
    /// `$tenant`, `$tenant-len`, `$caller`, ..., `$called`, ..., `$trunk?`,
    /// `$trunk`, `$trunk-len`): the address of its `route-decision`
    /// (discriminant byte at +0: 0 no-opinion, 1 extension, 2 ring-group, 3
    /// trunk, 4 voicemail, 5 reject; payload at +4: a string's (ptr, len) at
    /// +4/+8; trunk-route's id +4/+8, number +12/+16, allow-from-trunk +20;
    /// rejection's code +4, reason +8/+12). See [`route_decision_bytes`].
    pub route: String,
    /// Extra core functions for the bodies to call.
    pub funcs: String,
    /// (address, bytes) data segments.
    pub data: Vec<(u32, Vec<u8>)>,
}

impl Default for TestPlugin {
    fn default() -> Self {
        TestPlugin {
            hooks: hook::ON_REQUEST | hook::ALL_EVENTS,
            imports: Vec::new(),
            init: format!("(i32.const {CONTINUE_AT})"),
            on_request: format!("(i32.const {CONTINUE_AT})"),
            on_event: format!("(i32.const {CONTINUE_AT})"),
            route: format!("(i32.const {CONTINUE_AT})"),
            funcs: String::new(),
            data: Vec::new(),
        }
    }
}

impl TestPlugin {
    /// A plugin whose `on-request` always returns `verdict`.
    pub fn returns(verdict: &Verdict) -> TestPlugin {
        let mut p = TestPlugin::default();
        p.data
            .extend(verdict_bytes(verdict, VERDICT_AT, STRINGS_AT));
        p.on_request = format!("(i32.const {VERDICT_AT})");
        p
    }

    /// A plugin whose `on-request` always returns `continue-for-user-agent`
    /// (the host's [`Verdict`] has no such case: it is `continue` plus a
    /// promise the host keeps).
    pub fn promises_continue() -> TestPlugin {
        let mut p = TestPlugin::default();
        p.data.push((VERDICT_AT, record(5)));
        p.on_request = format!("(i32.const {VERDICT_AT})");
        p
    }

    /// A plugin whose `on-event` always returns `none-for-repeats(ms)` (the
    /// host's [`Reaction`] has no such case: it is `none` plus a promise
    /// the host keeps).
    pub fn quiet_for_repeats(ms: u64) -> TestPlugin {
        let mut p = TestPlugin {
            hooks: hook::ON_REQUEST | hook::AUTH_EVENTS,
            ..TestPlugin::default()
        };
        let mut r = record(2);
        r[8..16].copy_from_slice(&ms.to_le_bytes());
        p.data.push((REACTION_AT, r));
        p.on_event = format!("(i32.const {REACTION_AT})");
        p
    }

    /// A plugin whose `on-event` always returns `reaction`.
    pub fn reacts(reaction: &Reaction) -> TestPlugin {
        let mut p = TestPlugin::default();
        p.data
            .extend(reaction_bytes(reaction, REACTION_AT, STRINGS_AT + 512));
        p.on_event = format!("(i32.const {REACTION_AT})");
        p
    }

    /// A plugin with only a `route` hook that always decides `decision`.
    pub fn routes(decision: &RouteDecision) -> TestPlugin {
        let mut p = TestPlugin {
            hooks: hook::ROUTE,
            ..TestPlugin::default()
        };
        p.data
            .extend(route_decision_bytes(decision, ROUTE_AT, STRINGS_AT + 1024));
        p.route = format!("(i32.const {ROUTE_AT})");
        p
    }

    /// A plugin that answers the event case `case` (the discriminant, see
    /// the module doc) with a ban that echoes two of its fields: the
    /// duration is the unsigned number of `number_bytes` (1, 2 or 8) at
    /// `number_at`, the reason the string whose (ptr, len) is at `text_at`
    /// (offsets from the start of the event, payload at +8). Other events
    /// get `none`. So a test reads event fields back from the reaction.
    pub fn echoes(case: u8, number_at: u32, number_bytes: u8, text_at: u32) -> TestPlugin {
        let load = match number_bytes {
            1 => "i64.load8_u",
            2 => "i64.load16_u",
            8 => "i64.load",
            n => panic!("a number of {n} bytes"),
        };
        TestPlugin {
            hooks: hook::ALL_EVENTS,
            on_event: format!(
                "(if (result i32) (i32.eq (i32.load8_u (local.get 0)) (i32.const {case}))
                   (then
                     (i32.store8 (i32.const {REACTION_AT}) (i32.const 1))
                     (i64.store (i32.const {}) ({load} (i32.add (local.get 0) (i32.const {number_at}))))
                     (i32.store (i32.const {}) (i32.load (i32.add (local.get 0) (i32.const {text_at}))))
                     (i32.store (i32.const {}) (i32.load (i32.add (local.get 0) (i32.const {}))))
                     (i32.const {REACTION_AT}))
                   (else (i32.const {CONTINUE_AT})))",
                REACTION_AT + 8,
                REACTION_AT + 16,
                REACTION_AT + 20,
                text_at + 4,
            ),
            ..TestPlugin::default()
        }
    }

    /// Makes `init` fail with the config it was given as its message (so a
    /// test sees the JSON the host passed).
    pub fn init_fails_with_its_config(mut self) -> TestPlugin {
        self.init = format!(
            "(i32.store8 (i32.const {INIT_AT}) (i32.const 1))
             (i32.store (i32.const {}) (local.get 0))
             (i32.store (i32.const {}) (local.get 1))
             (i32.const {INIT_AT})",
            INIT_AT + 4,
            INIT_AT + 8
        );
        self
    }

    /// The component, as text.
    pub fn wat(&self) -> String {
        let mut imports = String::new();
        let mut lowered = String::new();
        let mut host_exports = String::new();
        let mut core_imports = String::new();
        for import in &self.imports {
            match import {
                Import::Counter => {
                    imports.push_str(
                        r#"(import "sipfence:plugin/counter@0.6.0" (instance $counter
                             (export "add" (func (param "key" string) (param "by" u32)
                                                 (param "window-ms" u64) (result u64)))))
                        "#,
                    );
                    lowered.push_str(
                        "(core func $counter-add (canon lower (func $counter \"add\") (memory $memory)))\n",
                    );
                    host_exports.push_str("(export \"counter-add\" (func $counter-add))\n");
                    core_imports.push_str(
                        "(import \"host\" \"counter-add\" (func $counter-add (param i32 i32 i32 i64) (result i64)))\n",
                    );
                }
                Import::Kv => imports.push_str(
                    r#"(import "sipfence:plugin/kv@0.6.0" (instance $kv
                         (export "get" (func (param "key" string) (result (option string))))))
                    "#,
                ),
                Import::WasiEnvironment => {
                    imports.push_str(
                        r#"(import "wasi:cli/environment@0.2.0" (instance $environment
                             (export "get-environment" (func (result (list (tuple string string)))))))
                        "#,
                    );
                    lowered.push_str(
                        "(core func $get-environment (canon lower (func $environment \"get-environment\") (memory $memory) (realloc $realloc)))\n",
                    );
                    host_exports.push_str("(export \"get-environment\" (func $get-environment))\n");
                    core_imports.push_str(
                        "(import \"host\" \"get-environment\" (func $get-environment (param i32)))\n",
                    );
                }
                Import::Unknown => imports.push_str(
                    r#"(import "evil:net/socket@1.0.0" (instance (export "connect" (func))))
                    "#,
                ),
            }
        }
        let mut data = String::new();
        for (at, bytes) in &self.data {
            writeln!(data, "(data (i32.const {at}) \"{}\")", escape(bytes)).unwrap();
        }
        let hooks = self.hooks;
        let init = &self.init;
        let on_request = &self.on_request;
        let on_event = &self.on_event;
        let route = &self.route;
        let funcs = &self.funcs;
        format!(
            r#"(component
  (import "sipfence:plugin/types@0.6.0" (instance $types
    (type $hooks-t (flags "on-request" "auth-events" "registration-events" "call-events" "voicemail-events" "route" "user-agent"))
    (export "hooks" (type $hooks (eq $hooks-t)))
    (type $rejection-t (record (field "code" u16) (field "reason" string)))
    (export "rejection" (type $rejection (eq $rejection-t)))
    (type $ban-t (record (field "duration-ms" u64) (field "reason" string)))
    (export "ban" (type $ban (eq $ban-t)))
    (type $trust-t (record (field "tenant" string) (field "extension" string)))
    (export "trust" (type $trust (eq $trust-t)))
    (type $verdict-t (variant (case "continue") (case "reject" $rejection) (case "drop")
                              (case "ban" $ban) (case "trust" $trust)
                              (case "continue-for-user-agent")))
    (export "verdict" (type $verdict (eq $verdict-t)))
    (type $transport-t (enum "udp" "tcp"))
    (export "transport" (type $transport (eq $transport-t)))
    (type $address-t (record (field "ip" string) (field "port" u16)))
    (export "address" (type $address (eq $address-t)))
    (type $ip-address-t (variant (case "ipv4" u32) (case "ipv6" (tuple u64 u64))))
    (export "ip-address" (type $ip-address (eq $ip-address-t)))
    (type $method-t (enum "register" "invite" "ack" "bye" "cancel" "options" "info" "update"
                          "prack" "subscribe" "notify" "refer" "message" "publish" "other"))
    (export "method" (type $method (eq $method-t)))
    (type $request-basics-t (record (field "method" $method) (field "source-ip" $ip-address)
                                    (field "source-port" u16) (field "transport" $transport)
                                    (field "source-verified" bool)
                                    (field "user-agent" (option string))
                                    (field "kv-generation" u64)))
    (export "request-basics" (type $request-basics (eq $request-basics-t)))
    (type $auth-failure-t (enum "wrong-password" "unknown-user" "user-mismatch" "realm-mismatch"))
    (export "auth-failure" (type $auth-failure (eq $auth-failure-t)))
    (type $auth-attempt-t (record (field "source" $address) (field "transport" $transport)
                                  (field "tenant" string) (field "user" string)
                                  (field "user-agent" (option string))))
    (export "auth-attempt" (type $auth-attempt (eq $auth-attempt-t)))
    (type $auth-failed-t (record (field "attempt" $auth-attempt) (field "failure" $auth-failure)))
    (export "auth-failed" (type $auth-failed (eq $auth-failed-t)))
    (type $registration-t (record (field "source" $address) (field "tenant" string)
                                  (field "extension" string) (field "contact" string)))
    (export "registration" (type $registration (eq $registration-t)))
    (type $call-started-t (record (field "call-id" string) (field "tenant" string)
                                  (field "caller" string) (field "callee" string)
                                  (field "source" $address) (field "transport" $transport)
                                  (field "user-agent" (option string)) (field "route" string)))
    (export "call-started" (type $call-started (eq $call-started-t)))
    (type $disposition-t (enum "answered" "no-answer" "busy" "failed" "cancelled"))
    (export "disposition" (type $disposition (eq $disposition-t)))
    (type $call-record-t (record (field "call-id" string) (field "tenant" string)
                                 (field "caller" string) (field "source" $address)
                                 (field "transport" $transport) (field "user-agent" (option string))
                                 (field "callee" string) (field "route" string)
                                 (field "answered-by" (option string)) (field "start-ms" u64)
                                 (field "answer-ms" (option u64)) (field "end-ms" u64)
                                 (field "duration-ms" u64) (field "disposition" $disposition)
                                 (field "status" u16)))
    (export "call-record" (type $call-record (eq $call-record-t)))
    (type $voicemail-t (record (field "id" u64) (field "tenant" string) (field "mailbox" string)
                               (field "email" (option string)) (field "caller" string)
                               (field "caller-name" (option string)) (field "call-id" string)
                               (field "received-ms" u64) (field "duration-ms" u64)
                               (field "file-name" string)))
    (export "voicemail" (type $voicemail (eq $voicemail-t)))
    (type $event-t (variant (case "auth-failed" $auth-failed) (case "auth-succeeded" $auth-attempt)
                            (case "registered" $registration) (case "unregistered" $registration)
                            (case "call-started" $call-started) (case "call-ended" $call-record)
                            (case "voicemail-recorded" $voicemail)))
    (export "event" (type $event (eq $event-t)))
    (type $reaction-t (variant (case "none") (case "ban" $ban) (case "none-for-repeats" u64)))
    (export "reaction" (type $reaction (eq $reaction-t)))
    (type $call-info-t (record (field "tenant" string) (field "caller" string)
                               (field "called" string) (field "source" $address)
                               (field "transport" $transport) (field "from-trunk" (option string))))
    (export "call-info" (type $call-info (eq $call-info-t)))
    (type $trunk-route-t (record (field "id" string) (field "number" string)
                                 (field "allow-from-trunk" bool)))
    (export "trunk-route" (type $trunk-route (eq $trunk-route-t)))
    (type $route-decision-t (variant (case "no-opinion") (case "extension" string)
                                     (case "ring-group" string) (case "trunk" $trunk-route)
                                     (case "voicemail" string) (case "reject" $rejection)))
    (export "route-decision" (type $route-decision (eq $route-decision-t)))
  ))
  (import "sipfence:plugin/request@0.6.0" (instance $request
    (export "method" (func (result string)))
    (export "cseq" (func (result u32)))
  ))
  (alias export $types "hooks" (type $hooks))
  (alias export $types "request-basics" (type $request-basics))
  (alias export $types "verdict" (type $verdict))
  (alias export $types "event" (type $event))
  (alias export $types "reaction" (type $reaction))
  (alias export $types "call-info" (type $call-info))
  (alias export $types "route-decision" (type $route-decision))
  {imports}

  ;; Memory and allocator, instantiated first so imports can be lowered
  ;; with them.
  (core module $Mem
    (memory (export "memory") 1)
    (global $bump (export "bump") (mut i32) (i32.const {HEAP_AT}))
    (func (export "realloc") (param $old i32) (param $old-len i32) (param $align i32) (param $len i32) (result i32)
      (local $at i32)
      ;; Round up to the alignment, hand out, move on.
      (local.set $at (i32.and (i32.add (global.get $bump) (i32.sub (local.get $align) (i32.const 1)))
                              (i32.sub (i32.const 0) (local.get $align))))
      (global.set $bump (i32.add (local.get $at) (local.get $len)))
      (if (i32.gt_u (global.get $bump) (i32.mul (memory.size) (i32.const 65536)))
        (then (drop (memory.grow (i32.const 1)))))
      (local.get $at))
  )
  (core instance $mem (instantiate $Mem))
  (alias core export $mem "memory" (core memory $memory))
  (alias core export $mem "realloc" (core func $realloc))
  (alias core export $mem "bump" (core global $bump))

  (core func $method (canon lower (func $request "method") (memory $memory) (realloc $realloc)))
  (core func $cseq (canon lower (func $request "cseq")))
  {lowered}
  (core instance $host
    (export "memory" (memory $memory))
    (export "bump" (global $bump))
    (export "method" (func $method))
    (export "cseq" (func $cseq))
    {host_exports}
  )

  (core module $Main
    (import "host" "memory" (memory 1))
    (import "host" "bump" (global $bump (mut i32)))
    (import "host" "method" (func $method (param i32)))
    (import "host" "cseq" (func $cseq (result i32)))
    {core_imports}
    {data}
    {funcs}
    (func (export "hooks") (result i32) (i32.const {hooks}))
    (func (export "init") (param i32 i32) (result i32)
      (global.set $bump (i32.const {HEAP_AT}))
      {init})
    ;; `request-basics` flattens to 11 values: method; source-ip as
    ;; discriminant + two i64; port; transport; verified; user-agent as
    ;; discriminant + ptr + len; kv-generation.
    (func (export "on-request") (param $method i32) (param $ip? i32) (param $ip-hi i64)
                                (param $ip-lo i64) (param $port i32) (param $transport i32)
                                (param $verified i32) (param $ua? i32) (param $ua i32)
                                (param $ua-len i32) (param $kv-generation i64) (result i32)
      (global.set $bump (i32.const {HEAP_AT}))
      {on_request})
    ;; The event is in memory (more than 16 flat values): its address.
    (func (export "on-event") (param $event i32) (result i32)
      {on_event})
    ;; call-info flattens to 13 values (tenant, caller, called: ptr+len;
    ;; source: ptr+len+port; transport; from-trunk: discriminant+ptr+len).
    (func (export "route") (param $tenant i32) (param $tenant-len i32)
                           (param $caller i32) (param $caller-len i32)
                           (param $called i32) (param $called-len i32)
                           (param $ip i32) (param $ip-len i32) (param $port i32)
                           (param $transport i32)
                           (param $trunk? i32) (param $trunk i32) (param $trunk-len i32)
                           (result i32)
      (global.set $bump (i32.const {HEAP_AT}))
      {route})
  )
  (core instance $main (instantiate $Main (with "host" (instance $host))))

  (func (export "hooks") (result $hooks) (canon lift (core func $main "hooks")))
  (func (export "init") (param "config" string) (result (result (error string)))
    (canon lift (core func $main "init") (memory $memory) (realloc $realloc)))
  (func (export "on-request") (param "basics" $request-basics) (result $verdict)
    (canon lift (core func $main "on-request") (memory $memory) (realloc $realloc)))
  (func (export "on-event") (param "event" $event) (result $reaction)
    (canon lift (core func $main "on-event") (memory $memory) (realloc $realloc)))
  (func (export "route") (param "call" $call-info) (result $route-decision)
    (canon lift (core func $main "route") (memory $memory) (realloc $realloc)))
)
"#
        )
    }

    /// The component, as binary (tests have the `wat` crate; the gateway
    /// itself does not need it).
    #[cfg(test)]
    pub fn wasm(&self) -> Vec<u8> {
        let text = self.wat();
        wat::parse_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }
}

/// `bytes` as the body of a WAT string literal.
fn escape(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// A 24-byte record buffer with `disc` at +0.
fn record(disc: u8) -> Vec<u8> {
    let mut r = vec![0u8; 24];
    r[0] = disc;
    r
}

fn put32(r: &mut [u8], at: usize, v: u32) {
    r[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Data segments laying out `v` at `at`, its strings from `strings`.
pub fn verdict_bytes(v: &Verdict, at: u32, strings: u32) -> Vec<(u32, Vec<u8>)> {
    let mut text = Vec::new();
    let mut string = |s: &str| {
        let ptr = strings + text.len() as u32;
        text.extend_from_slice(s.as_bytes());
        (ptr, s.len() as u32)
    };
    let r = match v {
        Verdict::Continue => record(0),
        Verdict::Reject { code, reason } => {
            let mut r = record(1);
            r[8..10].copy_from_slice(&code.to_le_bytes());
            let (p, l) = string(reason);
            put32(&mut r, 12, p);
            put32(&mut r, 16, l);
            r
        }
        Verdict::Drop => record(2),
        Verdict::Ban { duration, reason } => {
            let mut r = record(3);
            r[8..16].copy_from_slice(&(duration.as_millis() as u64).to_le_bytes());
            let (p, l) = string(reason);
            put32(&mut r, 16, p);
            put32(&mut r, 20, l);
            r
        }
        Verdict::Trust { tenant, extension } => {
            let mut r = record(4);
            let (p, l) = string(tenant);
            put32(&mut r, 8, p);
            put32(&mut r, 12, l);
            let (p, l) = string(extension);
            put32(&mut r, 16, p);
            put32(&mut r, 20, l);
            r
        }
    };
    vec![(at, r), (strings, text)]
}

/// Data segments laying out a route decision at `at`, its strings from
/// `strings` (layout: see [`TestPlugin::route`]).
pub fn route_decision_bytes(d: &RouteDecision, at: u32, strings: u32) -> Vec<(u32, Vec<u8>)> {
    let mut text = Vec::new();
    let mut string = |s: &str| {
        let ptr = strings + text.len() as u32;
        text.extend_from_slice(s.as_bytes());
        (ptr, s.len() as u32)
    };
    let mut one = |disc: u8, s: &str| {
        let mut r = record(disc);
        let (p, l) = string(s);
        put32(&mut r, 4, p);
        put32(&mut r, 8, l);
        r
    };
    let r = match d {
        RouteDecision::NoOpinion => record(0),
        RouteDecision::Extension(n) => one(1, n),
        RouteDecision::RingGroup(n) => one(2, n),
        RouteDecision::Voicemail(n) => one(4, n),
        RouteDecision::Trunk {
            id,
            number,
            allow_from_trunk,
        } => {
            let mut r = record(3);
            let (p, l) = string(id);
            put32(&mut r, 4, p);
            put32(&mut r, 8, l);
            let (p, l) = string(number);
            put32(&mut r, 12, p);
            put32(&mut r, 16, l);
            r[20] = u8::from(*allow_from_trunk);
            r
        }
        RouteDecision::Reject { code, reason } => {
            let mut r = record(5);
            r[4..6].copy_from_slice(&code.to_le_bytes());
            let (p, l) = string(reason);
            put32(&mut r, 8, p);
            put32(&mut r, 12, l);
            r
        }
    };
    vec![(at, r), (strings, text)]
}

/// Data segments laying out `reaction` at `at`, its reason at `strings`.
pub fn reaction_bytes(reaction: &Reaction, at: u32, strings: u32) -> Vec<(u32, Vec<u8>)> {
    match reaction {
        Reaction::None => vec![(at, record(0))],
        Reaction::Ban { duration, reason } => {
            let mut r = record(1);
            r[8..16].copy_from_slice(&(duration.as_millis() as u64).to_le_bytes());
            put32(&mut r, 16, strings);
            put32(&mut r, 20, reason.len() as u32);
            vec![(at, r), (strings, reason.as_bytes().to_vec())]
        }
    }
}

/// The verdict of [`misbehaving`] when it behaves: reject 403, empty reason.
pub const FINE: Verdict = Verdict::Reject {
    code: 403,
    reason: String::new(),
};

/// A plugin that misbehaves on demand, by the request's CSeq:
/// 1 loops forever, 2 grows memory without end, 3 hits `unreachable`, 4
/// calls a WASI import (a trap stub), 5 recurses until the stack
/// overflows, 6 answers reject with status 200; anything else is
/// [`FINE`] (reject 403 with an empty reason).
pub fn misbehaving() -> TestPlugin {
    const BAD_ANSWER_AT: u32 = VERDICT_AT + 128;
    let mut p = TestPlugin::returns(&FINE);
    p.imports.push(Import::WasiEnvironment);
    p.funcs = "(func $recurse (param i32) (result i32)
                 (i32.add (call $recurse (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))"
        .into();
    p.data.extend(verdict_bytes(
        &Verdict::Reject {
            code: 200,
            reason: "OK".into(),
        },
        BAD_ANSWER_AT,
        STRINGS_AT + 64,
    ));
    p.on_request = format!(
        "(block $fine
           (block $bad-answer
             (block $recurse
               (block $wasi
                 (block $trap
                   (block $bomb
                     (block $loop
                       (br_table $fine $loop $bomb $trap $wasi $recurse $bad-answer $fine
                         (call $cseq)))
                   ;; 1
                   (loop $forever (br $forever)))
                 ;; 2
                 (loop $grow (drop (memory.grow (i32.const 16))) (br $grow)))
               ;; 3
               unreachable)
             ;; 4
             (call $get-environment (i32.const {SCRATCH_AT}))
             (return (i32.const {CONTINUE_AT})))
           ;; 5
           (return (call $recurse (i32.const 0))))
         ;; 6
         (return (i32.const {BAD_ANSWER_AT}))
         )
         (i32.const {VERDICT_AT})"
    );
    p
}
