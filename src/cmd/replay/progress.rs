//! Progress of a long job on stderr, for people and for pipelines: a line
//! redrawn in place on a terminal (units done, rate, ETA), else one JSON
//! line every few seconds.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Progress on stderr: a line redrawn in place on a terminal, else one
/// JSON line every few seconds.
pub struct Progress<'a> {
    id: &'a str,
    total: usize,
    done: usize,
    started: Instant,
    last: Instant,
    terminal: bool,
}

impl<'a> Progress<'a> {
    pub fn new(id: &'a str, total: usize, json: bool) -> Progress<'a> {
        let now = Instant::now();
        Progress {
            id,
            total,
            done: 0,
            started: now,
            last: now,
            terminal: !json && std::io::stderr().is_terminal(),
        }
    }

    pub fn advance(&mut self, n: usize) {
        self.done += n;
        if self.last.elapsed() >= PROGRESS_EVERY || self.terminal {
            self.last = Instant::now();
            self.show();
        }
    }

    fn show(&self) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / secs;
        let eta = (self.total - self.done.min(self.total)) as f64 / rate.max(1e-9);
        if self.terminal {
            eprint!(
                "\r{}: {}/{} units, {rate:.0}/s, ETA {eta:.0} s   ",
                self.id, self.done, self.total
            );
        } else {
            eprintln!(
                "{}",
                serde_json::json!({
                    "progress": self.id,
                    "done": self.done,
                    "total": self.total,
                    "per_second": (rate * 10.0).round() / 10.0,
                    "eta_seconds": eta.round(),
                })
            );
        }
    }

    pub fn finish(&self) {
        self.show();
        if self.terminal {
            eprintln!();
        }
    }
}
