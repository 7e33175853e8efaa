//! Open-loop latency at a fixed request rate, for comparing a direct path
//! with proxies: each URL given gets the same load, one after another, and
//! the run prints completed requests, errors and the latency percentiles.
//!
//! ```text
//! cargo run --release -p ripcord-proxy --features testkit --example fixed_rate -- \
//!     --rate 5000 --secs 10 http://127.0.0.1:18081/ http://127.0.0.1:18083/
//! ```
//!
//! Unlike a closed-loop tool at saturation (where latency is mostly queueing),
//! a fixed rate below every target's capacity shows what a hop adds.

use std::time::Duration;

use ripcord_proxy::loadgen::{fixed_rate, FixedRate};

fn usage() -> ! {
    eprintln!("usage: fixed_rate [--rate N] [--secs S] [--warmup S] URL...");
    std::process::exit(2)
}

fn number(value: Option<String>) -> u32 {
    value
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| usage())
}

#[tokio::main]
async fn main() {
    let (mut rate, mut secs, mut warmup) = (5000, 10, 2);
    let mut urls = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rate" => rate = number(args.next()),
            "--secs" => secs = number(args.next()),
            "--warmup" => warmup = number(args.next()),
            "-h" | "--help" => usage(),
            _ => urls.push(a),
        }
    }
    if urls.is_empty() || rate == 0 || secs == 0 {
        usage();
    }
    for url in urls {
        let Ok(target) = url.parse::<http::Uri>() else {
            eprintln!("not a URL: {url}");
            std::process::exit(2);
        };
        if warmup > 0 {
            let w = FixedRate::new(target.clone(), rate, Duration::from_secs(warmup.into()));
            if let Err(e) = fixed_rate(w).await {
                eprintln!("{url}: {e}");
                std::process::exit(1);
            }
        }
        let run = FixedRate::new(target, rate, Duration::from_secs(secs.into()));
        match fixed_rate(run).await {
            Ok(r) => {
                let l = &r.latency;
                let us = |q: f64| l.percentile(q).as_secs_f64() * 1e6;
                println!(
                    "{url:<28} rate={rate}/s completed={} errors={} skipped={} \
                     p50={:.0}us p90={:.0}us p99={:.0}us p99.9={:.0}us max={:.0}us",
                    r.completed(),
                    r.failed(),
                    r.skipped,
                    us(0.50),
                    us(0.90),
                    us(0.99),
                    us(0.999),
                    l.max().as_secs_f64() * 1e6,
                );
            }
            Err(e) => {
                eprintln!("{url}: {e}");
                std::process::exit(1);
            }
        }
    }
}
