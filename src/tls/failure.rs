//! Handshake failures reduced to a fixed set of metric labels.
//!
//! tokio-rustls reports a failed handshake as an `io::Error` of kind
//! `InvalidData` wrapping the `rustls::Error`; the peer hanging up shows as
//! `UnexpectedEof`, and a caller's handshake timeout as `TimedOut`. The
//! label set is closed (see [`HandshakeFailure::ALL`]), so a metric keyed by
//! it has bounded cardinality whatever the peer sends.

use std::io;

use rustls::{AlertDescription, CertificateError, Error};

use super::verify::PeerVerifyError;

/// Why a TLS handshake failed, coarsely, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeFailure {
    /// The client sent no certificate where one is required.
    NoClientCert,
    /// The certificate does not chain to a trusted CA.
    UnknownIssuer,
    /// The certificate is malformed, badly signed, for the wrong purpose, or
    /// otherwise refused.
    BadCertificate,
    /// The certificate has expired.
    Expired,
    /// The certificate is not valid yet (often clock skew).
    NotYetValid,
    /// Only pins are trusted and the key is not pinned.
    NotPinned,
    /// No usable identity (SAN shape), or not the name we dialled.
    Identity,
    /// TLS protocol failure: bad messages, no common version, cipher suite
    /// or ALPN protocol, a decryption failure, a non-certificate alert.
    Protocol,
    /// The peer closed the connection during the handshake.
    Eof,
    /// The handshake did not finish in time.
    Timeout,
    /// Any other I/O error (reset, broken pipe).
    Io,
}

impl HandshakeFailure {
    /// Every label, e.g. to pre-register metric series at zero.
    pub const ALL: [HandshakeFailure; 11] = [
        Self::NoClientCert,
        Self::UnknownIssuer,
        Self::BadCertificate,
        Self::Expired,
        Self::NotYetValid,
        Self::NotPinned,
        Self::Identity,
        Self::Protocol,
        Self::Eof,
        Self::Timeout,
        Self::Io,
    ];

    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NoClientCert => "no_client_cert",
            Self::UnknownIssuer => "unknown_issuer",
            Self::BadCertificate => "bad_certificate",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::NotPinned => "not_pinned",
            Self::Identity => "identity",
            Self::Protocol => "protocol",
            Self::Eof => "eof",
            Self::Timeout => "timeout",
            Self::Io => "io",
        }
    }

    /// Classifies an error from a tokio-rustls `accept` or `connect`.
    pub fn from_io(err: &io::Error) -> Self {
        if let Some(tls) = err.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
            return Self::from_rustls(tls);
        }
        match err.kind() {
            io::ErrorKind::UnexpectedEof => Self::Eof,
            io::ErrorKind::TimedOut => Self::Timeout,
            _ => Self::Io,
        }
    }

    /// Classifies a rustls error, ours (raised by the verifier on this side)
    /// or the peer's (received as an alert).
    pub fn from_rustls(err: &Error) -> Self {
        match err {
            Error::NoCertificatesPresented => Self::NoClientCert,
            Error::InvalidCertificate(cert) => Self::from_certificate_error(cert),
            Error::AlertReceived(alert) => Self::from_alert(*alert),
            // rustls's error enums are non-exhaustive: anything else is a
            // protocol-level failure.
            _ => Self::Protocol,
        }
    }

    fn from_certificate_error(err: &CertificateError) -> Self {
        match err {
            CertificateError::UnknownIssuer => Self::UnknownIssuer,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => Self::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Self::NotYetValid
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Self::Identity
            }
            CertificateError::Other(other) => match other.0.downcast_ref::<PeerVerifyError>() {
                Some(PeerVerifyError::NotPinned) => Self::NotPinned,
                Some(
                    PeerVerifyError::Identity(_)
                    | PeerVerifyError::NameMismatch { .. }
                    | PeerVerifyError::NotDnsServerName,
                ) => Self::Identity,
                None => Self::BadCertificate,
            },
            _ => Self::BadCertificate,
        }
    }

    /// What the peer's verifier told us, as far as an alert can say.
    fn from_alert(alert: AlertDescription) -> Self {
        match alert {
            AlertDescription::CertificateRequired => Self::NoClientCert,
            AlertDescription::UnknownCA => Self::UnknownIssuer,
            AlertDescription::CertificateExpired => Self::Expired,
            AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateUnknown => Self::BadCertificate,
            _ => Self::Protocol,
        }
    }
}

/// The metric label for a failed handshake; see [`HandshakeFailure`].
pub fn handshake_failure_reason(err: &io::Error) -> &'static str {
    HandshakeFailure::from_io(err).as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use rustls::OtherError;

    fn wrapped(e: Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn labels_are_distinct_and_fixed() {
        let mut labels: Vec<_> = HandshakeFailure::ALL.iter().map(|f| f.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), HandshakeFailure::ALL.len());
    }

    #[test]
    fn classification_table() {
        let other = |e: PeerVerifyError| {
            Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        };
        let cases: Vec<(io::Error, &str)> = vec![
            (wrapped(Error::NoCertificatesPresented), "no_client_cert"),
            (
                wrapped(Error::InvalidCertificate(CertificateError::UnknownIssuer)),
                "unknown_issuer",
            ),
            (
                wrapped(Error::InvalidCertificate(CertificateError::BadSignature)),
                "bad_certificate",
            ),
            (
                wrapped(Error::InvalidCertificate(CertificateError::Expired)),
                "expired",
            ),
            (
                wrapped(Error::InvalidCertificate(CertificateError::NotValidYet)),
                "not_yet_valid",
            ),
            (wrapped(other(PeerVerifyError::NotPinned)), "not_pinned"),
            (
                wrapped(other(PeerVerifyError::Identity(
                    super::super::IdentityError::Wildcard,
                ))),
                "identity",
            ),
            (
                wrapped(Error::AlertReceived(AlertDescription::CertificateRequired)),
                "no_client_cert",
            ),
            (
                wrapped(Error::AlertReceived(AlertDescription::UnknownCA)),
                "unknown_issuer",
            ),
            (
                wrapped(Error::AlertReceived(AlertDescription::HandshakeFailure)),
                "protocol",
            ),
            (wrapped(Error::NoApplicationProtocol), "protocol"),
            (io::ErrorKind::UnexpectedEof.into(), "eof"),
            (io::ErrorKind::TimedOut.into(), "timeout"),
            (io::ErrorKind::ConnectionReset.into(), "io"),
            (io::Error::other("not rustls"), "io"),
        ];
        for (err, want) in cases {
            assert_eq!(handshake_failure_reason(&err), want, "{err:?}");
        }
    }
}
