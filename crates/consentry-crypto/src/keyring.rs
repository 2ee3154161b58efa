//! Master keys by version, marked for one environment.
//!
//! A key ring holds every version that may still resolve (older ones until
//! they are retired) and names the active one, which new tokens use.
//! Rotation adds a version and makes it active; nothing is re-keyed. The
//! ring is marked `production` or `non-production`, and a service started
//! for one environment refuses a ring marked for the other, so test keys
//! never protect real identities and real keys never reach a laptop.
//!
//! Where a ring comes from is a [`KeyProvider`]: a key file (the default,
//! written 0600), a hex key in an environment variable (development only),
//! or a KMS in production (implement the trait).

use rand::TryRngCore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Bytes of a master key.
pub const KEY_LEN: usize = 32;
/// The key file's format tag.
pub const FILE_FORMAT: &str = "consentry-keyring/v1";
/// The environment variable [`EnvKey`] reads by default.
pub const ENV_MASTER_KEY: &str = "CONSENTRY_MASTER_KEY";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Environment {
    Production,
    NonProduction,
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Environment::Production => "production",
            Environment::NonProduction => "non-production",
        })
    }
}

impl std::str::FromStr for Environment {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        match s {
            "production" => Ok(Environment::Production),
            "non-production" | "development" | "test" => Ok(Environment::NonProduction),
            _ => Err(KeyError::Malformed(format!(
                "environment {s:?}: expected production or non-production"
            ))),
        }
    }
}

/// What can go wrong with keys. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {kind}")]
    Io {
        path: String,
        kind: std::io::ErrorKind,
    },
    #[error("key ring: {0}")]
    Malformed(String),
    #[error("key version {0} is not in the key ring")]
    UnknownVersion(u32),
    #[error("key version {0} is retired")]
    Retired(u32),
    #[error("the active key version {0} cannot be retired: rotate first")]
    RetireActive(u32),
    #[error("key ring is marked {found}, but this service runs as {expected}")]
    EnvironmentMismatch {
        expected: Environment,
        found: Environment,
    },
    #[error("no key in {0}")]
    Missing(String),
    #[error("the operating system's random source failed")]
    Random,
}

/// A master key: zeroed on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct Secret(pub(crate) [u8; KEY_LEN]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Secret {
    /// A 32-byte key derived from this master key with HKDF-SHA256: one
    /// derivation for every purpose (token domains, date shifts, KEKs),
    /// each with its own salt and info.
    pub(crate) fn derive(&self, salt: &[u8], info: &[u8]) -> zeroize::Zeroizing<[u8; KEY_LEN]> {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), &self.0);
        let mut okm = zeroize::Zeroizing::new([0u8; KEY_LEN]);
        hk.expand(info, okm.as_mut())
            .expect("32 bytes is within HKDF-SHA256's output limit");
        okm
    }

    fn random() -> Result<Secret, KeyError> {
        let mut s = Secret([0; KEY_LEN]);
        rand::rngs::OsRng
            .try_fill_bytes(&mut s.0)
            .map_err(|_| KeyError::Random)?;
        Ok(s)
    }
}

#[derive(Debug, Clone)]
struct Version {
    secret: Secret,
    retired: bool,
}

/// Master keys by version, one of them active, marked for one environment.
#[derive(Debug, Clone)]
pub struct KeyRing {
    environment: Environment,
    active: u32,
    versions: BTreeMap<u32, Version>,
}

/// One version as `keys list` shows it: never the material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub version: u32,
    pub active: bool,
    pub retired: bool,
}

impl KeyRing {
    /// A new ring with one random key, version 1.
    pub fn generate(environment: Environment) -> Result<KeyRing, KeyError> {
        Ok(KeyRing::from_parts(
            environment,
            1,
            [(1, Secret::random()?)],
        ))
    }

    fn from_parts(
        environment: Environment,
        active: u32,
        keys: impl IntoIterator<Item = (u32, Secret)>,
    ) -> KeyRing {
        KeyRing {
            environment,
            active,
            versions: keys
                .into_iter()
                .map(|(v, secret)| {
                    (
                        v,
                        Version {
                            secret,
                            retired: false,
                        },
                    )
                })
                .collect(),
        }
    }

