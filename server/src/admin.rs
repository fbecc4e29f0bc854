//! Administration as values: every command of `fieldsync-server` except
//! `init`, `serve` and `demo` is an [`AdminRequest`], run by [`execute`]
//! against an [`AdminContext`].
//!
//! The same request runs in two places. When no server is running, the
//! command line opens the store itself and calls [`execute`]. While `serve`
//! runs, the store is locked by the server process (redb admits one process
//! per file), so the command line sends the request over the control socket
//! ([`crate::control`]) and the server calls [`execute`] in-process.
//!
//! Store settings the server keeps (besides the revocation list):
//!
//! | setting | value |
//! |---|---|
//! | `hq-public` | headquarters' public key, 64 hex digits |
//! | `compartments` | the compartments this relay serves, comma-separated |
//! | `cert-serial` | the last certificate serial headquarters issued (decimal) |
//! | `enrolled` | the enrolled devices' ids, one a line, sorted |
//! | `enrolled/<device id>` | that device's latest certificate, in text form |

use std::path::PathBuf;
use std::sync::Arc;

use fieldsync_identity::{
    CertificateError, Compartment, DeviceId, HqRoot, NameError, PublicKey, RevocationError,
    RevocationList, Role, VerifyError, WipeOrderError,
};
use fieldsync_protocol::SessionError;
use fieldsync_store::{Store, StoreError};
use fieldsync_view::{Format, ViewError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::devices;
use crate::hq;
use crate::keys::{DataDir, FileError};

/// Setting: headquarters' public key (hex).
pub const SETTING_HQ_PUBLIC: &str = "hq-public";
/// Setting: the compartments this relay serves (comma-separated).
pub const SETTING_COMPARTMENTS: &str = "compartments";
/// Setting: the last certificate serial issued.
pub const SETTING_CERT_SERIAL: &str = "cert-serial";
/// Setting: the enrolled devices' ids, one a line.
pub const SETTING_ENROLLED: &str = "enrolled";
/// Setting prefix: `enrolled/<device id>` holds that device's certificate text.
pub const SETTING_ENROLLED_PREFIX: &str = "enrolled/";

/// One administrative command. The JSON form (on the control socket) is
/// tagged by `command`: `{"command":"case-show","case":"3fa2","json":false}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum AdminRequest {
    /// This relay's id, name and headquarters key.
    Id {
        /// Render JSON.
        json: bool,
    },
    /// Issue a device certificate and write it to a new file.
    Enroll(Box<Enrollment>),
    /// Revoke a device (a unique prefix of its id among known devices).
    Revoke {
        /// Device id or unique prefix.
        device: String,
        /// Why (default: "revoked by headquarters").
        reason: Option<String>,
    },
    /// Enrolled and known devices with their sync state.
    Devices {
        /// Render JSON.
        json: bool,
    },
    /// The cases this relay holds.
    Cases {
        /// Render JSON.
        json: bool,
    },
    /// A case's merged record.
    CaseShow {
        /// Case id or unique prefix.
        case: String,
        /// Render JSON.
        json: bool,
    },
    /// Every change of a case with its device.
    CaseHistory {
        /// Case id or unique prefix.
        case: String,
        /// Render JSON.
        json: bool,
    },
    /// A case's concurrent values with their devices.
    CaseConflicts {
        /// Case id or unique prefix.
        case: String,
        /// Render JSON.
        json: bool,
    },
    /// The held changes with their reasons.
    Quarantine {
        /// Render JSON.
        json: bool,
    },
    /// Release a held change under headquarters' signature.
    QuarantineRelease {
        /// The quarantine id.
        id: u64,
        /// Why (default: "released by headquarters").
        reason: Option<String>,
    },
    /// Order a device wiped: a headquarters-signed order that relays carry
    /// to the device, which destroys its keys at its next contact.
    Wipe {
        /// Device id or unique prefix.
        device: String,
        /// Days the order stays valid (1 to
        /// [`MAX_WIPE_ORDER_DAYS`](fieldsync_identity::MAX_WIPE_ORDER_DAYS)).
        days: u32,
        /// Why (default: "ordered wiped by headquarters").
        reason: Option<String>,
    },
}

impl AdminRequest {
    /// Whether the request changes what sessions must know: a revocation
    /// list to pass on, a released change to forward, or a wipe order to
    /// deliver.
    pub fn changes_state(&self) -> bool {
        matches!(
            self,
            AdminRequest::Revoke { .. }
                | AdminRequest::QuarantineRelease { .. }
                | AdminRequest::Wipe { .. }
        )
    }
}

