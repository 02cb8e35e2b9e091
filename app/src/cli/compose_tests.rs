//! Tests of the compose file discovery and of the collection of the files a
//! compose file names, on real temporary directories.

use std::fs;

use super::*;

const COMPOSE: &str = "\
apiVersion: vmregistry.io/v1alpha1
services:
  web:
    image: nixos/base:1
    cloudInit:
      userDataFile: cloud/web-user-data.yaml
      networkConfigFile: ./cloud/net.yaml
  db:
    image: nixos/base:1
    cloudInit:
      userData: |
        #cloud-config
      metaDataFile: cloud/net.yaml
";

/// A project directory `<tmp>/shop` with the compose file and its files.
fn project(compose: &str) -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("shop");
    fs::create_dir_all(dir.join("cloud")).expect("mkdir");
    fs::write(
        dir.join("cloud/web-user-data.yaml"),
        "#cloud-config\nhostname: web\n",
    )
    .expect("write");
    fs::write(dir.join("cloud/net.yaml"), "version: 2\n").expect("write");
    fs::write(root.path().join("secret.txt"), "outside").expect("write");
    let compose_path = dir.join("vmcompose.yaml");
    fs::write(&compose_path, compose).expect("write");
    (root, compose_path)
}

const STRICT: FilePolicy = FilePolicy::Required {
    allow_outside: false,
};

#[test]
fn finds_every_file_key_with_its_field_path() {
    let document: Value = serde_yaml::from_str(COMPOSE).expect("yaml");
    assert_eq!(
        referenced_paths(&document),
        [
            (
                "services.web.cloudInit.userDataFile".to_owned(),
                "cloud/web-user-data.yaml".to_owned()
            ),
            (
                "services.web.cloudInit.networkConfigFile".to_owned(),
                "./cloud/net.yaml".to_owned()
            ),
            (
                "services.db.cloudInit.metaDataFile".to_owned(),
                "cloud/net.yaml".to_owned()
            ),
        ]
    );
}

#[test]
fn sends_contents_keyed_by_the_path_as_written() {
    let (_root, path) = project(COMPOSE);
    let files = ComposeFiles::load(&path, STRICT).expect("load");
    assert_eq!(files.yaml, COMPOSE);
    assert_eq!(files.directory_name, "shop");
    assert_eq!(files.files.len(), 3);
    assert_eq!(
        files.files["cloud/web-user-data.yaml"],
        b"#cloud-config\nhostname: web\n"
    );
    assert_eq!(files.files["./cloud/net.yaml"], b"version: 2\n");
    assert_eq!(files.files["cloud/net.yaml"], b"version: 2\n");

    let source = files.source(Some("p1".to_owned()));
    assert_eq!(source.project, "p1");
    assert_eq!(source.directory_name, "shop");
}

#[test]
fn refuses_files_outside_the_tree() {
    let compose = COMPOSE.replace("cloud/web-user-data.yaml", "../secret.txt");
    let (_root, path) = project(&compose);
    let err = ComposeFiles::load(&path, STRICT).expect_err("outside");
    let text = err.to_string();
    assert!(
        text.starts_with("services.web.cloudInit.userDataFile: ../secret.txt lies outside"),
        "{text}"
    );
    assert!(text.contains("--allow-outside-files"), "{text}");
}

#[test]
fn refuses_absolute_paths_outside_the_tree() {
    let (root, _) = project(COMPOSE);
    let secret = root.path().join("secret.txt");
    let compose = COMPOSE.replace("cloud/web-user-data.yaml", &secret.display().to_string());
    fs::write(root.path().join("shop/vmcompose.yaml"), &compose).expect("write");
    let err =
        ComposeFiles::load(&root.path().join("shop/vmcompose.yaml"), STRICT).expect_err("outside");
    assert!(matches!(err, ComposeFileError::Outside { .. }), "{err}");
}

#[test]
fn refuses_symlinks_that_leave_the_tree() {
    let (root, path) = project(COMPOSE);
    let link = root.path().join("shop/cloud/web-user-data.yaml");
    fs::remove_file(&link).expect("rm");
    std::os::unix::fs::symlink(root.path().join("secret.txt"), &link).expect("symlink");
    let err = ComposeFiles::load(&path, STRICT).expect_err("symlink out");
    assert!(matches!(err, ComposeFileError::Outside { .. }), "{err}");
}

#[test]
fn allow_outside_files_lifts_the_refusal() {
    let compose = COMPOSE.replace("cloud/web-user-data.yaml", "../secret.txt");
    let (_root, path) = project(&compose);
    let files = ComposeFiles::load(
        &path,
        FilePolicy::Required {
            allow_outside: true,
        },
    )
    .expect("allowed");
    assert_eq!(files.files["../secret.txt"], b"outside");
}

