//! The call router: a transaction-stateful proxy (RFC 3261 section 16).
//!
//! ```text
//! INVITE (authenticated) -> route (extension | ring group) -> 100 Trying
//!   -> one client transaction ("branch") per phone of the current step
//!   -> 1xx relayed; first 2xx relayed, dialog created, other branches
//!      CANCELled (Reason: call completed elsewhere); every later 2xx relayed
//!   -> all failed: next step (hunt), else the best response (choose.rs)
//!   -> ring time up: CANCEL all, 480 (or the no-answer number)
//! CANCEL from the caller -> 200, CANCEL every ringing branch, 487
//! in-dialog request -> its dialog (dialog.rs) -> the other party
//! ```
//!
//! One lock guards calls and dialogs: a call's state changes in a few
//! microseconds, and even at a thousand calls a second the lock is free
//! nearly always. Timers are tokio tasks that look the call up again when
//! they fire, so a call that ended meanwhile simply is not found.
//!
//! Our branch ids are `z9hG4bKsf<salt><call>.<branch>`: a response names its
//! call directly, and the per-process salt means a response to an earlier
//! process, or a forged one, matches nothing.

pub mod choose;
pub mod dialog;
pub mod forward;
pub mod target;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cdr::{Cdr, Disposition};
use crate::config::{Tenant, VOICEMAIL_TARGET};
use crate::plugins::{CallInfo, CallStarted, Event, EventKind, RouteDecision};
use crate::server::{tenant_key, Core, Reply};
use crate::sip::{Message, Method, NameAddr, StartLine, Uri};
use crate::stats::Stats;
use crate::store::Write;
use crate::transaction::Key;
use crate::transport::Source;
use crate::voicemail::Deposit;
use dialog::{Dialog, Dialogs, Side};
use target::{Forwards, Plan, Routed, Step, Target};

pub use crate::now_ms;

/// A call that is up, as `sipfence calls list` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ActiveCall {
    pub call_id: String,
    pub tenant: String,
    pub caller: String,
    pub caller_source: String,
    pub callee: String,
    pub route: String,
    /// The address of the phone that answered.
    pub answered_by: String,
    pub answered_ms: u64,
    pub duration_ms: u64,
}

/// Reason of the CANCELs sent when another phone answered (RFC 3326).
const COMPLETED_ELSEWHERE: &str = "SIP;cause=200;text=\"Call completed elsewhere\"";

/// The call router's state and timers.
pub struct Proxy {
    state: Mutex<State>,
    /// Branch prefix with this process's salt.
    prefix: String,
    next_id: AtomicU64,
    pub(crate) runtime: tokio::runtime::Handle,
    t1: Duration,
    t2: Duration,
    max_duration: Duration,
}

#[derive(Default)]
struct State {
    calls: HashMap<u64, Call>,
    /// INVITE server transactions with a call, for CANCEL.
    by_key: HashMap<Key, u64>,
    dialogs: Dialogs,
}

/// A request being forwarded: an initial INVITE with its ring plan, or an
/// in-dialog request with its single branch.
struct Call {
    id: u64,
    /// The caller's server transaction.
    key: Key,
    caller: Source,
    /// The request as received (with `received`/`rport` marked).
    request: Message,
    method: Method,
    branches: Vec<Branch>,
    steps: VecDeque<Step>,
    /// Number of the step ringing now (hunt timers name it).
    step: u32,
    best: Option<(u16, Message)>,
    /// Challenges of every 401/407 branch, merged into the one sent (16.7 step 7).
    challenges: Vec<(String, String)>,
    answered: bool,
    cancelled: bool,
    final_sent: bool,
    /// Initial INVITE only: our Record-Route, the CDR being built, the
    /// tenant and where the call goes when nobody answers.
    initial: Option<Initial>,
}

struct Initial {
    record_route: String,
    cdr: Cdr,
    tenant: String,
    /// Used once: after a forward, a failure is final.
    forwards: Forwards,
    /// Nothing could be rung.
    unreachable: bool,
}

/// One client transaction.
struct Branch {
    /// The call it belongs to and its place there (timers name it so).
    call: u64,
    index: usize,
    to: Source,
    contact: String,
    sent: Message,
    bytes: Arc<[u8]>,
    state: BranchState,
    /// CANCEL as soon as a provisional arrives (RFC 3261 9.1 forbids it before).
    cancel_wanted: Option<&'static str>,
    step: u32,
    /// A trunk's credentials, until they have been used once: a second
    /// challenge means they are wrong, and is a failure like any other.
    credentials: Option<crate::config::Credentials>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BranchState {
    Calling,
    Proceeding,
    Done,
}

/// What a branch timer does next.
enum Tick {
    Again,
    Stop,
}

impl Call {
    fn all_done(&self) -> bool {
        self.branches.iter().all(|b| b.state == BranchState::Done)
    }
}

impl Proxy {
    /// Must be called within a tokio runtime, whose handle runs the timers.
    pub fn new(t1: Duration, t2: Duration, max_duration: Duration) -> Proxy {
        Proxy {
            state: Mutex::new(State::default()),
            prefix: format!("z9hG4bKsf{:08x}", rand::random::<u32>()),
            next_id: AtomicU64::new(1),
            runtime: tokio::runtime::Handle::current(),
            t1,
            t2,
            max_duration,
        }
    }

    /// Whether a request already passed through this gateway: one of its Vias
    /// carries our branch prefix (RFC 3261 16.3 step 4). Our targets are
    /// addresses phones registered from, so a request coming back is a loop
    /// (a phone forwarding to us), never a legitimate spiral.
    pub fn looped(&self, request: &Message) -> bool {
        request
            .headers
            .get_all("Via")
            .any(|line| line.contains(self.prefix.as_str()))
    }

