use proptest::prelude::*;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use super::*;

/// Small chunks keep the debug-build tests quick: C = 4096.
const LOG2: u8 = MIN_CHUNK_LOG2;
const C: usize = 1 << LOG2;
const PREFIX: [u8; PREFIX_LEN] = [1, 2, 3, 4, 5, 6, 7];

fn key() -> SealKey {
    SealKey::from_bytes(&[0x42; KEY_LEN]).expect("32 bytes")
}

/// Deterministic plaintext that differs from chunk to chunk.
fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

fn seal_in(key: &SealKey, plain: &[u8], piece: usize) -> Vec<u8> {
    let mut sealer = Sealer::with_prefix(key, PREFIX, LOG2);
    let mut out = Vec::new();
    for part in plain.chunks(piece.max(1)) {
        sealer.push(part, &mut out).expect("push");
    }
    sealer.finish(&mut out).expect("finish");
    out
}

fn seal(plain: &[u8]) -> Vec<u8> {
    seal_in(&key(), plain, usize::MAX)
}

/// Opens `cipher` pushed in pieces of `piece` bytes; the error of the first
/// refusing call.
fn open_in(
    key: &SealKey,
    cipher: &[u8],
    piece: usize,
) -> Result<(Vec<u8>, OpenSummary), SealError> {
    let mut opener = Opener::new(key);
    let mut out = Vec::new();
    for part in cipher.chunks(piece.max(1)) {
        opener.push(part, &mut out)?;
    }
    let summary = opener.finish(&mut out)?;
    Ok((out, summary))
}

fn open(cipher: &[u8]) -> Result<Vec<u8>, SealError> {
    open_in(&key(), cipher, usize::MAX).map(|(plain, _)| plain)
}

/// Sealed length of `len` plaintext bytes as the format doc gives it.
fn sealed_len(len: usize) -> usize {
    HEADER_LEN + len / C * (1 + C + TAG_LEN) + 5 + len % C + TAG_LEN
}

/// Offset of chunk `i`'s marker in a stream of full chunks.
fn chunk_at(i: usize) -> usize {
    HEADER_LEN + i * (1 + C + TAG_LEN)
}

#[test]
fn round_trips_at_chunk_edges_and_any_push_sizes() {
    let key = key();
    for len in [0, 1, C - 1, C, C + 1, 3 * C + 5] {
        let plain = plaintext(len);
        let whole = seal_in(&key, &plain, usize::MAX);
        assert_eq!(whole.len(), sealed_len(len), "len {len}");
        for piece in [1, 7, 1000, C + 3, usize::MAX] {
            // Same prefix, same key: the split must not change a byte.
            assert_eq!(
                seal_in(&key, &plain, piece),
                whole,
                "len {len} seal piece {piece}"
            );
            let (opened, summary) = open_in(&key, &whole, piece).expect("opens");
            assert_eq!(opened, plain, "len {len} open piece {piece}");
            assert_eq!(summary.plain_len, len as u64);
            assert_eq!(summary.cipher_len, whole.len() as u64);
        }
    }
}

#[test]
fn default_sealer_round_trips_with_random_prefixes() {
    let key = SealKey::generate();
    let plain = plaintext(3 * (1 << DEFAULT_CHUNK_LOG2) + 17);
    let seal_once = || {
        let mut sealer = Sealer::new(&key);
        let mut out = Vec::new();
        sealer.push(&plain, &mut out).expect("push");
        sealer.finish(&mut out).expect("finish");
        out
    };
    let (a, b) = (seal_once(), seal_once());
    assert_eq!(&a[..8], b"MDGSEAL1");
    assert_eq!(a[8], DEFAULT_CHUNK_LOG2);
    assert_ne!(a[9..16], b[9..16], "each stream draws its own prefix");
    assert_eq!(open_in(&key, &a, 5000).expect("opens").0, plain);
    assert_eq!(open_in(&key, &b, usize::MAX).expect("opens").0, plain);
}

#[test]
fn empty_plaintext_is_header_and_one_empty_last_chunk() {
    let sealed = seal(b"");
    assert_eq!(sealed.len(), 37);
    assert_eq!(&sealed[..8], b"MDGSEAL1");
    assert_eq!(sealed[8], LOG2);
    assert_eq!(sealed[9..16], PREFIX);
    assert_eq!(sealed[16..21], [0x01, 0, 0, 0, 0]);
    assert_eq!(open(&sealed).expect("opens"), b"");
}

