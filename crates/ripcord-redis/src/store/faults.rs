//! Fleet-wide faults: a [`ChaosConfig`] per scope, shared through Redis by
//! every instance, lapsing by itself (a key TTL) and audited (a capped list).
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `<prefix>:{<scope>}:fault` | string, with a TTL | the config as JSON |
//! | `<prefix>:fault-audit` | list, newest first, at most 1,000 | `{"at": <unix ms>, "scope", "actor", "action": "set" or "clear", "config": <JSON or null>, "ttl_ms": <ms or null>}` |

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::{Cmd, Value};
use ripcord::chaos::MAX_FAULT_DURATION;
use ripcord::store::StoreError;
use ripcord::{ChaosConfig, ConfigError};
use serde_json::{json, Value as Json};

use super::{reply, ttl_millis, RedisStore};
use crate::connection::Connection;
use crate::keys::{glob_escape, slot};

/// The part of a fault's key after its scope.
const PART: &str = "fault";
const PART_SUFFIX: &str = "}:fault";

/// A fault switched on for a scope, as every instance reads it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FleetFault {
    /// What to inject.
    pub config: ChaosConfig,
    /// How long until it lapses by itself (the key's TTL when read).
    pub expires_in: Duration,
}

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultAction {
    /// [`RedisStore::set_fault`].
    Set,
    /// [`RedisStore::clear_fault`].
    Clear,
}

impl FaultAction {
    /// `"set"` or `"clear"`, as written in the audit list.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultAction::Set => "set",
            FaultAction::Clear => "clear",
        }
    }
}

/// One entry of the fault audit list ([`RedisStore::fault_audit`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FaultAudit {
    /// When, on the clock of the instance that made the change (whole
    /// milliseconds).
    pub at: SystemTime,
    /// The fault's scope.
    pub scope: String,
    /// Who made the change, as given.
    pub actor: String,
    /// Set or cleared.
    pub action: FaultAction,
    /// The config set (`None` for a clear).
    pub config: Option<ChaosConfig>,
    /// The TTL it was set with, in whole milliseconds (`None` for a clear).
    pub ttl: Option<Duration>,
}

/// [`RedisStore::set_fault`] refused a fault or could not store it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FaultError {
    /// The config does not validate ([`ChaosConfig::validate`]).
    #[error("invalid fault configuration for scope {scope:?}")]
    InvalidConfig {
        /// The scope it was meant for.
        scope: String,
        /// The first field that is wrong, and what it accepts.
        #[source]
        source: ConfigError,
    },
    /// The TTL is zero or longer than [`MAX_FAULT_DURATION`].
    #[error(
        "invalid fault ttl {ttl:?}: expected a duration greater than zero and at most one day"
    )]
    InvalidTtl {
        /// The TTL given.
        ttl: Duration,
    },
    /// The config cannot be written as JSON.
    #[error("the fault configuration for scope {scope:?} cannot be written as JSON: {detail}")]
    Encode {
        /// The scope it was meant for.
        scope: String,
        /// What serde_json reported.
        detail: String,
    },
    /// Redis did not take the fault or its audit entry.
    #[error("the fault could not be written to Redis")]
    Store(#[from] StoreError),
}

impl RedisStore {
    /// Audit entries kept: older ones are trimmed when one is added.
    pub const FAULT_AUDIT_CAPACITY: usize = 1_000;

    /// The key of a scope's fault (a JSON string with a TTL):
    /// `<prefix>:{<scope>}:fault`, the scope its Cluster hash tag.
    pub fn fault_key(&self, scope: &str) -> String {
        self.inner.keys.key(scope, PART)
    }

    /// The key of the fault audit list: `<prefix>:fault-audit`.
    pub fn fault_audit_key(&self) -> String {
        format!("{}:fault-audit", self.inner.keys.prefix())
    }

