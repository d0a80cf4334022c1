//! `[mqtt]`: the broker, who vigil is there, its topics and its outbox, checked at start so that
//! a wrong URL, an unreadable password file or a certificate that does not parse is refused
//! before anything runs, with the key that is wrong.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use crate::tomlfile::{SettingsError, TomlFile};

/// `[mqtt]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// `mqtt://host[:port]` (1883) or `mqtts://host[:port]` (8883, TLS).
    pub broker: Spanned<String>,
    /// Default: the host name.
    pub client_id: Option<Spanned<String>>,
    /// User name, if the broker wants one.
    pub username: Option<Spanned<String>>,
    /// A file holding the password (its first line), never the password itself.
    pub password_file: Option<Spanned<String>>,
    /// `mqtts://`: the CA certificate(s) to trust (PEM). Default: the system's.
    pub ca_file: Option<Spanned<String>>,
    /// `mqtts://`: a client certificate (PEM) for brokers that ask for one, with `client_key`.
    pub client_cert: Option<Spanned<String>>,
    /// The client certificate's private key (PEM).
    pub client_key: Option<Spanned<String>>,
    /// Seconds between keep-alive pings (default 30; 5 to 3600).
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: Spanned<f64>,
    /// Default `vigil/<client id>`.
    pub topic_prefix: Option<Spanned<String>>,
    /// The outbox file (default `$STATE_DIRECTORY/mqtt-outbox`, i.e. /var/lib/vigil under systemd).
    pub outbox: Option<Spanned<String>>,
    /// The outbox's cap in KiB of events (default 10240; 16 to 1048576).
    #[serde(default = "default_outbox_kib")]
    pub outbox_max_kib: Spanned<u64>,
    /// Publish Home Assistant MQTT discovery (a `binary_sensor` per label).
    #[serde(default)]
    pub home_assistant: bool,
    /// Home Assistant's discovery prefix (default `homeassistant`).
    pub discovery_prefix: Option<Spanned<String>>,
    /// Accept the console's commands on `<prefix>/cmd` (replies on `<prefix>/reply`). Off by
    /// default: whoever may publish there may change thresholds.
    #[serde(default)]
    pub commands: bool,
}

fn default_keep_alive() -> Spanned<f64> {
    Spanned::new(0..0, 30.0)
}

fn default_outbox_kib() -> Spanned<u64> {
    Spanned::new(0..0, 10 * 1024)
}

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// `mqtts://`.
    pub tls: bool,
}

impl std::fmt::Display for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// `[mqtt]`, checked: everything the client thread needs.
#[derive(Clone)]
pub struct MqttSettings {
    pub broker: Broker,
    pub client_id: String,
    pub username: Option<String>,
    /// Read from `password_file` at start.
    pub password: Option<Vec<u8>>,
    /// `mqtts://`: the TLS setup (trusted CAs, client certificate).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub keep_alive_s: u16,
    pub prefix: String,
    pub outbox: PathBuf,
    pub outbox_max_bytes: u64,
    /// `Some(prefix)` when Home Assistant discovery is on.
    pub discovery_prefix: Option<String>,
    pub commands: bool,
}

impl std::fmt::Debug for MqttSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("MqttSettings")
            .field("broker", &self.broker)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("prefix", &self.prefix)
            .field("outbox", &self.outbox)
            .finish_non_exhaustive()
    }
}

/// The system's trusted CAs (Debian's ca-certificates) when `ca_file` is not given.
pub const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

