//! Fuzz target `trace_jsonl`: see `ripcord_cli::fuzzing::trace_jsonl` for its input and
//! what it checks.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        ripcord_cli::fuzzing::trace_jsonl(data);
    });
}
