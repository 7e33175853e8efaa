//! Finding a program a test needs (Chromium, Prometheus), installing it
//! from Debian's packages through `scripts/ensure-tool.sh` when it is
//! missing and the tests run as root. A test that still finds none fails
//! with a message saying what to install: it never skips.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `$env_var` when it names a file, else the first of `names` on `PATH`.
pub(crate) fn find(env_var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Some(p);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// [`find`], running `scripts/<script>` (which installs Debian's package
/// when it can) if there is none yet; `None` when there is still none.
pub(crate) fn find_or_install(env_var: &str, names: &[&str], script: &str) -> Option<PathBuf> {
    if let Some(p) = find(env_var, names) {
        return Some(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(script);
    eprintln!("no {} found; running {}", names[0], script.display());
    match Command::new("bash")
        .arg(&script)
        .stdout(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!("{} exited with {s}", script.display()),
        Err(e) => eprintln!("could not run {}: {e}", script.display()),
    }
    find(env_var, names)
}
