//! Key layout: `<prefix>:{<name>}:<part>`, the braces a Redis Cluster hash
//! tag so every key of one breaker lives in one slot (one script can touch
//! them all).

/// Names every key and channel under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn key(&self, name: &str, part: &str) -> String {
        // An empty hash tag would hash the whole key (parts in different
        // Cluster slots): the empty name is spelled NUL.
        let name = if name.is_empty() { "\0" } else { name };
        let mut k = String::with_capacity(self.prefix.len() + name.len() + part.len() + 4);
        k.push_str(&self.prefix);
        k.push_str(":{");
        k.push_str(name);
        k.push_str("}:");
        k.push_str(part);
        k
    }

    /// The hash of a breaker's shared state.
    pub(crate) fn state(&self, name: &str) -> String {
        self.key(name, "state")
    }

    /// The hash of every instance's window report.
    pub(crate) fn reports(&self, name: &str) -> String {
        self.key(name, "reports")
    }

    /// The hash of a fleet-wide rate limiter.
    pub(crate) fn gcra(&self, name: &str) -> String {
        self.key(name, "gcra")
    }

    /// The hash of every instance's heartbeat.
    pub(crate) fn instances(&self) -> String {
        format!("{}:instances", self.prefix)
    }

    /// The pub/sub channel of transitions.
    pub(crate) fn channel(&self) -> String {
        format!("{}:events", self.prefix)
    }

    /// A `SCAN MATCH` pattern for every breaker's state key.
    pub(crate) fn state_pattern(&self) -> String {
        format!("{}:{{*}}:state", glob_escape(&self.prefix))
    }

    /// The breaker name in a state key, if it is one of ours.
    pub(crate) fn name_of_state_key<'a>(&self, key: &'a str) -> Option<&'a str> {
        let name = key
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix("}:state")?;
        Some(if name == "\0" { "" } else { name })
    }
}

/// `s` with the `SCAN MATCH` wildcards escaped.
pub(crate) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The Redis Cluster slot of a key (CRC16/XMODEM of its hash tag, mod 16384).
pub(crate) fn slot(key: &[u8]) -> u16 {
    let tagged = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(tagged) % 16384
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let k = Keys::new("ripcord");
        assert_eq!(k.state("payments"), "ripcord:{payments}:state");
        assert_eq!(k.reports("payments"), "ripcord:{payments}:reports");
        assert_eq!(k.channel(), "ripcord:events");
        assert_eq!(
            k.name_of_state_key("ripcord:{payments}:state"),
            Some("payments")
        );
        assert_eq!(k.name_of_state_key("other:{payments}:state"), None);
        assert_eq!(Keys::new("a*b").state_pattern(), "a\\*b:{*}:state");
        // The empty name keeps a non-empty hash tag.
        assert_eq!(k.state(""), "ripcord:{\0}:state");
        assert_eq!(k.name_of_state_key(&k.state("")), Some(""));
        assert_eq!(slot(k.state("").as_bytes()), slot(k.reports("").as_bytes()));
        assert_eq!(k.name_of_state_key(&k.state("a}b")), Some("a}b"));
    }

    #[test]
    fn slots_match_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_eq!(
            slot(b"ripcord:{payments}:state"),
            slot(b"ripcord:{payments}:reports")
        );
        assert_eq!(slot(b"ripcord:{payments}:state"), slot(b"payments"));
    }
}
