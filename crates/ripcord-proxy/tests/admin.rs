//! The admin listener over real TCP: listing, authentication of mutating
//! calls, state changes visible in `/metrics`, error answers, garbage input,
//! the event stream, reloads and shutdown.

#[path = "common/raw_http.rs"]
mod raw_http;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use raw_http::{events_named, exchange, get, post, request, EventStream, Exchange};
use ripcord::{CircuitBreaker, State};
use ripcord_metrics::Metrics;
use ripcord_proxy::admin::serve;
use ripcord_proxy::state::{AdminAccess, BreakerEntry, ProxyState};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TOKEN: &str = "correct-horse-battery-staple";

struct Admin {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    metrics: Metrics,
    breakers: Vec<CircuitBreaker>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Admin {
    async fn start(token: Option<&str>) -> Admin {
        Admin::start_with(token, AdminAccess::default()).await
    }

    async fn start_with(token: Option<&str>, access: AdminAccess) -> Admin {
        let metrics = Metrics::new();
        let mut entries = Vec::new();
        let mut breakers = Vec::new();
        for (name, scope) in [
            ("payments", "route:payments"),
            ("search", "route:search"),
            ("inventory", "upstream:inventory"),
        ] {
            let b = metrics
                .breaker(
                    CircuitBreaker::builder(name)
                        .consecutive_failures(3)
                        .open_for(ripcord::Backoff::fixed(Duration::from_secs(60))),
                )
                .expect("valid breaker");
            breakers.push(b.clone());
            entries.push(BreakerEntry {
                scope: scope.to_string(),
                breaker: b,
            });
        }
        let state = Arc::new(
            ProxyState::new(entries, None, metrics.clone(), token.map(str::to_string))
                .with_access(access),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, Arc::clone(&state), async {
            let _ = stopped.await;
        }));
        Admin {
            addr,
            state,
            metrics,
            breakers,
            stop: Some(stop),
            task,
        }
    }

    fn breaker(&self, name: &str) -> &CircuitBreaker {
        self.breakers
            .iter()
            .find(|b| b.name() == name)
            .expect("a test breaker")
    }

    async fn still_serving(&self) {
        let r = get(self.addr, "/api/breakers").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json().as_array().map(Vec::len), Some(3));
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("serve returned after shutdown")
            .expect("serve did not panic");
        result.expect("serve ended without error");
    }
}

fn state_gauge(metrics_text: &str, name: &str, state: &str) -> Option<f64> {
    let prefix = format!("ripcord_breaker_state{{name=\"{name}\",state=\"{state}\"}} ");
    metrics_text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn lists_every_breaker_and_one_by_name() {
    let admin = Admin::start(Some(TOKEN)).await;
    // Some traffic so the window has figures.
    let payments = admin.breaker("payments");
    let _ = payments.call_sync(|| Ok::<_, ()>(()));
    let _ = payments.call_sync(|| Err::<(), _>(()));

    let r = get(admin.addr, "/api/breakers").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let list = r.json();
    let list = list.as_array().expect("a JSON list");
    let names: Vec<&str> = list.iter().filter_map(|b| b["name"].as_str()).collect();
    assert_eq!(names, ["payments", "search", "inventory"]);
    let p = &list[0];
    assert_eq!(p["scope"], "route:payments");
    assert_eq!(p["state"], "closed");
    assert_eq!(p["epoch"], 0);
    assert_eq!(p["window"]["calls"], 2);
    assert_eq!(p["window"]["failures"], 1);
    assert_eq!(p["window"]["failure_rate"], 0.5);
    assert_eq!(p["consecutive_failures"], 1);
    assert_eq!(p["probes_in_flight"], 0);
    assert!(p["fleet"].is_null(), "no fleet configured: {p}");

    let r = get(admin.addr, "/api/breakers/search").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], "search");
    assert_eq!(r.json()["scope"], "route:search");

    let r = get(admin.addr, "/api/breakers/nonexistent").await;
    assert_eq!(r.status, 404);
    assert!(r.error().contains("nonexistent"), "{}", r.body);

    admin.shutdown().await;
}

