//! HdrHistogram interval logs (the "Histogram log format version 1.3" of the Java
//! implementation's `HistogramLogWriter`): the `[stats] interval_log` file and the
//! `/histograms/<name>.hlog` answers of the admin endpoint.
//!
//! A log starts with the headers the Java writer emits (`#[Histogram log format version 1.3]`,
//! `#[StartTime: ..]`, `#[BaseTime: ..]` and the CSV legend), then one line per histogram and
//! interval: `Tag=<name>,<start>,<length>,<max>,<base64 of the V2 deflate-compressed
//! histogram>`, timestamps in seconds since BaseTime (sluice's start). Values are microseconds,
//! so the max column is too; HdrHistogram's `HistogramLogProcessor` reads the file as is (pass
//! `-outputValueUnitRatio 1000` for milliseconds, `-tag <name>` for one histogram).
//!
//! Writing only: the hdrhistogram crate's `IntervalLogIterator` reads these logs back.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};

use crate::observe::latency::Latencies;

/// The legend line of the Java writer (readers skip it).
pub const LEGEND: &str = "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"";

/// Writes the headers of a log whose StartTime and BaseTime are `start`.
pub fn write_header(out: &mut impl Write, start: SystemTime) -> io::Result<()> {
    let secs = start.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    writeln!(out, "#[Logged with sluice {}]", env!("CARGO_PKG_VERSION"))?;
    writeln!(out, "#[Histogram log format version 1.3]")?;
    writeln!(out, "#[StartTime: {secs:.3} (seconds since epoch)]")?;
    writeln!(out, "#[BaseTime: {secs:.3} (seconds since epoch)]")?;
    writeln!(out, "#[Values in microseconds; one histogram per Tag and interval]")?;
    writeln!(out, "{LEGEND}")
}

/// Appends one tagged line per histogram, all covering `start..start + length` (since BaseTime).
pub fn write_intervals<'n, 'h>(
    out: &mut impl Write,
    histograms: impl IntoIterator<Item = (&'n str, &'h Histogram<u64>)>,
    start: Duration,
    length: Duration,
) -> io::Result<()> {
    let mut serializer = V2DeflateSerializer::new();
    // A builder with nothing configured writes no header of its own.
    let mut w = IntervalLogWriterBuilder::new().begin_log_with(out, &mut serializer)?;
    for (name, h) in histograms {
        let tag = Tag::new(name).ok_or_else(|| io::Error::other(format!("{name:?} is not a valid tag")))?;
        w.write_histogram(h, start, length, Some(tag)).map_err(|e| io::Error::other(format!("{e:?}")))?;
    }
    Ok(())
}

/// A whole log of one histogram: the headers, then `h` as one interval from BaseTime (`start`)
/// to `now`. The body of `/histograms/<name>.hlog`.
pub fn histogram_log(name: &str, h: &Histogram<u64>, start: SystemTime, now: SystemTime) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    write_header(&mut out, start)?;
    let length = now.duration_since(start).unwrap_or_default();
    write_intervals(&mut out, [(name, h)], Duration::ZERO, length)?;
    Ok(out)
}

/// The `[stats] interval_log` file: created (truncated) at start with the headers; each
/// [`append`](Self::append) writes every histogram's interval.
pub struct IntervalLog {
    file: File,
    /// The instant of BaseTime.
    base: Instant,
    buf: Vec<u8>,
}

impl IntervalLog {
    /// Creates or truncates `path`; a symbolic link there is refused (O_NOFOLLOW), so the log
    /// cannot be pointed at another file.
    pub fn create(path: &Path, start: SystemTime) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file =
            File::options().write(true).create(true).truncate(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
        let mut buf = Vec::new();
        write_header(&mut buf, start)?;
        file.write_all(&buf)?;
        Ok(Self { file, base: Instant::now(), buf })
    }

    /// Writes the interval `from..to` of every histogram in `l` (empty ones too, so that each
    /// tag's series has no holes).
    pub fn append(&mut self, l: &Latencies, from: Instant, to: Instant) -> io::Result<()> {
        self.buf.clear();
        let start = from.saturating_duration_since(self.base);
        write_intervals(&mut self.buf, l.iter(), start, to.saturating_duration_since(from))?;
        self.file.write_all(&self.buf)?;
        self.file.flush()
    }
}

