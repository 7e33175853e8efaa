//! The Lua scripts, one per store operation (sync and reconcile carry many
//! breakers each), run by `EVALSHA`.

use redis::{Cmd, ToRedisArgs};

/// A script's source and SHA1 (what `EVALSHA` names it by).
#[derive(Debug, Clone)]
pub(crate) struct Lua {
    pub(crate) code: &'static str,
    pub(crate) hash: String,
}

impl Lua {
    pub(crate) fn new(code: &'static str) -> Self {
        Lua {
            code,
            hash: redis::Script::new(code).get_hash().to_string(),
        }
    }
}

macro_rules! breaker_script {
    ($file:literal) => {
        Lua::new(concat!(
            include_str!("../lua/prelude.lua"),
            include_str!(concat!("../lua/", $file))
        ))
    };
}

/// Every script of the crate.
#[derive(Debug, Clone)]
pub(crate) struct Scripts {
    pub(crate) sync: Lua,
    pub(crate) transition: Lua,
    pub(crate) acquire_probe: Lua,
    pub(crate) report_probe: Lua,
    pub(crate) view: Lua,
    pub(crate) reconcile: Lua,
    pub(crate) heartbeat: Lua,
    pub(crate) gcra: Lua,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            sync: breaker_script!("sync.lua"),
            transition: breaker_script!("transition.lua"),
            acquire_probe: breaker_script!("acquire_probe.lua"),
            report_probe: breaker_script!("report_probe.lua"),
            view: breaker_script!("view.lua"),
            reconcile: breaker_script!("reconcile.lua"),
            heartbeat: breaker_script!("heartbeat.lua"),
            gcra: Lua::new(concat!(
                include_str!("../lua/gcra_decide.lua"),
                include_str!("../lua/gcra.lua")
            )),
        }
    }

    /// Every source, to load with `SCRIPT LOAD`.
    pub(crate) fn sources(&self) -> Vec<&'static str> {
        [
            &self.sync,
            &self.transition,
            &self.acquire_probe,
            &self.report_probe,
            &self.view,
            &self.reconcile,
            &self.heartbeat,
            &self.gcra,
        ]
        .iter()
        .map(|l| l.code)
        .collect()
    }
}

/// The GCRA decision alone, on explicit values (tests compare it with Rust).
#[cfg(test)]
pub(crate) fn gcra_probe() -> Lua {
    Lua::new(concat!(
        include_str!("../lua/gcra_decide.lua"),
        include_str!("../lua/gcra_probe.lua")
    ))
}

/// `EVALSHA <sha> <keys…> <args…>`.
pub(crate) fn evalsha(script: &Lua, keys: &[&str], args: &[&dyn ToArg]) -> Cmd {
    let mut c = redis::cmd("EVALSHA");
    c.arg(&script.hash).arg(keys.len());
    for k in keys {
        c.arg(*k);
    }
    for a in args {
        a.push(&mut c);
    }
    c
}

/// An argument of [`evalsha`] (object-safe `ToRedisArgs`).
pub(crate) trait ToArg {
    fn push(&self, cmd: &mut Cmd);
}

impl<T: ToRedisArgs> ToArg for T {
    fn push(&self, cmd: &mut Cmd) {
        cmd.arg(self);
    }
}
