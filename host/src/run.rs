//! Starting and stopping the gateway: open the store, restore bindings and
//! bans, load the plugin chain, bind the listeners (SIP, and the standalone
//! STUN listener), serve until told to stop (reloading the chain on SIGHUP),
//! then flush.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api;
use crate::auth::{Authenticator, Secrets};
use crate::config::Config;
use crate::control;
use crate::directory::{self, Directory};
use crate::guard::Guard;
use crate::keepalive;
use crate::mail::service::PluginMailer;
use crate::mail::{MailQueue, Mailer};
use crate::plugins::{Chain, EngineOptions, PluginEngine, PluginError, SharedState};
use crate::proxy::Proxy;
use crate::registrar::location::Location;
use crate::registrar::Registrar;
use crate::server::{self, now_ms, tenant_key, Core, Gateway, Sink};
use crate::stats::Stats;
use crate::store::{self, Grouping, Store, Write};
use crate::stun;
use crate::transaction::{Timers, Transactions};
use crate::transport::{ban_filter, tcp, udp, Outbound};
use crate::voicemail::Voicemail;

/// Errors that stop the gateway from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot listen on {addr} ({transport}): {source}")]
    Bind {
        addr: SocketAddr,
        transport: &'static str,
        source: std::io::Error,
    },
    #[error("control socket {path}: {source}")]
    Control {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("HTTP API TLS ([api] tls_cert / tls_key): {0}")]
    ApiTls(String),
    #[error("{0}")]
    Voicemail(String),
    #[error("cannot start the kernel ban filter's thread: {0}")]
    BanFilter(std::io::Error),
    #[error("mail queue: {0}")]
    Mail(#[from] crate::mail::MailError),
    #[error("cannot listen on {addr} (HTTP API, [api] listen): {source}")]
    Api {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The plugin chain and what it needs to be rebuilt on reload.
pub struct Plugins {
    pub engine: PluginEngine,
    /// Counters and values of every plugin: they outlive any one chain.
    pub state: Arc<SharedState>,
    /// Where the config came from (None: the embedded default).
    pub config_path: Option<PathBuf>,
}

impl Plugins {
    /// Re-reads the config and loads its chain. Blocking (compiles wasm).
    pub fn load_chain(&self) -> Result<Chain, String> {
        let config = match &self.config_path {
            Some(path) => Config::load(path).map_err(|e| e.to_string())?,
            None => Config::embedded_default(),
        };
        Chain::load(&config.plugins, &self.engine, self.state.clone()).map_err(|e| e.to_string())
    }
}

/// Loads the chain again and swaps it in atomically; on failure the old
/// chain stays and the error says why. Registrations, counters and bans are
/// untouched: they live outside the chain.
pub async fn reload_chain(core: &Arc<Core>, plugins: &Arc<Plugins>) -> Result<Vec<String>, String> {
    let loader = plugins.clone();
    let loaded = tokio::task::spawn_blocking(move || loader.load_chain())
        .await
        .map_err(|e| format!("reload task failed: {e}"))?;
    match loaded {
        Ok(chain) => {
            let names: Vec<String> = chain.names().map(str::to_owned).collect();
            *core.chain.write().unwrap() = Arc::new(chain);
            tracing::info!(plugins = ?names, "plugin chain reloaded");
            Ok(names)
        }
        Err(e) => {
            tracing::error!(error = %e, "plugin chain reload failed; keeping the old chain");
            Err(e)
        }
    }
}

/// Runs the gateway until `shutdown` resolves.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    let config = Arc::new(config);
    let store = Store::open(
        &config.storage.database,
        config.storage.synchronous,
        Grouping {
            max: config.storage.commit_batch_max,
            target: config.storage.commit_group,
            delay: Duration::from_micros(config.storage.commit_delay_us),
        },
    )?;

    // Bindings acknowledged before a restart (or a crash) come back.
    let location = Arc::new(Location::default());
    let now = now_ms();
    let reader = store.reader()?;
    let restored = location.restore(store::load_bindings(&reader, now)?);
    store
        .write(vec![Write::PurgeExpired { now_ms: now }])
        .await?;
    tracing::info!(restored, database = %config.storage.database.display(), "bindings restored");

    let directory = load_directory(&config, &store, &reader).await?;

    // Bans survive restarts too.
    let guard = Arc::new(
        Guard::new(config.bans.ipv6_prefix_len, config.bans.never_ban.clone())
            .with_kernel_drop_after(config.bans.kernel_drop_after),
    );
    let bans = guard.restore(store::load_bans(&reader, now)?, now);
    tracing::info!(bans, "bans restored");
    let api_token = match config.api.enabled {
        true => Some(api_token(&config, &store, &reader).await?),
        false => None,
    };
    let voicemail = Arc::new(
        Voicemail::load(&config, store::last_voicemail_id(&reader)?)
            .map_err(StartError::Voicemail)?,
    );
    drop(reader);

    // Mail queued before a restart (or a crash) is picked up at once.
    let mail_queue = Arc::new(MailQueue::open(
        &config.storage.database,
        &config.mail.from,
    )?);
    tracing::info!(queued = mail_queue.depth()?, "mail queue opened");
    let mailer = Arc::new(Mailer::spawn(
        mail_queue,
        crate::mail::service::settings(&config.mail),
    ));

    let plugins = Arc::new(Plugins {
        engine: PluginEngine::with_options(EngineOptions::for_plugins(&config.plugins))?,
        state: Arc::new(SharedState::default()),
        config_path,
    });
    plugins.state.set_mail(Arc::new(PluginMailer {
        mailer: mailer.clone(),
        store: store.clone(),
        database: config.storage.database.clone(),
    }));
    let chain = {
        let (config, plugins) = (config.clone(), plugins.clone());
        tokio::task::spawn_blocking(move || {
            Chain::load(&config.plugins, &plugins.engine, plugins.state.clone())
        })
        .await
        .expect("plugin loading task")?
    };
    tracing::info!(plugins = ?chain.names().collect::<Vec<_>>(), "plugin chain loaded");

    let mut udp_sockets = Vec::new();
    let mut tcp_listeners = Vec::new();
    for addr in &config.server.listen {
        let (socket, listener) = bind_pair(*addr, config.server.udp_recv_buffer_bytes)?;
        let local = socket.local_addr().map_err(|source| StartError::Bind {
            addr: *addr,
            transport: "udp",
            source,
        })?;
        tracing::info!(udp = %local, tcp = %local, "listening");
        udp_sockets.push(Arc::new(socket));
        tcp_listeners.push(listener);
    }
    let mut stun_bound = Vec::new();
    for addr in &config.stun.listen {
        let (socket, listener) = bind_pair(*addr, config.server.udp_recv_buffer_bytes)?;
        let local = socket.local_addr().map_err(|source| StartError::Bind {
            addr: *addr,
            transport: "udp",
            source,
        })?;
        tracing::info!(udp = %local, tcp = %local, "stun listening");
        stun_bound.push((*addr, Arc::new(socket), listener));
    }

    let stats = Arc::new(Stats::default());
    let out = Outbound::new(udp_sockets.clone());
    let timers = Timers {
        t1: Duration::from_millis(config.transaction.t1_ms),
        t2: Duration::from_millis(config.transaction.t2_ms),
        t4: Duration::from_millis(config.transaction.t4_ms),
        j: Duration::from_millis(config.transaction.timer_j_ms),
    };
    let transactions = Transactions::new(timers);
    let stun = Arc::new(stun::Responder::new(
        &config.server.user_agent,
        stats.clone(),
    ));
    let core = Arc::new(Core {
        config: config.clone(),
        directory,
        auth: Authenticator::new(
            rand::random::<[u8; 32]>(),
            Duration::from_millis(config.auth.nonce_lifetime_ms),
        )
        .accepting(&server::algorithms(&config)),
        algorithms: server::algorithms(&config),
        registrar: Registrar::new(location.clone(), store.clone(), config.registrar.clone()),
        transactions: transactions.clone(),
        out: out.clone(),
        stats: stats.clone(),
        guard: guard.clone(),
        stun: stun.clone(),
        chain: RwLock::new(Arc::new(chain)),
        store: store.clone(),
        proxy: Proxy::new(
            timers.t1,
            timers.t2,
            Duration::from_millis(config.calls.max_duration_ms),
        ),
        keepalive: Default::default(),
        voicemail,
        mailer,
    });
    let gateway = Gateway(core.clone());
    let sink: Arc<dyn Sink> = Arc::new(gateway.clone());

    let (stop_tx, stop_rx) = watch::channel(false);
    let udp_stop = Arc::new(AtomicBool::new(false));
    let mut udp_threads = Vec::new();
    // One receiver per two cores by default: the store's writer thread sends
    // the REGISTER answers, and on two cores a second receiver mostly adds
    // wake-ups (measured: 43 µs per registration with one, 66 µs with two).
    let receivers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
        n => n,
    };
    for (index, socket) in udp_sockets.iter().enumerate() {
        let threads = udp::spawn_receivers(
            "sipfence-udp",
            socket.clone(),
            index,
            sink.clone(),
            udp_stop.clone(),
            receivers,
        )
        .map_err(|source| StartError::Bind {
            addr: config.server.listen[index],
            transport: "udp",
            source,
        })?;
        udp_threads.extend(threads);
    }
    let mut tasks = Vec::new();
    let limits = tcp::Limits {
        max_connections: config.tcp.max_connections,
        max_per_source: config.tcp.max_connections_per_source,
        idle_timeout: Duration::from_millis(config.tcp.idle_timeout_ms),
        max_message_bytes: config.server.max_message_bytes,
    };
    for listener in tcp_listeners {
        tasks.push(tokio::spawn(tcp::accept_loop(
            listener,
            out.connections().clone(),
            limits,
            sink.clone(),
            stats.clone(),
            stop_rx.clone(),
        )));
    }
    if config.bans.kernel_drop_after > 0 {
        let sockets = udp_sockets
            .iter()
            .chain(stun_bound.iter().map(|(_, socket, _)| socket))
            .cloned()
            .collect();
        let filter = ban_filter::spawn(
            guard.clone(),
            sockets,
            config.bans.ipv6_prefix_len,
            stats.clone(),
            udp_stop.clone(),
        )
        .map_err(StartError::BanFilter)?;
        udp_threads.push(filter);
    }
    let gate = stun::Gate {
        responder: stun,
        guard,
        stats: stats.clone(),
    };
    for (index, (addr, socket, listener)) in stun_bound.into_iter().enumerate() {
        let running = stun::serve(index, socket, listener, &gate, limits, &udp_stop, &stop_rx)
            .map_err(|source| StartError::Bind {
                addr,
                transport: "udp",
                source,
            })?;
        udp_threads.push(running.thread);
        tasks.push(running.task);
    }
    let sweeper = transactions.spawn_sweeper(timers.t1.min(Duration::from_millis(500)));
    let purger = {
        let core = core.clone();
        let period = Duration::from_millis(config.storage.purge_interval_ms.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let now = now_ms();
                core.registrar.purge(now);
                core.guard.purge(now);
                core.auth.purge(now);
            }
        })
    };
    let pinger = (config.nat.ping_interval_ms > 0).then(|| {
        keepalive::spawn(
            core.clone(),
            Duration::from_millis(config.nat.ping_interval_ms),
            config.nat.ping_failures,
        )
    });
    let control_path = config.server.control_socket.clone();
    let control_listener = control::bind(&control_path).map_err(|source| StartError::Control {
        path: control_path.display().to_string(),
        source,
    })?;
    tasks.push(tokio::spawn(control::serve(
        control_listener,
        core.clone(),
        plugins.clone(),
        stop_rx.clone(),
    )));
    if let Some(token) = api_token {
        let addr = config.api.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Api { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| StartError::Api { addr, source })?;
        let state = Arc::new(api::ApiState::new(core.clone(), plugins.clone(), token));
        match &config.api.tls {
            None => {
                tracing::info!(addr = %local, scheme = "http", "api listening");
                tasks.push(tokio::spawn(api::serve(listener, state, stop_rx.clone())));
            }
            Some(files) => {
                let acceptor =
                    api::tls::acceptor(&files.cert, &files.key).map_err(StartError::ApiTls)?;
                tracing::info!(addr = %local, scheme = "https", "api listening");
                let listener = api::tls::TlsListener {
                    tcp: listener,
                    acceptor,
                };
                tasks.push(tokio::spawn(api::serve(listener, state, stop_rx.clone())));
            }
        }
    }
    let reloader = {
        let (core, plugins) = (core.clone(), plugins.clone());
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                return;
            };
            while hup.recv().await.is_some() {
                let _ = reload_chain(&core, &plugins).await;
            }
        })
    };
    tracing::info!(control = %control_path.display(), "ready");

    shutdown.await;
    tracing::info!("shutting down");
    // Messages being recorded are kept, while SIP still runs for the BYEs.
    core.voicemail.shutdown(Duration::from_secs(5)).await;
    let _ = stop_tx.send(true);
    udp_stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    for thread in udp_threads {
        let _ = thread.join();
    }
    sweeper.abort();
    purger.abort();
    reloader.abort();
    if let Some(pinger) = pinger {
        pinger.abort();
    }
    let _ = std::fs::remove_file(&control_path);
    store.flush().await?;
    Ok(())
}

