//! A Server-Sent Events decoder (the WHATWG HTML "event stream" format), as
//! much of it as an OpenAI-compatible `stream: true` response uses: bytes in,
//! split anywhere by the network, and each event's `data` out.
//!
//! Lines end with LF, CRLF or CR (a CRLF split across two reads is one line
//! end); a line starting with `:` is a comment (keep-alives); `data:` lines
//! are joined with `\n`; a blank line ends the event; `event`, `id` and
//! `retry` fields are read and ignored (the chat completions stream does not
//! use them). Memory is bounded: a line or an event longer than the limit is
//! an error, not a buffer that grows with whatever the upstream sends.
//! docs/DECISIONS.md says why this is ours and not a crate's.

/// Why a stream is not a valid event stream.
#[derive(Debug, PartialEq, Eq)]
pub enum SseError {
    /// A line or an event over the limit (bytes).
    TooLong(usize),
    /// A line that is not UTF-8.
    NotUtf8,
}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SseError::TooLong(limit) => write!(f, "an event longer than {limit} bytes"),
            SseError::NotUtf8 => f.write_str("a line that is not UTF-8"),
        }
    }
}

/// Decodes one event stream, fed as it arrives.
pub struct SseDecoder {
    /// The bytes of a line not yet ended.
    line: Vec<u8>,
    /// The data of the event being read (`data` lines joined by `\n`).
    data: String,
    /// A `data` field was seen in this event (an empty one counts).
    has_data: bool,
    /// The last read ended with CR: a LF first in the next one ends nothing.
    after_cr: bool,
    /// No line was read yet (a byte-order mark may start the first).
    at_start: bool,
    limit: usize,
}

impl SseDecoder {
    /// A decoder refusing lines and events over `limit` bytes.
    pub fn new(limit: usize) -> Self {
        SseDecoder {
            line: Vec::new(),
            data: String::new(),
            has_data: false,
            after_cr: false,
            at_start: true,
            limit,
        }
    }

    /// Feeds the next bytes; the data of every event they complete is
    /// appended to `events`, in order.
    pub fn feed(&mut self, mut bytes: &[u8], events: &mut Vec<String>) -> Result<(), SseError> {
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&bytes[..end]);
            self.check_len(self.line.len())?;
            let line = std::mem::take(&mut self.line);
            self.take_line(&line, events)?;
            let crlf = bytes[end] == b'\r';
            bytes = &bytes[end + 1..];
            if crlf {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.line.extend_from_slice(bytes);
        self.check_len(self.line.len())
    }

    fn check_len(&self, len: usize) -> Result<(), SseError> {
        if len > self.limit {
            return Err(SseError::TooLong(self.limit));
        }
        Ok(())
    }

    fn take_line(&mut self, mut line: &[u8], events: &mut Vec<String>) -> Result<(), SseError> {
        if self.at_start {
            self.at_start = false;
            line = line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line);
        }
        if line.is_empty() {
            if self.has_data {
                self.has_data = false;
                events.push(std::mem::take(&mut self.data));
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        if field == "data" {
            if self.has_data {
                self.data.push('\n');
            }
            self.data.push_str(value);
            self.has_data = true;
            self.check_len(self.data.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(stream: &[u8], piece: usize) -> Result<Vec<String>, SseError> {
        let mut decoder = SseDecoder::new(1024);
        let mut events = Vec::new();
        for chunk in stream.chunks(piece) {
            decoder.feed(chunk, &mut events)?;
        }
        Ok(events)
    }

    #[test]
    fn data_lines_comments_and_blank_lines() {
        let stream =
            b": keep-alive\n\ndata: {\"a\":1}\n\nevent: x\nid: 7\nretry: 10\ndata: [DONE]\n\n";
        for piece in 1..stream.len() {
            assert_eq!(
                decode_in_pieces(stream, piece).unwrap(),
                ["{\"a\":1}", "[DONE]"],
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn every_line_ending_even_split_across_reads() {
        let stream = "\u{feff}data: one\r\n\r\ndata:two\r\rdata: three\n\ndata: four\r\n\r\n";
        for piece in 1..stream.len() {
            assert_eq!(
                decode_in_pieces(stream.as_bytes(), piece).unwrap(),
                ["one", "two", "three", "four"],
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn multi_line_data_and_multibyte_text_split_mid_character() {
        let stream = "data: héllo\ndata: wörld 👋\n\n";
        for piece in 1..stream.len() {
            assert_eq!(
                decode_in_pieces(stream.as_bytes(), piece).unwrap(),
                ["héllo\nwörld 👋"]
            );
        }
    }

    #[test]
    fn an_unfinished_event_is_not_emitted() {
        assert!(decode_in_pieces(b"data: {\"partial\":", 4)
            .unwrap()
            .is_empty());
        assert!(decode_in_pieces(b"data: complete line\n", 4)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn bounded_lines_and_events_and_utf8() {
        let long = format!("data: {}", "x".repeat(2000));
        assert_eq!(
            decode_in_pieces(long.as_bytes(), 100),
            Err(SseError::TooLong(1024))
        );
        let many = "data: 0123456789\n".repeat(100);
        assert_eq!(
            decode_in_pieces(many.as_bytes(), 7),
            Err(SseError::TooLong(1024))
        );
        assert_eq!(
            decode_in_pieces(b"data: \xff\xfe\n\n", 3),
            Err(SseError::NotUtf8)
        );
    }
}
