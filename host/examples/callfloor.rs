// Experiment (not committed): the floor of component calls of different shapes.
use std::time::Instant;
use wasmtime::component::{Component, Linker, Resource, ResourceTable, ResourceType};
use wasmtime::{Config, Engine, Store};

struct Req;
struct St {
    table: ResourceTable,
}

fn bench(name: &str, mut f: impl FnMut()) {
    for _ in 0..100_000 {
        f();
    }
    let n = 2_000_000;
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    println!("{name}: {:.1} ns", t.elapsed().as_nanos() as f64 / n as f64);
}

fn main() -> wasmtime::Result<()> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    let engine = Engine::new(&config)?;
    let mut linker = Linker::<St>::new(&engine);
    linker
        .root()
        .resource("request", ResourceType::host::<Req>(), |_, _| Ok(()))?;
    linker
        .root()
        .func_wrap("get", |_s, (_r,): (Resource<Req>,)| Ok((7u32,)))?;
    let wat = r#"(component
      (import "request" (type $r (sub resource)))
      (import "get" (func $get (param "r" (borrow $r)) (result u32)))
      (core func $drop (canon resource.drop $r))
      (core func $getc (canon lower (func $get)))
      (core module $m
        (import "" "drop" (func $d (param i32)))
        (import "" "get" (func $g (param i32) (result i32)))
        (memory (export "mem") 1)
        (global $bump (mut i32) (i32.const 1024))
        (func (export "num") (param i32) (result i32) local.get 0)
        (func (export "num4") (param i32 i32 i32 i32) (result i32) local.get 0)
        (func (export "borrow") (param i32) (result i32) local.get 0 call $d i32.const 0)
        (func (export "borrowget") (param i32) (result i32) local.get 0 call $g local.get 0 call $d)
        (func (export "str") (param i32 i32 i32) (result i32) local.get 2)
        (func (export "post") (param i32))
        (func (export "summary") (param i32 i64 i64 i32 i32 i32 i32 i32 i32 i32 i32) (result i32) local.get 0)
        (func (export "realloc") (param i32 i32 i32 i32) (result i32) global.get $bump)
      )
      (core instance $i (instantiate $m (with "" (instance (export "drop" (func $drop)) (export "get" (func $getc))))))
      (func (export "num") (param "a" u32) (result u32) (canon lift (core func $i "num")))
      (func (export "num4") (param "a" u32) (param "b" u32) (param "c" u32) (param "d" u32) (result u32) (canon lift (core func $i "num4")))
      (func (export "borrow") (param "r" (borrow $r)) (result u32) (canon lift (core func $i "borrow")))
      (func (export "borrowget") (param "r" (borrow $r)) (result u32) (canon lift (core func $i "borrowget")))
      (func (export "numpost") (param "a" u32) (result u32) (canon lift (core func $i "num") (post-return (func $i "post"))))
      (func (export "summary") (param "a" u32) (param "b" u64) (param "c" u64) (param "ua" (option string)) (param "user" (option string)) (param "tenant" string) (result u32) (canon lift (core func $i "summary") (memory $i "mem") (realloc (func $i "realloc"))))
      (func (export "str") (param "a" u32) (param "s" string) (result u32) (canon lift (core func $i "str") (memory $i "mem") (realloc (func $i "realloc"))))
    )"#;
    let component = Component::new(&engine, wat::parse_str(wat)?)?;
    let pre = linker.instantiate_pre(&component)?;
    let mut store = Store::new(
        &engine,
        St {
            table: ResourceTable::new(),
        },
    );
    store.set_epoch_deadline(1000);
    let inst = pre.instantiate(&mut store)?;
    let num = inst.get_typed_func::<(u32,), (u32,)>(&mut store, "num")?;
    let num4 = inst.get_typed_func::<(u32, u32, u32, u32), (u32,)>(&mut store, "num4")?;
    let borrow = inst.get_typed_func::<(Resource<Req>,), (u32,)>(&mut store, "borrow")?;
    let borrowget = inst.get_typed_func::<(Resource<Req>,), (u32,)>(&mut store, "borrowget")?;
    let strf = inst.get_typed_func::<(u32, &str), (u32,)>(&mut store, "str")?;
    let numpost = inst.get_typed_func::<(u32,), (u32,)>(&mut store, "numpost")?;
    let summary = inst
        .get_typed_func::<(u32, u64, u64, Option<&str>, Option<&str>, &str), (u32,)>(
            &mut store, "summary",
        )?;
    let m = std::sync::Mutex::new(vec![1u64]);
    bench("mutex lock+pop+push+unlock", || {
        let mut g = m.lock().unwrap();
        let x = g.pop().unwrap();
        g.push(std::hint::black_box(x));
    });
    let a = std::sync::Arc::new(5u64);
    bench("arc clone+drop", || {
        let b = std::hint::black_box(a.clone());
        drop(b);
    });
    let c = std::sync::atomic::AtomicU64::new(0);
    bench("fetch_add", || {
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    let owned = store.data_mut().table.push(Req)?;
    let rep = owned.rep();
    bench("num(u32)->u32", || {
        num.call(&mut store, (1,)).unwrap();
    });
    bench("num4", || {
        num4.call(&mut store, (1, 2, 3, 4)).unwrap();
    });
    bench("borrow + drop", || {
        borrow
            .call(&mut store, (Resource::new_borrow(rep),))
            .unwrap();
    });
    bench("borrow + get + drop", || {
        borrowget
            .call(&mut store, (Resource::new_borrow(rep),))
            .unwrap();
    });
    bench("num + post-return", || {
        numpost.call(&mut store, (1,)).unwrap();
    });
    bench("summary: 3 nums, ua, user, empty tenant", || {
        summary
            .call(
                &mut store,
                (
                    1,
                    2,
                    3,
                    Some("Yealink SIP-T46U 108.86.0.20 abc"),
                    Some("100"),
                    "",
                ),
            )
            .unwrap();
    });
    bench("u32 + string(32)", || {
        strf.call(&mut store, (1, "Yealink SIP-T46U 108.86.0.20 abc"))
            .unwrap();
    });
    Ok(())
}
