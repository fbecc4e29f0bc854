//! Unlocking the store: where the passphrase or key file comes from, the
//! throttle's waits, and stores made before encryption at rest.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use fieldsync_store::{
    AeadSeal, NewDevice, PlainSeal, RepairOptions, RepairReport, SealError, Store, StoreError,
    StoreKind, StoreOptions,
};
use fieldsync_vault::{
    Credential, DataKey, LockKind, STORE_FILE, Vault, VaultError, VaultState, create_key_file,
};
use zeroize::Zeroizing;

/// The environment variable a passphrase is taken from when it is set.
pub(crate) const PASSPHRASE_ENV: &str = "FIELDSYNC_PASSPHRASE";

/// Where the store's key comes from, as the command line says.
#[derive(Debug, Clone)]
pub(crate) struct KeySource {
    /// `--key-file PATH` (or `FIELDSYNC_KEY_FILE`).
    pub(crate) key_file: Option<PathBuf>,
}

/// Most bytes of the store's page cache (redb's default is 1 GiB). The
/// cache fills with the pages a sync writes or reads and then stays
/// resident for as long as `sync --watch` runs: with the default, a device
/// that received 20,000 changes kept ~18 MiB more than with this bound.
/// Pages beyond it are read again through the operating system's cache;
/// neither `case list` nor such a sync measurably slowed.
const PAGE_CACHE: usize = 4 * 1024 * 1024;

/// How the agent opens its store.
fn store_options() -> StoreOptions {
    StoreOptions::default().with_cache_size(PAGE_CACHE)
}

/// The store file inside a data directory.
fn store_path(dir: &Path) -> PathBuf {
    dir.join(STORE_FILE)
}

/// `N` bytes from the OS random generator.
pub(crate) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| anyhow!("the OS random generator failed: {e}"))?;
    Ok(buf)
}

/// The passphrase from the environment, if the variable is set.
fn passphrase_from_env() -> Result<Option<Zeroizing<String>>> {
    match std::env::var(PASSPHRASE_ENV) {
        Ok(p) if p.is_empty() => bail!("{PASSPHRASE_ENV} is set but empty"),
        Ok(p) => Ok(Some(Zeroizing::new(p))),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => bail!("{PASSPHRASE_ENV} is not valid UTF-8"),
    }
}

/// Asks for a passphrase on the terminal, without echo.
fn prompt(text: &str) -> Result<Zeroizing<String>> {
    let p = rpassword::prompt_password(text).map(Zeroizing::new).map_err(|e| {
        anyhow!(
            "cannot read a passphrase ({e}): run in a terminal, set {PASSPHRASE_ENV}, or pass --key-file PATH"
        )
    })?;
    if p.is_empty() {
        bail!("no passphrase given; nothing was changed");
    }
    Ok(p)
}

/// The credential for a new store: the key file (created if missing), the
/// passphrase from the environment, or one typed twice.
fn credential_for_init(dir: &Path, keys: &KeySource) -> Result<Credential> {
    if let Some(path) = &keys.key_file {
        let inside = |p: &Path| {
            let parent = p.parent().and_then(|d| d.canonicalize().ok());
            matches!((parent, dir.canonicalize()), (Some(k), Ok(d)) if k.starts_with(&d))
        };
        if inside(path) {
            eprintln!(
                "warning: the key file is inside the data directory: whoever copies the directory can read the store"
            );
        }
        if !path.exists() {
            create_key_file(path)?;
            eprintln!(
                "created key file {} (32 random bytes); keep it off this device's disk, it is the only way into the store",
                path.display()
            );
        }
        return Ok(Credential::from_key_file(path)?);
    }
    if let Some(p) = passphrase_from_env()? {
        return Ok(Credential::passphrase(p));
    }
    let first = prompt("new passphrase for this device's store: ")?;
    let second = prompt("the same passphrase again: ")?;
    if first != second {
        bail!("the passphrases do not match; nothing was created");
    }
    Ok(Credential::passphrase(first))
}

/// The credential for a store locked with `lock`.
fn credential_for_unlock(keys: &KeySource, lock: LockKind) -> Result<Credential> {
    match (lock, &keys.key_file) {
        (LockKind::KeyFile, Some(path)) => Ok(Credential::from_key_file(path)?),
        (LockKind::Passphrase, None) => match passphrase_from_env()? {
            Some(p) => Ok(Credential::passphrase(p)),
            None => Ok(Credential::passphrase(prompt("passphrase: ")?)),
        },
        (locked_with, _) => Err(VaultError::LockMismatch { locked_with }.into()),
    }
}

