//! The chunked streaming AEAD a patient's record travels under: server1
//! seals the record bundle with a key the patient's browser made, server2
//! stores the ciphertext and opens it, as a stream, once the patient hands
//! the key over. Memory stays at about one chunk whatever the record's size.
//!
//! The construction is STREAM (Hoang, Reyhanitabar, Rogaway, Vizár,
//! "Online Authenticated-Encryption and its Nonce-Reuse
//! Misuse-Resistance", 2015) over AES-256-GCM, as the RustCrypto `aead`
//! crate implements it (`StreamBE32`); this module only frames the chunks
//! and decides what each refusal means. It owns:
//!
//! * [`SealKey`]: the patient's 32-byte key (WebCrypto `AES-GCM`, 256 bits,
//!   exported `raw`, carried as base64url), and its [`SealKey::fingerprint`];
//! * [`Sealer`] and [`Opener`]: sans-IO state machines, fed bytes in any
//!   sizes, appending output to a caller's buffer;
//! * [`seal_stream`] and [`open_stream`]: the same over tokio readers and
//!   writers.
//!
//! # Format, version 1
//!
//! ```text
//! stream = header *more last
//! header = "MDGSEAL1" log2 prefix          ; 16 bytes
//! more   = %x00 ciphertext tag             ; 1 + C + 16 bytes
//! last   = %x01 len ciphertext tag         ; 1 + 4 + len + 16 bytes
//! ```
//!
//! * `log2` (1 byte) fixes the plaintext chunk size `C = 2^log2` bytes;
//!   readers accept 12 to 20 (4 KiB to 1 MiB). This writer uses 16
//!   (64 KiB).
//! * `prefix` (7 bytes) is random for every stream (the OS generator).
//! * Each `more` chunk holds exactly `C` plaintext bytes. The single `last`
//!   chunk holds `len` plaintext bytes, `len` a big-endian `u32` in
//!   `0..=C`. This writer seals a chunk as soon as it has `C` bytes, so its
//!   `last` chunk holds fewer than `C` (none for an empty plaintext or a
//!   multiple of `C`); readers accept a full one too.
//! * Chunk `i` (from 0; the `last` chunk counts) is AES-256-GCM with
//!   - nonce = `prefix` ‖ `i` as a big-endian `u32` ‖ one byte, `0x01` for
//!     the `last` chunk and `0x00` otherwise (STREAM's BE32 layout);
//!   - associated data = `header` ‖ the chunk's own framing bytes before its
//!     ciphertext (`%x00`, or `%x01` ‖ `len`), so every byte of the stream
//!     is authenticated and the header cannot be changed;
//!   - `tag` the 16-byte GCM tag after the ciphertext.
//! * At most 2^32 − 1 `more` chunks (the counter cannot wrap; the `last`
//!   chunk may take index 2^32 − 1): 256 TiB at 64 KiB chunks.
//!
//! An empty plaintext seals to 37 bytes: header, `%x01`, `len` = 0, tag.
//!
//! The framing bytes are the one addition to STREAM as the paper writes
//! it, where the last segment is whatever precedes end of input: with
//! them a reader knows which chunk is the last *before* reading it, so a
//! cut in the middle of a chunk, bytes appended after a short last chunk,
//! and a damaged chunk are told apart exactly rather than all looking like
//! a last chunk whose tag fails.
//!
//! # Refusals
//!
//! Each has its own [`SealError`] variant and [`SealError::reason`]:
//!
//! * the header is not `MDGSEAL1` with a `log2` in range: `not_sealed`;
//! * chunk 0 fails its tag: `wrong_key`. AES-GCM cannot tell a wrong key
//!   from damage to that chunk; comparing [`SealKey::fingerprint`] with
//!   the one recorded at sealing time can;
//! * a later chunk fails its tag, or any chunk's framing is invalid (a
//!   marker byte other than 0 or 1, `len` > `C`): `damaged`, with the
//!   chunk's index. Reordered, duplicated or dropped chunks land here,
//!   since each chunk's index is in its nonce;
//! * the input ends before the `last` chunk is complete: `truncated`;
//! * bytes after the `last` chunk: `trailing_data`;
//! * more `more` chunks than the counter allows: `too_long`.
//!
//! An [`Opener`] releases a chunk's plaintext only once its tag verified,
//! but earlier chunks are released before later ones are read: output is
//! not the whole record until [`Opener::finish`] (or [`open_stream`])
//! returns `Ok`.
//!
//! # Keys
//!
//! One key per transfer. The random prefix keeps a key that seals a few
//! streams safe as well (nonces collide only after about 2^28 streams),
//! but nothing here is designed for long-lived keys. AES-GCM is not key
//! committing; the fingerprint (SHA-256 over `"mdgate seal key v1\0"` ‖
//! key) is what identifies a key without revealing it.

