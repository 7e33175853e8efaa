//! The fleet at scale, on a `redis-server` of its own: `--instances N`
//! instances (each its own `RedisStore` connections and `Fleet` tasks) with
//! `--breakers K` breakers each, `--active P%` of them taking calls every
//! 50 ms (the rest idle). Prints Redis commands/s, redis-server CPU (from
//! `/proc`), sync lag (how late each sync finished against the moment it was
//! due) and trip propagation (a breaker tripped on one instance until every
//! other instance rejects it), all measured while the load runs.
//!
//! ```text
//! cargo run --release -p ripcord-redis --example fleet_scale -- \
//!     --instances 10 --breakers 10000 --active 1% [--seconds 10] [--trips 40]
//! ```
//!
//! Needs `redis-server` on the PATH (or `REDIS_SERVER_BIN`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{percentile, unique_prefix, RedisServer, Target};
use ripcord::store::Fleet;
use ripcord::{CircuitBreaker, Outcome, State};

struct Options {
    instances: usize,
    breakers: usize,
    active: f64,
    seconds: u64,
    trips: usize,
}

fn options() -> Options {
    let mut o = Options {
        instances: 2,
        breakers: 2_000,
        active: 1.0,
        seconds: 10,
        trips: 40,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let num = |v: &str| -> f64 {
            v.trim_end_matches('%')
                .parse()
                .unwrap_or_else(|_| panic!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--instances" => o.instances = num(value) as usize,
            "--breakers" => o.breakers = num(value) as usize,
            "--active" => o.active = num(value),
            "--seconds" => o.seconds = num(value) as u64,
            "--trips" => o.trips = num(value) as usize,
            other => panic!(
                "unknown option {other}: --instances N --breakers K --active P% --seconds S --trips T"
            ),
        }
    }
    assert!(
        o.instances >= 2,
        "--instances: at least 2 (trips propagate between instances)"
    );
    assert!(o.breakers >= 1, "--breakers: at least 1");
    assert!((0.0..=100.0).contains(&o.active), "--active: 0% to 100%");
    o
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // Fields after the command name (which is in parentheses).
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0);
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0);
    ticks / hz
}

struct Instance {
    fleet: Fleet,
    breakers: Vec<CircuitBreaker>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = options();
    let server = RedisServer::spawn();
    let target = Target::Single(server.url());
    let prefix = unique_prefix("scale");
    let active = ((o.breakers as f64 * o.active / 100.0).ceil() as usize).min(o.breakers);
    println!(
        "fleet_scale: {} instances × {} breakers, {} active ({}%), sync_interval 100 ms, \
         own redis-server at {}",
        o.instances,
        o.breakers,
        active,
        o.active,
        server.url()
    );
    let joined = Instant::now();
    let mut fleet = Vec::with_capacity(o.instances);
    for i in 0..o.instances {
        let store = target.store(&prefix, true).await;
        let f = Fleet::builder(store)
            .instance(&format!("i{i}"))
            .sync_interval(Duration::from_millis(100))
            .build()
            .expect("fleet");
        let breakers: Vec<CircuitBreaker> = (0..o.breakers)
            .map(|k| {
                CircuitBreaker::builder(&format!("endpoint-{k}"))
                    .consecutive_failures(5)
                    .fleet(&f)
                    .build()
                    .expect("breaker")
            })
            .collect();
        f.sync_now().await;
        fleet.push(Instance { fleet: f, breakers });
    }
    println!("joined in {:.2?}", joined.elapsed());
    let fleet = Arc::new(fleet);

    // Load: every active breaker of every instance takes a call every 50 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = (0..o.instances)
        .map(|i| {
            let (fleet, stop) = (fleet.clone(), stop.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(50));
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    for b in &fleet[i].breakers[..active] {
                        if let Ok(p) = b.try_acquire() {
                            p.record(Outcome::Success);
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await; // reports settle

    let pid = server.pid();
    for inst in fleet.iter() {
        inst.fleet.reset_max_sync_lag();
    }
    let before = target.command_stats().await;
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let window = Duration::from_secs(o.seconds);
    // Trips, spread over the window: one breaker on one instance opens; how
    // long until every other instance rejects it. Then an operator resets it.
    let mut latencies = Vec::with_capacity(o.trips);
    let gap = window / (o.trips as u32 + 1);
    for t in 0..o.trips {
        tokio::time::sleep(gap).await;
        let from = t % o.instances;
        // Alternate active and idle breakers.
        let k = if t % 2 == 0 && active > 0 {
            (t * 7919) % active
        } else {
            active + (t * 7919) % (o.breakers - active).max(1)
        }
        .min(o.breakers - 1);
        let tripped = Instant::now();
        for _ in 0..5 {
            if let Ok(p) = fleet[from].breakers[k].try_acquire() {
                p.record(Outcome::Failure);
            }
        }
        loop {
            let all = fleet
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != from)
                .all(|(_, inst)| inst.breakers[k].try_acquire().is_err());
            if all {
                latencies.push(tripped.elapsed());
                break;
            }
            if tripped.elapsed() > Duration::from_secs(5) {
                println!("trip {t} (breaker {k}): not everywhere within 5 s");
                latencies.push(tripped.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let _ = fleet[from]
            .fleet
            .override_state(&format!("endpoint-{k}"), State::Closed, None, "fleet_scale")
            .await;
    }
    let rest = window.saturating_sub(started.elapsed());
    tokio::time::sleep(rest).await;
    let elapsed = started.elapsed();
    let after = target.command_stats().await;
    let cpu = cpu_seconds(pid) - cpu_before;
    stop.store(true, Ordering::Relaxed);
    for l in loads {
        let _ = l.await;
    }
    let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    let all: u64 = after.keys().map(|k| delta(k)).sum();
    let secs = elapsed.as_secs_f64();
    let lag = fleet
        .iter()
        .map(|i| i.fleet.max_sync_lag())
        .max()
        .unwrap_or_default();
    latencies.sort();
    println!(
        "redis: {:.0} commands/s ({:.0} EVALSHA/s from clients, the rest run inside scripts), \
         redis-server CPU {:.1} % of a core",
        all as f64 / secs,
        delta("evalsha") as f64 / secs,
        cpu / secs * 100.0
    );
    println!(
        "sync lag: max {lag:.2?} (interval 100 ms; a sync finishing more than one interval \
         after it was due would delay the next)"
    );
    println!(
        "trip propagation to every other instance: p50 {:.2?}, p99 {:.2?}, max {:.2?} ({} trips)",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or_default(),
        latencies.len()
    );
    println!(
        "| {} × {} | {}% | {:.0} | {:.1} % | {:.1} ms | {:.1} / {:.1} / {:.1} ms |",
        o.instances,
        o.breakers,
        o.active,
        all as f64 / secs,
        cpu / secs * 100.0,
        lag.as_secs_f64() * 1e3,
        percentile(&latencies, 50.0).as_secs_f64() * 1e3,
        percentile(&latencies, 99.0).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}
