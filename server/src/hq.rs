//! What only headquarters does, with its root key: set up a relay, enroll
//! and revoke devices, order lost devices wiped, release quarantined changes.

use std::path::PathBuf;

use fieldsync_identity::{
    CERTIFICATE_VERSION, CertificateBody, Compartment, DeviceCertificate, DeviceId, HqRoot,
    MIN_CERTIFICATE_VERSION, PublicKey, Revocation, Role, SecretKey, Timestamp, WipeOrder,
};
use fieldsync_protocol::{
    Authority, MAX_RELEASE_REASON, apply_release, encode_release, release_body,
};
use fieldsync_store::{NewDevice, Store, StoreKind};
use zeroize::Zeroizing;

use crate::admin::{
    AdminContext, AdminError, Enrollment, MAX_DAYS, SETTING_CERT_SERIAL, SETTING_COMPARTMENTS,
    SETTING_HQ_PUBLIC,
};
use crate::devices;
use crate::keys::{DataDir, FileError, write_hq_key, write_new_file};
use crate::{now, random};

pub use fieldsync_identity::HQ_OFFICE;
/// Compartment of a device enrolled with neither `--read` nor `--write`.
pub const DEFAULT_COMPARTMENT: &str = "general";
/// Certificates start an hour before they are issued, so that a device
/// whose clock is a little behind can use its certificate at once.
const BACKDATE_MS: i64 = 60 * 60 * 1000;

/// What `init` needs.
#[derive(Debug, Clone)]
pub struct Setup {
    /// This relay's name.
    pub name: String,
    /// The compartments it serves (read and write in its certificate).
    pub compartments: Vec<Compartment>,
    /// Validity of its certificate, in days.
    pub days: u32,
}

/// What `init` made.
#[derive(Debug)]
pub struct Initialized {
    /// Headquarters' public key (give it to every device and relay).
    pub hq: PublicKey,
    /// This relay's certificate (its device id is the relay id).
    pub certificate: DeviceCertificate,
    /// The data directory.
    pub dir: DataDir,
}

fn check_days(days: u32) -> Result<(), AdminError> {
    if (1..=MAX_DAYS).contains(&days) {
        Ok(())
    } else {
        Err(AdminError::Invalid(format!(
            "--days must be 1 to {MAX_DAYS}, not {days}"
        )))
    }
}

/// The validity of a certificate issued at `now` for `days`.
fn validity(now: Timestamp, days: u32) -> (Timestamp, Timestamp) {
    let start = Timestamp::from_millis(now.as_millis().saturating_sub(BACKDATE_MS));
    (start, now.plus_days(days))
}

/// Sets up a headquarters relay in `dir`: the HQ root key (`hq-root.key`),
/// the relay store (`relay.redb`) with an empty signed revocation list, and
/// the relay's certificate (`relay.cert`). Refuses a directory that holds a
/// server already; on failure, removes what it created.
pub fn init(dir: &DataDir, setup: &Setup) -> Result<Initialized, AdminError> {
    check_days(setup.days)?;
    if setup.compartments.is_empty() {
        return Err(AdminError::Invalid(
            "a relay serves at least one compartment".into(),
        ));
    }
    for (path, what) in [
        (dir.store(), "relay.redb"),
        (dir.hq_key(), "hq-root.key"),
        (dir.relay_certificate(), "relay.cert"),
    ] {
        if path.exists() {
            return Err(AdminError::AlreadyInitialized {
                dir: dir.root().to_owned(),
                what,
            });
        }
    }
    let now = now();
    let hq_seed = Zeroizing::new(random::<32>()?);
    let relay_seed = Zeroizing::new(random::<32>()?);
    let epoch = random::<16>()?;
    let hq = HqRoot::from_secret(SecretKey::from_seed(&hq_seed));
    let relay = DeviceId::from_public_key(SecretKey::from_seed(&relay_seed).public());
    // Everything that can be refused is decided before a file is written.
    let (not_before, not_after) = validity(now, setup.days);
    let certificate = hq.issue(CertificateBody {
        version: CERTIFICATE_VERSION,
        serial: 1,
        issuer: hq.public(),
        device: relay,
        name: setup.name.trim().to_owned(),
        office: HQ_OFFICE.to_owned(),
        role: Role::Relay,
        read: setup.compartments.clone(),
        write: setup.compartments.clone(),
        not_before,
        not_after,
    })?;
    let revocations = hq.empty_revocations(now)?;
    dir.create()?;
    let mut created: Vec<PathBuf> = Vec::new();
    let result = (|| -> Result<(), AdminError> {
        write_hq_key(&dir.hq_key(), &hq_seed)?;
        created.push(dir.hq_key());
        let store = Store::create(
            &dir.store(),
            NewDevice {
                seed: *relay_seed,
                name: certificate.name(),
                epoch,
                now,
                kind: StoreKind::Relay,
            },
        )?;
        created.push(dir.store());
        store.set_setting(SETTING_HQ_PUBLIC, &hq.public().to_string())?;
        let list: Vec<String> = setup.compartments.iter().map(ToString::to_string).collect();
        store.set_setting(SETTING_COMPARTMENTS, &list.join(","))?;
        store.set_setting(SETTING_CERT_SERIAL, "1")?;
        store.set_revocations(&revocations.to_bytes())?;
        write_new_file(
            &dir.relay_certificate(),
            certificate.to_pem_like().as_bytes(),
            0o644,
        )?;
        created.push(dir.relay_certificate());
        Ok(())
    })();
    if let Err(e) = result {
        for path in created.iter().rev() {
            if let Err(err) = std::fs::remove_file(path) {
                tracing::warn!(path = %path.display(), %err, "cannot remove after a failed init");
            }
        }
        return Err(e);
    }
    Ok(Initialized {
        hq: hq.public(),
        certificate,
        dir: dir.clone(),
    })
}