#[test]
fn header_goes_out_with_the_first_push() {
    let mut sealer = Sealer::with_prefix(&key(), PREFIX, LOG2);
    let mut out = Vec::new();
    sealer.push(b"abc", &mut out).expect("push");
    assert_eq!(out.len(), HEADER_LEN);
    sealer.push(b"", &mut out).expect("push");
    assert_eq!(out.len(), HEADER_LEN);
}

/// Reads the format as the module doc describes it, with ring's AES-GCM:
/// an independent check of nonce, associated data and framing.
fn open_by_the_doc(key: &[u8; KEY_LEN], sealed: &[u8]) -> Vec<u8> {
    let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("key"));
    let (header, mut rest) = sealed.split_at(HEADER_LEN);
    assert_eq!(&header[..8], b"MDGSEAL1");
    let chunk = 1usize << header[8];
    let mut plain = Vec::new();
    for i in 0u32.. {
        let last = rest[0] == 0x01;
        let (frame, len) = if last {
            let len = u32::from_be_bytes(rest[1..5].try_into().expect("4 bytes"));
            (&rest[..5], len as usize)
        } else {
            assert_eq!(rest[0], 0x00);
            (&rest[..1], chunk)
        };
        let mut nonce = [0; 12];
        nonce[..7].copy_from_slice(&header[9..]);
        nonce[7..11].copy_from_slice(&i.to_be_bytes());
        nonce[11] = u8::from(last);
        let aad = [header, frame].concat();
        let body_end = frame.len() + len + TAG_LEN;
        let mut body = rest[frame.len()..body_end].to_vec();
        let opened = aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .expect("chunk opens with ring");
        plain.extend_from_slice(opened);
        rest = &rest[body_end..];
        if last {
            break;
        }
    }
    assert!(rest.is_empty());
    plain
}

/// Writes the format as the module doc describes it, with ring's AES-GCM,
/// ending with a full last chunk where the plaintext fills one (which this
/// module's writer never does, and readers must accept).
fn seal_by_the_doc(key: &[u8; KEY_LEN], plain: &[u8]) -> Vec<u8> {
    let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("key"));
    let mut sealed = header(LOG2, &PREFIX).to_vec();
    let mut chunks: Vec<&[u8]> = plain.chunks(C).collect();
    if chunks.is_empty() {
        chunks.push(b"");
    }
    let count = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let last = i + 1 == count;
        let frame = if last {
            [&[0x01][..], &(chunk.len() as u32).to_be_bytes()].concat()
        } else {
            vec![0x00]
        };
        let mut nonce = [0; 12];
        nonce[..7].copy_from_slice(&PREFIX);
        nonce[7..11].copy_from_slice(&(i as u32).to_be_bytes());
        nonce[11] = u8::from(last);
        let aad = [&sealed[..HEADER_LEN], &frame].concat();
        let mut body = chunk.to_vec();
        aead.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        )
        .expect("ring seals");
        sealed.extend_from_slice(&frame);
        sealed.extend_from_slice(&body);
    }
    sealed
}

#[test]
fn opener_reads_another_writer_with_a_full_last_chunk() {
    for len in [0, 5, C, 3 * C] {
        let plain = plaintext(len);
        let sealed = seal_by_the_doc(&[0x42; KEY_LEN], &plain);
        for piece in [1, 1000, usize::MAX] {
            let (opened, summary) = open_in(&key(), &sealed, piece).expect("opens");
            assert_eq!(opened, plain, "len {len} piece {piece}");
            assert_eq!(summary.cipher_len, sealed.len() as u64);
        }
        let appended = [&sealed[..], b"x"].concat();
        assert!(matches!(open(&appended), Err(SealError::TrailingData)));
        assert!(matches!(
            open(&sealed[..sealed.len() - 1]),
            Err(SealError::Truncated)
        ));
    }
}

#[test]
fn format_matches_the_module_doc() {
    for len in [0, 5, C, 2 * C + 9] {
        let plain = plaintext(len);
        assert_eq!(open_by_the_doc(&[0x42; KEY_LEN], &seal(&plain)), plain);
    }
}

