//! The Lua GCRA agrees with ripcord's `Gcra::decide` on random sequences
//! (needs a Redis: `REDIS_URL`, default `redis://127.0.0.1:6379`).

use proptest::prelude::*;
use redis::aio::ConnectionLike;
use ripcord::rate_limiter::{Decision, Gcra};

use crate::store::scripts::gcra_probe;

#[derive(Debug, Clone)]
struct Step {
    advance: u64,
    n: u32,
    max_wait: u64,
}

fn case() -> impl Strategy<Value = (u64, u32, Vec<Step>)> {
    (1u64..=1 << 30, 1u32..=1_000).prop_flat_map(|(t, burst)| {
        let full = t * u64::from(burst);
        let step = (
            0..=2 * full,
            1..=burst + 2,
            prop_oneof![Just(0), 0..=2 * full],
        )
            .prop_map(|(advance, n, max_wait)| Step {
                advance,
                n,
                max_wait,
            });
        (Just(t), Just(burst), prop::collection::vec(step, 1..40))
    })
}

fn lua_decision(admitted: i64, amount: i64) -> Decision {
    if admitted == 1 {
        Decision::Admit {
            wait: amount as u64,
        }
    } else if amount < 0 {
        Decision::Reject {
            retry_after: u64::MAX,
        }
    } else {
        Decision::Reject {
            retry_after: amount as u64,
        }
    }
}

#[test]
fn lua_gcra_agrees_with_rust() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let conn = rt
        .block_on(async {
            redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await
        })
        .expect("a Redis at REDIS_URL");
    let probe = gcra_probe();
    let mut config = ProptestConfig::with_cases(128);
    config.failure_persistence = None;
    proptest!(config, |((t, burst, steps) in case())| {
        let gcra = Gcra { emission_interval: t, burst };
        // Rust's chain of decisions; Lua decides each step from the same state.
        let mut tat = 0u64;
        let mut now = 0u64;
        let mut expected = Vec::new();
        let mut pipe = redis::pipe();
        for s in &steps {
            now += s.advance;
            let (d, next) = gcra.decide(tat, now, s.n, s.max_wait);
            pipe.cmd("EVAL")
                .arg(probe.code)
                .arg(0)
                .arg(tat)
                .arg(now)
                .arg(t)
                .arg(burst)
                .arg(s.n)
                .arg(s.max_wait);
            expected.push((d, next));
            tat = next;
        }
        let mut c = conn.clone();
        let replies = rt
            .block_on(c.req_packed_commands(&pipe, 0, steps.len()))
            .expect("EVAL");
        for (i, (reply, (d, next))) in replies.into_iter().zip(&expected).enumerate() {
            let (a, amount, lua_tat): (i64, i64, String) =
                redis::from_redis_value(reply).expect("reply");
            prop_assert_eq!(lua_decision(a, amount), *d, "step {} of {:?}", i, steps);
            prop_assert_eq!(lua_tat.parse::<u64>().unwrap(), *next, "tat at step {}", i);
        }
    });
}