    /// The calls that are up (answered, no BYE yet), oldest first.
    pub fn active_calls(&self) -> Vec<ActiveCall> {
        let now = now_ms();
        let state = self.state.lock().unwrap();
        let mut calls: Vec<ActiveCall> = state
            .dialogs
            .iter()
            .filter_map(|d| {
                let cdr = d.cdr.as_ref()?;
                let answered = cdr.answer_ms.unwrap_or(now);
                Some(ActiveCall {
                    call_id: cdr.call_id.clone(),
                    tenant: cdr.tenant.clone(),
                    caller: cdr.caller.clone(),
                    caller_source: cdr.caller_source.clone(),
                    callee: cdr.callee.clone(),
                    route: cdr.route.clone(),
                    answered_by: d.callee.addr.to_string(),
                    answered_ms: answered,
                    duration_ms: now.saturating_sub(answered),
                })
            })
            .collect();
        calls.sort_by_key(|c| c.answered_ms);
        calls
    }

    /// Calls being set up, and calls that are up.
    pub fn counts(&self) -> (usize, usize) {
        let state = self.state.lock().unwrap();
        (state.calls.len(), state.dialogs.len())
    }

    fn branch_id(&self, call: u64, branch: usize) -> String {
        format!("{}{call:x}.{branch}", self.prefix)
    }

    /// The call and branch a branch id names, if it is one of ours.
    fn parse_branch(&self, id: &str) -> Option<(u64, usize)> {
        let rest = id.strip_prefix(&self.prefix)?;
        let (call, branch) = rest.split_once('.')?;
        Some((u64::from_str_radix(call, 16).ok()?, branch.parse().ok()?))
    }

    // -----------------------------------------------------------------------
    // Initial INVITE

    /// Routes an authenticated initial INVITE from `caller` of `tenant`
    /// (or, with `from_trunk`, an INVITE from that trunk of the tenant,
    /// `caller` being its From user).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        &self,
        core: &Arc<Core>,
        request: &Message,
        source: &Source,
        key: &Key,
        tenant: &Tenant,
        caller: &str,
        callee: &str,
        from_trunk: Option<&str>,
    ) -> Reply {
        let tenant_key = tenant_key(tenant).to_owned();
        let now = now_ms();
        let mut plan = match self.plan(core, tenant, caller, callee, source, from_trunk, now) {
            Ok(plan) => plan,
            Err((code, reason)) => return core.reply(request, code, &reason).into(),
        };
        if let Some(trunk) = from_trunk {
            plan.route = format!("{} from trunk:{trunk}", plan.route);
        }
        let cdr = Cdr {
            call_id: request.call_id().unwrap_or("").to_owned(),
            tenant: tenant_key.clone(),
            caller: caller.to_owned(),
            caller_source: format!("{}/{}", source.addr, source.transport),
            caller_user_agent: request.headers.get("User-Agent").map(str::to_owned),
            callee: callee.to_owned(),
            route: plan.route.clone(),
            answered_by: None,
            start_ms: now,
            answer_ms: None,
            end_ms: now,
            duration_ms: 0,
            disposition: Disposition::Failed,
            status: 0,
        };
        // The plugins hear of the call here, on the request's thread: no
        // lock is held yet, and every call-ended of this call is emitted
        // after this returns, so plugins see the two in order. A plugin that
        // bans the caller in answer stops the call before anything rings
        // (as a ban after a failed authentication does): no answer, no
        // record, no call-ended.
        let started = || {
            Event::CallStarted(CallStarted {
                call_id: cdr.call_id.clone(),
                tenant: cdr.tenant.clone(),
                caller: cdr.caller.clone(),
                callee: cdr.callee.clone(),
                source: source.addr,
                transport: source.transport,
                user_agent: cdr.caller_user_agent.clone(),
                route: cdr.route.clone(),
            })
        };
        if core.hears(EventKind::Call) && core.emit(started()) {
            return Reply::Silent;
        }
        Stats::inc(&core.stats.calls_started);
        let local = core.out.local_host_port(source.addr);
        let trying = core.reply(request, 100, "Trying").1;
        core.send_response(key, 100, &trying, source);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let Plan {
            steps,
            ring_time,
            forwards,
            ..
        } = plan;
        let mut call = Call {
            id,
            key: key.clone(),
            caller: *source,
            request: request.clone(),
            method: Method::Invite,
            branches: Vec::new(),
            steps,
            step: 0,
            best: None,
            challenges: Vec::new(),
            answered: false,
            cancelled: false,
            final_sent: false,
            initial: Some(Initial {
                record_route: forward::record_route(&local, source.transport),
                cdr,
                tenant: tenant_key,
                forwards,
                unreachable: false,
            }),
        };
        let mut state = self.state.lock().unwrap();
        if !self.next_step(core, &mut call) {
            // No phone registered at all: a failed call, not an unanswered one.
            if let Some(initial) = &mut call.initial {
                initial.unreachable = true;
            }
            self.nobody_answered(core, &mut call, 480, "Temporarily Unavailable");
        }
        self.spawn_ring_timer(core, id, ring_time);
        self.keep(&mut state, call);
        Reply::Later
    }