#[test]
fn wrong_key_is_refused_at_the_first_chunk() {
    let sealed = seal(&plaintext(3 * C + 5));
    let other = SealKey::from_bytes(&[0x43; KEY_LEN]).expect("32 bytes");
    assert!(matches!(
        open_in(&other, &sealed, usize::MAX),
        Err(SealError::WrongKey)
    ));
    // The same with a one-chunk stream, where the first chunk is the last.
    assert!(matches!(
        open_in(&other, &seal(b"short"), 3),
        Err(SealError::WrongKey)
    ));
}

#[test]
fn tampered_chunks_are_damaged_with_their_index() {
    let sealed = seal(&plaintext(3 * C + 5));
    let flip = |at: usize| {
        let mut bad = sealed.clone();
        bad[at] ^= 0x01;
        open(&bad)
    };
    assert!(matches!(flip(chunk_at(0) + 1), Err(SealError::WrongKey)));
    assert!(matches!(
        flip(chunk_at(1) + 10),
        Err(SealError::Damaged { chunk: 1 })
    ));
    // The tag's last byte.
    assert!(matches!(
        flip(chunk_at(3) - 1),
        Err(SealError::Damaged { chunk: 2 })
    ));
    // The last chunk: its length, its ciphertext, its tag.
    assert!(matches!(
        flip(chunk_at(3) + 4),
        Err(SealError::Damaged { chunk: 3 })
    ));
    assert!(matches!(
        flip(chunk_at(3) + 6),
        Err(SealError::Damaged { chunk: 3 })
    ));
    assert!(matches!(
        flip(sealed.len() - 1),
        Err(SealError::Damaged { chunk: 3 })
    ));
}

#[test]
fn invalid_framing_is_damaged() {
    let sealed = seal(&plaintext(2 * C + 5));
    let mut bad = sealed.clone();
    bad[chunk_at(1)] = 0x02;
    assert!(matches!(open(&bad), Err(SealError::Damaged { chunk: 1 })));
    // A last chunk longer than a chunk.
    let mut bad = sealed.clone();
    bad[chunk_at(2) + 1..chunk_at(2) + 5].copy_from_slice(&(C as u32 + 1).to_be_bytes());
    assert!(matches!(open(&bad), Err(SealError::Damaged { chunk: 2 })));
    // A `more` chunk relabelled as the last one, with a valid length.
    let mut bad = sealed[..chunk_at(1)].to_vec();
    bad.extend_from_slice(&[0x01, 0, 0, 0x10, 0]);
    bad.extend_from_slice(&sealed[chunk_at(1) + 1..chunk_at(2)]);
    assert!(matches!(open(&bad), Err(SealError::Damaged { chunk: 1 })));
}

#[test]
fn reordered_duplicated_and_dropped_chunks_are_damaged() {
    let sealed = seal(&plaintext(4 * C + 5));
    let piece = |i: usize| &sealed[chunk_at(i)..chunk_at(i + 1)];
    let head = &sealed[..chunk_at(1)];
    let tail = &sealed[chunk_at(4)..];

    let swapped = [head, piece(2), piece(1), piece(3), tail].concat();
    assert!(matches!(
        open(&swapped),
        Err(SealError::Damaged { chunk: 1 })
    ));
    let duplicated = [head, piece(1), piece(1), piece(2), piece(3), tail].concat();
    assert!(matches!(
        open(&duplicated),
        Err(SealError::Damaged { chunk: 2 })
    ));
    let dropped = [head, piece(2), piece(3), tail].concat();
    assert!(matches!(
        open(&dropped),
        Err(SealError::Damaged { chunk: 1 })
    ));
    // The last chunk moved forward: its index is in its nonce too.
    let early_last = [head, tail].concat();
    assert!(matches!(
        open(&early_last),
        Err(SealError::Damaged { chunk: 1 })
    ));
    // Chunk 0 swapped with chunk 1 reads as a wrong key.
    let first_swapped = [
        &sealed[..HEADER_LEN],
        piece(1),
        piece(0),
        &sealed[chunk_at(2)..],
    ]
    .concat();
    assert!(matches!(open(&first_swapped), Err(SealError::WrongKey)));
}

