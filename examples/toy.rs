//! The toy experiment's files (`stepkto::toy`): the problems and the base model's SFT set,
//! and the random-init model M0 is trained from. `scripts/experiment_toy.sh` calls it.
//!
//! `cargo run --release --example toy -- data --out DIR [--seed S] [--train N] [--val N]
//! [--test N] [--sft N] [--slip F] [--flawed F]` writes `DIR/{train,val,test}.jsonl`
//! (`{"id", "problem", "answer", "solution"}`, the reference solution) and `DIR/sft.jsonl`
//! (`{"id", "problem", "solution"}`, the id ending in the solution's kind).
//!
//! `cargo run --release --example toy -- init --out DIR [--seed S] [--hidden N] [--layers N]
//! [--heads N] [--kv-heads N] [--intermediate N]` writes the Hugging Face directory.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::json;
use stepkto::toy::model::{Shape, write_model};
use stepkto::toy::{Kind, Rng, draw_splits, kinds, solve};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Data {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 4000)]
        train: usize,
        #[arg(long, default_value_t = 200)]
        val: usize,
        #[arg(long, default_value_t = 300)]
        test: usize,
        /// SFT solutions, drawn over the train problems in turn.
        #[arg(long, default_value_t = 4000)]
        sft: usize,
        /// Share of SFT solutions with a slip (wrong answer).
        #[arg(long, default_value_t = 0.35)]
        slip: f64,
        /// Share with a flawed step and the right answer.
        #[arg(long, default_value_t = 0.45)]
        flawed: f64,
    },
    Init {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 256)]
        hidden: usize,
        #[arg(long, default_value_t = 4)]
        layers: usize,
        #[arg(long, default_value_t = 4)]
        heads: usize,
        #[arg(long, default_value_t = 2)]
        kv_heads: usize,
        #[arg(long, default_value_t = 768)]
        intermediate: usize,
    },
}

fn jsonl(path: PathBuf, rows: impl Iterator<Item = serde_json::Value>) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
    for r in rows {
        writeln!(f, "{r}")?;
    }
    f.flush()
}

fn main() -> std::io::Result<()> {
    match Cli::parse().command {
        Command::Data {
            out,
            seed,
            train,
            val,
            test,
            sft,
            slip,
            flawed,
        } => {
            if !(0.0..=1.0).contains(&slip) || !(0.0..=1.0).contains(&flawed) || slip + flawed > 1.0
            {
                eprintln!("error: --slip and --flawed are shares that sum to at most 1");
                std::process::exit(2);
            }
            if train == 0 && sft > 0 {
                eprintln!("error: --sft solutions are drawn over the train problems: --train 0");
                std::process::exit(2);
            }
            std::fs::create_dir_all(&out)?;
            let splits = draw_splits(seed, [train, val, test]);
            let mut rng = Rng::new(seed ^ 0xA5A5);
            for (name, ps) in ["train", "val", "test"].iter().zip(&splits) {
                let rows = ps.iter().enumerate().map(|(i, p)| {
                    let s = solve(p, Kind::Correct, &mut rng);
                    json!({"id": format!("{name}-{i}"), "problem": p.text,
                           "answer": p.answer().to_string(), "solution": s.text()})
                });
                jsonl(out.join(format!("{name}.jsonl")), rows)?;
            }
            let ks = kinds(sft, slip, flawed, &mut rng);
            let train = &splits[0];
            let rows = ks.iter().enumerate().map(|(i, &k)| {
                let p = &train[i % train.len()];
                let s = solve(p, k, &mut rng);
                json!({"id": format!("sft-{i}-{}", k.as_str()), "problem": p.text,
                       "solution": s.text()})
            });
            jsonl(out.join("sft.jsonl"), rows)?;
            println!(
                "wrote {} train, {} val, {} test problems and {} SFT solutions ({:.0}% slip, {:.0}% flawed) to {}",
                train.len(),
                splits[1].len(),
                splits[2].len(),
                sft,
                slip * 100.0,
                flawed * 100.0,
                out.display()
            );
        }
        Command::Init {
            out,
            seed,
            hidden,
            layers,
            heads,
            kv_heads,
            intermediate,
        } => {
            if heads == 0 || kv_heads == 0 || hidden % heads != 0 || heads % kv_heads != 0 {
                eprintln!("error: heads must divide hidden, and kv-heads divide heads");
                std::process::exit(2);
            }
            let shape = Shape {
                hidden,
                layers,
                heads,
                kv_heads,
                intermediate,
            };
            write_model(&out, shape, seed)?;
            println!("wrote a random-init model {shape:?} to {}", out.display());
        }
    }
    Ok(())
}