    /// Where a new call goes: the plugins' `route` hooks first (the first
    /// opinion the tenant can honour wins), else the built-in lookup of the
    /// dialled number. Err: the status the caller gets.
    #[allow(clippy::too_many_arguments)]
    fn plan(
        &self,
        core: &Arc<Core>,
        tenant: &Tenant,
        caller: &str,
        callee: &str,
        source: &Source,
        from_trunk: Option<&str>,
        now: u64,
    ) -> Result<Plan, (u16, String)> {
        let tenant_key = tenant_key(tenant);
        let lookup = target::Lookup {
            location: &core.registrar.location,
            out: &core.out,
            now_ms: now,
        };
        let lookup_number = |number: &str| match target::route(
            tenant,
            tenant_key,
            number,
            caller,
            &core.config.calls,
            &lookup,
        ) {
            Routed::Plan(plan) => Ok(plan),
            Routed::NotFound => Err((404, "Not Found".to_owned())),
        };
        let chain = core.chain.read().unwrap().clone();
        let decided = if chain.routes() {
            let info = CallInfo {
                tenant: tenant_key.to_owned(),
                caller: caller.to_owned(),
                called: callee.to_owned(),
                source: source.addr,
                transport: source.transport,
                from_trunk: from_trunk.map(str::to_owned),
            };
            chain.route(&info, |plugin, decision| {
                let honoured = match decision {
                    RouteDecision::Extension(n) | RouteDecision::Voicemail(n) => {
                        tenant.extension(n).is_some()
                    }
                    RouteDecision::RingGroup(n) => tenant.ring_group(n).is_some(),
                    RouteDecision::Trunk { id, number, .. } => {
                        tenant.trunk(id).is_some() && dialable(number)
                    }
                    RouteDecision::NoOpinion | RouteDecision::Reject { .. } => true,
                };
                if !honoured {
                    tracing::warn!(%plugin, ?decision, tenant = %tenant.describe(),
                        "route decision names what the tenant does not have (or an undialable number); ignored");
                }
                honoured
            })
        } else {
            None
        };
        let Some((decision, plugin)) = decided else {
            return lookup_number(callee);
        };
        tracing::debug!(%plugin, ?decision, callee, "routed by plugin");
        match decision {
            RouteDecision::NoOpinion => lookup_number(callee),
            RouteDecision::Extension(number) | RouteDecision::RingGroup(number) => {
                lookup_number(&number)
            }
            RouteDecision::Trunk {
                id,
                number,
                allow_from_trunk,
            } => {
                // Toll-fraud guard: no transit from one trunk to another
                // unless a rule says so.
                if let Some(from) = from_trunk {
                    if !allow_from_trunk {
                        tracing::info!(%plugin, from_trunk = from, to_trunk = %id, callee,
                            "call from a trunk routed out through a trunk: refused");
                        return Err((403, "Trunk to trunk calls are not allowed".to_owned()));
                    }
                }
                let trunk = tenant.trunk(&id).expect("checked when accepted");
                Ok(target::trunk_plan(
                    trunk,
                    &number,
                    &core.config.calls,
                    &core.out,
                ))
            }
            RouteDecision::Voicemail(number) => Ok(Plan {
                route: format!("voicemail:{number}"),
                steps: VecDeque::new(),
                ring_time: Duration::from_millis(core.config.calls.ring_time_ms),
                forwards: Forwards::straight_to_voicemail(&number),
            }),
            RouteDecision::Reject { code, reason } => {
                tracing::info!(%plugin, code, %reason, callee, "call rejected by route decision");
                Err((code, reason))
            }
        }
    }

    /// Starts the next step with phones to ring; false when none is left.
    fn next_step(&self, core: &Arc<Core>, call: &mut Call) -> bool {
        while let Some(step) = call.steps.pop_front() {
            if step.targets.is_empty() {
                continue;
            }
            call.step += 1;
            for target in &step.targets {
                self.send_branch(core, call, target);
            }
            if let Some(timeout) = step.timeout {
                self.spawn_step_timer(core, call.id, call.step, timeout);
            }
            return true;
        }
        false
    }

    /// Sends the request to one target as a new client transaction.
    fn send_branch(&self, core: &Arc<Core>, call: &mut Call, target: &Target) {
        let index = call.branches.len();
        let id = self.branch_id(call.id, index);
        let local = core.out.local_host_port(target.to.addr);
        let via = forward::via(target.to.transport, &local, &id);
        let mut sent = forward::forward(&call.request, Some(&target.uri), &via);
        if let Some(initial) = &call.initial {
            sent.headers
                .insert(1, "Record-Route", initial.record_route.clone());
            // The legs use different transports: record-route twice, so each
            // party reaches us over its own (the callee's entry on top).
            if target.to.transport != call.caller.transport {
                let callee_side = forward::record_route(&local, target.to.transport);
                sent.headers.insert(1, "Record-Route", callee_side);
            }
        }
        let (contact, step) = (target.uri.to_string(), call.step);
        self.launch(
            core,
            call,
            sent,
            target.to,
            contact,
            step,
            target.credentials.clone(),
        );
    }

    /// Sends `sent`, whose top Via is ours for the next branch index, as a new
    /// client transaction: recorded, then its timer started.
    #[allow(clippy::too_many_arguments)]
    fn launch(
        &self,
        core: &Arc<Core>,
        call: &mut Call,
        sent: Message,
        to: Source,
        contact: String,
        step: u32,
        credentials: Option<crate::config::Credentials>,
    ) {
        let index = call.branches.len();
        let bytes: Arc<[u8]> = sent.to_bytes().into();
        Stats::inc(&core.stats.requests_forwarded);
        core.out.send(&to, bytes.clone());
        call.branches.push(Branch {
            call: call.id,
            index,
            to,
            contact,
            sent,
            bytes,
            state: BranchState::Calling,
            cancel_wanted: None,
            step,
            credentials,
        });
        let invite = call.method == Method::Invite;
        self.spawn_branch_timer(core, call.id, index, to.transport.is_reliable(), invite);
    }

    /// Puts a call back in the table unless it is over.
    fn keep(&self, state: &mut State, call: Call) {
        if call.final_sent && call.all_done() {
            state.by_key.remove(&call.key);
            return;
        }
        if call.method == Method::Invite {
            state.by_key.insert(call.key.clone(), call.id);
        }
        state.calls.insert(call.id, call);
    }

    // -----------------------------------------------------------------------
    // Responses

