//! The `tonegate` command line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tonegate::config::{Config, LogFormat};
use tonegate_dsp::{DtmfDetector, MaskingMode};

/// tonegate: a secure-capture gateway for card payments keyed on a phone.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: CliCommand,
}

#[derive(Subcommand)]
enum CliCommand {
    /// Run the gateway (HTTP API, relay, payment pages).
    ///
    /// Relative paths in the configuration are relative to the file's own directory.
    Serve {
        /// Configuration file.
        #[arg(long, short, default_value = "config/tonegate.toml")]
        config: PathBuf,
    },
    /// Operate a running gateway through its control socket (server.control_socket): list,
    /// show and terminate calls, totals, the call limit, a drain, the log level.
    ///
    /// Whoever may open the socket may use every command: by default the gateway's user and
    /// group (mode 0660).
    Ctl(tonegate::ctl::Args),
    /// Print the manual page (roff) to stdout.
    Manpage,
    /// Print a shell completion script to stdout.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Run ApiInteraction XML definitions in order and print the resulting variables as JSON.
    ///
    /// Definitions share one variable set: an authorize step's AccessToken is used by the next.
    /// Secrets (client_secret, tokens, access codes) are printed as "***". Progress goes to
    /// stderr; only the variables go to stdout.
    Interact {
        /// Definition files, run in this order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// A variable, Name=Value (repeatable; names may contain |).
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// A JSON object of variables (e.g. config/interactions/vars.example.json).
        #[arg(long, value_name = "FILE")]
        vars_file: Option<PathBuf>,
        /// Repeat the last definition until GlobalPCI|SessionState is terminal.
        #[arg(long)]
        poll: bool,
        /// Seconds between polls.
        #[arg(long, default_value_t = 2)]
        poll_interval: u64,
        /// Give up polling after this many seconds.
        #[arg(long, default_value_t = 300)]
        poll_timeout: u64,
        /// Per-request timeout, seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// Follow up to this many redirects (0: none).
        #[arg(long, default_value_t = 0)]
        redirects: usize,
    },
    /// Watch a payment happen: the gateway with its embedded defaults, a self-service call and
    /// an agent-assisted call on loopback with a simulated caller keying a card as in-band
    /// audio. Prints each step; exits 0 only if every check passed.
    Demo {
        /// Configuration file.
        #[arg(long, short, default_value = "config/tonegate.toml")]
        config: PathBuf,
        /// Where the agent-leg recording is written.
        #[arg(long, default_value = "target/demo")]
        out: PathBuf,
    },
    /// Print an argon2 hash of a client secret, for `secret_hash` in the config.
    ///
    /// Reads the secret from stdin (one line) so it stays out of shell history.
    HashSecret,
    /// Detect DTMF keys in a mono 16-bit 8 kHz WAV file.
    ///
    /// Prints one JSON object per key, one per line, in order:
    /// {"digit":"5","start_ms":120,"end_ms":200}. Nothing else goes to stdout; errors go to
    /// stderr with a non-zero exit status.
    Detect {
        /// The WAV file.
        file: PathBuf,
        /// Instead of printing keys, run the detector over the file N times and print its
        /// speed to stderr as `audio_s_per_cpu_s X` (as the battery's spandsp_detect does).
        #[arg(long, value_name = "N")]
        bench: Option<u32>,
    },
    /// Mask every key in a WAV file the way the relay masks the agent leg.
    ///
    /// Writes the masked audio to OUTPUT and prints a JSON summary (frames, frames masked,
    /// keys found; never the keys themselves).
    Mask {
        /// Input: mono 16-bit 8 kHz WAV.
        input: PathBuf,
        /// Output WAV (same format and length).
        output: PathBuf,
        /// What masked frames are replaced with.
        #[arg(long, value_enum, default_value_t = MaskMode::Silence)]
        mode: MaskMode,
        /// Comfort-noise level in dBm0 (with --mode noise).
        #[arg(long, default_value_t = -55.0, allow_hyphen_values = true)]
        noise_level: f32,
        /// Look-ahead in 20 ms units of audio (1-3).
        #[arg(long, default_value_t = 1)]
        lookahead: usize,
        /// Allow --lookahead 0, which lets the onset of every key through (measurements only).
        #[arg(long)]
        unsafe_no_lookahead: bool,
    },
}

