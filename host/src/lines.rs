//! Output cut into lines of bounded length while it is read: an endless line
//! costs the reader its bound, not its length.

/// Assembles lines from chunks of output, keeping at most `max` bytes of each
/// and counting the rest until the newline.
pub struct LineCutter {
    max: usize,
    line: Vec<u8>,
    cut: usize,
}

impl LineCutter {
    pub fn new(max: usize) -> Self {
        LineCutter {
            max,
            line: Vec::new(),
            cut: 0,
        }
    }

    /// Feeds `bytes`; `emit` gets every line they complete, without its
    /// newline and trailing CRs, and with a marker when it was cut.
    pub fn push(&mut self, mut bytes: &[u8], mut emit: impl FnMut(Vec<u8>)) {
        while !bytes.is_empty() {
            let (chunk, rest, complete) = match bytes.iter().position(|b| *b == b'\n') {
                Some(end) => (&bytes[..end], &bytes[end + 1..], true),
                None => (bytes, &bytes[bytes.len()..], false),
            };
            let room = self.max.saturating_sub(self.line.len()).min(chunk.len());
            self.line.extend_from_slice(&chunk[..room]);
            self.cut += chunk.len() - room;
            bytes = rest;
            if complete {
                emit(self.take());
            }
        }
    }

    /// Part of a line has been fed and not emitted yet.
    pub fn has_pending(&self) -> bool {
        !self.line.is_empty() || self.cut > 0
    }

    /// The line in progress, for the end of the output (the last line need
    /// not end with a newline).
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        self.has_pending().then(|| self.take())
    }

    fn take(&mut self) -> Vec<u8> {
        let mut line = std::mem::take(&mut self.line);
        while line.last() == Some(&b'\r') {
            line.pop();
        }
        if self.cut > 0 {
            line.extend_from_slice(
                format!(" …[line truncated: {} more bytes]", self.cut).as_bytes(),
            );
        }
        self.cut = 0;
        line
    }
}

#[cfg(test)]
mod tests {
    use super::LineCutter;

    fn feed(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut cutter = LineCutter::new(max);
        let mut lines = Vec::new();
        for chunk in chunks {
            cutter.push(chunk, |l| lines.push(String::from_utf8(l).expect("utf-8")));
        }
        lines.extend(
            cutter
                .finish()
                .map(|l| String::from_utf8(l).expect("utf-8")),
        );
        lines
    }

    #[test]
    fn lines_across_chunks_are_joined_and_long_ones_cut_with_what_was_dropped() {
        assert_eq!(feed(8, &[b"ab", b"c\r\nd", b"e\n"]), ["abc", "de"]);
        assert_eq!(
            feed(4, &[b"0123", b"456789\nok\n"]),
            ["0123 …[line truncated: 6 more bytes]", "ok"]
        );
        assert_eq!(feed(4, &[b"last"]), ["last"]);
        assert_eq!(feed(4, &[b"\n\n"]), ["", ""]);
    }
}