    /// A non-production ring with one given key (tests, and a key from the
    /// environment in development).
    pub fn from_key(environment: Environment, key: [u8; KEY_LEN]) -> KeyRing {
        KeyRing::from_parts(environment, 1, [(1, Secret(key))])
    }

    pub fn environment(&self) -> Environment {
        self.environment
    }

    /// The version new tokens use.
    pub fn active_version(&self) -> u32 {
        self.active
    }

    pub fn versions(&self) -> Vec<VersionInfo> {
        self.versions
            .iter()
            .map(|(&version, v)| VersionInfo {
                version,
                active: version == self.active,
                retired: v.retired,
            })
            .collect()
    }

    /// Starts a new version with a fresh random key and makes it active;
    /// older versions keep resolving until retired. Returns the new version.
    pub fn rotate(&mut self) -> Result<u32, KeyError> {
        let next = self
            .versions
            .keys()
            .next_back()
            .map_or(1, |v| v.saturating_add(1));
        self.versions.insert(
            next,
            Version {
                secret: Secret::random()?,
                retired: false,
            },
        );
        self.active = next;
        Ok(next)
    }

    /// Retires a version: its tokens no longer resolve and it derives no
    /// more keys. The active version cannot be retired.
    pub fn retire(&mut self, version: u32) -> Result<(), KeyError> {
        if version == self.active {
            return Err(KeyError::RetireActive(version));
        }
        let v = self
            .versions
            .get_mut(&version)
            .ok_or(KeyError::UnknownVersion(version))?;
        v.retired = true;
        Ok(())
    }

    /// Refuses a ring marked for another environment than the service's.
    pub fn require(&self, expected: Environment) -> Result<(), KeyError> {
        if self.environment == expected {
            Ok(())
        } else {
            Err(KeyError::EnvironmentMismatch {
                expected,
                found: self.environment,
            })
        }
    }

    /// The master key of a version that may still be used.
    pub(crate) fn secret(&self, version: u32) -> Result<&Secret, KeyError> {
        let v = self
            .versions
            .get(&version)
            .ok_or(KeyError::UnknownVersion(version))?;
        if v.retired {
            return Err(KeyError::Retired(version));
        }
        Ok(&v.secret)
    }

    /// The oldest version still usable: what internal names that must not
    /// change when keys rotate derive from (the subject pseudonym that keys
    /// the consent table and route's disclosures; date shifts), so a
    /// rotation re-keys none of them. Retiring this version changes them
    /// (a rebuild of the consent table, new shifts), deliberately. Always
    /// exists: the active version is never retired.
    pub fn anchor_version(&self) -> u32 {
        self.usable().next().map_or(self.active, |(v, _)| v)
    }

    /// Versions that may still be used, oldest first.
    pub(crate) fn usable(&self) -> impl Iterator<Item = (u32, &Secret)> {
        self.versions
            .iter()
            .filter(|(_, v)| !v.retired)
            .map(|(&n, v)| (n, &v.secret))
    }

    /// The ring as key-file JSON (holds key material: write it 0600).
    pub fn to_json(&self) -> String {
        let file = FileRing {
            format: FILE_FORMAT.into(),
            environment: self.environment,
            active: self.active,
            keys: self
                .versions
                .iter()
                .map(|(&version, v)| FileKey {
                    version,
                    material: hex::encode(v.secret.0),
                    retired: v.retired,
                })
                .collect(),
        };
        let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
        text.push('\n');
        // `file` drops here; its hex strings are zeroed by FileKey's Drop.
        text
    }

