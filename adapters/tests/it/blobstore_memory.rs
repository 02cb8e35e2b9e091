//! The blob store suite against the in-memory backend.

use crate::blobstore_suite::{self, Harness};
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
