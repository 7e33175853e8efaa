//! The `ripcord proxy` and `ripcord check` commands, as the binary runs
//! them: draining on SIGTERM, reloading on SIGHUP, the lines they print and
//! their exit codes, and the file-descriptor limit raised at start. The
//! proxy's own behaviour is tested through the library in ripcord-proxy's
//! tests, whose helpers these tests share.

#[path = "../../ripcord-proxy/tests/proxy_raw/mod.rs"]
mod proxy_raw;
#[path = "../../ripcord-proxy/tests/proxy_support/mod.rs"]
mod proxy_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use proxy_raw::{config, once, Answer, Scripted, ALL};
use proxy_support::{client, eventually, get, one_route, unique, Upstream};
use tokio::net::TcpStream;

/// A running `ripcord proxy` child process and the lines it prints.
struct Binary {
    child: Child,
    lines: mpsc::Receiver<String>,
    errors: mpsc::Receiver<String>,
    dir: PathBuf,
}

impl Binary {
    fn start(toml: &str) -> (Binary, String) {
        Binary::start_with(toml, &[])
    }

    /// Runs `ripcord proxy --config FILE ARGS…` with `toml` in FILE.
    fn start_with(toml: &str, args: &[&str]) -> (Binary, String) {
        let dir = std::env::temp_dir().join(format!("ripcord-proxy-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ripcord.toml"), toml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ripcord"))
            .args(["proxy", "--config"])
            .arg(dir.join("ripcord.toml"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let (tx, errors) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let mut b = Binary {
            child,
            lines,
            errors,
            dir,
        };
        let line = b.wait_line("listening on http://", Duration::from_secs(20));
        let addr: String = line
            .rsplit("http://")
            .next()
            .unwrap()
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
            .collect();
        (b, format!("http://{addr}"))
    }

    fn wait_line(&mut self, needle: &str, within: Duration) -> String {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => {
                    let errors: Vec<String> = self.errors.try_iter().collect();
                    panic!("no line with {needle:?} within {within:?}; stderr: {errors:?}");
                }
            }
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    fn rewrite(&self, toml: &str) {
        std::fs::write(self.dir.join("ripcord.toml"), toml).unwrap();
    }

    /// Waits for the process to exit; kills it after `within`.
    fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("the proxy did not exit within {within:?}");
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One route `app` with a breaker that trips on two failures, plus `extra`.
fn app_route(upstream: &Upstream, extra: &str) -> String {
    let breaker = r#"pipeline.circuit_breaker = { consecutive_failures = 2, open_for = "60s" }"#;
    one_route(upstream, "", "app", &format!("{breaker}\n{extra}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_in_flight_request_then_exits() {
    let up = Upstream::start().await;
    let (mut proxy, url) = Binary::start(&app_route(&up, ""));
    let c = client();
    let slow = tokio::spawn({
        let (c, url) = (c.clone(), url.clone());
        async move { get(&c, &format!("{url}/slow/1000")).await }
    });
    assert!(
        eventually(Duration::from_secs(5), || up.hits() == 1).await,
        "the slow request reached the upstream"
    );
    proxy.signal("TERM");
    proxy.wait_line("draining in-flight requests", Duration::from_secs(5));
    // While draining, new connections are refused.
    let addr = url.trim_start_matches("http://").to_string();
    assert!(
        eventually(Duration::from_secs(2), || std::net::TcpStream::connect(
            &addr
        )
        .is_err())
        .await,
        "the listener is closed while draining"
    );
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200, "the in-flight request finished");
    assert_eq!(r.body, "slow done");
    let code = tokio::task::spawn_blocking(move || {
        let code = proxy.wait_exit(Duration::from_secs(10));
        (code, proxy.wait_line("stopped", Duration::from_secs(1)))
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0));
    assert!(
        code.1.ends_with(" INFO ripcord::proxy: stopped"),
        "{}",
        code.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_keeps_an_open_breaker_open_and_adds_a_route() {
    let up = Upstream::start().await;
    let other = Upstream::start().await;
    let (mut proxy, url) = Binary::start(&app_route(&up, ""));
    let c = client();
    up.set_status(500);
    for _ in 0..2 {
        assert_eq!(get(&c, &format!("{url}/a")).await.status, 500);
    }
    let r = get(&c, &format!("{url}/a")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-ripcord-policy"), Some("circuit_breaker"));
    up.set_status(200);

    let extra = format!(
        "[upstreams.other]\naddresses = [\"{}\"]\n[[routes]]\nname = \"extra\"\npath_prefix = \"/extra\"\nupstream = \"other\"\n",
        other.addr
    );
    proxy.rewrite(&app_route(&up, &extra));
    proxy.signal("HUP");
    let line = proxy.wait_line("reloaded", Duration::from_secs(5));
    assert!(line.contains("breakers kept: app"), "{line}");
    let r = get(&c, &format!("{url}/extra/1")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, format!("upstream {}", other.addr.port()));
    let r = get(&c, &format!("{url}/a")).await;
    assert_eq!(r.status, 503, "the breaker stayed open across the reload");
    assert_eq!(r.header("x-ripcord-policy"), Some("circuit_breaker"));

    // A broken file is refused and the running configuration stays.
    proxy.rewrite("[[listeners]]\nlisten = \n");
    proxy.signal("HUP");
    let e = proxy.wait_line("reload refused", Duration::from_secs(5));
    assert!(e.contains(" WARN ripcord::proxy: "), "{e}");
    assert!(e.contains("ripcord.toml:2:"), "{e}");
    assert_eq!(get(&c, &format!("{url}/extra/2")).await.status, 200);

    proxy.signal("TERM");
    let code = tokio::task::spawn_blocking(move || proxy.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

/// `toml` with `access_log = value` on its listener.
fn access_log(toml: &str, value: bool) -> String {
    toml.replacen(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n",
        &format!("[[listeners]]\nlisten = \"127.0.0.1:0\"\naccess_log = {value}\n"),
        1,
    )
}

/// The JSON lines the proxy printed until one that `last` accepts (each
/// line must parse); panics after `within`.
fn json_until(
    proxy: &mut Binary,
    last: impl Fn(&serde_json::Value) -> bool,
    within: Duration,
) -> Vec<serde_json::Value> {
    let end = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let Ok(line) = proxy.lines.recv_timeout(left) else {
            panic!("not the line awaited within {within:?}; saw {seen:#?}");
        };
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        let done = last(&v);
        seen.push(v);
        if done {
            return seen;
        }
    }
}

fn is_access(v: &serde_json::Value) -> bool {
    v["target"] == "ripcord::access"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_an_access_line_per_request_switched_by_reload() {
    let up = Upstream::start().await;
    let toml = app_route(&up, "");
    let (mut proxy, url) = Binary::start_with(&access_log(&toml, true), &["--log-format", "json"]);
    let c = client();
    let r = get(&c, &format!("{url}/a/b?q=1")).await;
    assert_eq!(r.status, 200);
    up.set_status(500);
    for _ in 0..2 {
        assert_eq!(get(&c, &format!("{url}/a")).await.status, 500);
    }
    let refused = get(&c, &format!("{url}/a")).await;
    assert_eq!(refused.status, 503);
    let within = Duration::from_secs(10);
    let lines = json_until(&mut proxy, |v| is_access(v) && v["status"] == 503, within);
    let access: Vec<&serde_json::Value> = lines.iter().filter(|v| is_access(v)).collect();
    assert_eq!(access.len(), 4, "{lines:#?}");
    for (line, status) in access.iter().zip([200, 500, 500, 503]) {
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["method"], "GET");
        assert_eq!(line["status"], status, "{line}");
        assert_eq!(line["route"], "app");
        assert_eq!(line["upstream"], "app");
        assert_eq!(line["version"], "HTTP/1.1");
        assert_eq!(line["complete"], true);
        assert!(
            line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
            "{line}"
        );
        assert!(
            line["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{line}"
        );
        assert!(line["timestamp"].is_string(), "{line}");
    }
    assert_eq!(access[0]["path"], "/a/b");
    assert_eq!(access[0]["bytes"], r.body.len());
    assert_eq!(access[0]["breaker"], "closed");
    assert!(access[0].get("policy").is_none(), "the upstream answered");
    // The second failure opened the breaker: the line says so, and a
    // transition event at WARN came before it.
    assert_eq!(access[2]["breaker"], "open");
    let opened = lines
        .iter()
        .position(|v| v["message"] == "circuit breaker opened")
        .expect("a transition event");
    assert_eq!(lines[opened]["level"], "WARN");
    assert_eq!(lines[opened]["breaker"], "app");
    assert_eq!(access[3]["policy"], "circuit_breaker");
    assert_eq!(access[3]["bytes"], refused.body.len());

    // Switched off by a reload: the next request writes nothing, and the
    // one after the switch back on does.
    let reloaded = |v: &serde_json::Value| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("reloaded"))
    };
    proxy.rewrite(&access_log(&toml, false));
    proxy.signal("HUP");
    json_until(&mut proxy, reloaded, within);
    get(&c, &format!("{url}/quiet")).await;
    proxy.rewrite(&access_log(&toml, true));
    proxy.signal("HUP");
    json_until(&mut proxy, reloaded, within);
    get(&c, &format!("{url}/loud")).await;
    let lines = json_until(&mut proxy, is_access, within);
    assert_eq!(lines.last().unwrap()["path"], "/loud", "{lines:#?}");
    assert!(!lines.iter().any(|v| v["path"] == "/quiet"), "{lines:#?}");

    proxy.signal("TERM");
    let code = tokio::task::spawn_blocking(move || proxy.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

#[test]
fn a_bad_log_filter_is_refused_before_starting() {
    let out = ripcord()
        .args([
            "proxy",
            "--config",
            "/nonexistent.toml",
            "--log",
            "ripcord=loud",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: --log `ripcord=loud` is not a log filter"),
        "{err}"
    );
}

const GOOD: &str = r#"
[[listeners]]
listen = "127.0.0.1:8080"

[upstreams.api]
addresses = ["127.0.0.1:3000", "localhost:3001"]
pipeline.circuit_breaker = { failure_rate = 0.5, open_for = "5s" }

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "api"
pipeline = { timeout = "2s", retry = { max_attempts = 2 }, circuit_breaker = { consecutive_failures = 5 } }

[[routes]]
name = "web"
host = "shop.example"
upstream = "api"
"#;

fn ripcord() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ripcord"))
}

#[test]
fn ripcord_check_prints_a_summary_or_the_errors() {
    let dir = std::env::temp_dir().join(format!("ripcord-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, GOOD).unwrap();
    let out = ripcord()
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("good.toml: ok"), "{stdout}");
    assert!(stdout.contains("breakers: api, orders"), "{stdout}");

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        GOOD.replace("open_for = \"5s\"", "open_for = \"soon\""),
    )
    .unwrap();
    let out = ripcord()
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad.toml:7:"), "{stderr}");
    assert!(
        stderr.contains("upstreams.api.pipeline.circuit_breaker"),
        "{stderr}"
    );
    assert!(stderr.contains("soon"), "{stderr}");
    assert!(stderr.contains("expected a duration such as"), "{stderr}");

    let out = ripcord()
        .args(["check", "--config"])
        .arg(dir.join("missing.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("missing.toml: cannot read the configuration file"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ripcord_check_names_the_line_of_a_bad_grpc_key() {
    let dir = std::env::temp_dir().join(format!("ripcord-check-grpc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("grpc.toml");
    let text = GOOD.replace(
        "addresses = [",
        "protocol = \"h2\"\ngrpc.failure_codes = [\"UNAVAILABLE\", \"TIMEOUT\"]\naddresses = [",
    );
    let line = |key: &str| text.lines().position(|l| l.starts_with(key)).unwrap() + 1;
    std::fs::write(&bad, &text).unwrap();
    let out = ripcord()
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    // A value the reader refuses is reported first, alone.
    let at = format!("grpc.toml:{}:", line("protocol"));
    assert!(stderr.contains(&at), "{at}: {stderr}");
    assert!(stderr.contains("`http1`, `h2c`, `auto`"), "{stderr}");

    std::fs::write(&bad, text.replace("\"h2\"", "\"h2c\"")).unwrap();
    let out = ripcord()
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let at = format!("grpc.toml:{}:", line("grpc.failure_codes"));
    assert!(stderr.contains(&at), "{at}: {stderr}");
    assert!(
        stderr.contains("`upstreams.api.grpc.failure_codes[1]`: \"TIMEOUT\""),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// What an upstream answers: `ok`.
async fn ok_upstream() -> Scripted {
    Scripted::start(|_| Answer::bytes(&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..])).await
}

/// Ten times a healthy close (a one-second deadline, reaped within a
/// second): the bound of every "closed in time" check below.
const CLOSED_WITHIN: Duration = Duration::from_secs(20);

/// `ripcord proxy` on `toml`, started under `prlimit --nofile=SOFT:HARD`;
/// the child and its proxy and admin addresses.
fn spawn_limited(
    toml: &str,
    soft: u64,
    hard: u64,
) -> (std::process::Child, SocketAddr, SocketAddr) {
    let dir = std::env::temp_dir().join(format!("ripcord-front-door-{}", unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ripcord.toml");
    std::fs::write(&file, toml).unwrap();
    let mut child = Command::new("prlimit")
        .arg(format!("--nofile={soft}:{hard}"))
        .arg(env!("CARGO_BIN_EXE_ripcord"))
        .args(["proxy", "--config"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("prlimit (util-linux) runs the proxy");
    let out = BufReader::new(child.stdout.take().unwrap());
    let (mut listen, mut admin) = (None, None);
    let mut lines = out.lines();
    for line in lines.by_ref().map_while(Result::ok) {
        let addr = || line.rsplit("http://").next().unwrap().trim().parse().ok();
        if line.contains("listening on http://") {
            listen = addr();
        } else if line.contains("dashboard on http://") {
            admin = addr();
        }
        if listen.is_some() && admin.is_some() {
            break;
        }
    }
    // Keep reading what it prints: a closed pipe would make its next line
    // fail (and the proxy stop).
    std::thread::spawn(move || for _ in lines {});
    (
        child,
        listen.expect("a listener"),
        admin.expect("an admin address"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_descriptor_limit_is_raised_and_a_low_one_leaves_room_for_the_admin() {
    let up = ok_upstream().await;
    // The soft limit is raised to the hard one.
    let (mut child, _, _) = spawn_limited(&config(up.addr, "", ALL), 256, 4096);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string();
    let figures: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&figures[3..5], ["4096", "4096"], "{line}");

    // With no room to raise it, 369 silent sockets do not take the admin
    // listener's descriptors, and are closed at the header deadline.
    let (mut child, addr, admin) = spawn_limited(
        &config(up.addr, "header_read_timeout = \"2s\"", ALL),
        256,
        256,
    );
    // Those past the cap are closed at once (or refused by a full
    // backlog): only the others stay.
    let mut silent = Vec::new();
    for _ in 0..369 {
        if let Ok(s) = TcpStream::connect(addr).await {
            silent.push(s);
        }
    }
    let metrics = once(
        admin,
        format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(metrics.map(|r| r.status), Some(200), "the admin answers");
    let end = Instant::now() + CLOSED_WITHIN;
    let answered = loop {
        let r = once(
            addr,
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await;
        if r.is_some_and(|r| r.status == 200) {
            break true;
        }
        if Instant::now() > end {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        answered,
        "the proxy answers again once the silent sockets are closed"
    );
    drop(silent);
}
