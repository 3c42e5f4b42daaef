//! The server's jobs API over HTTP: one method per endpoint, answers decoded into typed rows,
//! and every failure turned into an [`Error`] that names what went wrong and where.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::blocking::{multipart, Client as Http, RequestBuilder, Response};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{Error, Result};

/// A server that does not accept a connection within this long is treated as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Small JSON requests (status, list, cancel) give up after this long. Uploads and downloads
/// have no total limit: a large matrix over a slow link may rightly take minutes.
const QUICK_TIMEOUT: Duration = Duration::from_secs(30);

/// A job as `GET /api/jobs/{id}` describes it. The `201` answer to a submission is a subset
/// (no name, progress or times yet), read into the same type with those fields defaulted.
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// `queued`, `running`, `done`, `failed` or `cancelled`.
    pub status: String,
    pub m: u64,
    pub k: u64,
    pub n: u64,
    /// `f32` or `f64`, from the uploaded `.npy` files.
    pub dtype: String,
    pub tile: u64,
    pub tasks_total: u64,
    /// Tiles computed and verified so far.
    #[serde(default)]
    pub tasks_done: u64,
    /// RFC 3339 in UTC, as the server formats it.
    #[serde(default)]
    pub created_at: String,
    pub finished_at: Option<String>,
    /// Why the job failed; absent otherwise.
    pub error: Option<String>,
}

impl Job {
    /// No further change will happen: polling can stop.
    pub fn is_final(&self) -> bool {
        matches!(self.status.as_str(), "done" | "failed" | "cancelled")
    }
}

/// What the server sends with every 4xx/5xx.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// A connection to one server, with the token (if any) sent on every request.
pub struct Client {
    http: Http,
    /// The server's root; endpoint paths are appended as segments so a server mounted under
    /// a path prefix behind a proxy works too.
    base: Url,
    /// The `--server` value as the user wrote it, for messages.
    shown: String,
    token: Option<String>,
}

