//! How the clients reach a secured Kafka and schema registry: the
//! security protocol, SASL mechanism and credentials, CA and client
//! certificate for every consumer, producer and admin client (applied in
//! `Connection`'s one base configuration, so no client can miss them), and
//! the registry's CA and basic or bearer credentials.
//!
//! Secrets are [`Secret`]s: zeroed on drop, `<redacted>` in `Debug`, never
//! in an error. They come from files or the environment, never flags.

use rdkafka::config::ClientConfig;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use zeroize::Zeroizing;

/// A password or token.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(Zeroizing::new(value))
    }

    /// A secret file's content, without its trailing newline. The error
    /// names the file, never what it holds.
    pub fn from_file(path: &std::path::Path) -> Result<Secret, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {}", path.display(), e.kind()))?;
        Ok(Secret::new(text.trim_end_matches(['\r', '\n']).to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

impl FromStr for SecurityProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "plaintext" => Ok(SecurityProtocol::Plaintext),
            "ssl" => Ok(SecurityProtocol::Ssl),
            "sasl_plaintext" => Ok(SecurityProtocol::SaslPlaintext),
            "sasl_ssl" => Ok(SecurityProtocol::SaslSsl),
            _ => Err(format!(
                "security protocol {s:?}: expected plaintext, ssl, sasl_plaintext or sasl_ssl"
            )),
        }
    }
}

/// The SASL mechanisms the build supports (GSSAPI/Kerberos is not built).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl FromStr for SaslMechanism {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Ok(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(SaslMechanism::ScramSha512),
            _ => Err(format!(
                "SASL mechanism {s:?}: expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
            )),
        }
    }
}

/// Whether this build's librdkafka speaks TLS (and so SASL): the
/// `kafka-tls` feature.
pub const KAFKA_TLS_BUILT: bool = cfg!(feature = "kafka-tls");

/// Every Kafka client's security settings.
#[derive(Debug, Clone, Default)]
pub struct KafkaSecurity {
    pub protocol: Option<SecurityProtocol>,
    pub sasl_mechanism: Option<SaslMechanism>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<Secret>,
    /// The CA (PEM) that signs the brokers' certificates.
    pub ca: Option<PathBuf>,
    /// A client certificate and key (PEM), for brokers that require one.
    pub certificate: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub key_password: Option<Secret>,
}

impl KafkaSecurity {
    /// Settings that cannot work together, named (never their values).
    pub fn check(&self) -> Result<(), String> {
        let protocol = self.protocol.unwrap_or(SecurityProtocol::Plaintext);
        if protocol != SecurityProtocol::Plaintext && !KAFKA_TLS_BUILT {
            return Err(format!(
                "security protocol {} needs a build with Kafka TLS: cargo build --features kafka-tls",
                protocol.as_str()
            ));
        }
        if protocol.uses_sasl() {
            if self.sasl_username.is_none() || self.sasl_password.is_none() {
                return Err(format!(
                    "security protocol {} needs a SASL username and password",
                    protocol.as_str()
                ));
            }
        } else if self.sasl_mechanism.is_some() || self.sasl_username.is_some() {
            return Err(format!(
                "SASL settings given, but the security protocol is {}: use sasl_ssl",
                protocol.as_str()
            ));
        }
        if protocol == SecurityProtocol::SaslPlaintext
            && self.sasl_mechanism.unwrap_or(SaslMechanism::ScramSha512) == SaslMechanism::Plain
        {
            return Err(
                "SASL PLAIN over sasl_plaintext sends the password in clear: use sasl_ssl, or SCRAM".into(),
            );
        }
        if self.certificate.is_some() != self.key.is_some() {
            return Err("a client certificate needs its key, and a key its certificate".into());
        }
        let tls = matches!(protocol, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl);
        if !tls && (self.ca.is_some() || self.certificate.is_some()) {
            return Err(format!(
                "TLS files given, but the security protocol is {}: use ssl or sasl_ssl",
                protocol.as_str()
            ));
        }
        Ok(())
    }

    /// Whether the brokers are reached over TLS.
    pub fn is_encrypted(&self) -> bool {
        matches!(
            self.protocol,
            Some(SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
        )
    }

    /// Sets them on a client's configuration. Hostnames are always
    /// verified (librdkafka's default, set explicitly).
    pub fn apply(&self, c: &mut ClientConfig) {
        let Some(protocol) = self.protocol else {
            return;
        };
        c.set("security.protocol", protocol.as_str());
        if matches!(protocol, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl) {
            c.set("ssl.endpoint.identification.algorithm", "https");
            if let Some(ca) = &self.ca {
                c.set("ssl.ca.location", ca.display().to_string());
            }
            if let (Some(cert), Some(key)) = (&self.certificate, &self.key) {
                c.set("ssl.certificate.location", cert.display().to_string())
                    .set("ssl.key.location", key.display().to_string());
            }
            if let Some(p) = &self.key_password {
                c.set("ssl.key.password", p.expose());
            }
        }
        if protocol.uses_sasl() {
            c.set(
                "sasl.mechanism",
                self.sasl_mechanism
                    .unwrap_or(SaslMechanism::ScramSha512)
                    .as_str(),
            );
            if let Some(u) = &self.sasl_username {
                c.set("sasl.username", u);
            }
            if let Some(p) = &self.sasl_password {
                c.set("sasl.password", p.expose());
            }
        }
    }
}

/// How the schema-registry client authenticates.
#[derive(Debug, Clone)]
pub enum RegistryAuth {
    Basic { username: String, password: Secret },
    Bearer(Secret),
}

impl RegistryAuth {
    /// The `Authorization` header's value.
    pub fn header(&self) -> Zeroizing<String> {
        use base64::Engine;
        Zeroizing::new(match self {
            RegistryAuth::Basic { username, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose()))
            ),
            RegistryAuth::Bearer(token) => format!("Bearer {}", token.expose()),
        })
    }
}

