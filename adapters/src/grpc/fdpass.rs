//! The descriptor side channel: on vmrd's own socket, a connection that
//! starts with [`MAGIC`] instead of the HTTP/2 preface hands the daemon an
//! open file (SCM_RIGHTS) and gets back a one-shot token for `ImportImage`.
//!
//! The caller opened the file with its own rights; the daemon only ever reads
//! that descriptor and is never given a path. A token is 128 random bits,
//! bound to the uid of the process that passed the file (SO_PEERCRED), valid
//! once and for [`TOKEN_TTL`]. See docs/security.md.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recv, recvmsg};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::UnixStream;
use vmr_ports::driving::{ErrorKind, UseCaseError};

/// The first bytes of a side-channel connection (an HTTP/2 connection starts
/// with `PRI `, so the two never mix).
pub const MAGIC: &[u8; 8] = b"VMRFD/1\n";
/// How long a token stays valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(30);
/// Passed files held at once; more is refused (each holds a descriptor).
const MAX_PENDING: usize = 64;
/// How long a new connection may take to show its first bytes.
const CLASSIFY_PATIENCE: Duration = Duration::from_secs(10);

/// What a new connection on the socket is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Anything that does not start with [`MAGIC`]: tonic's to judge.
    Grpc,
    SideChannel,
    /// Closed (or silent) before saying anything.
    Gone,
}

/// Looks at a connection's first bytes without consuming them.
pub(crate) async fn classify(stream: &UnixStream) -> Kind {
    let look = async {
        let mut buf = [0u8; MAGIC.len()];
        loop {
            if stream.readable().await.is_err() {
                return Kind::Gone;
            }
            let peeked = stream.try_io(Interest::READABLE, || {
                recv(stream.as_raw_fd(), &mut buf, MsgFlags::MSG_PEEK).map_err(io::Error::from)
            });
            match peeked {
                Ok(0) => return Kind::Gone,
                Ok(n) if buf[..n] != MAGIC[..n] => return Kind::Grpc,
                Ok(n) if n == MAGIC.len() => return Kind::SideChannel,
                // A prefix of the magic so far: the rest is on its way, and
                // peeking again would see the same bytes at once.
                Ok(_) => tokio::time::sleep(Duration::from_millis(2)).await,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Kind::Gone,
            }
        }
    };
    tokio::time::timeout(CLASSIFY_PATIENCE, look)
        .await
        .unwrap_or(Kind::Gone)
}

/// One passed file waiting for its `ImportImage`.
#[derive(Debug)]
struct Pending {
    uid: u32,
    file: File,
    size: u64,
    expires: Instant,
}

/// The files passed over the side channel, by token.
#[derive(Debug, Default)]
pub struct PassedDisks {
    pending: Mutex<HashMap<String, Pending>>,
}

/// A passed file claimed by its token.
#[derive(Debug)]
pub struct PassedDisk {
    pub file: File,
    pub size: u64,
}

impl PassedDisks {
    /// Keeps `file` for `uid` and returns its token.
    pub(crate) fn insert(
        &self,
        uid: u32,
        file: File,
        size: u64,
        now: Instant,
    ) -> Result<String, String> {
        let token = random_token().map_err(|e| format!("cannot make a token: {e}"))?;
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.retain(|_, p| p.expires > now);
        if pending.len() >= MAX_PENDING {
            return Err(format!(
                "{MAX_PENDING} passed disks are already waiting for their import; try again later"
            ));
        }
        pending.insert(
            token.clone(),
            Pending {
                uid,
                file,
                size,
                expires: now + TOKEN_TTL,
            },
        );
        Ok(token)
    }

