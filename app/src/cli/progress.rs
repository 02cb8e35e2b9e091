//! What long operations show while they run, on stderr: a byte bar for an
//! import, one bar per blob for push and pull, one spinner per service for
//! compose up. Each view has a plain mode that prints finished steps as lines
//! when stderr is not a terminal.

use std::collections::HashMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use vmr_proto::v1 as pb;

use super::json::compose_event_word;
use super::output::short_digest;

const BYTES_TEMPLATE: &str =
    "{prefix:>14} {msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}";

fn bytes_style() -> ProgressStyle {
    // The template is a constant; a typo in it is caught by the unit tests.
    ProgressStyle::with_template(BYTES_TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// The byte bar of `vmr import`, hidden when nobody watches.
pub fn import_bar(visible: bool, total: u64, file_name: &str) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(bytes_style());
    bar.set_prefix("Importing");
    bar.set_message(file_name.to_owned());
    bar
}

/// Push or pull progress: one bar per blob.
pub struct TransferView {
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
    interactive: bool,
    /// "Pushing" / "Pulling".
    verb: &'static str,
    /// "Pushed" / "Pulled".
    done_word: &'static str,
}

impl TransferView {
    pub fn new(interactive: bool, verb: &'static str, done_word: &'static str) -> Self {
        let target = if interactive {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self {
            multi: MultiProgress::with_draw_target(target),
            bars: HashMap::new(),
            interactive,
            verb,
            done_word,
        }
    }

    pub fn blob(&mut self, blob: &pb::BlobProgress) {
        let label = format!(
            "{} {}",
            short_digest(&blob.digest),
            blob_kind(&blob.media_type)
        );
        let bar = self.bars.entry(blob.digest.clone()).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new(blob.total));
            bar.set_style(bytes_style());
            bar.set_prefix(self.verb);
            bar.set_message(label.clone());
            bar
        });
        if bar.is_finished() {
            return;
        }
        bar.set_length(blob.total);
        bar.set_position(blob.done);
        let finished = blob.skipped || (blob.total > 0 && blob.done >= blob.total);
        if !finished {
            return;
        }
        let word = if blob.skipped {
            "Already exists"
        } else {
            self.done_word
        };
        if self.interactive {
            bar.set_style(
                ProgressStyle::with_template("{prefix:>14} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(word);
            bar.finish();
        } else {
            bar.finish();
            eprintln!("{word} {label}");
        }
    }

    /// Leaves finished bars on screen, clears unfinished ones (a failure).
    pub fn finish(&self) {
        for bar in self.bars.values() {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}

/// The last word of a vmr media type (`disk.v1.qcow2` -> `disk (qcow2)`),
/// so that a bar says what it carries.
fn blob_kind(media_type: &str) -> String {
    if let Some(format) = media_type.strip_prefix("application/vnd.vmregistry.disk.v1.") {
        return format!("disk ({format})");
    }
    if media_type.contains("config") {
        return "config".to_owned();
    }
    if media_type.contains("manifest") {
        return "manifest".to_owned();
    }
    media_type.to_owned()
}

/// `vmr compose up`: a spinner per service on a terminal, else one line per
/// event.
pub struct ComposeView {
    multi: MultiProgress,
    spinners: HashMap<String, ProgressBar>,
    interactive: bool,
}

impl ComposeView {
    pub fn new(interactive: bool) -> Self {
        let target = if interactive {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self {
            multi: MultiProgress::with_draw_target(target),
            spinners: HashMap::new(),
            interactive,
        }
    }

    pub fn event(&mut self, event: &pb::ComposeEvent) {
        let line = event_line(event);
        if !self.interactive {
            println!("{line}");
            return;
        }
        if event.service.is_empty() {
            // Project-level events (networks, done) print above the spinners.
            let _ = self.multi.println(line);
            return;
        }
        let spinner = self
            .spinners
            .entry(event.service.clone())
            .or_insert_with(|| {
                let spinner = self.multi.add(ProgressBar::new_spinner());
                spinner.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:<24} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                spinner.set_prefix(event.service.clone());
                spinner.enable_steady_tick(Duration::from_millis(120));
                spinner
            });
        spinner.set_message(event_text(event));
        let kind = pb::ComposeEventKind::try_from(event.kind).ok();
        if matches!(
            kind,
            Some(
                pb::ComposeEventKind::Ready
                    | pb::ComposeEventKind::Unchanged
                    | pb::ComposeEventKind::Failed
            )
        ) {
            spinner.finish();
        }
    }

    pub fn finish(&self) {
        for spinner in self.spinners.values() {
            if !spinner.is_finished() {
                spinner.abandon();
            }
        }
    }
}

/// `web: started`, `web: failed: no image nixos/x:1`.
fn event_text(event: &pb::ComposeEvent) -> String {
    let kind = compose_event_word(event.kind).replace('-', " ");
    if event.message.is_empty() {
        kind
    } else {
        format!("{kind}: {}", event.message)
    }
}

/// One line per event: who (service, network or project) and what happened.
pub fn event_line(event: &pb::ComposeEvent) -> String {
    let who = if !event.service.is_empty() {
        format!("service {}", event.service)
    } else if !event.network.is_empty() {
        format!("network {}", event.network)
    } else {
        format!("project {}", event.project)
    };
    format!("{who}: {}", event_text(event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        ProgressStyle::with_template(BYTES_TEMPLATE).expect("bytes template");
        ProgressStyle::with_template("{spinner} {prefix:<24} {msg}").expect("spinner template");
    }

    #[test]
    fn event_lines_name_the_service_and_the_kind() {
        let event = pb::ComposeEvent {
            project: "demo".to_owned(),
            service: "web".to_owned(),
            network: String::new(),
            kind: pb::ComposeEventKind::Failed as i32,
            message: "no image nixos/x:1".to_owned(),
            timestamp_unix_nanos: 0,
        };
        assert_eq!(
            event_line(&event),
            "service web: failed: no image nixos/x:1"
        );
        let event = pb::ComposeEvent {
            service: String::new(),
            network: "demo-lan".to_owned(),
            kind: pb::ComposeEventKind::NetworkCreated as i32,
            message: String::new(),
            ..event
        };
        assert_eq!(event_line(&event), "network demo-lan: network created");
    }

    #[test]
    fn blob_kinds_are_short() {
        assert_eq!(
            blob_kind("application/vnd.vmregistry.disk.v1.qcow2"),
            "disk (qcow2)"
        );
        assert_eq!(
            blob_kind("application/vnd.vmregistry.vm.config.v1+json"),
            "config"
        );
    }
}
