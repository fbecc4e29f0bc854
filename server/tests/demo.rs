//! `fieldsync-server demo`, run as a child process: the field exercise
//! exits 0 and tells the operator what happened, step by step, including the
//! office relay that rides out an uplink outage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn the_field_exercise_runs_to_the_end_and_says_what_happened() {
    let out = Command::new(env!("CARGO_BIN_EXE_fieldsync-server"))
        .arg("demo")
        .env_remove("RUST_LOG")
        .output()
        .expect("cannot start fieldsync-server");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let has = |text: &str| {
        assert!(
            stdout.contains(text),
            "the demo should say \"{text}\":\n{stdout}"
        );
    };
    // The exercise at headquarters.
    has("every device holds the same merged record: yes");
    has("the handheld tries to sync and is refused");
    // The office relay through an uplink outage.
    has("Rome office relay");
    has("enrolled as relay for compartment general");
    has("received case");
    has("without its uplink: headquarters is out of reach");
    has("synced with the office relay over QUIC: received Rome desk's note");
    has("synced with the office relay over QUIC: received Rome handheld's note");
    has("headquarters holds none of the office's 2 new changes");
    has("with its uplink: it and headquarters hold each other's changes");
    has("(Rome desk)  appended a note");
    has("(Rome handheld)  appended a note");
    has("(Rome office relay) carried their changes");
    has("all valid");
    has("synced with the office relay over QUIC: received the supervisor's status and note");
    has("hold the same merged record (3 notes, status active): yes");
    has("The exercise is over");
}