    /// Reads key-file JSON. Errors name the problem, never the material.
    pub fn from_json(text: &str) -> Result<KeyRing, KeyError> {
        let file: FileRing = serde_json::from_str(text).map_err(|e| {
            // serde_json's message can quote input: keep only its position.
            KeyError::Malformed(format!(
                "not a key file (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        if file.format != FILE_FORMAT {
            return Err(KeyError::Malformed(format!(
                "format {:?}: expected {FILE_FORMAT}",
                file.format
            )));
        }
        let mut versions = BTreeMap::new();
        for k in &file.keys {
            let mut secret = Secret([0; KEY_LEN]);
            hex::decode_to_slice(&k.material, &mut secret.0).map_err(|_| {
                KeyError::Malformed(format!(
                    "key version {}: material is not {KEY_LEN} bytes of hex",
                    k.version
                ))
            })?;
            if k.version == 0 {
                return Err(KeyError::Malformed("key versions start at 1".into()));
            }
            let v = Version {
                secret,
                retired: k.retired,
            };
            if versions.insert(k.version, v).is_some() {
                return Err(KeyError::Malformed(format!(
                    "key version {} appears twice",
                    k.version
                )));
            }
        }
        let ring = KeyRing {
            environment: file.environment,
            active: file.active,
            versions,
        };
        match ring.versions.get(&ring.active) {
            None => Err(KeyError::Malformed(format!(
                "active version {} has no key",
                ring.active
            ))),
            Some(v) if v.retired => Err(KeyError::Malformed(format!(
                "active version {} is retired",
                ring.active
            ))),
            Some(_) => Ok(ring),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRing {
    format: String,
    environment: Environment,
    active: u32,
    keys: Vec<FileKey>,
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct FileKey {
    version: u32,
    material: String,
    #[serde(default)]
    retired: bool,
}

/// Where a key ring comes from. A KMS-backed provider implements this in
/// production; it must hand out the ring's environment mark as stored.
pub trait KeyProvider {
    /// A name for logs and errors (a path, a variable name), never a key.
    fn describe(&self) -> String;
    fn key_ring(&self) -> Result<KeyRing, KeyError>;
}

/// A key ring in a JSON file (development and single-node deployments).
#[derive(Debug, Clone)]
pub struct KeyFile {
    path: PathBuf,
}

impl KeyFile {
    pub fn new(path: impl Into<PathBuf>) -> KeyFile {
        KeyFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, e: std::io::Error) -> KeyError {
        KeyError::Io {
            path: self.path.display().to_string(),
            kind: e.kind(),
        }
    }

    /// Writes the ring, readable by its owner only, replacing the file in
    /// one rename so a crash leaves the old ring or the new one.
    pub fn save(&self, ring: &KeyRing) -> Result<(), KeyError> {
        use std::io::Write;
        let tmp = self.path.with_extension("tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&tmp).map_err(|e| self.io(e))?;
        let mut text = ring.to_json();
        let written = f.write_all(text.as_bytes()).and_then(|_| f.sync_all());
        text.zeroize();
        written.map_err(|e| self.io(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))
    }
}

impl KeyProvider for KeyFile {
    fn describe(&self) -> String {
        format!("key file {}", self.path.display())
    }

    fn key_ring(&self) -> Result<KeyRing, KeyError> {
        let mut text = std::fs::read_to_string(&self.path).map_err(|e| self.io(e))?;
        let ring = KeyRing::from_json(&text);
        text.zeroize();
        ring
    }
}

/// One hex key from an environment variable, as version 1 of a
/// non-production ring. Development only: a production ring comes from a
/// file or a KMS, with its versions and its mark.
#[derive(Debug, Clone)]
pub struct EnvKey {
    var: String,
}

impl EnvKey {
    pub fn new(var: impl Into<String>) -> EnvKey {
        EnvKey { var: var.into() }
    }
}

impl Default for EnvKey {
    fn default() -> Self {
        EnvKey::new(ENV_MASTER_KEY)
    }
}

impl KeyProvider for EnvKey {
    fn describe(&self) -> String {
        format!("environment variable {}", self.var)
    }

    fn key_ring(&self) -> Result<KeyRing, KeyError> {
        let mut text = std::env::var(&self.var).map_err(|_| KeyError::Missing(self.describe()))?;
        let mut key = [0u8; KEY_LEN];
        let decoded = hex::decode_to_slice(text.trim(), &mut key);
        text.zeroize();
        decoded.map_err(|_| {
            KeyError::Malformed(format!("{}: not {KEY_LEN} bytes of hex", self.describe()))
        })?;
        let ring = KeyRing::from_key(Environment::NonProduction, key);
        key.zeroize();
        Ok(ring)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("consentry-keys-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("keys.json")
    }

    #[test]
    fn rotation_adds_an_active_version_and_retiring_stops_old_ones() {
        let mut ring = KeyRing::generate(Environment::NonProduction).unwrap();
        assert_eq!(ring.active_version(), 1);
        assert_eq!(ring.rotate().unwrap(), 2);
        assert_eq!(ring.active_version(), 2);
        assert!(ring.secret(1).is_ok(), "old versions keep resolving");
        assert_ne!(ring.secret(1).unwrap().0, ring.secret(2).unwrap().0);
        assert!(matches!(ring.retire(2), Err(KeyError::RetireActive(2))));
        ring.retire(1).unwrap();
        assert!(matches!(ring.secret(1), Err(KeyError::Retired(1))));
        assert!(matches!(ring.secret(9), Err(KeyError::UnknownVersion(9))));
        assert_eq!(
            ring.versions(),
            [
                VersionInfo {
                    version: 1,
                    active: false,
                    retired: true
                },
                VersionInfo {
                    version: 2,
                    active: true,
                    retired: false
                }
            ]
        );
    }

    #[test]
    fn a_ring_refuses_the_other_environment() {
        let prod = KeyRing::generate(Environment::Production).unwrap();
        let dev = KeyRing::generate(Environment::NonProduction).unwrap();
        assert!(prod.require(Environment::Production).is_ok());
        assert!(dev.require(Environment::NonProduction).is_ok());
        let err = prod.require(Environment::NonProduction).unwrap_err();
        assert_eq!(
            err.to_string(),
            "key ring is marked production, but this service runs as non-production"
        );
        assert!(dev.require(Environment::Production).is_err());
    }

    #[test]
    fn key_file_round_trips_owner_only_and_errors_never_show_material() {
        let path = temp_path("file");
        let mut ring = KeyRing::generate(Environment::NonProduction).unwrap();
        ring.rotate().unwrap();
        ring.retire(1).unwrap();
        let file = KeyFile::new(&path);
        file.save(&ring).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let back = file.key_ring().unwrap();
        assert_eq!(back.versions(), ring.versions());
        assert_eq!(back.secret(2).unwrap().0, ring.secret(2).unwrap().0);
        assert_eq!(back.environment(), Environment::NonProduction);

        // Debug never prints material.
        let material = hex::encode(ring.secret(2).unwrap().0);
        assert!(!format!("{ring:?}").contains(&material));

        // A corrupted file: the error names the version, not the bytes.
        let text = std::fs::read_to_string(&path).unwrap();
        let bad = text.replacen(&material, &format!("{}zz", &material[..62]), 1);
        let err = KeyRing::from_json(&bad).unwrap_err().to_string();
        assert!(err.contains("key version 2"), "{err}");
        assert!(!err.contains(&material[..16]), "{err}");
        // Not JSON: a position only.
        let err = KeyRing::from_json(&text[..40]).unwrap_err().to_string();
        assert!(err.starts_with("key ring: not a key file (line"), "{err}");
        for (broken, why) in [
            (text.replace(FILE_FORMAT, "other/v9"), "format"),
            (
                text.replace("\"active\": 2", "\"active\": 7"),
                "active version 7",
            ),
            (text.replace("\"active\": 2", "\"active\": 1"), "retired"),
        ] {
            let err = KeyRing::from_json(&broken).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
        assert!(matches!(
            KeyFile::new(path.with_file_name("absent.json")).key_ring(),
            Err(KeyError::Io {
                kind: std::io::ErrorKind::NotFound,
                ..
            })
        ));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn environment_key_is_non_production_version_one() {
        let var = format!("CONSENTRY_TEST_KEY_{}", std::process::id());
        let provider = EnvKey::new(&var);
        assert!(matches!(provider.key_ring(), Err(KeyError::Missing(_))));
        // The variable's name is unique to this test process.
        std::env::set_var(&var, "ab".repeat(KEY_LEN));
        let ring = provider.key_ring().unwrap();
        assert_eq!(ring.environment(), Environment::NonProduction);
        assert_eq!(ring.secret(1).unwrap().0, [0xab; KEY_LEN]);
        std::env::set_var(&var, "abcd");
        let err = provider.key_ring().unwrap_err().to_string();
        assert!(
            err.contains("not 32 bytes of hex") && !err.contains("abcd"),
            "{err}"
        );
        std::env::remove_var(&var);
    }
}