#[tokio::test]
async fn mutations_need_the_bearer_token_and_show_in_metrics() {
    let admin = Admin::start(Some(TOKEN)).await;
    let payments = admin.breaker("payments");

    // No token.
    let r = post(admin.addr, "/api/breakers/payments/open", None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{:?}",
        r.headers
    );
    assert!(r.error().contains("Authorization: Bearer"), "{}", r.body);
    // A wrong token, a prefix of the right one, another scheme.
    for auth in [
        "Bearer wrong".to_string(),
        format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
        format!("Bearer {TOKEN}x"),
        format!("Basic {TOKEN}"),
        "Bearer".to_string(),
    ] {
        let r = request(
            admin.addr,
            "POST",
            "/api/breakers/payments/open",
            &[("Authorization", &auth)],
            b"",
        )
        .await;
        assert_eq!(r.status, 401, "{auth}: {}", r.body);
        assert!(r.header("www-authenticate").is_some());
    }
    assert_eq!(
        payments.state(),
        State::Closed,
        "refused calls change nothing"
    );

    // The right token: force open.
    let r = post(admin.addr, "/api/breakers/payments/open", Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "forced_open");
    assert_eq!(r.json()["breaker"]["name"], "payments");
    assert_eq!(payments.state(), State::ForcedOpen);
    let m = get(admin.addr, "/metrics").await;
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type")
            .is_some_and(|v| v.starts_with("text/plain")),
        "{:?}",
        m.headers
    );
    assert_eq!(
        state_gauge(&m.body, "payments", "forced_open"),
        Some(1.0),
        "{}",
        m.body
    );
    assert_eq!(state_gauge(&m.body, "payments", "closed"), Some(0.0));
    // The other breakers are untouched.
    assert_eq!(admin.breaker("search").state(), State::Closed);
    assert_eq!(state_gauge(&m.body, "search", "closed"), Some(1.0));

    // Disable, then reset.
    let r = post(admin.addr, "/api/breakers/payments/disable", Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(payments.state(), State::Disabled);
    let m = get(admin.addr, "/metrics").await;
    assert_eq!(state_gauge(&m.body, "payments", "disabled"), Some(1.0));

    let r = post(admin.addr, "/api/breakers/payments/reset", Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "closed");
    assert_eq!(payments.state(), State::Closed);
    let m = get(admin.addr, "/metrics").await;
    assert_eq!(state_gauge(&m.body, "payments", "closed"), Some(1.0));
    assert_eq!(state_gauge(&m.body, "payments", "disabled"), Some(0.0));
    assert!(m
        .body
        .contains(r#"ripcord_breaker_transitions_total{name="payments",from="closed",to="forced_open",reason="manual"} 1"#));

    // The scheme is case-insensitive; names may be percent-encoded.
    let auth = format!("bearer {TOKEN}");
    let r = request(
        admin.addr,
        "POST",
        "/api/breakers/%70ayments/open",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(payments.state(), State::ForcedOpen);

    admin.shutdown().await;
}

#[tokio::test]
async fn without_a_configured_token_mutations_are_forbidden() {
    let admin = Admin::start(None).await;
    for token in [None, Some("anything"), Some("")] {
        let r = post(admin.addr, "/api/breakers/payments/open", token).await;
        assert_eq!(r.status, 403, "{}", r.body);
        let e = r.error();
        assert!(
            e.contains("RIPCORD_ADMIN_TOKEN") && e.contains("token"),
            "{e}"
        );
    }
    assert_eq!(admin.breaker("payments").state(), State::Closed);
    // Reading still works.
    admin.still_serving().await;

    // An empty configured token counts as none.
    let admin2 = Admin::start(Some("")).await;
    let r = post(admin2.addr, "/api/breakers/payments/open", Some("")).await;
    assert_eq!(r.status, 403, "{}", r.body);
    admin.shutdown().await;
    admin2.shutdown().await;
}

#[tokio::test]
async fn unknown_breakers_actions_and_methods() {
    let admin = Admin::start(Some(TOKEN)).await;

    let r = post(admin.addr, "/api/breakers/nope/open", Some(TOKEN)).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.error().contains("nope"), "{}", r.body);

    let r = post(admin.addr, "/api/breakers/payments/explode", Some(TOKEN)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let e = r.error();
    assert!(
        e.contains("explode") && e.contains("open, disable, reset"),
        "{e}"
    );
    assert_eq!(admin.breaker("payments").state(), State::Closed);

    // Wrong methods say which one is allowed.
    let r = get(admin.addr, "/api/breakers/payments/open").await;
    assert_eq!(r.status, 405, "{}", r.body);
    assert_eq!(r.header("allow"), Some("POST"));
    for (method, path) in [
        ("DELETE", "/api/breakers"),
        ("POST", "/metrics"),
        ("PUT", "/api/breakers/payments"),
        ("POST", "/"),
        ("PATCH", "/api/events"),
    ] {
        let r = request(admin.addr, method, path, &[], b"").await;
        assert_eq!(r.status, 405, "{method} {path}: {}", r.body);
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method} {path}");
        assert!(r.error().contains("GET"), "{}", r.body);
    }

    let r = get(admin.addr, "/no/such/page").await;
    assert_eq!(r.status, 404);
    assert!(r.error().contains("/no/such/page"));

    // A broken percent escape in a name.
    let r = get(admin.addr, "/api/breakers/%zz").await;
    assert_eq!(r.status, 400, "{}", r.body);

    admin.shutdown().await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let admin = Admin::start(Some(TOKEN)).await;
    let auth = format!("Bearer {TOKEN}");

    // Declared too large: refused before reading it.
    let raw = format!(
        "POST /api/breakers/payments/open HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\
         Content-Length: 10000000\r\n\r\n"
    );
    match exchange(admin.addr, raw.as_bytes()).await {
        Exchange::Answered(r) => {
            assert_eq!(r.status, 413, "{}", r.body);
            assert!(r.error().contains("4096"), "{}", r.body);
        }
        Exchange::Closed => panic!("a declared oversized body gets a 413"),
    }

    // Chunked, over the limit once read.
    let chunk = "a".repeat(5000);
    let raw = format!(
        "POST /api/breakers/payments/open HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    match exchange(admin.addr, raw.as_bytes()).await {
        Exchange::Answered(r) => assert_eq!(r.status, 413, "{}", r.body),
        // Closing on a client that keeps sending is fine too.
        Exchange::Closed => {}
    }
    assert_eq!(
        admin.breaker("payments").state(),
        State::Closed,
        "an oversized request does nothing"
    );

    // A small body is fine.
    let r = request(
        admin.addr,
        "POST",
        "/api/breakers/payments/open",
        &[("Authorization", &auth)],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    admin.still_serving().await;
    admin.shutdown().await;
}

#[tokio::test]
async fn garbage_gets_a_4xx_or_a_closed_connection_and_serving_goes_on() {
    let admin = Admin::start(Some(TOKEN)).await;
    let huge_path = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000));
    let huge_header = format!(
        "GET /api/breakers HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\n\r\n",
        "b".repeat(64 * 1024)
    );
    let many_headers = format!(
        "GET /api/breakers HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..500)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let inputs: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02\x03garbage\r\n\r\n".to_vec(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), // a TLS hello
        b"GET\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"GET /api/breakers HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n".to_vec(),
        b"GET /api/breakers HTTP/1.1\r\nHo st: x\r\n\r\n".to_vec(),
        b"POST /api/breakers/payments/open HTTP/1.1\r\nAuthorization: Bearer \xff\xfe\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET /api/breakers/\xff\xfe HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
        huge_path.into_bytes(),
        huge_header.into_bytes(),
        many_headers.into_bytes(),
        vec![b'x'; 200_000],
    ];
    for (i, raw) in inputs.iter().enumerate() {
        match exchange(admin.addr, raw).await {
            Exchange::Answered(r) => assert!(
                (400..500).contains(&r.status),
                "input {i} got {} {}",
                r.status,
                r.body
            ),
            Exchange::Closed => {}
        }
        admin.still_serving().await;
    }
    assert_eq!(admin.breaker("payments").state(), State::Closed);

    // A client that connects and says nothing does not block others.
    let idle = tokio::net::TcpStream::connect(admin.addr)
        .await
        .expect("connect");
    admin.still_serving().await;
    drop(idle);
    admin.shutdown().await;
}

#[tokio::test]
async fn the_event_stream_delivers_a_state_change_at_once() {
    let admin = Admin::start(Some(TOKEN)).await;
    let mut events = EventStream::open(admin.addr).await;
    // First the history, with every breaker.
    await_history(&mut events).await;
    let history = &events_named(&events.seen, "history")[0];
    assert_eq!(history["breakers"].as_array().map(Vec::len), Some(3));
    assert_eq!(history["seconds"], 300);

    // Trip a breaker the ordinary way: three failures in a row.
    let t = trip_search(&admin, &mut events).await;
    assert_eq!(t["from"], "closed");
    assert_eq!(t["reason"], "consecutive failures");
    assert_eq!(t["breaker"]["state"], "open");
    assert_eq!(t["breaker"]["scope"], "route:search");

    // Through the admin API too.
    let r = post(admin.addr, "/api/breakers/inventory/disable", Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    events
        .wait_for(Duration::from_secs(5), |s| {
            events_named(s, "transition")
                .iter()
                .any(|t| t["name"] == "inventory" && t["to"] == "disabled")
        })
        .await
        .expect("a transition event for inventory within 5 s");

    // Snapshots arrive every second with every breaker's state.
    events
        .wait_for(Duration::from_secs(5), |s| {
            events_named(s, "snapshot").iter().any(|m| {
                m["breakers"].as_array().is_some_and(|b| {
                    b.iter()
                        .any(|b| b["name"] == "search" && b["state"] == "open")
                })
            })
        })
        .await
        .expect("a snapshot showing search open");

    // Shutdown ends the stream and serve returns.
    admin.shutdown().await;
    assert!(
        events.wait_end(Duration::from_secs(10)).await,
        "the event stream ends at shutdown"
    );
}

#[tokio::test]
async fn a_stream_opened_after_the_last_one_closed_still_gets_transitions() {
    let admin = Admin::start(Some(TOKEN)).await;
    // The breakers are followed only while a stream is open: open one, let
    // it go, and give the listener two snapshots to notice it is gone.
    let mut first = EventStream::open(admin.addr).await;
    first
        .wait_for(Duration::from_secs(5), |s| {
            !events_named(s, "history").is_empty()
        })
        .await
        .expect("a history event first");
    drop(first);
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let mut events = EventStream::open(admin.addr).await;
    await_history(&mut events).await;
    let t = trip_search(&admin, &mut events).await;
    assert_eq!(t["from"], "closed");
    assert_eq!(t["reason"], "consecutive failures");
    admin.shutdown().await;
}

/// Waits (up to 5 s) for the history event that opens every stream.
async fn await_history(events: &mut EventStream) {
    events
        .wait_for(Duration::from_secs(5), |s| {
            !events_named(s, "history").is_empty()
        })
        .await
        .expect("a history event first");
}

/// Trips `search` the ordinary way (three failures in a row) and returns the
/// transition event `events` delivers for it within 5 s.
async fn trip_search(admin: &Admin, events: &mut EventStream) -> serde_json::Value {
    let search = admin.breaker("search");
    for _ in 0..3 {
        let _ = search.call_sync(|| Err::<(), _>("down"));
    }
    assert_eq!(search.state(), State::Open);
    events
        .wait_for(Duration::from_secs(5), |s| {
            events_named(s, "transition")
                .iter()
                .any(|t| t["name"] == "search" && t["to"] == "open")
        })
        .await
        .expect("a transition event for search within 5 s");
    events_named(&events.seen, "transition")
        .into_iter()
        .find(|t| t["name"] == "search")
        .expect("found above")
}

#[tokio::test]
async fn history_records_rates_each_second() {
    let admin = Admin::start(Some(TOKEN)).await;
    let payments = admin.breaker("payments");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        for i in 0..20 {
            let _ = payments.call_sync(|| if i % 4 == 0 { Err(()) } else { Ok(()) });
        }
        let r = get(admin.addr, "/api/history").await;
        assert_eq!(r.status, 200);
        let h = r.json();
        let samples = h["history"]["payments"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if samples
            .iter()
            .any(|s| s["calls"].as_f64().unwrap_or(0.0) > 0.0)
        {
            let s = samples
                .iter()
                .find(|s| s["calls"].as_f64().unwrap_or(0.0) > 0.0)
                .expect("found");
            assert_eq!(s["state"], "closed");
            assert!(s["failures"].as_f64().unwrap_or(0.0) > 0.0, "{s}");
            assert!(s["t"].as_u64().unwrap_or(0) > 1_600_000_000_000, "{s}");
            // A breaker without traffic has samples too, with no calls.
            let idle = h["history"]["search"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(!idle.is_empty());
            assert!(idle.iter().all(|s| s["calls"] == 0.0), "{idle:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no sample with calls in 8 s: {h}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let _ = &admin.metrics;
    admin.shutdown().await;
}

#[tokio::test]
async fn a_reload_is_picked_up_by_the_api_and_the_stream() {
    let admin = Admin::start(Some(TOKEN)).await;
    let mut events = EventStream::open(admin.addr).await;
    let fresh = admin
        .metrics
        .breaker(CircuitBreaker::builder("checkout").consecutive_failures(2))
        .expect("valid");
    // Keep payments (same breaker), drop the others, add checkout.
    admin.state.replace_breakers(vec![
        BreakerEntry {
            scope: "route:payments".into(),
            breaker: admin.breaker("payments").clone(),
        },
        BreakerEntry {
            scope: "route:checkout".into(),
            breaker: fresh.clone(),
        },
    ]);
    let r = get(admin.addr, "/api/breakers").await;
    let names: Vec<String> = r
        .json()
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|b| b["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(names, ["payments", "checkout"]);
    assert_eq!(get(admin.addr, "/api/breakers/search").await.status, 404);

    // Once a snapshot lists checkout, its transitions are followed.
    events
        .wait_for(Duration::from_secs(5), |s| {
            events_named(s, "snapshot")
                .iter()
                .any(|m| m["breakers"].as_array().is_some_and(|b| b.len() == 2))
        })
        .await
        .expect("a snapshot after the reload");
    fresh.force_open();
    events
        .wait_for(Duration::from_secs(5), |s| {
            events_named(s, "transition")
                .iter()
                .any(|t| t["name"] == "checkout" && t["to"] == "forced_open")
        })
        .await
        .expect("a transition of the new breaker");
    let r = post(admin.addr, "/api/breakers/checkout/reset", Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(fresh.state(), State::Closed);
    admin.shutdown().await;
}

#[tokio::test]
async fn the_dashboard_page_and_its_files_are_served() {
    let admin = Admin::start(None).await;
    let r = get(admin.addr, "/").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|v| v.starts_with("text/html")));
    assert!(r.body.contains("/dashboard.js") && r.body.contains("/dashboard.css"));
    let csp = r.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    // Nothing is loaded from elsewhere.
    for path in ["/", "/dashboard.js", "/dashboard.css", "/favicon.svg"] {
        let r = get(admin.addr, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(
            !r.body.contains("http://") || path == "/dashboard.js" || path == "/favicon.svg",
            "{path} refers to another origin"
        );
        assert!(
            !r.body.contains("https://"),
            "{path} refers to another origin"
        );
    }
    let head = exchange(
        admin.addr,
        b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    match head {
        Exchange::Answered(r) => {
            assert_eq!(r.status, 200);
            assert!(r.body.is_empty());
        }
        Exchange::Closed => panic!("HEAD / gets an answer"),
    }
    admin.shutdown().await;
}

#[tokio::test]
async fn event_streams_are_capped_and_freed() {
    let admin = Admin::start(None).await;
    let mut open = Vec::new();
    for _ in 0..ripcord_proxy::admin::MAX_STREAMS {
        open.push(EventStream::open(admin.addr).await);
    }
    let r = get(admin.addr, "/api/events").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.error().contains("too many event streams"), "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("5"));
    // Everything else still answers.
    admin.still_serving().await;

    // Closing one frees its slot (noticed at the next message, within a second or so).
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let raw = "GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut s = tokio::net::TcpStream::connect(admin.addr)
            .await
            .expect("connect");
        tokio::io::AsyncWriteExt::write_all(&mut s, raw.as_bytes())
            .await
            .expect("send");
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut s, &mut buf),
        )
        .await
        .expect("an answer")
        .expect("read");
        if buf[..n].starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a closed stream's slot was not freed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(open);
    admin.shutdown().await;
}

#[tokio::test]
async fn fleet_figures_are_listed_and_control_reaches_the_store() {
    use ripcord::store::{Fleet, MemoryStore};

    let store = MemoryStore::new();
    let fleet = Fleet::builder(store.clone())
        .instance("proxy-a")
        .build()
        .expect("valid fleet");
    let peer = Fleet::builder(store.clone())
        .instance("proxy-b")
        .build()
        .expect("valid fleet");
    let metrics = Metrics::new();
    let shared = metrics
        .breaker(CircuitBreaker::builder("payments").fleet(&fleet))
        .expect("valid");
    let local = metrics
        .breaker(CircuitBreaker::builder("local-only"))
        .expect("valid");
    let on_peer = CircuitBreaker::builder("payments")
        .fleet(&peer)
        .build()
        .expect("valid");
    let state = Arc::new(ProxyState::new(
        vec![
            BreakerEntry {
                scope: "route:payments".into(),
                breaker: shared.clone(),
            },
            BreakerEntry {
                scope: "route:local".into(),
                breaker: local,
            },
        ],
        Some(fleet.clone()),
        metrics,
        Some(TOKEN.into()),
    ));
    fleet.sync_now().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state, async {
        let _ = stopped.await;
    }));

    let r = get(addr, "/api/breakers").await;
    assert_eq!(r.status, 200);
    let list = r.json();
    let f = &list[0]["fleet"];
    assert_eq!(f["instance"], "proxy-a");
    assert_eq!(f["degraded"], false);
    assert_eq!(f["shared"], true);
    assert!(f["syncs"].as_u64().is_some_and(|n| n >= 1), "{f}");
    assert!(f["last_sync_latency_ms"].as_f64().is_some(), "{f}");
    assert_eq!(list[1]["fleet"]["shared"], false);

    // Forcing open through the API reaches the other instance via the store.
    let r = post(addr, "/api/breakers/payments/open", Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(shared.state(), State::ForcedOpen);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while on_peer.state() != State::ForcedOpen {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the peer instance never saw the override: {:?}",
            on_peer.state()
        );
        peer.sync_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // With the store down, an action still applies here and says the fleet
    // did not get it; the listing shows the fleet degraded.
    store.set_down(true);
    let r = post(addr, "/api/breakers/payments/disable", Some(TOKEN)).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.error().contains("fleet store failed"), "{}", r.body);
    assert_eq!(shared.state(), State::Disabled);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        fleet.sync_now().await;
        let r = get(addr, "/api/breakers/payments").await;
        if r.json()["fleet"]["degraded"] == true {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fleet never showed as degraded: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("serve returned")
        .expect("no panic")
        .expect("no error");
}

#[tokio::test]
async fn shutdown_returns_with_idle_and_streaming_clients_connected() {
    let admin = Admin::start(None).await;
    let addr = admin.addr;
    // One client that never finishes its request, one stream that is never read.
    let mut idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut idle, b"GET /api/breakers HTTP/1.1\r\nHo")
        .await
        .expect("send");
    let stream = EventStream::open(addr).await;
    admin.shutdown().await; // bounded: fails after 10 s
                            // The listener is gone.
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections after shutdown"
    );
    drop((idle, stream));
}

/// The status of `GET path` sent with `Host: host`.
async fn status_with_host(addr: SocketAddr, path: &str, host: &str) -> u16 {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    match exchange(addr, raw.as_bytes()).await {
        Exchange::Answered(r) => r.status,
        Exchange::Closed => panic!("GET {path} with host {host}: closed unanswered"),
    }
}

#[tokio::test]
async fn reads_answer_only_hosts_a_rebound_name_cannot_be() {
    let admin = Admin::start(None).await;
    let port = admin.addr.port();
    for path in [
        "/api/breakers",
        "/api/breakers/payments",
        "/api/history",
        "/metrics",
    ] {
        for host in [
            format!("attacker.example:{port}"),
            "evil.test".to_string(),
            format!("x@127.0.0.1:{port}"),
            "a, b".to_string(),
        ] {
            assert_eq!(
                status_with_host(admin.addr, path, &host).await,
                403,
                "{path} {host}"
            );
        }
        for host in [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
            "dashboard.localhost".to_string(),
            "myhost".to_string(),
        ] {
            assert_eq!(
                status_with_host(admin.addr, path, &host).await,
                200,
                "{path} {host}"
            );
        }
    }
    let raw = "GET /api/breakers HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n";
    let Exchange::Answered(r) = exchange(admin.addr, raw.as_bytes()).await else {
        panic!("closed unanswered");
    };
    assert!(r.error().contains("allowed_hosts"), "{}", r.body);
    // The dashboard's static files name no secret.
    assert_eq!(
        status_with_host(admin.addr, "/", "attacker.example").await,
        200
    );
    // A listed name is answered.
    let listed = Admin::start_with(
        None,
        AdminAccess {
            allowed_hosts: vec!["proxy.internal".into()],
            ..AdminAccess::default()
        },
    )
    .await;
    assert_eq!(
        status_with_host(listed.addr, "/metrics", "Proxy.Internal:9901").await,
        200
    );
    assert_eq!(
        status_with_host(listed.addr, "/metrics", "other.internal").await,
        403
    );
    listed.shutdown().await;
    admin.shutdown().await;
}

#[tokio::test]
async fn a_request_body_that_stalls_gets_408() {
    let admin = Admin::start(Some(TOKEN)).await;
    let raw = format!(
        "POST /api/breakers/payments/open HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: 10\r\n\r\nab",
        admin.addr
    );
    let started = std::time::Instant::now();
    let mut s = tokio::net::TcpStream::connect(admin.addr)
        .await
        .expect("connected");
    tokio::io::AsyncWriteExt::write_all(&mut s, raw.as_bytes())
        .await
        .expect("sent");
    // Three times the 10 s deadline.
    let mut seen = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut seen),
    )
    .await;
    assert!(read.is_ok(), "neither answered nor closed in time");
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() >= Duration::from_secs(5));
    assert_eq!(
        admin.breaker("payments").state(),
        State::Closed,
        "nothing was done"
    );
    admin.still_serving().await;
    admin.shutdown().await;
}

