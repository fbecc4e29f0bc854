//! Encryption at rest and `wipe`, end to end: the real `fieldsync-agent`
//! binary, one process per command, real files scanned byte by byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PASSPHRASE: &str = "north wind over the harbour";
const TITLE: &str = "Zanzibar obelisk 7731";
const NOTE: &str = "Met the courier at Kestrel dock, berth 0419";
const SUBJECT: &str = "Ottoline Vexworth";

/// How a command is run: which credential it is given.
#[derive(Clone, Copy)]
enum Lock<'a> {
    Passphrase(&'a str),
    KeyFile(&'a Path),
    Nothing,
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Out {
    fn ok(self) -> Self {
        assert_eq!(
            self.code,
            Some(0),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Failed with exit code 1; returns the one error line.
    fn error(&self) -> String {
        assert_eq!(self.code, Some(1), "stdout: {}", self.stdout);
        let last = self.stderr.trim_end().lines().last().unwrap_or_default();
        assert!(last.starts_with("error: "), "stderr: {}", self.stderr);
        last.to_owned()
    }
}

fn run(data: &Path, lock: Lock<'_>, args: &[&str], stdin: &str) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fieldsync-agent"));
    cmd.arg("--data").arg(data).args(args);
    for var in [
        "FIELDSYNC_DATA",
        "FIELDSYNC_LOG",
        "FIELDSYNC_PASSPHRASE",
        "FIELDSYNC_KEY_FILE",
    ] {
        cmd.env_remove(var);
    }
    match lock {
        Lock::Passphrase(p) => {
            cmd.env("FIELDSYNC_PASSPHRASE", p);
        }
        Lock::KeyFile(k) => {
            cmd.arg("--key-file").arg(k);
        }
        Lock::Nothing => {}
    }
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: start.elapsed(),
    }
}

/// Creates a store, a case with a distinctive title, a note and a subject;
/// returns the case id.
fn populate(data: &Path, lock: Lock<'_>) -> String {
    let case = run(
        data,
        lock,
        &[
            "case",
            "new",
            "--kind",
            "cultural-property",
            "--title",
            TITLE,
        ],
        "",
    )
    .ok()
    .stdout
    .trim()
    .to_owned();
    run(data, lock, &["case", "note", &case, NOTE], "").ok();
    run(
        data,
        lock,
        &[
            "case",
            "subject",
            "add",
            &case,
            "--name",
            SUBJECT,
            "--identifier",
            "passport=QX0042917",
        ],
        "",
    )
    .ok();
    let shown = run(data, lock, &["case", "show", &case], "").ok().stdout;
    for s in [TITLE, NOTE, SUBJECT] {
        assert!(shown.contains(s), "{shown}");
    }
    case
}

/// Every file under `dir` with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    out
}

/// Which of the case's strings occur in any file under `dir`.
fn leaks(dir: &Path, case: &str) -> Vec<String> {
    let needles = [
        TITLE,
        NOTE,
        SUBJECT,
        "QX0042917",
        "Zanzibar",
        "Vexworth",
        case,
    ];
    let all = files(dir);
    needles
        .iter()
        .filter(|n| {
            all.values()
                .any(|b| b.windows(n.len()).any(|w| w == n.as_bytes()))
        })
        .map(|n| (*n).to_owned())
        .collect()
}

fn init(data: &Path, lock: Lock<'_>) -> Out {
    run(
        data,
        lock,
        &["init", "--name", "nairobi-handheld", "--office", "nairobi"],
        "",
    )
}

#[test]
fn an_encrypted_store_leaves_no_case_content_on_disk_and_a_plain_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent");
    let lock = Lock::Passphrase(PASSPHRASE);
    let id = init(&data, lock).ok().stdout;
    assert_eq!(id.trim().len(), 64);
    let shown = run(&data, lock, &["id"], "").ok().stdout;
    assert!(shown.contains("encrypted   yes"), "{shown}");
    let case = populate(&data, lock);
    let names: Vec<String> = files(&data)
        .keys()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["fieldsync.key", "fieldsync.redb"]);
    assert_eq!(leaks(&data, &case), Vec::<String>::new());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for f in ["fieldsync.key", "fieldsync.redb"] {
            let mode = std::fs::metadata(data.join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }

    // The same scan over a store made before encryption at rest finds
    // everything (so the scan above can fail), and that store still opens,
    // with a one-line warning.
    let legacy = dir.path().join("legacy");
    std::fs::create_dir(&legacy).unwrap();
    fieldsync_store::Store::create(
        &legacy.join("fieldsync.redb"),
        fieldsync_store::NewDevice {
            seed: [5; 32],
            name: "old-laptop",
            epoch: [6; 16],
            now: fieldsync_identity::Timestamp::from_millis(1_790_000_000_000),
            kind: fieldsync_store::StoreKind::Device,
        },
    )
    .unwrap()
    .set_setting("office", "nairobi")
    .unwrap();
    let out = run(&legacy, Lock::Nothing, &["id"], "").ok();
    assert!(out.stdout.contains("old-laptop"), "{}", out.stdout);
    assert!(out.stdout.contains("encrypted   no"), "{}", out.stdout);
    let warning: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(warning.len(), 1, "{}", out.stderr);
    assert!(
        warning[0].starts_with("warning: ") && warning[0].contains("not encrypted at rest"),
        "{}",
        out.stderr
    );
    let plain_case = populate(&legacy, Lock::Nothing);
    let found = leaks(&legacy, &plain_case);
    for s in [TITLE, NOTE, SUBJECT] {
        assert!(found.contains(&s.to_owned()), "{s} not found: {found:?}");
    }
}

#[test]
fn a_wrong_passphrase_is_one_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent");
    init(&data, Lock::Passphrase(PASSPHRASE)).ok();
    let case = populate(&data, Lock::Passphrase(PASSPHRASE));
    let before = files(&data);
    let out = run(
        &data,
        Lock::Passphrase("not the passphrase"),
        &["case", "note", &case, "written with a wrong passphrase"],
        "",
    );
    assert_eq!(
        out.stderr,
        "error: wrong passphrase (or key file) for this store\n"
    );
    assert_eq!(out.code, Some(1));
    assert!(out.stdout.is_empty());
    // The store and its key header are untouched; only the failure was counted.
    let mut after = files(&data);
    let attempts = after.remove(&data.join("fieldsync.key.attempts"));
    assert_eq!(attempts.as_deref(), Some(&b"1\n"[..]));
    assert_eq!(after, before);
    // With the right passphrase nothing of the refused note is there.
    let shown = run(
        &data,
        Lock::Passphrase(PASSPHRASE),
        &["case", "show", &case],
        "",
    )
    .ok()
    .stdout;
    assert!(!shown.contains("wrong passphrase"), "{shown}");
    assert!(!data.join("fieldsync.key.attempts").exists());
    // No terminal and no passphrase: told what to do, not stuck on a prompt.
    let e = run(&data, Lock::Nothing, &["case", "list"], "").error();
    assert!(e.contains("FIELDSYNC_PASSPHRASE"), "{e}");
}