use std::fmt;
use std::mem;

use aes_gcm::aead::stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::aead::{self, Buffer, KeyInit};
use aes_gcm::Aes256Gcm;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, DecodeSliceError, Engine as _};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Length of a [`SealKey`] in bytes (AES-256).
pub const KEY_LEN: usize = 32;
/// `log2` of the plaintext chunk size this writer uses: 64 KiB.
pub const DEFAULT_CHUNK_LOG2: u8 = 16;
/// Smallest chunk size readers accept, as `log2` (4 KiB).
pub const MIN_CHUNK_LOG2: u8 = 12;
/// Largest chunk size readers accept, as `log2` (1 MiB): bounds a reader's
/// memory.
pub const MAX_CHUNK_LOG2: u8 = 20;
/// Length of the stream header.
pub const HEADER_LEN: usize = 16;
/// The first 8 bytes of every sealed stream, version 1.
pub const MAGIC: [u8; 8] = *b"MDGSEAL1";
/// Length of the random STREAM nonce prefix in the header.
pub const PREFIX_LEN: usize = 7;
/// Length of the GCM tag that ends every chunk.
pub const TAG_LEN: usize = 16;

/// Framing byte of a full chunk that more chunks follow.
const MORE: u8 = 0x00;
/// Framing byte of the last chunk, which a 4-byte length follows.
const LAST: u8 = 0x01;
/// Framing of a `more` chunk: its marker.
const MORE_FRAME: usize = 1;
/// Framing of the `last` chunk: marker and length.
const LAST_FRAME: usize = 5;
/// Domain separation for [`SealKey::fingerprint`].
const FINGERPRINT_LABEL: &[u8] = b"mdgate seal key v1\0";
/// STREAM's BE32 counter refuses a `more` chunk at index `u32::MAX` (that
/// index stays free for the last chunk), so this many `more` chunks fit.
const MAX_MORE_CHUNKS: u64 = u32::MAX as u64;
/// Read size of [`seal_stream`] and [`open_stream`].
const IO_BUF_LEN: usize = 64 * 1024;

