//! OAuth2 client credentials (RFC 6749 §4.4): client registry, token issue and verification.
//!
//! Tokens are self-contained and signed: `tg1.<claims>.<HMAC-SHA256>`, base64url, with the
//! client id, scopes and expiry inside. Verifying one needs no lookup, and a token is worthless
//! once the signing key changes. Sans-IO: callers pass the current time.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;

pub mod hash_pool;
pub mod throttle;
pub mod verified;

/// What a token may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The GlobalPCI session API.
    Globalpci,
    /// Relay control.
    Relay,
    /// Operator routes.
    Admin,
}

impl Scope {
    /// The scope's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Globalpci => "globalpci",
            Scope::Relay => "relay",
            Scope::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Scope> {
        match s {
            "globalpci" => Some(Scope::Globalpci),
            "relay" => Some(Scope::Relay),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// How a client's secret is checked.
#[derive(Clone)]
pub enum Secret {
    /// An argon2 PHC hash (`$argon2id$...`).
    Argon2(String),
    /// A plain secret: development only; `serve` warns while one is configured.
    Plain(String),
}

impl core::fmt::Debug for Secret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Secret::Argon2(_) => "Argon2(..)",
            Secret::Plain(_) => "Plain(..)",
        })
    }
}

/// A registered API client.
#[derive(Debug, Clone)]
pub struct Client {
    /// `client_id`.
    pub id: String,
    /// How its secret is checked.
    pub secret: Secret,
    /// Scopes it may ask for.
    pub scopes: Vec<Scope>,
    /// Account configuration ids it may use (`*` for all).
    pub accounts: Vec<String>,
}

impl Client {
    /// Whether this client may use account configuration `id`.
    pub fn may_use_account(&self, id: &str) -> bool {
        self.accounts.iter().any(|a| a == "*" || a == id)
    }
}

/// RFC 6749 §5.2 error codes (and `invalid_token`, RFC 6750 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AuthError {
    /// The request is missing a parameter or is malformed.
    #[error("invalid_request")]
    InvalidRequest,
    /// Unknown client or wrong secret.
    #[error("invalid_client")]
    InvalidClient,
    /// The grant is not valid for this client.
    #[error("invalid_grant")]
    InvalidGrant,
    /// A scope that does not exist or that the client may not have.
    #[error("invalid_scope")]
    InvalidScope,
    /// Any grant type but `client_credentials`.
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    /// A bearer token that is malformed, forged or expired.
    #[error("invalid_token")]
    InvalidToken,
}

/// A token that was issued: the token endpoint's answer, as sent.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Token)]
pub struct IssuedToken {
    /// The bearer token.
    pub access_token: String,
    /// Always `Bearer`.
    #[schema(schema_with = bearer)]
    pub token_type: &'static str,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// Space-separated scopes granted.
    pub scope: String,
}

/// `IssuedToken::token_type`'s schema: the one value it takes.
fn bearer() -> utoipa::openapi::schema::Schema {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["Bearer"]))
        .into()
}

/// Who a verified token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The client id.
    pub client_id: String,
    /// Scopes the token carries.
    pub scopes: Vec<Scope>,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
}

impl Principal {
    /// Whether the token carries `scope`.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    scp: Vec<Scope>,
    exp: u64,
}

const TOKEN_PREFIX: &str = "tg1";

/// Registered clients and the token signing key.
pub struct Authority {
    clients: HashMap<String, Client>,
    key: Vec<u8>,
    lifetime_s: u64,
    /// Checked for unknown client ids, so that answering them costs what a known one does.
    dummy: Secret,
}

impl Authority {
    /// An authority for `clients`, signing with `key` (32+ random bytes), tokens valid for
    /// `lifetime_s` seconds.
    pub fn new(clients: Vec<Client>, key: Vec<u8>, lifetime_s: u64) -> Self {
        let any_hashed = clients
            .iter()
            .any(|c| matches!(c.secret, Secret::Argon2(_)));
        let dummy = if any_hashed {
            Secret::Argon2(hash_secret(&random_token()))
        } else {
            Secret::Plain(random_token())
        };
        Authority {
            clients: clients.into_iter().map(|c| (c.id.clone(), c)).collect(),
            key,
            lifetime_s,
            dummy,
        }
    }

    /// A 32-byte key for `purpose`, derived from the signing key (HMAC-SHA256): stable across
    /// restarts exactly when `auth.signing_key` is set.
    pub fn derive_key(&self, purpose: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(b"tonegate derived key\0");
        mac.update(purpose);
        mac.finalize().into_bytes().into()
    }

    /// The secret to check a request naming client `id` against: the client's, or for an
    /// unknown id a random one of the same kind (which never matches).
    pub fn secret_for(&self, id: &str) -> &Secret {
        self.clients
            .get(id)
            .map(|c| &c.secret)
            .unwrap_or(&self.dummy)
    }

