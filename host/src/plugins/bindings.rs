//! The one `bindgen!` call site: Rust bindings generated from
//! `wit/sipfence.wit`. Nothing outside `plugins::{bindings, conversions,
//! imports, runtime}` sees these types; the gateway uses the plain types of
//! [`super`].

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    // Host functions return `wasmtime::Result`: an `Err` traps the guest. Only
    // host bugs do that (a request handle that is not in the table).
    imports: { default: trappable },
    with: {
        "sipfence:plugin/types.request": crate::plugins::RequestView,
    },
});
