//! `vmr compose` end to end: the real CLI reads a compose file and the files
//! it names and talks to a real `vmrd`. In fake mode: the original docs'
//! `ziti` example up, in `ps`, down; every validation error through
//! `compose config`; idempotency; concurrency read from the events'
//! timestamps; failure and cleanup; the readiness gate and the project lock.
//! On a real libvirt (`VMR_TEST_LIBVIRT_URI`; these fail without it unless
//! `VMR_TEST_SKIP_LIBVIRT=1`): the `ziti` example with tiny TCG guests, and
//! the readiness gate against a real boot of a kernel and a busybox
//! initramfs that prints cloud-init's finished line on the serial console.

mod default_network;
mod fake;
mod libvirt;
mod s3;
mod same_as_run;
mod support;
