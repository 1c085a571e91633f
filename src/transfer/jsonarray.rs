//! Splits one JSON array into its top-level elements as the bytes arrive.
//!
//! access.md answers a list route (`GET /api/doctor/patient/7/vitals`) with
//! one JSON array, and a record can hold 100,000 vitals measurements, each
//! embedding the whole patient. The transfer must not hold that array in
//! memory, so [`ArraySplitter`] takes the response body in whatever pieces
//! the connection delivers and hands each complete element to a callback,
//! as the exact bytes the upstream sent:
//!
//! ```text
//! body chunks ──feed──▶ ArraySplitter ──f(&[u8])──▶ caller (parses one element)
//!                         │ carry: the part of an element cut by a chunk
//!                         ▼
//!                       finish() ──▶ number of elements, or why the array is bad
//! ```
//!
//! An element that lies whole inside one chunk is passed as a slice of that
//! chunk, with no copy; only an element cut by a chunk boundary is gathered
//! in the carry buffer, which is bounded by `max_element_bytes`. Memory is
//! therefore one element (plus the bracket stack of that element), however
//! long the array.
//!
//! The splitter checks the array's structure: the opening and closing
//! brackets, commas between elements, balanced brackets inside an element,
//! and strings with their escapes (so a `]` or `"` inside a string is never
//! taken for structure). It does not check the grammar of numbers and
//! literals, nor control characters inside strings: the caller parses each
//! element anyway (with serde_json), and refuses a bad one there. All of
//! this is sans-IO: no reads, no clock.

use std::fmt;

/// Why an array was refused. `offset` is the byte offset in the whole
/// stream (counting from the first byte ever fed).
#[derive(Debug, thiserror::Error)]
pub enum SplitError<E> {
    /// The first byte that is not white space is not `[`.
    #[error("not a JSON array: byte {offset} is not '['")]
    NotAnArray { offset: u64 },
    /// A byte that cannot appear where it is.
    #[error("malformed JSON array at byte {offset}")]
    Malformed { offset: u64 },
    /// One element is longer than the limit.
    #[error("an array element is longer than {limit} bytes")]
    ElementTooLarge { limit: usize },
    /// The input ended before the closing `]`.
    #[error("the JSON array ends before its closing ']'")]
    Unterminated,
    /// Something other than white space follows the closing `]`.
    #[error("data after the JSON array, at byte {offset}")]
    TrailingData { offset: u64 },
    /// The callback refused an element.
    #[error("array element refused: {0}")]
    Callback(#[source] E),
}

/// Incremental splitter of one JSON array; see the module docs.
pub struct ArraySplitter {
    max_element_bytes: usize,
    state: State,
    /// Closing brackets expected inside the current element, innermost last.
    closers: Vec<u8>,
    /// Inside a string (of a nested element, or a string element).
    in_string: bool,
    /// The previous byte was a backslash inside a string.
    escaped: bool,
    /// The start of the current element, when an earlier chunk cut it.
    carry: Vec<u8>,
    /// Bytes fed before the current chunk.
    offset: u64,
    elements: u64,
}

/// Where the scanner is in the array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the opening `[`.
    Open,
    /// After `[`: an element or `]`.
    First,
    /// After a comma: an element (a `]` here is a trailing comma).
    Next,
    /// Inside an element.
    Value(Kind),
    /// After an element: `,` or `]`.
    After,
    /// After the closing `]`: only white space.
    Closed,
    /// An error was returned; the splitter refuses everything after it.
    Failed,
}

/// The kind of element being scanned, which decides where it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// An object or array: ends at the bracket that empties the stack.
    Nested,
    /// A string: ends at its unescaped closing quote.
    String,
    /// A number or literal: ends before white space, `,` or `]`.
    Scalar,
}

/// How the scan of one byte ended.
enum Step {
    /// Go on with the next byte.
    Next,
    /// The element ends with this byte (inclusive).
    EndsAt,
    /// The element ended just before this byte, which is scanned again.
    EndedBefore,
}

impl ArraySplitter {
    /// A splitter that refuses any element longer than `max_element_bytes`.
    pub fn new(max_element_bytes: usize) -> Self {
        ArraySplitter {
            max_element_bytes,
            state: State::Open,
            closers: Vec::new(),
            in_string: false,
            escaped: false,
            carry: Vec::new(),
            offset: 0,
            elements: 0,
        }
    }

    /// Elements handed to callbacks so far.
    pub fn elements(&self) -> u64 {
        self.elements
    }

    /// Scans `bytes` and calls `f` with each element that completes in
    /// them, in order. After an error, every later call fails too.
    pub fn feed<E>(
        &mut self,
        bytes: &[u8],
        f: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), SplitError<E>> {
        let result = self.scan(bytes, f);
        if result.is_err() {
            self.state = State::Failed;
            self.carry = Vec::new();
        }
        self.offset = self.offset.saturating_add(bytes.len() as u64);
        result
    }

    /// Ends the input: the array must be closed. Returns the number of
    /// elements.
    pub fn finish<E>(self) -> Result<u64, SplitError<E>> {
        match self.state {
            State::Closed => Ok(self.elements),
            State::Failed => Err(SplitError::Malformed {
                offset: self.offset,
            }),
            State::Open | State::First | State::Next | State::Value(_) | State::After => {
                Err(SplitError::Unterminated)
            }
        }
    }