impl MqttSection {
    /// Check every key and read the files they name.
    pub fn check(&self, file: &TomlFile) -> Result<MqttSettings, SettingsError> {
        let broker =
            parse_broker(self.broker.get_ref()).map_err(|why| file.error_at(self.broker.span(), "mqtt.broker", why))?;
        let client_id = match &self.client_id {
            Some(id) => checked_name(file, id, "mqtt.client_id", false)?,
            None => host_name().ok_or_else(|| {
                file.error(
                    Some("mqtt.client_id".into()),
                    "the host name could not be read: expected `client_id = \"...\"` in [mqtt]",
                )
            })?,
        };
        let username = self.username.as_ref().map(|u| checked_name(file, u, "mqtt.username", false)).transpose()?;
        let password = self
            .password_file
            .as_ref()
            .map(|p| {
                read_password(&file.resolve(p.get_ref()))
                    .map_err(|why| file.error_at(p.span(), "mqtt.password_file", why))
            })
            .transpose()?;
        let keep_alive = file.number(&self.keep_alive_s, "mqtt.keep_alive_s", 5.0..=3600.0, "seconds", None)?;
        let prefix = match &self.topic_prefix {
            Some(p) => checked_name(file, p, "mqtt.topic_prefix", true)?,
            None => {
                let prefix = format!("vigil/{client_id}");
                check_topic(&prefix).map_err(|why| {
                    file.error(
                        Some("mqtt.topic_prefix".into()),
                        format!("the default `{prefix}` {why}: set `topic_prefix`"),
                    )
                })?;
                prefix
            }
        };
        let outbox = match &self.outbox {
            Some(o) => {
                let path = file.resolve(o.get_ref());
                check_outbox(&path).map_err(|why| file.error_at(o.span(), "mqtt.outbox", why))?;
                path
            }
            None => {
                let dir = std::env::var_os("STATE_DIRECTORY")
                    .and_then(|d| std::env::split_paths(&d).next())
                    .unwrap_or_else(|| PathBuf::from("/var/lib/vigil"));
                let path = dir.join("mqtt-outbox");
                check_outbox(&path).map_err(|why| {
                    file.error(Some("mqtt.outbox".into()), format!("the default outbox: {why}; set `outbox = \"...\"`"))
                })?;
                path
            }
        };
        let kib = *self.outbox_max_kib.get_ref();
        if !(16..=1 << 20).contains(&kib) {
            return Err(file.error_at(
                self.outbox_max_kib.span(),
                "mqtt.outbox_max_kib",
                format!("{kib}: expected 16 to 1048576 KiB"),
            ));
        }
        let discovery_prefix = match (&self.discovery_prefix, self.home_assistant) {
            (Some(p), _) => Some(checked_name(file, p, "mqtt.discovery_prefix", true)?),
            (None, true) => Some("homeassistant".to_string()),
            (None, false) => None,
        }
        .filter(|_| self.home_assistant);
        let tls = if broker.tls {
            Some(self.tls_config(file)?)
        } else {
            for (key, value) in
                [("ca_file", &self.ca_file), ("client_cert", &self.client_cert), ("client_key", &self.client_key)]
            {
                if let Some(v) = value {
                    return Err(file.error_at(
                        v.span(),
                        format!("mqtt.{key}"),
                        "TLS settings for a plain `mqtt://` broker: expected an `mqtts://` broker URL (or remove the key)",
                    ));
                }
            }
            None
        };
        Ok(MqttSettings {
            broker,
            client_id,
            username,
            password,
            tls,
            keep_alive_s: keep_alive.round() as u16,
            prefix,
            outbox,
            outbox_max_bytes: kib * 1024,
            discovery_prefix,
            commands: self.commands,
        })
    }

    fn tls_config(&self, file: &TomlFile) -> Result<Arc<rustls::ClientConfig>, SettingsError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (ca_path, ca_key, ca_span) = match &self.ca_file {
            Some(c) => (file.resolve(c.get_ref()), "mqtt.ca_file", Some(c.span())),
            None => (PathBuf::from(SYSTEM_CAS), "mqtt.ca_file", None),
        };
        let refuse = |key: &str, span: Option<std::ops::Range<usize>>, why: String| match span {
            Some(s) => file.error_at(s, key.to_string(), why),
            None => file.error(Some(key.to_string()), why),
        };
        let mut roots = rustls::RootCertStore::empty();
        let cas: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(&ca_path).and_then(|certs| certs.collect::<Result<_, _>>()).map_err(|e| {
                refuse(ca_key, ca_span.clone(), format!("`{}`: {e}: expected PEM CA certificates", ca_path.display()))
            })?;
        let (added, _ignored) = roots.add_parsable_certificates(cas);
        if added == 0 {
            return Err(refuse(
                ca_key,
                ca_span,
                format!("`{}` holds no usable CA certificate: expected PEM certificates", ca_path.display()),
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| file.error(Some("mqtt.broker".into()), format!("TLS setup failed: {e}")))?
            .with_root_certificates(roots);
        let config = match (&self.client_cert, &self.client_key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let cert_path = file.resolve(cert.get_ref());
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
                    .and_then(|certs| certs.collect::<Result<_, _>>())
                    .map_err(|e| {
                        file.error_at(
                            cert.span(),
                            "mqtt.client_cert",
                            format!("`{}`: {e}: expected a PEM certificate", cert_path.display()),
                        )
                    })?;
                if chain.is_empty() {
                    return Err(file.error_at(
                        cert.span(),
                        "mqtt.client_cert",
                        format!("`{}` holds no certificate", cert_path.display()),
                    ));
                }
                let key_path = file.resolve(key.get_ref());
                let private = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
                    file.error_at(
                        key.span(),
                        "mqtt.client_key",
                        format!("`{}`: {e}: expected a PEM private key", key_path.display()),
                    )
                })?;
                builder.with_client_auth_cert(chain, private).map_err(|e| {
                    file.error_at(
                        key.span(),
                        "mqtt.client_key",
                        format!("the key does not fit the client certificate: {e}"),
                    )
                })?
            }
            (Some(c), None) | (None, Some(c)) => {
                return Err(file.error_at(
                    c.span(),
                    if self.client_cert.is_some() { "mqtt.client_cert" } else { "mqtt.client_key" },
                    "a client certificate needs both `client_cert` and `client_key`",
                ));
            }
        };
        Ok(Arc::new(config))
    }
}

