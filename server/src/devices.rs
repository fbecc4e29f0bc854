//! The devices a relay knows: those headquarters enrolled (kept in store
//! settings, so that a device that never connected is listed too), the
//! peers the store met or heard of through a carrier, and the devices found
//! signing two different changes as one (equivocation).

use std::collections::BTreeMap;

use fieldsync_identity::{DeviceCertificate, DeviceId, Timestamp, WipeOrder};
use fieldsync_store::{PeerRecord, Store};
use fieldsync_view::{DeviceNames, Format, ViewError};
use serde::Serialize;

use crate::admin::{AdminContext, AdminError, SETTING_ENROLLED, SETTING_ENROLLED_PREFIX};

/// One device this relay knows.
#[derive(Debug, Clone)]
pub struct KnownDevice {
    /// The device.
    pub device: DeviceId,
    /// Its certificate with the highest serial (enrolled here or carried by
    /// a session); `None` when no certificate of it decodes.
    pub certificate: Option<DeviceCertificate>,
    /// Whether this headquarters enrolled it.
    pub enrolled: bool,
    /// What the store recorded from contact with it, if any.
    pub peer: Option<PeerRecord>,
}

/// The enrolled devices' ids, from the `enrolled` setting.
pub(crate) fn enrolled_ids(store: &Store) -> Result<Vec<DeviceId>, AdminError> {
    let Some(list) = store.setting(SETTING_ENROLLED)? else {
        return Ok(Vec::new());
    };
    list.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim().parse().map_err(|_| AdminError::Setting {
                setting: SETTING_ENROLLED.into(),
                detail: format!("'{l}' is not a device id"),
            })
        })
        .collect()
}

/// The certificate headquarters last issued to `device`, if it enrolled it.
pub(crate) fn enrolled_certificate(
    ctx: &AdminContext<'_>,
    device: &DeviceId,
) -> Result<Option<DeviceCertificate>, AdminError> {
    let setting = format!("{SETTING_ENROLLED_PREFIX}{device}");
    let Some(text) = ctx.store().setting(&setting)? else {
        return Ok(None);
    };
    DeviceCertificate::from_pem_like(&text, ctx.hq_public())
        .map(Some)
        .map_err(|e| AdminError::Setting {
            setting,
            detail: e.to_string(),
        })
}

/// Records `cert` as the enrolled certificate of its device: first the
/// certificate, then the index (a crash between the two leaves a
/// certificate that the next enrollment of the device indexes).
pub(crate) fn record_enrollment(
    ctx: &AdminContext<'_>,
    cert: &DeviceCertificate,
) -> Result<(), AdminError> {
    let store = ctx.store();
    let device = cert.device();
    store.set_setting(
        &format!("{SETTING_ENROLLED_PREFIX}{device}"),
        &cert.to_pem_like(),
    )?;
    let mut ids = enrolled_ids(store)?;
    if let Err(i) = ids.binary_search(&device) {
        ids.insert(i, device);
        let list: Vec<String> = ids.iter().map(ToString::to_string).collect();
        store.set_setting(SETTING_ENROLLED, &(list.join("\n") + "\n"))?;
    }
    Ok(())
}

/// Every enrolled or known device, sorted by id.
pub fn known(ctx: &AdminContext<'_>) -> Result<Vec<KnownDevice>, AdminError> {
    let mut out: BTreeMap<DeviceId, KnownDevice> = BTreeMap::new();
    for device in enrolled_ids(ctx.store())? {
        let certificate = enrolled_certificate(ctx, &device)?;
        out.insert(
            device,
            KnownDevice {
                device,
                certificate,
                enrolled: true,
                peer: None,
            },
        );
    }
    for (device, rec) in ctx.store().peers()? {
        let carried = DeviceCertificate::from_bytes(&rec.certificate, ctx.hq_public()).ok();
        let entry = out.entry(device).or_insert_with(|| KnownDevice {
            device,
            certificate: None,
            enrolled: false,
            peer: None,
        });
        if let Some(c) = carried
            && entry
                .certificate
                .as_ref()
                .is_none_or(|e| c.serial() > e.serial())
        {
            entry.certificate = Some(c);
        }
        entry.peer = Some(rec);
    }
    // A device known only by the conflicting changes it signed is listed too.
    for e in ctx.store().equivocations()? {
        out.entry(e.device).or_insert_with(|| KnownDevice {
            device: e.device,
            certificate: None,
            enrolled: false,
            peer: None,
        });
    }
    Ok(out.into_values().collect())
}

/// The names of the known devices, for views.
pub fn names(ctx: &AdminContext<'_>) -> Result<DeviceNames, AdminError> {
    Ok(known(ctx)?
        .into_iter()
        .filter_map(|k| k.certificate.map(|c| (k.device, c.name().to_owned())))
        .collect())
}

/// The certificates of the known devices.
pub fn certificates(
    ctx: &AdminContext<'_>,
) -> Result<BTreeMap<DeviceId, DeviceCertificate>, AdminError> {
    Ok(known(ctx)?
        .into_iter()
        .filter_map(|k| k.certificate.map(|c| (k.device, c)))
        .collect())
}