    /// A response from downstream.
    pub fn on_response(&self, core: &Arc<Core>, mut response: Message, source: &Source) {
        let Some(code) = response.code() else {
            return;
        };
        let ours = response
            .top_via()
            .ok()
            .and_then(|via| via.branch().and_then(|b| self.parse_branch(b)));
        let Some((call_id, index)) = ours else {
            let ping_answer = response.top_via().ok().is_some_and(|v| {
                v.branch()
                    .is_some_and(|b| b.starts_with(crate::keepalive::PING_BRANCH))
            });
            // The answer to a keep-alive ping has done its work by arriving.
            if !ping_answer {
                Stats::inc(&core.stats.dropped_responses);
            }
            return;
        };
        Stats::inc(&core.stats.responses_in);
        response.headers.pop_first_value("Via");
        let cseq_method = response.cseq().ok().map(|c| c.method);
        let mut state = self.state.lock().unwrap();
        let Some(mut call) = state.calls.remove(&call_id) else {
            drop(state);
            self.late_response(core, code, &response, cseq_method.as_ref());
            return;
        };
        let from_branch = call
            .branches
            .get(index)
            .is_some_and(|b| b.to.addr.ip() == source.addr.ip());
        // Answers to our CANCELs need nothing; a response from another host
        // than the branch was sent to is not believed.
        if from_branch && cseq_method.as_ref() == Some(&call.method) {
            self.branch_response(core, &mut state, &mut call, index, code, response);
        } else if !from_branch {
            Stats::inc(&core.stats.dropped_responses);
        }
        self.keep(&mut state, call);
    }

    /// A response for a call that is gone: a 2xx retransmission still goes
    /// to the caller of its dialog (its ACK ends the retransmissions).
    fn late_response(
        &self,
        core: &Arc<Core>,
        code: u16,
        response: &Message,
        method: Option<&Method>,
    ) {
        if (200..300).contains(&code) && method == Some(&Method::Invite) {
            let caller = response
                .call_id()
                .and_then(|id| self.state.lock().unwrap().dialogs.caller_of(id));
            if let Some(caller) = caller {
                core.out.send(&caller, response.to_bytes().into());
            }
        }
    }

    fn branch_response(
        &self,
        core: &Arc<Core>,
        state: &mut State,
        call: &mut Call,
        index: usize,
        code: u16,
        response: Message,
    ) {
        let branch = &mut call.branches[index];
        match code {
            100 => {
                if branch.state == BranchState::Calling {
                    branch.state = BranchState::Proceeding;
                }
            }
            101..=199 => {
                if branch.state == BranchState::Calling {
                    branch.state = BranchState::Proceeding;
                }
                if let Some(reason) = branch.cancel_wanted.take() {
                    self.send_cancel(core, branch, reason);
                }
                if !call.final_sent && branch.state != BranchState::Done {
                    core.send_response(&call.key, code, &response, &call.caller);
                }
            }
            200..=299 => self.answered(core, state, call, index, code, response),
            _ => self.branch_failed(core, call, index, code, Some(response)),
        }
    }

    /// A 2xx: relayed to the caller, always (RFC 3261 16.7 step 10).
    fn answered(
        &self,
        core: &Arc<Core>,
        state: &mut State,
        call: &mut Call,
        index: usize,
        code: u16,
        response: Message,
    ) {
        call.branches[index].state = BranchState::Done;
        if call.method == Method::Invite && call.initial.is_some() {
            self.open_dialog(core, state, call, index, &response);
        }
        if !call.answered {
            call.answered = true;
            // The first answer wins: the other phones stop ringing.
            for branch in &mut call.branches {
                self.stop_branch(core, branch, COMPLETED_ELSEWHERE);
            }
            call.steps.clear();
        }
        if call.final_sent {
            core.out.send(&call.caller, response.to_bytes().into());
        } else {
            call.final_sent = true;
            core.send_response(&call.key, code, &response, &call.caller);
        }
    }