#[test]
fn truncation_anywhere_is_truncated() {
    for len in [0, C, 3 * C + 5] {
        let sealed = seal(&plaintext(len));
        let mut cuts: Vec<usize> = (0..sealed.len()).step_by(97).collect();
        for i in 0..=len / C {
            let at = chunk_at(i);
            cuts.extend([at - 1, at, at + 1, at + 3, at + 5, at + 6]);
        }
        cuts.push(sealed.len() - 1);
        for cut in cuts.into_iter().filter(|&cut| cut < sealed.len()) {
            for piece in [1000, usize::MAX] {
                let opened = open_in(&key(), &sealed[..cut], piece);
                assert!(
                    matches!(opened, Err(SealError::Truncated)),
                    "len {len} cut {cut}: {opened:?}"
                );
            }
        }
    }
}

#[test]
fn bytes_after_the_last_chunk_are_trailing_data() {
    for len in [0, 7, C, 2 * C + 7] {
        let sealed = seal(&plaintext(len));
        for extra in [&b"\n"[..], &[0; 40], &seal(b"another stream")] {
            let appended = [&sealed[..], extra].concat();
            for piece in [3, usize::MAX] {
                let opened = open_in(&key(), &appended, piece);
                assert!(
                    matches!(opened, Err(SealError::TrailingData)),
                    "len {len} extra {}: {opened:?}",
                    extra.len()
                );
            }
        }
    }
}

#[test]
fn plaintext_is_released_only_after_its_tag() {
    let plain = plaintext(2 * C + 5);
    let mut sealed = seal(&plain);
    sealed[chunk_at(2) - 1] ^= 0x80; // chunk 1's tag
    let mut opener = Opener::new(&key());
    let mut out = Vec::new();
    let mut failed = None;
    for (i, byte) in sealed.iter().enumerate() {
        if let Err(e) = opener.push(std::slice::from_ref(byte), &mut out) {
            failed = Some((i, e));
            break;
        }
        // Chunk 1's plaintext never shows, not even partly.
        assert!(
            out.is_empty() || out.len() == C,
            "at byte {i}: {}",
            out.len()
        );
    }
    let (at, e) = failed.expect("refused");
    assert_eq!(at, chunk_at(2) - 1);
    assert!(matches!(e, SealError::Damaged { chunk: 1 }));
    assert_eq!(out, plain[..C]);
    // Spent: it repeats the refusal.
    assert!(matches!(
        opener.push(b"x", &mut out),
        Err(SealError::Damaged { chunk: 1 })
    ));
    assert!(matches!(
        opener.finish(&mut out),
        Err(SealError::Damaged { chunk: 1 })
    ));
}

#[test]
fn header_damage_is_refused() {
    let sealed = seal(&plaintext(2 * C + 5));
    let with = |at: usize, value: u8| {
        let mut bad = sealed.clone();
        bad[at] = value;
        open(&bad)
    };
    assert!(matches!(with(0, b'X'), Err(SealError::Header)));
    assert!(matches!(with(7, b'2'), Err(SealError::Header)));
    assert!(matches!(
        with(8, MIN_CHUNK_LOG2 - 1),
        Err(SealError::Header)
    ));
    assert!(matches!(
        with(8, MAX_CHUNK_LOG2 + 1),
        Err(SealError::Header)
    ));
    // A prefix byte: the nonces change, chunk 0 does not open.
    assert!(matches!(with(12, sealed[12] ^ 1), Err(SealError::WrongKey)));
    // Another valid chunk size: the framing no longer lines up.
    assert!(with(8, LOG2 + 1).is_err());
    // A one-chunk stream, where the length still fits: the header is
    // associated data, so chunk 0 does not open.
    let mut short = seal(b"hello");
    short[8] = LOG2 + 1;
    assert!(matches!(open(&short), Err(SealError::WrongKey)));
}

#[test]
fn other_data_is_not_sealed_and_short_input_is_truncated() {
    assert!(matches!(
        open(b"{\"resourceType\":\"Bundle\"}"),
        Err(SealError::Header)
    ));
    // Refused at the first wrong byte, before a header's worth arrived.
    let mut opener = Opener::new(&key());
    assert!(matches!(
        opener.push(b"MDGX", &mut Vec::new()),
        Err(SealError::Header)
    ));
    assert!(matches!(open(b""), Err(SealError::Truncated)));
    assert!(matches!(open(b"MDGSEAL1"), Err(SealError::Truncated)));
}

