//! Accounts and contexts: `login` (asks the daemon to log in and keeps the
//! returned credential in the user's store), `logout` (revokes, then
//! forgets it), `register`, and the `context` commands. Passwords are asked
//! on the terminal without echo, or read from stdin with `--password-stdin`.

use std::io::{BufRead, IsTerminal};

use vmr_proto::v1 as pb;

use super::Session;
use super::args::{ContextCommand, LoginArgs, RegisterArgs};
use super::connect::{Client, Reply};
use super::credentials::{CredentialStore, StoredCredential};
use super::json::{ToJson, login_json, print_json};
use super::output::{or_dash, print_table, table};

/// The context the daemon builds from its own flags; always present.
const DEFAULT_CONTEXT: &str = "default";

/// The context a credential belongs to: `--context`, else the daemon's
/// current one, else `default` when the daemon cannot say.
pub async fn context_name(session: &Session, client: &mut Client) -> String {
    if let Some(name) = &session.context {
        return name.clone();
    }
    match client
        .inspect_context(pb::InspectContextRequest::default())
        .await
        .reply()
    {
        Ok(info) if !info.name.is_empty() => info.name,
        _ => DEFAULT_CONTEXT.to_owned(),
    }
}

/// User name and password from the flags, stdin or the terminal.
#[derive(Debug)]
struct Secrets {
    username: String,
    password: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Confirm {
    Once,
    /// Register: ask twice, so a typo does not lock the user out.
    Twice,
}

/// Runs on a blocking thread: terminal and stdin reads block.
fn read_secrets(
    username: Option<String>,
    password_stdin: bool,
    confirm: Confirm,
) -> anyhow::Result<Secrets> {
    let terminal = console::Term::stderr();
    let interactive = terminal.is_term() && std::io::stdin().is_terminal();
    let username = match username {
        Some(username) => username,
        None if interactive => {
            terminal.write_str("Username: ")?;
            terminal.read_line()?.trim().to_owned()
        }
        None => anyhow::bail!("no terminal to ask for a user name; pass --username"),
    };
    if username.is_empty() {
        anyhow::bail!("the user name is empty");
    }
    let password = if password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else if interactive {
        terminal.write_str("Password: ")?;
        let password = terminal.read_secure_line()?;
        if confirm == Confirm::Twice {
            terminal.write_str("Repeat the password: ")?;
            if terminal.read_secure_line()? != password {
                anyhow::bail!("the two passwords differ");
            }
        }
        password
    } else {
        anyhow::bail!("no terminal to ask for a password; pass --password-stdin");
    };
    if password.is_empty() {
        anyhow::bail!("the password is empty");
    }
    Ok(Secrets { username, password })
}

async fn ask_secrets(
    username: Option<String>,
    password_stdin: bool,
    confirm: Confirm,
) -> anyhow::Result<Secrets> {
    tokio::task::spawn_blocking(move || read_secrets(username, password_stdin, confirm)).await?
}

pub async fn login(session: &Session, args: LoginArgs) -> anyhow::Result<()> {
    let secrets = ask_secrets(args.username, args.password_stdin, Confirm::Once).await?;
    let mut client = session.client().await?;
    let context = context_name(session, &mut client).await;
    let request = pb::LoginRequest {
        context: context.clone(),
        username: secrets.username,
        password: secrets.password,
    };
    let response = client.login(request).await.reply()?;
    let store = CredentialStore::default_location()?;
    store.put(
        &context,
        StoredCredential::from_login(&response, jiff::Timestamp::now()),
    )?;
    if session.output.is_json() {
        print_json(&login_json(&context, &response));
    } else {
        println!(
            "Login Succeeded ({} on context {context})",
            response.username
        );
    }
    Ok(())
}

pub async fn logout(session: &Session) -> anyhow::Result<()> {
    let mut client = session.client().await?;
    let context = context_name(session, &mut client).await;
    let store = CredentialStore::default_location()?;
    let Some(credential) = store.get(&context)? else {
        if session.output.is_json() {
            print_json(&serde_json::json!({ "context": context, "loggedOut": false }));
        } else {
            println!("Not logged in to context {context}");
        }
        return Ok(());
    };
    let request = pb::LogoutRequest {
        context: context.clone(),
        scheme: credential.scheme.clone(),
        credential: credential.credential.clone(),
    };
    let revoked = client.logout(request).await.reply();
    // Forget it locally whatever the daemon said: the user asked to log out.
    store.remove(&context)?;
    match revoked {
        Ok(_) => {}
        // Already invalid: nothing left to revoke.
        Err(err) if err.code() == tonic::Code::Unauthenticated => {}
        Err(err) => anyhow::bail!(
            "removed the credential for context {context} here, but the daemon could not revoke it: {err}"
        ),
    }
    if session.output.is_json() {
        print_json(&serde_json::json!({ "context": context, "loggedOut": true }));
    } else {
        println!("Removed the login credential for context {context}");
    }
    Ok(())
}

pub async fn register(session: &Session, args: RegisterArgs) -> anyhow::Result<()> {
    let secrets = ask_secrets(args.username, args.password_stdin, Confirm::Twice).await?;
    let mut client = session.client().await?;
    let request = pb::RegisterRequest {
        context: session.context.clone().unwrap_or_default(),
        username: secrets.username,
        password: secrets.password,
        email: args.email.unwrap_or_default(),
    };
    let response = client.register(request).await.reply()?;
    if session.output.is_json() {
        print_json(&response.to_json());
    } else {
        println!("Registered {}; log in with `vmr login`", response.username);
    }
    Ok(())
}

pub async fn context(session: &Session, command: ContextCommand) -> anyhow::Result<()> {
    let mut client = session.client().await?;
    let json = session.output.is_json();
    match command {
        ContextCommand::Create(args) => {
            let request = pb::CreateContextRequest {
                name: args.name,
                registry_url: args.registry_url,
                auth_url: args.auth_url.unwrap_or_default(),
                insecure: args.insecure,
            };
            let info = client.create_context(request).await.reply()?;
            if json {
                print_json(&info.to_json());
            } else {
                println!("Created context {}", info.name);
            }
        }
        ContextCommand::Ls => {
            let response = client
                .list_contexts(pb::ListContextsRequest {})
                .await
                .reply()?;
            if json {
                print_json(&response.to_json());
            } else {
                print_table(&contexts_table(&response.contexts));
            }
        }
        ContextCommand::Use(args) => {
            let info = client
                .use_context(pb::UseContextRequest { name: args.name })
                .await
                .reply()?;
            if json {
                print_json(&info.to_json());
            } else {
                println!("Current context is now {}", info.name);
            }
        }
        ContextCommand::Rm(args) => {
            client
                .remove_context(pb::RemoveContextRequest {
                    name: args.name.clone(),
                })
                .await
                .reply()?;
            if json {
                print_json(&serde_json::json!({ "removed": args.name }));
            } else {
                println!("{}", args.name);
            }
        }
        ContextCommand::Inspect(args) => {
            let info = client
                .inspect_context(pb::InspectContextRequest {
                    name: args.name.unwrap_or_default(),
                })
                .await
                .reply()?;
            print_json(&info.to_json());
        }
    }
    Ok(())
}

/// docker's look: the current context's name carries a `*`.
fn contexts_table(contexts: &[pb::ContextInfo]) -> comfy_table::Table {
    let mut rows = table(["NAME", "REGISTRY", "AUTH", "TLS"]);
    for context in contexts {
        let name = if context.current {
            format!("{} *", context.name)
        } else {
            context.name.clone()
        };
        let tls = if context.insecure {
            "insecure"
        } else {
            "verified"
        };
        rows.add_row([
            name,
            or_dash(&context.registry_url).to_owned(),
            or_dash(&context.auth_url).to_owned(),
            tls.to_owned(),
        ]);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_table_marks_the_current_one() {
        let contexts = [
            pb::ContextInfo {
                name: "default".to_owned(),
                registry_url: "https://r.example".to_owned(),
                auth_url: String::new(),
                insecure: false,
                current: true,
            },
            pb::ContextInfo {
                name: "lab".to_owned(),
                registry_url: "http://127.0.0.1:5000".to_owned(),
                auth_url: "http://127.0.0.1:5005".to_owned(),
                insecure: true,
                current: false,
            },
        ];
        let lines: Vec<String> = contexts_table(&contexts)
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            lines,
            [
                "NAME REGISTRY AUTH TLS",
                "default * https://r.example - verified",
                "lab http://127.0.0.1:5000 http://127.0.0.1:5005 insecure",
            ]
        );
    }
}
