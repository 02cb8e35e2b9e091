//! The socket's door: with `--socket-group`, a member of that group may use
//! the daemon and anyone else is refused by the kernel (mode 0660), with the
//! CLI's hint. Real users and a real group are created (the tests run as
//! root) and removed afterwards, even when the test fails.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use vmr_tests::{Daemon, bin};

fn is_root() -> bool {
    String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout)
        .unwrap()
        .trim()
        == "0"
}

fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A group and two users (one in it), removed on drop.
struct Accounts {
    group: String,
    member: String,
    stranger: String,
}

impl Accounts {
    fn create() -> Self {
        // Short: user and group names are limited to 32 characters.
        let tag = format!(
            "{:x}",
            std::process::id() ^ (uuid::Uuid::new_v4().as_u128() as u32)
        );
        let accounts = Self {
            group: format!("vmrdoor{tag}"),
            member: format!("vmrin{tag}"),
            stranger: format!("vmrout{tag}"),
        };
        run("groupadd", &[&accounts.group]);
        run(
            "useradd",
            &[
                "-M",
                "-N",
                "-s",
                "/bin/sh",
                "-G",
                &accounts.group,
                &accounts.member,
            ],
        );
        run(
            "useradd",
            &["-M", "-N", "-s", "/bin/sh", &accounts.stranger],
        );
        accounts
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        for user in [&self.member, &self.stranger] {
            let _ = Command::new("userdel").arg(user).output();
        }
        let _ = Command::new("groupdel").arg(&self.group).output();
    }
}

/// Runs `vmr --socket SOCKET ARGS` as `user`, from a copy of the binary that
/// any user may execute.
fn vmr_as(user: &str, vmr: &Path, socket: &Path, home: &Path, args: &[&str]) -> Output {
    Command::new("runuser")
        .args(["-u", user, "--", "env"])
        .arg(format!("HOME={}", home.display()))
        .arg(format!("XDG_CONFIG_HOME={}", home.join(user).display()))
        .arg(vmr)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_group_member_may_use_the_socket_and_a_stranger_is_refused() {
    // Never a pass by skipping: the suite runs as root (scripts/test.sh, CI).
    assert!(
        is_root(),
        "this test creates users and a group: run the suite as root (scripts/test.sh does)"
    );
    let accounts = Accounts::create();
    let mut daemon =
        Daemon::start_with(&["--hypervisor", "fake", "--socket-group", &accounts.group]);

    // The socket's directory must be traversable by both users; the socket
    // itself is the door.
    std::fs::set_permissions(daemon.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let meta = std::fs::metadata(&daemon.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let gid = String::from_utf8(run("getent", &["group", &accounts.group]).stdout).unwrap();
    let gid: u32 = gid.trim().split(':').nth(2).unwrap().parse().unwrap();
    assert_eq!(meta.gid(), gid, "the socket belongs to --socket-group");

    let shared = tempfile::Builder::new()
        .prefix("vmr-doors-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let vmr = shared.path().join("vmr");
    std::fs::copy(bin("vmr"), &vmr).unwrap();
    std::fs::set_permissions(&vmr, std::fs::Permissions::from_mode(0o755)).unwrap();

    let member = vmr_as(
        &accounts.member,
        &vmr,
        &daemon.socket,
        shared.path(),
        &["health"],
    );
    assert!(
        member.status.success(),
        "member refused: {}",
        String::from_utf8_lossy(&member.stderr)
    );
    assert!(String::from_utf8_lossy(&member.stdout).contains("daemon"));

    let stranger = vmr_as(
        &accounts.stranger,
        &vmr,
        &daemon.socket,
        shared.path(),
        &["health"],
    );
    assert_eq!(stranger.status.code(), Some(1));
    let err = String::from_utf8_lossy(&stranger.stderr).to_lowercase();
    assert!(err.contains("permission denied"), "{err}");
    assert!(err.contains("is your user in the socket's group?"), "{err}");

    // The member's calls are logged under the member's uid.
    let uid = String::from_utf8(run("id", &["-u", &accounts.member]).stdout).unwrap();
    let log = daemon.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("HealthCheck") && l.contains(&format!("uid={}", uid.trim()))),
        "{log}"
    );
    daemon.stop();
}
