//! `vmr logs`: the serial console's log file (virtlogd's on libvirt, the
//! scripted guest's in fake mode), from the start or from its last N lines,
//! and with `follow` what the guest prints next. Following polls the file
//! every [`FOLLOW_POLL`] (a bounded interval, no busy loop), reopens it when
//! virtlogd rotated or truncated it, and ends once the VM is removed.

use std::io::SeekFrom;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use vmr_domain::vm::VmName;
use vmr_ports::driving::{LogStream, LogsRequest, UseCaseError};
use vmr_ports::{HypervisorError, VmDriver};

/// How often a followed log is checked for new output.
pub(super) const FOLLOW_POLL: Duration = Duration::from_millis(250);
/// Every this many idle polls, a follow checks that the VM still exists.
const POLLS_PER_VM_CHECK: u32 = 8;
/// The most a single message carries.
const CHUNK: usize = 64 * 1024;

fn io_error(path: &std::path::Path, e: std::io::Error) -> UseCaseError {
    UseCaseError::internal(format!("reading the console log {}: {e}", path.display()))
        .with_source(e)
}

/// The offset where the last `lines` lines of `file` begin.
async fn tail_offset(file: &mut File, lines: usize) -> std::io::Result<u64> {
    let len = file.metadata().await?.len();
    if lines == 0 {
        return Ok(len);
    }
    let mut end = len;
    let mut newlines = 0usize;
    let mut block = vec![0u8; CHUNK];
    // A final line without its newline still counts as a line.
    let mut skip_last_newline = true;
    while end > 0 {
        let start = end.saturating_sub(CHUNK as u64);
        let size = (end - start) as usize;
        file.seek(SeekFrom::Start(start)).await?;
        file.read_exact(&mut block[..size]).await?;
        for (i, byte) in block[..size].iter().enumerate().rev() {
            if *byte != b'\n' {
                skip_last_newline = false;
                continue;
            }
            if skip_last_newline && start + i as u64 == len - 1 {
                skip_last_newline = false;
                continue;
            }
            newlines += 1;
            if newlines == lines {
                return Ok(start + i as u64 + 1);
            }
        }
        end = start;
    }
    Ok(0)
}

struct Reader {
    path: PathBuf,
    file: Option<File>,
    offset: u64,
    follow: bool,
    idle_polls: u32,
    hypervisor: Arc<dyn VmDriver>,
    name: VmName,
    failed: bool,
}

impl Reader {
    async fn open(&mut self) -> Result<(), UseCaseError> {
        match File::open(&self.path).await {
            Ok(file) => {
                self.file = Some(file);
                Ok(())
            }
            // Not started yet: nothing logged so far.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&self.path, e)),
        }
    }

    /// Whether the file at the path is no longer the one being read
    /// (rotated, recreated) or is shorter than what was read (truncated).
    async fn replaced(&self) -> bool {
        let Ok(on_disk) = tokio::fs::metadata(&self.path).await else {
            return false;
        };
        match &self.file {
            None => true,
            Some(file) => match file.metadata().await {
                Ok(open) => open.ino() != on_disk.ino() || on_disk.len() < self.offset,
                Err(_) => true,
            },
        }
    }

    async fn next_chunk(&mut self) -> Option<Result<Bytes, UseCaseError>> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(file) = self.file.as_mut() {
                let mut buf = vec![0u8; CHUNK];
                let read = async {
                    file.seek(SeekFrom::Start(self.offset)).await?;
                    file.read(&mut buf).await
                }
                .await;
                match read {
                    Ok(0) => {}
                    Ok(n) => {
                        self.offset += n as u64;
                        self.idle_polls = 0;
                        buf.truncate(n);
                        return Some(Ok(Bytes::from(buf)));
                    }
                    Err(e) => {
                        self.failed = true;
                        return Some(Err(io_error(&self.path, e)));
                    }
                }
            }
            if !self.follow {
                return None;
            }
            if self.replaced().await {
                self.file = None;
                self.offset = 0;
                if let Err(e) = self.open().await {
                    self.failed = true;
                    return Some(Err(e));
                }
                if self.file.is_some() {
                    continue;
                }
            }
            self.idle_polls += 1;
            if self.idle_polls.is_multiple_of(POLLS_PER_VM_CHECK)
                && let Err(HypervisorError::NotFound { .. }) =
                    self.hypervisor.inspect_vm(&self.name).await
            {
                return None;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
}

/// The console log at `path`, as `request` asks.
pub(super) async fn stream(
    path: PathBuf,
    request: LogsRequest,
    hypervisor: Arc<dyn VmDriver>,
    name: VmName,
) -> Result<LogStream, UseCaseError> {
    let mut reader = Reader {
        path,
        file: None,
        offset: 0,
        follow: request.follow,
        idle_polls: 0,
        hypervisor,
        name,
        failed: false,
    };
    reader.open().await?;
    if let (Some(lines), Some(file)) = (request.tail, reader.file.as_mut()) {
        reader.offset = tail_offset(file, lines)
            .await
            .map_err(|e| io_error(&reader.path, e))?;
    }
    Ok(futures::stream::unfold(reader, |mut reader| async move {
        let item = reader.next_chunk().await?;
        Some((item, reader))
    })
    .boxed())
}
