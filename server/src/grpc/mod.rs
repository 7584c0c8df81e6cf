//! The gRPC edge: one file per service, each a thin adapter that parses the request into
//! typed values once, calls the domain, and maps the result (or the `KmsError`, through the
//! one mapping in `error`) back to protobuf. Nothing below this module knows protobuf.

pub mod audit;
pub mod events;
pub mod health;
pub mod hsm;
pub mod iam;
pub mod instances;
pub mod keys;
pub mod lifecycle;
pub mod policies;
pub mod registrations;
pub mod simulator;

use std::str::FromStr;
use std::sync::Arc;

use tonic::{Request, Status};

use crate::audit::{CallContext, Subject};
use crate::auth::{AuthFailure, Identity};
use crate::error::{FieldProblem, KmsError};
use crate::faults::layer::apply_to_subject;
use crate::kms::Kms;
use crate::kms::ids::{InstanceId, KeyRef, ParseError};

/// Parses a required field.
pub(crate) fn parse<T: FromStr<Err = ParseError>>(
    field: &'static str,
    value: &str,
) -> Result<T, KmsError> {
    if value.is_empty() {
        return Err(KmsError::field(field, FieldProblem::Missing));
    }
    value
        .parse()
        .map_err(|error| KmsError::malformed(field, error))
}

/// The caller the auth layer put into the request's extensions. A request without one never
/// passed the layer: it is refused as unauthenticated rather than served.
pub(crate) fn caller<T>(request: &Request<T>) -> Result<Identity, Status> {
    request
        .extensions()
        .get::<Identity>()
        .copied()
        .ok_or_else(|| KmsError::Unauthenticated(AuthFailure::Missing).into())
}

/// The context of a call (put there by the audit layer), for the edge to name what the
/// request targets and to add what it learns (key state, versions). `None` when no audit
/// layer runs.
pub(crate) fn context<T>(request: &Request<T>) -> Option<CallContext> {
    request.extensions().get::<CallContext>().cloned()
}

/// Names `key` as the call's subject and applies the fault rules that filter by it; the
/// edge calls it right after parsing the reference, before validating anything else.
pub(crate) async fn name_key(call: Option<&CallContext>, key: &KeyRef) -> Result<(), Status> {
    match call {
        Some(call) => apply_to_subject(Some(call), Subject::Key(key.clone())).await,
        None => Ok(()),
    }
}

/// Names `instance` as the call's subject (see [`name_key`]).
pub(crate) async fn name_instance(
    call: Option<&CallContext>,
    instance: InstanceId,
) -> Result<(), Status> {
    apply_to_subject(call, Subject::Instance(instance)).await
}

/// Runs a domain call that writes to the store on the blocking pool, so a flush never stalls
/// the async workers.
pub(crate) async fn blocking<T, F>(kms: &Arc<Kms>, call: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce(&Kms) -> Result<T, KmsError> + Send + 'static,
{
    let kms = Arc::clone(kms);
    tokio::task::spawn_blocking(move || call(&kms))
        .await
        .map_err(|_| Status::internal("the request's worker stopped unexpectedly"))?
        .map_err(Status::from)
}

/// Validates a page size: 0 means `default`; otherwise 1..=`max`.
pub(crate) fn page_size(
    field: &'static str,
    value: i32,
    default: usize,
    max: usize,
) -> Result<usize, KmsError> {
    match usize::try_from(value) {
        Ok(0) => Ok(default),
        Ok(n) if n <= max => Ok(n),
        _ => Err(KmsError::field(field, FieldProblem::OutOfRange)),
    }
}

/// Page tokens: an opaque encoding of the last item's creation time and id.
pub(crate) mod page_token {
    use uuid::Uuid;

    use crate::error::{FieldProblem, KmsError};

    /// Encodes a cursor.
    pub fn encode(time_millis: i64, id: &[u8; 16]) -> String {
        let mut bytes = time_millis.to_be_bytes().to_vec();
        bytes.extend_from_slice(id);
        hex::encode(bytes)
    }

    /// Decodes a cursor; empty means "from the start".
    pub fn decode(token: &str) -> Result<Option<(i64, Uuid)>, KmsError> {
        if token.is_empty() {
            return Ok(None);
        }
        let bad = || KmsError::field("page_token", FieldProblem::BadPageToken);
        let bytes = hex::decode(token).map_err(|_| bad())?;
        if bytes.len() != 24 {
            return Err(bad());
        }
        let mut time = [0u8; 8];
        time.copy_from_slice(&bytes[..8]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes[8..]);
        Ok(Some((i64::from_be_bytes(time), Uuid::from_bytes(id))))
    }
}

/// Checks a text field's length in characters.
pub(crate) fn text(
    field: &'static str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<String, KmsError> {
    let len = value.chars().count();
    if value.chars().any(forbidden_in_text) {
        Err(KmsError::field(field, FieldProblem::ForbiddenCharacter))
    } else if len == 0 && min > 0 {
        Err(KmsError::field(field, FieldProblem::Missing))
    } else if len < min {
        Err(KmsError::field(field, FieldProblem::TooShort))
    } else if len > max {
        Err(KmsError::field(field, FieldProblem::TooLong))
    } else {
        Ok(value.to_owned())
    }
}

/// Characters no name or description may hold: controls (C0, DEL, C1; NUL included), the
/// bidirectional-text controls that make text display other than it reads (U+061C, U+200E,
/// U+200F, U+202A..U+202E, U+2066..U+2069), and Unicode non-characters (U+FDD0..U+FDEF and
/// every U+xxFFFE / U+xxFFFF).
pub(crate) fn forbidden_in_text(c: char) -> bool {
    let code = u32::from(c);
    c.is_control()
        || matches!(code, 0x061C | 0x200E | 0x200F | 0x202A..=0x202E | 0x2066..=0x2069)
        || (0xFDD0..=0xFDEF).contains(&code)
        || code & 0xFFFE == 0xFFFE
}

/// Checks that the caller of `request` is an administrator (simulator and HSM administration).
pub(crate) fn administrator<T>(kms: &Kms, request: &Request<T>) -> Result<(), Status> {
    let who = caller(request)?;
    kms.authorize(&who, None, crate::kms::iam::Action::Administer)
        .map_err(Status::from)
}

#[cfg(test)]
mod tests {
    use super::forbidden_in_text;

    #[test]
    fn forbidden_characters() {
        for c in [
            '\0', '\n', '\u{7F}', '\u{85}', '\u{202E}', '\u{200F}', '\u{2069}',
        ] {
            assert!(forbidden_in_text(c), "{c:?}");
        }
        for c in [
            '\u{FFFE}',
            '\u{FFFF}',
            '\u{FDD0}',
            '\u{FDEF}',
            '\u{10FFFF}',
            '\u{1FFFE}',
        ] {
            assert!(forbidden_in_text(c), "{c:?}");
        }
        for c in [
            'a', ' ', 'ü', 'к', '🔑', '\u{FFFD}', '\u{FDCF}', '\u{FDF0}', '-', '_',
        ] {
            assert!(!forbidden_in_text(c), "{c:?}");
        }
    }
}
