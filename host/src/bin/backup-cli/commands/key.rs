//! `backup-cli key …`: the key slots of an encrypted repository (list, add, remove), writer
//! keys for write-only backup hosts, and X25519 identities.

use super::init::write_private;
use crate::cli::KeyCommand;
use crate::output::{self, KeyChanged, KeySlots, NewKeyFile, Outcome};
use crate::settings::Settings;
use larder::repository::keys::{self, KeysFile};
use larder::repository::signing::SigningKey;
use larder::repository::{Repository, crypto::Keyring};
use larder::{Error, Result};
use std::sync::Arc;

/// The new passphrase of `key add --passphrase`.
const NEW_PASSPHRASE_ENV: &str = "BACKUP_CLI_NEW_PASSPHRASE";

pub async fn run(settings: &Settings, command: KeyCommand) -> Result<Outcome> {
    match command {
        KeyCommand::List => {
            let (repo, keys, _) = unlocked(settings).await?;
            let slots = KeySlots::new(repo.target().location(), &keys);
            Ok(output::report(settings.json, &slots, None))
        }
        KeyCommand::Add(args) => {
            let (repo, mut keys, keyring) = unlocked(settings).await?;
            if let Some(path) = &args.writer {
                let key = keys::writer_key(&keys, &keyring)?;
                write_private(path, format!("{key}\n").as_bytes())
                    .map_err(Error::io(format!("writing {}", path.display())))?;
                let changed = KeyChanged {
                    action: "writer key written",
                    slot: None,
                    file: Some(path.clone()),
                    targets: Vec::new(),
                };
                return Ok(output::report(settings.json, &changed, None));
            }
            let recipient = args
                .recipient
                .as_deref()
                .map(keys::parse_recipient)
                .transpose()?;
            let passphrase = match recipient {
                Some(_) => None,
                None => Some(new_passphrase()?),
            };
            let id = keys::add_slot(
                &mut keys,
                &keyring,
                recipient.as_ref(),
                passphrase.as_deref(),
                &args.label,
            )?;
            let targets = save(settings, &repo, &keys).await?;
            let changed = KeyChanged {
                action: "slot added",
                slot: keys
                    .slots
                    .iter()
                    .find(|s| s.id == id)
                    .map(output::SlotSummary::of),
                file: None,
                targets,
            };
            Ok(output::report(settings.json, &changed, None))
        }
        KeyCommand::Remove(args) => {
            let (repo, mut keys, _) = unlocked(settings).await?;
            let Some(position) = keys.slots.iter().position(|s| s.id == args.id) else {
                return Err(Error::Refused(format!(
                    "the repository at {} has no key slot '{}'; `backup-cli key list` shows them",
                    repo.target().location(),
                    args.id
                )));
            };
            if keys.slots.len() == 1 {
                return Err(Error::Refused(format!(
                    "slot '{}' is the last key slot of the repository at {}: without it no backup could ever be read again; add another slot first (`backup-cli key add`)",
                    args.id,
                    repo.target().location()
                )));
            }
            let removed = keys.slots.remove(position);
            let targets = save(settings, &repo, &keys).await?;
            let changed = KeyChanged {
                action: "slot removed",
                slot: Some(output::SlotSummary::of(&removed)),
                file: None,
                targets,
            };
            Ok(output::report(settings.json, &changed, None))
        }
        KeyCommand::Identity(args) => {
            let (identity, recipient) = keys::new_identity()?;
            write_new_key(&args.output, &identity)?;
            let made = NewKeyFile {
                file: args.output,
                public: recipient,
                kind: "identity",
            };
            Ok(output::report(settings.json, &made, None))
        }
        KeyCommand::Signer(args) => {
            let (key, signer) = SigningKey::generate()?;
            write_new_key(&args.output, &key)?;
            let made = NewKeyFile {
                file: args.output,
                public: signer,
                kind: "signing key",
            };
            Ok(output::report(settings.json, &made, None))
        }
    }
}

/// The repository (unlocked with this host's key), its keys file and its keyring.
async fn unlocked(settings: &Settings) -> Result<(Repository, KeysFile, Arc<Keyring>)> {
    let repo = settings.repository().await?;
    let Some(keyring) = repo.keyring().cloned() else {
        return Err(Error::Refused(format!(
            "the repository at {} is not encrypted, so it has no key slots (`backup-cli init --encrypt` creates an encrypted one)",
            repo.target().location()
        )));
    };
    let keys = keys::read(repo.target()).await?;
    Ok((repo, keys, keyring))
}

/// Writes the keys file to every target holding this repository; returns their names.
async fn save(settings: &Settings, repo: &Repository, keys: &KeysFile) -> Result<Vec<String>> {
    let mut saved = Vec::new();
    for target in &settings.targets().await?.targets {
        let same = target.name() == repo.target().name()
            || keys::read(target)
                .await
                .is_ok_and(|k| k.repository == keys.repository);
        if same {
            keys::write(target, keys).await?;
            saved.push(target.name().to_string());
        }
    }
    Ok(saved)
}

/// Writes a new secret key file (0600), never over an existing one.
fn write_new_key(path: &std::path::Path, text: &str) -> Result<()> {
    if path.exists() {
        return Err(Error::Refused(format!(
            "{} already exists; a key file is never overwritten (it may be the only key to a repository)",
            path.display()
        )));
    }
    write_private(path, format!("{text}\n").as_bytes())
        .map_err(Error::io(format!("writing {}", path.display())))
}

fn new_passphrase() -> Result<String> {
    if let Ok(value) = std::env::var(NEW_PASSPHRASE_ENV)
        && !value.is_empty()
    {
        return Ok(value);
    }
    keys::prompt_new("for the new slot")?.ok_or_else(|| {
        Error::KeyRequired(format!(
            "a new passphrase slot needs the new passphrase: set {NEW_PASSPHRASE_ENV} or run on a terminal; nothing was changed"
        ))
    })
}
