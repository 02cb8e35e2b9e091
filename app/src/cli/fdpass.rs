//! The client half of vmrd's descriptor side channel: connect to the same
//! socket, send the magic line with the open disk file attached
//! (SCM_RIGHTS), read back `OK <token>` or `ERR <reason>`. The daemon reads
//! the file through that descriptor, with the rights this process opened it
//! with, and never sees a path.

use std::fs::File;
use std::io::{self, BufRead, BufReader, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

/// Must match the daemon's `vmr_adapters::grpc::FD_MAGIC`.
pub const MAGIC: &[u8; 8] = b"VMRFD/1\n";

/// How long the daemon may take to answer.
const ANSWER_PATIENCE: Duration = Duration::from_secs(10);

/// What the side channel said.
#[derive(Debug, PartialEq, Eq)]
pub enum Passed {
    /// The one-shot token for `ImportHeader.disk_token`.
    Token(String),
    /// The daemon looked at the descriptor and refused it.
    Refused(String),
    /// No side channel here (an older daemon, or the connection failed).
    Unavailable(String),
}

/// Passes `file` to the daemon at `socket`.
pub fn pass_file(socket: &Path, file: &File) -> Passed {
    match exchange(socket, file.as_raw_fd()) {
        Ok(line) => parse_answer(&line),
        Err(e) => Passed::Unavailable(e.to_string()),
    }
}

fn exchange(socket: &Path, fd: RawFd) -> io::Result<String> {
    let stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(ANSWER_PATIENCE))?;
    stream.set_write_timeout(Some(ANSWER_PATIENCE))?;
    let fds = [fd];
    let sent = sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(MAGIC)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    if sent != MAGIC.len() {
        return Err(io::Error::other("the magic line was cut short"));
    }
    let mut line = String::new();
    BufReader::new(&stream).take_line(&mut line)?;
    Ok(line)
}

trait TakeLine {
    fn take_line(&mut self, line: &mut String) -> io::Result<()>;
}

impl<R: BufRead> TakeLine for R {
    /// One line of at most 1 KiB.
    fn take_line(&mut self, line: &mut String) -> io::Result<()> {
        use std::io::Read;
        self.take(1024).read_line(line)?;
        Ok(())
    }
}

fn parse_answer(line: &str) -> Passed {
    let line = line.trim_end_matches('\n');
    if let Some(token) = line.strip_prefix("OK ") {
        Passed::Token(token.to_owned())
    } else if let Some(reason) = line.strip_prefix("ERR ") {
        Passed::Refused(reason.to_owned())
    } else if line.is_empty() {
        Passed::Unavailable("the daemon closed the side channel without answering".to_owned())
    } else {
        Passed::Unavailable(format!("unexpected side-channel answer {line:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed() {
        assert_eq!(parse_answer("OK abc\n"), Passed::Token("abc".into()));
        assert_eq!(
            parse_answer("ERR not a file\n"),
            Passed::Refused("not a file".into())
        );
        assert!(matches!(parse_answer(""), Passed::Unavailable(_)));
        assert!(matches!(
            parse_answer("HTTP/2 garbage"),
            Passed::Unavailable(_)
        ));
    }

    #[test]
    fn no_daemon_means_unavailable() {
        let dir = tempfile::tempdir().expect("dir");
        let file = File::open(dir.path()).expect("dir fd");
        assert!(matches!(
            pass_file(&dir.path().join("none.sock"), &file),
            Passed::Unavailable(_)
        ));
    }
}