#[test]
fn repeated_wrong_passphrases_are_slowed_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent");
    init(&data, Lock::Passphrase(PASSPHRASE)).ok();
    let wrong = Lock::Passphrase("guess guess guess");
    let mut errors = Vec::new();
    for _ in 0..3 {
        let out = run(&data, wrong, &["case", "list"], "");
        assert!(!out.stderr.contains("waiting"), "{}", out.stderr);
        errors.push(out.error());
    }
    assert_eq!(
        errors[0],
        "error: wrong passphrase (or key file) for this store"
    );
    assert_eq!(errors[1], errors[0]);
    assert_eq!(
        errors[2],
        "error: wrong passphrase (or key file) for this store (3 failed attempts in a row; the next attempt waits 2 s)"
    );
    // The fourth attempt waits 2 s first, and says so.
    let out = run(&data, wrong, &["case", "list"], "");
    assert!(
        out.stderr
            .starts_with("3 failed attempts in a row: waiting 2 s before trying this one\n"),
        "{}",
        out.stderr
    );
    assert!(out.took >= Duration::from_secs(2), "{:?}", out.took);
    assert!(
        out.error()
            .ends_with("(4 failed attempts in a row; the next attempt waits 4 s)"),
        "{}",
        out.stderr
    );
    // The right passphrase waits its turn too, then the count starts over.
    let out = run(&data, Lock::Passphrase(PASSPHRASE), &["case", "list"], "").ok();
    assert!(out.stderr.contains("waiting 4 s"), "{}", out.stderr);
    assert!(out.took >= Duration::from_secs(4), "{:?}", out.took);
    let out = run(&data, Lock::Passphrase(PASSPHRASE), &["case", "list"], "").ok();
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    let out = run(&data, wrong, &["case", "list"], "");
    assert_eq!(
        out.error(),
        "error: wrong passphrase (or key file) for this store"
    );
}