    /// Claims the file of `token` for the caller `uid`. The token is spent
    /// by any attempt, so a guessed or stolen one works at most never.
    pub fn take(
        &self,
        token: &str,
        uid: Option<u32>,
        now: Instant,
    ) -> Result<PassedDisk, UseCaseError> {
        let refused = |reason: &str| {
            let mut error =
                UseCaseError::new(ErrorKind::PermissionDenied, format!("disk_token: {reason}"));
            error.field = Some("disk_token".to_owned());
            error
        };
        let entry = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(token);
        let Some(entry) = entry else {
            return Err(refused(
                "unknown or already used token (a token is valid for one import)",
            ));
        };
        if entry.expires <= now {
            return Err(refused(&format!(
                "the token expired ({} s after the disk was passed)",
                TOKEN_TTL.as_secs()
            )));
        }
        if uid != Some(entry.uid) {
            return Err(refused("the token was issued to another user"));
        }
        Ok(PassedDisk {
            file: entry.file,
            size: entry.size,
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

fn random_token() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// Serves one side-channel connection: receives the descriptor sent with
/// the magic, checks it, and answers `OK <token>` or `ERR <reason>`.
pub(crate) async fn serve_side_channel(mut stream: UnixStream, disks: &PassedDisks) {
    let answer = match receive(&stream, disks).await {
        Ok(token) => {
            tracing::debug!("disk descriptor received");
            format!("OK {token}\n")
        }
        Err(reason) => {
            tracing::info!(%reason, "descriptor side channel refused");
            format!("ERR {reason}\n")
        }
    };
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn receive(stream: &UnixStream, disks: &PassedDisks) -> Result<String, String> {
    let uid = stream
        .peer_cred()
        .map_err(|e| format!("cannot read the caller's credentials: {e}"))?
        .uid();
    let fds = loop {
        stream
            .readable()
            .await
            .map_err(|e| format!("reading the descriptor: {e}"))?;
        match stream.try_io(Interest::READABLE, || receive_fds(stream)) {
            Ok(fds) => break fds,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("reading the descriptor: {e}")),
        }
    };
    let mut fds = fds.into_iter();
    let (Some(fd), None) = (fds.next(), fds.next()) else {
        return Err("send exactly one descriptor with the magic line".to_owned());
    };
    let file = File::from(fd);
    let size = check_readable_file(&file)?;
    disks.insert(uid, file, size, Instant::now())
}

/// Reads the magic with its ancillary data; every descriptor received is
/// owned (and closed when dropped) whatever happens next.
fn receive_fds(stream: &UnixStream) -> io::Result<Vec<OwnedFd>> {
    let mut magic = [0u8; MAGIC.len()];
    let mut iov = [IoSliceMut::new(&mut magic)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let message = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for raw in raw {
                // SAFETY: SCM_RIGHTS installed these descriptors in this
                // process just now; nothing else owns them.
                #[allow(unsafe_code)]
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
    }
    if message.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(io::Error::other("too many descriptors"));
    }
    Ok(fds)
}

/// A passed descriptor must be a regular file open for reading; returns its
/// length.
fn check_readable_file(file: &File) -> Result<u64, String> {
    let metadata = file
        .metadata()
        .map_err(|e| format!("cannot inspect the passed descriptor: {e}"))?;
    let kind = metadata.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a pipe"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        return Err(format!(
            "the passed descriptor is {what}, not a regular file"
        ));
    }
    let flags = fcntl(file, FcntlArg::F_GETFL)
        .map_err(|e| format!("cannot inspect the passed descriptor: {e}"))?;
    let flags = OFlag::from_bits_truncate(flags);
    if flags.contains(OFlag::O_PATH) || (flags & OFlag::O_ACCMODE) == OFlag::O_WRONLY {
        return Err("the passed descriptor is not open for reading".to_owned());
    }
    if metadata.len() == 0 {
        return Err("the passed file is empty".to_owned());
    }
    Ok(metadata.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut named = tempfile::NamedTempFile::new().expect("temp");
        std::io::Write::write_all(&mut named, bytes).expect("write");
        let file = File::open(named.path()).expect("open");
        (named, file)
    }

    #[test]
    fn a_token_is_one_shot_and_bound_to_its_uid() {
        let disks = PassedDisks::default();
        let now = Instant::now();
        let (_keep, file) = file_with(b"disk");
        let token = disks.insert(1000, file, 4, now).expect("insert");
        assert_eq!(token.len(), 32, "128 bits in hex");

        let err = disks.take(&token, Some(1001), now).expect_err("other uid");
        assert_eq!(err.kind, ErrorKind::PermissionDenied);
        assert!(err.message.contains("another user"), "{}", err.message);
        // The failed attempt spent it: even its owner cannot use it now.
        let err = disks.take(&token, Some(1000), now).expect_err("spent");
        assert!(err.message.contains("already used"), "{}", err.message);
        assert_eq!(disks.len(), 0, "the descriptor is closed");

        let (_keep, file) = file_with(b"disk");
        let token = disks.insert(1000, file, 4, now).expect("insert");
        let disk = disks.take(&token, Some(1000), now).expect("owner");
        assert_eq!(disk.size, 4);
        assert!(disks.take(&token, Some(1000), now).is_err(), "one-shot");
        assert!(disks.take("00", None, now).is_err());
    }

    #[test]
    fn a_token_expires() {
        let disks = PassedDisks::default();
        let now = Instant::now();
        let (_keep, file) = file_with(b"disk");
        let token = disks.insert(0, file, 4, now).expect("insert");
        let later = now + TOKEN_TTL;
        let err = disks.take(&token, Some(0), later).expect_err("expired");
        assert!(err.message.contains("expired"), "{}", err.message);
    }

    #[test]
    fn expired_files_are_dropped_and_pending_ones_bounded() {
        let disks = PassedDisks::default();
        let now = Instant::now();
        let (_keep, file) = file_with(b"d");
        for _ in 0..MAX_PENDING {
            disks
                .insert(0, file.try_clone().expect("dup"), 1, now)
                .expect("room");
        }
        let err = disks
            .insert(0, file.try_clone().expect("dup"), 1, now)
            .expect_err("full");
        assert!(err.contains("already waiting"), "{err}");
        // Once they expired, they make room (and their descriptors close).
        disks
            .insert(0, file, 1, now + TOKEN_TTL)
            .expect("room again");
        assert_eq!(disks.len(), 1);
    }

    #[test]
    fn only_readable_regular_files_pass() {
        let (_keep, file) = file_with(b"disk");
        assert_eq!(check_readable_file(&file), Ok(4));
        let dir = tempfile::tempdir().expect("dir");
        let err = check_readable_file(&File::open(dir.path()).expect("dir")).expect_err("dir");
        assert!(err.contains("a directory"), "{err}");
        let write_only = std::fs::OpenOptions::new()
            .write(true)
            .open(_keep.path())
            .expect("open");
        let err = check_readable_file(&write_only).expect_err("write-only");
        assert!(err.contains("not open for reading"), "{err}");
        let (_empty, empty) = file_with(b"");
        assert!(check_readable_file(&empty).is_err());
    }
}