/// Base64url that takes the key with or without its `=` padding.
const B64URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a key was refused or a stream could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key is not 32 bytes long.
    #[error("a seal key is {KEY_LEN} bytes, this one is {got}")]
    KeyLength { got: usize },
    /// The key text is not base64url.
    #[error("the seal key is not base64url")]
    KeyEncoding,
    /// Not a sealed stream, or an unsupported version or chunk size.
    #[error("not a sealed stream (or an unsupported version or chunk size)")]
    Header,
    /// The first chunk does not open.
    #[error("the first chunk does not open: wrong key (or the first chunk is damaged)")]
    WrongKey,
    /// A chunk after the first fails its tag, or a chunk's framing is
    /// invalid.
    #[error("chunk {chunk} does not authenticate: the ciphertext was tampered with or corrupted")]
    Damaged { chunk: u64 },
    /// The input ended before the last chunk was complete.
    #[error("the sealed stream ends before its last chunk")]
    Truncated,
    /// Bytes follow the last chunk.
    #[error("bytes follow the last chunk of the sealed stream")]
    TrailingData,
    /// The stream would need more chunks than the nonce counter allows.
    #[error("the stream is too long: the chunk counter would overflow")]
    TooLong,
    /// Reading or writing failed ([`seal_stream`], [`open_stream`]).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl SealError {
    /// Stable machine-readable reason, for logs, metrics and API answers.
    pub fn reason(&self) -> &'static str {
        match self {
            SealError::KeyLength { .. } => "key_length",
            SealError::KeyEncoding => "key_encoding",
            SealError::Header => "not_sealed",
            SealError::WrongKey => "wrong_key",
            SealError::Damaged { .. } => "damaged",
            SealError::Truncated => "truncated",
            SealError::TrailingData => "trailing_data",
            SealError::TooLong => "too_long",
            SealError::Io(_) => "io",
        }
    }

    /// The same refusal again, for a spent [`Sealer`] or [`Opener`] that
    /// is pushed to after failing.
    fn replay(&self) -> SealError {
        match self {
            SealError::KeyLength { got } => SealError::KeyLength { got: *got },
            SealError::KeyEncoding => SealError::KeyEncoding,
            SealError::Header => SealError::Header,
            SealError::WrongKey => SealError::WrongKey,
            SealError::Damaged { chunk } => SealError::Damaged { chunk: *chunk },
            SealError::Truncated => SealError::Truncated,
            SealError::TrailingData => SealError::TrailingData,
            SealError::TooLong => SealError::TooLong,
            SealError::Io(e) => SealError::Io(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}

/// The patient's key. `Debug` never shows the bytes, and they are
/// overwritten with zeros on drop (the AES key schedules built from it in
/// [`Sealer`] and [`Opener`] are not).
pub struct SealKey([u8; KEY_LEN]);

impl SealKey {
    /// A fresh key from the OS generator.
    pub fn generate() -> SealKey {
        let mut key = [0; KEY_LEN];
        OsRng.fill_bytes(&mut key);
        SealKey(key)
    }

    /// The key from its raw bytes, exactly [`KEY_LEN`] of them.
    pub fn from_bytes(bytes: &[u8]) -> Result<SealKey, SealError> {
        let key = <[u8; KEY_LEN]>::try_from(bytes)
            .map_err(|_| SealError::KeyLength { got: bytes.len() })?;
        Ok(SealKey(key))
    }

    /// The key from base64url (what the browser sends), with or without
    /// padding; surrounding whitespace is ignored.
    pub fn from_b64url(text: &str) -> Result<SealKey, SealError> {
        let text = text.trim();
        // Decode onto the stack, not into a Vec the allocator would keep.
        let mut raw = [0u8; 2 * KEY_LEN];
        let decoded = B64URL_LENIENT.decode_slice(text, &mut raw);
        let result = match decoded {
            Ok(n) => SealKey::from_bytes(&raw[..n]),
            // Too long for the buffer: report the length the text encodes.
            Err(DecodeSliceError::OutputSliceTooSmall) => Err(SealError::KeyLength {
                got: text.trim_end_matches('=').len() * 3 / 4,
            }),
            Err(DecodeSliceError::DecodeError(_)) => Err(SealError::KeyEncoding),
        };
        wipe(&mut raw);
        result
    }

    /// The key as base64url without padding.
    pub fn to_b64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// SHA-256 over `"mdgate seal key v1\0"` and the key: lets a server
    /// tell "this is not the key the transfer was sealed with" without
    /// learning the key.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(FINGERPRINT_LABEL);
        hash.update(self.0);
        hash.finalize().into()
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0.into())
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl Drop for SealKey {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Overwrites `bytes` with zeros; `black_box` keeps the compiler from
/// dropping the stores as dead (best effort without `unsafe`).
fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

/// The bytes of `vec` from `start` on, as the AEAD's in-place buffer: a
/// chunk is sealed or opened where it lands in the caller's output, with no
/// copy in between.
struct Tail<'a> {
    vec: &'a mut Vec<u8>,
    start: usize,
}

impl AsRef<[u8]> for Tail<'_> {
    fn as_ref(&self) -> &[u8] {
        &self.vec[self.start..]
    }
}

impl AsMut<[u8]> for Tail<'_> {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.vec[self.start..]
    }
}

impl Buffer for Tail<'_> {
    fn extend_from_slice(&mut self, other: &[u8]) -> aead::Result<()> {
        self.vec.extend_from_slice(other);
        Ok(())
    }

    fn truncate(&mut self, len: usize) {
        self.vec.truncate(self.start + len);
    }
}