    /// Switches a fault on for `scope` across the fleet: every instance
    /// reading this store's prefix sees `config` until `ttl` has passed
    /// (then it lapses by itself) or [`clear_fault`](Self::clear_fault).
    /// Replaces a fault already set for the scope, with the new TTL, and
    /// records `actor` in the audit list. The fault and its audit entry are
    /// sent in one round trip (not atomically: when the audit entry fails,
    /// the error says so, and the fault may have been set).
    ///
    /// `config` must validate, and `ttl` be greater than zero and at most one
    /// day ([`MAX_FAULT_DURATION`]); it is kept in whole milliseconds,
    /// rounded up.
    pub async fn set_fault(
        &self,
        scope: &str,
        config: &ChaosConfig,
        ttl: Duration,
        actor: &str,
    ) -> Result<(), FaultError> {
        if ttl.is_zero() || ttl > MAX_FAULT_DURATION {
            return Err(FaultError::InvalidTtl { ttl });
        }
        config
            .validate()
            .map_err(|source| FaultError::InvalidConfig {
                scope: scope.to_string(),
                source,
            })?;
        let value = serde_json::to_value(config).map_err(|e| FaultError::Encode {
            scope: scope.to_string(),
            detail: e.to_string(),
        })?;
        let ttl_ms = ttl_millis(ttl);
        let key = self.fault_key(scope);
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(value.to_string()).arg("PX").arg(ttl_ms);
        let mut cmds = vec![(slot(key.as_bytes()), set)];
        cmds.extend(self.audit_cmds(scope, actor, FaultAction::Set, value, Some(ttl_ms)));
        self.write(&cmds).await?;
        Ok(())
    }

    /// Switches the fault of `scope` off across the fleet and records
    /// `actor` in the audit list (also when no fault was set). Returns
    /// whether one was set.
    pub async fn clear_fault(&self, scope: &str, actor: &str) -> Result<bool, StoreError> {
        let key = self.fault_key(scope);
        let mut del = redis::cmd("DEL");
        del.arg(&key);
        let mut cmds = vec![(slot(key.as_bytes()), del)];
        cmds.extend(self.audit_cmds(scope, actor, FaultAction::Clear, Json::Null, None));
        let values = self.write(&cmds).await?;
        Ok(values.first().and_then(reply::int).unwrap_or(0) > 0)
    }

    /// The fault set for `scope`, if any (one `GET` and one `PTTL`).
    ///
    /// A value that is not a valid fault (not JSON, not a valid config, no
    /// TTL, not a string) is reported as a corruption
    /// ([`corruptions`](Self::corruptions)) and read as no fault; it is left
    /// in place.
    pub async fn fault(&self, scope: &str) -> Result<Option<FleetFault>, StoreError> {
        Ok(self.faults(&[scope]).await?.pop().flatten())
    }

    /// The faults of many scopes, in their order, in one round trip (a
    /// pipeline of `GET` and `PTTL` per scope; per slot on a Cluster, all in
    /// flight at once). Values that are not valid faults are read as
    /// [`fault`](Self::fault) does.
    pub async fn faults(&self, scopes: &[&str]) -> Result<Vec<Option<FleetFault>>, StoreError> {
        self.read_faults(&self.inner.conn, scopes).await
    }

    /// Every fault set under this store's prefix, by scope (sorted): a `SCAN`
    /// (on every master of a Cluster), then one round trip as
    /// [`faults`](Self::faults).
    pub async fn list_faults(&self) -> Result<Vec<(String, FleetFault)>, StoreError> {
        let inner = &*self.inner;
        let pattern = format!("{}:{{*{PART_SUFFIX}", glob_escape(inner.keys.prefix()));
        let found = inner
            .bulk
            .scan(&pattern)
            .await
            .map_err(|e| inner.error(e))?;
        let mut scopes: Vec<String> = found
            .iter()
            .filter_map(|k| self.scope_of_fault_key(k))
            .map(str::to_string)
            .collect();
        scopes.sort();
        scopes.dedup();
        let refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
        let faults = self.read_faults(&inner.bulk, &refs).await?;
        Ok(scopes
            .into_iter()
            .zip(faults)
            .filter_map(|(s, f)| Some((s, f?)))
            .collect())
    }

