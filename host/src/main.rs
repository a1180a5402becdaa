//! The `sipfence` command: `sipfence NOUN VERB`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use sipfence::cdr::{self, CdrFilter, Disposition};
use sipfence::config::{Config, LogFormat};
use sipfence::control::{self, RegistrationRow};
use sipfence::guard::BanRow;
use sipfence::plugins::{Chain, PluginEngine, SharedState};
use sipfence::store;
use std::sync::Arc;

/// mimalloc: the message path allocates many small, short-lived buffers;
/// glibc's allocator spent a tenth of the REGISTER path consolidating them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc gives pages that stay empty for `purge_delay` (1 s in v3) back
/// to the OS. A finished transaction lingers for Timer J (5 s) and is then
/// freed by the sweeper, so under a steady load pages were given back and
/// faulted in again a moment later: ~450 page faults a second at 6,000
/// REGISTER/s, each zeroing a fresh page (often a 2 MB one, before
/// `no_transparent_huge_pages` turned those off). Pages are now kept for
/// twice Timer J (at least 10 s): a steady load reuses its memory, and what a
/// burst took goes back once the burst is over.
///
/// mimalloc purges only from inside an allocation or a collection, so a
/// gateway that falls idle after a burst would keep its memory: 100,000
/// registrations left ~60 MB resident, a listing of them ~110 MB. A thread
/// asks for the purges that are due once a second (a no-op when none is).
///
/// The crate's only `unsafe` blocks: FFI calls, as mimalloc has no other way
/// to set an option once the process runs (its environment is read before
/// `main`), nor to purge without allocating.
#[allow(unsafe_code)]
fn return_freed_pages_when_due(timer_j_ms: u64) {
    // `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (mimalloc.h);
    // libmimalloc-sys has no constant for it.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    let delay_ms = timer_j_ms.saturating_mul(2).max(10_000);
    let delay_ms = std::ffi::c_long::try_from(delay_ms).unwrap_or(std::ffi::c_long::MAX);
    // SAFETY: setting an option is a plain store in mimalloc; any value is
    // valid for this one (milliseconds; -1 would mean never).
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, delay_ms) };
    let purger = std::thread::Builder::new()
        .name("allocator-purge".into())
        .spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            // SAFETY: `mi_collect` takes no pointers; with `false` it frees
            // this thread's empty pages and purges the arena ranges whose
            // delay has passed, program-wide.
            unsafe { libmimalloc_sys::mi_collect(false) };
        });
    if let Err(e) = purger {
        eprintln!("sipfence: no allocator-purge thread ({e}); idle memory is returned later");
    }
}

/// Transparent huge pages off for the gateway's process. With them, the
/// first touch of fresh heap (the transaction table growing with the load,
/// say) zeroes 2 MB at once, and the thread that touched it stalls for that
/// long; the requests that queue meanwhile are then answered in a burst, and
/// a peer's receive buffer overflows. Alternated against the same build
/// with them, four runs each at 6,000–10,000 REGISTER/s: 0–54 SIPp
/// retransmissions per step without, 0–295 with, at the same CPU (see
/// PERFORMANCE.md). Linux only; elsewhere nothing to do.
#[allow(unsafe_code)]
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with PR_SET_THP_DISABLE takes integers only and
        // changes only whether this process's future page faults may use
        // huge pages.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            eprintln!(
                "sipfence: transparent huge pages stay on ({}): answers may leave in bursts under load",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[derive(Parser)]