/// Resolves a device id or unique prefix among the known devices.
pub fn resolve(ctx: &AdminContext<'_>, query: &str) -> Result<KnownDevice, AdminError> {
    let q = query.trim().to_ascii_lowercase();
    let unknown = || AdminError::UnknownDevice {
        query: query.to_owned(),
    };
    if q.is_empty() || !q.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(unknown());
    }
    let mut found: Vec<KnownDevice> = known(ctx)?
        .into_iter()
        .filter(|k| k.device.to_string().starts_with(&q))
        .collect();
    match found.len() {
        0 => Err(unknown()),
        1 => Ok(found.remove(0)),
        _ => Err(AdminError::AmbiguousDevice {
            query: query.to_owned(),
            candidates: found
                .iter()
                .map(|k| k.device.to_string()[..12].to_owned())
                .collect(),
        }),
    }
}

/// A device as `devices --json` shows it.
#[derive(Debug, Serialize)]
struct DeviceRow {
    device: String,
    short: String,
    name: Option<String>,
    office: Option<String>,
    role: Option<String>,
    serial: Option<u64>,
    read: Vec<String>,
    write: Vec<String>,
    not_after: Option<Timestamp>,
    enrolled: bool,
    last_contact: Option<Timestamp>,
    /// How far this relay holds the device's log (its cursor).
    held_through: Option<u64>,
    /// Changes of this relay's log the device has not acknowledged.
    pending_to_send: u64,
    revoked: Option<RevokedRow>,
    carried_by: Option<String>,
    /// The certificate's offline lease, in days.
    offline_lease_days: Option<u16>,
    /// The wipe order this relay holds for the device, if any.
    wipe: Option<WipeRow>,
    /// Each time the device signed different changes as the same change of
    /// a case: all of them are held in the quarantine.
    equivocations: Vec<EquivocationRow>,
}

#[derive(Debug, Serialize)]
struct EquivocationRow {
    case: String,
    incarnation: u32,
    seq: u64,
    /// The conflicting changes, by hash.
    changes: Vec<String>,
    /// Changes (of any device) held because they build on one of them.
    dependents: usize,
    since: Timestamp,
}

#[derive(Debug, Serialize)]
struct WipeRow {
    nonce: String,
    issued_at: Timestamp,
    expires_at: Timestamp,
    expired: bool,
    reason: String,
    /// When this relay gave the device its order (first and latest
    /// session), if it did; an order delivered by another relay shows there.
    delivered: Option<DeliveredRow>,
}

#[derive(Debug, Serialize)]
struct DeliveredRow {
    first_at: Timestamp,
    last_at: Timestamp,
    sessions: u64,
}

/// The wipe order this relay holds for `device`, with its delivery here.
fn wipe_row(
    ctx: &AdminContext<'_>,
    device: &DeviceId,
    now: Timestamp,
) -> Result<Option<WipeRow>, AdminError> {
    let store = ctx.store();
    let Some(order) = store
        .held_wipe_order(device)?
        .and_then(|b| WipeOrder::from_bytes(&b, ctx.hq_public()).ok())
    else {
        return Ok(None);
    };
    let delivered = store
        .wipe_delivery(device)?
        .filter(|d| d.nonce == order.nonce())
        .map(|d| DeliveredRow {
            first_at: d.first_at,
            last_at: d.last_at,
            sessions: d.sessions,
        });
    Ok(Some(WipeRow {
        nonce: order.nonce_hex(),
        issued_at: order.issued_at(),
        expires_at: order.expires_at(),
        expired: order.check_time(now).is_err(),
        reason: order.reason().to_owned(),
        delivered,
    }))
}

#[derive(Debug, Serialize)]
struct RevokedRow {
    at: Timestamp,
    reason: String,
    accepted: Vec<fieldsync_identity::AcceptedPoint>,
}

