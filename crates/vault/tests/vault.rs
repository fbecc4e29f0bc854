//! The vault on real files: wrap and unwrap, wrong passphrases and their
//! throttle, damaged headers, key files, and the crypto-shred.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use fieldsync_identity::Timestamp;
use fieldsync_vault::{
    Credential, KEY_HEADER_FILE, KdfParams, LockKind, STORE_FILE, TOMBSTONE_FILE, Throttle, Vault,
    VaultError, VaultState, create_key_file, shred,
};
use zeroize::Zeroizing;

fn pass(p: &str) -> Credential {
    Credential::passphrase(Zeroizing::new(p.to_owned()))
}

fn vault(dir: &Path) -> Vault {
    Vault::new(dir).with_kdf_params(KdfParams::DANGER_TEST_ONLY)
}

fn no_pause() -> impl FnMut(Duration, u32) {
    |wait, n| panic!("unexpected pause of {wait:?} after {n} failures")
}

const T0: Timestamp = Timestamp::from_millis(1_780_000_000_000);

#[test]
fn wrap_and_unwrap_round_trip_with_the_default_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let v = Vault::new(dir.path());
    let cred = pass("a long enough passphrase");
    let key = v.create(&cred).unwrap();
    assert_eq!(v.state().unwrap(), VaultState::Locked(LockKind::Passphrase));
    let again = v.unlock(&cred, &mut no_pause()).unwrap();
    assert_eq!(key.as_bytes(), again.as_bytes());
    assert_ne!(key.as_bytes(), &[0u8; 32]);
    // The header names its parameters; a vault built with others still opens it.
    let other = Vault::new(dir.path()).with_kdf_params(KdfParams::DANGER_TEST_ONLY);
    assert_eq!(
        other.unlock(&cred, &mut no_pause()).unwrap().as_bytes(),
        key.as_bytes()
    );
    // Secrets do not print.
    assert_eq!(format!("{key:?}"), "DataKey(..)");
    assert_eq!(format!("{cred:?}"), "Credential::Passphrase(..)");
    // The header holds neither the key nor the passphrase.
    let header = std::fs::read(dir.path().join(KEY_HEADER_FILE)).unwrap();
    assert_eq!(header.len(), 152);
    assert!(!contains(&header, key.as_bytes()));
    assert!(!contains(&header, b"a long enough passphrase"));
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_second_create_and_a_short_passphrase_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    assert!(matches!(
        v.create(&pass("short")),
        Err(VaultError::PassphraseTooShort { min: 8 })
    ));
    assert!(!dir.path().join(KEY_HEADER_FILE).exists());
    v.create(&pass("first passphrase")).unwrap();
    let before = std::fs::read(dir.path().join(KEY_HEADER_FILE)).unwrap();
    assert!(matches!(
        v.create(&pass("second passphrase")),
        Err(VaultError::KeyExists { .. })
    ));
    assert_eq!(
        std::fs::read(dir.path().join(KEY_HEADER_FILE)).unwrap(),
        before
    );
    v.unlock(&pass("first passphrase"), &mut no_pause())
        .unwrap();
}

#[test]
fn a_wrong_passphrase_is_one_named_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    v.create(&pass("right passphrase")).unwrap();
    let before = std::fs::read(dir.path().join(KEY_HEADER_FILE)).unwrap();
    let err = v
        .unlock(&pass("wrong passphrase"), &mut no_pause())
        .unwrap_err();
    assert!(
        matches!(err, VaultError::WrongPassphrase { failures: 1, next_wait } if next_wait.is_zero()),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "wrong passphrase (or key file) for this store"
    );
    assert_eq!(
        std::fs::read(dir.path().join(KEY_HEADER_FILE)).unwrap(),
        before
    );
    assert_eq!(v.failures().unwrap(), 1);
    v.unlock(&pass("right passphrase"), &mut no_pause())
        .unwrap();
    assert_eq!(v.failures().unwrap(), 0);
}

