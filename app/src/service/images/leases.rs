//! Leases: blobs that garbage collection must not delete although no tag
//! and no VM references them yet (or any more). An import or a pull leases
//! what it writes until its tags are committed; `tag`, `vmr create` and
//! `compose up` lease the image they read until their own reference exists.
//!
//! A lease is a counted set of digests that lives in this process only:
//! after a restart nothing is in flight, so nothing needs one.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use vmr_domain::image::Digest;

/// Every digest leased right now, with how many leases hold it.
#[derive(Debug, Default)]
pub struct Leases {
    held: Mutex<HashMap<Digest, usize>>,
}

impl Leases {
    fn held(&self) -> MutexGuard<'_, HashMap<Digest, usize>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new lease on `digests`, released when the lease is dropped.
    pub fn lease(self: &Arc<Self>, digests: impl IntoIterator<Item = Digest>) -> Lease {
        let mut lease = Lease {
            leases: Arc::clone(self),
            digests: Vec::new(),
        };
        lease.extend(digests);
        lease
    }

    pub fn is_leased(&self, digest: &Digest) -> bool {
        self.held().contains_key(digest)
    }

    /// The digests leased right now.
    pub fn snapshot(&self) -> BTreeSet<Digest> {
        self.held().keys().cloned().collect()
    }
}

/// Digests kept from garbage collection while this value lives.
#[derive(Debug)]
pub struct Lease {
    leases: Arc<Leases>,
    digests: Vec<Digest>,
}

impl Lease {
    /// Adds `digest` to this lease (a digest may be added more than once).
    pub fn add(&mut self, digest: Digest) {
        *self.leases.held().entry(digest.clone()).or_insert(0) += 1;
        self.digests.push(digest);
    }

    pub fn extend(&mut self, digests: impl IntoIterator<Item = Digest>) {
        for digest in digests {
            self.add(digest);
        }
    }

    pub fn digests(&self) -> &[Digest] {
        &self.digests
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut held = self.leases.held();
        for digest in self.digests.drain(..) {
            if let Some(count) = held.get_mut(&digest) {
                *count -= 1;
                if *count == 0 {
                    held.remove(&digest);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::of(&[n])
    }

    #[test]
    fn a_digest_stays_leased_until_its_last_lease_is_dropped() {
        let leases = Arc::new(Leases::default());
        let first = leases.lease([digest(1), digest(2)]);
        let mut second = leases.lease([digest(2)]);
        second.add(digest(3));
        assert_eq!(
            leases.snapshot(),
            BTreeSet::from([digest(1), digest(2), digest(3)])
        );
        drop(first);
        assert!(!leases.is_leased(&digest(1)));
        assert!(leases.is_leased(&digest(2)));
        drop(second);
        assert!(leases.snapshot().is_empty());
    }

    #[test]
    fn the_same_digest_twice_in_one_lease_is_released_twice() {
        let leases = Arc::new(Leases::default());
        let mut lease = leases.lease([digest(1)]);
        lease.add(digest(1));
        assert_eq!(lease.digests().len(), 2);
        drop(lease);
        assert!(!leases.is_leased(&digest(1)));
    }
}
