//! The DATA reader: finds the end of message data across arbitrary input
//! chunks, removes dot-stuffing, enforces the text line and message size
//! limits, and refuses bare CR and bare LF.
//!
//! RFC 5321 §4.1.1.4: message data ends with `<CRLF>.<CRLF>`, and only with
//! that sequence. Every other "line ending" a sloppy peer might treat as one
//! (`\n.\n`, `\r.\r`, `\r\n.\n`, `\n.\r\n` …) is ordinary data here — the
//! SMTP smuggling attacks (2023) rely on a receiver that ends DATA early.
//! RFC 5321 §2.3.8 forbids bare CR and LF in data; by default a message that
//! holds one is refused with `554 5.5.2` once its real end has arrived, and
//! with [`BareLineEndings::Normalize`] they are rewritten to CRLF instead.
//! Either way they never start a line that could end the data.

pub use crate::model::BareLineEndings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line that follows a real CRLF (or the 354).
    LineStart,
    /// At the start of a line that follows a normalised bare CR/LF: a
    /// leading dot is removed, but such a line can never end the data.
    SoftLineStart,
    /// Saw `.` at a real line start.
    Dot,
    /// Saw `.` CR at a real line start: an LF ends the data.
    DotCr,
    InLine,
    /// Saw CR inside a line.
    Cr,
}

/// Progress of one [`DataReader::feed`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataProgress {
    /// All input consumed; the end of data has not been seen.
    NeedMore,
    /// The end of data was seen after `consumed` octets of this input.
    End { consumed: usize },
}

/// Why a completely received message is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataError {
    TooBig,
    BareLineEnding,
    LineTooLong,
}

#[derive(Debug, Clone)]
pub struct DataReader {
    state: State,
    line_len: usize,
    text_line_cap: usize,
    size_cap: usize,
    mode: BareLineEndings,
    size: usize,
    too_big: bool,
    bare: bool,
    line_too_long: bool,
    /// BDAT (RFC 3030): the data is counted, not terminated, so a dot is
    /// ordinary data and nothing ends the message but the last chunk.
    chunked: bool,
}

impl DataReader {
    /// `text_line_cap` counts the CRLF (RFC 5321 §4.5.3.1.6: 1000 octets);
    /// `size_cap` is the largest message stored, in octets after unstuffing.
    pub fn new(text_line_cap: usize, size_cap: usize, mode: BareLineEndings) -> Self {
        DataReader {
            state: State::LineStart,
            line_len: 0,
            text_line_cap,
            size_cap,
            mode,
            size: 0,
            too_big: false,
            bare: false,
            line_too_long: false,
            chunked: false,
        }
    }

    /// The reader for BDAT chunks (RFC 3030 §2: no dot-stuffing, no end
    /// marker; the command says how many octets follow). The same line
    /// rules apply as to DATA: the message is relayed with DATA, so a
    /// bare CR or LF in it is refused (or normalised) exactly as there.
    pub fn chunked(text_line_cap: usize, size_cap: usize, mode: BareLineEndings) -> Self {
        DataReader {
            chunked: true,
            ..DataReader::new(text_line_cap, size_cap, mode)
        }
    }

    /// The last chunk is in: a message whose data does not end with a
    /// line ending gets one (RFC 5322 §2.1: lines end in CRLF; the DATA
    /// relay after this needs it); a trailing bare CR is completed.
    pub fn finish_chunked(&mut self, out: &mut Vec<u8>) {
        match self.state {
            State::LineStart | State::SoftLineStart => {}
            State::Cr => {
                self.emit(out, b"\n");
                self.state = State::LineStart;
            }
            State::Dot | State::DotCr | State::InLine => {
                self.emit(out, b"\r\n");
                self.state = State::LineStart;
            }
        }
    }

    /// The data so far is over the size cap.
    pub fn too_big(&self) -> bool {
        self.too_big
    }

    /// Octets of message data seen so far (after unstuffing), counting
    /// those not stored because the message is too big.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The verdict on a message whose end has been seen. The size limit is
    /// checked first: it is the reason the client can act on.
    pub fn outcome(&self) -> Result<(), DataError> {
        if self.too_big {
            Err(DataError::TooBig)
        } else if self.bare {
            Err(DataError::BareLineEnding)
        } else if self.line_too_long {
            Err(DataError::LineTooLong)
        } else {
            Ok(())
        }
    }

