//! `rediss://` (feature `tls`): a fleet over TLS to a `redis-server` with a
//! certificate from a throw-away CA (made with the `openssl` command; the test
//! is skipped, loudly, when it is missing).
#![cfg(feature = "tls")]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use ripcord::{Outcome, State};
use ripcord_redis::RedisStore;

fn openssl(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A CA and a server certificate for 127.0.0.1 in `dir`.
fn make_certs(dir: &Path) -> bool {
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=ripcord-test-ca",
        ],
    ) && openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    ) && openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_over_tls_with_a_password() {
    bounded(Duration::from_secs(60), async {
        let dir = std::env::temp_dir().join(format!("ripcord-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        if !make_certs(&dir) {
            eprintln!("SKIPPED: no working `openssl` command to make test certificates");
            return;
        }
        let d = dir.clone();
        let server = RedisServer::spawn_port_args(false, move |port| {
            let f = |n: &str| d.join(n).display().to_string();
            vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                f("server.crt"),
                "--tls-key-file".into(),
                f("server.key"),
                "--tls-ca-cert-file".into(),
                f("ca.crt"),
                "--tls-auth-clients".into(),
                "no".into(),
                "--requirepass".into(),
                "pw".into(),
            ]
        });
        let ca = std::fs::read(dir.join("ca.crt")).unwrap();
        let url = format!("rediss://:pw@127.0.0.1:{}", server.port());
        // The system roots do not know this CA: refused.
        let untrusted = RedisStore::builder(&url).build().await;
        assert!(untrusted.is_err(), "an unknown CA must be refused");
        let mut fleet = Vec::new();
        for i in 0..2 {
            let store = RedisStore::builder(&url)
                .tls_root_certificates(ca.clone())
                .key_prefix("tls")
                .build()
                .await
                .expect("TLS store");
            let f = ripcord::store::Fleet::builder(store.clone())
                .instance(&format!("i{i}"))
                .build()
                .unwrap();
            let b = ripcord::CircuitBreaker::builder("payments")
                .consecutive_failures(3)
                .fleet(&f)
                .build()
                .unwrap();
            f.sync_now().await;
            fleet.push((store, f, b));
        }
        assert!(
            eventually(Duration::from_secs(3), || fleet
                .iter()
                .all(|(s, _, _)| s.is_listening()))
            .await
        );
        for _ in 0..3 {
            record(&fleet[0].2, Outcome::Failure);
        }
        assert!(
            eventually(Duration::from_millis(500), || fleet[1].2.state()
                == State::Open)
            .await,
            "the trip reaches the other instance over TLS pub/sub"
        );
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