#[test]
fn a_key_file_locks_the_store_instead_of_a_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent");
    let key = dir.path().join("usb").join("device.key");
    std::fs::create_dir(key.parent().unwrap()).unwrap();
    let out = init(&data, Lock::KeyFile(&key)).ok();
    assert!(out.stderr.contains("created key file"), "{}", out.stderr);
    assert_eq!(std::fs::read(&key).unwrap().len(), 32);
    let lock = Lock::KeyFile(&key);
    let case = populate(&data, lock);
    assert!(leaks(&data, &case).is_empty());

    // FIELDSYNC_KEY_FILE works as the flag does.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fieldsync-agent"));
    let listed = cmd
        .arg("--data")
        .arg(&data)
        .args(["case", "list"])
        .env_remove("FIELDSYNC_PASSPHRASE")
        .env("FIELDSYNC_KEY_FILE", &key)
        .output()
        .unwrap();
    assert!(listed.status.success());
    assert!(String::from_utf8_lossy(&listed.stdout).contains(TITLE));

    // A passphrase is refused with what to do; another key file is a wrong key.
    let e = run(&data, Lock::Passphrase(PASSPHRASE), &["case", "list"], "").error();
    assert!(
        e.contains("locked with a key file") && e.contains("--key-file"),
        "{e}"
    );
    let other = dir.path().join("other.key");
    std::fs::write(&other, [9u8; 32]).unwrap();
    let e = run(&data, Lock::KeyFile(&other), &["case", "list"], "").error();
    assert_eq!(e, "error: wrong passphrase (or key file) for this store");
    let short = dir.path().join("short.key");
    std::fs::write(&short, [9u8; 16]).unwrap();
    let e = run(&data, Lock::KeyFile(&short), &["case", "list"], "").error();
    assert!(e.contains("at least 32 random bytes"), "{e}");
    // And a passphrase store refuses a key file.
    let pdata = dir.path().join("p");
    init(&pdata, Lock::Passphrase(PASSPHRASE)).ok();
    let e = run(&pdata, Lock::KeyFile(&key), &["id"], "").error();
    assert!(e.contains("locked with a passphrase"), "{e}");
    // A key file kept inside the data directory protects nothing: said so.
    let inside = dir.path().join("inside");
    let out = init(&inside, Lock::KeyFile(&inside.join("device.key"))).ok();
    assert!(
        out.stderr
            .contains("warning: the key file is inside the data directory"),
        "{}",
        out.stderr
    );
    // A passphrase too short for a new store is refused and leaves nothing.
    let sdata = dir.path().join("s");
    let e = init(&sdata, Lock::Passphrase("short")).error();
    assert!(e.contains("at least 8 characters"), "{e}");
    assert!(files(&sdata).is_empty());
}

