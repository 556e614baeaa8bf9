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
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { node: host_name() }
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

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let config = Self::parse(&text, path)?;
        if config.server.mode == ServerMode::Production {
            config.check_secret_file_modes(path)?;
        }
        Ok(config)
    }

    /// Production: the config file, if it holds secrets inline, and every `file:` secret must
    /// be closed to group and others (`chmod 600`).
    fn check_secret_file_modes(&self, path: &Path) -> Result<(), ConfigError> {
        use std::os::unix::fs::PermissionsExt;
        let open_to_others = |p: &Path| -> Result<Option<u32>, ConfigError> {
            let mode = std::fs::metadata(p)
                .map_err(|source| ConfigError::Io {
                    path: p.to_owned(),
                    source,
                })?
                .permissions()
                .mode()
                & 0o777;
            Ok((mode & 0o077 != 0).then_some(mode))
        };
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message: format!("server.mode = \"production\": {message}"),
        };
        if !self.inline_secrets.is_empty() {
            if let Some(mode) = open_to_others(path)? {
                return Err(invalid(format!(
                    "the file holds secrets inline ({}) and group or others can open it (mode {mode:o}): chmod 600 it, or give them as env:NAME or file:PATH",
                    self.inline_secrets.join(", ")
                )));
            }
        }
        for f in &self.secret_files {
            if let Some(mode) = open_to_others(f)? {
                return Err(invalid(format!(
                    "secret file {} can be opened by group or others (mode {mode:o}): chmod 600 it",
                    f.display()
                )));
            }
        }
        Ok(())
    }

    /// Makes every relative path in the configuration (defaults included) relative to `base`,
    /// the config file's directory, so `serve` runs the same from any working directory.
    fn resolve_paths(&mut self, base: &Path) {
        if base.as_os_str().is_empty() {
            return;
        }
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.store.sqlite_path);
        fix(&mut self.prompts.dir);
        if let Some(t) = &mut self.server.tls {
            fix(&mut t.cert_file);
            fix(&mut t.key_file);
        }
        if let Some(s) = &mut self.server.control_socket {
            fix(s);
        }
        let secret = |v: &mut String| {
            if let Some(p) = v.strip_prefix("file:") {
                if Path::new(p).is_relative() {
                    *v = format!("file:{}", base.join(p).display());
                }
            }
        };
        if let Some(k) = &mut self.auth.signing_key {
            secret(k);
        }
        for c in &mut self.auth.clients {
            if let Some(v) = &mut c.secret {
                secret(v);
            }
        }
        for a in &mut self.accounts {
            for v in [&mut a.stripe_secret_key, &mut a.webhook_secret]
                .into_iter()
                .flatten()
            {
                secret(v);
            }
        }
        secret(&mut self.sms.twilio_auth_token);
    }

    /// Reads every secret setting given as `env:NAME` or `file:PATH`, and notes which are
    /// inline.
    fn resolve_secrets(&mut self) -> Result<(), String> {
        let mut inline = Vec::new();
        let mut files = Vec::new();
        let mut one = |setting: String, value: &mut Option<String>| -> Result<(), String> {
            let Some(v) = value.as_mut() else {
                return Ok(());
            };
            match resolve_secret(&setting, v)? {
                SecretSource::Inline => inline.push(setting),
                SecretSource::File(p) => files.push(p),
                SecretSource::Env => {}
            }
            Ok(())
        };
        one("auth.signing_key".into(), &mut self.auth.signing_key)?;
        for c in &mut self.auth.clients {
            one(format!("auth.clients {:?} secret", c.id), &mut c.secret)?;
        }
        for a in &mut self.accounts {
            one(
                format!("accounts {:?} stripe_secret_key", a.id),
                &mut a.stripe_secret_key,
            )?;
            one(
                format!("accounts {:?} webhook_secret", a.id),
                &mut a.webhook_secret,
            )?;
            one(
                format!("accounts {:?} psp_webhook_secret", a.id),
                &mut a.psp_webhook_secret,
            )?;
        }
        let mut token =
            Some(std::mem::take(&mut self.sms.twilio_auth_token)).filter(|t| !t.is_empty());
        one("sms.twilio_auth_token".into(), &mut token)?;
        self.sms.twilio_auth_token = token.unwrap_or_default();
        self.inline_secrets = inline;
        self.secret_files = files;
        Ok(())
    }

    /// Parses and checks configuration text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.resolve_paths(path.parent().unwrap_or(Path::new("")));
        config
            .resolve_secrets()
            .map_err(|message| ConfigError::Invalid {
                path: path.to_owned(),
                message,
            })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        if self.server.mode == ServerMode::Production {
            if let Some(why) = self.production_refusal() {
                return Err(invalid(format!("server.mode = \"production\": {why}")));
            }
        }
        if !valid_node_name(&self.cluster.node) {
            return Err(invalid(format!(
                "cluster.node must be 1-64 letters, digits, '.', '_' or '-', got {:?}",
                self.cluster.node
            )));
        }
        if self.store.personal_data_days == 0 {
            return Err(invalid(
                "store.personal_data_days must be at least 1 (sessions being paid need their data)"
                    .into(),
            ));
        }
        if let Some(url) = &self.store.postgres_url {
            if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
                // Not the URL itself: it may hold a password.
                return Err(invalid(
                    "store.postgres_url must be a postgresql:// URL".into(),
                ));
            }
        }
        if self.server.max_body_bytes < 1024 {
            return Err(invalid(
                "server.max_body_bytes must be at least 1024".into(),
            ));
        }
        let a = &self.auth;
        if a.failures_per_address == 0
            || a.failure_window_s == 0
            || a.lockout_s == 0
            || a.max_lockout_s < a.lockout_s
        {
            return Err(invalid(
                "auth.failures_per_address, failure_window_s and lockout_s \
                 must be at least 1, and auth.max_lockout_s at least auth.lockout_s"
                    .into(),
            ));
        }
        if a.verified_secret_cache_s > 3600 {
            return Err(invalid(format!(
                "auth.verified_secret_cache_s must be 0-3600, got {}",
                a.verified_secret_cache_s
            )));
        }
        let r = &self.relay;
        let sv = &self.server;
        if sv.header_timeout_s == 0
            || sv.idle_timeout_s < 20
            || sv.request_timeout_s == 0
            || sv.max_connections == 0
        {
            return Err(invalid(
                "server.header_timeout_s, request_timeout_s and max_connections must be at least 1, \
                 and server.idle_timeout_s at least 20 (event streams keep alive every 15 s)"
                    .into(),
            ));
        }
        if let Some(i) = &sv.internal {
            if i.listen == sv.listen && i.listen.port() != 0 {
                return Err(invalid(format!(
                    "server.internal.listen must differ from server.listen ({})",
                    sv.listen
                )));
            }
        }
        if !(0..=19).contains(&sv.nice) {
            return Err(invalid(format!(
                "server.nice must be 0-19, got {}",
                sv.nice
            )));
        }
        if r.port_min < 1024 || r.port_min >= r.port_max || r.port_max - r.port_min < 3 {
            return Err(invalid(format!(
                "relay.port_min..port_max must be a range of at least 4 ports above 1023, got {}..{}",
                r.port_min, r.port_max
            )));
        }
        if r.lookahead_frames > tonegate_dsp::masker::MAX_LOOKAHEAD {
            return Err(invalid(format!(
                "relay.lookahead_frames must be 0-{}, got {}",
                tonegate_dsp::masker::MAX_LOOKAHEAD,
                r.lookahead_frames
            )));
        }
        if r.lookahead_frames == 0 && !r.unsafe_no_lookahead {
            return Err(invalid(
                "relay.lookahead_frames = 0 lets the first 20 ms of every key reach the agent \
                 before it can be recognised; use 1 or more, or set relay.unsafe_no_lookahead = \
                 true to accept that (measurements only)"
                    .into(),
            ));
        }
        if self.ng.listen.is_some() {
            if !self.auth.clients.iter().any(|c| c.id == self.ng.owner) {
                return Err(invalid(format!(
                    "ng.owner {:?} is not a client in [[auth.clients]]",
                    self.ng.owner
                )));
            }
            if let Some(a) = &self.ng.account {
                if self.account(a).is_none() {
                    return Err(invalid(format!("ng.account {a:?} is not an account")));
                }
            }
            if self.ng.reply_cache_s < 30 {
                return Err(invalid(
                    "ng.reply_cache_s must be at least 30 (Kamailio retransmits for that long)"
                        .into(),
                ));
            }
            if self.ng.reply_cache_bytes < 1 << 20 {
                return Err(invalid(
                    "ng.reply_cache_bytes must be at least 1048576 (1 MiB: a few dozen of the largest replies)"
                        .into(),
                ));
            }
        }
        self.ng.allow_nets().map_err(invalid)?;
        self.sip.allow_nets().map_err(invalid)?;
        if self.sip.listen.is_some() {
            let sip = &self.sip;
            if !self.auth.clients.iter().any(|c| c.id == sip.owner) {
                return Err(invalid(format!(
                    "sip.owner {:?} is not a client in [[auth.clients]]",
                    sip.owner
                )));
            }
            if sip.after_payment == AfterPaymentSetting::Refer && sip.refer_to.is_none() {
                return Err(invalid(
                    "sip.after_payment = \"refer\" needs sip.refer_to (where to send the caller)"
                        .into(),
                ));
            }
            if sip.min_se_s < 90 || sip.session_expires_s < sip.min_se_s {
                return Err(invalid(
                    "sip.min_se_s must be at least 90 (RFC 4028) and sip.session_expires_s at least that"
                        .into(),
                ));
            }
            if sip.invites_per_second == 0 {
                return Err(invalid("sip.invites_per_second must be at least 1".into()));
            }
            let mut seen = std::collections::HashMap::new();
            for a in &self.accounts {
                let n = dialled_digits(&a.dtmf_fallback_number);
                if n.is_empty() {
                    continue;
                }
                if let Some(other) = seen.insert(n, &a.id) {
                    return Err(invalid(format!(
                        "accounts {other:?} and {:?} have the same dtmf_fallback_number: a call to it could not tell them apart",
                        a.id
                    )));
                }
            }
        }
        if !(8..=16).contains(&self.link.digits) {
            return Err(invalid(format!(
                "link.digits must be 8-16 (the check digit included), got {}",
                self.link.digits
            )));
        }
        if self.link.tries_per_call == 0 || self.link.tries_per_session == 0 {
            return Err(invalid(
                "link.tries_per_call and link.tries_per_session must be at least 1".into(),
            ));
        }
        if r.event_replacement().is_none() {
            return Err(invalid(format!(
                "relay.telephone_event_replacement must be \"drop\" or one key (0-9 * # A-D), got {:?}",
                r.telephone_event_replacement
            )));
        }
        if r.max_calls_per_client > r.max_calls {
            return Err(invalid(format!(
                "relay.max_calls_per_client must be 0 (automatic) or at most relay.max_calls ({}), \
                 got {}",
                r.max_calls, r.max_calls_per_client
            )));
        }
        if r.media_timeout_s == 0 || r.max_calls == 0 {
            return Err(invalid(
                "relay.media_timeout_s and relay.max_calls must be above 0".into(),
            ));
        }
        if r.workers > 64 {
            return Err(invalid(format!(
                "relay.workers must be 0 (automatic) to 64, got {}",
                r.workers
            )));
        }
        match self.sms.provider.as_str() {
            "outbox" => {}
            "twilio"
                if !self.sms.twilio_account_sid.is_empty()
                    && !self.sms.twilio_auth_token.is_empty() => {}
            "twilio" => {
                return Err(invalid(
                    "sms.provider = \"twilio\" needs twilio_account_sid and twilio_auth_token"
                        .into(),
                ))
            }
            other => {
                return Err(invalid(format!(
                    "sms.provider must be \"outbox\" or \"twilio\", got {other:?}"
                )))
            }
        }
        let mut account_ids = std::collections::HashSet::new();
        for a in &self.accounts {
            if !account_ids.insert(a.id.as_str()) {
                return Err(invalid(format!("accounts: id {:?} appears twice", a.id)));
            }
            if a.currency.len() != 3
                || !a.currency.chars().all(|c| c.is_ascii_uppercase())
                || crate::card::money::Currency::from_code(&a.currency).is_err()
            {
                return Err(invalid(format!(
                    "accounts {:?}: currency must be an ISO 4217 code like GBP, EUR or JPY",
                    a.id
                )));
            }
            if a.fields.first() != Some(&crate::capture::Field::Pan) {
                return Err(invalid(format!(
                    "accounts {:?}: fields must start with \"pan\"",
                    a.id
                )));
            }
            if a.psp == PspKind::Stripe
                && (a.stripe_base_url.is_none() || a.stripe_secret_key.is_none())
            {
                return Err(invalid(format!(
                    "accounts {:?}: psp = \"stripe\" needs stripe_base_url and stripe_secret_key",
                    a.id
                )));
            }
            if a.max_attempts == 0
                || a.payment_attempts == 0
                || a.link_attempts == 0
                || a.session_ttl_s == 0
                || a.link_ttl_s == 0
            {
                return Err(invalid(format!(
                    "accounts {:?}: max_attempts, payment_attempts, link_attempts and TTLs must be above 0",
                    a.id
                )));
            }
            if !a.wallets.is_empty() && a.psp_webhook_secret.as_deref().unwrap_or("").is_empty() {
                return Err(invalid(format!(
                    "accounts {:?}: wallets need psp_webhook_secret (the PSP's webhooks are how a wallet payment is known)",
                    a.id
                )));
            }
            if a.language
                .as_deref()
                .is_some_and(|l| crate::card::money::Locale::from_tag(l).is_none())
            {
                return Err(invalid(format!(
                    "accounts {:?}: language must be \"en\" or \"de\"",
                    a.id
                )));
            }
            // The logo's URL goes into the page and, whole, into its CSP: a plain https URL
            // or a path on this gateway, nothing that could end an attribute or a directive.
            if let Some(u) = &a.logo_url {
                let plain = u.len() <= 500
                    && !u.bytes().any(|b| {
                        b.is_ascii_whitespace()
                            || b.is_ascii_control()
                            || b"\"'<>;,\\`".contains(&b)
                    });
                let https = u
                    .strip_prefix("https://")
                    .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
                let local = u.starts_with('/') && !u.starts_with("//");
                if !plain || !(https || local) {
                    return Err(invalid(format!(
                        "accounts {:?}: logo_url must be an https:// URL or a path on this gateway",
                        a.id
                    )));
                }
            }
        }
        let mut ids = std::collections::HashSet::new();
        for c in &self.auth.clients {
            if !ids.insert(c.id.as_str()) {
                return Err(invalid(format!(
                    "auth.clients: client id {:?} appears twice",
                    c.id
                )));
            }
            match (&c.secret, &c.secret_hash) {
                (Some(_), None) => {}
                (None, Some(h)) => {
                    if argon2::password_hash::PasswordHash::new(h).is_err() {
                        return Err(invalid(format!(
                            "auth.clients {:?}: secret_hash is not an argon2 PHC string (make one with `tonegate hash-secret`)",
                            c.id
                        )));
                    }
                }
                _ => {
                    return Err(invalid(format!(
                        "auth.clients {:?}: set exactly one of secret (development) or secret_hash",
                        c.id
                    )))
                }
            }
            if c.scopes.is_empty() {
                return Err(invalid(format!("auth.clients {:?}: scopes is empty", c.id)));
            }
        }
        if let Some(k) = &self.auth.signing_key {
            use base64::Engine;
            match base64::engine::general_purpose::STANDARD.decode(k) {
                Ok(b) if b.len() >= 32 => {}
                _ => {
                    return Err(invalid(
                        "auth.signing_key must be base64 of at least 32 bytes".into(),
                    ))
                }
            }
        }
        if let Some(url) = &self.server.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(format!(
                    "server.public_url must start with http:// or https://, got {url:?}"
                )));
            }
        }
        Ok(())
    }

    /// The first setting that is unsafe outside development, named, if any.
    pub fn production_refusal(&self) -> Option<String> {
        if let Some(c) = self.auth.clients.iter().find(|c| c.secret.is_some()) {
            return Some(format!(
                "auth.clients {:?} has a plain `secret`; use `secret_hash` (tonegate hash-secret)",
                c.id
            ));
        }
        if let Some(a) = self.accounts.iter().find(|a| a.psp == PspKind::Sandbox) {
            return Some(format!(
                "accounts {:?} uses the sandbox PSP, which approves test cards without charging",
                a.id
            ));
        }
        if let Some(a) = self.accounts.iter().find(|a| {
            a.stripe_base_url
                .as_deref()
                .is_some_and(|u| !u.starts_with("https://"))
        }) {
            return Some(format!(
                "accounts {:?} has a stripe_base_url that is not https://",
                a.id
            ));
        }
        if let Some(a) = self.accounts.iter().find(|a| {
            a.webhook_url
                .as_deref()
                .is_some_and(|u| !u.starts_with("https://"))
        }) {
            return Some(format!(
                "accounts {:?} has a webhook_url that is not https:// (results and their signatures would cross the network in clear)",
                a.id
            ));
        }
        if self.sms.provider != "outbox" && !self.sms.twilio_base_url.starts_with("https://") {
            return Some(
                "sms.twilio_base_url is not https:// (the auth token and payment links would cross the network in clear)"
                    .into(),
            );
        }
        match self.server.public_url.as_deref() {
            Some(u) if u.starts_with("https://") => {}
            _ => {
                return Some(
                    "server.public_url must be set to an https:// URL (payment links and the agent UI are built on it)"
                        .into(),
                )
            }
        }
        if !self.server.behind_tls_proxy && self.server.tls.is_none() {
            return Some(
                "tonegate would serve plain HTTP: set [server.tls] cert_file and key_file, or put it behind a TLS proxy and set server.behind_tls_proxy = true"
                    .into(),
            );
        }
        if self.server.adjustable_clock {
            return Some(
                "server.adjustable_clock lets the admin API move the clock (tests only)".into(),
            );
        }
        if self.auth.signing_key.is_none() {
            return Some("auth.signing_key is not set (tokens would not survive a restart)".into());
        }
        if self
            .sip
            .listen
            .is_some_and(|l| !l.ip().is_loopback() && self.sip.allow.is_none())
        {
            return Some(
                "sip.listen is not a loopback address: set sip.allow to the carriers, IVRs and proxies that may call"
                    .into(),
            );
        }
        if self
            .ng
            .listen
            .is_some_and(|l| !l.ip().is_loopback() && self.ng.allow.is_none())
        {
            return Some(
                "ng.listen is not a loopback address: set ng.allow to the SIP proxies that may send ng commands"
                    .into(),
            );
        }
        None
    }

    /// The base URL for links handed to clients, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.server.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("{}://{}", self.server.scheme(), self.server.listen),
        }
    }
}

