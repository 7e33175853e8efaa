//! The dashboard in a real headless Chromium: the page loads, shows one tile
//! per breaker, and a tile's state changes in the already-open page when the
//! test trips that breaker. Saves a screenshot under the target folder
//! (`target/dashboard/dashboard.png`).
//!
//! Needs Chromium: `scripts/test.sh` provisions it (`scripts/ensure-chromium.sh`
//! installs Debian's package as root). Without one the test fails and says how
//! to get one; it never passes without having looked at the page.
//!
//! `RIPCORD_DASHBOARD_SCENE=readme` runs the longer scene behind the README's
//! screenshot: six breakers, one of them flapping, and two minutes of traffic
//! before the page opens so the sparklines have data.

#[path = "common/browser.rs"]
mod browser;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use browser::{find_or_install_chromium, Browser, Page};
use ripcord::{Backoff, CircuitBreaker, State};
use ripcord_metrics::Metrics;
use ripcord_proxy::admin::serve;
use ripcord_proxy::state::{BreakerEntry, FaultEntry, ProxyState};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// One simulated dependency behind a breaker.
struct Dependency {
    name: &'static str,
    scope: &'static str,
    /// Calls per 10 ms tick, on average.
    rate: f64,
    /// Failure probability at `t` seconds since the start.
    failures: fn(f64) -> f64,
    /// Fraction of calls that are slow.
    slow: f64,
}

fn steady(p: f64) -> impl Fn(f64) -> f64 {
    move |_| p
}

/// Fails hard for 15 s of every 50 s.
fn flapping(t: f64) -> f64 {
    if (t % 50.0) >= 20.0 && (t % 50.0) < 35.0 {
        0.8
    } else {
        0.02
    }
}

fn scene() -> (Vec<Dependency>, Duration, (u32, u32)) {
    let readme = std::env::var("RIPCORD_DASHBOARD_SCENE").is_ok_and(|s| s == "readme");
    fn low(_: f64) -> f64 {
        0.01
    }
    fn lower(_: f64) -> f64 {
        0.002
    }
    fn some(_: f64) -> f64 {
        0.06
    }
    let _ = steady; // the fn pointers above are the same, without captures
    let mut deps = vec![
        Dependency {
            name: "payments",
            scope: "route:payments",
            rate: 6.0,
            failures: low,
            slow: 0.0,
        },
        Dependency {
            name: "search",
            scope: "route:search",
            rate: 4.0,
            failures: some,
            slow: 0.15,
        },
        Dependency {
            name: "inventory",
            scope: "upstream:inventory",
            rate: 3.0,
            failures: lower,
            slow: 0.0,
        },
    ];
    if !readme {
        return (deps, Duration::from_secs(2), (1280, 520));
    }
    deps.extend([
        Dependency {
            name: "recommendations",
            scope: "upstream:recommendations",
            rate: 3.0,
            failures: flapping,
            slow: 0.05,
        },
        Dependency {
            name: "checkout",
            scope: "route:checkout",
            rate: 2.0,
            failures: low,
            slow: 0.02,
        },
        Dependency {
            name: "shipping-quotes",
            scope: "upstream:shipping",
            rate: 1.5,
            failures: some,
            slow: 0.3,
        },
    ]);
    (deps, Duration::from_secs(116), (1280, 660))
}

