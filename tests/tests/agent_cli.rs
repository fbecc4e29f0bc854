//! The field agent end to end: the real `fieldsync-agent` binary, real redb
//! files, real signatures, one process per command.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use fieldsync_tests::Agent;
use serde_json::Value;

fn agent(dir: &tempfile::TempDir, name: &str) -> Agent {
    let a = Agent::new(&dir.path().join(name));
    a.run(&["init", "--name", name, "--office", "rome"]).ok();
    a
}

fn show(a: &Agent, case: &str) -> Value {
    serde_json::from_str(&a.run(&["case", "show", case, "--json"]).ok().stdout).unwrap()
}

fn history_len(a: &Agent, case: &str) -> usize {
    let h: Value =
        serde_json::from_str(&a.run(&["case", "history", case, "--json"]).ok().stdout).unwrap();
    h.as_array().unwrap().len()
}

#[test]
fn init_id_and_refusing_a_second_init() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(&dir, "rome-laptop");
    let id: Value = serde_json::from_str(&a.run(&["id", "--json"]).ok().stdout).unwrap();
    let device = id["device"].as_str().unwrap().to_owned();
    assert_eq!(device.len(), 64);
    assert_eq!(id["name"], "rome-laptop");
    let again = a.run(&["init", "--name", "other"]).fails();
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    let id2: Value = serde_json::from_str(&a.run(&["id", "--json"]).ok().stdout).unwrap();
    assert_eq!(
        id2["device"].as_str().unwrap(),
        device,
        "a refused init changed the identity"
    );
}

#[test]
fn missing_store_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::new(&dir.path().join("nothing-here"));
    let r = a.run(&["case", "list"]).fails();
    assert!(r.stderr.contains("fieldsync-agent init"), "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1);
}

#[test]
fn a_case_through_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(&dir, "mexico-handheld");
    let case = a
        .run(&[
            "case",
            "new",
            "--kind",
            "criminal-investigation",
            "--title",
            "Tunnel at Otay Mesa",
            "--compartment",
            "narcotics",
        ])
        .ok()
        .out()
        .to_owned();
    assert_eq!(case.len(), 32);
    let p = &case[..6];
    a.run(&["case", "set", p, "status", "active"]).ok();
    a.run(&["case", "set", p, "priority", "urgent"]).ok();
    a.run(&["case", "note", p, "Ground-penetrating radar booked"])
        .ok();
    a.run(&["case", "summary", "set", p, "Tunnel under the fence."])
        .ok();
    a.run(&["case", "summary", "append", p, " Two exits."]).ok();
    let subject = a
        .run(&[
            "case",
            "subject",
            "add",
            p,
            "--name",
            "J. Doe",
            "--role",
            "suspect",
            "--identifier",
            "passport=X123",
        ])
        .ok()
        .out()
        .to_owned();
    a.run(&[
        "case",
        "subject",
        "set",
        p,
        &subject[..5],
        "nationality",
        "MX",
    ])
    .ok();
    let ev = a
        .run(&[
            "case",
            "evidence",
            "add",
            p,
            "--description",
            "Shovel",
            "--found-at",
            "exit B",
        ])
        .ok()
        .out()
        .to_owned();
    a.run(&[
        "case",
        "evidence",
        "custody",
        p,
        &ev[..6],
        "--action",
        "seized",
        "--holder",
        "agent 7",
    ])
    .ok();
    let task = a
        .run(&[
            "case",
            "task",
            "add",
            p,
            "Interview the owner",
            "--assignee",
            "rivera",
        ])
        .ok()
        .out()
        .to_owned();
    a.run(&["case", "task", "done", p, &task[..6]]).ok();
    let other = a
        .run(&[
            "case",
            "new",
            "--kind",
            "visa-security",
            "--title",
            "Related visa",
        ])
        .ok()
        .out()
        .to_owned();
    a.run(&["case", "link", p, &other, "--relation", "same-network"])
        .ok();
    let file = dir.path().join("photo.jpg");
    std::fs::write(&file, b"not really a jpeg").unwrap();
    let hash = a
        .run(&["case", "attach", p, file.to_str().unwrap()])
        .ok()
        .out()
        .to_owned();
    assert_eq!(hash.len(), 64);

    let r = show(&a, p);
    assert_eq!(r["id"], case.as_str());
    assert_eq!(r["kind"], "criminal-investigation");
    assert_eq!(r["office"], "rome");
    assert_eq!(r["compartment"], "narcotics");
    assert_eq!(r["status"], "active");
    assert_eq!(r["priority"], "urgent");
    assert_eq!(r["summary"], "Tunnel under the fence. Two exits.");
    assert_eq!(r["notes"][0]["text"], "Ground-penetrating radar booked");
    assert_eq!(r["subjects"][0]["name"], "J. Doe");
    assert_eq!(r["subjects"][0]["nationality"], "MX");
    assert_eq!(r["subjects"][0]["identifiers"][0]["value"], "X123");
    assert_eq!(r["evidence"][0]["custody"][0]["action"], "seized");
    assert_eq!(r["tasks"][0]["done"], true);
    assert_eq!(r["links"][0]["case"], other.as_str());
    assert_eq!(r["attachments"][0]["hash"], hash.as_str());
    assert_eq!(r["attachments"][0]["size"], 17);

    let me: Value = serde_json::from_str(&a.run(&["id", "--json"]).ok().stdout).unwrap();
    let h: Value =
        serde_json::from_str(&a.run(&["case", "history", p, "--json"]).ok().stdout).unwrap();
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 14);
    assert!(h.iter().all(|e| e["device"] == me["device"]));

    let list: Value =
        serde_json::from_str(&a.run(&["case", "list", "--json"]).ok().stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let human = a.run(&["case", "show", p]).ok();
    assert!(human.stdout.contains("Tunnel at Otay Mesa"));
    a.run(&["verify"]).ok();
}

