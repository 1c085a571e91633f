//! The transfer's states on each side and the moves allowed between them
//! (docs/protocol.md § Transfer). Pure: the service persists a state
//! before it acknowledges anything that depends on it, and asks
//! [`can_move`] first, so a replayed or late message can never move a
//! transfer backwards.
//!
//! ```text
//! source (old home)   approved ──▶ exported ──▶ delivered ──▶ moved
//!                         └───────────┴────────────┴──▶ failed
//!
//! target (new home)   requested ──▶ approved ──▶ receiving ──▶ received
//!                         │             └───────────┴──▶ failed
//!                         └──▶ denied | voided | expired | cancelled | failed
//!                     received ──▶ importing ──▶ imported ──▶ confirmed
//! ```
//!
//! `requested`, `denied`, `voided`, `expired` and `cancelled` of the
//! source are the access request's own states (the transfer row exists
//! from approval on). `moved` and `confirmed` are the successful ends.

use crate::store::TransferSide;

/// The states of the old home, in order.
pub mod source {
    pub const APPROVED: &str = "approved";
    pub const EXPORTED: &str = "exported";
    pub const DELIVERED: &str = "delivered";
    pub const MOVED: &str = "moved";
    pub const FAILED: &str = "failed";
}

/// The states of the new home, in order.
pub mod target {
    pub const REQUESTED: &str = "requested";
    pub const APPROVED: &str = "approved";
    pub const RECEIVING: &str = "receiving";
    pub const RECEIVED: &str = "received";
    pub const IMPORTING: &str = "importing";
    pub const IMPORTED: &str = "imported";
    pub const CONFIRMED: &str = "confirmed";
    pub const DENIED: &str = "denied";
    pub const VOIDED: &str = "voided";
    pub const EXPIRED: &str = "expired";
    pub const CANCELLED: &str = "cancelled";
    pub const FAILED: &str = "failed";
}

/// Whether `state` is an end on `side` (nothing moves it again).
pub fn is_final(side: TransferSide, state: &str) -> bool {
    match side {
        TransferSide::Source => matches!(state, source::MOVED | source::FAILED),
        TransferSide::Target => matches!(
            state,
            target::CONFIRMED
                | target::DENIED
                | target::VOIDED
                | target::EXPIRED
                | target::CANCELLED
                | target::FAILED
        ),
    }
}

/// Whether `state` is a state of `side` at all.
pub fn is_state(side: TransferSide, state: &str) -> bool {
    let all: &[&str] = match side {
        TransferSide::Source => &[
            source::APPROVED,
            source::EXPORTED,
            source::DELIVERED,
            source::MOVED,
            source::FAILED,
        ],
        TransferSide::Target => &[
            target::REQUESTED,
            target::APPROVED,
            target::RECEIVING,
            target::RECEIVED,
            target::IMPORTING,
            target::IMPORTED,
            target::CONFIRMED,
            target::DENIED,
            target::VOIDED,
            target::EXPIRED,
            target::CANCELLED,
            target::FAILED,
        ],
    };
    all.contains(&state)
}

/// Whether a transfer on `side` may go from `from` to `to`. Staying put is
/// not a move (callers treat a repeat as already done).
pub fn can_move(side: TransferSide, from: &str, to: &str) -> bool {
    use source as s;
    use target as t;
    if !is_state(side, from) || !is_state(side, to) || from == to || is_final(side, from) {
        return false;
    }
    match side {
        TransferSide::Source => matches!(
            (from, to),
            (s::APPROVED, s::EXPORTED)
                | (s::EXPORTED, s::DELIVERED)
                | (s::DELIVERED, s::MOVED)
                | (s::APPROVED | s::EXPORTED | s::DELIVERED, s::FAILED)
        ),
        TransferSide::Target => matches!(
            (from, to),
            (
                t::REQUESTED,
                t::APPROVED | t::DENIED | t::VOIDED | t::EXPIRED | t::CANCELLED | t::FAILED
            )
                // The ciphertext can overtake the decision message: only
                // the old home sends it, and only after the approval.
                | (t::REQUESTED, t::RECEIVING | t::RECEIVED)
                | (t::APPROVED, t::RECEIVING | t::RECEIVED | t::FAILED)
                | (t::RECEIVING, t::RECEIVED | t::FAILED)
                | (t::RECEIVED, t::IMPORTING)
                | (t::IMPORTING, t::IMPORTED)
                | (t::IMPORTED, t::CONFIRMED)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE_PATH: [&str; 4] = [
        source::APPROVED,
        source::EXPORTED,
        source::DELIVERED,
        source::MOVED,
    ];
    const TARGET_PATH: [&str; 7] = [
        target::REQUESTED,
        target::APPROVED,
        target::RECEIVING,
        target::RECEIVED,
        target::IMPORTING,
        target::IMPORTED,
        target::CONFIRMED,
    ];

    #[test]
    fn the_happy_paths_are_allowed_step_by_step() {
        for w in SOURCE_PATH.windows(2) {
            assert!(can_move(TransferSide::Source, w[0], w[1]), "{w:?}");
        }
        for w in TARGET_PATH.windows(2) {
            assert!(can_move(TransferSide::Target, w[0], w[1]), "{w:?}");
        }
    }

    #[test]
    fn nothing_moves_backwards_or_skips_a_persisted_step() {
        for (i, from) in SOURCE_PATH.iter().enumerate() {
            for (j, to) in SOURCE_PATH.iter().enumerate() {
                assert_eq!(
                    can_move(TransferSide::Source, from, to),
                    j == i + 1,
                    "{from} -> {to}"
                );
            }
        }
        for (i, from) in TARGET_PATH.iter().enumerate() {
            for (j, to) in TARGET_PATH.iter().enumerate() {
                // A short delivery may finish in one message (approved ->
                // received), and the ciphertext may overtake the decision
                // (requested -> receiving | received).
                let skip = (*from == target::APPROVED && *to == target::RECEIVED)
                    || (*from == target::REQUESTED
                        && (*to == target::RECEIVING || *to == target::RECEIVED));
                assert_eq!(
                    can_move(TransferSide::Target, from, to),
                    j == i + 1 || skip,
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn ends_are_final_and_unknown_states_never_move() {
        for end in [source::MOVED, source::FAILED] {
            assert!(is_final(TransferSide::Source, end));
            assert!(!can_move(TransferSide::Source, end, source::APPROVED));
        }
        for end in [target::CONFIRMED, target::DENIED, target::FAILED] {
            assert!(is_final(TransferSide::Target, end));
            assert!(!can_move(TransferSide::Target, end, target::REQUESTED));
        }
        assert!(!can_move(TransferSide::Source, "approved", "imported"));
        assert!(!can_move(TransferSide::Target, "bogus", target::APPROVED));
        // Once the patient started the import, only finishing it is left:
        // a failure cannot undo an account already created upstream.
        assert!(!can_move(
            TransferSide::Target,
            target::IMPORTING,
            target::FAILED
        ));
    }
}
