//! The blob store suite against the in-memory backend.

// Integration tests: a failed unwrap is the test failing (clippy.toml allows
// it in #[test] functions, not in the helpers they share).
#![allow(clippy::unwrap_used)]

mod blobstore_suite;

use blobstore_suite::Harness;
use vmr_adapters::blobstore::OpendalStore;

struct Memory {
    store: OpendalStore,
}

impl Harness for Memory {
    fn store(&self) -> &OpendalStore {
        &self.store
    }
}

async fn memory() -> Option<Memory> {
    Some(Memory {
        store: OpendalStore::memory().expect("memory store"),
    })
}

blobstore_suite::suite!(memory());

#[tokio::test]
async fn scratch_directory_goes_with_the_store() {
    let store = OpendalStore::memory().unwrap();
    let scratch = store.temporaries_dir().to_owned();
    assert!(scratch.is_dir());
    let clone = store.clone();
    drop(store);
    assert!(scratch.is_dir(), "a clone keeps it");
    drop(clone);
    assert!(!scratch.exists());
}