#[test]
fn counter_overflow_is_too_long() {
    let key = key();
    let mut sealer = Sealer::with_prefix(&key, PREFIX, LOG2);
    sealer.more_limit = 2;
    let mut out = Vec::new();
    sealer
        .push(&plaintext(2 * C), &mut out)
        .expect("two chunks fit");
    let before = out.len();
    assert!(matches!(
        sealer.push(&plaintext(C), &mut out),
        Err(SealError::TooLong)
    ));
    assert_eq!(out.len(), before, "no plaintext left in the output");
    assert!(matches!(
        sealer.push(b"", &mut out),
        Err(SealError::TooLong)
    ));
    assert!(matches!(sealer.finish(&mut out), Err(SealError::TooLong)));

    let sealed = seal(&plaintext(3 * C));
    let mut opener = Opener::new(&key);
    opener.more_limit = 2;
    assert!(matches!(
        opener.push(&sealed, &mut Vec::new()),
        Err(SealError::TooLong)
    ));
    // At the limit exactly, the last chunk still fits.
    let mut opener = Opener::new(&key);
    opener.more_limit = 3;
    let mut out = Vec::new();
    opener.push(&sealed, &mut out).expect("opens");
    assert_eq!(
        opener.finish(&mut out).expect("complete").plain_len,
        3 * C as u64
    );
}

#[test]
fn reasons_are_stable() {
    let io = std::io::Error::other("disk");
    let table = [
        (SealError::KeyLength { got: 3 }, "key_length"),
        (SealError::KeyEncoding, "key_encoding"),
        (SealError::Header, "not_sealed"),
        (SealError::WrongKey, "wrong_key"),
        (SealError::Damaged { chunk: 9 }, "damaged"),
        (SealError::Truncated, "truncated"),
        (SealError::TrailingData, "trailing_data"),
        (SealError::TooLong, "too_long"),
        (SealError::Io(io), "io"),
    ];
    for (error, reason) in table {
        assert_eq!(error.reason(), reason);
        assert_eq!(error.replay().reason(), reason);
    }
    assert!(SealError::WrongKey.to_string().contains("wrong key"));
}

#[test]
fn keys_parse_print_and_fingerprint() {
    let key = SealKey::from_bytes(&(0..32).collect::<Vec<u8>>()).expect("32 bytes");
    let text = key.to_b64url();
    assert_eq!(text, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8");
    assert_eq!(format!("{key:?}"), "SealKey(..)");
    for variant in [text.clone(), format!("{text}="), format!("  {text}\n")] {
        let parsed = SealKey::from_b64url(&variant).expect("parses");
        assert_eq!(parsed.fingerprint(), key.fingerprint(), "{variant:?}");
    }
    // Standard base64 is not base64url.
    let plus = "+".repeat(43);
    assert!(matches!(
        SealKey::from_b64url(&plus),
        Err(SealError::KeyEncoding)
    ));
    assert!(matches!(
        SealKey::from_b64url("a b"),
        Err(SealError::KeyEncoding)
    ));
    assert!(matches!(
        SealKey::from_b64url("AAEC"),
        Err(SealError::KeyLength { got: 3 })
    ));
    let long = URL_SAFE_NO_PAD.encode([7u8; 100]);
    assert!(matches!(
        SealKey::from_b64url(&long),
        Err(SealError::KeyLength { got: 100 })
    ));
    assert!(matches!(
        SealKey::from_bytes(&[0; 31]),
        Err(SealError::KeyLength { got: 31 })
    ));

    // The fingerprint, computed with another SHA-256.
    let mut labelled = b"mdgate seal key v1\0".to_vec();
    labelled.extend(0..32u8);
    let expected = ring::digest::digest(&ring::digest::SHA256, &labelled);
    assert_eq!(key.fingerprint()[..], *expected.as_ref());
    assert_ne!(key.fingerprint(), SealKey::generate().fingerprint());
}

fn splits() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..3 * C, 1..8)
}

