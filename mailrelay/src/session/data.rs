//! The message body after `DATA`: dot-unstuffing with one end marker only.
//!
//! SMTP smuggling works when two servers disagree about where a message ends. Here the only end
//! marker is `<CRLF>.<CRLF>` at the start of a line, and any CR or LF that is not part of a CRLF
//! pair marks the message as malformed, so it is refused as a whole instead of being relayed to a
//! server that might read `<LF>.<LF>` as the end. BDAT chunks get the same bare CR/LF check.

use super::memory::Reservation;

/// Incremental reader of one `DATA` body.
#[derive(Debug)]
pub struct DataReader {
    body: Vec<u8>,
    limit: usize,
    at_line_start: bool,
    oversized: bool,
    bare_line_ending: bool,
    out_of_memory: bool,
}

/// What the reader knows after a chunk of input.
#[derive(Debug, PartialEq, Eq)]
pub enum DataProgress {
    /// The end marker has not been seen yet; everything given was consumed.
    NeedMore,
    /// The end marker was seen after this many bytes of the input.
    Complete { consumed: usize },
}

/// A finished body and what was wrong with it, if anything.
#[derive(Debug)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub oversized: bool,
    pub bare_line_ending: bool,
    /// The shared memory budget had no room for it (the client should retry later).
    pub out_of_memory: bool,
}

/// Partial lines longer than this are stored before their CRLF arrives, bounding the buffer.
const PARTIAL_LINE_FLUSH: usize = 64 * 1024;

impl DataReader {
    pub fn new(limit: usize) -> Self {
        Self {
            body: Vec::new(),
            limit,
            at_line_start: true,
            oversized: false,
            bare_line_ending: false,
            out_of_memory: false,
        }
    }

    /// Consumes complete lines from `input`. Returns how far it got; a trailing partial line is
    /// left in `input` for the next call unless it grew past [`PARTIAL_LINE_FLUSH`]. The body's
    /// memory is taken from `memory`.
    pub fn ingest(&mut self, input: &[u8], memory: &mut Reservation) -> (DataProgress, usize) {
        let mut position = 0;
        while let Some(offset) = find_crlf(&input[position..]) {
            let line = &input[position..position + offset];
            position += offset + 2;
            if self.at_line_start && line == b"." {
                return (DataProgress::Complete { consumed: position }, position);
            }
            self.push(line, true, memory);
        }
        let rest = &input[position..];
        if rest.len() > PARTIAL_LINE_FLUSH {
            // Keep a final CR: it may be the first half of the line's CRLF.
            let keep = usize::from(rest.last() == Some(&b'\r'));
            let flushed = rest.len() - keep;
            self.push(&rest[..flushed], false, memory);
            position += flushed;
        }
        (DataProgress::NeedMore, position)
    }

    pub fn finish(self) -> Body {
        Body {
            bytes: self.body,
            oversized: self.oversized,
            bare_line_ending: self.bare_line_ending,
            out_of_memory: self.out_of_memory,
        }
    }

    fn push(&mut self, segment: &[u8], ends_line: bool, memory: &mut Reservation) {
        let content = if self.at_line_start && segment.first() == Some(&b'.') { &segment[1..] } else { segment };
        if content.iter().any(|&byte| byte == b'\r' || byte == b'\n') {
            self.bare_line_ending = true;
        }
        let added = content.len() + if ends_line { 2 } else { 0 };
        if self.body.len() + added > self.limit {
            self.oversized = true;
            self.drop_body(memory);
        } else if !self.oversized && !self.out_of_memory {
            let stored = memory.append(&mut self.body, content, self.limit)
                && (!ends_line || memory.append(&mut self.body, b"\r\n", self.limit));
            if !stored {
                self.out_of_memory = true;
                self.drop_body(memory);
            }
        }
        self.at_line_start = ends_line;
    }
}

impl DataReader {
    /// The message will be refused: keep reading to its end, holding nothing.
    fn drop_body(&mut self, memory: &mut Reservation) {
        self.body = Vec::new();
        memory.release();
    }
}

/// Checks one BDAT chunk (raw bytes, no stuffing) for CR or LF outside CRLF pairs.
/// `previous_cr` carries a CR that ended the previous chunk.
pub fn has_bare_line_ending(chunk: &[u8], previous_cr: &mut bool) -> bool {
    let mut bare = false;
    for &byte in chunk {
        match byte {
            b'\n' if !*previous_cr => bare = true,
            _ if *previous_cr && byte != b'\n' => bare = true,
            _ => {}
        }
        *previous_cr = byte == b'\r';
    }
    bare
}

