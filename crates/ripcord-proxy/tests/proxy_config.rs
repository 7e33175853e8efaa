//! The proxy's configuration: what is accepted, and a clear message (file,
//! line, key path, what is allowed) for each kind of mistake, through the
//! library. (`ripcord check` is tested in ripcord-cli's
//! `tests/proxy_command.rs`.)

use ripcord_proxy::config::ProxyConfig;

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

fn error_of(text: &str) -> String {
    ProxyConfig::parse(text, "bad.toml")
        .expect_err("the configuration is refused")
        .to_string()
}

#[test]
fn a_good_configuration_parses_with_defaults() {
    let c = ProxyConfig::parse(GOOD, "good.toml").unwrap();
    assert_eq!(c.admin.listen, "127.0.0.1:9901");
    assert_eq!(c.limits.max_header_bytes, 64 * 1024);
    assert_eq!(c.routes[1].prefix(), "/");
    let breakers: Vec<String> = c.breakers().into_iter().map(|b| b.1).collect();
    assert_eq!(breakers, ["api", "orders"]);
    assert!(c.summary().contains("orders: host * prefix /orders -> api"));
    assert!(c.summary().contains("busy polling: off"), "{}", c.summary());
    let c = ProxyConfig::parse(
        &format!("[limits]\nworkers = 3\nbusy_poll = \"2ms\"\n{GOOD}"),
        "good.toml",
    )
    .unwrap();
    assert_eq!(c.limits.busy_poll, std::time::Duration::from_millis(2));
    assert!(
        c.summary()
            .contains("workers: 3, busy polling: 2ms after each request"),
        "{}",
        c.summary()
    );
}

#[test]
fn invalid_toml_names_the_line_and_column() {
    let e = error_of("[[listeners]]\nlisten = \"127.0.0.1:80\n");
    assert!(e.starts_with("bad.toml:2:"), "{e}");
    assert!(e.contains("invalid TOML"), "{e}");
}

#[test]
fn an_unknown_key_names_its_path_and_the_allowed_keys() {
    let text = GOOD.replace("failure_rate = 0.5", "failure_rat = 0.5");
    let e = error_of(&text);
    assert!(
        e.contains("`upstreams.api.pipeline.circuit_breaker.failure_rat`"),
        "{e}"
    );
    assert!(e.contains("unknown field `failure_rat`"), "{e}");
    assert!(
        e.contains("failure_rate"),
        "the allowed keys are listed: {e}"
    );
    assert!(e.starts_with("bad.toml:7:"), "{e}");

    let e = error_of(&format!(
        "{GOOD}\n[[routes]]\nname = \"x\"\nupstream = \"api\"\npath_prefx = \"/x\"\n"
    ));
    assert!(e.contains("`routes[2].path_prefx`"), "{e}");
}

#[test]
fn out_of_range_values_name_the_key_and_the_range() {
    let text = GOOD.replace("failure_rate = 0.5", "failure_rate = 1.5");
    let e = error_of(&text);
    assert!(
        e.contains(
            "`upstreams.api.pipeline.circuit_breaker.failure_rate`: 1.5: expected a rate in (0, 1]"
        ),
        "{e}"
    );
    let text = GOOD.replace("max_attempts = 2", "max_attempts = 0");
    let e = error_of(&text);
    assert!(
        e.contains("`routes[0].pipeline.retry.max_attempts`: 0: expected 1 to 1000"),
        "{e}"
    );
    assert!(e.starts_with("bad.toml:13:"), "{e}");
    let e = error_of(&format!("[limits]\nbusy_poll = \"150ms\"\n{GOOD}"));
    assert!(
        e.contains("`limits.busy_poll`: 150ms: expected 0s (off) to 100ms"),
        "{e}"
    );
    let e = error_of(&format!("[limits]\nmax_header_bytes = 100\n{GOOD}"));
    assert!(
        e.contains("`limits.max_header_bytes`: 100: expected 8192 to 1048576 bytes"),
        "{e}"
    );
}

