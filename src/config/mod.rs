//! Configuration: `config/tonegate.toml`, with every value defaulted so an empty file works.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

pub use tonegate_relay::config::{DtmfMasking, MaskingSetting, RelayConfig, RelayEngine};

/// Why a configuration cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The values parse but do not make sense together.
    #[error("invalid config {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP server.
    pub server: ServerConfig,
    /// Logging.
    pub log: LogConfig,
    /// OAuth2 clients and tokens.
    pub auth: AuthConfig,
    /// The RTP relay.
    pub relay: RelayConfig,
    /// Where sessions are stored.
    pub store: StoreConfig,
    /// Merchant accounts (`AccountConfigurationId`).
    pub accounts: Vec<AccountConfig>,
    /// SMS for digital payment links.
    pub sms: crate::sms::SmsConfig,
    /// IVR prompts.
    pub prompts: crate::prompts::PromptConfig,
    /// `dtmfLinkId`: linking a call to a self-service session by keying its id.
    pub link: LinkConfig,
    /// rtpengine's ng control protocol (Kamailio, OpenSIPS).
    pub ng: NgConfig,
    /// This node among several.
    pub cluster: ClusterConfig,
    /// The fallback number's SIP endpoint.
    pub sip: SipConfig,
    /// The secret settings written inline in the file (not `env:`/`file:`), by name; filled
    /// in by [`Config::parse`]. Production refuses a file others can open that holds any.
    #[serde(skip)]
    pub inline_secrets: Vec<String>,
    /// The files `file:` secret settings were read from; production refuses any that others
    /// can open.
    #[serde(skip)]
    pub secret_files: Vec<PathBuf>,
}

/// `[cluster]`: this node among several.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The node's name in logs, `/healthz`, `tonegate_node_info` and `ctl` listings: 1-64
    /// letters, digits, `.`, `_` or `-`. Default: the host name.
    pub node: String,
    /// How often the node writes its heartbeat to a shared store, seconds.
    pub heartbeat_s: u64,
    /// A node whose heartbeat is older than this is dead: its captures' sessions are ended
    /// (`Failed`, "capture node lost"), seconds.
    pub dead_after_s: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node: host_name(),
            heartbeat_s: 3,
            dead_after_s: 15,
        }
    }
}

/// Whether `name` may name a node: it goes into logs and a metric label as it is.
fn valid_node_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// This machine's host name (`localhost` where it has none, or one no node may have).
#[allow(unsafe_code)] // gethostname through libc (std has no safe wrapper)
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if r == 0 && valid_node_name(name) => name.to_string(),
        _ => "localhost".into(),
    }
}

/// The ng control listener: how a SIP proxy's `rtpengine` module drives tonegate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NgConfig {
    /// UDP address to listen on (e.g. `127.0.0.1:2223`); off when absent.
    pub listen: Option<SocketAddr>,
    /// The client (`[[auth.clients]]` id) ng calls belong to: sessions of this client link to
    /// them, and its relay token sees them.
    pub owner: String,
    /// The account ng calls belong to (its `dtmf_masking` policy applies); none: the owner's
    /// only account, else `[relay] dtmf_masking`.
    pub account: Option<String>,
    /// How long a reply is kept for a retransmitted request (same cookie, same peer), seconds.
    pub reply_cache_s: u64,
    /// The peers that may send ng commands, as CIDRs or single addresses; datagrams from any
    /// other source are dropped unanswered and counted. None: loopback only (127.0.0.0/8, ::1).
    pub allow: Option<Vec<String>>,
    /// Most bytes the reply cache keeps (cookies and replies), oldest evicted first.
    pub reply_cache_bytes: usize,
}

/// Where ng's default allow-list lets commands come from: this host only.
pub const NG_LOOPBACK: [&str; 2] = ["127.0.0.0/8", "::1/128"];

impl NgConfig {
    /// The peers allowed to send ng commands (`allow`, else loopback), or which entry is bad.
    pub fn allow_nets(&self) -> Result<Vec<ipnet::IpNet>, String> {
        match &self.allow {
            Some(list) => crate::networks::parse("ng.allow", list),
            None => crate::networks::parse("ng.allow", &NG_LOOPBACK.map(String::from)),
        }
    }
}