/// The header of a stream with this chunk size and nonce prefix.
fn header(chunk_log2: u8, prefix: &[u8; PREFIX_LEN]) -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    header[..MAGIC.len()].copy_from_slice(&MAGIC);
    header[MAGIC.len()] = chunk_log2;
    header[MAGIC.len() + 1..].copy_from_slice(prefix);
    header
}

/// Push-style encryptor (sans-IO): plaintext in any sizes in, ciphertext
/// appended to the caller's buffer. Holds at most one chunk of plaintext.
pub struct Sealer {
    stream: EncryptorBE32<Aes256Gcm>,
    /// Associated data of a `more` chunk: header ‖ `%x00`. The first
    /// [`HEADER_LEN`] bytes are the header itself.
    more_aad: [u8; HEADER_LEN + MORE_FRAME],
    header_sent: bool,
    chunk_len: usize,
    /// Plaintext of the chunk being filled, always shorter than a chunk.
    pending: Vec<u8>,
    /// `more` chunks sealed so far.
    chunks: u64,
    /// [`MAX_MORE_CHUNKS`], lowered by tests.
    more_limit: u64,
    failed: bool,
}

impl Sealer {
    /// A sealer with a random nonce prefix and 64 KiB chunks.
    pub fn new(key: &SealKey) -> Sealer {
        let mut prefix = [0; PREFIX_LEN];
        OsRng.fill_bytes(&mut prefix);
        Sealer::with_prefix(key, prefix, DEFAULT_CHUNK_LOG2)
    }

    /// A sealer with a given nonce prefix and chunk size (tests, known
    /// answers). Never reuse a prefix with the same key.
    ///
    /// # Panics
    ///
    /// If `chunk_log2` is outside [`MIN_CHUNK_LOG2`]`..=`[`MAX_CHUNK_LOG2`],
    /// which readers would refuse.
    pub fn with_prefix(key: &SealKey, prefix: [u8; PREFIX_LEN], chunk_log2: u8) -> Sealer {
        assert!(
            (MIN_CHUNK_LOG2..=MAX_CHUNK_LOG2).contains(&chunk_log2),
            "chunk_log2 {chunk_log2} outside {MIN_CHUNK_LOG2}..={MAX_CHUNK_LOG2}"
        );
        let mut more_aad = [MORE; HEADER_LEN + MORE_FRAME];
        more_aad[..HEADER_LEN].copy_from_slice(&header(chunk_log2, &prefix));
        let chunk_len = 1 << chunk_log2;
        Sealer {
            stream: EncryptorBE32::from_aead(key.cipher(), &prefix.into()),
            more_aad,
            header_sent: false,
            chunk_len,
            pending: Vec::with_capacity(chunk_len),
            chunks: 0,
            more_limit: MAX_MORE_CHUNKS,
            failed: false,
        }
    }

    /// Seals `plaintext`, appending whatever ciphertext is ready to `out`:
    /// the header on the first call, then every chunk completed. Fails only
    /// with [`SealError::TooLong`], after which the sealer is spent.
    pub fn push(&mut self, mut plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
        if self.failed {
            return Err(SealError::TooLong);
        }
        self.send_header(out);
        let full = (self.pending.len() + plaintext.len()) / self.chunk_len;
        out.reserve(full * (MORE_FRAME + self.chunk_len + TAG_LEN));

        if !self.pending.is_empty() {
            let take = plaintext.len().min(self.chunk_len - self.pending.len());
            self.pending.extend_from_slice(&plaintext[..take]);
            plaintext = &plaintext[take..];
            if self.pending.len() == self.chunk_len {
                let chunk = mem::take(&mut self.pending);
                let sealed = self.seal_more(&chunk, out);
                self.pending = chunk;
                self.pending.clear();
                sealed?;
            }
        }
        // Full chunks straight from the caller's slice into `out`.
        while plaintext.len() >= self.chunk_len {
            let (chunk, rest) = plaintext.split_at(self.chunk_len);
            self.seal_more(chunk, out)?;
            plaintext = rest;
        }
        self.pending.extend_from_slice(plaintext);
        Ok(())
    }