/// Replacement audio for masked frames.
#[derive(Clone, Copy, clap::ValueEnum)]
enum MaskMode {
    /// Digital silence.
    Silence,
    /// Comfort noise at --noise-level.
    #[value(alias = "comfort_noise", alias = "comfort-noise")]
    Noise,
    /// A uniform 1 kHz beep, the same for every key.
    Beep,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        CliCommand::Serve { config } => serve(&config),
        CliCommand::Ctl(args) => tonegate::ctl::run(&args),
        CliCommand::Manpage => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut out)
                .and_then(|()| out.flush())
                .context("writing the manual page")
        }
        CliCommand::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "tonegate", &mut std::io::stdout());
            Ok(())
        }
        CliCommand::HashSecret => hash_secret(),
        CliCommand::Demo { config, out } => match tonegate::demo::run(&config, &out) {
            Ok(true) => Ok(()),
            Ok(false) => Err(anyhow::anyhow!("some demo checks failed")),
            Err(e) => Err(e),
        },
        CliCommand::Interact {
            files,
            vars,
            vars_file,
            poll,
            poll_interval,
            poll_timeout,
            timeout,
            redirects,
        } => interact(
            &files,
            &vars,
            vars_file.as_deref(),
            poll.then_some((poll_interval, poll_timeout)),
            timeout,
            redirects,
        ),
        CliCommand::Detect { file, bench: None } => detect(&file),
        CliCommand::Detect {
            file,
            bench: Some(n),
        } => detect_bench(&file, n),
        CliCommand::Mask {
            input,
            output,
            mode,
            noise_level,
            lookahead,
            unsafe_no_lookahead,
        } => {
            let mode = match mode {
                MaskMode::Silence => MaskingMode::Silence,
                MaskMode::Noise => MaskingMode::ComfortNoise {
                    level_dbm0: noise_level,
                },
                MaskMode::Beep => MaskingMode::Beep,
            };
            if lookahead == 0 && !unsafe_no_lookahead {
                Err(anyhow::anyhow!(
                    "--lookahead 0 lets the onset of every key through before it can be \
                     recognised; use 1 or more, or add --unsafe-no-lookahead"
                ))
            } else {
                mask(&input, &output, mode, lookahead)
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tonegate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config_path: &Path) -> anyhow::Result<()> {
    // Before any card can be in memory: no core file, no debugger reading this process.
    tonegate::hygiene::forbid_core_dumps().context("turning core dumps off")?;
    let config = Config::load(config_path)?;
    init_tracing(&config);
    let memory = tonegate::card::memory::prepare();
    if memory.locked && memory.excluded_from_dumps {
        tracing::info!(
            bytes = memory.bytes,
            "card memory locked in RAM and excluded from core dumps"
        );
    } else {
        tracing::warn!(
            bytes = memory.bytes,
            locked = memory.locked,
            excluded_from_dumps = memory.excluded_from_dumps,
            "card memory is not locked in RAM: card digits could reach swap; raise RLIMIT_MEMLOCK (LimitMEMLOCK=) to at least {} bytes",
            tonegate::card::memory::SLOTS * tonegate::card::memory::SLOT_BYTES
        );
    }
    if config.auth.failures_per_client.is_some() {
        tracing::warn!("auth.failures_per_client is retired and does nothing: failures lock a (client id, address) pair, counted by auth.failures_per_address; remove it from the config");
    }
    match tonegate::relay::raise_open_file_limit() {
        // Four sockets per call (two with rtcp-mux), plus the database, HTTP and the rest.
        Ok(limit) if limit < config.relay.max_calls as u64 * 4 + 256 => tracing::warn!(
            open_files = limit,
            max_calls = config.relay.max_calls,
            "the open-file limit allows about {} calls, below relay.max_calls: raise it (ulimit -n, LimitNOFILE=)",
            limit.saturating_sub(256) / 4
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
    // HTTP, control and sessions run a little below the io_uring relay's media threads, so
    // that a flood of connections takes CPU from them, not from the audio.
    let nice = config.server.nice;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(move || {
            if nice > 0 {
                // SAFETY: setpriority on the calling thread (who = 0) touches no memory.
                #[allow(unsafe_code)] // libc's setpriority (std has no safe wrapper)
                unsafe {
                    libc::setpriority(libc::PRIO_PROCESS, 0, nice)
                };
            }
        })
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        // Handlers first: a signal during start-up must still shut down cleanly.
        let signals = tonegate::server::Signals::install()?;
        tonegate::server::serve(config, signals).await
    })
}

fn init_tracing(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    // Colour only for a person at a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && !matches!(std::env::var_os("NO_COLOR"), Some(v) if !v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // Reloadable, for `tonegate ctl log-level`; the handle's type differs by format, the
    // setter hides it.
    fn setter<S: 'static>(
        h: tracing_subscriber::reload::Handle<EnvFilter, S>,
    ) -> tonegate::server::control::FilterSetter
    where
        tracing_subscriber::reload::Handle<EnvFilter, S>: Send + Sync,
    {
        Box::new(move |level| {
            let f = EnvFilter::try_new(level).map_err(|e| format!("bad log filter: {e}"))?;
            h.reload(f).map_err(|e| e.to_string())
        })
    }
    use tonegate::server::control::install_log_filter;
    match config.log.format {
        LogFormat::Json => {
            let b = builder.json().with_filter_reloading();
            install_log_filter(setter(b.reload_handle()));
            b.init()
        }
        LogFormat::Text => {
            let b = builder.with_filter_reloading();
            install_log_filter(setter(b.reload_handle()));
            b.init()
        }
    }
}

