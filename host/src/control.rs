//! The control socket: a Unix socket (mode 0600) where `sipfence NOUN VERB`
//! commands reach a running gateway, the way `kamcmd` and `fail2ban-client`
//! do. One JSON request per line, one JSON answer per line:
//! `{"command":"registrations.list"}` -> `{"ok":true,"result":[...]}`.
//! A command that takes structured input has it in `params`:
//! `{"command":"cdrs.list","params":{"extension":"101","limit":20}}`.
//! The HTTP management API will call the same handlers.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::cdr::{Cdr, CdrFilter};
use crate::run::{reload_chain, Plugins};
use crate::server::{now_ms, Core};

/// A request on the control socket.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub command: String,
    /// The command's argument, e.g. the address for `bans.unban`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argument: Option<String>,
    /// Structured input, e.g. the [`CdrFilter`] of `cdrs.list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<serde_json::Value>,
}

/// The answer to a request.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One registration, as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegistrationRow {
    /// The tenant's domain, "" for the default tenant.
    pub tenant: String,
    pub extension: String,
    pub contact: String,
    /// Where the REGISTER came from, with its transport.
    pub source: String,
    pub transport: String,
    /// Seconds until the binding expires.
    pub expires_in_s: u64,
    pub user_agent: Option<String>,
}

/// Binds the socket, replacing a stale file from an earlier run, mode 0600.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another gateway is running on this control socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves control connections until shutdown.
pub async fn serve(
    listener: UnixListener,
    core: Arc<Core>,
    plugins: Arc<Plugins>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let core = core.clone();
        let plugins = plugins.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, &core, &plugins).await {
                tracing::debug!(error = %e, "control connection ended");
            }
        });
    }
}

async fn serve_connection(
    stream: UnixStream,
    core: &Arc<Core>,
    plugins: &Arc<Plugins>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(request) => handle(&request, core, plugins).await,
            Err(e) => Response {
                ok: false,
                result: None,
                error: Some(format!("malformed request: {e}")),
            },
        };
        let mut text = serde_json::to_string(&response).unwrap_or_default();
        text.push('\n');
        write.write_all(text.as_bytes()).await?;
    }
    Ok(())
}

fn failure(error: impl Into<String>) -> Response {
    Response {
        ok: false,
        result: None,
        error: Some(error.into()),
    }
}

/// Executes one command. Each command is one handler, shared with the HTTP API.
pub async fn handle(request: &Request, core: &Arc<Core>, plugins: &Arc<Plugins>) -> Response {
    let result = match request.command.as_str() {
        "registrations.list" => serde_json::to_value(registrations(core)),
        "bans.list" => serde_json::to_value(core.guard.list(now_ms())),
        "bans.unban" => {
            let Some(ip) = request
                .argument
                .as_deref()
                .and_then(crate::guard::parse_address)
            else {
                return failure("bans.unban needs an IP address");
            };
            match core.guard.unban(ip) {
                Some(write) => {
                    let key = core.guard.describe(core.guard.key(ip));
                    tracing::warn!(address = %key, by = "operator", "unbanned");
                    if let Err(e) = core.store.write(vec![write]).await {
                        return failure(e.to_string());
                    }
                    Ok(serde_json::Value::String(format!("{key} unbanned")))
                }
                None => return failure(format!("{ip} is not banned")),
            }
        }
        "cdrs.list" => {
            let filter = match request.params.clone() {
                None => CdrFilter::default(),
                Some(params) => match serde_json::from_value::<CdrFilter>(params) {
                    Ok(filter) => filter,
                    Err(e) => return failure(format!("cdrs.list: bad filter: {e}")),
                },
            };
            match cdrs(core, filter).await {
                Ok(rows) => serde_json::to_value(rows),
                Err(e) => return failure(e),
            }
        }
        "plugins.list" => serde_json::to_value(core.chain.read().unwrap().stats()),
        "plugins.reload" => match reload_chain(core, plugins).await {
            Ok(names) => serde_json::to_value(names),
            Err(e) => return failure(e),
        },
        "stats" => {
            let mut counters = core
                .stats
                .snapshot()
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>();
            // Gauges beside the counters: calls ringing and calls up now.
            let (ringing, up) = core.proxy.counts();
            counters.insert("calls_in_setup", ringing as u64);
            counters.insert("calls_up", up as u64);
            serde_json::to_value(counters)
        }
        "calls.list" => serde_json::to_value(core.proxy.active_calls()),
        other => {
            return Response {
                ok: false,
                result: None,
                error: Some(format!("unknown command {other:?}")),
            }
        }
    };
    match result {
        Ok(value) => Response {
            ok: true,
            result: Some(value),
            error: None,
        },
        Err(e) => Response {
            ok: false,
            result: None,
            error: Some(e.to_string()),
        },
    }
}

/// Every current registration.
pub fn registrations(core: &Core) -> Vec<RegistrationRow> {
    let now = now_ms();
    core.registrar
        .location
        .all(now)
        .into_iter()
        .map(|(aor, b)| RegistrationRow {
            tenant: aor.tenant,
            extension: aor.extension,
            contact: b.contact.to_string(),
            source: b.source.to_string(),
            transport: b.transport.as_str().to_owned(),
            expires_in_s: b.expires_at_ms.saturating_sub(now).div_ceil(1000),
            user_agent: b.user_agent.as_deref().map(str::to_owned),
        })
        .collect()
}

/// The call detail records `filter` selects, newest first, read on a
/// blocking thread with a read-only connection (the writer is not held up).
pub async fn cdrs(core: &Core, filter: CdrFilter) -> Result<Vec<Cdr>, String> {
    let store = core.store.clone();
    tokio::task::spawn_blocking(move || {
        let conn = store.reader()?;
        crate::store::load_cdrs(&conn, &filter)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

/// Sends one command to a running gateway.
pub async fn call(path: &Path, command: &str) -> std::io::Result<Response> {
    call_with(path, command, None).await
}

/// Sends one command with an argument to a running gateway.
pub async fn call_with(
    path: &Path,
    command: &str,
    argument: Option<&str>,
) -> std::io::Result<Response> {
    send(
        path,
        &Request {
            command: command.to_owned(),
            argument: argument.map(str::to_owned),
            params: None,
        },
    )
    .await
}

/// Sends one request to a running gateway and reads its answer.
pub async fn send(path: &Path, request: &Request) -> std::io::Result<Response> {
    let stream = UnixStream::connect(path).await?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(request)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    let mut lines = BufReader::new(read).lines();
    let line = lines
        .next_line()
        .await?
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no answer"))?;
    serde_json::from_str(&line).map_err(std::io::Error::other)
}