    fn scan<E>(
        &mut self,
        bytes: &[u8],
        f: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), SplitError<E>> {
        // Where the current element starts in `bytes`; an element carried
        // over from an earlier chunk continues at 0.
        let mut start = matches!(self.state, State::Value(_)).then_some(0);
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            let at = self.offset + i as u64;
            match self.state {
                State::Open => match b {
                    b'[' => self.state = State::First,
                    _ if is_space(b) => {}
                    _ => return Err(SplitError::NotAnArray { offset: at }),
                },
                State::First | State::Next => {
                    if is_space(b) {
                    } else if b == b']' && self.state == State::First {
                        self.state = State::Closed;
                    } else {
                        let kind = match b {
                            b'{' | b'[' => {
                                self.closers.push(closer(b));
                                Kind::Nested
                            }
                            b'"' => Kind::String,
                            _ if is_scalar(b) => Kind::Scalar,
                            _ => return Err(SplitError::Malformed { offset: at }),
                        };
                        self.state = State::Value(kind);
                        start = Some(i);
                    }
                }
                State::Value(kind) => {
                    // A string element's opening quote was consumed when
                    // the element started, so it is inside its string.
                    let step = match kind {
                        Kind::Nested => self.nested(b, at)?,
                        Kind::String => self.string_element(b),
                        Kind::Scalar if is_scalar(b) => Step::Next,
                        Kind::Scalar if is_space(b) || b == b',' || b == b']' => Step::EndedBefore,
                        Kind::Scalar => return Err(SplitError::Malformed { offset: at }),
                    };
                    let end = match step {
                        Step::Next => None,
                        Step::EndsAt => Some(i + 1),
                        Step::EndedBefore => Some(i),
                    };
                    if let Some(end) = end {
                        // `start` is set whenever the state is `Value`.
                        let from = start.take().unwrap_or(0);
                        self.emit(&bytes[from..end], f)?;
                        self.state = State::After;
                        if matches!(step, Step::EndedBefore) {
                            // Scan the byte that ended the scalar as a separator.
                            continue;
                        }
                    }
                }
                State::After => match b {
                    b',' => self.state = State::Next,
                    b']' => self.state = State::Closed,
                    _ if is_space(b) => {}
                    _ => return Err(SplitError::Malformed { offset: at }),
                },
                State::Closed => {
                    if !is_space(b) {
                        return Err(SplitError::TrailingData { offset: at });
                    }
                }
                State::Failed => return Err(SplitError::Malformed { offset: at }),
            }
            i += 1;
        }
        if let Some(from) = start {
            let tail = &bytes[from..];
            if self.carry.len().saturating_add(tail.len()) > self.max_element_bytes {
                return Err(SplitError::ElementTooLarge {
                    limit: self.max_element_bytes,
                });
            }
            self.carry.extend_from_slice(tail);
        }
        Ok(())
    }

    /// One byte of an object or array element.
    fn nested<E>(&mut self, b: u8, at: u64) -> Result<Step, SplitError<E>> {
        if self.in_string {
            self.string_byte(b);
            return Ok(Step::Next);
        }
        match b {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.closers.push(closer(b)),
            b'}' | b']' => {
                if self.closers.pop() != Some(b) {
                    return Err(SplitError::Malformed { offset: at });
                }
                if self.closers.is_empty() {
                    return Ok(Step::EndsAt);
                }
            }
            _ => {}
        }
        Ok(Step::Next)
    }

    /// One byte of a string element (after its opening quote).
    fn string_element(&mut self, b: u8) -> Step {
        self.in_string = true;
        self.string_byte(b);
        if self.in_string {
            Step::Next
        } else {
            Step::EndsAt
        }
    }

    /// One byte inside a string: tracks escapes and the closing quote.
    fn string_byte(&mut self, b: u8) {
        if self.escaped {
            self.escaped = false;
        } else if b == b'\\' {
            self.escaped = true;
        } else if b == b'"' {
            self.in_string = false;
        }
    }

    /// Hands one complete element (its tail `rest`, after any carry) to `f`.
    fn emit<E>(
        &mut self,
        rest: &[u8],
        f: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), SplitError<E>> {
        let len = self.carry.len().saturating_add(rest.len());
        if len > self.max_element_bytes {
            return Err(SplitError::ElementTooLarge {
                limit: self.max_element_bytes,
            });
        }
        self.in_string = false;
        self.escaped = false;
        self.elements += 1;
        if self.carry.is_empty() {
            return f(rest).map_err(SplitError::Callback);
        }
        let mut element = std::mem::take(&mut self.carry);
        element.extend_from_slice(rest);
        let result = f(&element).map_err(SplitError::Callback);
        // Keep the allocation for the next cut element.
        element.clear();
        self.carry = element;
        result
    }
}

impl fmt::Debug for ArraySplitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The carry holds record data: show its size only.
        f.debug_struct("ArraySplitter")
            .field("state", &self.state)
            .field("elements", &self.elements)
            .field("carried_bytes", &self.carry.len())
            .finish_non_exhaustive()
    }
}

/// JSON white space (RFC 8259 §2).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Bytes a number or literal (`true`, `false`, `null`) may contain.
fn is_scalar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.')
}

/// The bracket that closes `open`.
fn closer(open: u8) -> u8 {
    if open == b'{' {
        b'}'
    } else {
        b']'
    }
}

#[cfg(test)]
mod tests;
