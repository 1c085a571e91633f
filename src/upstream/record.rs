//! Reading a patient's record and appending questions, through an upstream
//! doctor account that reaches the patient.
//!
//! The caller (the federation flows) has already checked the grant and
//! chosen the identity with
//! [`Accounts::identity_for_patient`](super::Accounts::identity_for_patient);
//! these functions only make the calls. A doctor session reaches all of
//! that doctor's patients, so the patient id passed here is the scope.

use bytes::Bytes;
use serde::Serialize;

use super::error::UpstreamError;
use super::identity::UpstreamIdentity;
use super::model::{
    Answer, MedicalProfile, NewQuestion, Patient, Question, Symptom, UpstreamId, VitalsMeasurement,
};
use super::ops;

/// A patient's record as a doctor account sees it. The parts are read one
/// after another (access.md has no snapshot read), so a write landing in
/// between may show in one part and not another.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// R20: identity and names, with the profile.
    pub patient: Patient,
    /// R21.
    pub profile: MedicalProfile,
    /// R22: every measurement.
    pub vitals: Vec<VitalsMeasurement>,
    /// R23: unarchived symptoms only.
    pub symptoms: Vec<Symptom>,
    /// R25: unarchived answers only (answers to `Vitals` questions never
    /// appear).
    pub answers: Vec<Answer>,
    /// R27: every question, answered or not.
    pub questions: Vec<Question>,
}

/// Reads the whole record (R20-R27, without the archiving writes R24/R26).
/// [`UpstreamError::NotLinked`] when `identity` does not reach the patient.
pub async fn read_record(
    identity: &UpstreamIdentity,
    patient: UpstreamId,
) -> Result<Record, UpstreamError> {
    // R20 first: an unlinked patient stops here, before five more 500s.
    let person = identity.run(ops::patient(patient)).await?;
    let (profile, vitals, symptoms, answers, questions) = tokio::try_join!(
        identity.run(ops::patient_profile(patient)),
        identity.run(ops::patient_vitals(patient)),
        identity.run(ops::patient_symptoms(patient)),
        identity.run(ops::patient_answers(patient)),
        identity.run(ops::patient_questions(patient)),
    )?;
    Ok(Record {
        patient: person,
        profile,
        vitals,
        symptoms,
        answers,
        questions,
    })
}

/// R28 with a body already whitelisted by the policy (checked again key by
/// key, then sent unchanged). The patient is notified upstream; the
/// question appears as asked by `identity`'s account, so attribution to the
/// remote doctor is mdgate's to keep.
pub async fn ask_question(
    identity: &UpstreamIdentity,
    patient: UpstreamId,
    whitelisted_body: Bytes,
) -> Result<(), UpstreamError> {
    identity
        .run(ops::ask_question_bytes(patient, whitelisted_body)?)
        .await
}

/// R28 from a typed question.
pub async fn ask_typed_question(
    identity: &UpstreamIdentity,
    patient: UpstreamId,
    question: &NewQuestion,
) -> Result<(), UpstreamError> {
    identity.run(ops::ask_question(patient, question)?).await
}
