//! Fuzz target `trace_csv`: see `ripcord_cli::fuzzing::trace_csv` for its input and
//! what it checks.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        ripcord_cli::fuzzing::trace_csv(data);
    });
}
