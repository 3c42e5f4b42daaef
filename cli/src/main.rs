//! `brain`: the researcher's command line for a Distributed Brain grid. Submits C = A·B from
//! two `.npy` files, follows the job while volunteers compute it, and fetches the product.
//!
//! This file holds only the command-line surface; `client` speaks HTTP, `commands` runs
//! each subcommand, `wait` follows a job, `progress` draws uploads and downloads, `render`
//! lays out text.

mod client;
mod commands;
mod error;
mod progress;
mod render;
mod wait;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use client::Client;

#[derive(Parser)]
#[command(name = "brain", version, about, long_about = None)]
struct Cli {
    /// Base URL of the server.
    #[arg(
        long,
        global = true,
        env = "BRAIN_SERVER",
        default_value = "http://localhost:3000"
    )]
    server: String,

    /// Bearer token, for servers started with API_TOKEN (needed to submit, cancel and
    /// download; listing and status are public).
    #[arg(long, global = true, env = "API_TOKEN", hide_env_values = true)]
    token: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Submit C = A·B from two 2-D .npy files (float32 or float64; the job takes their dtype).
    /// Prints the job id on stdout.
    Submit {
        /// A, an m×k .npy file.
        a: PathBuf,
        /// B, a k×n .npy file.
        b: PathBuf,
        /// Side of the square output tiles volunteers compute (server default if omitted).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        tile: Option<u32>,
        /// Slices of k: each tile is computed as this many partial products, summed by the
        /// server (server default if omitted: slices of at most 4096; 1 to 64, at most k).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        k_split: Option<u32>,
        /// A label for `brain jobs`; defaults to the two file names.
        #[arg(long)]
        name: Option<String>,
        /// Follow the job with a progress bar until it ends; exit non-zero if it fails or is
        /// cancelled.
        #[arg(long)]
        wait: bool,
        /// Where to write C as .npy once done.
        #[arg(short, long, value_name = "C.npy", requires = "wait")]
        output: Option<PathBuf>,
    },
    /// List jobs, newest first.
    Jobs,
    /// Show one job: status, shape, tiles verified, error.
    Status { id: String },
    /// Download a finished job's product as .npy.
    Result {
        id: String,
        /// Where to write C.
        #[arg(short, long, value_name = "C.npy")]
        output: PathBuf,
    },
    /// Cancel a queued or running job; tiles being computed are withdrawn.
    Cancel { id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("brain: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> error::Result<()> {
    let client = Client::new(&cli.server, cli.token)?;
    match cli.command {
        Command::Submit {
            a,
            b,
            tile,
            k_split,
            name,
            wait,
            output,
        } => commands::submit(
            &client,
            commands::Submit {
                a,
                b,
                tile,
                k_split,
                name,
                wait,
                output,
            },
        ),
        Command::Jobs => commands::jobs(&client),
        Command::Status { id } => commands::status(&client, &id),
        Command::Result { id, output } => commands::result(&client, &id, &output),
        Command::Cancel { id } => commands::cancel(&client, &id),
    }
}
