//! `cargo xtask run` / `cargo xtask test`: the two commands of the README.
//!
//! Plain std on purpose: it must build in seconds on a fresh machine and be
//! readable in a minute. It builds the plugins (wasm32-wasip2 components, in
//! their own workspace and target directory), then the gateway, then runs it
//! or the tests.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => run(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("plugins") => build_plugins(),
        _ => Err(
            "usage: cargo xtask run [sipfence run args…] | test [cargo test args…] | plugins"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T = ()> = std::result::Result<T, String>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

fn cargo() -> Command {
    Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn status(cmd: &mut Command) -> Result {
    let shown = format!("{cmd:?}");
    let st = cmd.status().map_err(|e| format!("{shown}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed ({st})"))
    }
}

/// Builds every plugin in `plugins/` as a wasm component (once plugins exist).
fn build_plugins() -> Result {
    let manifest = root().join("plugins/Cargo.toml");
    if !manifest.exists() {
        return Ok(());
    }
    // The target is part of the toolchain: add it if missing (a no-op when present).
    let _ = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .status();
    // Always into plugins/target, whatever CARGO_TARGET_DIR says: that is
    // where host/build.rs looks for the built-in plugins to embed.
    status(
        cargo()
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(root().join("plugins/target")),
    )
}

fn run(args: &[String]) -> Result {
    build_plugins()?;
    let mut cmd = cargo();
    cmd.current_dir(root())
        .args(["run", "--release", "--package", "sipfence", "--", "run"])
        .args(args);
    status(&mut cmd)
}

/// External tools the end-to-end tests drive. A missing tool fails the run:
/// tests never skip quietly.
const TOOLS: &[(&str, &str)] = &[
    ("sipp", "apt-get install sip-tester"),
    ("svwar", "apt-get install sipvicious"),
    ("svcrack", "apt-get install sipvicious"),
    ("st", "pip install schemathesis"),
    ("chromium", "apt-get install chromium"),
    ("node", "apt-get install nodejs npm"),
    ("npm", "apt-get install npm"),
    ("curl", "apt-get install curl"),
    ("stun", "apt-get install stun-client"),
    ("python3", "apt-get install python3"),
];

/// Python modules the end-to-end tests import, with how to install them.
const PYTHON_MODULES: &[(&str, &str)] = &[
    ("aiostun", "python3 -m pip install aiostun==0.6.1"),
    ("aiosmtpd", "python3 -m pip install aiosmtpd==1.4.6"),
];

fn test(args: &[String]) -> Result {
    for (tool, install) in TOOLS {
        let found = env::var_os("PATH")
            .map(|p| env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            return Err(format!("`{tool}` is needed by the tests: {install}"));
        }
    }
    for (module, install) in PYTHON_MODULES {
        let found = Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Err(format!(
                "the Python module `{module}` is needed by the tests: {install}"
            ));
        }
    }
    build_plugins()?;
    // The web view's browser test drives Chromium with playwright-core (npm).
    let web = root().join("tests/web");
    if !web.join("node_modules/playwright-core").exists() {
        status(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&web),
        )?;
    }
    // The plugins' policies are plain Rust, tested natively.
    let plugins = root().join("plugins/Cargo.toml");
    if plugins.exists() {
        status(cargo().args(["test", "--manifest-path"]).arg(&plugins))?;
    }
    status(
        cargo()
            .current_dir(root())
            .args(["test", "--workspace"])
            .args(args),
    )
}
