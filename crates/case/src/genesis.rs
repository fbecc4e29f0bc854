//! The genesis record of a case: who created it, where, of what kind, in
//! which compartment. Signed by its creator; it never changes.

use fieldsync_identity::{
    CaseId, DeviceId, Encoded, PublicKey, Record, Signed, Timestamp, Verified,
};
use serde::{Deserialize, Serialize};

use crate::error::CaseError;
use crate::schema::CaseKind;

/// The version of the genesis record this build writes and accepts.
pub const GENESIS_VERSION: u8 = 1;
/// Longest office name, in characters.
pub const OFFICE_MAX_CHARS: usize = 64;
/// Longest compartment name, in characters.
pub const COMPARTMENT_MAX_CHARS: usize = 64;

/// The signed, immutable birth certificate of a case.
///
/// Its postcard encoding is what the creator signs (domain
/// `fieldsync/genesis/v1`). Only its creator may sign it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    /// The case.
    pub case: CaseId,
    /// Its kind.
    pub kind: CaseKind,
    /// The office that owns it (1..=64 printable characters).
    pub office: String,
    /// The compartment it belongs to (1..=64 characters of `[a-z0-9._-]`).
    pub compartment: String,
    /// The device that created it, and signed this record.
    pub creator: DeviceId,
    /// When it was created.
    pub created_at: Timestamp,
    /// Record version ([`GENESIS_VERSION`]).
    pub version: u8,
}

impl Record for Genesis {
    const DOMAIN: &'static [u8] = b"fieldsync/genesis/v1";
    const WHAT: &'static str = "case genesis";
    const MAX_LEN: usize = 4096;

    fn check_signer(&self, signer: &PublicKey) -> Result<(), String> {
        if self.creator.public_key() == signer {
            Ok(())
        } else {
            Err(format!(
                "the genesis names device {} as its creator",
                self.creator.short()
            ))
        }
    }
}

/// A genesis as it comes off the wire or out of storage.
pub type SignedGenesis = Signed<Encoded<Genesis>>;
/// A genesis whose signature and creator binding are verified.
pub type VerifiedGenesis = Verified<Encoded<Genesis>>;

impl Genesis {
    /// Checks the fields that decoding alone does not: version, office and compartment.
    pub fn validate(&self) -> Result<(), CaseError> {
        if self.version != GENESIS_VERSION {
            return Err(CaseError::InvalidValue {
                field: "genesis version",
                reason: format!(
                    "version {} is not supported (this build knows {GENESIS_VERSION}); upgrade this device",
                    self.version
                ),
            });
        }
        validate_office(&self.office)?;
        validate_compartment(&self.compartment)
    }
}

/// Checks an office name: 1..=64 printable characters, not blank.
pub fn validate_office(office: &str) -> Result<(), CaseError> {
    let n = office.chars().count();
    if office.trim().is_empty() || n > OFFICE_MAX_CHARS || office.chars().any(char::is_control) {
        return Err(CaseError::InvalidValue {
            field: "office",
            reason: format!("{office:?} must be 1 to {OFFICE_MAX_CHARS} printable characters"),
        });
    }
    Ok(())
}

/// Checks a compartment name with the rules of [`fieldsync_identity::Compartment`]
/// (1..=64 characters of `[a-z0-9._-]`, starting with a letter or digit), so
/// that a case's compartment is always one a certificate can name.
pub fn validate_compartment(compartment: &str) -> Result<(), CaseError> {
    fieldsync_identity::Compartment::new(compartment)
        .map(|_| ())
        .map_err(|e| CaseError::InvalidValue {
            field: "compartment",
            reason: e.to_string(),
        })
}

/// Builds and encodes a new genesis (version [`GENESIS_VERSION`]), ready to
/// be signed by `creator` with [`fieldsync_identity::sign`].
pub fn new_genesis(
    case: CaseId,
    kind: CaseKind,
    office: &str,
    compartment: &str,
    creator: DeviceId,
    created_at: Timestamp,
) -> Result<Encoded<Genesis>, CaseError> {
    let genesis = Genesis {
        case,
        kind,
        office: office.to_owned(),
        compartment: compartment.to_owned(),
        creator,
        created_at,
        version: GENESIS_VERSION,
    };
    genesis.validate()?;
    Encoded::new(genesis).map_err(CaseError::Genesis)
}

/// Verifies a signed genesis (signature, creator binding) and validates its fields.
pub fn verify_genesis(signed: SignedGenesis) -> Result<VerifiedGenesis, CaseError> {
    let verified = signed.verify().map_err(CaseError::GenesisSignature)?;
    verified.payload().value().validate()?;
    Ok(verified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldsync_identity::{SecretKey, decode_signed, encode_signed, sign};

    fn device(n: u8) -> (SecretKey, DeviceId) {
        let k = SecretKey::from_seed(&[n; 32]);
        let d = DeviceId::from_public_key(k.public());
        (k, d)
    }

    #[test]
    fn sign_encode_decode_verify() {
        let (k, d) = device(1);
        let g = new_genesis(
            CaseId::from_bytes([7; 16]),
            CaseKind::CulturalProperty,
            "Rome attaché",
            "eu.cultural",
            d,
            Timestamp::from_millis(1_700_000_000_000),
        )
        .unwrap();
        let bytes = encode_signed(sign(g, &k).unwrap().as_signed());
        let back = verify_genesis(decode_signed::<Genesis>(&bytes).unwrap()).unwrap();
        assert_eq!(back.payload().value().office, "Rome attaché");
        assert_eq!(back.payload().value().kind, CaseKind::CulturalProperty);
    }

    #[test]
    fn only_the_creator_signs() {
        let (_, d) = device(1);
        let (other, _) = device(2);
        let g = new_genesis(
            CaseId::from_bytes([7; 16]),
            CaseKind::VisaSecurity,
            "Mexico City",
            "west",
            d,
            Timestamp::from_millis(0),
        )
        .unwrap();
        assert!(sign(g, &other).is_err());
    }

    #[test]
    fn validation() {
        let (_, d) = device(1);
        let mk = |office: &str, comp: &str| {
            new_genesis(
                CaseId::from_bytes([7; 16]),
                CaseKind::VisaSecurity,
                office,
                comp,
                d,
                Timestamp::from_millis(0),
            )
        };
        assert!(mk("Office", "a.b_c-1").is_ok());
        assert!(matches!(
            mk("", "x"),
            Err(CaseError::InvalidValue {
                field: "office",
                ..
            })
        ));
        assert!(mk("   ", "x").is_err());
        assert!(mk("a\nb", "x").is_err());
        assert!(mk(&"o".repeat(65), "x").is_err());
        assert!(mk(&"é".repeat(64), "x").is_ok());
        assert!(matches!(
            mk("Office", ""),
            Err(CaseError::InvalidValue {
                field: "compartment",
                ..
            })
        ));
        assert!(mk("Office", "Upper").is_err());
        assert!(mk("Office", "sp ace").is_err());
        assert!(mk("Office", &"c".repeat(65)).is_err());
        assert!(mk("Office", &"c".repeat(64)).is_ok());
    }
}