#[test]
fn a_missing_file_names_the_field() {
    let compose = COMPOSE.replace("cloud/web-user-data.yaml", "cloud/nope.yaml");
    let (_root, path) = project(&compose);
    let err = ComposeFiles::load(&path, STRICT).expect_err("missing");
    let text = err.to_string();
    assert!(
        text.starts_with("services.web.cloudInit.userDataFile: cannot read cloud/nope.yaml"),
        "{text}"
    );
}

#[test]
fn best_effort_skips_what_cannot_be_sent() {
    let compose = COMPOSE
        .replace("cloud/web-user-data.yaml", "cloud/nope.yaml")
        .replace("./cloud/net.yaml", "../secret.txt");
    let (_root, path) = project(&compose);
    let files = ComposeFiles::load(
        &path,
        FilePolicy::BestEffort {
            allow_outside: false,
        },
    )
    .expect("best effort");
    assert_eq!(files.files.keys().collect::<Vec<_>>(), ["cloud/net.yaml"]);
}

#[test]
fn unparsable_yaml_is_sent_for_the_daemon_to_judge() {
    let (_root, path) = project("services: [unclosed");
    let files = ComposeFiles::load(&path, STRICT).expect("sent as is");
    assert_eq!(files.yaml, "services: [unclosed");
    assert!(files.files.is_empty());
}

#[test]
fn default_file_names_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = find_compose_file(None, dir.path()).expect_err("none yet");
    assert!(err.to_string().contains("vmcompose.yaml"), "{err}");

    fs::write(dir.path().join("compose.yaml"), "").expect("write");
    assert_eq!(
        find_compose_file(None, dir.path()).expect("found"),
        dir.path().join("compose.yaml")
    );
    fs::write(dir.path().join("vmcompose.yml"), "").expect("write");
    assert_eq!(
        find_compose_file(None, dir.path()).expect("found"),
        dir.path().join("vmcompose.yml")
    );
    fs::write(dir.path().join("vmcompose.yaml"), "").expect("write");
    assert_eq!(
        find_compose_file(None, dir.path()).expect("found"),
        dir.path().join("vmcompose.yaml")
    );

    let explicit = Path::new("/elsewhere/x.yaml");
    assert_eq!(
        find_compose_file(Some(explicit), dir.path()).expect("explicit"),
        explicit
    );
}

#[test]
fn ps_table_shows_absent_services() {
    let services = [
        pb::ComposeServiceStatus {
            service: "web".to_owned(),
            vm: Some(pb::VmInfo {
                name: "shop-web".to_owned(),
                state: pb::VmState::Running as i32,
                image: "nixos/base:1".to_owned(),
                ..pb::VmInfo::default()
            }),
        },
        pb::ComposeServiceStatus {
            service: "db".to_owned(),
            vm: None,
        },
    ];
    let lines: Vec<String> = services_table(&services)
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        [
            "SERVICE NAME STATE IMAGE IPS",
            "web shop-web running nixos/base:1 -",
            "db - absent - -",
        ]
    );
}

fn event(
    service: &str,
    kind: pb::ComposeEventKind,
    message: &str,
) -> Result<pb::ComposeEvent, tonic::Status> {
    Ok(pb::ComposeEvent {
        project: "shop".to_owned(),
        service: service.to_owned(),
        network: String::new(),
        kind: kind as i32,
        message: message.to_owned(),
        timestamp_unix_nanos: 0,
    })
}

fn json_session() -> Session {
    Session {
        socket: "/unused.sock".into(),
        output: crate::cli::output::OutputFormat::Json,
        context: None,
    }
}

#[tokio::test]
async fn up_succeeds_when_every_service_came_up() {
    let events = futures::stream::iter([
        event("web", pb::ComposeEventKind::Creating, ""),
        event("web", pb::ComposeEventKind::Started, ""),
        event("", pb::ComposeEventKind::Done, ""),
    ]);
    follow_up(&json_session(), events).await.expect("up");
}

#[tokio::test]
async fn up_fails_naming_the_failed_service() {
    let events = futures::stream::iter([
        event("web", pb::ComposeEventKind::Started, ""),
        event("db", pb::ComposeEventKind::Failed, "no image nixos/db:1"),
        event("", pb::ComposeEventKind::Done, ""),
    ]);
    let err = follow_up(&json_session(), events)
        .await
        .expect_err("db failed");
    assert_eq!(err.to_string(), "service db failed: no image nixos/db:1");

    let events = futures::stream::iter([
        event("web", pb::ComposeEventKind::Failed, "x"),
        event("db", pb::ComposeEventKind::Failed, "y"),
    ]);
    let err = follow_up(&json_session(), events)
        .await
        .expect_err("both failed");
    assert_eq!(err.to_string(), "2 services failed: web, db");
}

#[tokio::test]
async fn up_reports_the_status_that_ends_the_stream() {
    let events = futures::stream::iter([
        event("web", pb::ComposeEventKind::Creating, ""),
        Err(tonic::Status::invalid_argument(
            "services.web.image: no such image",
        )),
    ]);
    let err = follow_up(&json_session(), events)
        .await
        .expect_err("refused");
    assert_eq!(err.to_string(), "services.web.image: no such image");
}
