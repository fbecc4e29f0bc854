//! The agent's commands, each a thin layer over `fieldsync-store`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};
use fieldsync_case::{CaseDoc, CaseKind, CaseRecord, CustodyInput, Field, ItemId, SubjectInput};
use fieldsync_identity::{CaseId, Timestamp};
use fieldsync_store::{NewCase, NewDevice, Store, StoreKind};

use crate::unlock::{self, KeySource, random};

use crate::cli::{
    CaseCommand, Cli, Command, EvidenceCommand, SubjectCommand, SummaryCommand, TaskCommand,
};
use crate::{net, print};

/// Compartment of new cases when neither the command nor the device names one.
const DEFAULT_COMPARTMENT: &str = "general";

pub(crate) fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Timestamp::from_millis(ms)
}

fn data_dir(cli_data: Option<PathBuf>) -> Result<PathBuf> {
    match cli_data {
        Some(d) => Ok(d),
        None => dirs::data_dir()
            .map(|d| d.join("fieldsync"))
            .ok_or_else(|| anyhow!("no data directory: pass --data DIR or set FIELDSYNC_DATA")),
    }
}

pub(crate) fn run(cli: Cli) -> Result<()> {
    let dir = data_dir(cli.data)?;
    let keys = KeySource {
        key_file: cli.key_file,
    };
    // Every command that reads or writes the store unlocks it first.
    let open = |dir: &Path| unlock::open_store(dir, &keys);
    match cli.command {
        Command::Init {
            name,
            office,
            compartment,
        } => init(
            &dir,
            &keys,
            &name,
            office.as_deref(),
            compartment.as_deref(),
        ),
        Command::Wipe { yes } => unlock::wipe(&dir, yes, now()),
        Command::Repair { json } => print::repair(&unlock::repair(&dir, &keys, now())?, json),
        Command::Id { json } => {
            let store = open(&dir)?;
            print::identity(&store, json)
        }
        Command::Case(cmd) => {
            let store = open(&dir)?;
            net::check_lease(&store)?;
            case(&store, cmd)
        }
        Command::Export { cases, out } => {
            let store = open(&dir)?;
            net::check_lease(&store)?;
            let ids = cases
                .iter()
                .map(|c| store.resolve_case(c))
                .collect::<Result<Vec<_>, _>>()?;
            let bytes = store.export_bundle(&ids, now())?;
            write_new_file(&out, &bytes)?;
            println!(
                "wrote {} ({} bytes, {} cases)",
                out.display(),
                bytes.len(),
                if ids.is_empty() {
                    store.list_cases()?.len()
                } else {
                    ids.len()
                }
            );
            Ok(())
        }
        Command::Import { file, json } => {
            let store = open(&dir)?;
            net::check_lease(&store)?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let report = store.import_bundle(&bytes, now()).with_context(|| {
                format!("bundle {} rejected; nothing was stored", file.display())
            })?;
            print::import(&report, json)
        }
        Command::Verify { json } => {
            let store = open(&dir)?;
            let report = store.verify_all(now())?;
            print::verify(&report, json)?;
            if report.problems.is_empty() {
                Ok(())
            } else {
                bail!("{} problems found", report.problems.len())
            }
        }
        Command::Audit { json } => print::audit(&open(&dir)?.audit_log()?, json),
        Command::Enroll { cert, relays } => net::enroll(&open(&dir)?, &cert, &relays),
        Command::Sync { watch, timeout } => {
            let store = open(&dir)?;
            let wipe = if watch {
                net::watch(store)?
            } else {
                net::sync(store, std::time::Duration::from_secs(timeout))?
            };
            match wipe {
                None => Ok(()),
                Some(order) => {
                    unlock::obey_wipe_order(&dir, &order.nonce, &order.reason, now())?;
                    bail!("this device was ordered wiped by headquarters; its store is destroyed")
                }
            }
        }
        Command::Status { json } => net::status(&open(&dir)?, json),
    }
}