/// Creates an encrypted store in `dir` for a new device.
pub(crate) fn create_store(dir: &Path, keys: &KeySource, device: NewDevice<'_>) -> Result<Store> {
    let vault = Vault::new(dir);
    let path = store_path(dir);
    match vault.state()? {
        VaultState::Wiped { at, reason } => bail!(
            "{}; remove {} to start over with a new store",
            VaultError::StoreWiped { at, reason },
            dir.display()
        ),
        VaultState::Locked(_) if !path.exists() => return Err(orphan_header(&vault)),
        VaultState::Locked(_) => return Err(StoreError::AlreadyExists { path }.into()),
        VaultState::Absent if path.exists() => {
            return Err(StoreError::AlreadyExists { path }.into());
        }
        VaultState::Absent => {}
    }
    let credential = credential_for_init(dir, keys)?;
    let key = vault.create(&credential)?;
    drop(credential);
    match Store::create_sealed(&path, device, AeadSeal::new(key.as_bytes(), random()?)) {
        Ok(store) => {
            owner_only(&path);
            Ok(store)
        }
        Err(e) => {
            if let Err(cleanup) = vault.discard_new() {
                tracing::warn!(error = %cleanup, "cannot remove the new key header");
            }
            Err(e.into())
        }
    }
}

/// Makes the store file readable by its owner only (where the platform has
/// modes): it is ciphertext, but nobody else's business. The key header is
/// written that way already.
fn owner_only(store: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Err(e) = std::fs::set_permissions(store, std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!(path = %store.display(), error = %e, "cannot restrict permissions");
        }
    }
    #[cfg(not(unix))]
    let _ = store;
}

/// Opens the store in `dir`, unlocking it first. A store made before
/// encryption at rest (no key header) opens with a one-line warning.
pub(crate) fn open_store(dir: &Path, keys: &KeySource) -> Result<Store> {
    let vault = Vault::new(dir);
    let path = store_path(dir);
    let store: Store = match vault.state()? {
        VaultState::Wiped { at, reason } => {
            return Err(VaultError::StoreWiped { at, reason }.into());
        }
        VaultState::Absent => match Store::open_with(&path, PlainSeal, store_options()) {
            Ok(store) => {
                eprintln!(
                    "warning: the store at {} is not encrypted at rest (it was made before encryption at rest); its case files can be read from the disk",
                    path.display()
                );
                store
            }
            Err(StoreError::Seal(SealError::StoreEncrypted)) => bail!(
                "this store is encrypted; it needs its key, and its key header {} is missing: restore it from a backup of this device",
                vault.header_path().display()
            ),
            Err(e) => return Err(e.into()),
        },
        VaultState::Locked(lock) => {
            if !path.exists() {
                return Err(orphan_header(&vault));
            }
            let key = unlock_key(&vault, keys, lock)?;
            Store::open_with(
                &path,
                AeadSeal::new(key.as_bytes(), random()?),
                store_options(),
            )?
        }
    };
    // A wipe order accepted by a run that stopped before it could destroy
    // the keys is obeyed now, before anything is read.
    if let Some(pending) = store.pending_wipe()? {
        drop(store);
        let (nonce, reason) = match fieldsync_identity::decode_signed::<
            fieldsync_identity::WipeOrderBody,
        >(&pending.order)
        {
            Ok(order) => {
                let body = order.payload().value();
                (hex::encode(&body.nonce[..4]), body.reason.clone())
            }
            Err(_) => ("(unreadable)".to_owned(), String::new()),
        };
        obey_wipe_order(dir, &nonce, &reason, crate::commands::now())?;
        bail!("this device was ordered wiped by headquarters; its store is destroyed");
    }
    Ok(store)
}

/// Obeys a wipe order headquarters signed for this device (verified and
/// recorded by the session): destroys the store's key material at once.
pub(crate) fn obey_wipe_order(
    dir: &Path,
    nonce: &str,
    reason: &str,
    now: fieldsync_identity::Timestamp,
) -> Result<()> {
    let why = format!("by wipe order {nonce} from headquarters: {reason}");
    let done = fieldsync_vault::shred(dir, &why, now)?;
    eprintln!(
        "wipe order {nonce} from headquarters ({reason}): this device's keys were destroyed at {}; its store cannot be read any more",
        done.at
    );
    Ok(())
}