    /// Seals what is left as the last chunk and appends it (and the header,
    /// if nothing was pushed) to `out`.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), SealError> {
        if self.failed {
            return Err(SealError::TooLong);
        }
        self.send_header(out);
        // pending < chunk_len <= 2^20, so the length fits a u32.
        let len = self.pending.len() as u32;
        let mut aad = [0; HEADER_LEN + LAST_FRAME];
        aad[..HEADER_LEN].copy_from_slice(&self.more_aad[..HEADER_LEN]);
        aad[HEADER_LEN] = LAST;
        aad[HEADER_LEN + 1..].copy_from_slice(&len.to_be_bytes());
        out.reserve(LAST_FRAME + self.pending.len() + TAG_LEN);
        out.extend_from_slice(&aad[HEADER_LEN..]);
        let start = out.len();
        out.extend_from_slice(&self.pending);
        self.stream
            .encrypt_last_in_place(&aad, &mut Tail { vec: out, start })
            // AES-GCM refuses only inputs beyond 2^36 bytes, and a chunk
            // is at most 2^20; the last chunk may use index u32::MAX.
            .map_err(|_| SealError::TooLong)
    }

    fn send_header(&mut self, out: &mut Vec<u8>) {
        if !self.header_sent {
            out.extend_from_slice(&self.more_aad[..HEADER_LEN]);
            self.header_sent = true;
        }
    }

    /// Seals one full chunk as a `more` chunk onto `out`.
    fn seal_more(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
        if self.chunks >= self.more_limit {
            self.failed = true;
            return Err(SealError::TooLong);
        }
        out.push(MORE);
        let start = out.len();
        out.extend_from_slice(chunk);
        let sealed = self
            .stream
            .encrypt_next_in_place(&self.more_aad, &mut Tail { vec: out, start });
        if sealed.is_err() {
            // Only the counter can refuse (checked above, so unreachable);
            // leave no plaintext behind in `out` all the same.
            out.truncate(start - MORE_FRAME);
            self.failed = true;
            return Err(SealError::TooLong);
        }
        self.chunks += 1;
        Ok(())
    }
}

/// What an [`Opener`] expects next.
enum Stage {
    Header,
    Marker,
    LastLen,
    /// A chunk's ciphertext and tag, `need` bytes in all.
    Body {
        last: bool,
        need: usize,
    },
    Done,
    Failed(SealError),
}

/// The AEAD before the header brings the nonce prefix, then the stream.
enum Cipher {
    Waiting(Aes256Gcm),
    Ready(DecryptorBE32<Aes256Gcm>),
    Spent,
}

/// Push-style decryptor (sans-IO): ciphertext in any sizes in, plaintext
/// appended to the caller's buffer. A chunk's plaintext is released only
/// after its tag verified; holds at most one chunk of ciphertext.
pub struct Opener {
    stage: Stage,
    cipher: Cipher,
    /// Associated data of the current chunk: header ‖ framing bytes.
    aad: [u8; HEADER_LEN + LAST_FRAME],
    chunk_len: usize,
    /// Bytes of the header, of `len`, or of a chunk that arrived split.
    pending: Vec<u8>,
    /// Chunks opened so far: the index of the next one.
    chunks: u64,
    plain_len: u64,
    cipher_len: u64,
    /// [`MAX_MORE_CHUNKS`], lowered by tests.
    more_limit: u64,
}

impl Opener {
    /// An opener for a stream sealed with `key`.
    pub fn new(key: &SealKey) -> Opener {
        Opener {
            stage: Stage::Header,
            cipher: Cipher::Waiting(key.cipher()),
            aad: [0; HEADER_LEN + LAST_FRAME],
            chunk_len: 0,
            pending: Vec::with_capacity(HEADER_LEN),
            chunks: 0,
            plain_len: 0,
            cipher_len: 0,
            more_limit: MAX_MORE_CHUNKS,
        }
    }

    /// Opens `ciphertext`, appending the plaintext of every chunk it
    /// completes and that verifies to `out`. After an error the opener is
    /// spent: later calls repeat it.
    pub fn push(&mut self, ciphertext: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
        if let Stage::Failed(e) = &self.stage {
            return Err(e.replay());
        }
        let pushed = self.consume(ciphertext, out);
        if let Err(e) = &pushed {
            self.stage = Stage::Failed(e.replay());
        }
        pushed
    }

