//! Leases: blobs that garbage collection must not delete although no tag
//! and no VM references them yet (or any more). An import or a pull leases
//! what it writes until its tags are committed; `tag`, `vmr create` and
//! `compose up` lease the image they read until their own reference exists.
//!
//! A lease is a counted set of digests that lives in this process; on a
//! store shared with other daemons the image service also publishes them
//! (see `shared`). After a restart nothing is in flight, so nothing needs one.
//! With `track_released`, digests whose last lease ended are remembered
//! until the next renewal of the shared record has read the VMs' images:
//! `vmr create` drops its lease once the VM exists, and the record must not
//! lose the image between the two.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use vmr_domain::image::Digest;

/// Every digest leased right now, with how many leases hold it.
#[derive(Debug, Default)]
pub struct Leases {
    held: Mutex<HashMap<Digest, usize>>,
    /// Released digests with the generation of their release (tracked only
    /// for a shared store).
    released: Mutex<Released>,
}

#[derive(Debug, Default)]
struct Released {
    track: bool,
    generation: u64,
    digests: HashMap<Digest, u64>,
}

impl Leases {
    /// Remember released digests (a store shared with other daemons).
    pub fn track_released(&self) {
        self.released().track = true;
    }

    fn released(&self) -> MutexGuard<'_, Released> {
        self.released.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The digests released and not forgotten, and the generation to
    /// forget them up to.
    pub fn released_since_renewal(&self) -> (BTreeSet<Digest>, u64) {
        let released = self.released();
        (
            released.digests.keys().cloned().collect(),
            released.generation,
        )
    }

    /// Forgets digests released up to `generation`.
    pub fn forget_released(&self, generation: u64) {
        self.released().digests.retain(|_, g| *g > generation);
    }

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
                    let mut released = self.leases.released();
                    if released.track {
                        released.generation += 1;
                        let generation = released.generation;
                        released.digests.insert(digest, generation);
                    }
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
    fn released_digests_are_remembered_until_forgotten_up_to_their_generation() {
        let leases = Arc::new(Leases::default());
        leases.track_released();
        drop(leases.lease([digest(1)]));
        let (released, mark) = leases.released_since_renewal();
        assert_eq!(released, BTreeSet::from([digest(1)]));
        drop(leases.lease([digest(2)]));
        leases.forget_released(mark);
        assert_eq!(
            leases.released_since_renewal().0,
            BTreeSet::from([digest(2)])
        );
    }

    #[test]
    fn untracked_releases_are_not_remembered() {
        let leases = Arc::new(Leases::default());
        drop(leases.lease([digest(1)]));
        assert!(leases.released_since_renewal().0.is_empty());
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
