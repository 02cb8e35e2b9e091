//! The store's local directories: creating the layout, durable writes
//! (fsync the file, rename, fsync the directory), pruning empty manifest
//! directories, feeding a local file to an upload, and cleaning leftover
//! temporaries at start.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt as _;
use vmr_domain::image::{Repository, Tag};
use vmr_ports::blobstore::StoreError;

use super::error::{backend_error, io_error};
use super::layout::{BLOBS_DIR, MANIFESTS_DIR, PARTIAL_PREFIX, parse_manifest_key};
use super::spool::{ActiveTemps, TempFile, spawn_io};

/// Temporaries under a filesystem store's root.
pub(crate) const TEMP_DIR: &str = "tmp";
/// Under an S3 or memory store's local root: `cache/tmp`, `cache/sha256/<hex>`.
const CACHE_DIR: &str = "cache";
const CACHE_BLOBS_DIR: &str = "sha256";
/// A partial download older than this is given up at start.
const PARTIAL_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// Read size when uploading a local file.
const UPLOAD_READ: usize = 8 << 20;

/// Creates a filesystem store's directories and returns its absolute root.
pub(crate) fn prepare_root(root: &Path) -> Result<PathBuf, StoreError> {
    let doing = format!("preparing store directory {}", root.display());
    for dir in [BLOBS_DIR, MANIFESTS_DIR, TEMP_DIR] {
        fs::create_dir_all(root.join(dir)).map_err(|e| io_error(&doing, e))?;
    }
    fs::canonicalize(root).map_err(|e| io_error(&doing, e))
}

/// Creates `<local_root>/cache/{tmp,sha256}` and returns both.
pub(crate) fn prepare_cache(local_root: &Path) -> Result<(PathBuf, PathBuf), StoreError> {
    let cache = local_root.join(CACHE_DIR);
    let doing = format!("preparing cache directory {}", cache.display());
    let temp_dir = cache.join(TEMP_DIR);
    let blobs_dir = cache.join(CACHE_BLOBS_DIR);
    for dir in [&temp_dir, &blobs_dir] {
        fs::create_dir_all(dir).map_err(|e| io_error(&doing, e))?;
    }
    let absolute = |dir: PathBuf| fs::canonicalize(dir).map_err(|e| io_error(&doing, e));
    Ok((absolute(temp_dir)?, absolute(blobs_dir)?))
}

/// Makes a rename or a new entry in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(crate) async fn exists(path: &Path) -> Result<bool, StoreError> {
    tokio::fs::try_exists(path)
        .await
        .map_err(|e| io_error(&format!("checking {}", path.display()), e))
}

/// Writes `bytes` to `root/key` so that a crash leaves either the old file or
/// the whole new one: temporary, fsync, rename, fsync of the directories.
pub(crate) async fn write_durably(
    root: &Path,
    key: &str,
    temp_dir: &Path,
    temps: &Arc<ActiveTemps>,
    bytes: Bytes,
) -> Result<(), StoreError> {
    let root = root.to_owned();
    let target = root.join(key);
    let temp_dir = temp_dir.to_owned();
    let temps = Arc::clone(temps);
    spawn_io("writing manifest", move || {
        let parent = target.parent().unwrap_or(&root);
        let mut temp = TempFile::fresh(&temp_dir, &temps)?;
        temp.file().write_all(&bytes)?;
        temp.file().sync_all()?;
        persist_into_dir(temp, parent, &target)?;
        // New directories on the way need their own entries made durable.
        // One a concurrent `prune_empty_dirs` removed (the tag was deleted
        // meanwhile) has nothing left to make durable.
        let mut dir = Some(parent);
        while let Some(current) = dir {
            match sync_dir(current) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            if current == root {
                break;
            }
            dir = current.parent();
        }
        Ok(())
    })
    .await
}

/// Times a rename into a directory is tried when a concurrent
/// `prune_empty_dirs` keeps removing that directory.
const PERSIST_ATTEMPTS: usize = 8;

/// Creates `parent` and renames `temp` to `target` in it. Deleting another
/// tag of the same repository prunes directories that look empty, which
/// may remove `parent` between its creation and the rename (ENOENT), or
/// inside `create_dir_all` itself, between a mkdir that found the directory
/// there (EEXIST) and its check that it is one: the directory is then
/// created again and the rename retried.
fn persist_into_dir(mut temp: TempFile, parent: &Path, target: &Path) -> io::Result<()> {
    let mut attempt = 1;
    loop {
        match fs::create_dir_all(parent) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AlreadyExists | io::ErrorKind::NotFound
                ) && attempt < PERSIST_ATTEMPTS =>
            {
                tracing::debug!(dir = %parent.display(), attempt, "directory pruned while being created, retrying");
                attempt += 1;
                continue;
            }
            Err(e) => return Err(e),
        }
        match temp.try_persist(target) {
            Ok(()) => return Ok(()),
            Err((back, e)) if e.kind() == io::ErrorKind::NotFound && attempt < PERSIST_ATTEMPTS => {
                tracing::debug!(dir = %parent.display(), attempt, "directory pruned under a rename, retrying");
                temp = back;
                attempt += 1;
            }
            Err((_, e)) => return Err(e),
        }
    }
}

