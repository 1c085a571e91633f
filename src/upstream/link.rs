//! Linking a patient who has no doctor to the federation account, at the
//! moment they approve a grant.
//!
//! access.md links a patient to a doctor when the doctor consumes a code
//! the patient minted (§4). The link is permanent and exclusive, R19
//! answers an empty 200 whether or not it linked anything, and consuming a
//! code for a patient who already has a doctor fails *and burns the code*.
//! So [`Accounts::link_patient`] goes in this order, with the patient's own
//! live session (from their sign-in) and the federation account:
//!
//! 1. R4 (patient): who is the patient's doctor now? The federation account
//!    → nothing to do; an enrolled account → reachable through it; any other
//!    doctor → [`LinkError::HasAnotherDoctor`], before any code exists.
//! 2. R11 (patient): mint a code.
//! 3. R19 (federation account): consume it at once.
//! 4. R20 (federation account): verify. 200 is the only proof of a link;
//!    the 500 of an unlinked patient is diagnosed with R4 again (another
//!    doctor got there first, or the code was not taken).
//!
//! The code is never logged, stored or returned.

use super::error::UpstreamError;
use super::model::{Doctor, UpstreamId};
use super::ops::{self, CodeConsumption};
use super::reach::Accounts;
use super::sign_in::PatientSession;

/// How a patient came to be reachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOutcome {
    /// Linked to the federation account now, and verified.
    Linked,
    /// The federation account already was the patient's doctor.
    AlreadyLinked,
    /// The patient's doctor is an enrolled account, which reaches them.
    ViaEnrolled { username: String },
}

/// Why a patient could not be linked. Each variant is a different thing to
/// tell the patient.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// mdgate has no `[upstream.federation_account]`.
    #[error("no federation account is configured")]
    NoFederationAccount,
    /// The patient already has a doctor mdgate holds no account of. Nothing
    /// was attempted: access.md allows one doctor per patient and would
    /// only have burnt a code.
    #[error("the patient already has another doctor ({doctor_username})")]
    HasAnotherDoctor {
        doctor_username: String,
        /// The doctor's name as access.md shows it to the patient.
        doctor_name: String,
    },
    /// The patient's upstream session is gone (401, usually an upstream
    /// restart): they must sign in again.
    #[error("the patient's access.md session has ended; they must sign in again")]
    PatientSessionExpired,
    /// The code was handed to access.md but no link resulted (it expired
    /// first, or was refused); the patient still has no doctor.
    #[error("access.md did not link the patient (the code was {})", if *refused { "refused" } else { "not taken" })]
    NotLinked {
        /// R19 answered 500 (rather than its usual empty 200).
        refused: bool,
    },
    /// The federation account cannot act (its login is refused, or it is
    /// not a doctor).
    #[error("the federation account cannot act: {0}")]
    FederationAccount(#[source] UpstreamError),
    /// access.md is down or answered something unexpected.
    #[error("linking failed: {0}")]
    Upstream(#[source] UpstreamError),
}

impl Accounts {
    /// Makes `patient` reachable through the federation account (see the
    /// module docs for the steps). On success the reach map knows the
    /// patient.
    pub async fn link_patient(&self, patient: &PatientSession) -> Result<LinkOutcome, LinkError> {
        let federation = self.federation().ok_or(LinkError::NoFederationAccount)?;
        let federation_index = self
            .index_of(federation)
            .ok_or(LinkError::NoFederationAccount)?;
        let federation_id = federation
            .upstream_id()
            .await
            .map_err(LinkError::FederationAccount)?;
        let patient_id = patient.upstream_id();

        // 1. Who is the patient's doctor now?
        if let Some(doctor) = patient.doctor().await.map_err(patient_error)? {
            return self.already_has(patient_id, &doctor, federation_id);
        }

        // 2. and 3. Mint and consume at once.
        let code = patient.mint_code().await.map_err(patient_error)?;
        let consume = ops::consume_code(&code.code).map_err(LinkError::Upstream)?;
        drop(code);
        let consumed = federation.run(consume).await.map_err(federation_error)?;

        // 4. Verify: only R20's 200 proves the link.
        match federation.run(ops::patient(patient_id)).await {
            Ok(linked) if linked.id() == patient_id => {
                self.record(patient_id, federation_index);
                tracing::info!(
                    upstream.patient_id = %patient_id,
                    upstream.account = %federation.username(),
                    "patient linked to the federation account"
                );
                Ok(LinkOutcome::Linked)
            }
            Ok(_) => Err(LinkError::Upstream(UpstreamError::UnexpectedBody {
                route: ops::R20,
                what: "the verification returned another patient",
            })),
            Err(UpstreamError::NotLinked { .. }) => {
                // Someone else may have linked the patient in between.
                match patient.doctor().await.map_err(patient_error)? {
                    Some(doctor) => self.already_has(patient_id, &doctor, federation_id),
                    None => Err(LinkError::NotLinked {
                        refused: consumed == CodeConsumption::Refused,
                    }),
                }
            }
            Err(e) => Err(federation_error(e)),
        }
    }

    /// The patient has `doctor`: reachable through one of our accounts, or
    /// out of reach.
    fn already_has(
        &self,
        patient: UpstreamId,
        doctor: &Doctor,
        federation_id: UpstreamId,
    ) -> Result<LinkOutcome, LinkError> {
        if doctor.id == federation_id {
            if let Some(index) = self.federation().and_then(|f| self.index_of(f)) {
                self.record(patient, index);
            }
            return Ok(LinkOutcome::AlreadyLinked);
        }
        let enrolled = self
            .enrolled()
            .iter()
            .find(|identity| match identity.account() {
                Some(account) => account.id == doctor.id,
                // Not logged in yet: the username is the next best key.
                None => doctor.username.as_deref() == Some(identity.username()),
            });
        if let Some(identity) = enrolled {
            if let Some(index) = self.index_of(identity) {
                self.record(patient, index);
            }
            return Ok(LinkOutcome::ViaEnrolled {
                username: identity.username().to_owned(),
            });
        }
        let doctor_name = doctor.display_name();
        Err(LinkError::HasAnotherDoctor {
            doctor_username: doctor
                .username
                .clone()
                .unwrap_or_else(|| doctor_name.clone()),
            doctor_name,
        })
    }
}

fn patient_error(e: UpstreamError) -> LinkError {
    match e {
        UpstreamError::Unauthorized { .. } => LinkError::PatientSessionExpired,
        other => LinkError::Upstream(other),
    }
}

fn federation_error(e: UpstreamError) -> LinkError {
    match e {
        UpstreamError::CredentialsRejected { .. }
        | UpstreamError::DuplicateUsername { .. }
        | UpstreamError::Unauthorized { .. } => LinkError::FederationAccount(e),
        other => LinkError::Upstream(other),
    }
}