/// `repair`: salvages a damaged store file into a new store in its place,
/// keeping the damaged file aside (see `Store::repair`). An encrypted store
/// is unlocked first, and the new store is sealed under the same key.
pub(crate) fn repair(
    dir: &Path,
    keys: &KeySource,
    now: fieldsync_identity::Timestamp,
) -> Result<RepairReport> {
    let vault = Vault::new(dir);
    let path = store_path(dir);
    let how = RepairOptions {
        epoch: random()?,
        now,
        device: None,
        kind: Some(StoreKind::Device),
    };
    match vault.state()? {
        VaultState::Wiped { at, reason } => Err(VaultError::StoreWiped { at, reason }.into()),
        VaultState::Absent => Ok(Store::repair(&path, &how)?),
        VaultState::Locked(lock) => {
            if !path.exists() {
                return Err(orphan_header(&vault));
            }
            let key = unlock_key(&vault, keys, lock)?;
            Ok(Store::repair_sealed(
                &path,
                &AeadSeal::new(key.as_bytes(), random()?),
                AeadSeal::new(key.as_bytes(), random()?),
                &how,
            )?)
        }
    }
}

/// Unwraps the data key, telling the user about (and sitting out) the
/// throttle's waits.
fn unlock_key(vault: &Vault, keys: &KeySource, lock: LockKind) -> Result<DataKey> {
    let credential = credential_for_unlock(keys, lock)?;
    Ok(vault.unlock(&credential, &mut |wait, failures| {
        eprintln!(
            "{failures} failed attempts in a row: waiting {} before trying this one",
            human(wait)
        );
        std::thread::sleep(wait);
    })?)
}

/// A key header without a store beside it: an `init` that was interrupted
/// (or a store file removed by hand).
fn orphan_header(vault: &Vault) -> anyhow::Error {
    anyhow!(
        "the key header {} has no store beside it (an interrupted init?); remove it to start over with `init`",
        vault.header_path().display()
    )
}

/// A wait for people: `2 s`, `4 min 16 s`.
fn human(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match (s / 60, s % 60) {
        (0, s) => format!("{s} s"),
        (m, 0) => format!("{m} min"),
        (m, s) => format!("{m} min {s} s"),
    }
}

/// `wipe [--yes]`: destroys the store's key after a confirmation (type
/// `wipe`), without asking for the passphrase.
pub(crate) fn wipe(dir: &Path, yes: bool, now: fieldsync_identity::Timestamp) -> Result<()> {
    let vault = Vault::new(dir);
    let path = store_path(dir);
    match vault.state()? {
        VaultState::Wiped { at, .. } => {
            let at = at.map_or_else(|| "an unknown date".to_owned(), |t| t.to_string());
            println!("this store was already wiped on {at}; nothing to do");
            return Ok(());
        }
        VaultState::Absent if !path.exists() => {
            return Err(StoreError::NotInitialized { path }.into());
        }
        VaultState::Absent | VaultState::Locked(_) => {}
    }
    if !yes {
        eprintln!(
            "This destroys the key of the store in {}: every case on this device, and every change not yet synced, becomes unreadable for good.",
            dir.display()
        );
        eprint!("Type \"wipe\" to go on: ");
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .context("cannot read the confirmation")?;
        if !std::io::stdin().is_terminal() {
            // Nothing echoed the answer: end the prompt's line.
            eprintln!();
        }
        if answer.trim() != "wipe" {
            if !std::io::stdin().is_terminal() && answer.is_empty() {
                bail!("wipe needs a confirmation (or --yes); nothing was changed");
            }
            bail!("wipe cancelled; nothing was changed");
        }
    }
    let done = fieldsync_vault::shred(dir, "with `fieldsync-agent wipe` on this device", now)?;
    if done.plain_store_overwritten {
        println!(
            "wiped at {}: the store (not encrypted at rest) was overwritten and removed",
            done.at
        );
    } else {
        println!(
            "wiped at {}: the store's key is destroyed; its data cannot be recovered",
            done.at
        );
    }
    Ok(())
}