/// What headquarters certifies about a new device (see [`AdminRequest::Enroll`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// The device's id (its public key, 64 hex digits).
    pub device: DeviceId,
    /// Who holds it.
    pub name: String,
    /// Its office.
    pub office: String,
    /// Its role.
    pub role: Role,
    /// Compartments it may read; `None`: its write set, or `general` when
    /// neither is given.
    pub read: Option<Vec<Compartment>>,
    /// Compartments it may write; `None`: its read set for field and
    /// supervisor devices, nothing for liaisons and relays.
    pub write: Option<Vec<Compartment>>,
    /// Days of validity from now (1 to [`MAX_DAYS`]).
    pub days: u32,
    /// The offline lease, in days (1 to [`MAX_DAYS`]; `None`: no lease):
    /// the device keeps case data closed after that many days without
    /// contact with a relay. A certificate with a lease is of version 2;
    /// one without is of version 1, which every build reads.
    #[serde(default)]
    pub lease_days: Option<u16>,
    /// Where to write the certificate (a new file; made absolute by the
    /// command line, since a running server executes the request).
    pub out: PathBuf,
}

/// Longest certificate validity, in days (ten years).
pub const MAX_DAYS: u32 = 3650;

/// What a command answers: its output, rendered as the request asked
/// (text or JSON), trailing newline included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminResponse {
    /// The text to write to standard output.
    pub output: String,
}