    /// Records the dialog a 2xx to an initial INVITE creates.
    fn open_dialog(
        &self,
        core: &Arc<Core>,
        state: &mut State,
        call: &mut Call,
        index: usize,
        response: &Message,
    ) {
        let request = &call.request;
        let (Some(call_id), Ok(from), Ok(to)) = (request.call_id(), request.from(), response.to())
        else {
            return;
        };
        let callee_tag = to.tag().unwrap_or("").to_owned();
        if state.dialogs.contains(call_id, &callee_tag) {
            return; // a retransmitted 2xx
        }
        let contact_of = |m: &Message| {
            m.headers
                .get("Contact")
                .and_then(|c| NameAddr::parse(c).ok())
                .map(|a| a.uri.to_string())
                .unwrap_or_default()
        };
        let branch = &call.branches[index];
        // The first answer takes the CDR; a second phone answering the same
        // fork gets a dialog (the caller will end it) but no second record.
        let cdr = match (&mut call.initial, call.answered) {
            (Some(initial), false) => {
                Stats::inc(&core.stats.calls_answered);
                let mut cdr = initial.cdr.clone();
                cdr.answer_ms = Some(now_ms());
                cdr.answered_by = Some(branch.contact.clone());
                cdr.disposition = Disposition::Answered;
                cdr.status = response.code().unwrap_or(200);
                Some(cdr)
            }
            _ => None,
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        state.dialogs.insert(Dialog {
            id,
            call_id: call_id.to_owned(),
            caller_tag: from.tag().unwrap_or("").to_owned(),
            callee_tag,
            caller: call.caller,
            callee: branch.to,
            caller_from: request.headers.get("From").unwrap_or("").to_owned(),
            callee_to: response.headers.get("To").unwrap_or("").to_owned(),
            caller_contact: contact_of(request),
            callee_contact: contact_of(response),
            caller_cseq: request.cseq().map(|c| c.seq).unwrap_or(1),
            callee_cseq: 0,
            cdr,
            timer: Some(self.spawn_dialog_timer(core, call_id.to_owned(), id)),
        });
    }

    /// A final failure (received, or made up by a timer) on one branch.
    fn branch_failed(
        &self,
        core: &Arc<Core>,
        call: &mut Call,
        index: usize,
        code: u16,
        response: Option<Message>,
    ) {
        if matches!(code, 401 | 407) && !call.final_sent && !call.cancelled {
            if let Some(response) = &response {
                if self.answer_challenge(core, call, index, code, response) {
                    return;
                }
            }
        }
        let branch = &mut call.branches[index];
        let was_done = branch.state == BranchState::Done;
        branch.state = BranchState::Done;
        if let Some(response) = &response {
            if call.method == Method::Invite {
                // Hop by hop: we ACK the failure ourselves (RFC 3261 17.1.1.3),
                // also for retransmissions of it.
                let ack = forward::ack_for(&branch.sent, response);
                core.out.send(&branch.to, ack.to_bytes().into());
            }
        }
        if was_done || call.final_sent {
            return;
        }
        let response = response.unwrap_or_else(|| {
            let mut made = core
                .reply(&branch.sent, code, crate::sip::reason_phrase(code))
                .1;
            made.headers.pop_first_value("Via");
            made
        });
        if matches!(code, 401 | 407) {
            for name in ["WWW-Authenticate", "Proxy-Authenticate"] {
                for value in response.headers.get_all(name) {
                    call.challenges.push((name.to_owned(), value.to_owned()));
                }
            }
        }
        if code >= 600 {
            // A 6xx ends the search (16.7 step 5).
            for branch in &mut call.branches {
                self.stop_branch(core, branch, "SIP;cause=600;text=\"Declined elsewhere\"");
            }
            call.steps.clear();
        }
        if choose::better(code, call.best.as_ref().map(|(c, _)| *c)) {
            call.best = Some((code, response));
        }
        let current_step_done = call
            .branches
            .iter()
            .filter(|b| b.step == call.step)
            .all(|b| b.state == BranchState::Done);
        if current_step_done && !call.cancelled && self.next_step(core, call) {
            return;
        }
        if call.all_done() {
            self.send_best(core, call);
        }
    }

    /// A trunk peer challenged a branch: ACK the challenge and send the
    /// request again, once, as a new branch with credentials and the next
    /// CSeq (RFC 3261 22.2). False when the branch has no credentials left.
    fn answer_challenge(
        &self,
        core: &Arc<Core>,
        call: &mut Call,
        index: usize,
        code: u16,
        response: &Message,
    ) -> bool {
        let branch = &mut call.branches[index];
        if branch.state == BranchState::Done {
            return false;
        }
        let Some(credentials) = branch.credentials.take() else {
            return false;
        };
        let (ask, tell) = if code == 401 {
            ("WWW-Authenticate", "Authorization")
        } else {
            ("Proxy-Authenticate", "Proxy-Authorization")
        };
        let method = call.method.as_str();
        let uri = branch
            .sent
            .request_uri()
            .map(ToString::to_string)
            .unwrap_or_default();
        let cnonce = format!("{:016x}", rand::random::<u64>());
        let Some(authorization) = response.headers.get(ask).and_then(|challenge| {
            crate::auth::client::answer(
                challenge,
                &credentials.username,
                &credentials.password,
                method,
                &uri,
                &cnonce,
            )
        }) else {
            return false;
        };
        branch.state = BranchState::Done;
        let ack = forward::ack_for(&branch.sent, response);
        core.out.send(&branch.to, ack.to_bytes().into());
        let (to, step) = (branch.to, branch.step);
        let mut sent = branch.sent.clone();
        let next = call.branches.len();
        let id = self.branch_id(call.id, next);
        let local = core.out.local_host_port(to.addr);
        sent.headers.pop_first_value("Via");
        sent.headers
            .insert(0, "Via", forward::via(to.transport, &local, &id));
        let seq = sent.cseq().map(|c| c.seq).unwrap_or(1);
        sent.headers.set("CSeq", format!("{} {method}", seq + 1));
        sent.headers.push(tell, authorization);
        let contact = call.branches[index].contact.clone();
        self.launch(core, call, sent, to, contact, step, None);
        tracing::debug!(code, "trunk peer challenged: sent again with credentials");
        true
    }

    /// Sends the best final response once every branch has failed.
    fn send_best(&self, core: &Arc<Core>, call: &mut Call) {
        let busy = call
            .best
            .as_ref()
            .is_some_and(|(code, _)| matches!(code, 486 | 600 | 603));
        if busy && !call.cancelled {
            let target = call.initial.as_mut().and_then(|i| i.forwards.busy.take());
            if let Some(target) = target {
                if self.divert(core, call, target) {
                    return;
                }
            }
        }
        let Some((code, mut response)) = call.best.take() else {
            return self.finish_own(core, call, 480, "Temporarily Unavailable");
        };
        let sent_code = choose::forwarded_code(code);
        if sent_code != code {
            response.start = StartLine::Response {
                code: sent_code,
                reason: "Server Internal Error".into(),
            };
        }
        if matches!(code, 401 | 407) {
            for name in ["WWW-Authenticate", "Proxy-Authenticate"] {
                response.headers.remove(name);
            }
            for (name, value) in call.challenges.drain(..) {
                response.headers.push(&name, value);
            }
        }
        self.send_final(core, call, sent_code, &response);
    }

    /// Ends the call with a response of our own.
    fn finish_own(&self, core: &Arc<Core>, call: &mut Call, code: u16, reason: &str) {
        let response = core.reply(&call.request, code, reason).1;
        self.send_final(core, call, code, &response);
    }

    /// Sends the caller its final non-2xx response and records the call.
    fn send_final(&self, core: &Arc<Core>, call: &mut Call, code: u16, response: &Message) {
        if call.final_sent {
            return;
        }
        call.final_sent = true;
        core.send_response(&call.key, code, response, &call.caller);
        if let Some(initial) = &call.initial {
            let mut cdr = initial.cdr.clone();
            cdr.end_ms = now_ms();
            cdr.status = code;
            cdr.disposition = match code {
                486 | 600 => Disposition::Busy,
                487 => Disposition::Cancelled,
                408 | 480 => Disposition::NoAnswer,
                _ => Disposition::Failed,
            };
            if call.cancelled {
                cdr.disposition = Disposition::Cancelled;
            } else if initial.unreachable {
                cdr.disposition = Disposition::Failed;
            }
            emit_call_ended(core, &cdr, &call.caller);
            core.store.write_detached(vec![Write::InsertCdr(cdr)]);
        }
        self.spawn_cleanup(core, call.id);
    }

    /// Stops a branch that is still ringing: CANCEL now if it has sent a
    /// provisional, else as soon as it does.
    fn stop_branch(&self, core: &Arc<Core>, branch: &mut Branch, reason: &'static str) {
        match branch.state {
            BranchState::Proceeding => self.send_cancel(core, branch, reason),
            BranchState::Calling => branch.cancel_wanted = Some(reason),
            BranchState::Done => {}
        }
    }

    /// CANCELs a ringing branch. A phone that never answers the CANCEL with
    /// a final response is given up after 64*T1, as if it had sent 487.
    fn send_cancel(&self, core: &Arc<Core>, branch: &Branch, reason: &str) {
        let reason = (!reason.is_empty()).then_some(reason);
        let cancel = forward::cancel_for(&branch.sent, reason);
        core.out.send(&branch.to, cancel.to_bytes().into());
        let (call, index) = (branch.call, branch.index);
        let after = 64 * self.t1;
        let core = core.clone();
        self.runtime.spawn(async move {
            tokio::time::sleep(after).await;
            let proxy = &core.proxy;
            let mut state = proxy.state.lock().unwrap();
            let Some(mut call) = state.calls.remove(&call) else {
                return;
            };
            if call.branches[index].state != BranchState::Done {
                proxy.branch_failed(&core, &mut call, index, 487, None);
            }
            proxy.keep(&mut state, call);
        });
    }

    /// Nobody answered in time (or nobody could be rung): the no-answer
    /// number if the extension has one, else `code`.
    fn nobody_answered(&self, core: &Arc<Core>, call: &mut Call, code: u16, reason: &str) {
        for branch in &mut call.branches {
            self.stop_branch(core, branch, "");
        }
        call.steps.clear();
        // No phone at all: `unavailable`, else `no_answer` (a mailbox or a
        // colleague suits both); unanswered: `no_answer`.
        let target = call.initial.as_mut().and_then(|i| {
            let forwards = &mut i.forwards;
            match i.unreachable {
                true => forwards.unavailable.take().or(forwards.no_answer.take()),
                false => forwards.no_answer.take(),
            }
        });
        if let Some(target) = target {
            if self.divert(core, call, target) {
                return;
            }
        }
        self.finish_own(core, call, code, reason);
    }

    /// Sends an unanswered call on to `target` (a number, or the callee's
    /// mailbox). False when that goes nowhere (nothing to ring there): the
    /// caller then gets the failure.
    fn divert(&self, core: &Arc<Core>, call: &mut Call, target: String) -> bool {
        let Some(initial) = call.initial.as_mut() else {
            return false;
        };
        // One forward per call: the next failure is final.
        let mailbox = initial.forwards.mailbox.take();
        initial.forwards = Forwards::default();
        if target == VOICEMAIL_TARGET {
            return match mailbox {
                Some(mailbox) => self.to_voicemail(core, call, mailbox),
                None => false,
            };
        }
        let tenant = core
            .config
            .tenants
            .iter()
            .find(|t| tenant_key(t) == initial.tenant);
        if let Some((tenant, number)) = tenant.map(|t| (t, target)) {
            let caller = call
                .initial
                .as_ref()
                .map(|i| i.cdr.caller.clone())
                .unwrap_or_default();
            if let Routed::Plan(plan) = target::route(
                tenant,
                tenant_key(tenant),
                &number,
                &caller,
                &core.config.calls,
                &target::Lookup {
                    location: &core.registrar.location,
                    out: &core.out,
                    now_ms: now_ms(),
                },
            ) {
                tracing::debug!(%number, "no answer: forwarding");
                if let Some(initial) = &mut call.initial {
                    initial.cdr.route = format!("{} -> {}", initial.cdr.route, plan.route);
                }
                call.steps = plan.steps;
                if self.next_step(core, call) {
                    self.spawn_ring_timer(core, call.id, plan.ring_time);
                    return true;
                }
            }
        }
        false
    }

    /// Hands the call to `mailbox`: the gateway answers and records.
    fn to_voicemail(&self, core: &Arc<Core>, call: &mut Call, mailbox: String) -> bool {
        for branch in &mut call.branches {
            self.stop_branch(core, branch, "");
        }
        call.steps.clear();
        let Some(initial) = &call.initial else {
            return false;
        };
        let mut cdr = initial.cdr.clone();
        let route = format!("voicemail:{mailbox}");
        if cdr.route != route {
            cdr.route = format!("{} -> {route}", cdr.route);
        }
        let deposit = Deposit {
            tenant: initial.tenant.clone(),
            mailbox,
            cdr,
        };
        match core
            .voicemail
            .answer(core, &call.request, &call.key, &call.caller, deposit)
        {
            Ok(()) => {
                // The mailbox's task sends the 200 and writes the record.
                call.answered = true;
                call.final_sent = true;
                self.spawn_cleanup(core, call.id);
            }
            Err((code, reason)) => {
                tracing::info!(code, %reason, "voicemail could not answer");
                self.finish_own(core, call, code, &reason);
            }
        }
        true
    }

    // -----------------------------------------------------------------------
    // CANCEL

    /// A CANCEL from the caller: its own answer (200, or 481 for no call).
    pub(crate) fn cancel(&self, core: &Arc<Core>, request: &Message, key: &Key) -> Reply {
        let invite = key.with_method(Method::Invite);
        let mut state = self.state.lock().unwrap();
        let Some(mut call) = state
            .by_key
            .get(&invite)
            .copied()
            .and_then(|id| state.calls.remove(&id))
        else {
            return core
                .reply(request, 481, "Call/Transaction Does Not Exist")
                .into();
        };
        if !call.final_sent {
            call.cancelled = true;
            for branch in &mut call.branches {
                self.stop_branch(core, branch, "");
            }
            call.steps.clear();
            // The caller learns at once; a phone that answers anyway still
            // gets its 2xx relayed (and the caller ends that call).
            self.finish_own(core, &mut call, 487, "Request Terminated");
        }
        self.keep(&mut state, call);
        core.reply(request, 200, "OK").into()
    }

    // -----------------------------------------------------------------------
    // In-dialog requests

    /// A request inside a dialog (To has a tag): forwarded to the other
    /// party if it belongs to a dialog we route and comes from its party.
    pub(crate) fn in_dialog(
        &self,
        core: &Arc<Core>,
        request: &Message,
        source: &Source,
        key: &Key,
    ) -> Reply {
        let Some(method) = request.method().cloned() else {
            return Reply::Silent;
        };
        let mut state = self.state.lock().unwrap();
        let Some((to, uri)) = self.dialog_hop(&mut state, core, request, source) else {
            Stats::inc(&core.stats.dialog_refused);
            return core
                .reply(request, 481, "Call/Transaction Does Not Exist")
                .into();
        };
        let mut request = request.clone();
        forward::strip_own_routes(&mut request);
        if method == Method::Invite {
            let trying = core.reply(&request, 100, "Trying").1;
            core.send_response(key, 100, &trying, source);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut call = Call {
            id,
            key: key.clone(),
            caller: *source,
            request,
            method,
            branches: Vec::new(),
            steps: VecDeque::from([Step {
                targets: vec![Target {
                    uri,
                    to,
                    credentials: None,
                }],
                timeout: None,
            }]),
            step: 0,
            best: None,
            challenges: Vec::new(),
            answered: false,
            cancelled: false,
            final_sent: false,
            initial: None,
        };
        self.next_step(core, &mut call);
        self.keep(&mut state, call);
        Reply::Later
    }

    /// The ACK of a 2xx, end to end: forwarded statelessly along its dialog.
    pub fn ack(&self, core: &Arc<Core>, request: &Message, source: &Source) {
        let hop = {
            let mut state = self.state.lock().unwrap();
            self.dialog_hop(&mut state, core, request, source)
        };
        let Some((to, _)) = hop else {
            Stats::inc(&core.stats.dialog_refused);
            return;
        };
        let mut request = request.clone();
        forward::strip_own_routes(&mut request);
        let local = core.out.local_host_port(to.addr);
        let branch = format!("{}a{:016x}", self.prefix, rand::random::<u64>());
        let sent = forward::forward(&request, None, &forward::via(to.transport, &local, &branch));
        Stats::inc(&core.stats.requests_forwarded);
        core.out.send(&to, sent.to_bytes().into());
    }

    /// Where an in-dialog request goes: the other party's address and the
    /// Request-URI. A BYE ends the dialog and writes its CDR.
    fn dialog_hop(
        &self,
        state: &mut State,
        core: &Arc<Core>,
        request: &Message,
        source: &Source,
    ) -> Option<(Source, Uri)> {
        let call_id = request.call_id()?;
        let from = request.from().ok()?;
        let to = request.to().ok()?;
        let (dialog, side) =
            state
                .dialogs
                .find_mut(call_id, from.tag().unwrap_or(""), to.tag().unwrap_or(""))?;
        if dialog.party(side).addr.ip() != source.addr.ip() {
            tracing::info!(peer = %source.addr, call_id, "in-dialog request from a stranger refused");
            return None;
        }
        let cseq = request.cseq().ok()?.seq;
        let other = match side {
            Side::Caller => {
                dialog.caller_cseq = dialog.caller_cseq.max(cseq);
                dialog.callee
            }
            Side::Callee => {
                dialog.callee_cseq = dialog.callee_cseq.max(cseq);
                dialog.caller
            }
        };
        let uri = request.request_uri()?.clone();
        if request.method() == Some(&Method::Bye) {
            let id = dialog.id;
            if let Some(dialog) = state.dialogs.remove(call_id, id) {
                close_cdr(core, dialog);
            }
        }
        Some((other, uri))
    }

    // -----------------------------------------------------------------------
    // Timers

    fn spawn_ring_timer(&self, core: &Arc<Core>, call: u64, after: Duration) {
        let core = core.clone();
        self.runtime.spawn(async move {
            tokio::time::sleep(after).await;
            core.proxy.ring_timeout(&core, call);
        });
    }

    fn ring_timeout(&self, core: &Arc<Core>, id: u64) {
        let mut state = self.state.lock().unwrap();
        let Some(mut call) = state.calls.remove(&id) else {
            return;
        };
        if !call.answered && !call.final_sent {
            self.nobody_answered(core, &mut call, 480, "Temporarily Unavailable");
        }
        self.keep(&mut state, call);
    }

    fn spawn_step_timer(&self, core: &Arc<Core>, call: u64, step: u32, after: Duration) {
        let core = core.clone();
        self.runtime.spawn(async move {
            tokio::time::sleep(after).await;
            core.proxy.step_timeout(&core, call, step);
        });
    }

    /// A hunt member rang long enough: stop its phones, ring the next.
    fn step_timeout(&self, core: &Arc<Core>, id: u64, step: u32) {
        let mut state = self.state.lock().unwrap();
        let Some(mut call) = state.calls.remove(&id) else {
            return;
        };
        if call.step == step && !call.answered && !call.final_sent {
            for branch in call.branches.iter_mut().filter(|b| b.step == step) {
                self.stop_branch(core, branch, "");
            }
            if !self.next_step(core, &mut call) {
                self.nobody_answered(core, &mut call, 480, "Temporarily Unavailable");
            }
        }
        self.keep(&mut state, call);
    }

    /// Timer A/B (INVITE) or E/F (other methods): retransmit over UDP until a
    /// response; no response within 64*T1 is a 408 of that branch.
    fn spawn_branch_timer(
        &self,
        core: &Arc<Core>,
        call: u64,
        branch: usize,
        reliable: bool,
        invite: bool,
    ) {
        let core = core.clone();
        let (t1, t2) = (self.t1, self.t2);
        self.runtime.spawn(async move {
            let deadline = tokio::time::Instant::now() + 64 * t1;
            let mut interval = t1;
            loop {
                let wake = if reliable {
                    deadline
                } else {
                    (tokio::time::Instant::now() + interval).min(deadline)
                };
                tokio::time::sleep_until(wake).await;
                let expired = tokio::time::Instant::now() >= deadline;
                match core.proxy.branch_tick(&core, call, branch, expired) {
                    Tick::Again => {}
                    Tick::Stop => break,
                }
                // Timer A doubles without bound; Timer E stops at T2.
                interval = if invite {
                    interval * 2
                } else {
                    (interval * 2).min(t2.max(t1))
                };
            }
        });
    }

    fn branch_tick(&self, core: &Arc<Core>, id: u64, index: usize, expired: bool) -> Tick {
        let mut state = self.state.lock().unwrap();
        let Some(mut call) = state.calls.remove(&id) else {
            return Tick::Stop;
        };
        let tick = match call.branches.get(index).map(|b| b.state) {
            None | Some(BranchState::Done) => Tick::Stop,
            // An INVITE that rings waits for its answer or the ring timer.
            Some(BranchState::Proceeding) if call.method == Method::Invite => Tick::Stop,
            Some(_) if expired => {
                self.branch_failed(core, &mut call, index, 408, None);
                Tick::Stop
            }
            Some(_) => {
                let branch = &call.branches[index];
                core.out.send(&branch.to, branch.bytes.clone());
                Tick::Again
            }
        };
        self.keep(&mut state, call);
        tick
    }

    /// After the caller's final response, a call whose branches never
    /// finished (no answer to our CANCEL) is forgotten after 64*T1.
    fn spawn_cleanup(&self, core: &Arc<Core>, call: u64) {
        let core = core.clone();
        let after = 64 * self.t1;
        self.runtime.spawn(async move {
            tokio::time::sleep(after).await;
            let mut state = core.proxy.state.lock().unwrap();
            if let Some(call) = state.calls.remove(&call) {
                state.by_key.remove(&call.key);
            }
        });
    }

    /// The maximum call duration: the gateway ends a call whose BYE never
    /// came, with a BYE to each party.
    fn spawn_dialog_timer(
        &self,
        core: &Arc<Core>,
        call_id: String,
        id: u64,
    ) -> tokio::task::AbortHandle {
        let core = core.clone();
        let after = self.max_duration;
        let task = self.runtime.spawn(async move {
            tokio::time::sleep(after).await;
            let dialog = core.proxy.state.lock().unwrap().dialogs.remove(&call_id, id);
            if let Some(mut dialog) = dialog {
                // This task is the timer: it must not abort itself.
                dialog.timer = None;
                tracing::info!(call_id = %dialog.call_id, "call exceeded calls.max_duration_ms: ended with BYE");
                core.proxy.send_byes(&core, &dialog);
                close_cdr(&core, dialog);
            }
        });
        task.abort_handle()
    }

    /// BYE to both parties of a dialog, each as from the other party.
    fn send_byes(&self, core: &Arc<Core>, dialog: &Dialog) {
        let reason = "SIP;cause=408;text=\"Maximum call duration\"";
        let legs = [
            (
                &dialog.callee,
                &dialog.callee_contact,
                &dialog.caller_from,
                &dialog.callee_to,
                dialog.caller_cseq + 1,
            ),
            (
                &dialog.caller,
                &dialog.caller_contact,
                &dialog.callee_to,
                &dialog.caller_from,
                dialog.callee_cseq.max(1) + 1,
            ),
        ];
        for (to, contact, from, to_header, cseq) in legs {
            let Ok(target) = Uri::parse(contact) else {
                continue;
            };
            let local = core.out.local_host_port(to.addr);
            let branch = format!("{}b{:016x}", self.prefix, rand::random::<u64>());
            let mut bye = forward::bye(
                &target,
                from,
                to_header,
                &dialog.call_id,
                cseq,
                &forward::via(to.transport, &local, &branch),
            );
            bye.headers.push("Reason", reason);
            core.out.send(to, bye.to_bytes().into());
        }
    }
}

/// A number fit for the user part of a Request-URI sent to a trunk: 1-32
/// characters of `[0-9A-Za-z.+*_-]`.
fn dialable(number: &str) -> bool {
    (1..=32).contains(&number.len())
        && number
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'*' | b'_' | b'-'))
}