impl Default for NgConfig {
    fn default() -> Self {
        NgConfig {
            listen: None,
            owner: "tonegate-dev".into(),
            account: None,
            reply_cache_s: 60,
            allow: None,
            reply_cache_bytes: 16 << 20,
        }
    }
}

pub use tonegate_session::link_id::LinkConfig;

/// The SIP endpoint that answers accounts' `dtmf_fallback_number` (README "The fallback
/// number").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Address for SIP over UDP and TCP (e.g. `127.0.0.1:5060`); off when absent.
    pub listen: Option<SocketAddr>,
    /// The peers that may send requests (CIDRs or addresses); others get no answer, counted.
    /// None: loopback only.
    pub allow: Option<Vec<String>>,
    /// The client (`[[auth.clients]]` id) the calls belong to: its self-service sessions
    /// link to them.
    pub owner: String,
    /// After the payment: `"bye"` (hang up) or `"refer"` (transfer to `refer_to`, hanging up
    /// if the transfer is refused).
    pub after_payment: AfterPaymentSetting,
    /// Where `after_payment = "refer"` sends the caller (a SIP URI, e.g. the IVR's).
    pub refer_to: Option<String>,
    /// How long a call rings (180) before it is answered, milliseconds.
    pub ring_ms: u64,
    /// Session interval granted to callers that support session timers (RFC 4028), seconds.
    pub session_expires_s: u32,
    /// Shortest session interval accepted, seconds (at least 90).
    pub min_se_s: u32,
    /// New calls (INVITEs) one peer may start per second; beyond that, 503 with Retry-After.
    pub invites_per_second: u32,
    /// Address for SIP over TLS (e.g. `0.0.0.0:5061`); off when absent. Needs `listen`.
    pub tls_listen: Option<SocketAddr>,
    /// The certificate and key `tls_listen` serves; absent: `[server.tls]`'s.
    pub tls: Option<TlsConfig>,
}

/// The digits of a dialled number (`+44 20 7946-0000` and `442079460000` are one number): how
/// the SIP endpoint matches a Request-URI to an account's `dtmf_fallback_number`.
pub fn dialled_digits(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}

/// What the fallback number does once the payment is over.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AfterPaymentSetting {
    /// Hang up.
    #[default]
    Bye,
    /// Transfer back (REFER to `refer_to`).
    Refer,
}

impl SipConfig {
    /// The peers allowed to send requests (`allow`, else loopback), or which entry is bad.
    pub fn allow_nets(&self) -> Result<Vec<ipnet::IpNet>, String> {
        match &self.allow {
            Some(list) => crate::networks::parse("sip.allow", list),
            None => crate::networks::parse("sip.allow", &NG_LOOPBACK.map(String::from)),
        }
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: None,
            allow: None,
            owner: "tonegate-dev".into(),
            after_payment: AfterPaymentSetting::Bye,
            refer_to: None,
            ring_ms: 0,
            session_expires_s: 1800,
            min_se_s: 90,
            invites_per_second: 50,
            tls_listen: None,
            tls: None,
        }
    }
}

/// Session storage.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// SQLite database file (created with its directory if missing); the store unless
    /// `postgres_url` is set.
    pub sqlite_path: std::path::PathBuf,
    /// A PostgreSQL database (`postgresql://user:password@host:port/db`) shared by several
    /// nodes; when set, it is the store and `sqlite_path` is not used.
    pub postgres_url: Option<String>,
    /// How often expired sessions are swept, seconds.
    pub sweep_interval_s: u64,
    /// A result webhook is retried (1 s doubling to hourly) for this long, seconds.
    pub webhook_retry_s: u64,
    /// Personal data (PaymentData such as names, addresses and phone numbers; SMS messages;
    /// link records) of sessions closed this many days ago is deleted.
    pub personal_data_days: u64,
}

// By hand: the PostgreSQL URL may hold a password.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("sqlite_path", &self.sqlite_path)
            .field("postgres_url", &self.postgres_url.as_ref().map(|_| "<set>"))
            .field("sweep_interval_s", &self.sweep_interval_s)
            .field("webhook_retry_s", &self.webhook_retry_s)
            .field("personal_data_days", &self.personal_data_days)
            .finish()
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            sqlite_path: "var/tonegate.db".into(),
            postgres_url: None,
            sweep_interval_s: 30,
            webhook_retry_s: 86_400,
            personal_data_days: 90,
        }
    }
}

