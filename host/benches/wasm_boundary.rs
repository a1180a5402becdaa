//! What crossing the sandbox boundary costs in wasmtime 48, by the shape of
//! the call: the figures behind the plugin interface's design (what comes
//! with `on-request` as arguments, what stays behind getters).
//!
//! Run: `cargo bench -p sipfence --bench wasm_boundary`
//!
//! One tiny component, written in WebAssembly text, exports functions of
//! different signatures and imports host functions of different
//! signatures; each benchmark is one call from the host (the engine is
//! configured like the gateway's: Cranelift, epoch interruption):
//! - `export/u32`: the floor of a host-to-guest call;
//! - `export/u32-post-return`: the same with a post-return function, which
//!   every export returning text or a variant with text has;
//! - `export/seven-flat-values`: `request-basics` without the User-Agent;
//! - `export/u32+string`: one 32-byte string argument (the host calls the
//!   guest's `realloc` to place it);
//! - `export/borrow`: a borrowed resource handle, which the guest must drop
//!   before returning (the 0.2 interface's `borrow<request>`);
//! - `import/no-args`, `import/string->none`, `import/->text`: an export
//!   whose body calls one host function: without arguments; with a string
//!   key, returning an empty option (like `kv.get` of a missing key); or
//!   returning a 28-byte text (like a getter; the host calls the guest's
//!   `realloc` for it). Subtract `export/u32` for the import alone.
//! - `import/borrowed-string->none`: `string->none` with the host taking the
//!   key as a `WasmStr` (a view of guest memory) instead of a `String`: what
//!   hand-written linker entries would save over `bindgen!`'s.

use criterion::{criterion_group, criterion_main, Criterion};
use wasmtime::component::{Component, Linker, Resource, ResourceType};
use wasmtime::{Config, Engine, Store};

struct Handle;

const COMPONENT: &str = r#"(component
  (import "handle" (type $handle (sub resource)))
  (import "no-args" (func $no-args (result u32)))
  (import "get" (func $get (param "key" string) (result (option string))))
  (import "get-borrowed" (func $get-borrowed (param "key" string) (result (option string))))
  (import "text" (func $text (result (option string))))
  (core module $Mem
    (memory (export "memory") 1)
    ;; Every allocation gets the same scratch space: nothing is kept.
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 4096)))
  (core instance $mem (instantiate $Mem))
  (core func $drop (canon resource.drop $handle))
  (core func $no-args (canon lower (func $no-args)))
  (core func $get (canon lower (func $get) (memory $mem "memory") (realloc (func $mem "realloc"))))
  (core func $get-borrowed (canon lower (func $get-borrowed) (memory $mem "memory") (realloc (func $mem "realloc"))))
  (core func $text (canon lower (func $text) (memory $mem "memory") (realloc (func $mem "realloc"))))
  (core module $Main
    (import "host" "drop" (func $drop (param i32)))
    (import "host" "no-args" (func $no-args (result i32)))
    (import "host" "get" (func $get (param i32 i32 i32)))
    (import "host" "get-borrowed" (func $get-borrowed (param i32 i32 i32)))
    (import "host" "text" (func $text (param i32)))
    (func (export "u32") (param i32) (result i32) (local.get 0))
    (func (export "post") (param i32))
    (func (export "seven") (param i32 i32 i64 i64 i32 i32 i32) (result i32) (local.get 0))
    (func (export "string") (param i32 i32 i32) (result i32) (local.get 2))
    (func (export "borrow") (param i32) (result i32) (call $drop (local.get 0)) (i32.const 0))
    (func (export "call-no-args") (param i32) (result i32) (call $no-args))
    (func (export "call-get") (param i32) (result i32)
      (call $get (i32.const 0) (i32.const 16) (i32.const 1024))
      (i32.const 0))
    (func (export "call-get-borrowed") (param i32) (result i32)
      (call $get-borrowed (i32.const 0) (i32.const 16) (i32.const 1024))
      (i32.const 0))
    (func (export "call-text") (param i32) (result i32)
      (call $text (i32.const 1024))
      (i32.const 0)))
  (core instance $main (instantiate $Main
    (with "host" (instance
      (export "drop" (func $drop))
      (export "no-args" (func $no-args))
      (export "get" (func $get))
      (export "get-borrowed" (func $get-borrowed))
      (export "text" (func $text))))))
  (type $ip-t (variant (case "ipv4" u32) (case "ipv6" (tuple u64 u64))))
  ;; Exported functions may only name exported types.
  (export $ip "ip-address" (type $ip-t))
  (func (export "u32") (param "a" u32) (result u32) (canon lift (core func $main "u32")))
  (func (export "u32-post-return") (param "a" u32) (result u32)
    (canon lift (core func $main "u32") (post-return (func $main "post"))))
  (func (export "seven") (param "method" u32) (param "ip" $ip) (param "port" u16)
                         (param "transport" u8) (param "verified" bool) (result u32)
    (canon lift (core func $main "seven")))
  (func (export "string") (param "a" u32) (param "s" string) (result u32)
    (canon lift (core func $main "string") (memory $mem "memory") (realloc (func $mem "realloc"))))
  (func (export "borrow") (param "h" (borrow $handle)) (result u32)
    (canon lift (core func $main "borrow")))
  (func (export "call-no-args") (param "a" u32) (result u32) (canon lift (core func $main "call-no-args")))
  (func (export "call-get") (param "a" u32) (result u32) (canon lift (core func $main "call-get")))
  (func (export "call-get-borrowed") (param "a" u32) (result u32) (canon lift (core func $main "call-get-borrowed")))
  (func (export "call-text") (param "a" u32) (result u32) (canon lift (core func $main "call-text")))
)"#;

