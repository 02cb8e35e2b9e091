//! Turning I/O and opendal errors into `StoreError`s that say what the store
//! was doing, with a full disk always reported as `NoSpace`.

use std::io;

use vmr_ports::blobstore::StoreError;

/// Whether an error, or anything in its source chain, is a full disk or an
/// exhausted quota.
fn is_no_space(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(err) = current {
        if let Some(io_err) = err.downcast_ref::<io::Error>()
            && matches!(
                io_err.kind(),
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
            )
        {
            return true;
        }
        current = err.source();
    }
    false
}

/// An I/O error with what the store was doing, keeping the original as source.
#[derive(Debug, thiserror::Error)]
#[error("{doing}: {source}")]
struct Doing {
    doing: String,
    source: io::Error,
}

/// A local I/O error while `doing` something.
pub(crate) fn io_error(doing: &str, err: io::Error) -> StoreError {
    if is_no_space(&err) {
        return StoreError::NoSpace {
            doing: doing.to_owned(),
            source: Box::new(err),
        };
    }
    let kind = err.kind();
    StoreError::Io(io::Error::new(
        kind,
        Doing {
            doing: doing.to_owned(),
            source: err,
        },
    ))
}

/// An opendal error while `doing` something.
pub(crate) fn backend_error(doing: &str, err: opendal::Error) -> StoreError {
    if is_no_space(&err) {
        return StoreError::NoSpace {
            doing: doing.to_owned(),
            source: Box::new(err),
        };
    }
    StoreError::backend(doing, err)
}

/// An error from an opendal byte stream (opendal wraps its errors in
/// `io::Error` there).
pub(crate) fn stream_error(doing: &str, err: io::Error) -> StoreError {
    if err
        .get_ref()
        .is_some_and(|inner| inner.is::<opendal::Error>())
    {
        if is_no_space(&err) {
            return StoreError::NoSpace {
                doing: doing.to_owned(),
                source: Box::new(err),
            };
        }
        return StoreError::backend(doing, err);
    }
    io_error(doing, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_disk_is_no_space() {
        let err = io_error("writing blob", io::Error::from(io::ErrorKind::StorageFull));
        assert!(
            matches!(err, StoreError::NoSpace { ref doing, .. } if doing == "writing blob"),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("store is out of space: writing blob: "),
            "{err}"
        );
        assert!(
            std::error::Error::source(&err).is_some(),
            "the cause is kept"
        );
        let err = io_error("writing blob", io::Error::from_raw_os_error(28));
        assert!(matches!(err, StoreError::NoSpace { .. }), "{err}");
        let err = io_error(
            "writing blob",
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert!(matches!(err, StoreError::Io(_)), "{err}");
    }

    #[test]
    fn opendal_errors_keep_a_full_disk_visible() {
        let err = opendal::Error::new(opendal::ErrorKind::Unexpected, "write failed")
            .set_source(io::Error::from_raw_os_error(28));
        assert!(matches!(
            backend_error("x", err),
            StoreError::NoSpace { .. }
        ));
        let err = opendal::Error::new(opendal::ErrorKind::PermissionDenied, "denied");
        let err = backend_error("x", err);
        assert!(matches!(err, StoreError::Backend { .. }), "{err}");
        let cause = std::error::Error::source(&err).expect("the opendal error is kept");
        assert_eq!(
            cause
                .downcast_ref::<opendal::Error>()
                .map(opendal::Error::kind),
            Some(opendal::ErrorKind::PermissionDenied)
        );
    }
}
