//! The control socket: a Unix socket (mode 0600) where `sipfence NOUN VERB`
//! commands reach a running gateway, the way `kamcmd` and `fail2ban-client`
//! do. One JSON request per line, one JSON answer per line:
//! `{"command":"registrations.list"}` -> `{"ok":true,"result":[...]}`.
//! A command that takes structured input has it in `params`:
//! `{"command":"cdrs.list","params":{"extension":"101","limit":20}}`.
//! The HTTP management API calls the same handlers ([`crate::manage`]).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::cdr::CdrFilter;
use crate::manage::{self, Actor, ManageError, RegistrationFilter};
use crate::run::Plugins;
use crate::server::Core;

pub use crate::manage::RegistrationRow;

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

/// The answer to a request, as a client reads it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer as the gateway writes it: a result is serialized straight to
/// its JSON text. A `serde_json::Value` tree of 100,000 registrations took
/// ~130 MB, which the allocator kept after the listing.
#[derive(Serialize)]
struct Reply {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
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
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(request) => handle(&request, core, plugins).await,
            Err(e) => failure(format!("malformed request: {e}")),
        };
        let mut text = serde_json::to_string(&reply).unwrap_or_default();
        text.push('\n');
        write.write_all(text.as_bytes()).await?;
    }
    Ok(())
}

fn failure(error: impl Into<String>) -> Reply {
    Reply {
        ok: false,
        result: None,
        error: Some(error.into()),
    }
}

/// Executes one command: each is one call into [`crate::manage`], the
/// functions the HTTP API calls too.
async fn handle(request: &Request, core: &Arc<Core>, plugins: &Arc<Plugins>) -> Reply {
    let actor = Actor::ControlSocket;
    let result: Result<Box<RawValue>, String> = match request.command.as_str() {
        "registrations.list" => json(manage::registrations(core, &RegistrationFilter::default())),
        "bans.list" => json(manage::list_bans(core)),
        "bans.unban" => {
            let address = request.argument.as_deref().unwrap_or("");
            match manage::unban(core, address, &actor).await {
                Ok(key) => json(format!("{key} unbanned")),
                Err(ManageError::BadInput { .. }) => Err("bans.unban needs an IP address".into()),
                Err(e) => Err(e.to_string()),
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
            manage::cdrs(core, filter)
                .await
                .map_err(|e| e.to_string())
                .and_then(json)
        }
        "plugins.list" => json(manage::plugins(core)),
        "plugins.reload" => manage::reload_plugins(core, plugins, &actor)
            .await
            .map_err(|e| e.to_string())
            .and_then(json),
        "stats" => json(manage::stats(core)),
        "calls.list" => json(core.proxy.active_calls()),
        other => Err(format!("unknown command {other:?}")),
    };
    match result {
        Ok(value) => Reply {
            ok: true,
            result: Some(value),
            error: None,
        },
        Err(e) => failure(e),
    }
}

fn json(value: impl Serialize) -> Result<Box<RawValue>, String> {
    serde_json::value::to_raw_value(&value).map_err(|e| e.to_string())
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
