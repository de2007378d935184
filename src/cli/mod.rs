//! Offline subcommands over JSONL files: one output line per input line, in order, with a
//! per-line error object instead of aborting the run.

pub mod judge;

use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{CheckArgs, ConfigError, database_url};
use crate::outcome::{self, Budget, Mode, Options, Verdict};
use crate::store::Store;

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
    #[error(
        "unknown model {0:?}: this build judges with `symbolic` only (PRM models are not loaded yet)"
    )]
    Model(String),
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

/// The cache key of one verify item.
pub fn verify_key(
    reference: &str,
    candidate: &str,
    mode: Mode,
    options: &Options,
    budget: &Budget,
) -> String {
    crate::store::cache_key(&json!([
        "verify",
        outcome::ENGINE_VERSION,
        reference,
        candidate,
        mode,
        options,
        budget
    ]))
}

enum Item {
    Bad(Option<Value>, String),
    Good(Option<Value>, CheckLine),
}

/// `stepkto check`.
pub fn check(args: &CheckArgs) -> Result<(), CliError> {
    let budget = args.budget.to_budget()?;
    let file = std::fs::File::open(&args.input).map_err(|e| CliError::Read {
        path: args.input.display().to_string(),
        source: e,
    })?;
    let mut items = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| CliError::Read {
            path: args.input.display().to_string(),
            source: e,
        })?;
        if line.trim().is_empty() {
            items.push(Item::Bad(None, format!("line {}: empty line", n + 1)));
            continue;
        }
        items.push(match serde_json::from_str::<CheckLine>(&line) {
            Ok(c) => Item::Good(c.id.clone(), c),
            Err(e) => {
                let id = serde_json::from_str::<Value>(&line)
                    .ok()
                    .and_then(|v| v.get("id").cloned());
                Item::Bad(id, format!("line {}: {e}", n + 1))
            }
        });
    }
    let keys: Vec<Option<String>> = items
        .iter()
        .map(|it| match it {
            Item::Good(_, c) => Some(verify_key(
                &c.reference,
                &c.candidate,
                c.mode,
                &c.options.unwrap_or_default(),
                &budget,
            )),
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
    let mut cached: std::collections::HashMap<String, String> = Default::default();
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
    let results: Vec<Mutex<Option<Value>>> = (0..items.len()).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let bar = progress(items.len());
    std::thread::scope(|s| {
        for _ in 0..threads {
            std::thread::Builder::new().stack_size(crate::outcome::budget::CHECK_STACK_BYTES).spawn_scoped(s, || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= items.len() {
                        break;
                    }
                    let out = match &items[i] {
                        Item::Bad(id, msg) => json!({"id": id, "error": msg}),
                        Item::Good(id, c) => {
                            let key = keys[i].as_ref().unwrap();
                            let v: Verdict = match cached.get(key).and_then(|b| serde_json::from_str(b).ok()) {
                                Some(v) => v,
                                None => outcome::check(&c.reference, &c.candidate, c.mode, &c.options.unwrap_or_default(), &budget),
                            };
                            json!({"id": id, "equivalent": v.equivalent, "extracted": v.extracted, "reason": v.reason, "cached": cached.contains_key(key)})
                        }
                    };
                    *results[i].lock().unwrap() = Some(out);
                    if let Some(b) = &bar {
                        b.inc(1);
                    }
                }
            }).expect("spawn a check thread");
        }
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let results: Vec<Value> = results
        .into_iter()
        .map(|m| m.into_inner().unwrap().unwrap_or(Value::Null))
        .collect();
    if let Some((rt, store)) = &rt_store {
        let rows: Vec<(String, String)> = results
            .iter()
            .zip(&keys)
            .filter_map(|(r, k)| {
                let k = k.as_ref()?;
                if cached.contains_key(k) || r.get("error").is_some() {
                    return None;
                }
                let v = Verdict {
                    equivalent: r["equivalent"].as_bool()?,
                    extracted: r["extracted"].as_str().map(String::from),
                    reason: serde_json::from_value(r["reason"].clone()).ok()?,
                };
                Some((k.clone(), serde_json::to_string(&v).ok()?))
            })
            .collect();
        rt.block_on(store.put_many("verify", outcome::ENGINE_VERSION, &rows))?;
        rt.block_on(store.close());
    }
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(BufWriter::new(std::fs::File::create(p)?)),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    for r in &results {
        serde_json::to_writer(&mut out, r).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
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
