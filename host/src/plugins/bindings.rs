//! The one `bindgen!` call site: Rust bindings generated from
//! `wit/sipfence.wit`. Nothing outside `plugins::{bindings, conversions,
//! imports, runtime}` sees these types; the gateway uses the plain types of
//! [`super`].

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    // Host functions return `wasmtime::Result`: an `Err` traps the guest. Only
    // host bugs would do that.
    imports: { default: trappable },
});
