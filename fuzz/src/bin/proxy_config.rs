//! Fuzz target `proxy_config`: see `ripcord_proxy::fuzzing::proxy_config` for its input and
//! what it checks.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        ripcord_proxy::fuzzing::proxy_config(data);
    });
}