/// Where a secret setting's value came from.
enum SecretSource {
    Inline,
    Env,
    File(PathBuf),
}

/// Replaces `env:NAME` with the environment variable NAME and `file:PATH` with the file's
/// content (one trailing newline dropped); any other value is the secret itself. Errors name
/// the setting and where it points, never a value.
fn resolve_secret(setting: &str, value: &mut String) -> Result<SecretSource, String> {
    let (resolved, source) = if let Some(name) = value.strip_prefix("env:") {
        let v = std::env::var(name)
            .map_err(|_| format!("{setting}: environment variable {name} is not set"))?;
        (v, SecretSource::Env)
    } else if let Some(p) = value.strip_prefix("file:") {
        let v =
            std::fs::read_to_string(p).map_err(|e| format!("{setting}: cannot read {p}: {e}"))?;
        let v = v.strip_suffix('\n').unwrap_or(&v);
        let v = v.strip_suffix('\r').unwrap_or(v).to_string();
        (v, SecretSource::File(PathBuf::from(p)))
    } else {
        return Ok(SecretSource::Inline);
    };
    if resolved.is_empty() {
        return Err(format!("{setting}: the secret it points to is empty"));
    }
    *value = resolved;
    Ok(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_mode_refuses_each_development_setting_by_name() {
        let safe = include_str!("../fixtures/config/production.toml");
        Config::parse(safe, Path::new("p.toml")).expect("a production config starts");
        for (change, named) in [
            (
                ("secret_hash = \"$argon2id", "secret = \"plain\"\n#"),
                "plain `secret`",
            ),
            (("psp = \"stripe\"", "psp = \"sandbox\""), "sandbox PSP"),
            (
                ("\"https://api.stripe.com\"", "\"http://api.stripe.com\""),
                "stripe_base_url",
            ),
            (
                ("\"https://pay.example.com\"", "\"http://pay.example.com\""),
                "server.public_url",
            ),
            (
                ("behind_tls_proxy = true", "behind_tls_proxy = false"),
                "behind_tls_proxy",
            ),
            (
                ("behind_tls_proxy = true", "behind_tls_proxy = false"),
                "[server.tls]",
            ),
            (("signing_key = ", "# signing_key = "), "auth.signing_key"),
            (
                (
                    "stripe_secret_key = \"sk_live_x\"",
                    "stripe_secret_key = \"sk_live_x\"\nwebhook_url = \"http://crm.example.com/hook\"",
                ),
                "webhook_url",
            ),
            (
                (
                    "[ng]",
                    "[sms]\nprovider = \"twilio\"\ntwilio_base_url = \"http://api.twilio.com\"\n[ng]",
                ),
                "sms.twilio_base_url",
            ),
            (
                (
                    "mode = \"production\"",
                    "mode = \"production\"\nadjustable_clock = true",
                ),
                "server.adjustable_clock",
            ),
        ] {
            let text = safe.replacen(change.0, change.1, 1);
            assert_ne!(text, safe, "{change:?}");
            let e = Config::parse(&text, Path::new("p.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("production") && e.contains(named),
                "{named}: {e}"
            );
        }
        // tonegate's own TLS stands in for the proxy.
        let own_tls = format!(
            "{}\n[server.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n",
            safe.replacen("behind_tls_proxy = true", "behind_tls_proxy = false", 1)
        );
        let c = Config::parse(&own_tls, Path::new("p.toml")).expect("TLS in place of a proxy");
        assert_eq!(c.public_url(), "https://pay.example.com");
        // The same settings are accepted in development.
        let dev = safe.replacen("mode = \"production\"", "mode = \"development\"", 1);
        let dev = dev.replacen("psp = \"stripe\"", "psp = \"sandbox\"", 1);
        Config::parse(&dev, Path::new("d.toml")).unwrap();
    }

    #[test]
    fn ng_allow_is_checked_and_production_needs_it_for_an_exposed_listen() {
        let safe = include_str!("../fixtures/config/production.toml");
        let with =
            |ng: &str| safe.replacen("owner = \"crm\"", &format!("owner = \"crm\"\n{ng}"), 1);
        let exposed = with("listen = \"10.0.0.5:2223\"");
        let e = Config::parse(&exposed, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("production") && e.contains("ng.allow") && e.contains("ng.listen"),
            "{e}"
        );
        for wildcard in ["0.0.0.0:2223", "[::]:2223"] {
            let text = with(&format!("listen = \"{wildcard}\""));
            let e = Config::parse(&text, Path::new("p.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("ng.allow"), "{wildcard}: {e}");
        }
        // Loopback, or an explicit allow-list, is accepted.
        let c = Config::parse(&with("listen = \"127.0.0.1:2223\""), Path::new("p.toml")).unwrap();
        assert_eq!(
            c.ng.allow_nets().unwrap(),
            ["127.0.0.0/8", "::1/128"].map(|n| n.parse::<ipnet::IpNet>().unwrap())
        );
        let c = Config::parse(
            &with("listen = \"10.0.0.5:2223\"\nallow = [\"10.0.0.10\", \"10.1.2.3/16\", \"fd00::/8\"]"),
            Path::new("p.toml"),
        )
        .unwrap();
        assert_eq!(
            c.ng.allow_nets().unwrap(),
            ["10.0.0.10/32", "10.1.0.0/16", "fd00::/8"].map(|n| n.parse::<ipnet::IpNet>().unwrap())
        );
        // A bad entry is refused at load, by setting and entry, in any mode.
        for bad in ["10.0.0/8", "10.0.0.0/33", "pbx.example.com", ""] {
            let text = format!("[ng]\nallow = [\"127.0.0.1\", \"{bad}\"]\n");
            let e = Config::parse(&text, Path::new("d.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("ng.allow") && e.contains("CIDR"), "{bad}: {e}");
        }
        let e = Config::parse(
            &with("listen = \"127.0.0.1:2223\"\nreply_cache_bytes = 1000"),
            Path::new("p.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("ng.reply_cache_bytes"), "{e}");
    }

    #[test]
    fn secrets_come_inline_from_the_environment_or_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("signing.key");
        std::fs::write(&key, "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=\n").unwrap();
        std::env::set_var("TONEGATE_CONFIG_TEST_STRIPE", "sk_from_env");
        let safe = include_str!("../fixtures/config/production.toml");
        let text = safe
            .replacen(
                "signing_key = \"MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=\"",
                &format!("signing_key = \"file:{}\"", key.display()),
                1,
            )
            .replacen("\"sk_live_x\"", "\"env:TONEGATE_CONFIG_TEST_STRIPE\"", 1);
        let c = Config::parse(&text, Path::new("s.toml")).unwrap();
        assert_eq!(
            c.auth.signing_key.as_deref(),
            Some("MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=")
        );
        assert_eq!(
            c.accounts[0].stripe_secret_key.as_deref(),
            Some("sk_from_env")
        );
        assert!(c.inline_secrets.is_empty(), "{:?}", c.inline_secrets);
        assert_eq!(c.secret_files, vec![key.clone()]);
        let inline = Config::parse(safe, Path::new("s.toml")).unwrap();
        assert_eq!(
            inline.inline_secrets,
            ["auth.signing_key", "accounts \"live\" stripe_secret_key"]
        );
        // A missing variable or file is named with the setting, never a value.
        let e = Config::parse(
            &safe.replacen("\"sk_live_x\"", "\"env:TONEGATE_CONFIG_TEST_UNSET\"", 1),
            Path::new("s.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("accounts \"live\" stripe_secret_key")
                && e.contains("TONEGATE_CONFIG_TEST_UNSET"),
            "{e}"
        );
        let e = Config::parse(
            &safe.replacen("\"sk_live_x\"", "\"file:/nonexistent/key\"", 1),
            Path::new("s.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("stripe_secret_key") && e.contains("/nonexistent/key"),
            "{e}"
        );
    }

    #[test]
    fn personal_data_needs_a_retention_of_at_least_a_day() {
        let e = Config::parse("[store]\npersonal_data_days = 0\n", Path::new("r.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.personal_data_days"), "{e}");
        assert_eq!(
            Config::parse("", Path::new("r.toml"))
                .unwrap()
                .store
                .personal_data_days,
            90
        );
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("", Path::new("x.toml")).unwrap();
        assert_eq!(c.server.listen.port(), 8080);
        assert_eq!(c.public_url(), "http://127.0.0.1:8080");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_clear_errors() {
        let e = Config::parse(
            "[server]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("c.toml") && e.contains("bogus"), "{e}");
        let e = Config::parse("[server]\nlisten = \"nope\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = Config::parse("[server]\npublic_url = \"ftp://x\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("public_url"), "{e}");
        let e = Config::parse("[relay]\nengine = \"fast\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("io_uring") && e.contains("tokio"), "{e}");
        let e = Config::parse("[relay]\nworkers = 65\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("relay.workers"), "{e}");
        let c = Config::parse(
            "[relay]\nengine = \"tokio\"\nworkers = 3\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!((c.relay.engine, c.relay.workers), (RelayEngine::Tokio, 3));
    }

    #[test]
    fn the_front_door_settings_are_checked_by_name() {
        let err = |text: &str| {
            Config::parse(text, Path::new("c.toml"))
                .unwrap_err()
                .to_string()
        };
        let e = err("[server]\ntrusted_proxies = [\"10.0.0.0/40\"]\n");
        assert!(e.contains("server.trusted_proxies"), "{e}");
        let e = err("[auth]\nverified_secret_cache_s = 7200\n");
        assert!(e.contains("auth.verified_secret_cache_s"), "{e}");
        let e = err("[server]\nlisten = \"127.0.0.1:8080\"\n[server.internal]\nlisten = \"127.0.0.1:8080\"\n");
        assert!(e.contains("server.internal.listen"), "{e}");
        // The retired setting still loads (an upgrade must not stop a gateway); serve warns.
        let c = Config::parse("[auth]\nfailures_per_client = 30\n", Path::new("c.toml")).unwrap();
        assert_eq!(c.auth.failures_per_client, Some(30));
        // The per-address cap: a sixteenth of the connection cap unless set (0: none).
        let c = Config::parse("[server]\nmax_connections = 64\n", Path::new("c.toml")).unwrap();
        assert_eq!(c.server.per_address_cap(), 4);
        let c = Config::parse(
            "[server]\nmax_connections_per_address = 0\ntrusted_proxies = [\"10.0.0.1\", \"fd00::/8\"]\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.server.per_address_cap(), 0);
        assert!(c
            .server
            .trusted_proxies
            .contains("fd00::1".parse().unwrap()));
    }

    #[test]
    fn no_lookahead_is_refused_unless_marked_unsafe() {
        let e = Config::parse(
            "[relay]
lookahead_frames = 0
",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unsafe_no_lookahead"), "{e}");
        let c = Config::parse(
            "[relay]
lookahead_frames = 0
unsafe_no_lookahead = true
",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.relay.lookahead_frames, 0);
        assert!(Config::parse(
            "[relay]
lookahead_frames = 4
",
            Path::new("c.toml")
        )
        .is_err());
    }
}
