//! What one unlock costs: Argon2id with the default parameters (and a key
//! file, for comparison), measured on this machine.
//!
//! `cargo run --release -p fieldsync-vault --example kdf_cost` (and without
//! `--release` for a debug build, where the workspace builds argon2 and
//! blake2 optimized).
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::time::Instant;

use fieldsync_vault::{Credential, KdfParams, Vault, create_key_file};
use zeroize::Zeroizing;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let cred = Credential::passphrase(Zeroizing::new("correct horse battery".to_owned()));
    let vault = Vault::new(&dir.path().join("p"));
    std::fs::create_dir(dir.path().join("p")).unwrap();
    vault.create(&cred).unwrap();
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        vault.unlock(&cred, &mut |_, _| {}).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "passphrase unlock ({}): median {:.0} ms (min {:.0}, max {:.0}) over 5",
        KdfParams::DEFAULT,
        times[2],
        times[0],
        times[4]
    );

    std::fs::create_dir(dir.path().join("k")).unwrap();
    let kf = dir.path().join("device.key");
    create_key_file(&kf).unwrap();
    let cred = Credential::from_key_file(&kf).unwrap();
    let vault = Vault::new(&dir.path().join("k"));
    vault.create(&cred).unwrap();
    let t = Instant::now();
    for _ in 0..100 {
        vault.unlock(&cred, &mut |_, _| {}).unwrap();
    }
    println!(
        "key file unlock: {:.2} ms each (BLAKE3; no Argon2id, no attempt counter)",
        t.elapsed().as_secs_f64() * 10.0
    );
}