    /// The newest `limit` entries of the fault audit list (at most
    /// [`FAULT_AUDIT_CAPACITY`](Self::FAULT_AUDIT_CAPACITY) are kept), newest
    /// first. Entries that are not valid are reported as corruptions and
    /// skipped.
    pub async fn fault_audit(&self, limit: usize) -> Result<Vec<FaultAudit>, StoreError> {
        let limit = limit.min(Self::FAULT_AUDIT_CAPACITY);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let inner = &*self.inner;
        let key = self.fault_audit_key();
        let mut range = redis::cmd("LRANGE");
        range.arg(&key).arg(0).arg(limit - 1);
        let v = inner
            .conn
            .query(slot(key.as_bytes()), range)
            .await
            .map_err(|e| inner.error(e))?;
        let items = match v {
            Value::Array(items) => items,
            Value::Nil => Vec::new(),
            Value::ServerError(e) if e.code() == "WRONGTYPE" => {
                self.report_corruption(key, "the fault audit is not a list".to_string());
                return Ok(Vec::new());
            }
            other => return Err(unexpected(&key, "LRANGE", &other)),
        };
        let mut out = Vec::with_capacity(items.len());
        for item in &items {
            match decode_audit(item) {
                Ok(a) => out.push(a),
                Err(detail) => self.report_corruption(key.clone(), detail),
            }
        }
        Ok(out)
    }

    /// The scope in a fault key, if it is one of ours.
    fn scope_of_fault_key<'a>(&self, key: &'a str) -> Option<&'a str> {
        let scope = key
            .strip_prefix(self.inner.keys.prefix())?
            .strip_prefix(":{")?
            .strip_suffix(PART_SUFFIX)?;
        Some(if scope == "\0" { "" } else { scope })
    }

    /// `LPUSH` of one audit entry and the `LTRIM` that caps the list.
    fn audit_cmds(
        &self,
        scope: &str,
        actor: &str,
        action: FaultAction,
        config: Json,
        ttl_ms: Option<u64>,
    ) -> [(u16, Cmd); 2] {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let entry = json!({
            "at": at,
            "scope": scope,
            "actor": actor,
            "action": action.as_str(),
            "config": config,
            "ttl_ms": ttl_ms,
        });
        let key = self.fault_audit_key();
        let at_slot = slot(key.as_bytes());
        let mut push = redis::cmd("LPUSH");
        push.arg(&key).arg(entry.to_string());
        let mut trim = redis::cmd("LTRIM");
        trim.arg(&key).arg(0).arg(Self::FAULT_AUDIT_CAPACITY - 1);
        [(at_slot, push), (at_slot, trim)]
    }

    /// Sends writes in one round trip on the control connection; a command
    /// Redis refused is an error (`WRONGTYPE`: a corruption, reported).
    async fn write(&self, cmds: &[(u16, Cmd)]) -> Result<Vec<Value>, StoreError> {
        let inner = &*self.inner;
        let values = inner
            .conn
            .query_many(cmds)
            .await
            .map_err(|e| inner.error(e))?;
        if values.len() != cmds.len() {
            return Err(StoreError::Unavailable(format!(
                "{} replies to {} fault writes",
                values.len(),
                cmds.len()
            )));
        }
        for (v, (_, cmd)) in values.iter().zip(cmds) {
            if let Value::ServerError(e) = v {
                let (name, key) = (cmd_arg(cmd, 0), cmd_arg(cmd, 1));
                let detail = format!("{name} refused: {} {}", e.code(), e.details().unwrap_or(""));
                if e.code() == "WRONGTYPE" {
                    self.report_corruption(key.clone(), detail.clone());
                    return Err(StoreError::Corrupt { key, detail });
                }
                return Err(StoreError::Unavailable(format!("{detail} (on `{key}`)")));
            }
        }
        Ok(values)
    }

    async fn read_faults(
        &self,
        conn: &Connection,
        scopes: &[&str],
    ) -> Result<Vec<Option<FleetFault>>, StoreError> {
        let keys: Vec<String> = scopes.iter().map(|s| self.fault_key(s)).collect();
        let mut cmds = Vec::with_capacity(keys.len() * 2);
        for key in &keys {
            let at = slot(key.as_bytes());
            cmds.push((at, redis::cmd("GET").arg(key).clone()));
            cmds.push((at, redis::cmd("PTTL").arg(key).clone()));
        }
        let values = conn
            .query_many(&cmds)
            .await
            .map_err(|e| self.inner.error(e))?;
        if values.len() != cmds.len() {
            return Err(StoreError::Unavailable(format!(
                "{} replies to {} fault reads",
                values.len(),
                cmds.len()
            )));
        }
        let mut out = Vec::with_capacity(keys.len());
        for (key, pair) in keys.into_iter().zip(values.chunks(2)) {
            let [get, pttl] = pair else {
                out.push(None);
                continue;
            };
            out.push(match decode_fault(&key, get, pttl)? {
                Ok(fault) => fault,
                Err(detail) => {
                    self.report_corruption(key, detail);
                    None
                }
            });
        }
        Ok(out)
    }
}