/// `mqtt://host[:port]` or `mqtts://host[:port]`, nothing else.
fn parse_broker(url: &str) -> Result<Broker, String> {
    let expected = "expected `mqtt://host[:port]` or `mqtts://host[:port]`";
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err(format!("`{url}`: {expected}"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        return Err(format!(
            "`{url}`: credentials in the URL: expected `username` and `password_file` keys (a password is never written in the config)"
        ));
    }
    if rest.contains('/') || rest.contains('?') {
        return Err(format!("`{url}`: a path or query: {expected}"));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| format!("`{url}`: an unclosed `[`: {expected}"))?;
        (host, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(format!("`{url}`: no host: {expected}"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("`{url}`: port `{p}`: expected 1 to 65535"))?,
        None if tls => 8883,
        None => 1883,
    };
    Ok(Broker { host: host.to_string(), port, tls })
}

/// A topic (prefix) vigil publishes under: not empty, no wildcards, no leading or trailing `/`.
fn check_topic(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() || topic.len() > 512 {
        Err("is empty or longer than 512 bytes")
    } else if topic.contains(['+', '#']) {
        Err("holds a wildcard (`+` or `#`), which no published topic may")
    } else if topic.starts_with('/') || topic.ends_with('/') || topic.contains("//") {
        Err("has an empty level (a leading, trailing or double `/`)")
    } else if topic.chars().any(char::is_control) {
        Err("holds a control character")
    } else {
        Ok(())
    }
}

fn checked_name(file: &TomlFile, value: &Spanned<String>, key: &str, topic: bool) -> Result<String, SettingsError> {
    let v = value.get_ref();
    let why = if topic {
        check_topic(v).err()
    } else if v.is_empty() || v.len() > 256 {
        Some("is empty or longer than 256 bytes")
    } else if v.chars().any(char::is_control) {
        Some("holds a control character")
    } else {
        None
    };
    match why {
        Some(why) => Err(file.error_at(value.span(), key, format!("`{v}` {why}"))),
        None => Ok(v.clone()),
    }
}

fn read_password(path: &Path) -> Result<Vec<u8>, String> {
    let text =
        std::fs::read(path).map_err(|e| format!("`{}`: {e}: expected a file holding the password", path.display()))?;
    let first = text.split(|&b| b == b'\n').next().unwrap_or_default();
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    if first.is_empty() {
        return Err(format!("`{}` is empty: expected the password on its first line", path.display()));
    }
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o004 != 0
    {
        log::warn!("mqtt.password_file {}: readable by every user on this machine (chmod 600)", path.display());
    }
    Ok(first.to_vec())
}

fn check_outbox(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err(format!("`{}` is a folder: expected a file (created if missing)", path.display()));
    }
    match path.parent() {
        Some(dir) if dir.as_os_str().is_empty() || dir.is_dir() => Ok(()),
        _ => Err(format!("the folder of `{}` does not exist", path.display())),
    }
}

/// The machine's host name (`/proc/sys/kernel/hostname`).
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_with_default_ports_and_refuse_the_rest() {
        let b = |u| parse_broker(u);
        assert_eq!(b("mqtt://10.0.0.5").unwrap(), Broker { host: "10.0.0.5".into(), port: 1883, tls: false });
        assert_eq!(b("mqtts://broker.lan:9000/").unwrap(), Broker { host: "broker.lan".into(), port: 9000, tls: true });
        assert_eq!(b("mqtts://[fd00::1]").unwrap(), Broker { host: "fd00::1".into(), port: 8883, tls: true });
        for bad in
            ["tcp://x", "mqtt://", "mqtt://u:p@host", "mqtt://h:0", "mqtt://h:99999", "mqtt://h/path", "mqtt://[::1"]
        {
            assert!(b(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn topics_with_wildcards_or_empty_levels_are_refused() {
        assert!(check_topic("vigil/pole-7").is_ok());
        for bad in ["", "a/+", "a/#", "/a", "a/", "a//b", "a\nb"] {
            assert!(check_topic(bad).is_err(), "{bad:?}");
        }
    }
}
