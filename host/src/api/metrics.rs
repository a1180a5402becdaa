//! Prometheus metrics, hand-rendered in the text exposition format 0.0.4
//! from the counters the gateway keeps anyway (relaxed atomics): a scrape
//! reads them, the message path pays nothing more.
//!
//! - every [`Stats`] counter as `sipfence_NAME_total`, its doc comment as help;
//! - `sipfence_requests_total{method}`, `sipfence_responses_total{class}`;
//! - gauges: bans in force, registrations, calls setting up and up,
//!   voicemail recordings in progress, the mail queue's depth;
//! - mail sent, retried and failed;
//! - per plugin: calls, failures by kind, health, and a call duration
//!   histogram (estimated from sampled calls, see `PluginStats`).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::server::{now_ms, Core};
use crate::stats::{Stats, METHODS};

/// The whole exposition.
pub fn render(core: &Core) -> String {
    let mut out = String::with_capacity(8192);
    let stats = &core.stats;
    let values = stats.snapshot();
    for ((name, value), (_, help)) in values.iter().zip(Stats::describe()) {
        family(&mut out, &format!("sipfence_{name}_total"), "counter", help);
        let _ = writeln!(out, "sipfence_{name}_total {value}");
    }

    family(
        &mut out,
        "sipfence_requests_total",
        "counter",
        "SIP requests received and parsed, by method.",
    );
    for (method, counter) in METHODS.iter().zip(&stats.requests_by_method) {
        let _ = writeln!(
            out,
            "sipfence_requests_total{{method=\"{method}\"}} {}",
            counter.load(Ordering::Relaxed)
        );
    }
    family(
        &mut out,
        "sipfence_responses_total",
        "counter",
        "SIP responses sent, by class (retransmissions not included).",
    );
    for (i, counter) in stats.responses_by_class.iter().enumerate() {
        let _ = writeln!(
            out,
            "sipfence_responses_total{{class=\"{}xx\"}} {}",
            i + 1,
            counter.load(Ordering::Relaxed)
        );
    }

    family(
        &mut out,
        "sipfence_messages_out_total",
        "counter",
        "SIP messages sent (requests, responses, retransmissions, pings), by transport.",
    );
    let [udp_out, tcp_out] = core.out.sent();
    let _ = writeln!(
        out,
        "sipfence_messages_out_total{{transport=\"udp\"}} {udp_out}"
    );
    let _ = writeln!(
        out,
        "sipfence_messages_out_total{{transport=\"tcp\"}} {tcp_out}"
    );

    let now = now_ms();
    gauge(
        &mut out,
        "sipfence_bans_active",
        "Bans in force.",
        core.guard.list(now).len(),
    );
    gauge(
        &mut out,
        "sipfence_registrations",
        "Current registrations (bindings).",
        core.registrar.location.count(now),
    );
    let (setting_up, up) = core.proxy.counts();
    family(
        &mut out,
        "sipfence_calls",
        "gauge",
        "Calls being set up, and calls that are up.",
    );
    let _ = writeln!(out, "sipfence_calls{{state=\"setting_up\"}} {setting_up}");
    let _ = writeln!(out, "sipfence_calls{{state=\"up\"}} {up}");
    gauge(
        &mut out,
        "sipfence_voicemail_recordings",
        "Voicemail calls in progress (answered by a mailbox, not yet stored).",
        core.voicemail.in_progress(),
    );
    // A failed count reads as -1: the scrape still shows the rest.
    let depth = core.mailer.queue().depth().map_or(-1, |d| d as i64);
    gauge(
        &mut out,
        "sipfence_mail_queue_depth",
        "Mails waiting to be sent (queued, not sent, not failed).",
        depth,
    );
    let mail = core.mailer.stats();
    for (name, help, value) in [
        ("sent", "Mails the SMTP server accepted.", &mail.sent),
        (
            "retried",
            "Failed SMTP tries that were scheduled again.",
            &mail.retried,
        ),
        (
            "failed",
            "Mails marked failed after too many permanent refusals.",
            &mail.failed,
        ),
    ] {
        family(
            &mut out,
            &format!("sipfence_mail_{name}_total"),
            "counter",
            help,
        );
        let _ = writeln!(
            out,
            "sipfence_mail_{name}_total {}",
            value.load(Ordering::Relaxed)
        );
    }

    let plugins = core.chain.read().unwrap().stats();
    family(
        &mut out,
        "sipfence_plugin_calls_total",
        "counter",
        "Calls that entered the plugin.",
    );
    for p in &plugins {
        let _ = writeln!(
            out,
            "sipfence_plugin_calls_total{{plugin=\"{}\"}} {}",
            p.name, p.calls
        );
    }
    family(
        &mut out,
        "sipfence_plugin_reused_total",
        "counter",
        "Calls saved by the plugin's promises: requests answered continue \
         (continue-for-user-agent), successes not delivered (none-for-repeats).",
    );
    for p in &plugins {
        let _ = writeln!(
            out,
            "sipfence_plugin_reused_total{{plugin=\"{}\"}} {}",
            p.name, p.reused
        );
    }
    family(
        &mut out,
        "sipfence_plugin_failures_total",
        "counter",
        "Failed plugin calls by kind: trap, timeout (deadline), out_of_memory, \
         bad_answer, new_instance.",
    );
    for p in &plugins {
        for (kind, value) in [
            ("trap", p.traps),
            ("timeout", p.timeouts),
            ("out_of_memory", p.out_of_memory),
            ("bad_answer", p.bad_answers),
            ("new_instance", p.new_instance_failures),
        ] {
            let _ = writeln!(
                out,
                "sipfence_plugin_failures_total{{plugin=\"{}\",kind=\"{kind}\"}} {value}",
                p.name
            );
        }
    }
    family(
        &mut out,
        "sipfence_plugin_healthy",
        "gauge",
        "1 when the plugin is entered, 0 during a backoff after failures.",
    );
    for p in &plugins {
        let healthy = matches!(p.health, crate::plugins::PluginHealth::Healthy);
        let _ = writeln!(
            out,
            "sipfence_plugin_healthy{{plugin=\"{}\"}} {}",
            p.name,
            u8::from(healthy)
        );
    }
    family(
        &mut out,
        "sipfence_plugin_call_duration_seconds",
        "histogram",
        "Plugin call duration (estimated from one call in eight, weighted, plus \
         every call that created an instance).",
    );
    for p in &plugins {
        let mut cumulative = 0u64;
        for (i, count) in p.latency_counts.iter().enumerate() {
            cumulative += count;
            let le = match p.latency_bounds_ns.get(i) {
                Some(ns) => format!("{}", *ns as f64 / 1e9),
                None => "+Inf".to_owned(),
            };
            let _ = writeln!(
                out,
                "sipfence_plugin_call_duration_seconds_bucket{{plugin=\"{}\",le=\"{le}\"}} {cumulative}",
                p.name
            );
        }
        let _ = writeln!(
            out,
            "sipfence_plugin_call_duration_seconds_sum{{plugin=\"{}\"}} {}",
            p.name,
            p.total_call_ns as f64 / 1e9
        );
        let _ = writeln!(
            out,
            "sipfence_plugin_call_duration_seconds_count{{plugin=\"{}\"}} {cumulative}",
            p.name
        );
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', " ");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}
