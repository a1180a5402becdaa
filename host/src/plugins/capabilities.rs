//! Capabilities: which host imports a plugin may use.
//!
//! - `sipfence:plugin/types`, `request` (the getters of the request in
//!   progress), `log` and `clock`: always granted.
//! - `sipfence:plugin/counter` and `sipfence:plugin/kv`: only when the
//!   plugin's config says `grants = ["counter"]` / `["kv"]`. Importing one
//!   without the grant is a load error naming the plugin and the grant.
//! - `wasi:*`: a Rust guest's standard library imports WASI interfaces it
//!   never calls. They are linked as functions that trap: no files, sockets,
//!   environment, clocks or randomness reach a plugin through WASI.
//! - Anything else is a load error naming the import.
//!
//! The check reads the component's import list at load, before linking, so
//! the error names the capability instead of wasmtime's "missing import".

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, Linker, ResourceType};
use wasmtime::Engine;

use super::bindings::sipfence::plugin::{clock, counter, kv, log, mail, request, types};
use super::imports::HostState;
use super::{Grant, PluginError};

/// The package every plugin import of ours belongs to.
const PACKAGE: &str = "sipfence:plugin";

/// The version this host implements; imports must be semver-compatible
/// (`0.6.x`).
const COMPATIBLE: &str = "0.6.";

/// Checks the component's imports against the grants: Ok when it can be
/// linked with [`linker`].
pub(super) fn check_imports(
    plugin: &str,
    engine: &Engine,
    component: &Component,
    grants: &[Grant],
) -> Result<(), PluginError> {
    for (import, item) in component.component_type().imports(engine) {
        if import.starts_with("wasi:") {
            continue;
        }
        // A world's `use types.{verdict}` shows up as a top-level type
        // import equal to the one in `sipfence:plugin/types`: nothing to
        // provide (a type the linker cannot satisfy is its error to report).
        if matches!(item.ty, ComponentItem::Type(_) | ComponentItem::Resource(_)) {
            continue;
        }
        let unknown = || PluginError::UnknownImport {
            plugin: plugin.to_owned(),
            import: import.to_owned(),
        };
        let (path, version) = import.split_once('@').unwrap_or((import, ""));
        let Some(interface) = path
            .strip_prefix(PACKAGE)
            .and_then(|rest| rest.strip_prefix('/'))
        else {
            return Err(unknown());
        };
        if !version.starts_with(COMPATIBLE) {
            return Err(unknown());
        }
        let needed = match interface {
            "types" | "request" | "log" | "clock" => None,
            "counter" => Some(Grant::Counter),
            "kv" => Some(Grant::Kv),
            "mail" => Some(Grant::Mail),
            _ => return Err(unknown()),
        };
        if let Some(grant) = needed {
            if !grants.contains(&grant) {
                return Err(PluginError::NotGranted {
                    plugin: plugin.to_owned(),
                    import: import.to_owned(),
                    grant: grant.as_str(),
                });
            }
        }
    }
    Ok(())
}

/// The linker for one plugin: the always-granted interfaces, the granted
/// ones, and traps for every WASI import of `component`. Call
/// [`check_imports`] first, so that a missing grant is reported as such.
pub(super) fn linker(
    engine: &Engine,
    component: &Component,
    grants: &[Grant],
) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::<HostState>::new(engine);
    types::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    request::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    log::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    clock::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    for (i, grant) in grants.iter().enumerate() {
        if grants[..i].contains(grant) {
            continue;
        }
        match grant {
            Grant::Counter => {
                counter::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?
            }
            Grant::Kv => kv::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?,
            Grant::Mail => {
                mail::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?
            }
        }
    }
    stub_wasi(&mut linker, engine, component)?;
    Ok(linker)
}

/// What WASI resources are, for a plugin: nothing it can ever get.
struct NoWasi;

/// Defines every function of every `wasi:*` instance `component` imports as
/// one that traps, and its resources as types no value ever has. Unlike
/// `Linker::define_unknown_imports_as_traps` this touches WASI only, so a
/// non-WASI import the host does not provide stays a link error.
fn stub_wasi(
    linker: &mut Linker<HostState>,
    engine: &Engine,
    component: &Component,
) -> wasmtime::Result<()> {
    for (import, item) in component.component_type().imports(engine) {
        if !import.starts_with("wasi:") {
            continue;
        }
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            continue;
        };
        let mut stubs = linker.instance(import)?;
        for (name, export) in instance.exports(engine) {
            match export.ty {
                ComponentItem::ComponentFunc(_) => {
                    let what = format!("{import}#{name}");
                    stubs.func_new(name, move |_, _, _, _| {
                        wasmtime::bail!("{what}: plugins get no WASI (use the sipfence imports)")
                    })?;
                }
                ComponentItem::Resource(_) => {
                    stubs.resource(name, ResourceType::host::<NoWasi>(), |_, _| Ok(()))?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}