/// The `devices` view: every enrolled or known device with its sync state.
pub(crate) fn view(ctx: &AdminContext<'_>, format: Format) -> Result<String, AdminError> {
    let store = ctx.store();
    let head = store.log_head()?;
    let revocations = ctx.revocations()?;
    let known = known(ctx)?;
    let now = crate::now();
    let mut equivocations: BTreeMap<DeviceId, Vec<EquivocationRow>> = BTreeMap::new();
    for e in store.equivocations()? {
        equivocations
            .entry(e.device)
            .or_default()
            .push(EquivocationRow {
                case: e.case.to_string(),
                incarnation: e.incarnation,
                seq: e.seq,
                changes: e.changes.iter().map(ToString::to_string).collect(),
                dependents: e.dependents,
                since: e.since,
            });
    }
    let mut rows = Vec::with_capacity(known.len());
    for k in &known {
        let cert = k.certificate.as_ref();
        let body = cert.map(DeviceCertificate::body);
        let revoked = revocations
            .as_ref()
            .and_then(|l| l.is_revoked(&k.device))
            .map(|e| RevokedRow {
                at: e.revoked_at,
                reason: e.reason.clone(),
                accepted: e.accepted.clone(),
            });
        rows.push(DeviceRow {
            device: k.device.to_string(),
            short: k.device.short(),
            name: cert.map(|c| c.name().to_owned()),
            office: cert.map(|c| c.office().to_owned()),
            role: cert.map(|c| c.role().to_string()),
            serial: cert.map(DeviceCertificate::serial),
            read: body.map_or_else(Vec::new, |b| {
                b.read.iter().map(ToString::to_string).collect()
            }),
            write: body.map_or_else(Vec::new, |b| {
                b.write.iter().map(ToString::to_string).collect()
            }),
            not_after: body.map(|b| b.not_after),
            enrolled: k.enrolled,
            last_contact: k.peer.as_ref().map(|p| p.last_contact),
            held_through: store.peer_cursor(&k.device)?.map(|c| c.seq),
            pending_to_send: head.saturating_sub(store.peer_ack(&k.device)?),
            revoked,
            carried_by: k
                .peer
                .as_ref()
                .and_then(|p| p.carried_by)
                .map(|d| d.to_string()),
            offline_lease_days: cert.and_then(DeviceCertificate::offline_lease_days),
            wipe: wipe_row(ctx, &k.device, now)?,
            equivocations: equivocations.remove(&k.device).unwrap_or_default(),
        });
    }
    if format == Format::Json {
        let mut out = serde_json::to_string_pretty(&rows).map_err(ViewError::from)?;
        out.push('\n');
        return Ok(out);
    }
    if rows.is_empty() {
        return Ok(
            "no devices yet; enroll one with `fieldsync-server enroll --device ID --name NAME --office OFFICE --role ROLE --out FILE`\n"
                .to_owned(),
        );
    }
    let names = names(ctx)?;
    let mut out = table(&rows, &names);
    out.push_str(&equivocation_notes(&rows, &names));
    Ok(out)
}

/// Lines under the table, one per equivocation, saying what it means and
/// what to do.
fn equivocation_notes(rows: &[DeviceRow], names: &DeviceNames) -> String {
    let mut out = String::new();
    for r in rows {
        let label = r
            .device
            .parse::<DeviceId>()
            .map_or_else(|_| r.short.clone(), |d| names.label(&d));
        for e in &r.equivocations {
            let case = e.case.get(..8).unwrap_or(&e.case);
            out.push_str(&format!(
                "\n{label} signed {} different changes as its change {} to case {case} (first seen {}); \
                 all of them and {} change(s) built on them are held in the quarantine",
                e.changes.len(),
                e.seq,
                e.since,
                e.dependents,
            ));
        }
    }
    if !out.is_empty() {
        out.push_str(
            "\n\nAn honest device never does this: its key is probably in other hands. \
             Revoke it (`fieldsync-server revoke DEVICE --reason TEXT`), then release \
             the story that stands (`fieldsync-server quarantine release ID`).\n",
        );
    }
    out
}

/// The STATE cell: active or revoked, and any wipe order with its delivery.
fn state(r: &DeviceRow) -> String {
    let mut out = r
        .revoked
        .as_ref()
        .map_or_else(|| "active".to_owned(), |v| format!("revoked {}", v.at));
    if !r.equivocations.is_empty() {
        out.push_str(&format!("; EQUIVOCATED ×{}", r.equivocations.len()));
    }
    if let Some(w) = &r.wipe {
        out.push_str(&match (&w.delivered, w.expired) {
            (Some(d), _) => format!("; wipe ordered, delivered {}", d.first_at),
            (None, true) => "; wipe ordered, expired undelivered".to_owned(),
            (None, false) => "; wipe ordered, not delivered here".to_owned(),
        });
    }
    out
}

/// The text table of `devices`.
fn table(rows: &[DeviceRow], names: &DeviceNames) -> String {
    let dash = || "-".to_owned();
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            [
                r.short.clone(),
                r.name.clone().unwrap_or_else(dash),
                r.office.clone().unwrap_or_else(dash),
                r.role.clone().unwrap_or_else(dash),
                r.last_contact
                    .map_or_else(|| "never".to_owned(), |t| t.to_string()),
                r.held_through.map_or_else(dash, |s| s.to_string()),
                r.pending_to_send.to_string(),
                state(r),
                r.carried_by
                    .as_deref()
                    .and_then(|d| d.parse::<DeviceId>().ok())
                    .map_or_else(dash, |d| names.label(&d)),
            ]
        })
        .collect();
    let header = [
        "DEVICE",
        "NAME",
        "OFFICE",
        "ROLE",
        "LAST CONTACT",
        "HELD",
        "TO SEND",
        "STATE",
        "CARRIED BY",
    ];
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            // Counts (held, to send) align right; text aligns left.
            if i == 5 || i == 6 {
                l.push_str(&format!("{cell:>w$}"));
            } else {
                l.push_str(&format!("{cell:<w$}"));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &cells {
        let refs: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&refs);
    }
    out
}