/// An event stream opened from the loopback address `source`: its status.
async fn stream_from(source: &str, addr: SocketAddr) -> (u16, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(format!("{source}:0").parse().expect("an address"))
        .expect("bound");
    let mut s = socket.connect(addr).await.expect("connected");
    let raw = format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    s.write_all(raw.as_bytes()).await.expect("sent");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("an answer in time")
        .expect("read");
    let status = std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|t| t.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, s)
}

#[tokio::test]
async fn one_peer_cannot_hold_every_event_stream() {
    let admin = Admin::start_with(
        None,
        AdminAccess {
            max_streams_per_peer: 4,
            ..AdminAccess::default()
        },
    )
    .await;
    let mut open = Vec::new();
    for _ in 0..4 {
        let (status, s) = stream_from("127.0.0.1", admin.addr).await;
        assert_eq!(status, 200);
        open.push(s);
    }
    let r = get(admin.addr, "/api/events").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.error().contains("from 127.0.0.1"), "{}", r.body);
    // Another address still gets its share.
    let (status, other) = stream_from("127.0.0.2", admin.addr).await;
    assert_eq!(status, 200);
    drop(other);
    drop(open);
    admin.shutdown().await;
}

#[tokio::test]
async fn silent_connections_are_closed_and_do_not_lock_the_admin_out() {
    use tokio::io::AsyncReadExt;
    let admin = Admin::start(None).await;
    let mut silent = Vec::new();
    for _ in 0..ripcord_proxy::admin::MAX_CONNECTIONS + 20 {
        if let Ok(s) = tokio::net::TcpStream::connect(admin.addr).await {
            silent.push(s);
        }
    }
    // Each is closed at the 10 s header deadline (or at once, past the
    // listener's cap): none stays open three times as long.
    let waits = silent.into_iter().map(|mut s| {
        tokio::spawn(async move {
            let mut buf = [0u8; 16];
            tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
                .await
                .is_ok()
        })
    });
    for w in waits.collect::<Vec<_>>() {
        assert!(
            w.await.expect("the reader"),
            "a silent connection stayed open"
        );
    }
    admin.still_serving().await;
    admin.shutdown().await;
}
