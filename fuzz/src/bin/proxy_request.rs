//! Fuzz target `proxy_request`: see `ripcord_proxy::fuzzing::proxy_request` for its input and
//! what it checks.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        ripcord_proxy::fuzzing::proxy_request(data);
    });
}