impl Client {
    pub fn new(server: &str, token: Option<String>) -> Result<Self> {
        let shown = server.trim_end_matches('/').to_owned();
        let bad = || Error::ServerUrl {
            url: server.to_owned(),
        };
        let base = Url::parse(server).map_err(|_| bad())?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            return Err(bad());
        }
        let http = Http::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(None)
            .user_agent(concat!("brain-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Transport {
                url: shown.clone(),
                cause: deepest_cause(&e),
            })?;
        Ok(Client {
            http,
            base,
            shown,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// The server as the user named it.
    pub fn server(&self) -> &str {
        &self.shown
    }

    /// `POST /api/jobs` with the two files streamed from disk as a multipart form.
    pub fn submit(&self, a: &Path, b: &Path, tile: Option<u32>, name: &str) -> Result<Job> {
        let mut form = multipart::Form::new()
            .part("a", file_part(a)?)
            .part("b", file_part(b)?)
            .text("name", name.to_owned());
        if let Some(tile) = tile {
            form = form.text("tile", tile.to_string());
        }
        self.check_token()?;
        let url = self.url(&["api", "jobs"])?;
        let res = self.send(self.http.post(url.clone()).multipart(form))?;
        decode(res, &url)
    }

    /// `GET /api/auth`: is the token (or its absence) accepted?
    ///
    /// Asked before every upload because a refused upload cannot be answered reliably once it
    /// is under way: the server reads at most 1 MiB of a body it refuses, then closes the
    /// connection under us, and the send fails with a broken pipe instead of the server's
    /// "missing or wrong API token". Neither way round that works with reqwest 0.12: HTTP's
    /// own, `Expect: 100-continue`, needs a client that waits for `100 Continue`, and hyper's
    /// sends the body at once; nor can the answer be read after the send fails, since the
    /// blocking client returns the body's send error even when the answer has arrived. One
    /// small request on the connection the upload then reuses is cheap next to uploading
    /// megabytes to be refused.
    fn check_token(&self) -> Result<()> {
        let url = self.url(&["api", "auth"])?;
        match self.send(self.http.get(url).timeout(QUICK_TIMEOUT)) {
            Ok(_) => Ok(()),
            // A server older than this endpoint: the upload itself will tell.
            Err(Error::Server {
                status: StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED,
                ..
            }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `GET /api/jobs`, newest first.
    pub fn jobs(&self) -> Result<Vec<Job>> {
        let url = self.url(&["api", "jobs"])?;
        let res = self.send(self.http.get(url.clone()).timeout(QUICK_TIMEOUT))?;
        decode(res, &url)
    }

    /// `GET /api/jobs/{id}`.
    pub fn job(&self, id: &str) -> Result<Job> {
        let url = self.url(&["api", "jobs", id])?;
        let res = self.send(self.http.get(url.clone()).timeout(QUICK_TIMEOUT))?;
        decode(res, &url)
    }

    /// `DELETE /api/jobs/{id}`; answers the job as it is after cancelling.
    pub fn cancel(&self, id: &str) -> Result<Job> {
        let url = self.url(&["api", "jobs", id])?;
        let res = self.send(self.http.delete(url.clone()).timeout(QUICK_TIMEOUT))?;
        decode(res, &url)
    }

    /// `GET /api/jobs/{id}/result` streamed into `dest`; returns the bytes written.
    ///
    /// The bytes go to a `.part` file beside `dest` that is renamed at the end, so an
    /// interrupted download never leaves a truncated file that looks like a result.
    pub fn download(&self, id: &str, dest: &Path) -> Result<u64> {
        let url = self.url(&["api", "jobs", id, "result"])?;
        let mut res = self.send(self.http.get(url.clone()))?;
        let part = part_path(dest);
        let written = copy_to_file(&mut res, &part, dest, &url);
        let renamed = written.and_then(|n| {
            fs::rename(&part, dest).map_err(|source| Error::Output {
                path: dest.to_owned(),
                source,
            })?;
            Ok(n)
        });
        if renamed.is_err() {
            // Best effort: the error being reported matters more than a leftover temp file.
            let _ = fs::remove_file(&part);
        }
        renamed
    }

    fn url(&self, segments: &[&str]) -> Result<Url> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| Error::ServerUrl {
                url: self.shown.clone(),
            })?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Sends with the token and turns non-2xx answers into [`Error::Server`] with the
    /// server's own message.
    fn send(&self, request: RequestBuilder) -> Result<Response> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let res = request.send().map_err(|e| self.transport(e))?;
        let status = res.status();
        if status.is_success() {
            return Ok(res);
        }
        let text = res.text().unwrap_or_default();
        let mut message = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => body.error,
            // Not our server's JSON (a proxy's error page, say): show a bounded excerpt.
            Err(_) if !text.trim().is_empty() => text.trim().chars().take(300).collect(),
            Err(_) => status.canonical_reason().unwrap_or("no message").to_owned(),
        };
        if status == StatusCode::UNAUTHORIZED {
            message.push_str("; pass --token or set API_TOKEN");
        }
        Err(Error::Server { status, message })
    }

    fn transport(&self, e: reqwest::Error) -> Error {
        let cause = deepest_cause(&e);
        if e.is_connect() {
            Error::Unreachable {
                url: self.shown.clone(),
                cause,
            }
        } else {
            Error::Transport {
                url: e.url().map_or_else(|| self.shown.clone(), Url::to_string),
                cause,
            }
        }
    }
}

/// A file part, opened now so a missing or unreadable file is reported before any request.
fn file_part(path: &Path) -> Result<multipart::Part> {
    let input = |source| Error::Input {
        path: path.to_owned(),
        source,
    };
    // Opening a directory succeeds on Unix and only fails mid-upload, with a worse message.
    if fs::metadata(path).map_err(input)?.is_dir() {
        return Err(input(std::io::Error::other("is a directory")));
    }
    let file = File::open(path).map_err(input)?;
    let len = file.metadata().map_err(input)?.len();
    let name = path
        .file_name()
        .map_or_else(|| "matrix.npy".into(), |n| n.to_string_lossy().into_owned());
    Ok(multipart::Part::reader_with_length(file, len).file_name(name))
}

fn decode<T: DeserializeOwned>(res: Response, url: &Url) -> Result<T> {
    let protocol = |cause: String| Error::Protocol {
        url: url.to_string(),
        cause,
    };
    let bytes = res.bytes().map_err(|e| protocol(deepest_cause(&e)))?;
    serde_json::from_slice(&bytes).map_err(|e| protocol(e.to_string()))
}

fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

/// Copies the body, telling network errors (server's side) from disk errors (user's side).
fn copy_to_file(body: &mut Response, part: &Path, dest: &Path, url: &Url) -> Result<u64> {
    let output = |source| Error::Output {
        path: dest.to_owned(),
        source,
    };
    let mut file = File::create(part).map_err(output)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = body.read(&mut buf).map_err(|e| Error::Transport {
            url: url.to_string(),
            cause: e.to_string(),
        })?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).map_err(output)?;
        total += n as u64;
    }
    file.sync_all().map_err(output)?;
    Ok(total)
}

/// reqwest's own message ("error sending request for url (...)") repeats the URL we already
/// name; the part a user can act on ("Connection refused", "dns error", a TLS complaint) is
/// at the bottom of the source chain.
fn deepest_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