/// The registry's CA (for `https://` with a private CA) and credentials.
#[derive(Debug, Clone, Default)]
pub struct RegistryAccess {
    pub ca: Option<PathBuf>,
    pub auth: Option<RegistryAuth>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "kafka-tls")]
    fn config(s: &KafkaSecurity) -> ClientConfig {
        let mut c = ClientConfig::new();
        s.apply(&mut c);
        c
    }

    #[test]
    #[cfg(feature = "kafka-tls")]
    fn sasl_ssl_sets_every_property_and_debug_hides_the_secrets() {
        let s = KafkaSecurity {
            protocol: Some("SASL_SSL".parse().unwrap()),
            sasl_mechanism: Some("scram-sha-512".parse().unwrap()),
            sasl_username: Some("consentry".into()),
            sasl_password: Some(Secret::new("s3cret-pw".into())),
            ca: Some("/etc/kafka/ca.pem".into()),
            ..KafkaSecurity::default()
        };
        s.check().unwrap();
        let c = config(&s);
        for (k, v) in [
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "consentry"),
            ("sasl.password", "s3cret-pw"),
            ("ssl.ca.location", "/etc/kafka/ca.pem"),
            ("ssl.endpoint.identification.algorithm", "https"),
        ] {
            assert_eq!(c.get(k), Some(v), "{k}");
        }
        assert!(!format!("{s:?}").contains("s3cret"));
        assert!(format!("{s:?}").contains("<redacted>"));
    }

    #[test]
    #[cfg(not(feature = "kafka-tls"))]
    fn a_build_without_kafka_tls_says_so() {
        let s = KafkaSecurity {
            protocol: Some(SecurityProtocol::Ssl),
            ..KafkaSecurity::default()
        };
        assert!(s.check().unwrap_err().contains("--features kafka-tls"));
        assert!(KafkaSecurity::default().check().is_ok());
    }

    #[test]
    #[cfg(feature = "kafka-tls")]
    fn inconsistent_settings_are_named() {
        let no_password = KafkaSecurity {
            protocol: Some(SecurityProtocol::SaslSsl),
            sasl_username: Some("u".into()),
            ..KafkaSecurity::default()
        };
        assert!(no_password.check().unwrap_err().contains("password"));
        let sasl_on_plain = KafkaSecurity {
            sasl_username: Some("u".into()),
            ..KafkaSecurity::default()
        };
        assert!(sasl_on_plain.check().is_err());
        let ca_on_plain = KafkaSecurity {
            protocol: Some(SecurityProtocol::Plaintext),
            ca: Some("/ca.pem".into()),
            ..KafkaSecurity::default()
        };
        assert!(ca_on_plain.check().is_err());
        let plain_in_clear = KafkaSecurity {
            protocol: Some(SecurityProtocol::SaslPlaintext),
            sasl_mechanism: Some(SaslMechanism::Plain),
            sasl_username: Some("u".into()),
            sasl_password: Some(Secret::new("p".into())),
            ..KafkaSecurity::default()
        };
        assert!(plain_in_clear.check().unwrap_err().contains("in clear"));
        let half_cert = KafkaSecurity {
            protocol: Some(SecurityProtocol::Ssl),
            certificate: Some("/c.pem".into()),
            ..KafkaSecurity::default()
        };
        assert!(half_cert.check().is_err());
        assert!(KafkaSecurity::default().check().is_ok());
        assert!(config(&KafkaSecurity::default())
            .get("security.protocol")
            .is_none());
        assert!("tls".parse::<SecurityProtocol>().is_err());
        assert!("GSSAPI".parse::<SaslMechanism>().is_err());
    }

    #[test]
    fn registry_credentials_make_the_authorization_header() {
        let basic = RegistryAuth::Basic {
            username: "reg".into(),
            password: Secret::new("pw".into()),
        };
        assert_eq!(basic.header().as_str(), "Basic cmVnOnB3");
        assert_eq!(
            RegistryAuth::Bearer(Secret::new("t0k".into()))
                .header()
                .as_str(),
            "Bearer t0k"
        );
        assert!(!format!("{basic:?}").contains("pw\""));
    }
}
