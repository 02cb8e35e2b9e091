//! The readiness gate of `dependsOn: {svc: {condition: ready}}`: a guest is
//! ready when cloud-init's final stage has printed its
//! `Cloud-init v. 24.1 finished at ...` line on the serial console, which
//! the hypervisor logs to `runtime/<vm>/console.log`. The log is read
//! incrementally from where the current boot started; the VM going down or
//! the timeout passing fails the wait.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt};
use vmr_domain::vm::VmName;
use vmr_ports::driving::{ErrorKind, UseCaseError};

use super::deps::Deps;

/// Longest partial line kept between two reads: a console line longer than
/// this cannot be the one we look for.
const MAX_CARRY: usize = 4096;
/// Most bytes read from the log per poll.
const MAX_READ: u64 = 1024 * 1024;
/// How much of what was read last is kept to recognise the same file.
const FINGERPRINT: usize = 64;

/// Whether a console line is cloud-init's "finished" line.
pub fn is_finished_line(line: &str) -> bool {
    line.find("Cloud-init v.")
        .is_some_and(|at| line[at..].contains(" finished"))
}

/// The log's current length (0 when it does not exist yet): where a boot
/// that starts now begins.
pub async fn log_len(path: &Path) -> u64 {
    tokio::fs::metadata(path)
        .await
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Reads a console log from an offset, a line at a time across polls.
///
/// A log rewritten in place (truncated, then written again: a tool, or a
/// test standing in for a guest) may already be longer than the offset when
/// it is next read; the last bytes read before the offset, compared with
/// what the file now holds there, tell it apart from a log that grew.
struct LogScanner {
    path: PathBuf,
    offset: u64,
    carry: Vec<u8>,
    /// The file's bytes just before `offset`, as last read; `None` before
    /// the first read.
    fingerprint: Option<Vec<u8>>,
}

/// The up to [`FINGERPRINT`] bytes of `file` before `offset`.
async fn bytes_before(file: &mut tokio::fs::File, offset: u64) -> std::io::Result<Vec<u8>> {
    let start = offset.saturating_sub(FINGERPRINT as u64);
    file.seek(SeekFrom::Start(start)).await?;
    let mut bytes = Vec::new();
    file.take(offset - start).read_to_end(&mut bytes).await?;
    Ok(bytes)
}

impl LogScanner {
    /// Reads what was appended since the last call; whether the finished
    /// line is among it.
    async fn scan(&mut self) -> std::io::Result<bool> {
        let mut file = match tokio::fs::File::open(&self.path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let len = file.metadata().await?.len();
        let rewritten = len < self.offset
            || match &self.fingerprint {
                Some(seen) => bytes_before(&mut file, self.offset).await? != *seen,
                None => false,
            };
        if rewritten {
            // Truncated or replaced: start over.
            self.offset = 0;
            self.carry.clear();
        }
        file.seek(SeekFrom::Start(self.offset)).await?;
        let mut chunk = Vec::new();
        (&mut file).take(MAX_READ).read_to_end(&mut chunk).await?;
        self.offset += chunk.len() as u64;
        self.fingerprint = Some(bytes_before(&mut file, self.offset).await?);
        self.carry.extend_from_slice(&chunk);
        let mut found = false;
        let mut start = 0;
        while let Some(end) = self.carry[start..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&self.carry[start..start + end]);
            found |= is_finished_line(&line);
            start += end + 1;
        }
        self.carry.drain(..start);
        if self.carry.len() > MAX_CARRY {
            // A partial line may still be the one: judge it before dropping.
            found |= is_finished_line(&String::from_utf8_lossy(&self.carry));
            self.carry.clear();
        }
        Ok(found)
    }
}

/// Waits until `vm`'s console log, read from `offset`, shows cloud-init's
/// finished line. Fails when the VM stops or disappears, or after `timeout`.
pub async fn wait_ready(
    deps: &Deps,
    vm: &VmName,
    offset: u64,
    timeout: Duration,
    poll: Duration,
) -> Result<(), UseCaseError> {
    let path = deps.vms.runtime().console_log(vm);
    let mut scanner = LogScanner {
        path: path.clone(),
        offset,
        carry: Vec::new(),
        fingerprint: None,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    tracing::debug!(%vm, console = %path.display(), "waiting for cloud-init to finish");
    loop {
        let found = scanner.scan().await.map_err(|e| {
            UseCaseError::internal(format!("cannot read {}: {e}", path.display())).with_source(e)
        })?;
        if found {
            return Ok(());
        }
        match deps.vm_state(vm).await? {
            Some(state) if state.is_active() => {}
            Some(state) => {
                return Err(UseCaseError::new(
                    ErrorKind::FailedPrecondition,
                    format!(
                        "VM {vm} is {state} before cloud-init finished (see {})",
                        path.display()
                    ),
                ));
            }
            None => {
                return Err(UseCaseError::new(
                    ErrorKind::FailedPrecondition,
                    format!("VM {vm} disappeared before cloud-init finished"),
                ));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(UseCaseError::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "not ready after {} s: the guest did not print cloud-init's \"Cloud-init v. ... finished\" line on its serial console (see {})",
                    timeout.as_secs(),
                    path.display()
                ),
            ));
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_line() {
        assert!(is_finished_line(
            "[   42.1] cloud-init[612]: Cloud-init v. 24.1.3-0ubuntu1 finished at Thu, 01 Feb 2024 10:00:00 +0000. Datasource DataSourceNoCloud [seed=/dev/sr0].  Up 42.00 seconds"
        ));
        assert!(is_finished_line(
            "Cloud-init v. 24.1 finished at Mon, 01 Jan 2024"
        ));
        assert!(!is_finished_line(
            "Cloud-init v. 24.1 running 'modules:final' at Mon, 01 Jan 2024"
        ));
        assert!(!is_finished_line("cloud-init finished"));
        assert!(!is_finished_line(" finished Cloud-init v."));
    }

    #[tokio::test]
    async fn scanner_reads_incrementally_across_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut scanner = LogScanner {
            path: path.clone(),
            offset: 0,
            carry: Vec::new(),
            fingerprint: None,
        };
        assert!(!scanner.scan().await.unwrap(), "no log yet");
        tokio::fs::write(&path, b"SeaBIOS\r\nbooting\r\nCloud-init v. 24.1 fin")
            .await
            .unwrap();
        assert!(!scanner.scan().await.unwrap(), "the line is not complete");
        let mut text = tokio::fs::read(&path).await.unwrap();
        text.extend_from_slice(b"ished at Mon\r\nlogin:");
        tokio::fs::write(&path, &text).await.unwrap();
        assert!(scanner.scan().await.unwrap());
    }

    #[tokio::test]
    async fn scanner_ignores_an_earlier_boot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        tokio::fs::write(&path, b"Cloud-init v. 24.1 finished at Mon\n")
            .await
            .unwrap();
        let offset = log_len(&path).await;
        let mut scanner = LogScanner {
            path: path.clone(),
            offset,
            carry: Vec::new(),
            fingerprint: None,
        };
        assert!(!scanner.scan().await.unwrap());
        let mut text = tokio::fs::read(&path).await.unwrap();
        text.extend_from_slice(b"reboot\nCloud-init v. 24.1 finished at Tue\n");
        tokio::fs::write(&path, &text).await.unwrap();
        assert!(scanner.scan().await.unwrap());
    }

    #[tokio::test]
    async fn scanner_starts_over_on_a_log_rewritten_longer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        tokio::fs::write(&path, b"vmr fake guest db: booted\n")
            .await
            .unwrap();
        let mut scanner = LogScanner {
            path: path.clone(),
            offset: 0,
            carry: Vec::new(),
            fingerprint: None,
        };
        assert!(!scanner.scan().await.unwrap());
        // Truncated and written again, past the offset already read.
        tokio::fs::write(
            &path,
            b"SeaBIOS\nLinux\nCloud-init v. 24.1 finished at Mon\n",
        )
        .await
        .unwrap();
        assert!(scanner.scan().await.unwrap());
    }
}