/// `data` cut into pieces of the given sizes, cycling through them.
fn pieces<'a>(mut data: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    for size in sizes.iter().cycle() {
        if data.is_empty() {
            break;
        }
        let (piece, rest) = data.split_at((*size).min(data.len()));
        out.push(piece);
        data = rest;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_plaintext_any_splits_round_trip(
        plain in prop::collection::vec(any::<u8>(), 0..4 * C),
        seal_splits in splits(),
        open_splits in splits(),
    ) {
        let key = key();
        let mut sealer = Sealer::with_prefix(&key, PREFIX, LOG2);
        let mut sealed = Vec::new();
        for piece in pieces(&plain, &seal_splits) {
            sealer.push(piece, &mut sealed).expect("push");
        }
        sealer.finish(&mut sealed).expect("finish");
        prop_assert_eq!(&sealed, &seal(&plain));

        let mut opener = Opener::new(&key);
        let mut opened = Vec::new();
        for piece in pieces(&sealed, &open_splits) {
            opener.push(piece, &mut opened).expect("push");
        }
        let summary = opener.finish(&mut opened).expect("finish");
        prop_assert_eq!(&opened, &plain);
        prop_assert_eq!(summary.cipher_len, sealed.len() as u64);
    }

    #[test]
    fn any_flipped_byte_is_refused(
        plain in prop::collection::vec(any::<u8>(), 0..3 * C),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut sealed = seal(&plain);
        let at = at.index(sealed.len());
        sealed[at] ^= 1 << bit;
        prop_assert!(open(&sealed).is_err(), "flip at {} of {}", at, sealed.len());
    }

    #[test]
    fn any_cut_is_truncated_and_any_tail_trailing(
        plain in prop::collection::vec(any::<u8>(), 0..3 * C),
        at in any::<prop::sample::Index>(),
        tail in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let sealed = seal(&plain);
        let cut = at.index(sealed.len());
        prop_assert!(matches!(open(&sealed[..cut]), Err(SealError::Truncated)));
        let appended = [&sealed[..], &tail].concat();
        prop_assert!(matches!(open(&appended), Err(SealError::TrailingData)));
    }
}

#[tokio::test]
async fn streams_round_trip_through_a_pipe() {
    let key = key();
    let plain = plaintext(5 * (1 << DEFAULT_CHUNK_LOG2) + 1234);
    // A small pipe: both sides run at once, with many short writes.
    let (cipher_w, cipher_r) = tokio::io::duplex(4096);
    let mut opened = Vec::new();
    let (sealed, summary) = tokio::join!(
        seal_stream(&key, &plain[..], cipher_w),
        open_stream(&key, cipher_r, &mut opened),
    );
    let sealed = sealed.expect("seals");
    let summary = summary.expect("opens");
    assert_eq!(opened, plain);
    assert_eq!(sealed.plain_len, plain.len() as u64);
    assert_eq!(summary.plain_len, plain.len() as u64);
    assert_eq!(summary.cipher_len, sealed.cipher_len);
}

#[tokio::test]
async fn streams_round_trip_through_files() {
    let key = key();
    let dir = tempfile::tempdir().expect("tempdir");
    let cipher_path = dir.path().join("record.sealed");
    let plain = plaintext(3 * (1 << DEFAULT_CHUNK_LOG2));

    let file = tokio::fs::File::create(&cipher_path).await.expect("create");
    let sealed = seal_stream(&key, &plain[..], file).await.expect("seals");
    let on_disk = std::fs::read(&cipher_path).expect("read");
    assert_eq!(sealed.cipher_len, on_disk.len() as u64);
    assert_eq!(sealed.cipher_sha256[..], Sha256::digest(&on_disk)[..]);

    let file = tokio::fs::File::open(&cipher_path).await.expect("open");
    let mut opened = Vec::new();
    let summary = open_stream(&key, file, &mut opened).await.expect("opens");
    assert_eq!(opened, plain);
    assert_eq!(summary.cipher_len, sealed.cipher_len);

    let other = SealKey::generate();
    let file = tokio::fs::File::open(&cipher_path).await.expect("open");
    let refused = open_stream(&other, file, &mut Vec::new()).await;
    assert!(matches!(refused, Err(SealError::WrongKey)));
    let truncated = open_stream(&key, &on_disk[..on_disk.len() - 1], &mut Vec::new()).await;
    assert!(matches!(truncated, Err(SealError::Truncated)));
}
