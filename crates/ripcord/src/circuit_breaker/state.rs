//! The breaker's state word and half-open counters, packed into atomics.

use std::fmt;

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum State {
    /// Calls pass; outcomes are recorded and the trip rules watched.
    Closed,
    /// Calls are rejected until the open duration elapses.
    Open,
    /// A limited number of probe calls pass to test the dependency.
    HalfOpen,
    /// Manually opened: every call is rejected until the breaker is reset.
    ForcedOpen,
    /// Manually disabled: every call passes and nothing is recorded.
    Disabled,
    /// Every call passes; outcomes are recorded (and reported) but never trip
    /// the breaker. Useful to observe a new configuration before enforcing it.
    MetricsOnly,
}

impl State {
    pub(crate) const fn code(self) -> u64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::ForcedOpen => 3,
            State::Disabled => 4,
            State::MetricsOnly => 5,
        }
    }

    pub(crate) const fn from_code(code: u64) -> State {
        match code {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::ForcedOpen,
            4 => State::Disabled,
            _ => State::MetricsOnly,
        }
    }

    /// Every state, in declaration order.
    pub const ALL: [State; 6] = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::Disabled,
        State::MetricsOnly,
    ];

    /// The state's name in `snake_case`, as used in metrics and configuration.
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
            State::MetricsOnly => "metrics_only",
        }
    }

    /// Whether the breaker refuses (some or all) calls in this state.
    pub const fn is_open(self) -> bool {
        matches!(self, State::Open | State::HalfOpen | State::ForcedOpen)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Layout of the state word: `epoch << 4 | ramp << 3 | state`.
pub(crate) mod word {
    use super::State;

    const STATE_MASK: u64 = 0b111;
    /// Set while a closed breaker is ramping traffic back up after recovery.
    pub(crate) const RAMP: u64 = 0b1000;
    const EPOCH_SHIFT: u32 = 4;

    /// The word of a closed, not ramping breaker has all low bits clear.
    pub(crate) const FAST_MASK: u64 = STATE_MASK | RAMP;

    pub(crate) const fn pack(state: State, epoch: u64, ramp: bool) -> u64 {
        (epoch << EPOCH_SHIFT) | if ramp { RAMP } else { 0 } | state.code()
    }

    pub(crate) const fn state(word: u64) -> State {
        State::from_code(word & STATE_MASK)
    }

    pub(crate) const fn epoch(word: u64) -> u64 {
        word >> EPOCH_SHIFT
    }

    pub(crate) const fn ramping(word: u64) -> bool {
        word & RAMP != 0
    }
}

/// Layout of the half-open word: `epoch(16) | admitted(16) | successes(16) | failures(16)`.
///
/// The low 16 bits of the epoch tag the counters, so a permit from another
/// half-open period can never change them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HalfOpenCounts {
    pub(crate) epoch_tag: u16,
    pub(crate) admitted: u16,
    pub(crate) successes: u16,
    pub(crate) failures: u16,
}

impl HalfOpenCounts {
    pub(crate) fn fresh(epoch: u64) -> Self {
        HalfOpenCounts {
            epoch_tag: epoch as u16,
            admitted: 0,
            successes: 0,
            failures: 0,
        }
    }

    pub(crate) fn unpack(w: u64) -> Self {
        HalfOpenCounts {
            epoch_tag: (w >> 48) as u16,
            admitted: (w >> 32) as u16,
            successes: (w >> 16) as u16,
            failures: w as u16,
        }
    }

    pub(crate) fn pack(self) -> u64 {
        (u64::from(self.epoch_tag) << 48)
            | (u64::from(self.admitted) << 32)
            | (u64::from(self.successes) << 16)
            | u64::from(self.failures)
    }

    pub(crate) fn belongs_to(self, epoch: u64) -> bool {
        self.epoch_tag == epoch as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for s in State::ALL {
            for ramp in [false, true] {
                let w = word::pack(s, 123_456_789, ramp);
                assert_eq!(word::state(w), s);
                assert_eq!(word::epoch(w), 123_456_789);
                assert_eq!(word::ramping(w), ramp);
            }
        }
        assert_eq!(word::pack(State::Closed, 9, false) & word::FAST_MASK, 0);
        let h = HalfOpenCounts {
            epoch_tag: 0xBEEF,
            admitted: 3,
            successes: 2,
            failures: 1,
        };
        assert_eq!(HalfOpenCounts::unpack(h.pack()), h);
        assert!(HalfOpenCounts::fresh(0x1_BEEF).belongs_to(0xBEEF));
    }
}