#[test]
fn an_unknown_upstream_is_named_with_the_known_ones() {
    let text = GOOD.replace(
        "upstream = \"api\"\npipeline = { timeout",
        "upstream = \"apii\"\npipeline = { timeout",
    );
    assert_ne!(text, GOOD);
    let e = error_of(&text);
    assert!(
        e.contains("`routes[0].upstream`: no upstream named `apii`; expected one of the `[upstreams.NAME]` tables (api)"),
        "{e}"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
[[listeners]]
listen = "localhost:80"
[upstreams.api]
addresses = ["http://127.0.0.1:3000", "127.0.0.1"]
[[routes]]
name = "a"
path_prefix = "api"
upstream = "api"
[[routes]]
name = "a"
upstream = "nope"
pipeline.fallback = { status = 700 }
"#;
    let e = ProxyConfig::parse(text, "many.toml").unwrap_err();
    let paths: Vec<&str> = e.problems().iter().map(|p| p.path.as_str()).collect();
    for p in [
        "listeners[0].listen",
        "upstreams.api.addresses[0]",
        "upstreams.api.addresses[1]",
        "routes[0].path_prefix",
        "routes[1].name",
        "routes[1].upstream",
        "routes[1].pipeline.fallback.status",
    ] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}\n{e}");
    }
    let text = e.to_string();
    assert!(text.contains("without a scheme"), "{text}");
    assert!(text.contains("has no port"), "{text}");
    assert!(text.contains("already used by routes[0]"), "{text}");
}

#[test]
fn breaker_names_must_not_collide() {
    let text = GOOD.replace("name = \"orders\"", "name = \"api\"");
    let e = error_of(&text);
    assert!(e.contains("`routes[0].pipeline.circuit_breaker`"), "{e}");
    assert!(e.contains("like the one of upstreams.api"), "{e}");
}

#[test]
fn missing_listeners_and_routes_are_explained() {
    let e = error_of("[upstreams.api]\naddresses = [\"127.0.0.1:1\"]\n");
    assert!(
        e.contains("`listeners`: at least one `[[listeners]]`"),
        "{e}"
    );
    assert!(e.contains("`routes`: at least one `[[routes]]`"), "{e}");
}

#[test]
fn the_example_configuration_is_valid() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/proxy/ripcord.toml"
    );
    let c = ProxyConfig::load(path).unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.routes.is_empty());
}

#[test]
fn the_front_doors_limits_have_documented_defaults_and_ranges() {
    let c = ProxyConfig::parse(GOOD, "good.toml").unwrap();
    let l = &c.limits;
    assert_eq!(l.max_connections, 10_000);
    assert_eq!(l.max_connections_per_peer, 1_024);
    assert_eq!(l.header_read_timeout, std::time::Duration::from_secs(30));
    assert_eq!(l.idle_timeout, std::time::Duration::from_secs(60));
    assert_eq!(l.body_read_timeout, std::time::Duration::from_secs(30));
    assert_eq!(c.admin.max_streams_per_peer, 16);
    assert!(c.admin.allowed_hosts.is_empty());
    for (lines, path, says) in [
        (
            "[limits]\nmax_connections = 0",
            "limits.max_connections",
            "expected 1 to",
        ),
        (
            "[limits]\nmax_connections = 10\nmax_connections_per_peer = 11",
            "limits.max_connections_per_peer",
            "expected 1 to `limits.max_connections` (10)",
        ),
        (
            "[limits]\nidle_timeout = \"0s\"",
            "limits.idle_timeout",
            "greater than zero",
        ),
        (
            "[limits]\nbody_read_timeout = \"0s\"",
            "limits.body_read_timeout",
            "greater than zero",
        ),
        ("[admin]\ntoken = \"short\"", "admin.token", "at least 16"),
        (
            "[admin]\nallowed_hosts = [\"a.test:80\"]",
            "admin.allowed_hosts[0]",
            "no port",
        ),
        (
            "[admin]\nmax_streams_per_peer = 0",
            "admin.max_streams_per_peer",
            "expected 1 to 64",
        ),
    ] {
        let e = error_of(&format!("{lines}\n{GOOD}"));
        assert!(
            e.contains(&format!("`{path}`")) && e.contains(says),
            "{lines}: {e}"
        );
    }
    let long = format!("[admin]\ntoken = \"{}\"\n{GOOD}", "x".repeat(16));
    assert!(ProxyConfig::parse(&long, "ok.toml").is_ok());
}

