//! Fuzz target `h1_response`: see `ripcord_proxy::fuzzing::h1_response` for its input and
//! what it checks.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        ripcord_proxy::fuzzing::h1_response(data);
    });
}