    /// Consumes message data, appending the unstuffed octets to `out`;
    /// once the message is over the size cap, `out` is emptied and stays
    /// empty.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> DataProgress {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::LineStart | State::SoftLineStart if b == b'.' && !self.chunked => {
                    self.line_len += 1;
                    // RFC 5321 §4.5.2: the first dot of a line is removed.
                    self.state = if self.state == State::LineStart {
                        State::Dot
                    } else {
                        State::InLine
                    };
                    i += 1;
                }
                State::LineStart | State::SoftLineStart | State::InLine => {
                    self.state = State::InLine;
                    // Copy the run up to the next CR or LF in one go.
                    let run_end =
                        memchr::memchr2(b'\r', b'\n', &input[i..]).map_or(input.len(), |n| i + n);
                    if run_end > i {
                        self.emit(out, &input[i..run_end]);
                        self.count_line(run_end - i);
                        i = run_end;
                        continue;
                    }
                    if b == b'\r' {
                        self.state = State::Cr;
                    } else {
                        self.bare_line_ending(out, b"\n");
                    }
                    i += 1;
                }
                State::Dot => match b {
                    b'\r' => {
                        self.state = State::DotCr;
                        i += 1;
                    }
                    _ => self.state = State::InLine,
                },
                State::DotCr => {
                    if b == b'\n' {
                        self.state = State::LineStart;
                        return DataProgress::End { consumed: i + 1 };
                    }
                    // ".\r" followed by anything but LF: a bare CR after an
                    // unstuffed dot. Reprocess `b` as line content.
                    self.bare_line_ending(out, b"\r");
                }
                State::Cr => {
                    if b == b'\n' {
                        self.count_line(2);
                        self.emit(out, b"\r\n");
                        self.state = State::LineStart;
                        self.line_len = 0;
                        i += 1;
                    } else {
                        self.bare_line_ending(out, b"\r");
                    }
                }
            }
        }
        DataProgress::NeedMore
    }

    /// Records a bare CR or LF and emits it (or CRLF when normalising).
    /// The next octet is never at a line start that could end the data.
    fn bare_line_ending(&mut self, out: &mut Vec<u8>, raw: &'static [u8]) {
        match self.mode {
            BareLineEndings::Reject => {
                self.bare = true;
                self.emit(out, raw);
                self.count_line(1);
                self.state = State::InLine;
            }
            BareLineEndings::Normalize => {
                self.emit(out, b"\r\n");
                self.line_len = 0;
                self.state = State::SoftLineStart;
            }
        }
    }

    fn count_line(&mut self, n: usize) {
        self.line_len += n;
        if self.line_len > self.text_line_cap {
            self.line_too_long = true;
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        self.size += bytes.len();
        if self.too_big {
            return;
        }
        if self.size > self.size_cap {
            // The message will be refused: what was kept is of no use, and
            // dropping it at once frees the memory and makes the result
            // the same however the network cut the data.
            self.too_big = true;
            *out = Vec::new();
            return;
        }
        out.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split at every point (and one octet at a time) and
    /// checks each run gives the same result.
    fn run_all_splits(
        input: &[u8],
        mode: BareLineEndings,
    ) -> (Vec<u8>, Option<usize>, Result<(), DataError>) {
        let whole = run(&[input], mode);
        for split in 0..=input.len() {
            let parts = run(&[&input[..split], &input[split..]], mode);
            assert_eq!(
                parts,
                whole,
                "split at {split} of {:?}",
                String::from_utf8_lossy(input)
            );
        }
        let singles: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&singles, mode), whole, "octet by octet");
        whole
    }

    fn run(
        chunks: &[&[u8]],
        mode: BareLineEndings,
    ) -> (Vec<u8>, Option<usize>, Result<(), DataError>) {
        let mut r = DataReader::new(1000, 1 << 20, mode);
        let mut out = Vec::new();
        let mut offset = 0;
        for chunk in chunks {
            if let DataProgress::End { consumed } = r.feed(chunk, &mut out) {
                return (out, Some(offset + consumed), r.outcome());
            }
            offset += chunk.len();
        }
        (out, None, r.outcome())
    }

    mod split_property {
        use super::*;
        use proptest::prelude::*;

        /// Text from the pieces the reader cares about: line ends, bare CR
        /// and LF, dots, NUL, lines over the 1000-octet cap.
        fn text() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                Just(b"ab".to_vec()),
                Just(b"\r\n".to_vec()),
                Just(b".".to_vec()),
                Just(b"\r".to_vec()),
                Just(b"\n".to_vec()),
                Just(b"\0".to_vec()),
                Just(vec![b'w'; 700]),
            ];
            proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]
            /// The same bytes in any chunks: the same text, the same end,
            /// the same verdict; and the end is only ever at CRLF.CRLF.
            #[test]
            fn any_chunking_reads_the_same_message(
                input in text(),
                cuts in proptest::collection::vec(any::<usize>(), 0..6),
                normalize in any::<bool>(),
            ) {
                let mode = if normalize { BareLineEndings::Normalize } else { BareLineEndings::Reject };
                let whole = run(&[&input], mode);
                let mut at: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
                at.sort_unstable();
                let mut chunks = Vec::new();
                let mut from = 0;
                for cut in at.into_iter().chain([input.len()]) {
                    chunks.push(&input[from..cut]);
                    from = cut;
                }
                prop_assert_eq!(run(&chunks, mode), whole.clone());
                if let Some(end) = whole.1 {
                    // Input starts after DATA's CRLF, so "." + CRLF at the
                    // very start is an end of data too.
                    let ends_properly = input[..end].ends_with(b"\r\n.\r\n") || &input[..end] == b".\r\n";
                    prop_assert!(ends_properly);
                }
            }
        }
    }

    #[test]
    fn state_event_end_of_data_and_unstuffing() {
        let (out, end, outcome) = run_all_splits(
            b"Subject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n",
            BareLineEndings::Reject,
        );
        assert_eq!(out, b"Subject: x\r\n\r\n.dot\r\n");
        assert_eq!(end, Some(24));
        assert_eq!(outcome, Ok(()));
    }

    #[test]
    fn state_event_empty_message() {
        let (out, end, _) = run_all_splits(b".\r\n", BareLineEndings::Reject);
        assert!(out.is_empty());
        assert_eq!(end, Some(3));
    }

    #[test]
    fn state_event_smuggling_endings_never_end_data() {
        // RFC 5321 §2.3.8 / SMTP smuggling: none of these is an end of data.
        let endings: &[&[u8]] = &[
            b"\n.\n",
            b"\r.\r",
            b"\r\n.\n",
            b"\n.\r\n",
            b"\r.\r\n",
            b"\r\n.\r",
            b"\r\n\x00.\r\n",
            b"\r\n.\x00\r\n",
            b"\n\x00.\r\n",
            b"\r\x00.\r\n",
            b"\n.\x00\n",
        ];
        for mode in [BareLineEndings::Reject, BareLineEndings::Normalize] {
            for ending in endings {
                let mut msg = b"Subject: a\r\n\r\nbody".to_vec();
                msg.extend_from_slice(ending);
                msg.extend_from_slice(b"MAIL FROM:<smuggled@example>\r\n");
                let (_, end, _) = run_all_splits(&msg, mode);
                assert_eq!(
                    end,
                    None,
                    "{mode:?} {:?} ended data",
                    String::from_utf8_lossy(ending)
                );
                // The real end still works afterwards.
                msg.extend_from_slice(b"\r\n.\r\n");
                let (_, end, outcome) = run_all_splits(&msg, mode);
                assert_eq!(end, Some(msg.len()));
                if mode == BareLineEndings::Reject
                    && ending.iter().filter(|&&b| b == b'\r' || b == b'\n').count() != 4
                {
                    assert_eq!(
                        outcome,
                        Err(DataError::BareLineEnding),
                        "{:?}",
                        String::from_utf8_lossy(ending)
                    );
                }
            }
        }
    }

    #[test]
    fn state_event_bare_lf_rejected_or_normalised() {
        let (_, end, outcome) = run_all_splits(b"a\nb\r\n.\r\n", BareLineEndings::Reject);
        assert_eq!(end, Some(8));
        assert_eq!(outcome, Err(DataError::BareLineEnding));
        let (out, _, outcome) = run_all_splits(b"a\nb\rc\r\n.\r\n", BareLineEndings::Normalize);
        assert_eq!(out, b"a\r\nb\r\nc\r\n");
        assert_eq!(outcome, Ok(()));
    }

    #[test]
    fn state_event_text_line_cap() {
        let mut msg = vec![b'x'; 998];
        msg.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(run(&[&msg], BareLineEndings::Reject).2, Ok(()));
        let mut msg = vec![b'x'; 999];
        msg.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(
            run(&[&msg], BareLineEndings::Reject).2,
            Err(DataError::LineTooLong)
        );
    }

    #[test]
    fn state_event_size_cap_stops_storing() {
        let mut r = DataReader::new(1000, 10, BareLineEndings::Reject);
        let mut out = Vec::new();
        let progress = r.feed(b"0123456789abc\r\n.\r\n", &mut out);
        assert_eq!(progress, DataProgress::End { consumed: 18 });
        assert_eq!(r.outcome(), Err(DataError::TooBig));
        assert!(out.is_empty(), "nothing kept of a refused message");
        // The same in small pieces: the data fits at first, then does not.
        let mut r = DataReader::new(1000, 10, BareLineEndings::Reject);
        let mut out = Vec::new();
        for piece in [&b"01234"[..], b"56789", b"abc\r\n.\r\n"] {
            r.feed(piece, &mut out);
        }
        assert_eq!(r.outcome(), Err(DataError::TooBig));
        assert!(out.is_empty());
    }
}