/// xorshift64*: enough randomness for made-up traffic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Sends made-up traffic through the breakers until `stop` is set.
fn traffic(deps: Arc<Vec<Dependency>>, breakers: Vec<CircuitBreaker>, stop: Arc<AtomicBool>) {
    let start = Instant::now();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    while !stop.load(Ordering::Relaxed) {
        let t = start.elapsed().as_secs_f64();
        for (dep, breaker) in deps.iter().zip(&breakers) {
            // A slow wave on top of the average, so the sparklines have a shape.
            let wave = 1.0 + 0.35 * (t / 9.0 + dep.rate).sin() + 0.15 * (t / 2.3).sin();
            let calls = (dep.rate * wave * (0.6 + 0.8 * rng.next())).round() as usize;
            for _ in 0..calls {
                let fail = rng.next() < (dep.failures)(t);
                let slow = rng.next() < dep.slow;
                let _ = breaker.call_sync(|| {
                    if slow {
                        std::thread::sleep(Duration::from_micros(1500));
                    }
                    if fail {
                        Err("upstream error")
                    } else {
                        Ok(())
                    }
                });
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn target_dir() -> PathBuf {
    match option_env!("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_tile_per_breaker_and_updates_live() {
    let Some(chromium) = tokio::task::spawn_blocking(find_or_install_chromium)
        .await
        .expect("search for chromium")
    else {
        panic!(
            "the dashboard test needs Chromium: none was found and scripts/ensure-chromium.sh \
             could not install one (it needs root and apt-get). Install Debian's `chromium` \
             (or run scripts/ensure-chromium.sh as root), or set RIPCORD_CHROMIUM to a \
             Chromium binary."
        );
    };

    let (deps, warmup, (width, height)) = scene();
    let metrics = Metrics::new();
    let mut entries = Vec::new();
    let mut breakers = Vec::new();
    for dep in &deps {
        let breaker = metrics
            .breaker(
                CircuitBreaker::builder(dep.name)
                    .failure_rate(0.5)
                    .slow_calls(Duration::from_millis(1), 0.8)
                    .minimum_calls(20)
                    .half_open_calls(3)
                    .open_for(Backoff::fixed(if dep.name == "payments" {
                        Duration::from_secs(600)
                    } else {
                        Duration::from_secs(6)
                    })),
            )
            .expect("valid breaker");
        breakers.push(breaker.clone());
        entries.push(BreakerEntry {
            scope: dep.scope.to_string(),
            breaker,
        });
    }
    let state = Arc::new(ProxyState::new(
        entries,
        None,
        metrics,
        Some("t0ken".into()),
    ));
    // A route a drill will run on.
    let drill = ripcord::Chaos::builder("checkout")
        .abort(0.6)
        .latency(
            0.2,
            ripcord::chaos::Latency::fixed(Duration::from_millis(1500)),
        )
        .enabled(false)
        .build()
        .expect("valid drill");
    state.replace_faults(vec![FaultEntry {
        route: "checkout".into(),
        chaos: drill.clone(),
    }]);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop_admin, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, Arc::clone(&state), async {
        let _ = stopped.await;
    }));

    let stop = Arc::new(AtomicBool::new(false));
    let deps = Arc::new(deps);
    let generator = {
        let (deps, breakers, stop) = (Arc::clone(&deps), breakers.clone(), Arc::clone(&stop));
        std::thread::spawn(move || traffic(deps, breakers, stop))
    };
    // Stops the traffic even when an assertion fails.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stop_guard = StopOnDrop(Arc::clone(&stop));
    tokio::time::sleep(warmup).await;

    let browser = tokio::task::spawn_blocking(move || Browser::launch(&chromium, width, height))
        .await
        .expect("launch task")
        .expect("chromium starts");
    let result = tokio::time::timeout(Duration::from_secs(120), async {
        let mut page = Page::open(&browser, width, height).await?;
        page.navigate(&format!("http://{addr}/")).await?;

        // One tile per breaker, each showing its state.
        let count = deps.len();
        page.wait_for(
            &format!("document.querySelectorAll('[data-breaker][data-state]').length === {count}"),
            Duration::from_secs(20),
        )
        .await?;
        let names = page
            .eval("[...document.querySelectorAll('[data-breaker]')].map(t => t.dataset.breaker)")
            .await?;
        let expected: Vec<&str> = deps.iter().map(|d| d.name).collect();
        assert_eq!(names, serde_json::json!(expected));
        let payments = r#"document.querySelector('[data-breaker="payments"]')"#;
        assert_eq!(
            page.eval(&format!("{payments}.dataset.state")).await?,
            "closed"
        );
        assert_eq!(
            page.eval(&format!("{payments}.querySelector('.badge').textContent"))
                .await?,
            "closed"
        );
        page.wait_for(
            "document.getElementById('conn').dataset.status === 'live'",
            Duration::from_secs(10),
        )
        .await?;
        // Marks this page, to show the change arrives without a reload.
        page.eval("window.__sameTab = 42").await?;

        // Trip payments the way traffic does: failures.
        let b = &breakers[0];
        for _ in 0..200 {
            let _ = b.call_sync(|| Err::<(), _>("down"));
            if b.state() == State::Open {
                break;
            }
        }
        assert_eq!(b.state(), State::Open, "payments tripped");
        page.wait_for(
            &format!("{payments}.dataset.state === 'open'"),
            Duration::from_secs(10),
        )
        .await?;
        assert_eq!(
            page.eval("window.__sameTab").await?,
            42,
            "the page was not reloaded"
        );
        assert_eq!(
            page.eval(&format!("{payments}.querySelector('.badge').textContent"))
                .await?,
            "open"
        );
        // The other tiles keep their own state.
        let others = page
            .eval(
                r#"[...document.querySelectorAll('[data-breaker]')]
                    .filter(t => t.dataset.breaker !== 'payments')
                    .map(t => t.dataset.state)"#,
            )
            .await?;
        assert!(
            others
                .as_array()
                .is_some_and(|a| a.iter().all(|s| s != "forced_open")),
            "{others}"
        );
        // A drill shows as a banner while it runs, and goes when it stops.
        let banner = r#"document.querySelector('[data-drill="checkout"]')"#;
        assert_eq!(page.eval(&format!("{banner} === null")).await?, true);
        drill
            .enable_for(Duration::from_secs(600))
            .expect("a valid expiry");
        page.wait_for(&format!("{banner} !== null"), Duration::from_secs(10))
            .await?;
        let text = page.eval(&format!("{banner}.textContent")).await?;
        let text = text.as_str().unwrap_or_default().to_string();
        assert!(
            text.contains("abort 503 60%")
                && text.contains("latency 20%")
                && text.contains("ends in"),
            "{text}"
        );
        drill.disable();
        page.wait_for(
            "document.getElementById('drills').hidden === true",
            Duration::from_secs(10),
        )
        .await?;
        drill
            .enable_for(Duration::from_secs(600))
            .expect("a valid expiry");
        page.wait_for(&format!("{banner} !== null"), Duration::from_secs(10))
            .await?;
        // Sparklines are drawn once there are two samples.
        page.wait_for(
            r#"document.querySelectorAll('svg.spark path.area').length > 0"#,
            Duration::from_secs(10),
        )
        .await?;
        // Let the open band show in the sparkline, then take the picture.
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let png = page.screenshot().await?;
        Ok::<_, std::io::Error>(png)
    })
    .await;

    let png = match result {
        Ok(Ok(png)) => png,
        Ok(Err(e)) => panic!(
            "dashboard check failed: {e}\nchromium said:\n{}",
            browser.log()
        ),
        Err(_) => panic!(
            "dashboard check took over 120 s\nchromium said:\n{}",
            browser.log()
        ),
    };
    drop(browser);
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG screenshot");
    assert!(png.len() > 10_000, "a screenshot with something in it");
    let dir = target_dir().join("dashboard");
    std::fs::create_dir_all(&dir).expect("create target/dashboard");
    let path = dir.join("dashboard.png");
    std::fs::write(&path, &png).expect("save the screenshot");
    eprintln!("dashboard screenshot: {}", path.display());

    drop(stop_guard);
    generator.join().expect("traffic thread");
    let _ = stop_admin.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve returned after shutdown")
        .expect("serve did not panic")
        .expect("serve ended without error");
}