#[test]
fn repeated_failures_wait_longer_each_time_and_a_success_resets_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let throttle = Throttle {
        free_attempts: 2,
        first_wait: Duration::from_millis(10),
        max_wait: Duration::from_millis(40),
    };
    let v = vault(dir.path()).with_throttle(throttle);
    v.create(&pass("right passphrase")).unwrap();
    let mut pauses = Vec::new();
    let mut errors = Vec::new();
    for _ in 0..6 {
        // A fresh handle each time: the count lives in the file, not in memory.
        let v = vault(dir.path()).with_throttle(throttle);
        let mut record = |wait: Duration, n: u32| pauses.push((wait.as_millis(), n));
        match v.unlock(&pass("wrong passphrase"), &mut record) {
            Err(VaultError::WrongPassphrase {
                failures,
                next_wait,
            }) => errors.push((failures, next_wait.as_millis())),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(pauses, [(10, 2), (20, 3), (40, 4), (40, 5)]);
    assert_eq!(
        errors,
        [(1, 0), (2, 10), (3, 20), (4, 40), (5, 40), (6, 40)]
    );
    let err = v
        .unlock(&pass("wrong passphrase"), &mut |_, _| {})
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "wrong passphrase (or key file) for this store (7 failed attempts in a row; the next attempt waits 40 ms)"
    );
    // The right passphrase waits too, then resets the count.
    let mut waited = None;
    v.unlock(&pass("right passphrase"), &mut |w, n| waited = Some((w, n)))
        .unwrap();
    assert_eq!(waited, Some((Duration::from_millis(40), 7)));
    assert_eq!(v.failures().unwrap(), 0);
    v.unlock(&pass("right passphrase"), &mut no_pause())
        .unwrap();
}

#[test]
fn an_attempt_is_counted_before_it_is_tried() {
    let dir = tempfile::tempdir().unwrap();
    let throttle = Throttle {
        free_attempts: 0,
        first_wait: Duration::from_millis(1),
        max_wait: Duration::from_millis(1),
    };
    let v = vault(dir.path()).with_throttle(throttle);
    v.create(&pass("right passphrase")).unwrap();
    let attempts = dir.path().join(fieldsync_vault::ATTEMPTS_FILE);
    // While the attempt waits, the count on disk still shows the failures so
    // far; by the time the key derivation runs it includes this attempt
    // (checked through the file after a failure).
    let mut seen = Vec::new();
    let _ = v.unlock(&pass("wrong passphrase"), &mut |_, n| {
        seen.push((n, std::fs::read_to_string(&attempts).ok()));
    });
    assert_eq!(seen, [(0, None)]);
    assert_eq!(std::fs::read_to_string(&attempts).unwrap(), "1\n");
}

#[test]
fn a_damaged_or_altered_header_gives_a_named_error() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let cred = pass("right passphrase");
    v.create(&cred).unwrap();
    let path = dir.path().join(KEY_HEADER_FILE);
    let good = std::fs::read(&path).unwrap();
    let with = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        v.unlock(&cred, &mut |_, _| {}).unwrap_err()
    };
    // One flipped bit anywhere: the checksum catches it.
    for at in [0, 9, 12, 40, 70, 100, 140, 151] {
        let mut b = good.clone();
        b[at] ^= 0x20;
        let err = with(&b);
        assert!(
            matches!(
                err,
                VaultError::HeaderCorrupt { .. } | VaultError::UnsupportedVersion { .. }
            ),
            "byte {at}: {err:?}"
        );
    }
    assert!(matches!(
        with(&good[..100]),
        VaultError::HeaderCorrupt { .. }
    ));
    assert!(matches!(with(b"hello"), VaultError::HeaderCorrupt { .. }));
    // A newer version is named as such.
    let mut newer = good.clone();
    newer[8] = 2;
    assert!(matches!(
        with(&newer),
        VaultError::UnsupportedVersion { found: 2, .. }
    ));
    // Parameters edited with the checksum recomputed: out of range is damage...
    let mut huge = good.clone();
    huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    reseal(&mut huge);
    let err = with(&huge);
    assert!(
        matches!(&err, VaultError::HeaderCorrupt { what, .. } if what.contains("memory")),
        "{err:?}"
    );
    // ... and in range, they no longer match what the key was wrapped with.
    let mut weaker = good.clone();
    weaker[16..20].copy_from_slice(&2u32.to_le_bytes());
    reseal(&mut weaker);
    assert!(matches!(with(&weaker), VaultError::WrongPassphrase { .. }));
    // Put back, it opens (the failures above were counted, none was free).
    std::fs::write(&path, &good).unwrap();
    v.unlock(&cred, &mut |_, _| {}).unwrap();
}

/// Recomputes a header's checksum after an edit.
fn reseal(b: &mut [u8]) {
    let sum = blake3::hash(&b[..136]);
    b[136..].copy_from_slice(&sum.as_bytes()[..16]);
}