/// Writes `bytes` to a new file durably, refusing to overwrite an existing one.
fn write_new_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn init(
    dir: &Path,
    keys: &KeySource,
    name: &str,
    office: Option<&str>,
    compartment: Option<&str>,
) -> Result<()> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 {
        bail!("device name must be 1 to 64 characters");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let store = unlock::create_store(
        dir,
        keys,
        NewDevice {
            seed: random()?,
            name,
            epoch: random()?,
            now: now(),
            kind: StoreKind::Device,
        },
    )?;
    if let Some(office) = office {
        store.set_setting("office", office)?;
    }
    if let Some(c) = compartment {
        store.set_setting("compartment", c)?;
    }
    println!("{}", store.device().id());
    Ok(())
}

fn case(store: &Store, cmd: CaseCommand) -> Result<()> {
    let me = store.device().id();
    match cmd {
        CaseCommand::New {
            kind,
            title,
            office,
            compartment,
            json,
        } => {
            let kind: CaseKind = kind.parse()?;
            let office = match office {
                Some(o) => o,
                None => store.setting("office")?.ok_or_else(|| {
                    anyhow!(
                        "no office given: pass --office OFFICE (or set one with `init --office`)"
                    )
                })?,
            };
            let compartment = match compartment {
                Some(c) => c,
                None => store
                    .setting("compartment")?
                    .unwrap_or_else(|| DEFAULT_COMPARTMENT.to_owned()),
            };
            let id = store.create_case(
                &NewCase {
                    id: CaseId::from_bytes(random()?),
                    kind,
                    office: &office,
                    compartment: &compartment,
                    title: &title,
                },
                now(),
            )?;
            if json {
                println!("{}", serde_json::json!({ "id": id.to_string() }));
            } else {
                println!("{id}");
            }
            Ok(())
        }
        CaseCommand::Set { case, field, value } => {
            let field: Field = field.parse()?;
            let id = store.resolve_case(&case)?;
            let msg = format!("set {field}");
            edit(store, &id, &msg, |doc| doc.set_field(field, &value))
        }
        CaseCommand::Note { case, text } => {
            let id = store.resolve_case(&case)?;
            let at = now();
            edit(store, &id, "add note", |doc| doc.add_note(me, at, &text))
        }
        CaseCommand::Show { case, json } => {
            let id = store.resolve_case(&case)?;
            print::record(&store.case_record(&id)?, json)
        }
        CaseCommand::List { json } => print::listing(&store.list_cases()?, json),
        CaseCommand::History { case, json } => {
            let id = store.resolve_case(&case)?;
            print::history(&store.case_history(&id)?, me, json)
        }
        CaseCommand::Conflicts { case, json } => {
            let id = store.resolve_case(&case)?;
            print::conflicts(&store.case_conflicts(&id)?, json)
        }
        CaseCommand::Summary(cmd) => summary(store, cmd),
        CaseCommand::Subject(cmd) => subject(store, cmd),
        CaseCommand::Evidence(cmd) => evidence(store, cmd),
        CaseCommand::Task(cmd) => task(store, cmd),
        CaseCommand::Link {
            case,
            other,
            relation,
        } => {
            let id = store.resolve_case(&case)?;
            let other = other_case(store, &other)?;
            if other == id {
                bail!("a case cannot link to itself");
            }
            edit(store, &id, "add link", |doc| doc.add_link(other, &relation))
        }
        CaseCommand::Unlink { case, other } => {
            let id = store.resolve_case(&case)?;
            let other = other_case(store, &other)?;
            edit(store, &id, "remove link", |doc| doc.remove_link(other))
        }
        CaseCommand::Attach {
            case,
            file,
            name,
            media_type,
        } => {
            let id = store.resolve_case(&case)?;
            let reference = attachment_ref(&file, name, media_type)?;
            edit(store, &id, "add attachment", |doc| {
                doc.add_attachment(&reference)
            })?;
            println!("{}", reference.hash);
            Ok(())
        }
    }
}