pub fn find_crlf(haystack: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(offset) = haystack[start..].iter().position(|&byte| byte == b'\n') {
        let index = start + offset;
        if index > 0 && haystack[index - 1] == b'\r' {
            return Some(index - 1);
        }
        start = index + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::memory::MemoryBudget;
    use super::*;

    fn memory() -> Reservation {
        Reservation::new(MemoryBudget::new(usize::MAX))
    }

    fn read_all(input: &[u8]) -> (Body, usize) {
        let mut reader = DataReader::new(1 << 20);
        let (progress, _) = reader.ingest(input, &mut memory());
        let DataProgress::Complete { consumed } = progress else { panic!("no end marker in {input:?}") };
        (reader.finish(), consumed)
    }

    #[test]
    fn unstuffs_and_stops_at_the_end_marker() {
        let (body, consumed) = read_all(b"Subject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n");
        assert_eq!(body.bytes, b"Subject: x\r\n\r\n.dot\r\n");
        assert_eq!(consumed, 24);
        assert!(!body.bare_line_ending);
    }

    #[test]
    fn smuggling_attempt_is_not_an_end_and_is_flagged() {
        let input = b"Subject: x\r\n\r\nhi\n.\nMAIL FROM:<a@b.c>\r\n.\r\n";
        let (body, consumed) = read_all(input);
        assert_eq!(consumed, input.len());
        assert!(body.bare_line_ending);
        let input = b"hi\r.\r\nMAIL FROM:<a@b.c>\r\n.\r\n";
        let (body, _) = read_all(input);
        assert!(body.bare_line_ending);
    }

    #[test]
    fn byte_at_a_time_gives_the_same_body() {
        let input = "Subject: Giao ban tuần\r\n\r\nKính gửi các đồng chí\r\n..\r\n.\r\n".as_bytes();
        let mut reader = DataReader::new(1 << 20);
        let mut buffer = Vec::new();
        let mut done = false;
        let mut memory = memory();
        for &byte in input {
            buffer.push(byte);
            let (progress, consumed) = reader.ingest(&buffer, &mut memory);
            buffer.drain(..consumed);
            if progress != DataProgress::NeedMore {
                done = true;
            }
        }
        assert!(done);
        assert_eq!(reader.finish().bytes, "Subject: Giao ban tuần\r\n\r\nKính gửi các đồng chí\r\n.\r\n".as_bytes());
    }

    #[test]
    fn oversized_bodies_are_flagged_not_stored() {
        let mut reader = DataReader::new(10);
        reader.ingest(b"0123456789abcdef\r\n", &mut memory());
        let (progress, _) = reader.ingest(b".\r\n", &mut memory());
        assert_eq!(progress, DataProgress::Complete { consumed: 3 });
        let body = reader.finish();
        assert!(body.oversized);
        assert!(body.bytes.is_empty());
    }

    #[test]
    fn long_lines_are_flushed_in_parts() {
        let mut reader = DataReader::new(1 << 20);
        let long = vec![b'a'; PARTIAL_LINE_FLUSH + 10];
        let mut memory = memory();
        let (_, consumed) = reader.ingest(&long, &mut memory);
        assert_eq!(consumed, long.len());
        reader.ingest(b"\r\n.\r\n", &mut memory);
        assert_eq!(reader.finish().bytes.len(), long.len() + 2);
    }

    #[test]
    fn a_full_budget_reads_to_the_end_and_holds_nothing() {
        let budget = MemoryBudget::new(100);
        let mut memory = Reservation::new(budget.clone());
        let mut reader = DataReader::new(1 << 20);
        let (progress, _) = reader.ingest(&[b"x".repeat(300).as_slice(), b"\r\n.\r\n"].concat(), &mut memory);
        assert_eq!(progress, DataProgress::Complete { consumed: 305 });
        let body = reader.finish();
        assert!(body.out_of_memory && !body.oversized && body.bytes.is_empty());
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn bdat_bare_line_endings() {
        let mut previous = false;
        assert!(!has_bare_line_ending(b"a\r", &mut previous));
        assert!(!has_bare_line_ending(b"\nb\r\n", &mut previous));
        assert!(has_bare_line_ending(b"c\nd", &mut previous));
    }
}