/// A fault from its `GET` and `PTTL` replies: `Ok(Ok(None))` when none is
/// set, `Ok(Err(detail))` when the value is not a valid fault, `Err` when
/// Redis failed.
fn decode_fault(
    key: &str,
    get: &Value,
    pttl: &Value,
) -> Result<Result<Option<FleetFault>, String>, StoreError> {
    let bytes = match get {
        Value::Nil => return Ok(Ok(None)),
        Value::BulkString(b) => b.as_slice(),
        Value::SimpleString(s) => s.as_bytes(),
        Value::ServerError(e) if e.code() == "WRONGTYPE" => {
            return Ok(Err("not a string".to_string()))
        }
        other => return Err(unexpected(key, "GET", other)),
    };
    let ms = match pttl {
        Value::Int(ms) => *ms,
        Value::ServerError(_) => return Err(unexpected(key, "PTTL", pttl)),
        other => return Ok(Err(format!("unexpected PTTL reply {other:?}"))),
    };
    let config = match parse_config(bytes) {
        Ok(c) => c,
        Err(detail) => return Ok(Err(detail)),
    };
    Ok(match ms {
        // Lapsed between the two reads.
        -2 => Ok(None),
        -1 => Err("a fault without an expiry".to_string()),
        ms => match u64::try_from(ms) {
            Ok(ms) => Ok(Some(FleetFault {
                config,
                expires_in: Duration::from_millis(ms),
            })),
            Err(_) => Err(format!("unexpected PTTL {ms}")),
        },
    })
}

/// A valid config from JSON, or what is wrong with it.
fn parse_config(bytes: &[u8]) -> Result<ChaosConfig, String> {
    let config: ChaosConfig = serde_json::from_slice(bytes).map_err(|e| {
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).into_owned();
        format!("not a fault configuration in JSON ({e}): {shown:?}")
    })?;
    config
        .validate()
        .map_err(|e| format!("an invalid fault configuration: {e}"))?;
    Ok(config)
}

fn decode_audit(v: &Value) -> Result<FaultAudit, String> {
    let text =
        reply::text(v).ok_or_else(|| format!("an audit entry that is not a string: {v:?}"))?;
    let entry: Json = serde_json::from_str(&text)
        .map_err(|e| format!("an audit entry that is not JSON ({e})"))?;
    let field = |name: &str| entry.get(name).unwrap_or(&Json::Null);
    let string = |name: &str| {
        field(name)
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("an audit entry without a string `{name}`"))
    };
    let at = field("at")
        .as_u64()
        .ok_or_else(|| "an audit entry without `at` (unix ms)".to_string())?;
    let action = match field("action").as_str() {
        Some("set") => FaultAction::Set,
        Some("clear") => FaultAction::Clear,
        other => return Err(format!("an audit entry with action {other:?}")),
    };
    let config = match field("config") {
        Json::Null => None,
        c => Some(
            serde_json::from_value::<ChaosConfig>(c.clone())
                .map_err(|e| format!("an audit entry with a bad config ({e})"))?,
        ),
    };
    let ttl = match field("ttl_ms") {
        Json::Null => None,
        t => Some(Duration::from_millis(t.as_u64().ok_or_else(|| {
            format!("an audit entry with ttl_ms {t}, not a whole number")
        })?)),
    };
    Ok(FaultAudit {
        at: UNIX_EPOCH + Duration::from_millis(at),
        scope: string("scope")?,
        actor: string("actor")?,
        action,
        config,
        ttl,
    })
}