/// After deleting `root/key`, removes the directories it leaves empty, up to
/// (not including) the top-level directory of `key`.
pub(crate) async fn prune_empty_dirs(root: &Path, key: &str) -> Result<(), StoreError> {
    let top = match key.split_once('/') {
        Some((top, _)) => root.join(top),
        None => return Ok(()),
    };
    let target = root.join(key);
    spawn_io("pruning empty manifest directories", move || {
        let mut dir = target.parent();
        while let Some(current) = dir {
            if current == top || !current.starts_with(&top) {
                break;
            }
            match fs::remove_dir(current) {
                Ok(()) => dir = current.parent(),
                // Not empty (another tag), or already gone: stop there.
                Err(_) => break,
            }
        }
        Ok(())
    })
    .await
}

/// Streams a local file into an opendal writer (not closed).
pub(crate) async fn copy_file_to(
    path: &Path,
    writer: &mut opendal::Writer,
    doing: &str,
) -> Result<(), StoreError> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| io_error(doing, e))?;
    loop {
        let mut buffer = BytesMut::with_capacity(UPLOAD_READ);
        while buffer.len() < UPLOAD_READ {
            if file
                .read_buf(&mut buffer)
                .await
                .map_err(|e| io_error(doing, e))?
                == 0
            {
                break;
            }
        }
        if buffer.is_empty() {
            return Ok(());
        }
        writer
            .write(buffer.freeze())
            .await
            .map_err(|e| backend_error(doing, e))?;
    }
}

/// Removes everything in `dir` that no live writer uses, except partial
/// downloads younger than a day (a restarted pull resumes from them).
pub(crate) async fn clean_temporaries(
    dir: &Path,
    temps: &Arc<ActiveTemps>,
) -> Result<usize, StoreError> {
    let dir = dir.to_owned();
    let temps = Arc::clone(temps);
    spawn_io("cleaning temporaries", move || {
        let mut removed = 0;
        for (path, is_dir) in leftovers(&dir, &temps)? {
            let result = if is_dir {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            match result {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    })
    .await
}

/// The names of what `clean_temporaries` would remove now, sorted.
pub(crate) async fn list_temporaries(
    dir: &Path,
    temps: &Arc<ActiveTemps>,
) -> Result<Vec<String>, StoreError> {
    let dir = dir.to_owned();
    let temps = Arc::clone(temps);
    spawn_io("listing temporaries", move || {
        let mut names: Vec<String> = leftovers(&dir, &temps)?
            .into_iter()
            .filter_map(|(path, _)| Some(path.file_name()?.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Ok(names)
    })
    .await
}

/// Entries of `dir` that no live writer owns, except partial downloads
/// younger than a day, with whether each is a directory.
fn leftovers(dir: &Path, temps: &ActiveTemps) -> io::Result<Vec<(PathBuf, bool)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if temps.contains(&name) {
            continue;
        }
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            // Removed by its writer since the listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if name.starts_with(PARTIAL_PREFIX) {
            let age = meta.modified()?.elapsed().unwrap_or_default();
            if age < PARTIAL_MAX_AGE {
                continue;
            }
        }
        out.push((entry.path(), meta.is_dir()));
    }
    Ok(out)
}

/// Every `manifests/<repository>/<tag>/manifest.json` below `root`, parsed,
/// sorted. A walk of the local tree: a few microseconds a tag.
pub(crate) fn list_manifest_keys(root: &Path) -> Result<Vec<(Repository, Tag)>, StoreError> {
    let mut keys = Vec::new();
    let mut dirs = vec![root.join(MANIFESTS_DIR)];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::Io(e)),
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                dirs.push(path);
            } else if let Ok(relative) = path.strip_prefix(root)
                && let Some(key) = relative.to_str().and_then(parse_manifest_key)
            {
                keys.push(key);
            }
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tag written while another tag of the same repository (here: the
    /// same one) is deleted: the deletion prunes the directory the write is
    /// about to rename into. Every write must still land.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_survives_concurrent_pruning_of_its_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = prepare_root(dir.path()).expect("root");
        let temps = Arc::new(ActiveTemps::default());
        let key = "manifests/race/v1/manifest.json";
        for round in 0..200 {
            let writing = {
                let (root, temps) = (root.clone(), Arc::clone(&temps));
                tokio::spawn(async move {
                    write_durably(
                        &root,
                        key,
                        &root.join(TEMP_DIR),
                        &temps,
                        Bytes::from_static(b"{}"),
                    )
                    .await
                })
            };
            let pruning = {
                let root = root.clone();
                tokio::spawn(async move {
                    // What `delete_manifest` does after removing the file.
                    let _ = fs::remove_file(root.join(key));
                    prune_empty_dirs(&root, key).await
                })
            };
            writing
                .await
                .expect("task")
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            pruning.await.expect("task").expect("prune");
        }
    }
}
