//! The TOML configuration of `ripcord proxy` and its validation.
