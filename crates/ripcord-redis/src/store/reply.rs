//! Decoding the scripts' replies and the pub/sub payload. Never panics: a
//! reply that is not what the scripts return is an error for that breaker.

use std::time::Duration;

use redis::Value;
use ripcord::store::{FleetNotice, FleetView, WindowTotals};
use ripcord::State;

pub(crate) fn state_from_str(s: &str) -> Option<State> {
    State::ALL.into_iter().find(|st| st.as_str() == s)
}

pub(crate) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Okay => Some("OK".to_string()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn uint(v: &Value) -> Option<u64> {
    int(v).and_then(|i| u64::try_from(i).ok())
}

/// A view from `[state, epoch, open_remaining_us, calls, failures, slow,
/// instances, override_expires_in_us]`.
pub(crate) fn view(name: &str, v: &[Value]) -> Result<FleetView, String> {
    if v.len() < 8 {
        return Err(format!("expected 8 view fields, got {}", v.len()));
    }
    let field = |i: usize, what: &str| uint(&v[i]).ok_or_else(|| format!("bad {what}: {:?}", v[i]));
    let state_name = text(&v[0]).ok_or_else(|| format!("bad state: {:?}", v[0]))?;
    let state =
        state_from_str(&state_name).ok_or_else(|| format!("unknown state `{state_name}`"))?;
    let override_us = int(&v[7]).ok_or_else(|| format!("bad override: {:?}", v[7]))?;
    Ok(FleetView {
        name: name.to_string(),
        state,
        epoch: field(1, "epoch")?,
        open_remaining: Duration::from_micros(field(2, "open remaining")?),
        window: WindowTotals {
            calls: field(3, "calls")?,
            failures: field(4, "failures")?,
            slow: field(5, "slow")?,
        },
        instances: u32::try_from(field(6, "instances")?).unwrap_or(u32::MAX),
        override_expires_in: u64::try_from(override_us).ok().map(Duration::from_micros),
    })
}

/// The array of a script's reply.
pub(crate) fn array(v: &Value) -> Result<&[Value], String> {
    match v {
        Value::Array(items) => Ok(items),
        Value::ServerError(e) => Err(format!(
            "script error: {} {}",
            e.code(),
            e.details().unwrap_or("")
        )),
        other => Err(format!("unexpected reply {other:?}")),
    }
}

/// The corruption report that ends every reply ('' when none).
pub(crate) fn corruption(v: Option<&Value>) -> Option<String> {
    v.and_then(text).filter(|s| !s.is_empty())
}

/// Decodes a published transition:
/// `1,<state>,<epoch>,<open_us>,<calls>,<failures>,<slow>,<instances>,<override_us>,<manual>;`
/// then name, actor and reason, each as `<length>:<bytes>`.
pub(crate) fn notice(payload: &[u8]) -> Option<FleetNotice> {
    let split = payload.iter().position(|&b| b == b';')?;
    let head = std::str::from_utf8(&payload[..split]).ok()?;
    let mut rest = &payload[split + 1..];
    let f: Vec<&str> = head.split(',').collect();
    if f.len() != 10 || f[0] != "1" {
        return None;
    }
    let n = |i: usize| f[i].parse::<u64>().ok();
    let mut strings = Vec::with_capacity(3);
    for _ in 0..3 {
        let colon = rest.iter().position(|&b| b == b':')?;
        let len: usize = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
        let body = rest.get(colon + 1..colon + 1 + len)?;
        strings.push(String::from_utf8_lossy(body).into_owned());
        rest = &rest[colon + 1 + len..];
    }
    if !rest.is_empty() {
        return None;
    }
    let reason = strings.pop()?;
    let actor = strings.pop()?;
    let name = strings.pop()?;
    let override_us: i64 = f[8].parse().ok()?;
    Some(FleetNotice {
        view: FleetView {
            name,
            state: state_from_str(f[1])?,
            epoch: n(2)?,
            open_remaining: Duration::from_micros(n(3)?),
            window: WindowTotals {
                calls: n(4)?,
                failures: n(5)?,
                slow: n(6)?,
            },
            instances: u32::try_from(n(7)?).ok()?,
            override_expires_in: u64::try_from(override_us).ok().map(Duration::from_micros),
        },
        actor,
        reason,
        manual: match f[9] {
            "1" => true,
            "0" => false,
            _ => return None,
        },
    })
}

/// The heartbeats in an `HGETALL` of the instances hash (`"at stale"` per
/// instance); malformed entries are left out (the heartbeat script repairs
/// them).
pub(crate) fn heartbeats(v: &Value) -> Vec<(String, u64, u64)> {
    let items: &[Value] = match v {
        Value::Array(items) => items,
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for pair in items.chunks(2) {
        let [id, beat] = pair else { continue };
        let (Some(id), Some(beat)) = (text(id), text(beat)) else {
            continue;
        };
        let mut parts = beat.split(' ');
        if let (Some(Ok(at)), Some(Ok(stale)), None) = (
            parts.next().map(str::parse::<u64>),
            parts.next().map(str::parse::<u64>),
            parts.next(),
        ) {
            out.push((id, at, stale));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_decode() {
        let n = notice(
            b"1,forced_open,7,0,3,1,0,2,30000000,1;8:payments5:alice22:manual override to x;y",
        )
        .unwrap();
        assert_eq!(n.view.name, "payments");
        assert_eq!(n.view.state, State::ForcedOpen);
        assert_eq!(n.view.epoch, 7);
        assert_eq!(n.view.window.calls, 3);
        assert_eq!(n.view.instances, 2);
        assert_eq!(n.view.override_expires_in, Some(Duration::from_secs(30)));
        assert_eq!(n.actor, "alice");
        assert_eq!(n.reason, "manual override to x;y");
        assert!(n.manual);
        let n = notice(b"1,open,1,500,0,0,0,0,-1,0;1:a0:1:r").unwrap();
        assert_eq!(n.view.override_expires_in, None);
        assert_eq!(n.view.open_remaining, Duration::from_micros(500));
        assert_eq!(n.actor, "");
    }

    #[test]
    fn garbage_notices_are_refused_not_panics() {
        for bad in [
            &b""[..],
            b";",
            b"1,open,1,0,0,0,0,0,-1,0;",
            b"1,open,1,0,0,0,0,0,-1,0;99:a0:0:",
            b"1,nope,1,0,0,0,0,0,-1,0;1:a0:0:",
            b"2,open,1,0,0,0,0,0,-1,0;1:a0:0:",
            b"1,open,x,0,0,0,0,0,-1,0;1:a0:0:",
            b"1,open,1,0,0,0,0,0,-1,0;1:a0:0:trailing",
            b"\xff\xfe;1:a",
        ] {
            assert!(notice(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn views_decode_and_refuse_garbage() {
        let ok = [
            Value::BulkString(b"half_open".to_vec()),
            Value::Int(3),
            Value::Int(0),
            Value::Int(10),
            Value::Int(5),
            Value::Int(1),
            Value::Int(2),
            Value::Int(-1),
        ];
        let v = view("p", &ok).unwrap();
        assert_eq!((v.state, v.epoch, v.instances), (State::HalfOpen, 3, 2));
        assert_eq!(v.override_expires_in, None);
        let mut bad = ok.clone();
        bad[1] = Value::Int(-4);
        assert!(view("p", &bad).is_err());
        bad[1] = Value::Nil;
        assert!(view("p", &bad).is_err());
        assert!(view("p", &ok[..3]).is_err());
        assert!(array(&Value::Nil).is_err());
    }
}