/// Sets up an office relay in `dir`: its key and store, and nothing of
/// headquarters (no root key; the headquarters key arrives with the relay
/// certificate headquarters issues for this relay's id, installed by
/// [`install_office_certificate`]). Returns the relay id to enroll.
pub fn init_office(dir: &DataDir, name: &str) -> Result<DeviceId, AdminError> {
    for (path, what) in [
        (dir.store(), "relay.redb"),
        (dir.hq_key(), "hq-root.key"),
        (dir.relay_certificate(), "relay.cert"),
    ] {
        if path.exists() {
            return Err(AdminError::AlreadyInitialized {
                dir: dir.root().to_owned(),
                what,
            });
        }
    }
    let seed = Zeroizing::new(random::<32>()?);
    let epoch = random::<16>()?;
    dir.create()?;
    let store = Store::create(
        &dir.store(),
        NewDevice {
            seed: *seed,
            name: name.trim(),
            epoch,
            now: now(),
            kind: StoreKind::Relay,
        },
    )?;
    Ok(store.device().id())
}

/// Installs on an office relay the certificate headquarters issued for
/// it: it must be a relay certificate for this relay's key, from the same
/// headquarters as before if one is known. Records headquarters' key and
/// the compartments the relay serves, and writes `relay.cert`.
pub fn install_office_certificate(
    dir: &DataDir,
    store: &Store,
    text: &str,
) -> Result<DeviceCertificate, AdminError> {
    let cert = DeviceCertificate::from_pem_like_trusting_issuer(text)?;
    if cert.device() != store.device().id() {
        return Err(AdminError::Invalid(format!(
            "the certificate is for {}, but this relay is {}; enroll {} at headquarters with --role relay",
            cert.device().short(),
            store.device().id().short(),
            store.device().id()
        )));
    }
    if cert.role() != Role::Relay {
        return Err(AdminError::Invalid(format!(
            "the certificate is for role {}; an office relay needs --role relay",
            cert.role()
        )));
    }
    if let Some(known) = store.setting(SETTING_HQ_PUBLIC)?
        && known != cert.issuer().to_string()
    {
        return Err(AdminError::Invalid(format!(
            "the certificate is issued by {}, but this relay belongs to headquarters {known}",
            cert.issuer()
        )));
    }
    cert.check_valid_at(now())?;
    store.set_setting(SETTING_HQ_PUBLIC, &cert.issuer().to_string())?;
    let list: Vec<String> = cert.body().read.iter().map(ToString::to_string).collect();
    store.set_setting(SETTING_COMPARTMENTS, &list.join(","))?;
    let path = dir.relay_certificate();
    let tmp = path.with_extension("cert.new");
    std::fs::write(&tmp, cert.to_pem_like())
        .map_err(|e| AdminError::Invalid(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, &path)
        .map_err(|e| AdminError::Invalid(format!("{}: {e}", path.display())))?;
    Ok(cert)
}

/// Issues a certificate for a device and writes it to a new file.
pub(crate) fn enroll(ctx: &AdminContext<'_>, e: &Enrollment) -> Result<String, AdminError> {
    let hq = ctx.hq()?;
    check_days(e.days)?;
    if let Some(lease) = e.lease_days {
        if !(1..=MAX_DAYS).contains(&u32::from(lease)) {
            return Err(AdminError::Invalid(format!(
                "--lease-days must be 1 to {MAX_DAYS}, not {lease}"
            )));
        }
        if e.role == Role::Relay {
            return Err(AdminError::Invalid(
                "a relay keeps no offline lease; enroll it without --lease-days".into(),
            ));
        }
    }
    if let Some(entry) = ctx
        .revocations()?
        .as_ref()
        .and_then(|l| l.is_revoked(&e.device))
    {
        return Err(AdminError::RevokedKey {
            device: e.device.short(),
            since: entry.revoked_at.to_string(),
        });
    }
    if e.out.exists() {
        return Err(FileError::Exists {
            path: e.out.clone(),
        }
        .into());
    }
    let read = match (&e.read, &e.write) {
        (Some(read), _) => read.clone(),
        (None, Some(write)) => write.clone(),
        (None, None) => vec![Compartment::new(DEFAULT_COMPARTMENT)?],
    };
    let write = match &e.write {
        Some(write) => write.clone(),
        None if e.role.can_author_changes() => read.clone(),
        None => Vec::new(),
    };
    let store = ctx.store();
    let last_serial: u64 = match store.setting(SETTING_CERT_SERIAL)? {
        Some(s) => s.trim().parse().map_err(|_| AdminError::Setting {
            setting: SETTING_CERT_SERIAL.into(),
            detail: format!("'{s}' is not a number"),
        })?,
        None => 0,
    };
    let serial = last_serial
        .checked_add(1)
        .ok_or_else(|| AdminError::Invalid("certificate serials are exhausted".into()))?;
    let now = now();
    let (not_before, not_after) = validity(now, e.days);
    // Without a lease, version 1: builds that predate the lease read it too.
    let version = match e.lease_days {
        Some(_) => CERTIFICATE_VERSION,
        None => MIN_CERTIFICATE_VERSION,
    };
    let body = CertificateBody {
        version,
        serial,
        issuer: hq.public(),
        device: e.device,
        name: e.name.trim().to_owned(),
        office: e.office.trim().to_owned(),
        role: e.role,
        read,
        write,
        not_before,
        not_after,
    };
    let cert = hq.issue_with_lease(body, e.lease_days)?;
    let previous = devices::enrolled_certificate(ctx, &e.device)?;
    // The serial is spent before the file exists, so that no two
    // certificates ever share one.
    store.set_setting(SETTING_CERT_SERIAL, &serial.to_string())?;
    write_new_file(&e.out, cert.to_pem_like().as_bytes(), 0o644)?;
    if let Err(err) = devices::record_enrollment(ctx, &cert) {
        // Without the record the file must not exist either.
        let _ = std::fs::remove_file(&e.out);
        return Err(err);
    }
    let b = cert.body();
    let list = |l: &[Compartment]| {
        if l.is_empty() {
            "nothing".to_owned()
        } else {
            l.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    let verb = match previous {
        Some(p) => format!("re-enrolled (replaces certificate {})", p.serial()),
        None => "enrolled".to_owned(),
    };
    let lease = match cert.offline_lease_days() {
        Some(days) => format!(
            "offline lease {days} days: after {days} days without contact with a relay the device keeps case data closed until it syncs\n"
        ),
        None => String::new(),
    };
    Ok(format!(
        "{verb} {} ({}, {}, {}): certificate {serial} written to {}\nreads {}; writes {}; valid {} to {}\n{lease}",
        e.device.short(),
        b.name,
        b.role,
        b.office,
        e.out.display(),
        list(&b.read),
        list(&b.write),
        b.not_before,
        b.not_after,
    ))
}

/// Revokes a device. Its work is accepted up to what this relay holds of
/// it, from any path: per incarnation, the highest signing counter of its
/// changes in this relay's log (some reach headquarters through an office,
/// with counters beyond what the device itself sent here), and at
/// incarnation 0 (that of every device never restored from a backup) at
/// least the cursor of its own log (its changes carry their log position as
/// signing counter). So headquarters withdraws nothing it held when it
/// revoked. Finding the counters reads the whole log, once per revocation.
pub(crate) fn revoke(
    ctx: &AdminContext<'_>,
    query: &str,
    reason: Option<&str>,
) -> Result<String, AdminError> {
    let hq = ctx.hq()?;
    let known = devices::resolve(ctx, query)?;
    let device = known.device;
    let previous = ctx.revocations()?;
    if let Some(entry) = previous.as_ref().and_then(|l| l.is_revoked(&device)) {
        return Err(AdminError::AlreadyRevoked {
            device: device.short(),
            since: entry.revoked_at.to_string(),
        });
    }
    let store = ctx.store();
    let cursor = store.peer_cursor(&device)?.map_or(0, |c| c.seq);
    let mut points = store.signed_counters(&device)?;
    let zero = points.entry(0).or_default();
    *zero = (*zero).max(cursor);
    let through = *zero;
    let now = now();
    let reason = reason.unwrap_or("revoked by headquarters");
    let mut entry = Revocation::new(device, now, reason);
    for (&incarnation, &counter) in &points {
        entry = entry.accepting(incarnation, counter);
    }
    let list = hq.revoke(previous.as_ref(), entry, now)?;
    let withdrawn = store.adopt_revocations(&list, now)?;
    let label = devices::names(ctx)?.label(&device);
    let others: String = points
        .iter()
        .filter(|(i, _)| **i != 0)
        .map(|(i, c)| format!(", through counter {c} of incarnation {i}"))
        .collect();
    let held = if withdrawn.from_pending > 0 {
        format!(
            "; {} of its changes waiting here for their dependencies went to quarantine",
            withdrawn.from_pending
        )
    } else {
        String::new()
    };
    Ok(format!(
        "revoked {label}: what it signed through counter {through} of incarnation 0{others} stands (this relay holds its log through {cursor}){held}; anything later goes to quarantine\nrevocation list {} stored; relays and devices receive it when they next sync, and withdraw what they accepted beyond it\n",
        list.sequence()
    ))
}

/// Releases quarantine entry `id` under headquarters' signature.
pub(crate) fn release(
    ctx: &AdminContext<'_>,
    id: u64,
    reason: Option<&str>,
) -> Result<String, AdminError> {
    let hq = ctx.hq()?;
    let store = ctx.store();
    let entry = store.quarantine_entry(id)?;
    let reason = reason.unwrap_or("released by headquarters");
    if reason.trim().is_empty() || reason.len() > MAX_RELEASE_REASON {
        return Err(AdminError::Invalid(format!(
            "the reason must be 1 to {MAX_RELEASE_REASON} bytes"
        )));
    }
    let now = now();
    let body = release_body(&entry, hq.public(), reason, now)?;
    let hash = body.value().change;
    let signed = hq.sign(body)?;
    let bytes = encode_release(signed.as_signed());
    let authority = Authority::new(*ctx.hq_public(), ctx.revocations()?);
    let certs = devices::certificates(ctx)?;
    let report = apply_release(store, &authority, id, &bytes, &certs, now)?;
    let names = devices::names(ctx)?;
    Ok(format!(
        "released quarantine entry {id}: change {} of case {} by {}\n{} stored, {} waiting for the changes it depends on, {} already here\n",
        hex::encode(&hash[..4]),
        entry.case.short(),
        names.label(&entry.signer),
        report.stored,
        report.pending,
        report.duplicates,
    ))
}

/// Default reason of a wipe order.
const WIPE_REASON: &str = "ordered wiped by headquarters";

/// Orders a device wiped: signs an order with headquarters' root key (a
/// random nonce, valid `days` days) and holds it to carry: a running
/// server sends it at once to the device if it is connected, and to every
/// relay it syncs with. The device destroys its keys when it gets it.
pub(crate) fn wipe(
    ctx: &AdminContext<'_>,
    query: &str,
    days: u32,
    reason: Option<&str>,
) -> Result<String, AdminError> {
    let hq = ctx.hq()?;
    let known = devices::resolve(ctx, query)?;
    let device = known.device;
    if known
        .certificate
        .as_ref()
        .is_some_and(|c| c.role() == Role::Relay)
        || device == ctx.store().device().id()
    {
        return Err(AdminError::Invalid(format!(
            "{} is a relay; wipe orders are for devices (field, supervisor, liaison)",
            device.short()
        )));
    }
    let store = ctx.store();
    let replaced = store
        .held_wipe_order(&device)?
        .and_then(|b| WipeOrder::from_bytes(&b, ctx.hq_public()).ok());
    let now = now();
    let order = hq.order_wipe(
        device,
        random::<16>()?,
        now,
        days,
        reason.unwrap_or(WIPE_REASON),
    )?;
    store.issue_wipe_order(&order, now)?;
    let label = devices::names(ctx)?.label(&device);
    let replaced = match replaced {
        Some(old) => format!(" (replaces order {})", &old.nonce_hex()[..8]),
        None => String::new(),
    };
    let revoked = ctx
        .revocations()?
        .as_ref()
        .and_then(|l| l.is_revoked(&device))
        .is_some();
    let next = if revoked {
        "the device is revoked: a relay that holds the order lets it connect only to receive it, then refuses it"
            .to_owned()
    } else {
        format!(
            "revoke it too (fieldsync-server revoke {}): relays then refuse it everything but this order",
            device.short()
        )
    };
    Ok(format!(
        "wipe order {} for {label}{replaced}: valid until {}\nrelays carry it; the device destroys its keys at its next contact with one\n{next}\n",
        &order.nonce_hex()[..8],
        order.expires_at(),
    ))
}
