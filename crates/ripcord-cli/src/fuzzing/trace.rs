//! The trace readers of `ripcord simulate`, CSV and JSON Lines.
//!
//! Input: the trace's bytes (inputs that are not UTF-8 are read too: the
//! reader must refuse them with an error, not a panic).
//!
//! Invariants: no panic; the calls read start in order; an error ends the
//! reading; an error's line is a line of the input (or the one after its
//! end), its column a position on that line, and what it quotes at most
//! 40 characters and an ellipsis.

use crate::simulate::{TraceError, TraceFormat, TraceReader};

/// Runs one CSV trace.
pub fn trace_csv(data: &[u8]) {
    read(data, TraceFormat::Csv);
}

/// Runs one JSON Lines trace.
pub fn trace_jsonl(data: &[u8]) {
    read(data, TraceFormat::Jsonl);
}

fn read(data: &[u8], format: TraceFormat) {
    let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let mut reader = TraceReader::new(data, format);
    let mut last_start = 0;
    while let Some(item) = reader.next() {
        match item {
            Ok(call) => {
                assert!(
                    call.start >= last_start,
                    "{call:?} starts before the call before it in {:?}",
                    String::from_utf8_lossy(data)
                );
                last_start = call.start;
            }
            Err(e) => {
                check_error(&e, &lines, data);
                assert!(reader.next().is_none(), "reading went on after {e}");
                return;
            }
        }
    }
}

fn check_error(e: &TraceError, lines: &[&[u8]], data: &[u8]) {
    let TraceError::Malformed {
        line,
        column,
        found,
        expected,
    } = e
    else {
        // Not UTF-8: the reader's `read_line` says so.
        return;
    };
    let text = String::from_utf8_lossy(data);
    let Ok(index) = usize::try_from(*line - 1) else {
        panic!("line 0 in {e}");
    };
    // A line past the end (the header is missing) has nothing to point at.
    let chars = lines.get(index).map_or(0, |l| {
        String::from_utf8_lossy(l)
            .trim_end_matches('\r')
            .chars()
            .count()
    });
    assert!(
        index <= lines.len(),
        "{e} names a line past the end of {text:?}"
    );
    assert!(
        *column >= 1 && *column <= chars + 1,
        "{e}: the column is not on the line ({chars} characters) in {text:?}"
    );
    assert!(
        !expected.is_empty(),
        "{e} says nothing of what was expected"
    );
    assert!(
        found.chars().count() <= 41,
        "{e} quotes more than 40 characters"
    );
}
