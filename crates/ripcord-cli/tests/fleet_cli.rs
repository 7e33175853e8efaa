//! Runs the real `ripcord fleet` binary against a real Redis (`REDIS_URL`,
//! default `redis://127.0.0.1:6379`), each test under a random key prefix,
//! while in-process breakers linked to a fleet on the same store watch the
//! overrides arrive.

use std::hash::{BuildHasher, RandomState};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::Duration;

use ripcord::store::Fleet;
use ripcord::{CircuitBreaker, State};
use ripcord_redis::RedisStore;

/// Every test ends within this.
const LIMIT: Duration = Duration::from_secs(60);

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// A key prefix no other test uses.
fn random_prefix() -> String {
    let n = RandomState::new().hash_one(std::process::id());
    format!("ripcord-fleet-cli-{n:016x}")
}

/// Runs `ripcord fleet <args>` (off the async runtime).
async fn fleet(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_ripcord"))
            .arg("fleet")
            .args(&args)
            .output()
            .expect("running `ripcord fleet`")
    })
    .await
    .expect("the command's thread")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Waits (bounded) until `breaker` is in `state`.
async fn wait_for(breaker: &CircuitBreaker, state: State) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while breaker.state() != state {
        assert!(
            tokio::time::Instant::now() < deadline,
            "breaker `{}` still {} after 5s, expected {state}",
            breaker.name(),
            breaker.state()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An instance of the fleet: a fleet link on the store under `prefix` and
/// one breaker per name.
async fn instance(prefix: &str, names: &[&str]) -> (Fleet, Vec<CircuitBreaker>) {
    let store = RedisStore::builder(&redis_url())
        .key_prefix(prefix)
        .build()
        .await
        .expect("connecting to REDIS_URL");
    let fleet = Fleet::builder(store)
        .sync_interval(Duration::from_millis(50))
        .build()
        .expect("fleet");
    let breakers = names
        .iter()
        .map(|n| {
            CircuitBreaker::builder(n)
                .failure_rate(0.5)
                .minimum_calls(10)
                .fleet(&fleet)
                .build()
                .expect("breaker")
        })
        .collect();
    fleet.sync_now().await;
    (fleet, breakers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_status_reset_steer_the_in_process_breakers() {
    tokio::time::timeout(LIMIT, async {
        let prefix = random_prefix();
        let url = redis_url();
        let (link, breakers) = instance(&prefix, &["payments", "search"]).await;
        let (payments, search) = (&breakers[0], &breakers[1]);
        // Some traffic so the window has figures.
        for _ in 0..4 {
            let _ = payments
                .call(|| async { Ok::<_, std::io::Error>(()) })
                .await;
        }
        link.sync_now().await;

        let store = ["--store", url.as_str(), "--prefix", prefix.as_str()];

        // Status lists both, closed.
        let out = fleet(args(&[&["status"], &store[..]].concat())).await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{stdout}");
        let row = |name: &str| {
            lines
                .iter()
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap_or_else(|| panic!("no row for {name}:\n{stdout}"))
                .to_string()
        };
        assert!(row("payments").contains("closed"), "{stdout}");
        assert!(row("search").contains("closed"), "{stdout}");

        // Open payments fleet-wide with an expiry: the in-process breaker follows.
        let out = fleet(args(
            &[
                &["open", "payments"],
                &store[..],
                &["--expires", "10m", "--actor", "fleet-cli-test"],
            ]
            .concat(),
        ))
        .await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(stdout.contains("payments: forced_open"), "{stdout}");
        assert!(stdout.contains("lapses to closed in"), "{stdout}");
        wait_for(payments, State::ForcedOpen).await;
        assert_eq!(search.state(), State::Closed, "only payments is opened");
        assert!(payments
            .call(|| async { Ok::<_, std::io::Error>(()) })
            .await
            .is_err_and(|e| e.is_rejected()));

        // Status of just that breaker, as JSON.
        let out = fleet(args(
            &[&["status", "payments"], &store[..], &["--json"]].concat(),
        ))
        .await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON status");
        assert_eq!(v["name"], "payments");
        assert_eq!(v["state"], "forced_open");
        assert_eq!(v["override"], true);
        let expires = v["override_expires_in_ms"].as_u64().expect("an expiry");
        assert!(
            (500_000..=600_000).contains(&expires),
            "expiry {expires} ms"
        );
        assert!(v["epoch"].as_u64().expect("epoch") >= 1);

        // Disable search without expiry: until reset.
        let out = fleet(args(&[&["disable", "search"], &store[..]].concat())).await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(stdout.contains("search: disabled"), "{stdout}");
        assert!(stdout.contains("until reset"), "{stdout}");
        wait_for(search, State::Disabled).await;

        // The table shows both overrides.
        let out = fleet(args(&[&["status"], &store[..]].concat())).await;
        let (stdout, _) = text(&out);
        let lines: Vec<&str> = stdout.lines().collect();
        let payments_row = lines.iter().find(|l| l.starts_with("payments")).unwrap();
        assert!(payments_row.contains("forced_open"), "{stdout}");
        assert!(payments_row.contains("lapses in"), "{stdout}");
        let search_row = lines.iter().find(|l| l.starts_with("search")).unwrap();
        assert!(search_row.contains("disabled"), "{stdout}");
        assert!(search_row.contains("until reset"), "{stdout}");

        // Reset both: closed everywhere.
        for name in ["payments", "search"] {
            let out = fleet(args(&[&["reset", name], &store[..]].concat())).await;
            let (stdout, stderr) = text(&out);
            assert!(out.status.success(), "{stdout}\n{stderr}");
            assert!(stdout.contains(&format!("{name}: closed")), "{stdout}");
        }
        wait_for(payments, State::Closed).await;
        wait_for(search, State::Closed).await;
        assert!(payments
            .call(|| async { Ok::<_, std::io::Error>(()) })
            .await
            .is_ok());
    })
    .await
    .expect("the test took longer than its limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_breakers_are_refused_with_exit_code_1() {
    tokio::time::timeout(LIMIT, async {
        let prefix = random_prefix();
        let url = redis_url();
        let (_fleet, _breakers) = instance(&prefix, &["payments"]).await;
        let store = ["--store", url.as_str(), "--prefix", prefix.as_str()];

        for action in ["status", "open", "disable", "reset"] {
            let out = fleet(args(&[&[action, "paymnets"], &store[..]].concat())).await;
            let (stdout, stderr) = text(&out);
            assert_eq!(out.status.code(), Some(1), "{action}: {stdout}\n{stderr}");
            assert!(
                stderr.contains("no breaker named `paymnets`") && stderr.contains("payments"),
                "{action}: the message names the unknown breaker and the known ones:\n{stderr}"
            );
        }

        // With --create, an override for a breaker not seen yet is stored, and
        // an instance that starts later begins in it.
        let out = fleet(args(
            &[&["open", "checkout"], &store[..], &["--create"]].concat(),
        ))
        .await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        let (_late_fleet, late) = instance(&prefix, &["checkout"]).await;
        wait_for(&late[0], State::ForcedOpen).await;
        let out = fleet(args(&[&["reset", "checkout"], &store[..]].concat())).await;
        assert!(out.status.success());
        wait_for(&late[0], State::Closed).await;
    })
    .await
    .expect("the test took longer than its limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_gives_its_url_and_exit_code_2() {
    tokio::time::timeout(LIMIT, async {
        // A port nothing listens on: bind, read it, close.
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("binding a port");
            l.local_addr().expect("address").port()
        };
        let url = format!("redis://user:hunter2@127.0.0.1:{port}");
        for action in [vec!["status"], vec!["open", "payments"], vec!["reset", "x"]] {
            let out = fleet(args(&[&action[..], &["--store", url.as_str()]].concat())).await;
            let (stdout, stderr) = text(&out);
            assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
            assert!(
                stderr.contains(&format!(
                    "cannot reach the state store at redis://user:***@127.0.0.1:{port}"
                )),
                "{stderr}"
            );
            assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");
        }

        // A URL that is not one.
        let out = fleet(args(&["status", "--store", "http://nope"])).await;
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("invalid state store `http://nope`"),
            "{stderr}"
        );

        // An out-of-range expiry is refused by the argument parser.
        let out = fleet(args(&[
            "open",
            "payments",
            "--store",
            "redis://127.0.0.1:1",
            "--expires",
            "10ms",
        ]))
        .await;
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("from 1s to 30days"), "{stderr}");
    })
    .await
    .expect("the test took longer than its limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_can_come_from_a_proxy_configuration() {
    tokio::time::timeout(LIMIT, async {
        let prefix = random_prefix();
        let url = redis_url();
        let (_link, breakers) = instance(&prefix, &["orders"]).await;
        let dir = std::env::temp_dir().join(format!("ripcord-fleet-cli-{prefix}"));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let with_store = dir.join("with-store.toml");
        std::fs::write(
            &with_store,
            format!(
                "store = \"{url}\"\nstore_prefix = \"{prefix}\"\n\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n\n[upstreams.app]\naddresses = [\"127.0.0.1:9\"]\n\n[[routes]]\nname = \"orders\"\npath_prefix = \"/\"\nupstream = \"app\"\n"
            ),
        )
        .expect("writing the configuration");
        let config = with_store.display().to_string();

        let out = fleet(args(&["open", "orders", "--config", &config])).await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        wait_for(&breakers[0], State::ForcedOpen).await;
        let out = fleet(args(&["status", "--config", &config])).await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("orders") && l.contains("forced_open")),
            "{stdout}"
        );
        let out = fleet(args(&["reset", "orders", "--config", &config])).await;
        assert!(out.status.success());
        wait_for(&breakers[0], State::Closed).await;

        // A configuration without a store, and one that is not valid.
        let without = dir.join("without-store.toml");
        std::fs::write(
            &without,
            "[[listeners]]\nlisten = \"127.0.0.1:0\"\n\n[upstreams.app]\naddresses = [\"127.0.0.1:9\"]\n\n[[routes]]\nname = \"orders\"\npath_prefix = \"/\"\nupstream = \"app\"\n",
        )
        .expect("writing");
        let out = fleet(args(&["status", "--config", &without.display().to_string()])).await;
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("has no `store`"), "{stderr}");
        let broken = dir.join("broken.toml");
        std::fs::write(&broken, "store = [\n").expect("writing");
        let out = fleet(args(&["status", "--config", &broken.display().to_string()])).await;
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("broken.toml"), "{stderr}");
        // Neither --store nor --config: the argument parser says so.
        let out = fleet(args(&["status"])).await;
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("--store"), "{stderr}");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .expect("the test took longer than its limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_faults_are_set_listed_cleared_and_audited() {
    let prefix = random_prefix();
    let url = redis_url();
    let store = |extra: &[&str]| {
        let mut a: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        a.extend(args(&["--store", &url, "--prefix", &prefix]));
        a
    };
    let out = fleet(store(&[
        "fault",
        "set",
        "checkout",
        "--abort",
        "60%",
        "--status",
        "503",
        "--expires",
        "5m",
        "--actor",
        "drill-test",
    ]))
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("abort 60% (503)"), "{stdout}");

    let out = fleet(store(&["fault", "list", "--json"])).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let list: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(list[0]["route"], "checkout", "{list}");
    assert_eq!(list[0]["fault"]["abort_rate"], 0.6, "{list}");
    assert!(list[0]["expires_in_ms"]
        .as_u64()
        .is_some_and(|ms| ms <= 300_000));

    // What every proxy reads: the same fault, through the store's API.
    let reader = ripcord_redis::RedisStore::builder(&url)
        .key_prefix(&prefix)
        .pubsub(false)
        .build()
        .await
        .expect("store");
    let seen = reader
        .fault("checkout")
        .await
        .expect("read")
        .expect("a fault");
    assert_eq!(seen.config.abort_status, Some(503));

    let out = fleet(store(&[
        "fault",
        "clear",
        "checkout",
        "--actor",
        "drill-test",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0));
    assert!(reader.fault("checkout").await.expect("read").is_none());
    let out = fleet(store(&["fault", "audit"])).await;
    let (stdout, _) = text(&out);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].contains("clear checkout by drill-test"),
        "{stdout}"
    );
    assert!(
        lines[1].contains("set checkout abort 60% (503) by drill-test"),
        "{stdout}"
    );

    // Nothing to inject, or a share out of range: a usage error.
    for bad in [
        vec!["fault", "set", "checkout", "--expires", "5m"],
        vec![
            "fault",
            "set",
            "checkout",
            "--abort",
            "2",
            "--expires",
            "5m",
        ],
        vec![
            "fault",
            "set",
            "checkout",
            "--abort",
            "10%",
            "--expires",
            "2days",
        ],
    ] {
        let out = fleet(store(&bad)).await;
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {:?}", text(&out));
    }
}