/// A full case id, or a prefix of a case on this device.
fn other_case(store: &Store, text: &str) -> Result<CaseId> {
    match text.parse::<CaseId>() {
        Ok(id) => Ok(id),
        Err(_) => Ok(store.resolve_case(text)?),
    }
}

fn edit(
    store: &Store,
    id: &CaseId,
    message: &str,
    f: impl FnOnce(&mut CaseDoc) -> Result<(), fieldsync_case::CaseError>,
) -> Result<()> {
    match store.edit_case(id, now(), message, f)? {
        Some(hash) => {
            tracing::info!(case = %id, change = %hash, "edit stored");
            Ok(())
        }
        None => Ok(()),
    }
}

fn summary(store: &Store, cmd: SummaryCommand) -> Result<()> {
    match cmd {
        SummaryCommand::Set { case, text } => {
            let id = store.resolve_case(&case)?;
            edit(store, &id, "set summary", |doc| doc.set_summary(&text))
        }
        SummaryCommand::Append { case, text } => {
            let id = store.resolve_case(&case)?;
            let len = store.case_record(&id)?.summary.chars().count();
            edit(store, &id, "append to summary", |doc| {
                doc.splice_summary(len, 0, &text)
            })
        }
        SummaryCommand::Insert { case, pos, text } => {
            let id = store.resolve_case(&case)?;
            edit(store, &id, "edit summary", |doc| {
                doc.splice_summary(pos, 0, &text)
            })
        }
        SummaryCommand::Delete { case, pos, len } => {
            let id = store.resolve_case(&case)?;
            edit(store, &id, "edit summary", |doc| {
                doc.splice_summary(pos, len, "")
            })
        }
    }
}

/// Which list of items a prefix is looked up in.
#[derive(Clone, Copy)]
enum ItemKind {
    Subject,
    Evidence,
    Task,
}

impl ItemKind {
    fn name(self) -> &'static str {
        match self {
            ItemKind::Subject => "subject",
            ItemKind::Evidence => "evidence item",
            ItemKind::Task => "task",
        }
    }
}

/// Resolves an item id or unique prefix within a case.
fn resolve_item(record: &CaseRecord, kind: ItemKind, query: &str) -> Result<ItemId> {
    let ids: Vec<String> = match kind {
        ItemKind::Subject => record.subjects.iter().map(|s| s.id.to_string()).collect(),
        ItemKind::Evidence => record.evidence.iter().map(|e| e.id.to_string()).collect(),
        ItemKind::Task => record.tasks.iter().map(|t| t.id.to_string()).collect(),
    };
    let q = query.trim().to_ascii_lowercase();
    let found: Vec<&String> = ids
        .iter()
        .filter(|id| !q.is_empty() && id.starts_with(&q))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.parse()?),
        [] => bail!(
            "no {} matches '{query}' in case {}; `case show` lists them",
            kind.name(),
            record.id.short()
        ),
        many => bail!(
            "'{query}' matches {} {}s; give more digits",
            many.len(),
            kind.name()
        ),
    }
}

fn new_item_id() -> Result<ItemId> {
    Ok(ItemId::from_u64(u64::from_le_bytes(random()?)))
}

