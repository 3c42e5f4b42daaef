//! One function per subcommand: call the server, print the outcome. Data for scripts (a job
//! id, a table) goes to stdout; progress and summaries go to stderr.

use std::path::{Path, PathBuf};

use crate::client::{Client, Cut};
use crate::error::{Error, Result};
use crate::{render, wait};

/// What `brain submit` was asked to do.
pub struct Submit {
    pub a: PathBuf,
    pub b: PathBuf,
    pub tile: Option<u32>,
    pub k_split: Option<u32>,
    pub name: Option<String>,
    pub wait: bool,
    pub output: Option<PathBuf>,
}

pub fn submit(client: &Client, args: Submit) -> Result<()> {
    if let Some(out) = &args.output {
        // Found out now, not after the grid has spent minutes on the product.
        check_writable_dir(out)?;
    }
    let name = args.name.unwrap_or_else(|| default_name(&args.a, &args.b));
    let cut = Cut {
        tile: args.tile,
        k_split: args.k_split,
    };
    let created = client.submit(&args.a, &args.b, cut, &name)?;
    println!("{}", created.id);
    let slices = match created.k_split {
        1 => String::new(),
        s => format!(" in {s} slices of k"),
    };
    eprintln!(
        "submitted job {} to {}: {}×{}×{} {}, tile {}{slices}, {} tiles",
        created.id,
        client.server(),
        created.m,
        created.k,
        created.n,
        created.dtype,
        created.tile,
        created.tasks_total
    );
    if !args.wait {
        return Ok(());
    }
    let (job, waited) = wait::until_final(client, &created.id, created.tasks_total)?;
    if job.status != "done" {
        return Err(Error::JobEnded {
            detail: job.error.map(|e| format!(": {e}")).unwrap_or_default(),
            id: job.id,
            status: job.status,
        });
    }
    eprintln!(
        "job {} done: {} in {}",
        job.id,
        render::tiles(&job),
        render::duration(waited)
    );
    match &args.output {
        Some(out) => {
            let written = client.download(&job.id, out)?;
            eprintln!(
                "wrote {}: {}×{} {} ({})",
                out.display(),
                job.m,
                job.n,
                job.dtype,
                render::bytes(written)
            );
        }
        None => eprintln!(
            "fetch it with: brain result {} -o C.npy --server {}",
            job.id,
            client.server()
        ),
    }
    Ok(())
}

pub fn jobs(client: &Client) -> Result<()> {
    print!("{}", render::jobs_table(&client.jobs()?));
    Ok(())
}

pub fn status(client: &Client, id: &str) -> Result<()> {
    print!("{}", render::job_details(&client.job(id)?));
    Ok(())
}

pub fn result(client: &Client, id: &str, output: &Path) -> Result<()> {
    check_writable_dir(output)?;
    let written = client.download(id, output)?;
    eprintln!("wrote {} ({})", output.display(), render::bytes(written));
    Ok(())
}

pub fn cancel(client: &Client, id: &str) -> Result<()> {
    let job = client.cancel(id)?;
    println!(
        "job {} {} with {}/{} tiles verified",
        job.id, job.status, job.tasks_done, job.tasks_total
    );
    Ok(())
}

/// Names the job after its inputs so `brain jobs` says which run is which.
fn default_name(a: &Path, b: &Path) -> String {
    let file = |p: &Path| {
        p.file_name()
            .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
    };
    format!("{} × {}", file(a), file(b))
}

fn check_writable_dir(out: &Path) -> Result<()> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if dir.is_dir() {
        Ok(())
    } else {
        Err(Error::Output {
            path: out.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("folder {} does not exist", dir.display()),
            ),
        })
    }
}