#[test]
fn wrong_input_is_one_clear_line_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(&dir, "laptop");
    let case = a
        .run(&[
            "case",
            "new",
            "--kind",
            "visitor-vetting",
            "--title",
            "Delegation",
        ])
        .ok()
        .out()
        .to_owned();
    let before = show(&a, &case);
    let n = history_len(&a, &case);
    for (args, needle) in [
        (
            vec!["case", "set", &case[..], "colour", "red"],
            "unknown field",
        ),
        (
            vec!["case", "set", &case[..], "status", "finished"],
            "status",
        ),
        (vec!["case", "set", &case[..], "title", ""], "title"),
        (vec!["case", "note", "ffffffffffff", "x"], "no case matches"),
        (vec!["case", "note", "zz", "x"], "no case matches"),
        (
            vec!["case", "task", "done", &case[..], "abc"],
            "no task matches",
        ),
        (
            vec!["case", "new", "--kind", "burglary", "--title", "t"],
            "case kind",
        ),
        (
            vec![
                "case",
                "subject",
                "add",
                &case[..],
                "--name",
                "X",
                "--identifier",
                "passport",
            ],
            "kind=value",
        ),
        (
            vec!["case", "summary", "delete", &case[..], "5", "3"],
            "summary",
        ),
        (vec!["import", "/nonexistent/bundle"], "cannot read"),
    ] {
        let r = a.run(&args).fails();
        assert!(
            r.stderr.to_lowercase().contains(needle),
            "{args:?}: {}",
            r.stderr
        );
        assert_eq!(r.stderr.trim().lines().count(), 1, "{args:?}: {}", r.stderr);
    }
    assert_eq!(show(&a, &case), before);
    assert_eq!(history_len(&a, &case), n);
    // Usage errors come from the argument parser, with exit code 2.
    assert_eq!(a.run(&["case", "frobnicate"]).code, Some(2));
}

#[test]
fn ambiguous_prefix_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(&dir, "laptop");
    // 17 cases: two of them share a first hex digit.
    let ids: Vec<String> = (0..17)
        .map(|i| {
            a.run(&[
                "case",
                "new",
                "--kind",
                "biometric-encounter",
                "--title",
                &format!("encounter {i}"),
            ])
            .ok()
            .out()
            .to_owned()
        })
        .collect();
    let digit = (0..16)
        .map(|d| format!("{d:x}"))
        .find(|d| ids.iter().filter(|id| id.starts_with(d.as_str())).count() > 1)
        .unwrap();
    let r = a.run(&["case", "show", &digit]).fails();
    assert!(r.stderr.contains("matches"), "{}", r.stderr);
    for id in &ids {
        a.run(&["case", "show", id]).ok();
    }
}

