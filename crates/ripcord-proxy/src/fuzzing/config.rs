//! The TOML configurations the proxy reads: its file (`ripcord proxy`,
//! `ripcord check`) and a pipeline (`ripcord::PipelineConfig`).
//!
//! Input: the file's bytes (inputs that are not UTF-8 are skipped: the
//! binary reads files as UTF-8 text and refuses others before parsing).
//!
//! Invariants: no panic; what validation accepts builds (the proxy starts
//! on an accepted file, with its listeners moved to port 0 and no store; a
//! pipeline that validates builds, and one that does not is refused by its
//! builder too); every problem reported names a position
//! inside the text.

use std::time::Duration;

use ripcord::{Fallback, PipelineConfig};

use super::runtime::block_on;
use crate::config::{ConfigError, ListenerConfig, ProxyConfig};
use crate::server::{Proxy, StartError};

/// Runs one proxy configuration file.
pub fn proxy_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut config = match ProxyConfig::parse(text, "fuzz.toml") {
        Ok(config) => config,
        Err(ConfigError::Invalid { problems, .. }) => {
            assert!(!problems.is_empty(), "refused without a problem: {text:?}");
            let lines = text.split('\n').count();
            for p in &problems {
                assert!(!p.message.is_empty(), "a problem without a message: {p:?}");
                if let Some((line, column)) = p.position {
                    let line_len = text
                        .split('\n')
                        .nth(line.saturating_sub(1))
                        .map(|l| l.chars().count());
                    assert!(
                        line >= 1
                            && line <= lines
                            && column >= 1
                            && line_len.is_some_and(|n| column <= n + 1),
                        "a problem positioned outside the text: {p:?} in {text:?}"
                    );
                }
            }
            return;
        }
        Err(other) => panic!("parsing text gave {other}"),
    };
    let _ = config.summary();
    for (scope, name, breaker) in config.breakers() {
        breaker
            .validate()
            .unwrap_or_else(|e| panic!("breaker {scope} {name} of an accepted file: {e}"));
    }
    // Start what the file describes, on loopback port 0, in memory.
    config.store = None;
    config.admin.listen = "127.0.0.1:0".into();
    config.admin.token = None;
    config.limits.workers = Some(1);
    config.listeners = vec![ListenerConfig {
        listen: "127.0.0.1:0".into(),
        tls: None,
        access_log: false,
    }];
    block_on(async {
        match Proxy::start(config).await {
            Ok(proxy) => {
                proxy.shutdown(Duration::ZERO).await;
            }
            Err(e @ (StartError::Build(_) | StartError::Store { .. })) => {
                panic!("an accepted file does not build: {e:#?}\n{text}")
            }
            Err(e) => panic!("the proxy did not start on loopback port 0: {e:#?}"),
        }
    });
}

/// Runs one pipeline file (`PipelineConfig`'s TOML form).
pub fn pipeline_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = toml::from_str::<PipelineConfig>(text) else {
        return;
    };
    let valid = config.validate();
    // A configuration that places a fallback needs its chain from code.
    let built = config.builder::<(), ()>().and_then(|b| {
        b.fallback_chain(Fallback::builder("fuzz").then_value(()))
            .build()
    });
    match (&valid, &built) {
        (Ok(()), Ok(_)) | (Err(_), Err(_)) => {}
        _ => panic!(
            "validation ({valid:?}) and building ({:?}) disagree on {text:?}",
            built.as_ref().map(|_| ())
        ),
    }
}