/// Total count per tag of a log (tests).
#[cfg(test)]
pub fn read_totals(log: &[u8]) -> Result<std::collections::BTreeMap<String, u64>, String> {
    use base64::Engine;
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    let mut totals = std::collections::BTreeMap::new();
    for entry in IntervalLogIterator::new(log) {
        if let LogEntry::Interval(i) = entry.map_err(|e| format!("{e:?}"))? {
            let bytes =
                base64::engine::general_purpose::STANDARD.decode(i.encoded_histogram()).map_err(|e| e.to_string())?;
            let h: Histogram<u64> = Deserializer::new().deserialize(&mut &bytes[..]).map_err(|e| format!("{e:?}"))?;
            let tag = i.tag().map(|t| t.as_str().to_owned()).unwrap_or_default();
            *totals.entry(tag).or_insert(0) += h.len();
        }
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    #[test]
    fn the_interval_log_refuses_a_symlink() {
        let dir = std::env::temp_dir().join(format!("sluice-hlog-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (target, link) = (dir.join("precious"), dir.join("t.hlog"));
        std::fs::write(&target, "keep me").unwrap();
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(IntervalLog::create(&link, SystemTime::now()).is_err(), "followed a symlink");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
        std::fs::remove_file(&link).unwrap();
        assert!(IntervalLog::create(&link, SystemTime::now()).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn headers_are_the_java_writers_and_parse() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let mut out = Vec::new();
        write_header(&mut out, start).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains("#[Histogram log format version 1.3]\n"), "{text}");
        assert!(text.contains("#[StartTime: 1700000000.123 (seconds since epoch)]\n"), "{text}");
        assert!(text.ends_with(&format!("{LEGEND}\n")), "{text}");
        let entries: Vec<_> = IntervalLogIterator::new(&out).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            entries,
            vec![
                LogEntry::StartTime(Duration::from_millis(1_700_000_000_123)),
                LogEntry::BaseTime(Duration::from_millis(1_700_000_000_123)),
            ]
        );
    }

    #[test]
    fn intervals_round_trip_through_the_crates_reader() {
        let mut l = Latencies::default();
        for us in [5, 50, 500, 5_000, 50_000] {
            crate::observe::latency::record(&mut l.tcp_handshake, Duration::from_micros(us));
        }
        crate::observe::latency::record(&mut l.tls12_resumed, Duration::from_millis(3));
        let start = SystemTime::now();
        let mut out = Vec::new();
        write_header(&mut out, start).unwrap();
        write_intervals(&mut out, l.iter(), Duration::from_millis(1500), Duration::from_secs(10)).unwrap();
        write_intervals(&mut out, l.iter(), Duration::from_millis(11500), Duration::from_secs(10)).unwrap();
        let totals = read_totals(&out).unwrap();
        assert_eq!(totals.len(), 8);
        assert_eq!(totals["tcp_handshake"], 10);
        assert_eq!(totals["tls12_handshake_resumed"], 2);
        assert_eq!(totals["backend_connect"], 0);
        let intervals: Vec<_> = IntervalLogIterator::new(&out)
            .filter_map(|e| match e.unwrap() {
                LogEntry::Interval(i) => Some((i.tag().unwrap().as_str().to_owned(), i.start_timestamp(), i.max())),
                _ => None,
            })
            .collect();
        assert_eq!(intervals.len(), 16);
        assert_eq!(intervals[0].0, "tcp_handshake");
        assert_eq!(intervals[0].1, Duration::from_millis(1500));
        assert!((intervals[0].2 - 50_000.0).abs() <= 50.0, "max in µs: {}", intervals[0].2);
        assert_eq!(intervals[8].1, Duration::from_millis(11500));
    }

    #[test]
    fn one_histogram_log_and_the_file() {
        let mut h = Histogram::<u64>::new_with_bounds(1, crate::observe::latency::MAX_MICROS, 3).unwrap();
        h.record(1234).unwrap();
        let start = SystemTime::now();
        let log = histogram_log("tls13_handshake_full", &h, start, start + Duration::from_secs(2)).unwrap();
        assert_eq!(read_totals(&log).unwrap().get("tls13_handshake_full"), Some(&1));

        let path = std::env::temp_dir().join(format!("sluice-hlog-unit-{}.hlog", std::process::id()));
        let mut file = IntervalLog::create(&path, start).unwrap();
        let mut l = Latencies::default();
        l.tls13_full.record(77).unwrap();
        let t = Instant::now();
        file.append(&l, t, t + Duration::from_secs(1)).unwrap();
        file.append(&l, t + Duration::from_secs(1), t + Duration::from_secs(2)).unwrap();
        let text = std::fs::read(&path).unwrap();
        assert_eq!(read_totals(&text).unwrap().get("tls13_handshake_full"), Some(&2));
        let _ = std::fs::remove_file(&path);
    }
}