fn detect(file: &Path) -> anyhow::Result<()> {
    // Streamed: read a block, detect, print, so an hour of audio never sits in memory.
    let mut reader = tonegate::wav::Pcm8kReader::open(file)?;
    let mut block = vec![0i16; 1 << 15];
    let mut det = DtmfDetector::new();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut print = |det: &mut DtmfDetector| -> anyhow::Result<()> {
        while let Some(k) = det.poll_key() {
            writeln!(
                out,
                "{{\"digit\":\"{}\",\"start_ms\":{},\"end_ms\":{}}}",
                k.key,
                k.start / 8,
                k.end / 8
            )
            .context("writing to stdout")?;
        }
        Ok(())
    };
    loop {
        let n = reader.read(&mut block)?;
        if n == 0 {
            break;
        }
        // Keys are polled every 160 ms of audio: far fewer can end in that time than the
        // detector holds (16).
        for chunk in block[..n].chunks(tonegate_dsp::FRAME_SAMPLES * 8) {
            det.process(chunk);
            print(&mut det)?;
        }
    }
    det.flush();
    print(&mut det)?;
    out.flush().context("writing to stdout")?;
    Ok(())
}

fn mask(input: &Path, output: &Path, mode: MaskingMode, lookahead: usize) -> anyhow::Result<()> {
    let samples = tonegate::wav::read_pcm8k(input)?;
    let (masked, report) =
        tonegate_dsp::mask_signal(&samples, tonegate_dsp::FRAME_SAMPLES, mode, lookahead)?;
    tonegate::wav::write_pcm8k(output, &masked)
        .with_context(|| format!("writing {}", output.display()))?;
    println!(
        "{}",
        serde_json::json!({
            "frames": report.frames,
            "masked": report.masked,
            "guarded": report.guarded,
            "keys": report.keys.len(),
        })
    );
    Ok(())
}

fn detect_bench(file: &Path, passes: u32) -> anyhow::Result<()> {
    anyhow::ensure!(passes > 0, "--bench needs at least one pass");
    let samples = tonegate::wav::read_pcm8k(file)?;
    let start = process_cpu_seconds();
    let mut keys = 0usize;
    for _ in 0..passes {
        let mut det = DtmfDetector::new();
        for chunk in samples.chunks(tonegate_dsp::FRAME_SAMPLES) {
            det.process(chunk);
            while det.poll_key().is_some() {
                keys += 1;
            }
        }
        det.flush();
    }
    let cpu = process_cpu_seconds() - start;
    let audio = samples.len() as f64 / 8000.0 * passes as f64;
    eprintln!("audio_s_per_cpu_s {:.0}", audio / cpu);
    eprintln!(
        "keys {} per pass, {:.3} us per 20 ms frame",
        keys / passes as usize,
        cpu * 1e6 / (audio * 50.0)
    );
    Ok(())
}

/// CPU time this process has used, in seconds.
#[allow(unsafe_code)] // clock_gettime(CLOCK_PROCESS_CPUTIME_ID) through libc
fn process_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn hash_secret() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the secret from stdin")?;
    let secret = line.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(secret.len() >= 16, "use a secret of at least 16 characters");
    println!("{}", tonegate::auth::hash_secret(secret));
    Ok(())
}

fn interact(
    files: &[PathBuf],
    vars: &[String],
    vars_file: Option<&Path>,
    poll: Option<(u64, u64)>,
    timeout: u64,
    redirects: usize,
) -> anyhow::Result<()> {
    use tonegate::interaction::{
        masked, run_plan, Interaction, InteractionRunner, Poll, Variables,
    };
    let mut set = Variables::new();
    if let Some(f) = vars_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
            .with_context(|| format!("{} must be a JSON object of variables", f.display()))?;
        set.extend(obj);
    }
    for v in vars {
        let (k, val) = v
            .split_once('=')
            .with_context(|| format!("--var {v:?} must be NAME=VALUE"))?;
        set.insert(k.to_string(), serde_json::Value::String(val.to_string()));
    }
    let mut steps = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let def = Interaction::parse(&text).with_context(|| format!("{}", f.display()))?;
        steps.push((f.display().to_string(), def));
    }
    let poll = poll.map(|(i, t)| {
        Poll::session_state(
            std::time::Duration::from_secs(i.max(1)),
            std::time::Duration::from_secs(t),
        )
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let engine = InteractionRunner::new(std::time::Duration::from_secs(timeout.max(1)), redirects);
    let result = runtime.block_on(run_plan(
        &engine,
        &steps,
        &mut set,
        poll.as_ref(),
        |_, name, r| {
            eprintln!(
                "{name}: HTTP {} ({} set{})",
                r.status,
                r.set.len(),
                if r.missing.is_empty() {
                    String::new()
                } else {
                    format!(", not in response: {}", r.missing.join(", "))
                }
            );
        },
    ));
    println!(
        "{}",
        serde_json::to_string_pretty(&masked(&set)).context("printing variables")?
    );
    result.map_err(Into::into)
}