    /// Checks the parts of a token request that need no secret check: the grant type, and
    /// that a client id and secret were given.
    pub fn check_request<'a>(
        &self,
        grant_type: Option<&str>,
        client_id: Option<&'a str>,
        client_secret: Option<&'a str>,
    ) -> Result<(&'a str, &'a str), AuthError> {
        match grant_type {
            None => return Err(AuthError::InvalidRequest),
            Some("client_credentials") => {}
            Some(_) => return Err(AuthError::UnsupportedGrantType),
        }
        match (client_id, client_secret) {
            (Some(id), Some(secret)) => Ok((id, secret)),
            _ => Err(AuthError::InvalidClient),
        }
    }

    /// A registered client.
    pub fn client(&self, id: &str) -> Option<&Client> {
        self.clients.get(id)
    }

    /// Ids of clients that still use a plain (development) secret.
    pub fn plain_secret_clients(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .clients
            .values()
            .filter(|c| matches!(c.secret, Secret::Plain(_)))
            .map(|c| c.id.as_str())
            .collect();
        v.sort();
        v
    }

    /// The client-credentials grant: checks the client and the requested scopes (all the
    /// client's scopes when none are named) and issues a token. `now` is Unix seconds.
    pub fn grant(
        &self,
        grant_type: Option<&str>,
        client_id: Option<&str>,
        client_secret: Option<&str>,
        scope: Option<&str>,
        now: u64,
    ) -> Result<IssuedToken, AuthError> {
        let (id, secret) = self.check_request(grant_type, client_id, client_secret)?;
        if !check_secret(self.secret_for(id), secret) {
            return Err(AuthError::InvalidClient);
        }
        self.issue(id, scope, now)
    }

    /// Issues a token to client `id`, whose secret the caller has checked, for the requested
    /// scopes (all the client's when none are named).
    pub fn issue(&self, id: &str, scope: Option<&str>, now: u64) -> Result<IssuedToken, AuthError> {
        let client = self.clients.get(id).ok_or(AuthError::InvalidClient)?;
        let scopes: Vec<Scope> = match scope.map(str::trim).filter(|s| !s.is_empty()) {
            None => client.scopes.clone(),
            Some(s) => {
                let mut v = Vec::new();
                for name in s.split_ascii_whitespace() {
                    let sc = Scope::parse(name).ok_or(AuthError::InvalidScope)?;
                    if !client.scopes.contains(&sc) {
                        return Err(AuthError::InvalidScope);
                    }
                    if !v.contains(&sc) {
                        v.push(sc);
                    }
                }
                v
            }
        };
        if scopes.is_empty() {
            return Err(AuthError::InvalidScope);
        }
        let exp = now + self.lifetime_s;
        let claims = Claims {
            sub: client.id.clone(),
            scp: scopes.clone(),
            exp,
        };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialise"));
        let signed = format!("{TOKEN_PREFIX}.{body}");
        let sig = URL_SAFE_NO_PAD.encode(self.mac(signed.as_bytes()));
        Ok(IssuedToken {
            access_token: format!("{signed}.{sig}"),
            token_type: "Bearer",
            expires_in: self.lifetime_s,
            scope: scopes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        })
    }

    /// Verifies a bearer token at time `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<Principal, AuthError> {
        let (signed, sig) = token.rsplit_once('.').ok_or(AuthError::InvalidToken)?;
        let (prefix, body) = signed.split_once('.').ok_or(AuthError::InvalidToken)?;
        if prefix != TOKEN_PREFIX {
            return Err(AuthError::InvalidToken);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| AuthError::InvalidToken)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(signed.as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| AuthError::InvalidToken)?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(AuthError::InvalidToken)?;
        if claims.exp <= now || !self.clients.contains_key(&claims.sub) {
            return Err(AuthError::InvalidToken);
        }
        Ok(Principal {
            client_id: claims.sub,
            scopes: claims.scp,
            expires_at: claims.exp,
        })
    }

    fn mac(&self, data: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }
}

/// Whether `given` is the secret (argon2 hashes take tens of milliseconds: call those off the
/// async workers).
pub fn check_secret(secret: &Secret, given: &str) -> bool {
    match secret {
        Secret::Plain(s) => subtle::ConstantTimeEq::ct_eq(s.as_bytes(), given.as_bytes()).into(),
        Secret::Argon2(phc) => {
            use argon2::password_hash::{PasswordHash, PasswordVerifier};
            PasswordHash::new(phc)
                .map(|h| {
                    argon2::Argon2::default()
                        .verify_password(given.as_bytes(), &h)
                        .is_ok()
                })
                .unwrap_or(false)
        }
    }
}