#[test]
fn an_exposed_admin_listener_without_a_token_is_warned_about() {
    let exposed = format!("[admin]\nlisten = \"0.0.0.0:9901\"\n{GOOD}");
    let c = ProxyConfig::parse(&exposed, "x.toml").unwrap();
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("not on loopback") && w[0].contains("token"),
        "{w:?}"
    );
    let with_token = format!(
        "[admin]\nlisten = \"0.0.0.0:9901\"\ntoken = \"{}\"\n{GOOD}",
        "t".repeat(20)
    );
    assert!(ProxyConfig::parse(&with_token, "x.toml")
        .unwrap()
        .warnings()
        .is_empty());
    assert!(ProxyConfig::parse(GOOD, "x.toml")
        .unwrap()
        .warnings()
        .is_empty());
}

const GRPC: &str = r#"
[[listeners]]
listen = "127.0.0.1:8080"

[upstreams.greeter]
addresses = ["127.0.0.1:50051"]
protocol = "h2c"
grpc.failure_codes = ["UNAVAILABLE", "ABORTED"]
pipeline.circuit_breaker = { consecutive_failures = 5 }

[[routes]]
name = "grpc"
upstream = "greeter"
"#;

#[test]
fn grpc_upstreams_take_a_protocol_and_failure_codes() {
    use ripcord::Outcome;
    use ripcord_proxy::config::UpstreamProtocol;

    let c = ProxyConfig::parse(GRPC, "grpc.toml").unwrap();
    let u = &c.upstreams["greeter"];
    assert_eq!(u.protocol, UpstreamProtocol::H2c);
    let codes = u.grpc.codes().expect("valid codes");
    assert_eq!(codes.outcome(10), Outcome::Failure, "ABORTED");
    assert_eq!(
        codes.outcome(13),
        Outcome::Ignored,
        "INTERNAL is not listed"
    );
    assert!(
        c.summary().contains("greeter: 127.0.0.1:50051 (h2c)"),
        "{}",
        c.summary()
    );
    // The defaults: HTTP/1.1, and gRPC's usual failure codes.
    let c = ProxyConfig::parse(GOOD, "good.toml").unwrap();
    let u = &c.upstreams["api"];
    assert_eq!(u.protocol, UpstreamProtocol::Http1);
    assert_eq!(
        u.grpc.codes(),
        Some(ripcord_tower::grpc::FailureCodes::DEFAULT)
    );
    let auto = GRPC.replace("\"h2c\"", "\"auto\"");
    let c = ProxyConfig::parse(&auto, "grpc.toml").unwrap();
    assert_eq!(c.upstreams["greeter"].protocol, UpstreamProtocol::Auto);
}

#[test]
fn a_bad_protocol_or_code_names_its_line_and_what_is_allowed() {
    let e = error_of(&GRPC.replace("\"h2c\"", "\"h3\""));
    assert!(e.starts_with("bad.toml:7:"), "{e}");
    assert!(e.contains("`upstreams.greeter.protocol`"), "{e}");
    assert!(e.contains("`http1`, `h2c`, `auto`"), "{e}");

    let e = error_of(&GRPC.replace("\"ABORTED\"", "\"ABORTD\""));
    assert!(e.starts_with("bad.toml:8:"), "{e}");
    assert!(
        e.contains("`upstreams.greeter.grpc.failure_codes[1]`"),
        "{e}"
    );
    assert!(e.contains("\"ABORTD\" is not a gRPC status code"), "{e}");
    assert!(e.contains("UNAVAILABLE, DATA_LOSS, UNAUTHENTICATED"), "{e}");

    let e = error_of(&GRPC.replace("\"ABORTED\"", "\"OK\""));
    assert!(e.contains("failure_codes[1]"), "{e}");
    assert!(e.contains("OK is always a success"), "{e}");

    let e = error_of(&GRPC.replace("grpc.failure_codes", "grpc.failures"));
    assert!(e.starts_with("bad.toml:8:"), "{e}");
    assert!(e.contains("upstreams.greeter.grpc.failures"), "{e}");
    assert!(e.contains("failure_codes"), "{e}");
}