fn unexpected(key: &str, what: &str, v: &Value) -> StoreError {
    StoreError::Unavailable(format!("unexpected {what} reply on `{key}`: {v:?}"))
}

/// Argument `i` of a command (0: its name, 1: its key here) as text.
fn cmd_arg(cmd: &Cmd, i: usize) -> String {
    cmd.args_iter()
        .nth(i)
        .and_then(|a| match a {
            redis::Arg::Simple(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_round_trip_through_json() {
        let config = ChaosConfig {
            seed: Some(7),
            expires_after: Some(Duration::from_millis(1500)),
            latency_rate: 0.25,
            latency: Some(ripcord::chaos::Latency::uniform(
                Duration::from_millis(10),
                Duration::from_secs(2),
            )),
            abort_rate: 0.5,
            abort_status: Some(503),
            ..ChaosConfig::default()
        };
        let text = serde_json::to_string(&config).unwrap();
        assert_eq!(parse_config(text.as_bytes()).unwrap(), config, "{text}");
        assert!(parse_config(b"not json").unwrap_err().contains("JSON"));
        let invalid = parse_config(br#"{"abort_rate": 2.0}"#).unwrap_err();
        assert!(invalid.contains("abort_rate"), "{invalid}");
    }

    #[test]
    fn fault_replies_decode_without_panics() {
        let config = serde_json::to_vec(&ChaosConfig::default()).unwrap();
        let get = Value::BulkString(config);
        let k = "p:{s}:fault";
        let ok = decode_fault(k, &get, &Value::Int(250)).unwrap().unwrap();
        assert_eq!(ok.unwrap().expires_in, Duration::from_millis(250));
        assert_eq!(
            decode_fault(k, &Value::Nil, &Value::Int(-2)).unwrap(),
            Ok(None)
        );
        assert_eq!(decode_fault(k, &get, &Value::Int(-2)).unwrap(), Ok(None));
        assert!(decode_fault(k, &get, &Value::Int(-1)).unwrap().is_err());
        assert!(decode_fault(k, &get, &Value::Int(-7)).unwrap().is_err());
        assert!(decode_fault(k, &get, &Value::Nil).unwrap().is_err());
        assert!(decode_fault(k, &Value::Int(3), &Value::Int(1)).is_err());
    }

    #[test]
    fn audit_entries_decode_without_panics() {
        let entry = json!({"at": 5, "scope": "s", "actor": "a", "action": "clear",
                           "config": null, "ttl_ms": null});
        let a = decode_audit(&Value::BulkString(entry.to_string().into_bytes())).unwrap();
        assert_eq!(a.action, FaultAction::Clear);
        assert_eq!(a.at, UNIX_EPOCH + Duration::from_millis(5));
        for bad in [
            "[]",
            "{}",
            r#"{"at": -1, "scope": "s", "actor": "a", "action": "set"}"#,
            r#"{"at": 1, "scope": "s", "actor": "a", "action": "boom"}"#,
            r#"{"at": 1, "scope": "s", "actor": "a", "action": "set", "ttl_ms": 1.5}"#,
            r#"{"at": 1, "scope": "s", "actor": "a", "action": "set", "config": 3}"#,
        ] {
            assert!(
                decode_audit(&Value::BulkString(bad.as_bytes().to_vec())).is_err(),
                "{bad}"
            );
        }
        assert!(decode_audit(&Value::Nil).is_err());
    }

    #[test]
    fn scan_patterns_escape_the_prefix() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