/// An argon2id PHC hash of `secret` with a random salt, for `[[auth.clients]] secret_hash`.
pub fn hash_secret(secret: &str) -> String {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .expect("argon2 with default parameters")
        .to_string()
}

/// A random token for one-time use (links, UI credentials): 32 bytes, base64url.
pub fn random_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority() -> Authority {
        Authority::new(
            vec![
                Client {
                    id: "a".into(),
                    secret: Secret::Plain("s3cret".into()),
                    scopes: vec![Scope::Globalpci, Scope::Relay],
                    accounts: vec!["*".into()],
                },
                Client {
                    id: "h".into(),
                    secret: Secret::Argon2(hash_secret("hashed")),
                    scopes: vec![Scope::Admin],
                    accounts: vec!["acc1".into()],
                },
            ],
            b"0123456789abcdef0123456789abcdef".to_vec(),
            3600,
        )
    }

    #[test]
    fn grants_and_verifies() {
        let a = authority();
        let t = a
            .grant(
                Some("client_credentials"),
                Some("a"),
                Some("s3cret"),
                Some("relay"),
                1000,
            )
            .unwrap();
        assert_eq!(t.scope, "relay");
        let p = a.verify(&t.access_token, 1001).unwrap();
        assert_eq!(p.client_id, "a");
        assert!(p.has(Scope::Relay) && !p.has(Scope::Globalpci));
        let all = a
            .grant(
                Some("client_credentials"),
                Some("a"),
                Some("s3cret"),
                None,
                1000,
            )
            .unwrap();
        assert_eq!(all.scope, "globalpci relay");
        let h = a
            .grant(
                Some("client_credentials"),
                Some("h"),
                Some("hashed"),
                Some("admin"),
                1000,
            )
            .unwrap();
        assert!(a.verify(&h.access_token, 1000).unwrap().has(Scope::Admin));
        assert!(a.client("h").unwrap().may_use_account("acc1"));
        assert!(!a.client("h").unwrap().may_use_account("acc2"));
    }

    #[test]
    fn rfc6749_errors() {
        let a = authority();
        let g = |gt, id, sec, sc| a.grant(gt, id, sec, sc, 0).unwrap_err();
        assert_eq!(
            g(None, Some("a"), Some("s3cret"), None),
            AuthError::InvalidRequest
        );
        assert_eq!(
            g(Some("password"), Some("a"), Some("s3cret"), None),
            AuthError::UnsupportedGrantType
        );
        assert_eq!(
            g(Some("client_credentials"), Some("a"), Some("nope"), None),
            AuthError::InvalidClient
        );
        assert_eq!(
            g(Some("client_credentials"), Some("zz"), Some("s3cret"), None),
            AuthError::InvalidClient
        );
        assert_eq!(
            g(Some("client_credentials"), Some("h"), Some("wrong"), None),
            AuthError::InvalidClient
        );
        assert_eq!(
            g(
                Some("client_credentials"),
                Some("a"),
                Some("s3cret"),
                Some("admin")
            ),
            AuthError::InvalidScope
        );
        assert_eq!(
            g(
                Some("client_credentials"),
                Some("a"),
                Some("s3cret"),
                Some("bogus")
            ),
            AuthError::InvalidScope
        );
    }

    #[test]
    fn expired_and_forged_tokens_fail() {
        let a = authority();
        let t = a
            .grant(
                Some("client_credentials"),
                Some("a"),
                Some("s3cret"),
                None,
                1000,
            )
            .unwrap()
            .access_token;
        assert_eq!(a.verify(&t, 1000 + 3600), Err(AuthError::InvalidToken));
        // Flip a character of the claims.
        let mut forged = t.clone().into_bytes();
        forged[6] ^= 1;
        assert_eq!(
            a.verify(&String::from_utf8(forged).unwrap(), 1001),
            Err(AuthError::InvalidToken)
        );
        // Signed with another key.
        let other = Authority::new(vec![], b"another key that is long enough!".to_vec(), 3600);
        let b = authority();
        let _ = other;
        let t2 = b
            .grant(
                Some("client_credentials"),
                Some("a"),
                Some("s3cret"),
                None,
                1000,
            )
            .unwrap()
            .access_token;
        let c = Authority::new(
            vec![Client {
                id: "a".into(),
                secret: Secret::Plain("s3cret".into()),
                scopes: vec![Scope::Relay],
                accounts: vec![],
            }],
            b"a completely different signing k".to_vec(),
            3600,
        );
        assert_eq!(c.verify(&t2, 1001), Err(AuthError::InvalidToken));
        for junk in ["", "tg1", "tg1..", "x.y.z", "tg1.e30.AAAA"] {
            assert_eq!(a.verify(junk, 0), Err(AuthError::InvalidToken), "{junk:?}");
        }
    }
}