#[test]
fn wipe_yes_destroys_the_key_and_every_later_command_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent");
    let lock = Lock::Passphrase(PASSPHRASE);
    init(&data, lock).ok();
    let case = populate(&data, lock);
    let header_before = std::fs::read(data.join("fieldsync.key")).unwrap();

    // No passphrase needed to wipe.
    let out = run(&data, Lock::Nothing, &["wipe", "--yes"], "").ok();
    assert!(out.stdout.starts_with("wiped at "), "{}", out.stdout);
    assert!(out.stdout.contains("cannot be recovered"), "{}", out.stdout);
    let header_after = std::fs::read(data.join("fieldsync.key")).unwrap();
    assert_eq!(header_after.len(), header_before.len());
    assert_ne!(header_after[32..136], header_before[32..136]);
    assert!(!data.join("fieldsync.redb").exists());
    assert!(data.join("fieldsync.wiped").exists());

    for (lock, args) in [
        (lock, vec!["case", "list"]),
        (lock, vec!["case", "show", case.as_str()]),
        (Lock::Nothing, vec!["id"]),
        (lock, vec!["status"]),
        (lock, vec!["sync"]),
    ] {
        let e = run(&data, lock, &args, "").error();
        assert!(
            e.starts_with("error: this store was wiped on ")
                && e.ends_with("; its data cannot be recovered"),
            "{args:?}: {e}"
        );
    }
    let e = init(&data, lock).error();
    assert!(
        e.contains("was wiped on") && e.contains("to start over"),
        "{e}"
    );
    // Wiping again is harmless.
    let out = run(&data, Lock::Nothing, &["wipe", "--yes"], "").ok();
    assert!(out.stdout.contains("already wiped"), "{}", out.stdout);
}

#[test]
fn wipe_asks_first_and_a_no_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent");
    let lock = Lock::Passphrase(PASSPHRASE);
    init(&data, lock).ok();
    let case = populate(&data, lock);
    let before = files(&data);
    for answer in ["no\n", "yes\n", "", "WIPE it\n"] {
        let out = run(&data, Lock::Nothing, &["wipe"], answer);
        assert!(out.stderr.contains("Type \"wipe\""), "{}", out.stderr);
        let e = out.error();
        assert!(e.contains("nothing was changed"), "{answer:?}: {e}");
        assert_eq!(files(&data), before, "{answer:?}");
    }
    let shown = run(&data, lock, &["case", "show", &case], "").ok().stdout;
    assert!(shown.contains(NOTE));
    // Typing "wipe" goes through.
    run(&data, Lock::Nothing, &["wipe"], "wipe\n").ok();
    let e = run(&data, lock, &["case", "list"], "").error();
    assert!(e.contains("was wiped on"), "{e}");
}

#[test]
fn a_store_without_its_key_header_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent");
    init(&data, Lock::Passphrase(PASSPHRASE)).ok();
    std::fs::rename(data.join("fieldsync.key"), dir.path().join("moved.key")).unwrap();
    let e = run(&data, Lock::Passphrase(PASSPHRASE), &["case", "list"], "").error();
    assert!(
        e.contains("this store is encrypted; it needs its key") && e.contains("fieldsync.key"),
        "{e}"
    );
    // A damaged header is named as such.
    std::fs::write(data.join("fieldsync.key"), [0u8; 152]).unwrap();
    let e = run(&data, Lock::Passphrase(PASSPHRASE), &["case", "list"], "").error();
    assert!(e.contains("key header") && e.contains("damaged"), "{e}");
    std::fs::rename(dir.path().join("moved.key"), data.join("fieldsync.key")).unwrap();
    run(&data, Lock::Passphrase(PASSPHRASE), &["case", "list"], "").ok();

    // A key header left alone by an interrupted init is named, and init says how to go on.
    let orphan = dir.path().join("orphan");
    init(&orphan, Lock::Passphrase(PASSPHRASE)).ok();
    std::fs::remove_file(orphan.join("fieldsync.redb")).unwrap();
    let e = run(&orphan, Lock::Passphrase(PASSPHRASE), &["id"], "").error();
    assert!(e.contains("has no store beside it"), "{e}");
    let e = init(&orphan, Lock::Passphrase(PASSPHRASE)).error();
    assert!(e.contains("remove it to start over"), "{e}");
    std::fs::remove_file(orphan.join("fieldsync.key")).unwrap();
    init(&orphan, Lock::Passphrase(PASSPHRASE)).ok();
}