/// Which PSP an account pays through.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PspKind {
    /// The built-in sandbox (Stripe test-card behaviour, in process).
    Sandbox,
    /// A Stripe-compatible API.
    Stripe,
}

/// One merchant account: PSP, currency, what to capture, limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// The `AccountConfigurationId` clients send.
    pub id: String,
    /// Display name (payment pages).
    #[serde(default)]
    pub name: String,
    /// PSP.
    #[serde(default = "default_psp")]
    pub psp: PspKind,
    /// Stripe-compatible API base URL (psp = "stripe").
    #[serde(default)]
    pub stripe_base_url: Option<String>,
    /// Stripe secret key (psp = "stripe"); never logged.
    #[serde(default)]
    pub stripe_secret_key: Option<String>,
    /// ISO 4217 currency.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Card fields to capture, in order.
    #[serde(default = "default_fields")]
    pub fields: Vec<crate::capture::Field>,
    /// `PaymentData` keys that must be present.
    #[serde(default)]
    pub mandatory: Vec<String>,
    /// Masking for this account's calls (else the relay's).
    #[serde(default)]
    pub masking: Option<MaskingSetting>,
    /// When this account's calls are masked: the whole call (default) or only while a
    /// session holds it.
    #[serde(default)]
    pub dtmf_masking: DtmfMasking,
    /// Prompt set (language) for self-service calls.
    #[serde(default = "default_prompts")]
    pub prompts: String,
    /// Session lifetime, seconds.
    #[serde(default = "default_session_ttl")]
    pub session_ttl_s: u64,
    /// Digital payment link lifetime, seconds.
    #[serde(default = "default_link_ttl")]
    pub link_ttl_s: u64,
    /// Tries per card field.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Cards a session may try: after a decline or a failure an agent may ask for the card
    /// again until this many captures have been used.
    #[serde(default = "default_attempts")]
    pub payment_attempts: u32,
    /// Language of the payment pages (`en`, `de`); default: the prompt set's, else English.
    #[serde(default)]
    pub language: Option<String>,
    /// The merchant's logo on the payment pages (an `https://` URL or a path on this
    /// gateway), shown beside its name.
    #[serde(default)]
    pub logo_url: Option<String>,
    /// Longest pause between keys of a field, seconds.
    #[serde(default = "default_inter_digit")]
    pub inter_digit_timeout_s: u64,
    /// Longest wait for a field's first key, seconds.
    #[serde(default = "default_first_key")]
    pub first_key_timeout_s: u64,
    /// How long a complete card may wait for the agent's "Submit", seconds (0: until the
    /// session ends); then it is wiped and the caller keys it again.
    #[serde(default = "default_card_hold")]
    pub card_hold_s: u64,
    /// Number an IVR bridges to when the call cannot be linked by CallGuid (`dtmfFallbackNumber`).
    #[serde(default)]
    pub dtmf_fallback_number: String,
    /// Where session results are POSTed (signed), if anywhere.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// HMAC key for webhook signatures.
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// Apple Pay merchant identifier for Messages for Business payment requests.
    #[serde(default = "default_apple_merchant")]
    pub apple_merchant_identifier: String,
    /// Origins allowed to frame the agent payment UI (CSP frame-ancestors).
    #[serde(default = "default_frame_ancestors")]
    pub frame_ancestors: Vec<String>,
    /// Payments one payment link may attempt (a declined card or a failed 3-D Secure
    /// challenge leaves the link open while attempts remain).
    #[serde(default = "default_attempts")]
    pub link_attempts: u32,
    /// Wallets offered on the payment link through the PSP's hosted checkout (where the
    /// customer's browser can use them; the card form stays). Needs `psp_webhook_secret`.
    #[serde(default)]
    pub wallets: Vec<Wallet>,
    /// The secret the PSP signs its webhooks with for this account (Stripe: the endpoint's
    /// `whsec_…`); never logged.
    #[serde(default)]
    pub psp_webhook_secret: Option<String>,
}

/// A wallet a payment link can offer.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Wallet {
    /// Apple Pay.
    ApplePay,
    /// Google Pay.
    GooglePay,
}

impl Wallet {
    /// Its name for people.
    pub fn label(self) -> &'static str {
        match self {
            Wallet::ApplePay => "Apple Pay",
            Wallet::GooglePay => "Google Pay",
        }
    }
}

