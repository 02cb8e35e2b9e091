//! The daemon's Unix socket: never take over a live daemon's socket, replace
//! a stale one, and set the mode and group that decide who may call.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group};
use tokio::net::UnixListener;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("--socket {0}: another vmrd is serving on this socket")]
    InUse(PathBuf),
    #[error("--socket {0}: the path exists and is not a socket")]
    NotASocket(PathBuf),
    #[error("--socket-group: group '{0}' does not exist")]
    NoSuchGroup(String),
    #[error("--socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SocketError + '_ {
    move |source| SocketError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Binds the socket at `path` with `mode`, owned by `group` (when given, it
/// must exist; when not, the group `vmr` is used if it exists).
pub async fn bind(
    path: &Path,
    mode: u32,
    group: Option<&str>,
) -> Result<UnixListener, SocketError> {
    let gid = resolve_group(group)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(SocketError::NotASocket(path.to_path_buf()));
        }
        Ok(_) => match tokio::net::UnixStream::connect(path).await {
            Ok(_) => return Err(SocketError::InUse(path.to_path_buf())),
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::NotFound) => {
                tracing::info!(socket = %path.display(), "replacing a stale socket");
                std::fs::remove_file(path).map_err(io_error(path))?;
            }
            Err(e) => return Err(io_error(path)(e)),
        },
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(path)(e)),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_error(path))?;
    }
    let listener = UnixListener::bind(path).map_err(io_error(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_error(path))?;
    if let Some(gid) = gid {
        nix::unistd::chown(path, None, Some(gid))
            .map_err(|e| io_error(path)(std::io::Error::from(e)))?;
    }
    Ok(listener)
}

fn resolve_group(group: Option<&str>) -> Result<Option<Gid>, SocketError> {
    match group {
        Some(name) => match Group::from_name(name) {
            Ok(Some(g)) => Ok(Some(g.gid)),
            _ => Err(SocketError::NoSuchGroup(name.to_string())),
        },
        None => Ok(Group::from_name("vmr").ok().flatten().map(|g| g.gid)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sock");
        let first = bind(&path, 0o660, None).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        // Live: someone is listening.
        let err = bind(&path, 0o660, None).await.unwrap_err();
        assert!(matches!(err, SocketError::InUse(_)), "{err}");
        // Stale: the listener is gone, the file stays.
        drop(first);
        assert!(path.exists());
        bind(&path, 0o600, None).await.unwrap();
    }

    #[tokio::test]
    async fn a_regular_file_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-socket");
        std::fs::write(&path, b"data").unwrap();
        let err = bind(&path, 0o660, None).await.unwrap_err();
        assert!(matches!(err, SocketError::NotASocket(_)));
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
    }

    #[tokio::test]
    async fn an_unknown_group_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = bind(&dir.path().join("s"), 0o660, Some("no-such-group-vmr"))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--socket-group: group 'no-such-group-vmr' does not exist"
        );
    }
}