/// Binds UDP and TCP on the same address. For port 0 (tests) the kernel picks
/// the UDP port and TCP takes the same one, retrying if it is taken.
fn bind_pair(addr: SocketAddr, recv_buffer: usize) -> Result<(UdpSocket, TcpListener), StartError> {
    let bind_err = |transport, source| StartError::Bind {
        addr,
        transport,
        source,
    };
    let attempts = if addr.port() == 0 { 20 } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let socket = udp::bind(addr, recv_buffer).map_err(|e| bind_err("udp", e))?;
        let local = socket.local_addr().map_err(|e| bind_err("udp", e))?;
        match tcp::bind(local) {
            Ok(listener) => return Ok((socket, listener)),
            Err(e) => last_error = Some(e),
        }
    }
    Err(bind_err(
        "tcp",
        last_error.unwrap_or_else(|| std::io::Error::other("no port")),
    ))
}

/// The digest secrets of every extension. An extension without a password
/// gets a random one on first start: stored, and shown once in the log.
async fn load_directory(
    config: &Config,
    store: &Store,
    reader: &rusqlite::Connection,
) -> Result<Directory, StartError> {
    let mut table = Directory::default();
    let mut generated = Vec::new();
    for tenant in &config.tenants {
        let key = tenant_key(tenant);
        for ext in &tenant.extensions {
            let password = match &ext.password {
                Some(p) => p.clone(),
                None => match store::generated_password(reader, key, &ext.number)? {
                    Some(p) => p,
                    None => {
                        let p = random_password();
                        tracing::warn!(
                            extension = %ext.number,
                            tenant = %tenant.domain.as_deref().unwrap_or("(default)"),
                            password = %p,
                            "generated a password for an extension without one; it is shown only this once"
                        );
                        generated.push(Write::SetGeneratedPassword {
                            tenant: key.to_owned(),
                            extension: ext.number.clone(),
                            password: p.clone(),
                            created_at_ms: now_ms(),
                        });
                        p
                    }
                },
            };
            table.insert(
                key,
                &ext.number,
                directory::Entry {
                    secrets: Secrets::new(&ext.number, &tenant.realm, &password),
                    max_contacts: ext.max_contacts.unwrap_or(config.registrar.max_contacts),
                },
            );
        }
    }
    if !generated.is_empty() {
        store.write(generated).await?;
    }
    Ok(table)
}

/// The API's bearer token: from the config, else the one generated on an
/// earlier start, else a new one (stored, and shown once in the log).
async fn api_token(
    config: &Config,
    store: &Store,
    reader: &rusqlite::Connection,
) -> Result<String, StartError> {
    if let Some(token) = &config.api.token {
        return Ok(token.clone());
    }
    if let Some(token) = store::setting(reader, API_TOKEN_SETTING)? {
        tracing::info!(token_id = %api::token_id(&token), "API token from the database");
        return Ok(token);
    }
    let token = format!("{}{}", random_password(), random_password());
    tracing::warn!(
        token = %token,
        token_id = %api::token_id(&token),
        "generated an API token ([api] token not set); it is shown only this once"
    );
    store
        .write(vec![Write::SetSetting {
            name: API_TOKEN_SETTING.to_owned(),
            value: token.clone(),
            created_at_ms: now_ms(),
        }])
        .await?;
    Ok(token)
}

/// The name the generated API token is stored under.
const API_TOKEN_SETTING: &str = "api_token";

/// 16 characters from an alphabet without look-alikes (~93 bits).
fn random_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..16)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}