fn default_psp() -> PspKind {
    PspKind::Sandbox
}
fn default_currency() -> String {
    "GBP".into()
}
fn default_fields() -> Vec<crate::capture::Field> {
    use crate::capture::Field;
    vec![Field::Pan, Field::Expiry, Field::Cvv]
}
fn default_prompts() -> String {
    "en".into()
}
fn default_session_ttl() -> u64 {
    1800
}
fn default_link_ttl() -> u64 {
    900
}
fn default_attempts() -> u32 {
    3
}
fn default_inter_digit() -> u64 {
    10
}
fn default_card_hold() -> u64 {
    120
}

fn default_first_key() -> u64 {
    30
}
fn default_apple_merchant() -> String {
    "merchant.com.tonegate.dev".into()
}
fn default_frame_ancestors() -> Vec<String> {
    vec!["'self'".into()]
}

impl Config {
    /// The account with this `AccountConfigurationId`.
    pub fn account(&self, id: &str) -> Option<&AccountConfig> {
        self.accounts.iter().find(|a| a.id == id)
    }
}

/// OAuth2 settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Token lifetime in seconds.
    pub token_lifetime_s: u64,
    /// Token signing key, base64 (32+ bytes). Without one a random key is made at start-up,
    /// so tokens do not survive a restart.
    pub signing_key: Option<String>,
    /// API clients.
    pub clients: Vec<ClientConfig>,
    /// Most argon2 secret checks running at once (each takes ~19 MiB and tens of ms on the
    /// blocking pool); 0: a quarter of the CPUs, at least 1.
    pub hash_concurrency: usize,
    /// Failed token requests naming one client id from one address (IPv6: one /64) within
    /// `failure_window_s` that lock that pair out (neither the address nor the id as a whole).
    pub failures_per_address: u32,
    /// Retired: failures were once also counted per client id, which let anyone lock a tenant
    /// out. Accepted so that older configs still load; `serve` warns that it does nothing.
    pub failures_per_client: Option<u32>,
    /// A client's secret, once verified, is recognised (by a keyed hash kept in memory) for
    /// this many seconds after its last use, without argon2 and even while its (client,
    /// address) pair is locked out by others' guesses; 0: off.
    pub verified_secret_cache_s: u64,
    /// The window failures are counted in, seconds.
    pub failure_window_s: u64,
    /// The first lockout, seconds; each further one doubles.
    pub lockout_s: u64,
    /// The longest lockout, seconds.
    pub max_lockout_s: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token_lifetime_s: 3600,
            signing_key: None,
            clients: Vec::new(),
            hash_concurrency: 0,
            failures_per_address: 10,
            failures_per_client: None,
            verified_secret_cache_s: 300,
            failure_window_s: 60,
            lockout_s: 60,
            max_lockout_s: 900,
        }
    }
}

impl AuthConfig {
    /// The token endpoint's throttle limits.
    pub fn throttle_limits(&self) -> crate::auth::throttle::ThrottleLimits {
        use std::time::Duration;
        crate::auth::throttle::ThrottleLimits {
            failures_per_address: self.failures_per_address,
            window: Duration::from_secs(self.failure_window_s),
            lockout: Duration::from_secs(self.lockout_s),
            max_lockout: Duration::from_secs(self.max_lockout_s),
        }
    }

    /// How many argon2 checks may run at once.
    pub fn hash_permits(&self) -> usize {
        if self.hash_concurrency > 0 {
            return self.hash_concurrency;
        }
        std::thread::available_parallelism()
            .map(|n| n.get() / 4)
            .unwrap_or(1)
            .max(1)
    }
}

/// One API client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// `client_id`.
    pub id: String,
    /// Plain secret: development only (`serve` warns).
    pub secret: Option<String>,
    /// argon2 PHC hash of the secret (`tonegate hash-secret`).
    pub secret_hash: Option<String>,
    /// Scopes the client may ask for.
    pub scopes: Vec<crate::auth::Scope>,
    /// Account configuration ids it may use; `"*"` for all.
    #[serde(default)]
    pub accounts: Vec<String>,
}