    /// Ends the stream: [`SealError::Truncated`] unless the last chunk
    /// came and opened. Appends nothing with format version 1 (push
    /// releases the last chunk as soon as it verifies); `out` keeps the
    /// call shaped like [`Sealer::finish`].
    pub fn finish(self, _out: &mut Vec<u8>) -> Result<OpenSummary, SealError> {
        match self.stage {
            Stage::Done => Ok(OpenSummary {
                plain_len: self.plain_len,
                cipher_len: self.cipher_len,
            }),
            Stage::Failed(e) => Err(e),
            Stage::Header | Stage::Marker | Stage::LastLen | Stage::Body { .. } => {
                Err(SealError::Truncated)
            }
        }
    }

    fn consume(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
        self.cipher_len += input.len() as u64;
        out.reserve(input.len());
        while !input.is_empty() {
            match self.stage {
                Stage::Header => {
                    let take = input.len().min(HEADER_LEN - self.pending.len());
                    self.pending.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    // Refuse other data at its first wrong byte.
                    let seen = self.pending.len().min(MAGIC.len());
                    if self.pending[..seen] != MAGIC[..seen] {
                        return Err(SealError::Header);
                    }
                    if self.pending.len() == HEADER_LEN {
                        self.start()?;
                    }
                }
                Stage::Marker => {
                    let marker = input[0];
                    input = &input[1..];
                    self.aad[HEADER_LEN] = marker;
                    self.stage = match marker {
                        MORE if self.chunks >= self.more_limit => return Err(SealError::TooLong),
                        MORE => Stage::Body {
                            last: false,
                            need: self.chunk_len + TAG_LEN,
                        },
                        LAST => Stage::LastLen,
                        _ => return Err(self.damaged()),
                    };
                }
                Stage::LastLen => {
                    let take = input.len().min(LAST_FRAME - 1 - self.pending.len());
                    self.pending.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if let Ok(len) = <[u8; 4]>::try_from(self.pending.as_slice()) {
                        self.pending.clear();
                        self.aad[HEADER_LEN + 1..].copy_from_slice(&len);
                        let len = u32::from_be_bytes(len) as usize;
                        if len > self.chunk_len {
                            return Err(self.damaged());
                        }
                        self.stage = Stage::Body {
                            last: true,
                            need: len + TAG_LEN,
                        };
                    }
                }
                Stage::Body { last, need } => {
                    if self.pending.is_empty() && input.len() >= need {
                        // The whole chunk is in this slice: no staging copy.
                        let (body, rest) = input.split_at(need);
                        self.open(body, last, out)?;
                        input = rest;
                    } else {
                        let take = input.len().min(need - self.pending.len());
                        self.pending.extend_from_slice(&input[..take]);
                        input = &input[take..];
                        if self.pending.len() == need {
                            let body = mem::take(&mut self.pending);
                            let opened = self.open(&body, last, out);
                            self.pending = body;
                            self.pending.clear();
                            opened?;
                        }
                    }
                }
                Stage::Done => return Err(SealError::TrailingData),
                Stage::Failed(ref e) => return Err(e.replay()),
            }
        }
        Ok(())
    }

    /// Checks the complete header in `pending` and sets up the stream.
    fn start(&mut self) -> Result<(), SealError> {
        let header =
            <[u8; HEADER_LEN]>::try_from(self.pending.as_slice()).map_err(|_| SealError::Header)?;
        let chunk_log2 = header[MAGIC.len()];
        if !(MIN_CHUNK_LOG2..=MAX_CHUNK_LOG2).contains(&chunk_log2) {
            return Err(SealError::Header);
        }
        let mut prefix = [0; PREFIX_LEN];
        prefix.copy_from_slice(&header[MAGIC.len() + 1..]);
        let Cipher::Waiting(aead) = mem::replace(&mut self.cipher, Cipher::Spent) else {
            // Only the header stage calls this, once, with the cipher waiting.
            return Err(SealError::Header);
        };
        self.cipher = Cipher::Ready(DecryptorBE32::from_aead(aead, &prefix.into()));
        self.aad[..HEADER_LEN].copy_from_slice(&header);
        self.chunk_len = 1 << chunk_log2;
        self.pending.clear();
        self.pending.reserve(self.chunk_len + TAG_LEN);
        self.stage = Stage::Marker;
        Ok(())
    }

