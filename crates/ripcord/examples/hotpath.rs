//! Runs one breaker path many times, for instruction counting under callgrind.
use ripcord::{CircuitBreaker, Window};
use std::hint::black_box;
use std::time::Duration;
fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    let n: u64 = 1_000_000;
    match which.as_str() {
        "count" => {
            let b = CircuitBreaker::builder("bench")
                .failure_rate(0.5)
                .minimum_calls(20)
                .window(Window::count(100))
                .build()
                .unwrap();
            for _ in 0..n {
                let _ = black_box(b.call_sync(|| Ok::<u64, ()>(black_box(1))));
            }
        }
        "time" => {
            let b = CircuitBreaker::builder("bench")
                .failure_rate(0.5)
                .slow_calls(Duration::from_millis(800), 0.5)
                .window(Window::time(Duration::from_secs(10)))
                .build()
                .unwrap();
            for _ in 0..n {
                let _ = black_box(b.call_sync(|| Ok::<u64, ()>(black_box(1))));
            }
        }
        "reject" => {
            let b = CircuitBreaker::builder("bench")
                .consecutive_failures(1)
                .open_for(ripcord::Backoff::fixed(Duration::from_secs(3600)))
                .build()
                .unwrap();
            b.try_acquire().unwrap().failure();
            for _ in 0..n {
                black_box(b.try_acquire().is_err());
            }
        }
        "forced" => {
            let b = CircuitBreaker::builder("bench").build().unwrap();
            b.force_open();
            for _ in 0..n {
                black_box(b.try_acquire().is_err());
            }
        }
        _ => {}
    }
}