/// Writes the record of an answered call that ended now.
fn close_cdr(core: &Arc<Core>, mut dialog: Dialog) {
    if let Some(mut cdr) = dialog.cdr.take() {
        let now = now_ms();
        cdr.end_ms = now;
        cdr.duration_ms = now.saturating_sub(cdr.answer_ms.unwrap_or(now));
        emit_call_ended(core, &cdr, &dialog.caller);
        core.store.write_detached(vec![Write::InsertCdr(cdr)]);
    }
}

/// Tells the plugins that a call ended, with its record.
///
/// A CDR is final while the state lock is held (in `send_final`, and in
/// `close_cdr` from `dialog_hop`), and running plugins under that lock would
/// stall every call for as long as they take (up to their deadline). So the
/// event is handed to the runtime and emitted after the lock is released;
/// the event is after the fact, and its ban reaction (of the caller's
/// source) applies all the same. `spawn_blocking`, not `spawn`: a plugin
/// call is synchronous work that must not hold up the tasks of the timers
/// and of TCP. Events of different calls may reach plugins in any order; a
/// call's call-started always comes before its call-ended (see `start`).
fn emit_call_ended(core: &Arc<Core>, cdr: &Cdr, caller: &Source) {
    if !core.hears(EventKind::Call) {
        return;
    }
    let event = Event::CallEnded {
        cdr: cdr.clone(),
        source: caller.addr,
        transport: caller.transport,
    };
    let emitting = core.clone();
    core.proxy.runtime.spawn_blocking(move || {
        emitting.emit(event);
    });
}
