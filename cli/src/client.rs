//! The server's jobs API over HTTP: one method per endpoint, answers decoded into typed rows,
//! and every failure turned into an [`Error`] that names what went wrong and where.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::ProgressBar;
use reqwest::blocking::{multipart, Client as Http, RequestBuilder, Response};
use reqwest::header;
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::progress;

/// A server that does not accept a connection within this long is treated as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Small JSON requests (status, list, cancel) give up after this long. Uploads and downloads
/// have no total limit: a large matrix over a slow link may rightly take minutes.
const QUICK_TIMEOUT: Duration = Duration::from_secs(30);

/// A job as `GET /api/jobs/{id}` describes it. The `201` answer to a submission is a subset
/// (no name, progress or times yet), read into the same type with those fields defaulted.
/// How a job is to be cut; each `None` is the server's choice.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cut {
    pub tile: Option<u32>,
    pub k_split: Option<u32>,
}

fn whole() -> u64 {
    1
}

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
    /// Slices of k each tile is computed in (1: whole); absent from servers before it.
    #[serde(default = "whole")]
    pub k_split: u64,
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

    /// `POST /api/jobs` with the two files streamed from disk as a multipart form, with a
    /// bar of the bytes sent.
    pub fn submit(&self, a: &Path, b: &Path, cut: Cut, name: &str) -> Result<Job> {
        let (a, a_input) = open_input(a)?;
        let (b, b_input) = open_input(b)?;
        self.check_token()?;
        let bar = progress::bytes("uploading", Some(a_input.len + b_input.len));
        let mut form = multipart::Form::new()
            .part("a", a_input.part(a, &bar))
            .part("b", b_input.part(b, &bar))
            .text("name", name.to_owned());
        if let Some(tile) = cut.tile {
            form = form.text("tile", tile.to_string());
        }
        if let Some(split) = cut.k_split {
            form = form.text("k_split", split.to_string());
        }
        let url = self.url(&["api", "jobs"])?;
        let res = self.send(self.http.post(url.clone()).multipart(form));
        bar.finish_and_clear();
        decode(res?, &url)
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

    /// `GET /api/jobs/{id}/result` streamed into `dest`, with a progress bar; returns the
    /// file's size.
    ///
    /// The bytes go to `<dest>.part`, renamed to `dest` once complete, so an interrupted
    /// download never leaves a truncated file that looks like a result. The `.part` is kept
    /// when the transfer breaks, with the URL and the server's `ETag` beside it in
    /// `<dest>.part.etag`; the next download to `dest` asks for the rest only
    /// (`Range: bytes=<len>-`) and only from the same file (`If-Range: <ETag>`), so a result
    /// that changed meanwhile is sent whole instead of spliced.
    pub fn download(&self, id: &str, dest: &Path) -> Result<u64> {
        let url = self.url(&["api", "jobs", id, "result"])?;
        let part = sibling(dest, ".part");
        let tag_path = sibling(dest, ".part.etag");
        let output = |source| Error::Output {
            path: dest.to_owned(),
            source,
        };
        let mut resume = Resume::load(&part, &tag_path, &url);
        let (mut res, from, total) = loop {
            let mut request = self.http.get(url.clone());
            if let Some(r) = &resume {
                request = request
                    .header(header::RANGE, format!("bytes={}-", r.have))
                    .header(header::IF_RANGE, &r.etag);
            }
            let res = match self.send(request) {
                // The .part is as long as the file or longer: not ours to trust; start over.
                Err(Error::Server {
                    status: StatusCode::RANGE_NOT_SATISFIABLE,
                    ..
                }) if resume.is_some() => {
                    resume = None;
                    continue;
                }
                res => res?,
            };
            let etag = res
                .headers()
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            match (res.status(), &resume) {
                (StatusCode::PARTIAL_CONTENT, Some(r)) => {
                    let range = res
                        .headers()
                        .get(header::CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_content_range);
                    match range {
                        Some(range)
                            if range.continues(r.have) && etag.as_ref() == Some(&r.etag) =>
                        {
                            break (res, r.have, Some(range.total));
                        }
                        // Not the rest of what we have: take the whole file instead.
                        _ => {
                            resume = None;
                            continue;
                        }
                    }
                }
                (StatusCode::PARTIAL_CONTENT, None) => {
                    return Err(Error::Protocol {
                        url: url.to_string(),
                        cause: "206 Partial Content to a request without Range".into(),
                    });
                }
                _ => {
                    // The whole file: what the .part held (if anything) is replaced, and the
                    // new validator saved first so this download can resume in turn.
                    match &etag {
                        Some(etag) if etag.starts_with('"') => {
                            fs::write(&tag_path, format!("{url}\n{etag}\n")).map_err(output)?;
                        }
                        // No strong validator: a later resume could not be checked.
                        _ => remove_if_present(&tag_path).map_err(output)?,
                    }
                    let total = res.content_length();
                    break (res, 0, total);
                }
            }
        };
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(from > 0)
            .truncate(from == 0)
            .open(&part)
            .map_err(output)?;
        let bar = progress::bytes("downloading", total);
        bar.set_position(from);
        let copied = copy_body(&mut res, &mut file, &bar, dest);
        bar.finish_and_clear();
        let have = from
            + copied.map_err(|e| match e {
                CopyError::Body(cause, got) => Error::Interrupted {
                    url: url.to_string(),
                    cause,
                    got: from + got,
                    total,
                    part: part.clone(),
                },
                CopyError::Disk(e) => e,
            })?;
        if let Some(total) = total.filter(|&t| t != have) {
            return Err(Error::Interrupted {
                url: url.to_string(),
                cause: "the server closed the connection early".into(),
                got: have,
                total: Some(total),
                part,
            });
        }
        file.sync_all().map_err(output)?;
        fs::rename(&part, dest).map_err(output)?;
        // Best effort: the result is in place; a leftover validator only costs a whole
        // download the next time.
        let _ = remove_if_present(&tag_path);
        Ok(have)
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

/// An input file, opened now so a missing or unreadable file is reported before any request.
fn open_input(path: &Path) -> Result<(File, Input)> {
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
    Ok((file, Input { len, name }))
}

/// What a multipart file part needs besides the file.
struct Input {
    len: u64,
    name: String,
}

impl Input {
    /// The part, moving `bar` as it is sent.
    fn part(self, file: File, bar: &ProgressBar) -> multipart::Part {
        let reader = progress::Counted::new(file, bar.clone());
        multipart::Part::reader_with_length(reader, self.len).file_name(self.name)
    }
}

fn decode<T: DeserializeOwned>(res: Response, url: &Url) -> Result<T> {
    let protocol = |cause: String| Error::Protocol {
        url: url.to_string(),
        cause,
    };
    let bytes = res.bytes().map_err(|e| protocol(deepest_cause(&e)))?;
    serde_json::from_slice(&bytes).map_err(|e| protocol(e.to_string()))
}

/// `dest` with `suffix` appended to its file name.
fn sibling(dest: &Path, suffix: &str) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A `.part` left by an earlier download of the same URL, and the validator it came with.
struct Resume {
    have: u64,
    etag: String,
}

impl Resume {
    /// `None` (download whole) unless the `.part` has bytes and its `.etag` file names this
    /// URL and a strong validator.
    fn load(part: &Path, tag_path: &Path, url: &Url) -> Option<Resume> {
        let have = fs::metadata(part).ok().filter(|m| m.is_file())?.len();
        let saved = fs::read_to_string(tag_path).ok()?;
        let mut lines = saved.lines();
        let (saved_url, etag) = (lines.next()?, lines.next()?);
        (have > 0 && saved_url == url.as_str() && etag.starts_with('"')).then(|| Resume {
            have,
            etag: etag.to_owned(),
        })
    }
}

/// A `Content-Range: bytes <first>-<last>/<total>`.
#[derive(Debug, PartialEq, Eq)]
struct ContentRange {
    first: u64,
    last: u64,
    total: u64,
}

impl ContentRange {
    /// Is this the rest of a file of which we have the first `have` bytes?
    fn continues(&self, have: u64) -> bool {
        self.first == have && self.last.checked_add(1) == Some(self.total)
    }
}

fn parse_content_range(value: &str) -> Option<ContentRange> {
    let (unit, rest) = value.trim().split_once(' ')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let (range, total) = rest.trim().split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let number = |s: &str| -> Option<u64> {
        // `u64::from_str` takes a leading `+`, which the grammar does not.
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let range = ContentRange {
        first: number(first)?,
        last: number(last)?,
        total: number(total)?,
    };
    (range.first <= range.last && range.last < range.total).then_some(range)
}

/// Why a body could not be copied: the network (with the bytes copied before it broke) or
/// the disk.
enum CopyError {
    Body(String, u64),
    Disk(Error),
}

/// Copies the body, telling network errors (server's side) from disk errors (user's side).
fn copy_body(
    body: &mut Response,
    file: &mut File,
    bar: &ProgressBar,
    dest: &Path,
) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = body
            .read(&mut buf)
            .map_err(|e| CopyError::Body(deepest_cause(&e), total))?;
        if n == 0 {
            return Ok(total);
        }
        file.write_all(&buf[..n]).map_err(|source| {
            CopyError::Disk(Error::Output {
                path: dest.to_owned(),
                source,
            })
        })?;
        total += n as u64;
        bar.inc(n as u64);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_are_read_and_checked() {
        let range = parse_content_range("bytes 100-999/1000").expect("valid");
        assert_eq!(
            range,
            ContentRange {
                first: 100,
                last: 999,
                total: 1000
            }
        );
        assert!(range.continues(100));
        assert!(!range.continues(99), "not where the .part ends");
        let short = parse_content_range("bytes 100-998/1000").expect("valid");
        assert!(!short.continues(100), "not up to the end");
        for bad in [
            "bytes */1000",
            "bytes 5-4/1000",
            "bytes 0-1000/1000",
            "items 0-1/2",
            "bytes 0-1",
            "bytes +0-1/2",
            "bytes -1/2",
            "",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_part_resumes_only_with_its_own_url_and_a_strong_validator() {
        let dir = std::env::temp_dir().join(format!("brain-cli-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let (part, tag) = (dir.join("c.npy.part"), dir.join("c.npy.part.etag"));
        let url = Url::parse("http://h/api/jobs/x/result").expect("url");
        let other = Url::parse("http://h/api/jobs/y/result").expect("url");
        fs::write(&part, [0u8; 10]).expect("part");
        assert!(
            Resume::load(&part, &tag, &url).is_none(),
            "no validator saved"
        );
        fs::write(&tag, format!("{url}\n\"abc\"\n")).expect("tag");
        let resume = Resume::load(&part, &tag, &url).expect("resumable");
        assert_eq!((resume.have, resume.etag.as_str()), (10, "\"abc\""));
        assert!(
            Resume::load(&part, &tag, &other).is_none(),
            "another job's part"
        );
        fs::write(&tag, format!("{url}\nW/\"abc\"\n")).expect("tag");
        assert!(
            Resume::load(&part, &tag, &url).is_none(),
            "a weak validator"
        );
        fs::write(&tag, format!("{url}\n\"abc\"\n")).expect("tag");
        fs::write(&part, []).expect("empty part");
        assert!(
            Resume::load(&part, &tag, &url).is_none(),
            "nothing to resume"
        );
        let _ = fs::remove_dir_all(dir);
    }
}