#[test]
fn wipe_overwrites_a_store_made_before_encryption_at_rest() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("legacy");
    std::fs::create_dir(&data).unwrap();
    fieldsync_store::Store::create(
        &data.join("fieldsync.redb"),
        fieldsync_store::NewDevice {
            seed: [5; 32],
            name: "old-laptop",
            epoch: [6; 16],
            now: fieldsync_identity::Timestamp::from_millis(1_790_000_000_000),
            kind: fieldsync_store::StoreKind::Device,
        },
    )
    .unwrap();
    let out = run(&data, Lock::Nothing, &["wipe", "--yes"], "").ok();
    assert!(
        out.stdout.contains("overwritten and removed"),
        "{}",
        out.stdout
    );
    assert!(!data.join("fieldsync.redb").exists());
    let e = run(&data, Lock::Nothing, &["id"], "").error();
    assert!(e.contains("was wiped on"), "{e}");
    // Nothing to wipe where there is no store.
    let e = run(
        &dir.path().join("empty"),
        Lock::Nothing,
        &["wipe", "--yes"],
        "",
    )
    .error();
    assert!(e.contains("no store at"), "{e}");
}

#[test]
fn repair_salvages_a_damaged_encrypted_store_under_its_key() {
    use redb::{ReadableDatabase, ReadableTable};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent");
    let lock = Lock::Passphrase(PASSPHRASE);
    init(&data, lock).ok();
    let case = populate(&data, lock);
    for i in 0..5 {
        run(
            &data,
            lock,
            &["case", "note", &case, &format!("later note {i}")],
            "",
        )
        .ok();
    }
    // Flip a bit inside the sealed value of the last log entry (found by
    // its ciphertext: the file holds no plaintext to look for).
    let store = data.join("fieldsync.redb");
    let sealed = {
        let db = redb::Database::open(&store).unwrap();
        let txn = db.begin_read().unwrap();
        let log: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("log-1");
        let t = txn.open_table(log).unwrap();
        let (_, v) = t.last().unwrap().unwrap();
        v.value()[1..33].to_vec()
    };
    let mut bytes = std::fs::read(&store).unwrap();
    let at: Vec<usize> = bytes
        .windows(sealed.len())
        .enumerate()
        .filter(|(_, w)| *w == sealed.as_slice())
        .map(|(i, _)| i)
        .collect();
    assert!(!at.is_empty());
    for i in at {
        bytes[i + 20] ^= 0x01;
    }
    std::fs::write(&store, &bytes).unwrap();

    let e = run(&data, lock, &["case", "list"], "").error();
    assert!(e.contains("damaged") && e.contains("repair"), "{e}");
    // A wrong passphrase repairs nothing.
    let e = run(&data, Lock::Passphrase("not it at all"), &["repair"], "").error();
    assert_eq!(e, "error: wrong passphrase (or key file) for this store");
    assert_eq!(std::fs::read(&store).unwrap(), bytes);

    let out = run(&data, lock, &["repair"], "").ok();
    assert!(out.stdout.contains("kept aside"), "{}", out.stdout);
    assert_eq!(
        std::fs::read(data.join("fieldsync.redb.damaged")).unwrap(),
        bytes
    );
    // The new store opens under the same key, holds the case, and is as
    // unreadable on disk as the old one.
    let shown = run(&data, lock, &["case", "show", &case], "").ok().stdout;
    assert!(shown.contains(TITLE) && shown.contains(SUBJECT), "{shown}");
    assert!(leaks(&data, &case).is_empty());
}