fn subject(store: &Store, cmd: SubjectCommand) -> Result<()> {
    match cmd {
        SubjectCommand::Add {
            case,
            name,
            role,
            nationality,
            identifiers,
        } => {
            let id = store.resolve_case(&case)?;
            let identifiers = identifiers
                .iter()
                .map(|s| {
                    s.split_once('=')
                        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
                        .ok_or_else(|| {
                            anyhow!("identifier '{s}' must be KIND=VALUE, e.g. passport=X123")
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            let item = new_item_id()?;
            let input = SubjectInput {
                name,
                role,
                nationality,
                identifiers,
            };
            edit(store, &id, "add subject", |doc| {
                doc.add_subject(item, &input)
            })?;
            println!("{item}");
            Ok(())
        }
        SubjectCommand::Set {
            case,
            subject,
            field,
            value,
        } => {
            let id = store.resolve_case(&case)?;
            let item = resolve_item(&store.case_record(&id)?, ItemKind::Subject, &subject)?;
            edit(store, &id, "edit subject", |doc| {
                doc.set_subject_field(item, &field, &value)
            })
        }
        SubjectCommand::Remove { case, subject } => {
            let id = store.resolve_case(&case)?;
            let item = resolve_item(&store.case_record(&id)?, ItemKind::Subject, &subject)?;
            edit(store, &id, "remove subject", |doc| doc.remove_subject(item))
        }
    }
}

fn evidence(store: &Store, cmd: EvidenceCommand) -> Result<()> {
    match cmd {
        EvidenceCommand::Add {
            case,
            description,
            found_at,
        } => {
            let id = store.resolve_case(&case)?;
            let item = new_item_id()?;
            edit(store, &id, "add evidence", |doc| {
                doc.add_evidence(item, &description, found_at.as_deref())
            })?;
            println!("{item}");
            Ok(())
        }
        EvidenceCommand::Custody {
            case,
            evidence,
            action,
            holder,
            location,
        } => {
            let id = store.resolve_case(&case)?;
            let item = resolve_item(&store.case_record(&id)?, ItemKind::Evidence, &evidence)?;
            let entry = CustodyInput {
                at: now(),
                by: store.device().id(),
                action,
                holder,
                location,
            };
            edit(store, &id, "add custody entry", |doc| {
                doc.add_custody(item, &entry)
            })
        }
    }
}

fn task(store: &Store, cmd: TaskCommand) -> Result<()> {
    match cmd {
        TaskCommand::Add {
            case,
            text,
            assignee,
        } => {
            let id = store.resolve_case(&case)?;
            let item = new_item_id()?;
            edit(store, &id, "add task", |doc| {
                doc.add_task(item, &text, assignee.as_deref())
            })?;
            println!("{item}");
            Ok(())
        }
        TaskCommand::Done { case, task, undo } => {
            let id = store.resolve_case(&case)?;
            let item = resolve_item(&store.case_record(&id)?, ItemKind::Task, &task)?;
            edit(store, &id, "update task", |doc| {
                doc.set_task_done(item, !undo)
            })
        }
        TaskCommand::Assign {
            case,
            task,
            assignee,
        } => {
            let id = store.resolve_case(&case)?;
            let item = resolve_item(&store.case_record(&id)?, ItemKind::Task, &task)?;
            edit(store, &id, "assign task", |doc| {
                doc.assign_task(item, assignee.as_deref())
            })
        }
    }
}

/// Hashes a file (BLAKE3) and describes it as an attachment reference.
fn attachment_ref(
    file: &Path,
    name: Option<String>,
    media_type: Option<String>,
) -> Result<fieldsync_case::AttachmentRef> {
    let mut hasher = blake3::Hasher::new();
    let mut f =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let size = std::io::copy(&mut f, &mut hasher)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let name = match name {
        Some(n) => n,
        None => file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| anyhow!("{} has no file name; pass --name", file.display()))?,
    };
    let media_type = media_type.unwrap_or_else(|| guess_media_type(&name).to_owned());
    Ok(fieldsync_case::AttachmentRef {
        hash: hasher.finalize().to_hex().to_string(),
        name,
        size,
        media_type,
    })
}

fn guess_media_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("heic") => "image/heic",
        Some("pdf") => "application/pdf",
        Some("txt") => "text/plain",
        Some("mp4") => "video/mp4",
        Some("wav") => "audio/wav",
        Some("zip") => "application/zip",
        _ => "application/octet-stream",
    }
}