/// An administrative command failed; nothing was changed unless the
/// message says so.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The data directory holds a server already.
    #[error("{} already holds a FieldSync server ({what} exists); it was left untouched", dir.display())]
    AlreadyInitialized {
        /// The data directory.
        dir: PathBuf,
        /// The file found.
        what: &'static str,
    },
    /// The command needs headquarters' root key, which this relay does not hold.
    #[error(
        "this relay holds no headquarters key ({}); enroll, revoke and release quarantine on the headquarters relay",
        path.display()
    )]
    NoHqKey {
        /// Where the key was looked for.
        path: PathBuf,
    },
    /// The key file holds another key than the one the store was created with.
    #[error(
        "the headquarters key in {} is {found}, but this store belongs to headquarters {expected}; restore the right key file",
        path.display()
    )]
    HqKeyMismatch {
        /// The key file.
        path: PathBuf,
        /// Short form of the file's public key.
        found: String,
        /// Short form of the store's headquarters key.
        expected: String,
    },
    /// A server setting is missing or unreadable.
    #[error("the server setting '{setting}' is missing or damaged: {detail}")]
    Setting {
        /// The setting.
        setting: String,
        /// What is wrong.
        detail: String,
    },
    /// No case matches.
    #[error("no case matches '{query}'; `fieldsync-server cases` lists the cases this relay holds")]
    UnknownCase {
        /// What was asked for.
        query: String,
    },
    /// No enrolled or known device matches.
    #[error("no enrolled or known device matches '{query}'; `fieldsync-server devices` lists them")]
    UnknownDevice {
        /// What was asked for.
        query: String,
    },
    /// More than one device matches a prefix.
    #[error("'{query}' matches {} devices ({}); give more digits", candidates.len(), candidates.join(", "))]
    AmbiguousDevice {
        /// What was asked for.
        query: String,
        /// Short ids of the matching devices.
        candidates: Vec<String>,
    },
    /// The device is revoked already.
    #[error("device {device} is already revoked (since {since}); a revoked key stays revoked")]
    AlreadyRevoked {
        /// Short device id.
        device: String,
        /// When it was revoked.
        since: String,
    },
    /// A revoked device key cannot get a new certificate.
    #[error(
        "device {device} was revoked on {since}; a revoked key is revoked for good: enroll the device with a new key"
    )]
    RevokedKey {
        /// Short device id.
        device: String,
        /// When it was revoked.
        since: String,
    },
    /// The request is not valid (beyond what the identity crate checks).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A role or compartment name is not valid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// Headquarters refused to issue the certificate.
    #[error("cannot issue the certificate")]
    Issue(#[from] CertificateError),
    /// Building or reading the revocation list failed.
    #[error(transparent)]
    Revocation(#[from] RevocationError),
    /// Signing a release failed.
    #[error("signing the release failed")]
    Sign(#[from] VerifyError),
    /// The release was refused, or storing the released change failed.
    #[error("release refused")]
    Release(#[from] SessionError),
    /// Issuing a wipe order failed.
    #[error("cannot issue the wipe order")]
    WipeOrder(#[from] WipeOrderError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file of the data directory (or the output file) failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// Rendering the output failed.
    #[error(transparent)]
    View(#[from] ViewError),
    /// The OS random generator failed.
    #[error("the OS random generator failed: {0}")]
    Random(String),
}

/// What a command runs against: the store, the data directory and
/// headquarters' keys.
#[derive(Debug)]
pub struct AdminContext<'a> {
    store: &'a Store,
    dir: DataDir,
    hq_public: PublicKey,
    hq: Option<HqRoot>,
}

impl<'a> AdminContext<'a> {
    /// Loads the context of the server in `dir` whose store is `store`:
    /// headquarters' public key from the store, and its root key from
    /// `DIR/hq-root.key` when there is one (checked to match).
    pub fn load(store: &'a Store, dir: &DataDir) -> Result<Self, AdminError> {
        let hq_public = hq_public(store)?;
        let path = dir.hq_key();
        let hq = crate::keys::read_hq_key(&path)?;
        if let Some(key) = &hq
            && key.public() != hq_public
        {
            return Err(AdminError::HqKeyMismatch {
                path,
                found: DeviceId::from_public_key(key.public()).short(),
                expected: DeviceId::from_public_key(hq_public).short(),
            });
        }
        Ok(Self::new(store, dir.clone(), hq_public, hq))
    }

    /// A context from its parts (`hq` must be the key of `hq_public`).
    pub fn new(store: &'a Store, dir: DataDir, hq_public: PublicKey, hq: Option<HqRoot>) -> Self {
        Self {
            store,
            dir,
            hq_public,
            hq,
        }
    }

    /// The store.
    pub fn store(&self) -> &'a Store {
        self.store
    }

    /// The data directory.
    pub fn dir(&self) -> &DataDir {
        &self.dir
    }

    /// Headquarters' public key.
    pub fn hq_public(&self) -> &PublicKey {
        &self.hq_public
    }

    /// Headquarters' root key, or [`AdminError::NoHqKey`] on an office relay.
    pub fn hq(&self) -> Result<&HqRoot, AdminError> {
        self.hq.as_ref().ok_or_else(|| AdminError::NoHqKey {
            path: self.dir.hq_key(),
        })
    }

    /// Whether this relay holds headquarters' root key.
    pub fn is_headquarters(&self) -> bool {
        self.hq.is_some()
    }

    /// The stored revocation list, verified (`None` when there is none).
    pub fn revocations(&self) -> Result<Option<RevocationList>, AdminError> {
        self.store
            .revocations()?
            .map(|bytes| RevocationList::from_bytes(&bytes, &self.hq_public))
            .transpose()
            .map_err(AdminError::from)
    }
}

/// Headquarters' public key, as the store records it.
pub fn hq_public(store: &Store) -> Result<PublicKey, AdminError> {
    let bad = |detail: &str| AdminError::Setting {
        setting: SETTING_HQ_PUBLIC.into(),
        detail: detail.into(),
    };
    store
        .setting(SETTING_HQ_PUBLIC)?
        .ok_or_else(|| bad("not set; was this store made by `fieldsync-server init`?"))?
        .parse()
        .map_err(|_| bad("not 64 hex digits of a public key"))
}

/// Runs one command.
pub fn execute(ctx: &AdminContext<'_>, req: &AdminRequest) -> Result<AdminResponse, AdminError> {
    let output = match req {
        AdminRequest::Id { json } => identity(ctx, Format::json(*json))?,
        AdminRequest::Enroll(e) => hq::enroll(ctx, e)?,
        AdminRequest::Revoke { device, reason } => hq::revoke(ctx, device, reason.as_deref())?,
        AdminRequest::Devices { json } => devices::view(ctx, Format::json(*json))?,
        AdminRequest::Cases { json } => fieldsync_view::listing(
            &ctx.store.list_cases_with_summaries()?,
            "no cases yet; cases arrive when devices sync with this relay",
            Format::json(*json),
        )?,
        AdminRequest::CaseShow { case, json } => {
            let id = resolve_case(ctx, case)?;
            let names = devices::names(ctx)?;
            fieldsync_view::record(&ctx.store.case_record(&id)?, &names, Format::json(*json))?
        }
        AdminRequest::CaseHistory { case, json } => {
            let id = resolve_case(ctx, case)?;
            let names = devices::names(ctx)?;
            fieldsync_view::history(&ctx.store.case_history(&id)?, &names, Format::json(*json))?
        }
        AdminRequest::CaseConflicts { case, json } => {
            let id = resolve_case(ctx, case)?;
            let names = devices::names(ctx)?;
            fieldsync_view::conflicts(&ctx.store.case_conflicts(&id)?, &names, Format::json(*json))?
        }
        AdminRequest::Quarantine { json } => fieldsync_view::quarantine(
            &ctx.store.quarantine()?,
            &devices::names(ctx)?,
            Format::json(*json),
        )?,
        AdminRequest::QuarantineRelease { id, reason } => hq::release(ctx, *id, reason.as_deref())?,
        AdminRequest::Wipe {
            device,
            days,
            reason,
        } => hq::wipe(ctx, device, *days, reason.as_deref())?,
    };
    Ok(AdminResponse { output })
}

/// An error and its causes on one line, `what failed: why: why`, leaving
/// out a cause whose text the line already holds (some errors quote their
/// source in their own message). This is how an error travels over the
/// control socket, and how the command line prints it either way.
pub fn error_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

/// The handler a running server gives [`crate::control::serve_control`]:
/// each request runs against `store` with the keys of `dir`, and a failure
/// becomes its [`error_line`].
pub fn handler(
    store: Arc<Store>,
    dir: DataDir,
) -> impl Fn(AdminRequest) -> Result<AdminResponse, String> + Send + Sync + 'static {
    move |req| {
        AdminContext::load(&store, &dir)
            .and_then(|ctx| execute(&ctx, &req))
            .map_err(|e| error_line(&e))
    }
}

/// A case id or unique prefix, with the server's wording for an unknown one.
fn resolve_case(
    ctx: &AdminContext<'_>,
    query: &str,
) -> Result<fieldsync_identity::CaseId, AdminError> {
    ctx.store.resolve_case(query).map_err(|e| match e {
        StoreError::UnknownCase { query } => AdminError::UnknownCase { query },
        e => e.into(),
    })
}

/// The compartments this relay serves, as recorded at `init`.
pub fn compartments(store: &Store) -> Result<Vec<Compartment>, AdminError> {
    let Some(list) = store.setting(SETTING_COMPARTMENTS)? else {
        return Ok(Vec::new());
    };
    list.split(',')
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse().map_err(|e: NameError| AdminError::Setting {
                setting: SETTING_COMPARTMENTS.into(),
                detail: e.to_string(),
            })
        })
        .collect()
}

