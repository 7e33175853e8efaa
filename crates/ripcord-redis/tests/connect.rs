//! Building a store: URLs with a username and password, bad options, a dead
//! server (eager and lazy), and what a store does while Redis is gone.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ripcord::store::{Heartbeat, StateStore, StoreError, SyncEntry, WindowTotals};
use ripcord_redis::{BuildError, RedisStore};

const LIMIT: Duration = Duration::from_secs(30);

fn entry(name: &str) -> SyncEntry {
    SyncEntry {
        name: name.to_string(),
        fleet_epoch: 0,
        window: WindowTotals::default(),
        stale_after: Duration::from_secs(1),
        touch: true,
        ttl: Duration::from_secs(60),
    }
}

fn beat() -> Heartbeat {
    Heartbeat {
        instance: "i0".to_string(),
        stale_after: Duration::from_secs(1),
        ttl: Duration::from_secs(4),
        required: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_and_password_urls() {
    bounded(LIMIT, async {
        let server = RedisServer::spawn_args(&["--requirepass", "defaultpw"]);
        let port = server.port();
        let mut admin = connect(&format!("redis://:defaultpw@127.0.0.1:{port}")).await;
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg("ripcord")
            .arg("on")
            .arg(">s3cret")
            .arg("~ripcord:*")
            .arg("&ripcord:*")
            .arg("+@all")
            .query_async(&mut admin)
            .await
            .expect("ACL SETUSER");
        for url in [
            format!("redis://:defaultpw@127.0.0.1:{port}"),
            format!("redis://ripcord:s3cret@127.0.0.1:{port}/0"),
        ] {
            let store = RedisStore::builder(&url).build().await.expect("auth works");
            let views = store
                .sync(&beat(), &[entry("payments")])
                .await
                .expect("sync");
            assert_eq!(views[0].epoch, 0);
            assert!(
                !format!("{store:?}").contains("s3cret"),
                "passwords never printed"
            );
        }
        let wrong = RedisStore::builder(&format!("redis://ripcord:nope@127.0.0.1:{port}"))
            .build()
            .await
            .unwrap_err();
        assert!(matches!(wrong, BuildError::Connect(_)), "{wrong:?}");
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn bad_options_are_typed_errors() {
    for prefix in ["", "a{b", "a b"] {
        let e = RedisStore::builder("redis://127.0.0.1:1")
            .key_prefix(prefix)
            .connect_lazily()
            .build()
            .await
            .unwrap_err();
        assert!(matches!(e, BuildError::InvalidPrefix(_)), "{e}");
    }
    let e = RedisStore::builder("http://x:pw@host")
        .connect_lazily()
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&e, BuildError::InvalidUrl { url, .. } if url == "http://x:***@host"),
        "{e:?}"
    );
    let e = RedisStore::builder("redis://127.0.0.1:1")
        .response_timeout(Duration::ZERO)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            BuildError::InvalidOption {
                option: "response_timeout",
                ..
            }
        ),
        "{e}"
    );
    let tls = RedisStore::builder("rediss://user:pw@127.0.0.1:1")
        .connect_lazily()
        .build()
        .await;
    if cfg!(feature = "tls") {
        assert!(tls.is_ok(), "{tls:?}");
    } else {
        assert!(
            matches!(tls, Err(BuildError::TlsDisabled { .. })),
            "{tls:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_fails_fast_and_a_lazy_store_connects_when_it_appears() {
    bounded(LIMIT, async {
        let mut server = RedisServer::spawn();
        let url = server.url();
        server.kill();
        let t = Instant::now();
        let e = RedisStore::builder(&url).build().await.unwrap_err();
        assert!(matches!(e, BuildError::Connect(_)), "{e:?}");
        assert!(t.elapsed() < Duration::from_secs(1));

        let store = RedisStore::builder(&url)
            .connect_lazily()
            .max_reconnect_backoff(Duration::from_millis(100))
            .build()
            .await
            .expect("lazy build needs no server");
        let t = Instant::now();
        for _ in 0..10 {
            let e = store.sync(&beat(), &[entry("payments")]).await.unwrap_err();
            assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
        }
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "fails fast: {:?}",
            t.elapsed()
        );
        server.restart();
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            match store.sync(&beat(), &[entry("payments")]).await {
                Ok(v) => {
                    assert_eq!(v[0].name, "payments");
                    break;
                }
                Err(e) => assert!(Instant::now() < deadline, "never reconnected: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}
