//! Built-in plugins: wasm components embedded in the binary, named in the
//! config as `path = "builtin:NAME"`.
//!
//! `host/build.rs` holds the list of built-ins and embeds each one whose
//! component `cargo xtask run|test` has built
//! (`plugins/target/wasm32-wasip2/release/NAME.wasm`, `-` as `_`). A build
//! without them still works; loading such a plugin fails with a message
//! saying how to get it.

use std::borrow::Cow;

use super::{PluginError, PluginSource, PluginSpec};

include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// The names of all built-in plugins, embedded or not.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|(name, _)| *name)
}

/// The embedded component of built-in `name`: None if there is no such
/// built-in, Some(None) if this build does not embed it.
pub fn component(name: &str) -> Option<Option<&'static [u8]>> {
    BUILTINS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}

/// The component bytes of `spec`: embedded, or read from its file.
pub(super) fn bytes_of(spec: &PluginSpec) -> Result<Cow<'static, [u8]>, PluginError> {
    match &spec.source {
        PluginSource::Builtin(builtin) => match component(builtin) {
            Some(Some(bytes)) => Ok(Cow::Borrowed(bytes)),
            Some(None) => Err(PluginError::BuiltinMissing {
                plugin: spec.name.clone(),
            }),
            None => Err(PluginError::UnknownBuiltin {
                plugin: spec.name.clone(),
                builtin: builtin.clone(),
                known: names().collect::<Vec<_>>().join(", "),
            }),
        },
        PluginSource::File(path) => {
            std::fs::read(path)
                .map(Cow::Owned)
                .map_err(|source| PluginError::Read {
                    plugin: spec.name.clone(),
                    path: path.clone(),
                    source,
                })
        }
    }
}