fn identity(ctx: &AdminContext<'_>, format: Format) -> Result<String, AdminError> {
    let d = ctx.store.device();
    let compartments: Vec<String> = compartments(ctx.store)?
        .iter()
        .map(ToString::to_string)
        .collect();
    let store_path = ctx
        .store
        .path()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let hq_key = if ctx.is_headquarters() {
        format!("present ({})", ctx.dir.hq_key().display())
    } else {
        "absent (an office relay)".to_owned()
    };
    if format == Format::Json {
        let value = serde_json::json!({
            "relay": d.id().to_string(),
            "short": d.id().short(),
            "name": d.name(),
            "hq": ctx.hq_public.to_string(),
            "headquarters": ctx.is_headquarters(),
            "compartments": compartments,
            "store": store_path,
            "log_head": ctx.store.log_head()?,
        });
        let mut out = serde_json::to_string_pretty(&value).map_err(ViewError::from)?;
        out.push('\n');
        return Ok(out);
    }
    Ok(format!(
        "relay        {}\nname         {}\nhq           {}\nhq key       {hq_key}\ncompartments {}\nstore        {store_path}\nlog head     {}\n",
        d.id(),
        d.name(),
        ctx.hq_public,
        compartments.join(","),
        ctx.store.log_head()?,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn requests_travel_as_tagged_json_and_are_checked_on_arrival() {
        let show: AdminRequest =
            serde_json::from_str(r#"{"command":"case-show","case":"3fa2","json":false}"#).unwrap();
        assert_eq!(
            show,
            AdminRequest::CaseShow {
                case: "3fa2".into(),
                json: false
            }
        );
        let device =
            DeviceId::from_public_key(fieldsync_identity::SecretKey::from_seed(&[1; 32]).public());
        let enroll = AdminRequest::Enroll(Box::new(Enrollment {
            device,
            name: "R. Alvarez".into(),
            office: "Rome".into(),
            role: Role::Field,
            read: Some(vec!["general".parse().unwrap()]),
            write: None,
            days: 365,
            lease_days: Some(14),
            out: "/tmp/r.cert".into(),
        }));
        let text = serde_json::to_string(&enroll).unwrap();
        assert!(
            text.starts_with(r#"{"command":"enroll","device":""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<AdminRequest>(&text).unwrap(), enroll);
        // Names are parsed, not trusted, when a request arrives.
        for (from, to) in [
            (r#""general""#, r#""Not A Compartment""#),
            (r#""field""#, r#""admin""#),
        ] {
            let bad = text.replacen(from, to, 1);
            assert_ne!(bad, text);
            assert!(serde_json::from_str::<AdminRequest>(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_lines_carry_causes_once() {
        let io = std::io::Error::other("disk on fire");
        let e = AdminError::File(FileError::Io {
            op: "read",
            path: "/x".into(),
            source: io,
        });
        assert_eq!(error_line(&e), "cannot read /x: disk on fire");
        let e = AdminError::Issue(fieldsync_identity::CertificateError::Invalid("bad".into()));
        assert_eq!(
            error_line(&e),
            "cannot issue the certificate: invalid certificate: bad"
        );
    }
}
