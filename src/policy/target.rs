//! The raw request target → (patient federation id, route suffix), or the
//! reason it is refused.
//!
//! Nothing is decoded, folded or cleaned: a target is either already in the
//! one canonical form a route has, or refused. Browsers, Jetty, Javalin and
//! other proxies each normalise paths differently (percent-decoding, dot
//! segments, `//`, `;` parameters, trailing slashes, case), and every such
//! difference has been a bypass somewhere (the research notes, §6.4). The
//! checks run in this order, and the first one that fails is the reason:
//!
//! 1. length (at most [`MAX_TARGET_BYTES`]);
//! 2. bytes that are ambiguous wherever they appear: `%`, `\`, `;`, `#`,
//!    control bytes, non-ASCII, and characters a request target may not
//!    hold at all;
//! 3. structure: origin form, no empty segment (`//`), no trailing `/`, no
//!    segment made only of dots;
//! 4. the fixed segments `federation`, `v1`, `records` and the route name,
//!    byte for byte (a case variant is ambiguous, anything else is simply
//!    not a route);
//! 5. the federation id, a UUID in lower-case hyphenated form (another
//!    spelling of a UUID is ambiguous, anything else is not a route);
//! 6. the query: none of the routes takes one, so any `?` is refused.

use uuid::Uuid;

use super::route::RULES;
use super::{DenyReason, PathFlaw};

/// The longest request target looked at. The longest federation data path
/// is 69 bytes; anything much longer is refused before it is scanned.
pub const MAX_TARGET_BYTES: usize = 256;

/// The fixed segments before the federation id.
const FIXED: [&str; 3] = ["federation", "v1", "records"];

/// A target in canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Target<'a> {
    pub fid: Uuid,
    /// Empty, or `/name` for a sub-resource; always one of the table's
    /// federation suffixes.
    pub suffix: &'a str,
}

/// Parses the raw request target (path and query, as received).
pub(super) fn parse(target: &[u8]) -> Result<Target<'_>, DenyReason> {
    if target.len() > MAX_TARGET_BYTES {
        return Err(DenyReason::PathTooLong);
    }
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    };
    if let Some(flaw) = path.iter().find_map(|&b| byte_flaw(b)) {
        return Err(DenyReason::AmbiguousPath(flaw));
    }
    // Every byte is now printable ASCII, so this cannot fail; the `else`
    // arm keeps the function total without a panic.
    let Ok(path) = std::str::from_utf8(path) else {
        return Err(DenyReason::AmbiguousPath(PathFlaw::NonAscii));
    };
    let parsed = parse_path(path)?;
    if query.is_some() {
        return Err(DenyReason::QueryNotAllowed);
    }
    Ok(parsed)
}

/// Why one byte makes a path ambiguous wherever it stands, if it does.
fn byte_flaw(b: u8) -> Option<PathFlaw> {
    match b {
        b'%' => Some(PathFlaw::PercentEscape),
        b'\\' => Some(PathFlaw::Backslash),
        b';' => Some(PathFlaw::PathParameter),
        b'#' => Some(PathFlaw::Fragment),
        0x00..=0x1f | 0x7f => Some(PathFlaw::ControlByte),
        0x80..=0xff => Some(PathFlaw::NonAscii),
        // Not allowed anywhere in a request target (RFC 3986 §2, §3.3);
        // some servers accept and reinterpret them.
        b' ' | b'"' | b'<' | b'>' | b'^' | b'`' | b'{' | b'|' | b'}' => {
            Some(PathFlaw::InvalidCharacter)
        }
        _ => None,
    }
}

fn parse_path(path: &str) -> Result<Target<'_>, DenyReason> {
    let Some(rest) = path.strip_prefix('/') else {
        // Asterisk form, absolute form, or an empty target.
        return Err(DenyReason::AmbiguousPath(PathFlaw::NotOriginForm));
    };
    if rest.is_empty() {
        return Err(DenyReason::NotARoute);
    }
    // One pass over the segments: structural flaws anywhere come first,
    // and only the first five are kept (more is never a route).
    let mut kept = [""; 5];
    let mut count = 0;
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() {
            let flaw = if segments.peek().is_none() {
                PathFlaw::TrailingSlash
            } else {
                PathFlaw::EmptySegment
            };
            return Err(DenyReason::AmbiguousPath(flaw));
        }
        if segment.bytes().all(|b| b == b'.') {
            return Err(DenyReason::AmbiguousPath(PathFlaw::DotSegment));
        }
        if let Some(slot) = kept.get_mut(count) {
            *slot = segment;
        }
        count += 1;
    }
    let segments = &kept[..count.min(kept.len())];
    for (segment, fixed) in segments.iter().zip(FIXED) {
        fixed_segment(segment, fixed)?;
    }
    let (fid, name) = match (count, segments) {
        (4, [_, _, _, fid]) => (*fid, None),
        (5, [_, _, _, fid, name]) => (*fid, Some(*name)),
        _ => return Err(DenyReason::NotARoute),
    };
    let fid = federation_id(fid)?;
    let suffix = match name {
        None => "",
        Some(name) => {
            // The suffix is a slice of the path itself, which starts at the
            // `/` before the name.
            let suffix = &path[path.len() - name.len() - 1..];
            route_suffix(suffix)?
        }
    };
    Ok(Target { fid, suffix })
}

fn fixed_segment(segment: &str, fixed: &str) -> Result<(), DenyReason> {
    if segment == fixed {
        Ok(())
    } else if segment.eq_ignore_ascii_case(fixed) {
        Err(DenyReason::AmbiguousPath(PathFlaw::CaseVariant))
    } else {
        Err(DenyReason::NotARoute)
    }
}

/// A sub-resource suffix (`/vitals`) that some rule of the table has.
fn route_suffix(suffix: &str) -> Result<&str, DenyReason> {
    let mut case_variant = false;
    for rule in RULES.iter().filter(|r| !r.federation_suffix.is_empty()) {
        if rule.federation_suffix == suffix {
            return Ok(suffix);
        }
        case_variant |= rule.federation_suffix.eq_ignore_ascii_case(suffix);
    }
    Err(if case_variant {
        DenyReason::AmbiguousPath(PathFlaw::CaseVariant)
    } else {
        DenyReason::NotARoute
    })
}

/// The patient's federation id: exactly `8-4-4-4-12` lower-case hex digits.
fn federation_id(segment: &str) -> Result<Uuid, DenyReason> {
    let canonical = segment.len() == 36
        && segment.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => matches!(b, b'0'..=b'9' | b'a'..=b'f'),
        });
    match Uuid::try_parse(segment) {
        Ok(fid) if canonical => Ok(fid),
        // Upper case, no hyphens, `urn:uuid:`: the same patient spelt
        // another way.
        Ok(_) => Err(DenyReason::AmbiguousPath(PathFlaw::NonCanonicalId)),
        Err(_) => Err(DenyReason::NotARoute),
    }
}
