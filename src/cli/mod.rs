//! Offline subcommands over JSONL files: one output line per input line, in order, with a
//! per-line error object instead of aborting the run.

pub mod judge;
pub mod record;
pub mod train;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{CheckArgs, ConfigError, database_url};
use crate::outcome::{self, Mode, Options, Verdict};
use crate::store::{Store, cache_key};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write output: {0}")]
    Write(#[from] std::io::Error),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Judge(#[from] crate::judge::JudgeError),
    #[error("{0}")]
    Device(#[from] crate::devices::DeviceError),
    #[error("{0}")]
    Train(#[from] crate::train::TrainError),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckLine {
    #[serde(default)]
    id: Option<Value>,
    reference: String,
    candidate: String,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    options: Option<Options>,
}

enum Item {
    Bad(Option<Value>, String),
    Good(Option<Value>, CheckLine),
}

/// The result of one input line.
enum Out {
    Error(Option<Value>, String),
    Verdict(Option<Value>, Verdict, bool),
}

impl Out {
    fn to_json(&self) -> Value {
        match self {
            Out::Error(id, msg) => json!({"id": id, "error": msg}),
            Out::Verdict(id, v, cached) => json!({
                "id": id,
                "equivalent": v.equivalent,
                "extracted": v.extracted,
                "reason": v.reason,
                "cached": cached
            }),
        }
    }
}

/// All lines of a file, with the path in the error.
pub(crate) fn read_lines(path: &Path) -> Result<Vec<String>, CliError> {
    let read_err = |e| CliError::Read {
        path: path.display().to_string(),
        source: e,
    };
    let f = std::fs::File::open(path).map_err(read_err)?;
    BufReader::new(f)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(read_err)
}

/// The output file, or stdout.
pub(crate) fn output(path: Option<&Path>) -> Result<Box<dyn Write>, CliError> {
    Ok(match path {
        Some(p) => Box::new(BufWriter::new(std::fs::File::create(p)?)),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    })
}

/// Write one JSON value as a line.
pub(crate) fn write_line(out: &mut dyn Write, v: &Value) -> Result<(), CliError> {
    serde_json::to_writer(&mut *out, v).map_err(std::io::Error::other)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// `stepkto check`.
pub fn check(args: &CheckArgs) -> Result<(), CliError> {
    let budget = args.budget.to_budget()?;
    let items: Vec<Item> = read_lines(&args.input)?
        .iter()
        .enumerate()
        .map(|(n, line)| {
            if line.trim().is_empty() {
                return Item::Bad(None, format!("line {}: empty line", n + 1));
            }
            match serde_json::from_str::<CheckLine>(line) {
                Ok(c) => Item::Good(c.id.clone(), c),
                Err(e) => {
                    let id = serde_json::from_str::<Value>(line)
                        .ok()
                        .and_then(|v| v.get("id").cloned());
                    Item::Bad(id, format!("line {}: {e}", n + 1))
                }
            }
        })
        .collect();
    let keys: Vec<Option<String>> = items
        .iter()
        .map(|it| match it {
            Item::Good(_, c) => Some(cache_key(&outcome::key_material(
                &c.reference,
                &c.candidate,
                c.mode,
                &c.options.unwrap_or_default(),
                &budget,
            ))),
            Item::Bad(..) => None,
        })
        .collect();
    // Optional cache: look everything up first, compute the misses, write them back.
    let rt_store = if args.cache {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // The pool spawns its maintenance task on open: enter the runtime first.
        let store = {
            let _guard = rt.enter();
            Store::open(&database_url(&args.db))?
        };
        rt.block_on(store.migrate())?;
        Some((rt, store))
    } else {
        None
    };
    let mut cached: HashMap<String, String> = HashMap::new();
    if let Some((rt, store)) = &rt_store {
        let all: Vec<String> = keys.iter().flatten().cloned().collect();
        cached = rt.block_on(store.get_many(&all))?;
    }
    let threads = args
        .threads
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1);
    let results: Vec<Mutex<Option<Out>>> = (0..items.len()).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let bar = progress(items.len());
    std::thread::scope(|s| {
        for _ in 0..threads {
            std::thread::Builder::new()
                .stack_size(crate::outcome::budget::CHECK_STACK_BYTES)
                .spawn_scoped(s, || {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= items.len() {
                            break;
                        }
                        let out = match &items[i] {
                            Item::Bad(id, msg) => Out::Error(id.clone(), msg.clone()),
                            Item::Good(id, c) => {
                                let hit = keys[i]
                                    .as_ref()
                                    .and_then(|k| cached.get(k))
                                    .and_then(|b| serde_json::from_str(b).ok());
                                match hit {
                                    Some(v) => Out::Verdict(id.clone(), v, true),
                                    None => {
                                        let opts = c.options.unwrap_or_default();
                                        let v = outcome::check(
                                            &c.reference,
                                            &c.candidate,
                                            c.mode,
                                            &opts,
                                            &budget,
                                        );
                                        Out::Verdict(id.clone(), v, false)
                                    }
                                }
                            }
                        };
                        *results[i].lock().unwrap() = Some(out);
                        if let Some(b) = &bar {
                            b.inc(1);
                        }
                    }
                })
                .expect("spawn a check thread");
        }
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let results: Vec<Out> = results
        .into_iter()
        .filter_map(|m| m.into_inner().unwrap())
        .collect();
    if let Some((rt, store)) = &rt_store {
        let rows: Vec<(String, String)> = results
            .iter()
            .zip(&keys)
            .filter_map(|(r, k)| match (r, k) {
                (Out::Verdict(_, v, false), Some(k)) => {
                    Some((k.clone(), serde_json::to_string(v).ok()?))
                }
                _ => None,
            })
            .collect();
        rt.block_on(store.put_many("verify", outcome::ENGINE_VERSION, &rows))?;
        rt.block_on(store.close());
    }
    let mut out = output(args.output.as_deref())?;
    for r in &results {
        write_line(&mut out, &r.to_json())?;
    }
    out.flush()?;
    Ok(())
}

pub(crate) fn progress(n: usize) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new(n as u64);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} [{elapsed_precise}] {per_sec}",
        )
        .ok()?,
    );
    Some(b)
}
