//! The one list of the policies a pipeline can hold.
//!
//! Everything that must name every kind of policy — [`PolicyKind`](crate::PolicyKind),
//! the pipeline's own `Policy` enum and its accessors
//! ([`Pipeline::timeout`](crate::Pipeline::timeout), …), the builder's entries,
//! [`PolicyConfig`](crate::PolicyConfig) and the tables of a
//! [`PipelineConfig`](crate::PipelineConfig) file — is generated from
//! [`policy_list!`] below, so that adding a kind of policy is one row there
//! plus the policy's own behaviour (how the pipeline runs it, in
//! `pipeline/execute.rs` and `pipeline/admit.rs`, whose `match`es the compiler
//! then asks for).

/// Calls the macro `$then!` with one row per kind of policy:
///
/// ```text
/// [Variant, snake_case_name, "label", ConfigType, Slot, PolicyType, BuilderType]
/// ```
///
/// - `Variant` names the kind in every generated enum ([`PolicyKind`](crate::PolicyKind)'s
///   variants included);
/// - `snake_case_name` is its name in files, metrics and headers
///   ([`PolicyKind::as_str`](crate::PolicyKind::as_str)), the name of its
///   table in a keyed [`PipelineConfig`](crate::PipelineConfig), and the name
///   of the pipeline's accessor; it must be `Variant` in snake_case (serde's
///   `rename_all = "snake_case"` names the [`PolicyConfig`](crate::PolicyConfig)
///   tags, and a test checks that they agree);
/// - `"label"` is the policy in words, for generated docs ("the circuit breaker");
/// - the types: its configuration (data, from a file); what a
///   [`PolicyConfig<F>`](crate::PolicyConfig) holds for it (the configuration
///   itself, except for the fallback: `F`, a [`FallbackEntry`](crate::pipeline::FallbackEntry)
///   that carries its triggers); the policy; and its builder. The policy and
///   builder types may use the pipeline's type parameters, which the
///   generated code always names `T` and `E`.
///
/// The rows are in the usual pipeline order; nothing depends on it.
macro_rules! policy_list {
    ($then:ident) => {
        $then! {
            // kind           snake_case       label              configuration         slot                  policy          builder
            [Timeout,        timeout,         "timeout",         TimeoutConfig,        TimeoutConfig,        TimeoutPolicy,  TimeoutBuilder]
            [Retry,          retry,           "retry policy",    RetryConfig,          RetryConfig,          Retry,          RetryBuilder]
            [CircuitBreaker, circuit_breaker, "circuit breaker", CircuitBreakerConfig, CircuitBreakerConfig, CircuitBreaker, CircuitBreakerBuilder]
            [Bulkhead,       bulkhead,        "bulkhead",        BulkheadConfig,       BulkheadConfig,       Bulkhead,       BulkheadBuilder]
            [RateLimiter,    rate_limiter,    "rate limiter",    RateLimiterConfig,    RateLimiterConfig,    RateLimiter,    RateLimiterBuilder]
            [Hedge,          hedge,           "hedge",           HedgeConfig,          HedgeConfig,          Hedge,          HedgeBuilder]
            [Fallback,       fallback,        "fallback chain",  FallbackConfig,       F,                    Fallback<T, E>, FallbackBuilder<T, E>]
            [Chaos,          chaos,           "fault-injection policy", ChaosConfig,   ChaosConfig,          Chaos,          ChaosBuilder]
        }
    };
}

pub(crate) use policy_list;
