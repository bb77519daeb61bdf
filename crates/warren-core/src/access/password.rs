//! Password hashes as RabbitMQ stores them: four random bytes of salt, then
//! the digest of salt and password (`rabbit_password:salted_hash/3`), in
//! definitions files as base64 beside `hashing_algorithm`. Only the hash is
//! kept; a login hashes what the client sent with the stored salt.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256, Sha512};

/// Bytes of salt in front of the digest.
pub const SALT_LEN: usize = 4;

/// The digest of a hash, by RabbitMQ's module name for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HashAlgorithm {
    /// `rabbit_password_hashing_sha256`, RabbitMQ's default since 3.6.
    Sha256,
    /// `rabbit_password_hashing_sha512`.
    Sha512,
}

impl HashAlgorithm {
    /// RabbitMQ's name for it, as definitions files write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "rabbit_password_hashing_sha256",
            Self::Sha512 => "rabbit_password_hashing_sha512",
        }
    }

    /// The algorithm a definitions file names; `None` for one Warren does
    /// not have (MD5, RabbitMQ's before 3.6, is refused: it is broken).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "rabbit_password_hashing_sha256" => Some(Self::Sha256),
            "rabbit_password_hashing_sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    fn digest(self, salt: &[u8], password: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => {
                let mut h = Sha256::new();
                h.update(salt);
                h.update(password);
                h.finalize().to_vec()
            }
            Self::Sha512 => {
                let mut h = Sha512::new();
                h.update(salt);
                h.update(password);
                h.finalize().to_vec()
            }
        }
    }

    fn digest_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }
}

/// A salted password hash.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PasswordHash {
    algorithm: HashAlgorithm,
    /// Salt, then digest.
    bytes: Vec<u8>,
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHash")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl PasswordHash {
    /// The hash of `password` with `salt` (which the caller draws at random).
    pub fn new(algorithm: HashAlgorithm, salt: [u8; SALT_LEN], password: &str) -> Self {
        let mut bytes = salt.to_vec();
        bytes.extend(algorithm.digest(&salt, password.as_bytes()));
        Self { algorithm, bytes }
    }

    /// A hash as a definitions file holds it (`password_hash`, base64).
    pub fn from_base64(algorithm: HashAlgorithm, encoded: &str) -> Result<Self, String> {
        let bytes = STANDARD
            .decode(encoded.trim())
            .map_err(|e| format!("password_hash is not base64: {e}"))?;
        if bytes.len() != SALT_LEN + algorithm.digest_len() {
            return Err(format!(
                "password_hash has {} bytes; {} needs {}",
                bytes.len(),
                algorithm.name(),
                SALT_LEN + algorithm.digest_len()
            ));
        }
        Ok(Self { algorithm, bytes })
    }

    /// As a definitions file writes it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(&self.bytes)
    }

    /// Its algorithm.
    pub fn algorithm(&self) -> HashAlgorithm {
        self.algorithm
    }

    /// Whether `password` is the one hashed. Compares every byte whatever
    /// the first difference, so the time taken says nothing of where it is.
    pub fn verify(&self, password: &str) -> bool {
        let (salt, digest) = self.bytes.split_at(SALT_LEN);
        let got = self.algorithm.digest(salt, password.as_bytes());
        got.len() == digest.len()
            && got
                .iter()
                .zip(digest)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        for alg in [HashAlgorithm::Sha256, HashAlgorithm::Sha512] {
            let h = PasswordHash::new(alg, [1, 2, 3, 4], "s3cret");
            assert!(h.verify("s3cret"));
            assert!(!h.verify("s3cre"));
            assert!(!h.verify(""));
            let back = PasswordHash::from_base64(alg, &h.to_base64()).expect("round trip");
            assert_eq!(back, h);
            assert!(back.verify("s3cret"));
            assert_eq!(HashAlgorithm::from_name(alg.name()), Some(alg));
        }
    }

    #[test]
    fn rabbitmqs_documented_example_matches() {
        // The passwords guide's worked example: salt 908D C60A, "test12".
        let h = PasswordHash::new(HashAlgorithm::Sha256, [0x90, 0x8d, 0xc6, 0x0a], "test12");
        let documented = "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR";
        assert_eq!(h.to_base64(), documented);
        let imported =
            PasswordHash::from_base64(HashAlgorithm::Sha256, documented).expect("import");
        assert!(imported.verify("test12"));
        assert!(!imported.verify("test13"));
    }

    #[test]
    fn malformed_hashes_and_unknown_algorithms_are_refused() {
        assert!(PasswordHash::from_base64(HashAlgorithm::Sha256, "not base64!").is_err());
        let short = STANDARD.encode([0u8; 20]);
        assert!(PasswordHash::from_base64(HashAlgorithm::Sha256, &short).is_err());
        let sha256_len = STANDARD.encode([0u8; 36]);
        assert!(PasswordHash::from_base64(HashAlgorithm::Sha512, &sha256_len).is_err());
        assert_eq!(
            HashAlgorithm::from_name("rabbit_password_hashing_md5"),
            None
        );
    }

    #[test]
    fn debug_output_hides_the_hash() {
        let h = PasswordHash::new(HashAlgorithm::Sha256, [9; 4], "pw");
        assert!(!format!("{h:?}").contains(&h.to_base64()));
    }
}