#[derive(wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(variant)]
enum Ip {
    #[component(name = "ipv4")]
    V4(u32),
    // Never sent here, but the type must match the WIT variant case by case.
    #[allow(dead_code)]
    #[component(name = "ipv6")]
    V6((u64, u64)),
}

fn benches(c: &mut Criterion) {
    let mut config = Config::new();
    config.epoch_interruption(true);
    let engine = Engine::new(&config).expect("engine");
    let mut linker = Linker::<()>::new(&engine);
    let mut root = linker.root();
    root.resource("handle", ResourceType::host::<Handle>(), |_, _| Ok(()))
        .expect("resource");
    root.func_wrap("no-args", |_, (): ()| Ok((7u32,)))
        .expect("no-args");
    root.func_wrap("get", |_, (_key,): (String,)| Ok((None::<String>,)))
        .expect("get");
    // The key as a view of the guest's memory: no String allocated.
    root.func_wrap(
        "get-borrowed",
        |store, (key,): (wasmtime::component::WasmStr,)| {
            let key = key.to_str(&store)?;
            std::hint::black_box(&*key);
            Ok((None::<String>,))
        },
    )
    .expect("get-borrowed");
    root.func_wrap("text", |_, (): ()| {
        Ok((Some(String::from("Yealink SIP-T46U 108.86.0.20")),))
    })
    .expect("text");
    let wasm = wat::parse_str(COMPONENT).expect("valid component text");
    let component = Component::new(&engine, wasm).unwrap_or_else(|e| panic!("{e:?}"));
    let mut store = Store::new(&engine, ());
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = linker
        .instantiate(&mut store, &component)
        .expect("instance");

    macro_rules! typed {
        ($name:literal, $params:ty) => {
            instance
                .get_typed_func::<$params, (u32,)>(&mut store, $name)
                .expect($name)
        };
    }
    let u32_fn = typed!("u32", (u32,));
    let post = typed!("u32-post-return", (u32,));
    let seven = typed!("seven", (u32, Ip, u16, u8, bool));
    let string = typed!("string", (u32, &str));
    let borrow = typed!("borrow", (Resource<Handle>,));
    let no_args = typed!("call-no-args", (u32,));
    let get = typed!("call-get", (u32,));
    let get_borrowed = typed!("call-get-borrowed", (u32,));
    let text = typed!("call-text", (u32,));

    c.bench_function("export/u32", |b| {
        b.iter(|| u32_fn.call(&mut store, (1,)).unwrap())
    });
    c.bench_function("export/u32-post-return", |b| {
        b.iter(|| post.call(&mut store, (1,)).unwrap())
    });
    c.bench_function("export/seven-flat-values", |b| {
        b.iter(|| {
            seven
                .call(&mut store, (0, Ip::V4(0xc000_0207), 5060, 0, false))
                .unwrap()
        })
    });
    c.bench_function("export/u32+string", |b| {
        b.iter(|| {
            string
                .call(&mut store, (1, "Yealink SIP-T46U 108.86.0.20 ab"))
                .unwrap()
        })
    });
    c.bench_function("export/borrow", |b| {
        b.iter(|| borrow.call(&mut store, (Resource::new_borrow(1),)).unwrap())
    });
    c.bench_function("import/no-args", |b| {
        b.iter(|| no_args.call(&mut store, (1,)).unwrap())
    });
    c.bench_function("import/string->none", |b| {
        b.iter(|| get.call(&mut store, (1,)).unwrap())
    });
    c.bench_function("import/borrowed-string->none", |b| {
        b.iter(|| get_borrowed.call(&mut store, (1,)).unwrap())
    });
    c.bench_function("import/->text", |b| {
        b.iter(|| text.call(&mut store, (1,)).unwrap())
    });
}

criterion_group! {
    name = boundary;
    config = Criterion::default();
    targets = benches
}
criterion_main!(boundary);