#[test]
fn bundles_both_ways_give_identical_records_with_conflicts_shown() {
    let dir = tempfile::tempdir().unwrap();
    let rome = agent(&dir, "rome-laptop");
    let mexico = agent(&dir, "mexico-handheld");
    let case = rome
        .run(&[
            "case",
            "new",
            "--kind",
            "cultural-property",
            "--title",
            "Stele",
        ])
        .ok()
        .out()
        .to_owned();
    rome.run(&["case", "summary", "set", &case, "Found at the port."])
        .ok();
    let b1 = dir.path().join("r1.fsb");
    rome.run(&["export", &case, "--out", b1.to_str().unwrap()])
        .ok();
    mexico.run(&["import", b1.to_str().unwrap()]).ok();
    // Concurrent, offline edits on both devices: one field and the summary text.
    rome.run(&["case", "set", &case, "title", "Stele of Rome"])
        .ok();
    mexico
        .run(&["case", "set", &case, "title", "Stele (Mexico copy)"])
        .ok();
    rome.run(&["case", "summary", "insert", &case, "0", "ROME: "])
        .ok();
    mexico
        .run(&["case", "summary", "append", &case, " MEXICO."])
        .ok();
    mexico
        .run(&["case", "note", &case, "Buyer identified"])
        .ok();
    let (b2, b3) = (dir.path().join("r2.fsb"), dir.path().join("m1.fsb"));
    rome.run(&["export", "--out", b2.to_str().unwrap()]).ok();
    mexico.run(&["export", "--out", b3.to_str().unwrap()]).ok();
    mexico.run(&["import", b2.to_str().unwrap()]).ok();
    rome.run(&["import", b3.to_str().unwrap()]).ok();
    let (r, m) = (show(&rome, &case), show(&mexico, &case));
    assert_eq!(r, m, "records differ after exchanging bundles");
    assert_eq!(r["summary"], "ROME: Found at the port. MEXICO.");
    let conflicts: Value = serde_json::from_str(
        &rome
            .run(&["case", "conflicts", &case, "--json"])
            .ok()
            .stdout,
    )
    .unwrap();
    let title = conflicts
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == "title")
        .expect("title conflict");
    let devices: Vec<&str> = title["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["device"].as_str().unwrap())
        .collect();
    let rid: Value = serde_json::from_str(&rome.run(&["id", "--json"]).ok().stdout).unwrap();
    let mid: Value = serde_json::from_str(&mexico.run(&["id", "--json"]).ok().stdout).unwrap();
    assert!(devices.contains(&rid["device"].as_str().unwrap()));
    assert!(devices.contains(&mid["device"].as_str().unwrap()));
    // Importing the same bundle again stores nothing new.
    let again: Value = serde_json::from_str(
        &rome
            .run(&["import", b3.to_str().unwrap(), "--json"])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(again["stored"], 0);
    rome.run(&["verify"]).ok();
    mexico.run(&["verify"]).ok();
}

#[test]
fn an_altered_byte_rejects_the_whole_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let rome = agent(&dir, "rome");
    let other = agent(&dir, "other");
    for i in 0..3 {
        let c = rome
            .run(&[
                "case",
                "new",
                "--kind",
                "criminal-investigation",
                "--title",
                &format!("c{i}"),
            ])
            .ok()
            .out()
            .to_owned();
        rome.run(&["case", "note", &c, "note"]).ok();
    }
    let bundle = dir.path().join("b.fsb");
    rome.run(&["export", "--out", bundle.to_str().unwrap()])
        .ok();
    let good = std::fs::read(&bundle).unwrap();
    // A byte in the magic, in the signature, in the middle, and the last byte.
    for at in [0, 40, good.len() / 2, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        let path = dir.path().join(format!("bad-{at}.fsb"));
        std::fs::write(&path, &bad).unwrap();
        let r = other.run(&["import", path.to_str().unwrap()]).fails();
        assert!(r.stderr.contains("nothing was stored"), "{}", r.stderr);
        let list: Value =
            serde_json::from_str(&other.run(&["case", "list", "--json"]).ok().stdout).unwrap();
        assert!(
            list.as_array().unwrap().is_empty(),
            "byte {at}: something was stored"
        );
    }
    let truncated = dir.path().join("short.fsb");
    std::fs::write(&truncated, &good[..good.len() - 10]).unwrap();
    other.run(&["import", truncated.to_str().unwrap()]).fails();
    other.run(&["import", bundle.to_str().unwrap()]).ok();
    let list: Value =
        serde_json::from_str(&other.run(&["case", "list", "--json"]).ok().stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3);
    let audit = other.run(&["audit"]).ok();
    assert!(audit.stdout.contains("bundle-rejected"), "{}", audit.stdout);
}
