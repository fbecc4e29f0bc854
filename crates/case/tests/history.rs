//! History: every change in causal order, attributed to its device and
//! described from its operations rather than from its message.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Device, base, replica, t};
use fieldsync_case::{CustodyInput, Field, ItemId, SubjectInput};
use fieldsync_identity::CaseId;

#[test]
fn descriptions_follow_the_operations() {
    let (a, b) = (Device::new(1), Device::new(2));
    let (mut da, first) = base(&a, "History case");
    let subject = ItemId::from_u64(0x00ab_1234_0000_0000);
    let task = ItemId::from_u64(0x77);
    let evidence = ItemId::from_u64(0x99);
    let other = CaseId::from_bytes([5; 16]);

    da.set_field(Field::Status, "active").unwrap();
    da.splice_summary(0, 0, "Twelve chars").unwrap();
    let c1 = da.commit(t(10), "status and summary").unwrap().unwrap();

    let mut db = replica(&b, &[first.clone(), c1.clone()]);
    db.add_subject(
        subject,
        &SubjectInput {
            name: "Ivan".into(),
            role: Some("suspect".into()),
            nationality: None,
            identifiers: vec![("passport".into(), "X1".into())],
        },
    )
    .unwrap();
    db.add_task(task, "Find the van", None).unwrap();
    db.add_evidence(evidence, "A crate", None).unwrap();
    let c2 = db.commit(t(20), "innocent message").unwrap().unwrap();

    db.set_task_done(task, true).unwrap();
    db.splice_summary(0, 3, "").unwrap();
    db.add_note(b.id, t(21), "Seen at the port").unwrap();
    db.add_link(other, "related").unwrap();
    db.add_custody(
        evidence,
        &CustodyInput {
            at: t(22),
            by: b.id,
            action: "seized".into(),
            holder: None,
            location: None,
        },
    )
    .unwrap();
    db.set_title("Renamed").unwrap();
    db.assign_task(task, None).unwrap();
    let c3 = db.commit(t(30), "more").unwrap().unwrap();

    db.remove_subject(subject).unwrap();
    db.remove_link(other).unwrap();
    let c4 = db.commit(t(40), "cleanup").unwrap().unwrap();

    da.apply(vec![c2.clone(), c3.clone(), c4.clone()]).unwrap();
    let history = da.history().unwrap();
    let hashes: Vec<_> = history.iter().map(|e| e.hash).collect();
    assert_eq!(
        hashes,
        [&first, &c1, &c2, &c3, &c4].map(|c| c.hash().into())
    );
    assert_eq!(
        db.history().unwrap(),
        history,
        "every replica tells the same history"
    );

    let init = &history[0];
    assert_eq!(init.device, Some(a.id));
    assert_eq!(init.incarnation, Some(0));
    assert_eq!(init.seq, 1);
    assert!(
        init.description
            .contains(&"set title = \"History case\"".to_owned()),
        "{init:?}"
    );
    assert!(
        init.description.contains(&"created subjects".to_owned()),
        "{init:?}"
    );
    assert_eq!(init.time, t(1));

    assert_eq!(history[1].device, Some(a.id));
    assert_eq!(history[1].message.as_deref(), Some("status and summary"));
    assert_eq!(
        history[1].description,
        [
            "set status = \"active\"",
            "inserted 12 characters into summary"
        ]
    );

    let h2 = &history[2];
    assert_eq!(h2.device, Some(b.id));
    assert_eq!(h2.seq, 1);
    assert_eq!(
        h2.message.as_deref(),
        Some("innocent message"),
        "the message is kept as written"
    );
    assert_eq!(
        h2.description,
        [
            "added subject 00ab123400000000".to_owned(),
            format!("added task {task}"),
            format!("added evidence {evidence}"),
        ]
    );

    assert_eq!(
        history[3].description,
        [
            format!("set tasks/{task}/done = true"),
            "deleted 3 characters from summary".to_owned(),
            "appended a note".to_owned(),
            format!("added link to case {other} (\"related\")"),
            format!("added a custody entry to evidence {evidence}"),
            "set title = \"Renamed\"".to_owned(),
        ],
        "assign_task(None) on an unassigned task writes nothing"
    );
    assert_eq!(history[3].time, t(30));
    assert_eq!(
        history[4].description,
        [
            "removed subject 00ab123400000000".to_owned(),
            format!("removed link to case {other}")
        ]
    );
}

#[test]
fn concurrent_changes_are_ordered_the_same_everywhere() {
    let (a, b, c) = (Device::new(1), Device::new(2), Device::new(3));
    let (_, first) = base(&a, "Order");
    let mut changes = vec![first.clone()];
    for (i, d) in [&a, &b, &c].into_iter().enumerate() {
        let mut doc = replica(d, std::slice::from_ref(&first));
        doc.add_note(d.id, t(2), &format!("note {i}")).unwrap();
        changes.push(doc.commit(t(5), "note").unwrap().unwrap());
    }
    let forward = replica(&a, &changes).history().unwrap();
    changes.reverse();
    let backward = replica(&b, &changes).history().unwrap();
    assert_eq!(forward, backward);
    assert_eq!(forward[0].hash, first.hash().into());
    assert!(
        forward[1..]
            .iter()
            .all(|e| e.description == ["appended a note"])
    );
}
