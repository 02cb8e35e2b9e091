//! Contexts persisted in `<fs-path>/contexts.json` (written atomically: temp
//! file, fsync, rename). `default` comes from the daemon's flags, always
//! exists, and cannot be created or removed.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use vmr_ports::driving::{Context, ContextUseCases, ContextView, ErrorKind, UseCaseError};

pub const DEFAULT_CONTEXT: &str = "default";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    #[serde(default)]
    current: Option<String>,
    #[serde(default)]
    contexts: Vec<Context>,
}

pub struct ContextService {
    path: PathBuf,
    default: Context,
    /// Serialises read-modify-write of the file.
    lock: Mutex<()>,
}

fn check_name(name: &str) -> Result<(), UseCaseError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(UseCaseError::invalid(
            "name",
            format!(
                "'{name}' is not a valid context name (letters, digits, '-', '_', '.'; at most 63)"
            ),
        ))
    }
}

fn check_url(field: &str, url: Option<&str>) -> Result<(), UseCaseError> {
    let Some(url) = url else { return Ok(()) };
    let host = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or_default();
    if host.is_empty() || host.starts_with('/') || host.contains(char::is_whitespace) {
        return Err(UseCaseError::invalid(
            field,
            format!("'{url}' is not an http:// or https:// URL"),
        ));
    }
    Ok(())
}

impl ContextService {
    /// `default` is built from the daemon's `--registry-url` and `--auth-url`.
    pub fn new(path: PathBuf, registry_url: Option<String>, auth_url: Option<String>) -> Self {
        Self {
            path,
            default: Context {
                name: DEFAULT_CONTEXT.into(),
                registry_url,
                auth_url,
                insecure: false,
            },
            lock: Mutex::new(()),
        }
    }

    async fn load(&self) -> Result<Saved, UseCaseError> {
        match tokio::fs::read(&self.path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                UseCaseError::internal(format!("{} is corrupt: {e}", self.path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Saved::default()),
            Err(e) => Err(UseCaseError::internal(format!(
                "reading {}: {e}",
                self.path.display()
            ))),
        }
    }

    async fn save(&self, saved: &Saved) -> Result<(), UseCaseError> {
        let bytes = serde_json::to_vec_pretty(saved)
            .map_err(|e| UseCaseError::internal(format!("encoding contexts: {e}")))?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| UseCaseError::internal(format!("writing contexts: {e}")))?
            .map_err(|e| UseCaseError::internal(format!("writing contexts: {e}")))
    }

    fn view(&self, saved: &Saved, context: Context) -> ContextView {
        let current = saved.current.as_deref().unwrap_or(DEFAULT_CONTEXT) == context.name;
        ContextView { context, current }
    }

    fn find(&self, saved: &Saved, name: &str) -> Result<Context, UseCaseError> {
        if name == DEFAULT_CONTEXT {
            return Ok(self.default.clone());
        }
        saved
            .contexts
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .ok_or_else(|| UseCaseError::not_found(format!("context {name} not found")))
    }

    /// The context a push, pull or login uses: `name`, or the current one.
    pub async fn resolve(&self, name: &str) -> Result<Context, UseCaseError> {
        Ok(self.inspect(name).await?.context)
    }
}

fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[async_trait]
impl ContextUseCases for ContextService {
    async fn create(&self, context: Context) -> Result<ContextView, UseCaseError> {
        check_name(&context.name)?;
        check_url("registry_url", context.registry_url.as_deref())?;
        check_url("auth_url", context.auth_url.as_deref())?;
        if context.registry_url.is_none() {
            return Err(UseCaseError::invalid("registry_url", "is required"));
        }
        let _guard = self.lock.lock().await;
        let mut saved = self.load().await?;
        if context.name == DEFAULT_CONTEXT || saved.contexts.iter().any(|c| c.name == context.name)
        {
            return Err(UseCaseError::new(
                ErrorKind::AlreadyExists,
                format!("context {} already exists", context.name),
            ));
        }
        saved.contexts.push(context.clone());
        self.save(&saved).await?;
        Ok(self.view(&saved, context))
    }

