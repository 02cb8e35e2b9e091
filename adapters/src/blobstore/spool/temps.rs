//! Blob temporaries: fresh ones and resumable partial files, each
//! registered in [`ActiveTemps`] while some writer may touch it, so that
//! cleaning never removes a live one and a resumed writer waits for the
//! previous owner of a partial file to let go.

use super::*;

/// Names of the temporaries some writer is still using.
#[derive(Debug, Default)]
pub(crate) struct ActiveTemps {
    names: Mutex<HashSet<String>>,
    released: Notify,
}

impl ActiveTemps {
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(name)
    }

    pub(super) fn try_claim(self: &Arc<Self>, name: &str) -> Option<ActiveGuard> {
        let inserted = self
            .names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned());
        inserted.then(|| ActiveGuard {
            temps: Arc::clone(self),
            name: name.to_owned(),
        })
    }

    /// Claims `name`, waiting up to `patience` for its current owner.
    pub(crate) async fn claim(
        self: &Arc<Self>,
        name: &str,
        patience: Duration,
    ) -> Option<ActiveGuard> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Registered before the check, so a release in between is not missed.
            released.as_mut().enable();
            if let Some(guard) = self.try_claim(name) {
                return Some(guard);
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return None;
            }
        }
    }
}

/// Marks a temporary as in use until dropped.
#[derive(Debug)]
pub(crate) struct ActiveGuard {
    temps: Arc<ActiveTemps>,
    name: String,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.temps
            .names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.name);
        self.temps.released.notify_waiters();
    }
}

/// A local temporary file holding blob bytes.
#[derive(Debug)]
pub(crate) struct TempFile {
    // Field order matters: the file is closed (and a fresh one deleted)
    // before the guard lets other writers and the cleaner at the name.
    kind: TempKind,
    _guard: ActiveGuard,
}

#[derive(Debug)]
enum TempKind {
    /// Deleted when dropped.
    Fresh(NamedTempFile),
    /// `partial-<hex>`: kept when dropped, so an interrupted pull resumes.
    Partial { file: File, path: PathBuf },
}

impl TempFile {
    /// A new, empty temporary in `dir`.
    pub(crate) fn fresh(dir: &Path, temps: &Arc<ActiveTemps>) -> io::Result<Self> {
        let named = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(dir)?;
        let name = file_name(named.path());
        let guard = temps.try_claim(&name).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("temporary {name} is already in use"),
            )
        })?;
        Ok(Self {
            kind: TempKind::Fresh(named),
            _guard: guard,
        })
    }

    /// A named temporary kept when dropped (a partial download).
    pub(crate) fn partial(file: File, path: PathBuf, guard: ActiveGuard) -> Self {
        Self {
            kind: TempKind::Partial { file, path },
            _guard: guard,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        match &self.kind {
            TempKind::Fresh(named) => named.path(),
            TempKind::Partial { path, .. } => path,
        }
    }

    pub(crate) fn file(&mut self) -> &mut File {
        match &mut self.kind {
            TempKind::Fresh(named) => named.as_file_mut(),
            TempKind::Partial { file, .. } => file,
        }
    }

    /// Atomically renames the file to `target` (same filesystem).
    pub(crate) fn persist(self, target: &Path) -> io::Result<()> {
        match self.kind {
            TempKind::Fresh(named) => named.persist(target).map(drop).map_err(|e| e.error),
            TempKind::Partial { file, path } => {
                drop(file);
                std::fs::rename(path, target)
            }
        }
    }

    /// Renames the file to `target`; on failure the temporary is handed
    /// back with the error, so that the caller may retry.
    pub(crate) fn try_persist(self, target: &Path) -> Result<(), (Self, io::Error)> {
        let Self { kind, _guard } = self;
        match kind {
            TempKind::Fresh(named) => named.persist(target).map(drop).map_err(|e| {
                let kind = TempKind::Fresh(e.file);
                (Self { kind, _guard }, e.error)
            }),
            TempKind::Partial { file, path } => match std::fs::rename(&path, target) {
                Ok(()) => Ok(()),
                Err(e) => {
                    let kind = TempKind::Partial { file, path };
                    Err((Self { kind, _guard }, e))
                }
            },
        }
    }

    /// Removes the file, whatever its kind.
    pub(crate) fn discard(self) -> io::Result<()> {
        match self.kind {
            TempKind::Fresh(named) => named.close(),
            TempKind::Partial { file, path } => {
                drop(file);
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                }
            }
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A temporary plus the hash and length of what it already holds.
pub(crate) struct Opened {
    pub(crate) temp: TempFile,
    pub(crate) hasher: Sha256,
    pub(crate) written: u64,
}

/// Opens `dir/partial-<hex>` for appending and re-hashes what an earlier
/// writer left there. When another writer still holds it after a grace
/// period, a fresh temporary is used instead.
pub(crate) async fn open_partial(
    dir: &Path,
    temps: &Arc<ActiveTemps>,
    expected: &Digest,
) -> Result<Opened, StoreError> {
    let name = partial_name(expected);
    let Some(guard) = temps.claim(&name, PARTIAL_HANDOVER).await else {
        tracing::debug!(digest = %expected, "partial blob busy, not resuming");
        return open_fresh(dir, temps).await;
    };
    let path = dir.join(&name);
    spawn_io("re-hashing a partial blob", move || {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0; REHASH_BUFFER];
        let mut written = 0;
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            written += n as u64;
        }
        Ok(Opened {
            temp: TempFile {
                kind: TempKind::Partial { file, path },
                _guard: guard,
            },
            hasher,
            written,
        })
    })
    .await
}

/// A new, empty temporary in `dir`.
pub(crate) async fn open_fresh(dir: &Path, temps: &Arc<ActiveTemps>) -> Result<Opened, StoreError> {
    let dir = dir.to_owned();
    let temps = Arc::clone(temps);
    spawn_io("creating a blob temporary", move || {
        Ok(Opened {
            temp: TempFile::fresh(&dir, &temps)?,
            hasher: Sha256::new(),
            written: 0,
        })
    })
    .await
}