    /// Opens one chunk (`ciphertext ‖ tag`) onto the end of `out`; on
    /// failure `out` is left as it was.
    fn open(&mut self, body: &[u8], last: bool, out: &mut Vec<u8>) -> Result<(), SealError> {
        let start = out.len();
        out.extend_from_slice(body);
        let mut tail = Tail { vec: out, start };
        let opened = if last {
            match mem::replace(&mut self.cipher, Cipher::Spent) {
                Cipher::Ready(stream) => stream.decrypt_last_in_place(&self.aad, &mut tail),
                // Chunks come only after start() readied the stream.
                Cipher::Waiting(_) | Cipher::Spent => Err(aead::Error),
            }
        } else {
            match &mut self.cipher {
                Cipher::Ready(stream) => {
                    stream.decrypt_next_in_place(&self.aad[..HEADER_LEN + MORE_FRAME], &mut tail)
                }
                Cipher::Waiting(_) | Cipher::Spent => Err(aead::Error),
            }
        };
        if opened.is_err() {
            out.truncate(start);
            return Err(if self.chunks == 0 {
                SealError::WrongKey
            } else {
                SealError::Damaged { chunk: self.chunks }
            });
        }
        self.plain_len += (out.len() - start) as u64;
        self.chunks += 1;
        self.stage = if last { Stage::Done } else { Stage::Marker };
        Ok(())
    }

    fn damaged(&self) -> SealError {
        SealError::Damaged { chunk: self.chunks }
    }
}

/// What [`seal_stream`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    pub plain_len: u64,
    pub cipher_len: u64,
    /// SHA-256 of the whole ciphertext, header included.
    pub cipher_sha256: [u8; 32],
}

/// What an [`Opener`] or [`open_stream`] read and released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenSummary {
    pub plain_len: u64,
    pub cipher_len: u64,
}

/// Seals `reader` to `writer` with a fresh nonce prefix and 64 KiB chunks,
/// hashing the ciphertext on the way. Memory: one chunk plus the I/O
/// buffers. Flushes `writer` at the end but does not shut it down.
pub async fn seal_stream<R, W>(
    key: &SealKey,
    mut reader: R,
    mut writer: W,
) -> Result<Sealed, SealError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut sealer = Sealer::new(key);
    let mut input = vec![0; IO_BUF_LEN];
    let mut out = Vec::with_capacity(2 * IO_BUF_LEN);
    let mut hash = Sha256::new();
    let mut plain_len = 0u64;
    let mut cipher_len = 0u64;
    loop {
        let n = reader.read(&mut input).await?;
        if n == 0 {
            break;
        }
        plain_len += n as u64;
        out.clear();
        sealer.push(&input[..n], &mut out)?;
        hash.update(&out);
        cipher_len += out.len() as u64;
        writer.write_all(&out).await?;
    }
    out.clear();
    sealer.finish(&mut out)?;
    hash.update(&out);
    cipher_len += out.len() as u64;
    writer.write_all(&out).await?;
    writer.flush().await?;
    Ok(Sealed {
        plain_len,
        cipher_len,
        cipher_sha256: hash.finalize().into(),
    })
}

/// Opens `reader` to `writer`. Memory: one chunk plus the I/O buffers.
/// Plaintext reaches `writer` chunk by chunk as each verifies, so on an
/// error `writer` holds a verified but incomplete prefix: treat the output
/// as the record only when this returns `Ok`. Flushes `writer` at the end
/// but does not shut it down.
pub async fn open_stream<R, W>(
    key: &SealKey,
    mut reader: R,
    mut writer: W,
) -> Result<OpenSummary, SealError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut opener = Opener::new(key);
    let mut input = vec![0; IO_BUF_LEN];
    let mut out = Vec::with_capacity(2 * IO_BUF_LEN);
    loop {
        let n = reader.read(&mut input).await?;
        if n == 0 {
            break;
        }
        out.clear();
        let opened = opener.push(&input[..n], &mut out);
        writer.write_all(&out).await?;
        opened?;
    }
    out.clear();
    let summary = opener.finish(&mut out)?;
    writer.write_all(&out).await?;
    writer.flush().await?;
    Ok(summary)
}

#[cfg(test)]
mod tests;