#[test]
fn key_files_lock_and_unlock_and_are_not_interchangeable_with_passphrases() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let kf = keys.path().join("device.key");
    create_key_file(&kf).unwrap();
    assert_eq!(std::fs::read(&kf).unwrap().len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&kf).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(matches!(
        create_key_file(&kf),
        Err(VaultError::KeyFileExists { .. })
    ));
    let v = vault(dir.path());
    let cred = Credential::from_key_file(&kf).unwrap();
    let key = v.create(&cred).unwrap();
    assert_eq!(v.state().unwrap(), VaultState::Locked(LockKind::KeyFile));
    assert_eq!(
        v.unlock(&cred, &mut no_pause()).unwrap().as_bytes(),
        key.as_bytes()
    );
    // Another key file is a wrong key, with the same error as a passphrase.
    let other = keys.path().join("other.key");
    create_key_file(&other).unwrap();
    for _ in 0..5 {
        let err = v
            .unlock(&Credential::from_key_file(&other).unwrap(), &mut no_pause())
            .unwrap_err();
        assert!(
            matches!(err, VaultError::WrongPassphrase { failures: 0, next_wait } if next_wait.is_zero()),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "wrong passphrase (or key file) for this store"
        );
    }
    // Key files are not throttled (nobody guesses 256 random bits).
    assert_eq!(v.failures().unwrap(), 0);
    assert!(!dir.path().join(fieldsync_vault::ATTEMPTS_FILE).exists());
    // A passphrase is refused before anything is derived or counted.
    let failures = v.failures().unwrap();
    let err = v
        .unlock(&pass("some passphrase"), &mut no_pause())
        .unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::LockMismatch {
                locked_with: LockKind::KeyFile
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("--key-file"));
    assert_eq!(v.failures().unwrap(), failures);
    // Short or missing key files are named.
    let short = keys.path().join("short.key");
    std::fs::write(&short, [7u8; 31]).unwrap();
    assert!(matches!(
        Credential::from_key_file(&short),
        Err(VaultError::KeyFileTooShort { len: 31, .. })
    ));
    assert!(matches!(
        Credential::from_key_file(&keys.path().join("missing")),
        Err(VaultError::KeyFileRead { .. })
    ));
}

#[test]
fn shred_makes_the_key_unrecoverable_and_leaves_a_tombstone() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let cred = pass("right passphrase");
    let key = v.create(&cred).unwrap();
    std::fs::write(dir.path().join(STORE_FILE), b"ciphertext of the store").unwrap();
    let before = std::fs::read(dir.path().join(KEY_HEADER_FILE)).unwrap();
    let _ = v.unlock(&pass("wrong passphrase"), &mut no_pause());

    let done = shred(dir.path(), "reported lost\non a train", T0).unwrap();
    assert!(done.key_destroyed && !done.already_wiped && !done.plain_store_overwritten);
    assert_eq!(done.at, T0);
    // The header is still there, the same size, without its salt, nonce or wrapped key.
    let after = std::fs::read(dir.path().join(KEY_HEADER_FILE)).unwrap();
    assert_eq!(after.len(), before.len());
    assert!(!contains(&after, &before[32..64]), "salt survived");
    assert!(!contains(&after, &before[88..136]), "wrapped key survived");
    assert!(!contains(&after, key.as_bytes()));
    assert!(!dir.path().join(STORE_FILE).exists());
    assert!(!dir.path().join(fieldsync_vault::ATTEMPTS_FILE).exists());

    // Every later unlock says the store was wiped, with when and why.
    let err = v.unlock(&cred, &mut no_pause()).unwrap_err();
    assert!(
        matches!(&err, VaultError::StoreWiped { at: Some(at), reason } if *at == T0 && reason == "reported lost on a train"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "this store was wiped on {T0} (reported lost on a train); its data cannot be recovered"
        )
    );
    assert!(matches!(
        v.create(&cred),
        Err(VaultError::StoreWiped { .. })
    ));

    // Shredding again changes nothing and keeps the first time.
    let again = shred(dir.path(), "second order", Timestamp::from_millis(5)).unwrap();
    assert!(again.already_wiped && !again.key_destroyed);
    assert_eq!(again.at, T0);

    // Without its tombstone, the wiped header alone still says so.
    std::fs::remove_file(dir.path().join(TOMBSTONE_FILE)).unwrap();
    assert!(matches!(
        v.unlock(&cred, &mut no_pause()),
        Err(VaultError::StoreWiped { at: Some(at), .. }) if at == T0
    ));
}

#[test]
fn shred_overwrites_a_store_that_is_not_encrypted_and_refuses_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        shred(dir.path(), "", T0),
        Err(VaultError::NothingToWipe { .. })
    ));
    assert!(!dir.path().join(TOMBSTONE_FILE).exists());
    std::fs::write(dir.path().join(STORE_FILE), vec![b'x'; 3 << 20]).unwrap();
    let done = shred(dir.path(), "", T0).unwrap();
    assert!(done.plain_store_overwritten && !done.key_destroyed);
    assert!(!dir.path().join(STORE_FILE).exists());
    assert!(matches!(
        Vault::new(dir.path()).state().unwrap(),
        VaultState::Wiped { at: Some(at), .. } if at == T0
    ));
}
