//! Byte progress bars for uploads and downloads, drawn on stderr.
//!
//! indicatif draws nothing when stderr is not a terminal, so scripts and CI logs get only the
//! summary lines the commands print.

use std::io::{self, Read};

use indicatif::{ProgressBar, ProgressStyle};

/// A bar for `total` bytes (a spinner when the size is not known), labelled `what`.
pub fn bytes(what: &str, total: Option<u64>) -> ProgressBar {
    let bar = match total {
        Some(total) => ProgressBar::new(total).with_style(style(
            "{msg} [{wide_bar}] {binary_bytes}/{binary_total_bytes}  {binary_bytes_per_sec}  ETA {eta}",
        )),
        None => ProgressBar::no_length()
            .with_style(style("{spinner} {msg} {binary_bytes}  {binary_bytes_per_sec}")),
    };
    bar.set_message(what.to_owned());
    bar
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants, so this cannot fail at run time; fall back rather than panic.
    ProgressStyle::with_template(template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// A reader that moves a bar by the bytes read through it: the multipart upload reads each
/// file as it sends it, so this counts bytes handed to the connection.
pub struct Counted<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R> Counted<R> {
    pub fn new(inner: R, bar: ProgressBar) -> Self {
        Counted { inner, bar }
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counted_reader_moves_its_bar_by_what_it_reads() {
        let bar = ProgressBar::hidden();
        let mut reader = Counted::new(&[7u8; 1000][..], bar.clone());
        let mut out = Vec::new();
        reader.read_to_end(&mut out).expect("read");
        assert_eq!(out.len(), 1000);
        assert_eq!(bar.position(), 1000);
    }
}