/// HTTP server settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Base URL clients reach the gateway at (payment-UI and SMS links are built on it);
    /// defaults to `http://` + the listen address.
    pub public_url: Option<String>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// A client must send a request's headers within this many seconds of connecting or of
    /// starting them (slow-header attacks).
    pub header_timeout_s: u64,
    /// A connection on which nothing has been read or written for this many seconds is closed
    /// (idle keep-alive connections; event streams send a keep-alive every 15 s).
    pub idle_timeout_s: u64,
    /// A request (headers to response) must be answered within this many seconds.
    pub request_timeout_s: u64,
    /// Most HTTP connections open at once; beyond, new ones are closed at once. Never more
    /// than a quarter of the open-file limit: the rest is kept for relay sockets.
    pub max_connections: usize,
    /// Most HTTP connections at once from one address (IPv6: one /64), so one host cannot
    /// take every slot; absent: a sixteenth of `max_connections` (at least 1); 0: no limit.
    /// Trusted proxies are not held to it. Raise it when many agents share one NAT address.
    pub max_connections_per_address: Option<usize>,
    /// Proxies (addresses or CIDR networks) whose `X-Forwarded-For` names the client the token
    /// throttle counts; from anyone else the header is ignored. Trusted proxies are exempt from
    /// `max_connections_per_address`.
    pub trusted_proxies: crate::forwarded::TrustedProxies,
    /// `[server.internal]`: a second, plain-HTTP listener for `/metrics` and `/admin/v1/*`;
    /// when set, the public listener answers 404 for them.
    pub internal: Option<InternalConfig>,
    /// On shutdown, connections (event streams included) get this long to finish.
    pub drain_timeout_s: u64,
    /// Then payments already at the PSP get up to this long to finish (captures end at once).
    pub payment_drain_s: u64,
    /// CPU niceness of the HTTP, control and session threads (0-19), above the io_uring
    /// relay's media threads (0): under a flood of connections the audio keeps its CPU.
    pub nice: i32,
    /// `development` (the shipped default: loopback, the development client, the sandbox) or
    /// `production`, which refuses every setting that is only safe in development.
    pub mode: ServerMode,
    /// Production: TLS ends at a proxy in front (tonegate's own listener is plain HTTP on a
    /// private address). Production needs this or `[server.tls]`.
    pub behind_tls_proxy: bool,
    /// tonegate's own TLS: with it the listener speaks HTTPS only.
    pub tls: Option<TlsConfig>,
    /// Development only: `POST /admin/v1/clock` moves this gateway's wall clock forward, so
    /// tests of expiries (tokens, links, sessions) need not wait. Production refuses it.
    pub adjustable_clock: bool,
    /// The local control socket `tonegate ctl` talks to (a Unix socket, mode 0660: who may
    /// open it may list, end and drain calls). Absent: none.
    pub control_socket: Option<PathBuf>,
    /// A drain (SIGTERM, `tonegate ctl drain`) lets live calls run up to this many seconds,
    /// then stops.
    pub drain_calls_s: u64,
}

/// `[server.internal]`: the operators' listener (bind it to a private address).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalConfig {
    /// Address `/metrics` and the admin API are served on (plain HTTP).
    pub listen: SocketAddr,
}

/// `[server.tls]`: PEM files for tonegate's own HTTPS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first (PEM).
    pub cert_file: PathBuf,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1); keep it 0600.
    pub key_file: PathBuf,
}

impl ServerConfig {
    /// The per-address connection cap in force: as set (0: none), else a sixteenth of
    /// `max_connections`, at least 1.
    pub fn per_address_cap(&self) -> usize {
        self.max_connections_per_address
            .unwrap_or((self.max_connections / 16).max(1))
    }

    /// `https` with `[server.tls]`, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// How strict start-up is about development-only settings.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ServerMode {
    /// Anything goes, with warnings.
    #[default]
    Development,
    /// Plain secrets, sandbox PSPs, `http://` URLs and a missing TLS front are refused.
    Production,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            max_body_bytes: 64 * 1024,
            header_timeout_s: 10,
            idle_timeout_s: 60,
            request_timeout_s: 30,
            max_connections: 2048,
            max_connections_per_address: None,
            trusted_proxies: Default::default(),
            internal: None,
            drain_timeout_s: 5,
            payment_drain_s: 30,
            nice: 5,
            mode: ServerMode::Development,
            behind_tls_proxy: false,
            tls: None,
            adjustable_clock: false,
            control_socket: None,
            drain_calls_s: 3600,
        }
    }
}

/// Log output settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `tonegate=debug,tower_http=info`; `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

mod load;
#[cfg(test)]
mod tests;
