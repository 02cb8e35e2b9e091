//! The one place that decides which gRPC status a use-case error becomes.

use tonic::{Code, Status};
use vmr_ports::driving::{ErrorKind, UseCaseError};

/// Maps a use-case error onto its status code; the message is the error's
/// sentence, and invalid input carries the field path in `vmr-field` metadata.
pub fn to_status(error: UseCaseError) -> Status {
    let code = match error.kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::DataLoss => Code::DataLoss,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Cancelled => Code::Cancelled,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::Unimplemented => Code::Unimplemented,
        ErrorKind::Internal => Code::Internal,
    };
    let mut status = Status::new(code, error.message);
    if let Some(field) = error.field
        && let Ok(value) = field.parse()
    {
        status.metadata_mut().insert("vmr-field", value);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_input_keeps_field_and_sentence() {
        let status = to_status(UseCaseError::invalid(
            "spec.diskFormat",
            "must be qcow2, raw or iso",
        ));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "spec.diskFormat: must be qcow2, raw or iso"
        );
        assert_eq!(
            status
                .metadata()
                .get("vmr-field")
                .and_then(|v| v.to_str().ok()),
            Some("spec.diskFormat")
        );
    }

    #[test]
    fn kinds_map_to_codes() {
        for (kind, code) in [
            (ErrorKind::NotFound, Code::NotFound),
            (ErrorKind::DataLoss, Code::DataLoss),
            (ErrorKind::FailedPrecondition, Code::FailedPrecondition),
            (ErrorKind::Unavailable, Code::Unavailable),
        ] {
            assert_eq!(to_status(UseCaseError::new(kind, "x")).code(), code);
        }
    }
}
