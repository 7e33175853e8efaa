//! The forwarding side of `ripcord proxy`.