#[command(
    name = "sipfence",
    version,
    about = "Edge SIP security gateway and registrar"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the embedded default config when no --config is given).
    Run {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file without starting.
    CheckConfig { file: PathBuf },
    /// Registrations (bindings) of the gateway.
    Registrations {
        #[command(subcommand)]
        verb: RegistrationsVerb,
    },
    /// Counters of a running gateway.
    Stats {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The ban list: on the running gateway, else in the database.
    Bans {
        #[command(subcommand)]
        verb: BansVerb,
    },
    /// The plugin chain of the running gateway.
    Plugins {
        #[command(subcommand)]
        verb: PluginsVerb,
    },
    /// Calls that are up now on the running gateway.
    Calls {
        #[command(subcommand)]
        verb: CallsVerb,
    },
    /// Call detail records, read from the database (running gateway or not).
    #[command(alias = "cdrs")]
    Cdr {
        #[command(subcommand)]
        verb: CdrVerb,
    },
    /// Recorded voicemail messages, read from the database.
    #[command(alias = "voicemails")]
    Voicemail {
        #[command(subcommand)]
        verb: VoicemailVerb,
    },
    /// The outgoing mail queue, read from the database.
    Mail {
        #[command(subcommand)]
        verb: MailVerb,
    },
}

#[derive(Subcommand)]
enum VoicemailVerb {
    /// List messages, newest first: when, mailbox, caller, length, how it
    /// ended, the mail's state, the file.
    List {
        #[arg(long)]
        config: Option<PathBuf>,
        /// This mailbox's messages only.
        #[arg(long, value_name = "N")]
        mailbox: Option<String>,
        /// The mailbox's tenant domain (default: the default tenant).
        #[arg(long, value_name = "DOMAIN", default_value = "")]
        tenant: String,
        /// At most N messages; 0 for all.
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum MailVerb {
    /// List mails, newest first: state, tries, recipients, subject, the
    /// last error. (Retry one now: `POST /mail/{id}/retry` of the API.)
    List {
        #[arg(long)]
        config: Option<PathBuf>,
        /// At most N mails.
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CdrVerb {
    /// List calls, newest first: start, caller, callee, disposition, status,
    /// talk time, route. `--csv` for a spreadsheet, `--json` for everything.
    ///
    /// WHEN is RFC 3339 (2026-11-26T08:00:00Z), a date (2026-11-26, midnight
    /// UTC) or an age before now (30s, 15m, 2h, 7d, 2w). Times shown are UTC.
    List {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Calls that started at or after WHEN.
        #[arg(long, value_name = "WHEN", value_parser = when_arg)]
        since: Option<u64>,
        /// Calls that started before WHEN.
        #[arg(long, value_name = "WHEN", value_parser = when_arg)]
        until: Option<u64>,
        /// Calls from or to this extension or number.
        #[arg(long, value_name = "N")]
        extension: Option<String>,
        /// answered, no-answer, busy, failed or cancelled.
        #[arg(long, value_name = "D")]
        disposition: Option<Disposition>,
        /// Calls of this tenant domain ("" for the default tenant).
        #[arg(long, value_name = "DOMAIN")]
        tenant: Option<String>,
        /// At most N calls; 0 for all. Default: 100, or all with --csv.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Skip the N newest matching calls first (paging).
        #[arg(long, value_name = "N", default_value_t = 0)]
        offset: usize,
        /// RFC 4180 CSV with a header row (columns in the README).
        #[arg(long, conflicts_with = "json")]
        csv: bool,
        /// JSON: every field of every record.
        #[arg(long)]
        json: bool,
    },
}

/// Parses a WHEN argument against the clock now (clap names the argument).
fn when_arg(text: &str) -> Result<u64, cdr::BadWhen> {
    cdr::parse_when(text, sipfence::now_ms())
}

#[derive(Subcommand)]
enum BansVerb {
    /// List current bans with their evidence.
    List {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Lift the ban covering ADDR (at once on a running gateway).
    Unban {
        address: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PluginsVerb {
    /// Plugins in chain order with call counts, latency, traps and state.
    List {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Reload the chain from the config file (as SIGHUP does).
    Reload {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CallsVerb {
    /// List answered calls without BYE yet: caller, callee, route, who
    /// answered, since when.
    List {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RegistrationsVerb {
    /// List current bindings: extension, contact, source, expires, user agent.
    List {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sipfence: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: &Option<PathBuf>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::embedded_default(),
    })
}

/// The async runtime runs TCP connections, timers and the control socket;
/// UDP has threads of its own (see `transport::udp`), so two workers do.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// What a command sent to the running gateway came to.
enum Called {
    /// No gateway answers on the control socket (not running, or a stale
    /// socket file left by a crash).
    NotRunning,
    Failed(String),
    Done(serde_json::Value),
}

/// Sends one command to the running gateway.
fn call_running(config: &Config, command: &str, argument: Option<&str>) -> anyhow::Result<Called> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let called = rt.block_on(control::call_with(
        &config.server.control_socket,
        command,
        argument,
    ));
    Ok(match called {
        Err(_) => Called::NotRunning,
        Ok(response) if !response.ok => Called::Failed(response.error.unwrap_or_default()),
        Ok(response) => Called::Done(response.result.unwrap_or_default()),
    })
}

/// Like [`call_running`], for commands that need the running gateway.
fn call_required(config: &Config, command: &str) -> anyhow::Result<serde_json::Value> {
    match call_running(config, command, None)? {
        Called::Done(value) => Ok(value),
        Called::Failed(e) => bail!(e),
        Called::NotRunning => bail!(
            "no gateway answers on {}",
            config.server.control_socket.display()
        ),
    }
}

fn bans(verb: BansVerb) -> anyhow::Result<()> {
    match verb {
        BansVerb::List { config, json } => {
            let config = load_config(&config)?;
            let rows: Vec<BanRow> = match call_running(&config, "bans.list", None)? {
                Called::Done(value) => serde_json::from_value(value)?,
                Called::Failed(e) => bail!(e),
                // Not running: read the database.
                Called::NotRunning => {
                    let path = &config.storage.database;
                    if !path.exists() {
                        Vec::new()
                    } else {
                        let conn = store::open_read_only(path)?;
                        store::load_bans(&conn, sipfence::now_ms())?
                            .into_iter()
                            .map(|b| BanRow {
                                address: b.address,
                                by: b.by,
                                reason: b.reason,
                                created_ms: b.created_ms,
                                until_ms: b.until_ms,
                                dropped: 0,
                                in_kernel: false,
                            })
                            .collect()
                    }
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let now = sipfence::now_ms();
                println!(
                    "{:<28} {:>10} {:>10}  {:<14} REASON",
                    "ADDRESS", "ENDS IN", "DROPPED", "BY"
                );
                for r in &rows {
                    println!(
                        "{:<28} {:>9}s {:>10}  {:<14} {}",
                        r.address,
                        r.until_ms.saturating_sub(now).div_ceil(1000),
                        r.dropped,
                        r.by,
                        r.reason
                    );
                }
                println!("{} ban(s)", rows.len());
            }
            Ok(())
        }
        BansVerb::Unban { address, config } => {
            let config = load_config(&config)?;
            let Some(ip) = sipfence::guard::parse_address(&address) else {
                bail!("not an IP address: {address:?}");
            };
            match call_running(&config, "bans.unban", Some(&ip.to_string()))? {
                Called::Done(value) => {
                    println!("{}", value.as_str().unwrap_or("unbanned"));
                    Ok(())
                }
                Called::Failed(e) => bail!(e),
                Called::NotRunning => {
                    // Not running: lift it in the database; the next start reads it.
                    let guard =
                        sipfence::guard::Guard::new(config.bans.ipv6_prefix_len, Vec::new());
                    let key = guard.describe(guard.key(ip));
                    if store::delete_ban(&config.storage.database, &key)? {
                        println!("{key} unbanned (in the database; the gateway is not running)");
                        Ok(())
                    } else {
                        bail!("{key} is not banned")
                    }
                }
            }
        }
    }
}

fn plugins(verb: PluginsVerb) -> anyhow::Result<()> {
    match verb {
        PluginsVerb::List { config } => {
            let config = load_config(&config)?;
            let value = call_required(&config, "plugins.list")?;
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(())
        }
        PluginsVerb::Reload { config } => {
            let config = load_config(&config)?;
            let value = call_required(&config, "plugins.reload")?;
            println!("reloaded: {value}");
            Ok(())
        }
    }
}

fn cdrs(verb: CdrVerb) -> anyhow::Result<()> {
    let CdrVerb::List {
        config,
        since,
        until,
        extension,
        disposition,
        tenant,
        limit,
        offset,
        csv,
        json,
    } = verb;
    if let (Some(s), Some(u)) = (since, until) {
        if s >= u {
            bail!(
                "--since ({}) must be before --until ({})",
                cdr::format_rfc3339_ms(s),
                cdr::format_rfc3339_ms(u)
            );
        }
    }
    let config = load_config(&config)?;
    let filter = CdrFilter {
        since_ms: since,
        until_ms: until,
        extension,
        disposition,
        tenant,
        limit: limit.unwrap_or(if csv { 0 } else { cdr::DEFAULT_LIMIT }),
        offset,
    };
    let rows = store::read_cdrs(&config.storage.database, &filter)?;
    if csv {
        print!("{}", cdr::to_csv(&rows));
    } else if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", cdr::render_table(&rows));
        if filter.limit != 0 && rows.len() == filter.limit {
            println!(
                "(limit of {} reached: --offset {} for the next ones, --limit 0 for all)",
                filter.limit,
                offset + rows.len()
            );
        }
    }
    Ok(())
}

fn voicemails(verb: VoicemailVerb) -> anyhow::Result<()> {
    let VoicemailVerb::List {
        config,
        mailbox,
        tenant,
        limit,
        json,
    } = verb;
    let config = load_config(&config)?;
    let conn = store::open_read_only(&config.storage.database)?;
    let rows = store::load_voicemails(&conn, &tenant, mailbox.as_deref(), limit)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<8} {:<16} {:>8} {:<10} {:<7} FILE",
        "RECEIVED", "MAILBOX", "CALLER", "LENGTH", "ENDED BY", "MAIL"
    );
    for v in &rows {
        let caller = match &v.caller_name {
            Some(name) => format!("{} ({name})", v.caller),
            None => v.caller.clone(),
        };
        println!(
            "{:<24} {:<8} {:<16} {:>7.1}s {:<10} {:<7} {}",
            cdr::format_rfc3339_ms(v.received_ms),
            v.mailbox,
            caller,
            v.duration_ms as f64 / 1000.0,
            v.ended_by,
            v.mail_state.as_deref().unwrap_or("-"),
            v.file
        );
    }
    Ok(())
}

fn mails(verb: MailVerb) -> anyhow::Result<()> {
    let MailVerb::List {
        config,
        limit,
        json,
    } = verb;
    let config = load_config(&config)?;
    let queue = sipfence::mail::MailQueue::open(&config.storage.database, &config.mail.from)?;
    let rows = queue.list(limit)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:>5} {:<7} {:>5} {:<24} {:<28} LAST ERROR",
        "ID", "STATE", "TRIES", "QUEUED", "TO"
    );
    for m in &rows {
        println!(
            "{:>5} {:<7} {:>5} {:<24} {:<28} {}",
            m.id,
            m.state.as_str(),
            m.attempts,
            cdr::format_rfc3339_ms(m.created_ms),
            m.rcpt.join(","),
            m.last_error.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config: path } => {
            let config = load_config(&path)?;
            no_transparent_huge_pages();
            return_freed_pages_when_due(config.transaction.timer_j_ms);
            init_logging(config.log.format);
            tracing::info!(config = %config.origin, version = env!("CARGO_PKG_VERSION"), "starting sipfence");
            let rt = runtime()?;
            rt.block_on(sipfence::run::run(config, path, shutdown_signal()))?;
            Ok(())
        }
        Command::Bans { verb } => bans(verb),
        Command::Plugins { verb } => plugins(verb),
        Command::Cdr { verb } => cdrs(verb),
        Command::Voicemail { verb } => voicemails(verb),
        Command::Mail { verb } => mails(verb),
        Command::Calls {
            verb: CallsVerb::List { config, json },
        } => {
            let config = load_config(&config)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let response = rt
                .block_on(control::call(&config.server.control_socket, "calls.list"))
                .with_context(|| {
                    format!(
                        "no gateway answers on {}",
                        config.server.control_socket.display()
                    )
                })?;
            let calls = response.result.unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&calls)?);
            } else {
                print_calls(calls.as_array().map(Vec::as_slice).unwrap_or_default());
            }
            Ok(())
        }
        Command::CheckConfig { file } => {
            let config = Config::load(&file)?;
            sipfence::voicemail::check_greetings(&config).map_err(anyhow::Error::msg)?;
            // Load the chain too: a plugin's own config is checked by its
            // init, and a missing capability grant only shows when loading.
            let engine = PluginEngine::new()?;
            let chain = Chain::load(&config.plugins, &engine, Arc::new(SharedState::default()))?;
            let extensions: usize = config.tenants.iter().map(|t| t.extensions.len()).sum();
            println!(
                "{}: ok ({} listen address(es), {} tenant(s), {} extension(s), {} plugin(s))",
                file.display(),
                config.server.listen.len(),
                config.tenants.len(),
                extensions,
                chain.len()
            );
            Ok(())
        }
        Command::Registrations {
            verb: RegistrationsVerb::List { config, json },
        } => {
            let config = load_config(&config)?;
            let rows = list_registrations(&config)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_registrations(&rows);
            }
            Ok(())
        }
        Command::Stats { config } => {
            let config = load_config(&config)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let response = rt
                .block_on(control::call(&config.server.control_socket, "stats"))
                .with_context(|| {
                    format!(
                        "no gateway answers on {}",
                        config.server.control_socket.display()
                    )
                })?;
            println!("{}", serde_json::to_string_pretty(&response.result)?);
            Ok(())
        }
    }
}

/// From the running gateway if there is one, else straight from the database.
fn list_registrations(config: &Config) -> anyhow::Result<Vec<RegistrationRow>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let Ok(response) = rt.block_on(control::call(
        &config.server.control_socket,
        "registrations.list",
    )) {
        if !response.ok {
            bail!(response.error.unwrap_or_default());
        }
        return Ok(serde_json::from_value(response.result.unwrap_or_default())?);
    }
    let path = &config.storage.database;
    if !path.exists() {
        return Ok(Vec::new());
    }
    let conn = store::open_read_only(path)?;
    let now = sipfence::server::now_ms();
    Ok(store::load_bindings(&conn, now)?
        .into_iter()
        .map(|b| RegistrationRow {
            tenant: b.tenant,
            extension: b.extension,
            key: b.key,
            contact: b.contact,
            source: b.source,
            transport: b.transport,
            expires_in_s: b.expires_at_ms.saturating_sub(now).div_ceil(1000),
            user_agent: b.user_agent,
        })
        .collect())
}

fn print_registrations(rows: &[RegistrationRow]) {
    println!(
        "{:<24} {:<40} {:<28} {:>8}  USER AGENT",
        "EXTENSION", "CONTACT", "SOURCE", "EXPIRES"
    );
    for r in rows {
        let ext = if r.tenant.is_empty() {
            r.extension.clone()
        } else {
            format!("{}@{}", r.extension, r.tenant)
        };
        println!(
            "{:<24} {:<40} {:<28} {:>7}s  {}",
            ext,
            r.contact,
            format!("{}/{}", r.source, r.transport),
            r.expires_in_s,
            r.user_agent.as_deref().unwrap_or("-")
        );
    }
    println!("{} registration(s)", rows.len());
}

fn print_calls(calls: &[serde_json::Value]) {
    println!(
        "{:<20} {:<20} {:<22} {:<24} {:>9}  CALL-ID",
        "CALLER", "CALLEE", "ROUTE", "ANSWERED BY", "UP FOR"
    );
    let text = |c: &serde_json::Value, key: &str| c[key].as_str().unwrap_or("").to_owned();
    for c in calls {
        let up_s = c["duration_ms"].as_u64().unwrap_or(0) / 1000;
        println!(
            "{:<20} {:<20} {:<22} {:<24} {:>3}:{:02}:{:02}  {}",
            text(c, "caller"),
            text(c, "callee"),
            text(c, "route"),
            text(c, "answered_by"),
            up_s / 3600,
            up_s / 60 % 60,
            up_s % 60,
            text(c, "call_id"),
        );
    }
    println!("{} call(s) up", calls.len());
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
