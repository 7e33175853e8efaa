//! Fleet-wide faults on servers this test owns: a fault set through one
//! store is read by another (two instances), lapses by its TTL, is cleared
//! and audited; corrupt values read as no fault and are counted; bad input is
//! refused; on one server and on a 3-master Cluster.

mod common;

use std::error::Error as _;
use std::time::{Duration, Instant};

use common::*;
use ripcord::chaos::Latency;
use ripcord::store::StoreError;
use ripcord::ChaosConfig;
use ripcord_redis::{FaultAction, FaultError, RedisStore};

const LIMIT: Duration = Duration::from_secs(120);
/// Far more than a healthy run needs for a key TTL to lapse.
const PATIENT: Duration = Duration::from_secs(10);

fn aborts(rate: f64) -> ChaosConfig {
    ChaosConfig {
        abort_rate: rate,
        abort_status: Some(503),
        seed: Some(7),
        ..ChaosConfig::default()
    }
}

fn slow() -> ChaosConfig {
    ChaosConfig {
        latency_rate: 0.5,
        latency: Some(Latency::uniform(
            Duration::from_millis(100),
            Duration::from_secs(2),
        )),
        expires_after: Some(Duration::from_secs(600)),
        ..ChaosConfig::default()
    }
}

/// Two instances: two stores on one prefix.
async fn two(target: &Target, test: &str) -> (RedisStore, RedisStore) {
    let prefix = unique_prefix(test);
    (
        target.store(&prefix, false).await,
        target.store(&prefix, false).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_set_through_one_instance_reaches_another() {
    bounded(LIMIT, async {
        let server = RedisServer::spawn();
        let target = Target::Single(server.url());
        let (a, b) = two(&target, "fault-shared").await;
        let ttl = Duration::from_secs(60);
        a.set_fault("payments", &aborts(0.25), ttl, "alice")
            .await
            .expect("set_fault");
        let f = b.fault("payments").await.expect("fault").expect("a fault");
        assert_eq!(f.config, aborts(0.25));
        assert!(f.expires_in <= ttl, "{:?}", f.expires_in);
        assert!(f.expires_in > ttl - PATIENT, "{:?}", f.expires_in);
        assert_eq!(b.fault("search").await.expect("fault"), None);

        // Another fleet (prefix) sees nothing.
        let other = target.store(&unique_prefix("fault-other"), false).await;
        assert_eq!(other.fault("payments").await.expect("fault"), None);

        // Setting again replaces the config and the TTL.
        a.set_fault("payments", &slow(), Duration::from_secs(5), "bob")
            .await
            .expect("set_fault again");
        let f = b.fault("payments").await.expect("fault").expect("a fault");
        assert_eq!(f.config, slow());
        assert!(f.expires_in <= Duration::from_secs(5), "{:?}", f.expires_in);

        let listed = b.list_faults().await.expect("list_faults");
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].0, "payments");
        assert_eq!(listed[0].1.config, slow());
        assert_eq!(a.corruptions() + b.corruptions(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_lapses_by_itself() {
    bounded(LIMIT, async {
        let server = RedisServer::spawn();
        let (a, b) = two(&Target::Single(server.url()), "fault-ttl").await;
        let ttl = Duration::from_millis(300);
        let set_at = Instant::now();
        a.set_fault("payments", &aborts(1.0), ttl, "drill")
            .await
            .expect("set_fault");
        let read = b.fault("payments").await.expect("fault");
        if set_at.elapsed() < ttl {
            let f = read.expect("a fault before its TTL");
            assert!(f.expires_in <= ttl, "{:?}", f.expires_in);
        }
        let mut gone = false;
        let deadline = Instant::now() + PATIENT;
        while Instant::now() < deadline {
            if b.fault("payments").await.expect("fault").is_none() {
                gone = true;
                break;
            }
            tokio::time::sleep(20 * MS).await;
        }
        assert!(gone, "the fault outlived its TTL by {PATIENT:?}");
        assert!(set_at.elapsed() >= ttl);
        assert!(b.list_faults().await.expect("list_faults").is_empty());
        assert_eq!(b.corruptions(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_removes_a_fault_and_the_audit_lists_newest_first() {
    bounded(LIMIT, async {
        let server = RedisServer::spawn();
        let (a, b) = two(&Target::Single(server.url()), "fault-audit").await;
        assert!(a.fault_audit(10).await.expect("empty audit").is_empty());
        let ttl = Duration::from_millis(90_000);
        a.set_fault("payments", &aborts(0.5), ttl, "alice")
            .await
            .expect("set_fault");
        assert!(b.clear_fault("payments", "bob").await.expect("clear"));
        assert_eq!(a.fault("payments").await.expect("fault"), None);
        assert!(!b
            .clear_fault("payments", "carol")
            .await
            .expect("clear again"));

        let audit = a.fault_audit(10).await.expect("fault_audit");
        let seen: Vec<(FaultAction, &str)> =
            audit.iter().map(|e| (e.action, e.actor.as_str())).collect();
        assert_eq!(
            seen,
            [
                (FaultAction::Clear, "carol"),
                (FaultAction::Clear, "bob"),
                (FaultAction::Set, "alice")
            ]
        );
        assert!(audit.iter().all(|e| e.scope == "payments"));
        let set = &audit[2];
        assert_eq!(set.config, Some(aborts(0.5)));
        assert_eq!(set.ttl, Some(ttl));
        assert_eq!((audit[0].config.as_ref(), audit[0].ttl), (None, None));
        // Newest first, on the writers' clocks (one machine here).
        assert!(audit.windows(2).all(|w| w[0].at >= w[1].at));
        let age = std::time::SystemTime::now()
            .duration_since(set.at)
            .expect("an audit time in the past");
        assert!(age < Duration::from_secs(60), "{age:?}");

        let newest = b.fault_audit(1).await.expect("fault_audit(1)");
        assert_eq!(newest.len(), 1);
        assert_eq!(newest[0].actor, "carol");
        assert!(b.fault_audit(0).await.expect("fault_audit(0)").is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_keeps_the_newest_thousand() {
    bounded(LIMIT, async {
        let server = RedisServer::spawn();
        let (a, _) = two(&Target::Single(server.url()), "fault-cap").await;
        for i in 0..1_005 {
            a.clear_fault("payments", &format!("actor-{i}"))
                .await
                .expect("clear");
        }
        let mut raw = connect(&server.url()).await;
        let len: usize = redis::cmd("LLEN")
            .arg(a.fault_audit_key())
            .query_async(&mut raw)
            .await
            .expect("LLEN");
        assert_eq!(len, RedisStore::FAULT_AUDIT_CAPACITY);
        let audit = a.fault_audit(usize::MAX).await.expect("fault_audit");
        assert_eq!(audit.len(), 1_000);
        assert_eq!(audit[0].actor, "actor-1004");
        assert_eq!(audit[999].actor, "actor-5");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_values_read_as_no_fault_and_are_counted() {
    bounded(LIMIT, async {
        let server = RedisServer::spawn();
        let (a, b) = two(&Target::Single(server.url()), "fault-corrupt").await;
        let mut corruptions = b.subscribe_corruptions();
        let mut raw = connect(&server.url()).await;
        let key = b.fault_key("payments");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg("not json")
            .query_async(&mut raw)
            .await
            .expect("SET");
        assert_eq!(b.fault("payments").await.expect("fault"), None);
        assert_eq!(b.corruptions(), 1);
        match corruptions.try_recv().expect("a corruption report") {
            StoreError::Corrupt { key: k, detail } => {
                assert_eq!(k, key);
                assert!(detail.contains("JSON"), "{detail}");
            }
            other => panic!("not a corruption: {other:?}"),
        }

        // JSON, but not a valid config; a valid one without an expiry; not a
        // string at all.
        let cases: [(&str, &[&str]); 3] = [
            (
                "bad-rate",
                &["SET", r#"{"abort_rate": 2.0}"#, "PX", "60000"],
            ),
            ("forever", &["SET", r#"{"abort_rate": 0.5}"#]),
            ("a-list", &["RPUSH", "x"]),
        ];
        for (scope, args) in cases {
            let mut cmd = redis::cmd(args[0]);
            cmd.arg(a.fault_key(scope)).arg(&args[1..]);
            let _: redis::Value = cmd.query_async(&mut raw).await.expect("write");
        }
        let before = b.corruptions();
        let read = b
            .faults(&["bad-rate", "forever", "a-list"])
            .await
            .expect("faults");
        assert_eq!(read, [None, None, None]);
        assert_eq!(b.corruptions(), before + 3);
        assert!(b.list_faults().await.expect("list_faults").is_empty());
        assert_eq!(b.corruptions(), before + 3 + 4);

        // A valid fault beside them still reads.
        a.set_fault("search", &aborts(0.1), Duration::from_secs(30), "alice")
            .await
            .expect("set_fault");
        let listed = b.list_faults().await.expect("list_faults");
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].0, "search");

        // A foreign audit entry is skipped and counted.
        let _: () = redis::cmd("LPUSH")
            .arg(a.fault_audit_key())
            .arg("garbage")
            .query_async(&mut raw)
            .await
            .expect("LPUSH");
        let before = a.corruptions();
        let audit = a.fault_audit(10).await.expect("fault_audit");
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].actor, "alice");
        assert_eq!(a.corruptions(), before + 1);

        // An audit key of another type: the write fails with the key named.
        let _: () = redis::cmd("SET")
            .arg(a.fault_audit_key())
            .arg("not a list")
            .query_async(&mut raw)
            .await
            .expect("SET");
        let before = a.corruptions();
        let err = a
            .set_fault("search", &aborts(0.1), Duration::from_secs(30), "alice")
            .await
            .expect_err("an unauditable write");
        match err {
            FaultError::Store(StoreError::Corrupt { key, .. }) => {
                assert_eq!(key, a.fault_audit_key())
            }
            other => panic!("not a corruption: {other:?}"),
        }
        assert!(a.fault_audit(10).await.expect("fault_audit").is_empty());
        assert_eq!(a.corruptions(), before + 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ttls_and_configs_are_refused() {
    bounded(LIMIT, async {
        let server = RedisServer::spawn();
        let (a, _) = two(&Target::Single(server.url()), "fault-refused").await;
        for ttl in [Duration::ZERO, Duration::from_secs(24 * 3600 + 1)] {
            let err = a
                .set_fault("payments", &aborts(0.5), ttl, "alice")
                .await
                .expect_err("a bad ttl");
            assert!(matches!(err, FaultError::InvalidTtl { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(
                msg.contains("greater than zero") && msg.contains("one day"),
                "{msg}"
            );
        }
        // The longest TTL is accepted.
        a.set_fault(
            "longest",
            &aborts(0.5),
            Duration::from_secs(24 * 3600),
            "alice",
        )
        .await
        .expect("a one-day ttl");

        let mut too_much = aborts(0.7);
        too_much.error_rate = 0.7;
        let no_latency = ChaosConfig {
            latency_rate: 0.5,
            ..ChaosConfig::default()
        };
        for (config, field) in [
            (aborts(1.5), "abort_rate"),
            (too_much, "abort_rate"),
            (no_latency, "latency"),
        ] {
            let err = a
                .set_fault("payments", &config, Duration::from_secs(10), "alice")
                .await
                .expect_err("a bad config");
            assert!(matches!(err, FaultError::InvalidConfig { .. }), "{err:?}");
            assert!(err.to_string().contains("payments"), "{err}");
            let source = err.source().expect("the config error").to_string();
            assert!(
                source.contains(field) && source.contains("expected"),
                "{source}"
            );
        }
        // Nothing refused was written or audited.
        assert_eq!(a.fault("payments").await.expect("fault"), None);
        let audit = a.fault_audit(10).await.expect("fault_audit");
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].scope, "longest");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_of_many_scopes_come_back_in_order() {
    bounded(LIMIT, async {
        let server = RedisServer::spawn();
        let (a, b) = two(&Target::Single(server.url()), "fault-many").await;
        let ttl = Duration::from_secs(30);
        a.set_fault("a", &aborts(0.1), ttl, "alice")
            .await
            .expect("set a");
        a.set_fault("c", &slow(), ttl, "alice")
            .await
            .expect("set c");
        a.set_fault("", &aborts(0.3), ttl, "alice")
            .await
            .expect("set the empty scope");
        let read = b.faults(&["c", "b", "a", "", "c"]).await.expect("faults");
        let configs: Vec<Option<ChaosConfig>> =
            read.into_iter().map(|f| f.map(|f| f.config)).collect();
        assert_eq!(
            configs,
            [
                Some(slow()),
                None,
                Some(aborts(0.1)),
                Some(aborts(0.3)),
                Some(slow())
            ]
        );
        assert!(b.faults(&[]).await.expect("no scopes").is_empty());
        let scopes: Vec<String> = b
            .list_faults()
            .await
            .expect("list_faults")
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(scopes, ["", "a", "c"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_work_on_a_cluster() {
    bounded(LIMIT, async {
        let cluster = RedisCluster::spawn().await;
        let target = Target::Cluster(cluster.urls());
        let (a, b) = two(&target, "fault-cluster").await;
        assert!(a.is_cluster());
        // Scopes spread over the three masters' slots.
        let scopes: Vec<String> = (0..12).map(|i| format!("scope-{i}")).collect();
        let ttl = Duration::from_secs(30);
        for (i, s) in scopes.iter().enumerate() {
            if i % 2 == 0 {
                a.set_fault(s, &aborts(0.01 * i as f64), ttl, "alice")
                    .await
                    .expect("set_fault");
            }
        }
        let refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
        let read = b.faults(&refs).await.expect("faults");
        for (i, f) in read.iter().enumerate() {
            if i % 2 == 0 {
                assert_eq!(
                    f.as_ref().map(|f| &f.config),
                    Some(&aborts(0.01 * i as f64))
                );
            } else {
                assert_eq!(f, &None, "scope-{i}");
            }
        }
        let listed = b.list_faults().await.expect("list_faults");
        assert_eq!(listed.len(), 6, "{listed:?}");
        assert!(b.clear_fault("scope-0", "bob").await.expect("clear"));
        assert_eq!(a.fault("scope-0").await.expect("fault"), None);
        let audit = b.fault_audit(100).await.expect("fault_audit");
        assert_eq!(audit.len(), 7);
        assert_eq!(
            (audit[0].action, audit[0].actor.as_str()),
            (FaultAction::Clear, "bob")
        );
    })
    .await;
}
