//! Which Redis to talk to, parsed from one URL (the schemes are tabled in the crate docs, under
//! "Connection").

use flag_core::redact_url;

/// A parsed Redis location.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// One server; the URL is handed to the `redis` crate as it is.
    Single { url: String },
    /// Cluster seed nodes, each a full `redis://` URL with the credentials.
    Cluster { nodes: Vec<String> },
    /// Sentinel nodes (plain URLs), the master's name, and the master's connection URL template.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
        tls: bool,
        username: Option<String>,
        password: Option<String>,
        db: i64,
    },
}

/// A Redis URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Redis URL {shown}: {reason}")]
pub struct UrlError {
    shown: String,
    reason: &'static str,
}

impl UrlError {
    fn new(url: &str, reason: &'static str) -> Self {
        Self {
            shown: redact_url(url),
            reason,
        }
    }
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Self, UrlError> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(UrlError::new(url, "expected scheme://…"));
        };
        match scheme {
            "redis" | "rediss" | "redis+unix" | "unix" => Ok(Target::Single {
                url: url.to_owned(),
            }),
            "redis+cluster" | "rediss+cluster" => {
                let plain = if scheme.starts_with("rediss") {
                    "rediss"
                } else {
                    "redis"
                };
                let (credentials, hosts, _) = split_authority(rest);
                let nodes = hosts_of(hosts)
                    .map(|host| match credentials {
                        Some(credentials) => format!("{plain}://{credentials}@{host}"),
                        None => format!("{plain}://{host}"),
                    })
                    .collect::<Vec<_>>();
                if nodes.is_empty() {
                    return Err(UrlError::new(
                        url,
                        "a cluster URL needs at least one host:port",
                    ));
                }
                Ok(Target::Cluster { nodes })
            }
            "redis+sentinel" | "rediss+sentinel" => {
                let (credentials, hosts, path) = split_authority(rest);
                let sentinels: Vec<String> = hosts_of(hosts)
                    .map(|host| format!("redis://{host}"))
                    .collect();
                if sentinels.is_empty() {
                    return Err(UrlError::new(
                        url,
                        "a sentinel URL needs at least one host:port",
                    ));
                }
                let mut segments = path
                    .trim_start_matches('/')
                    .split('/')
                    .filter(|s| !s.is_empty());
                let master = segments
                    .next()
                    .ok_or_else(|| {
                        UrlError::new(url, "a sentinel URL needs the master name as its path")
                    })?
                    .to_owned();
                let db = match segments.next() {
                    Some(db) => db
                        .parse()
                        .map_err(|_| UrlError::new(url, "the database must be a number"))?,
                    None => 0,
                };
                // URL userinfo is percent-encoded (a password with `@` or `/` is written `%40`,
                // `%2F`); the master is sent the decoded text, as single-node URLs are.
                let decoded = |part: &str| {
                    percent_encoding::percent_decode_str(part)
                        .decode_utf8()
                        .map(|text| text.into_owned())
                        .map_err(|_| {
                            UrlError::new(url, "the credentials are not UTF-8 once percent-decoded")
                        })
                };
                let (username, password) = match credentials {
                    None => (None, None),
                    Some(credentials) => match credentials.split_once(':') {
                        Some((user, password)) => (
                            (!user.is_empty()).then(|| decoded(user)).transpose()?,
                            Some(decoded(password)?),
                        ),
                        None => (None, Some(decoded(credentials)?)),
                    },
                };
                Ok(Target::Sentinel {
                    sentinels,
                    master,
                    tls: scheme.starts_with("rediss"),
                    username,
                    password,
                    db,
                })
            }
            _ => Err(UrlError::new(
                url,
                "unknown scheme; use redis, rediss, redis+unix, redis+cluster or redis+sentinel",
            )),
        }
    }
}

/// `(credentials, hosts, path)` of `user:pass@h1:1,h2:2/path`.
fn split_authority(rest: &str) -> (Option<&str>, &str, &str) {
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((credentials, hosts)) => (Some(credentials), hosts, path),
        None => (None, authority, path),
    }
}

fn hosts_of(hosts: &str) -> impl Iterator<Item = &str> {
    hosts
        .split(',')
        .map(str::trim)
        .filter(|host| !host.is_empty())
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Single { url } => write!(f, "Single({})", redact_url(url)),
            Target::Cluster { nodes } => {
                let shown: Vec<String> = nodes.iter().map(|node| redact_url(node)).collect();
                write!(f, "Cluster({shown:?})")
            }
            Target::Sentinel {
                sentinels, master, ..
            } => write!(f, "Sentinel({sentinels:?}, master {master})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_node_urls_pass_through() {
        for url in [
            "redis://127.0.0.1:6379/0",
            "rediss://:pw@host:6380",
            "redis+unix:///tmp/r.sock",
        ] {
            assert_eq!(
                Target::parse(url).unwrap(),
                Target::Single { url: url.into() }
            );
        }
    }

    #[test]
    fn cluster_urls_list_nodes_with_credentials() {
        let target = Target::parse("redis+cluster://u:p@a:7000,b:7001").unwrap();
        assert_eq!(
            target,
            Target::Cluster {
                nodes: vec!["redis://u:p@a:7000".into(), "redis://u:p@b:7001".into()]
            }
        );
        assert!(!format!("{target:?}").contains(":p@"));
    }

    #[test]
    fn sentinel_urls_name_the_master() {
        let target = Target::parse("rediss+sentinel://:pw@s1:26379,s2:26379/mymaster/2").unwrap();
        assert_eq!(
            target,
            Target::Sentinel {
                sentinels: vec!["redis://s1:26379".into(), "redis://s2:26379".into()],
                master: "mymaster".into(),
                tls: true,
                username: None,
                password: Some("pw".into()),
                db: 2,
            }
        );
        assert!(Target::parse("redis+sentinel://s1:26379").is_err());
    }

    #[test]
    fn sentinel_credentials_are_percent_decoded() {
        let target =
            Target::parse("redis+sentinel://app%40eu:p%2Fw%40rd%25@s1:26379/mymaster").unwrap();
        let Target::Sentinel {
            username, password, ..
        } = target
        else {
            panic!("not a sentinel target");
        };
        assert_eq!(username.as_deref(), Some("app@eu"));
        assert_eq!(password.as_deref(), Some("p/w@rd%"));
        let error = Target::parse("redis+sentinel://:%FF@s1:26379/m").unwrap_err();
        assert!(error.to_string().contains("UTF-8"), "{error}");
    }

    #[test]
    fn bad_urls_are_refused_without_showing_passwords() {
        let error = Target::parse("http://u:secret@host").unwrap_err();
        assert!(!error.to_string().contains("secret"), "{error}");
        assert!(Target::parse("no scheme").is_err());
        assert!(Target::parse("redis+cluster://").is_err());
    }
}