    async fn list(&self) -> Result<Vec<ContextView>, UseCaseError> {
        let saved = self.load().await?;
        let mut all = vec![self.view(&saved, self.default.clone())];
        let mut others = saved.contexts.clone();
        others.sort_by(|a, b| a.name.cmp(&b.name));
        all.extend(others.into_iter().map(|c| self.view(&saved, c)));
        Ok(all)
    }

    async fn use_context(&self, name: &str) -> Result<ContextView, UseCaseError> {
        let _guard = self.lock.lock().await;
        let mut saved = self.load().await?;
        let context = self.find(&saved, name)?;
        saved.current = Some(context.name.clone());
        self.save(&saved).await?;
        Ok(self.view(&saved, context))
    }

    async fn remove(&self, name: &str) -> Result<(), UseCaseError> {
        if name == DEFAULT_CONTEXT {
            return Err(UseCaseError::precondition(
                "context default comes from the daemon's flags and cannot be removed",
            ));
        }
        let _guard = self.lock.lock().await;
        let mut saved = self.load().await?;
        self.find(&saved, name)?;
        saved.contexts.retain(|c| c.name != name);
        if saved.current.as_deref() == Some(name) {
            saved.current = None;
        }
        self.save(&saved).await
    }

    async fn inspect(&self, name: &str) -> Result<ContextView, UseCaseError> {
        let saved = self.load().await?;
        let name = if name.is_empty() {
            saved
                .current
                .clone()
                .unwrap_or_else(|| DEFAULT_CONTEXT.into())
        } else {
            name.to_string()
        };
        // A current context removed by hand from the file falls back to default.
        let context = self.find(&saved, &name).or_else(|e| {
            if saved.current.as_deref() == Some(name.as_str()) {
                Ok(self.default.clone())
            } else {
                Err(e)
            }
        })?;
        Ok(self.view(&saved, context))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(dir: &std::path::Path) -> ContextService {
        ContextService::new(
            dir.join("contexts.json"),
            Some("http://127.0.0.1:5000".into()),
            None,
        )
    }

    fn ctx(name: &str, url: &str) -> Context {
        Context {
            name: name.into(),
            registry_url: Some(url.into()),
            auth_url: None,
            insecure: false,
        }
    }

    #[tokio::test]
    async fn contexts_persist_and_default_is_always_there() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path());
        let list = svc.list().await.unwrap();
        assert_eq!(list.len(), 1);
        assert!(list[0].current);
        assert_eq!(
            list[0].context.registry_url.as_deref(),
            Some("http://127.0.0.1:5000")
        );

        svc.create(ctx("prod", "https://registry.example.org"))
            .await
            .unwrap();
        svc.use_context("prod").await.unwrap();
        // A new service over the same file (a restarted daemon) sees the same.
        let again = service(dir.path());
        let current = again.inspect("").await.unwrap();
        assert_eq!(current.context.name, "prod");
        assert!(current.current);

        // Removing the current context falls back to default.
        again.remove("prod").await.unwrap();
        assert_eq!(again.inspect("").await.unwrap().context.name, "default");
    }

    #[tokio::test]
    async fn bad_contexts_are_refused_with_their_field() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path());
        let err = svc.create(ctx("bad/name", "http://x")).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert_eq!(err.field.as_deref(), Some("name"));
        let err = svc.create(ctx("ok", "ftp://x")).await.unwrap_err();
        assert_eq!(err.field.as_deref(), Some("registry_url"));
        let err = svc
            .create(ctx("default", "http://x.example"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::AlreadyExists);
        svc.create(ctx("two", "http://x.example")).await.unwrap();
        let err = svc
            .create(ctx("two", "http://x.example"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::AlreadyExists);
        assert_eq!(
            svc.remove("default").await.unwrap_err().kind,
            ErrorKind::FailedPrecondition
        );
        assert_eq!(
            svc.remove("nope").await.unwrap_err().kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            svc.use_context("nope").await.unwrap_err().kind,
            ErrorKind::NotFound
        );
    }
}
