//! Ground truth for evaluation: `labels.tsv`, one `domain<TAB>class<TAB>truth` line per label,
//! `#` starts a comment line, and the rule that says which label a verdict belongs to.

use std::{
    collections::HashMap,
    fmt, fs,
    io::{self, Write as _},
    path::Path,
    str::FromStr,
};

use anyhow::{Context as _, bail};

/// What a labelled domain really is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Truth {
    /// A fast-flux domain: a detection is a true positive.
    Flux,
    /// A legitimate domain: a detection is a false positive.
    Benign,
    /// Legitimate but flux-like by design (NTP pool, crypto DNS seeds): the allowlist covers these;
    /// a detection is expected without the allowlist and a false positive with it.
    Hard,
    /// Not known either way (e.g. a name on a fast-flux list that shows no flux): not scored.
    Unknown,
}

impl Truth {
    pub fn as_str(self) -> &'static str {
        match self {
            Truth::Flux => "flux",
            Truth::Benign => "benign",
            Truth::Hard => "hard",
            Truth::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Truth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Truth {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "flux" => Truth::Flux,
            "benign" => Truth::Benign,
            "hard" => Truth::Hard,
            "unknown" => Truth::Unknown,
            other => bail!("unknown truth {other:?} (flux, benign, hard, unknown)"),
        })
    }
}

/// One labelled domain: a registered domain (`example.com`) or a host name (a host under a
/// private public suffix such as `myhost.duckdns.org`, or a single name).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    /// Lowercase, no trailing dot.
    pub domain: String,
    /// The scenario class, e.g. `flux-residential`, `cdn`, `flux-2009`.
    pub class: String,
    pub truth: Truth,
}

impl Label {
    pub fn new(domain: &str, class: &str, truth: Truth) -> Self {
        Self {
            domain: normalize(domain),
            class: class.to_owned(),
            truth,
        }
    }
}

/// Lowercase and without the trailing dot.
pub fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Parses `labels.tsv` text.
pub fn parse_labels(text: &str) -> anyhow::Result<Vec<Label>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != 3 {
            bail!(
                "line {}: want domain<TAB>class<TAB>truth, got {} field(s)",
                i + 1,
                fields.len()
            );
        }
        let domain = normalize(fields[0]);
        if domain.is_empty() {
            bail!("line {}: empty domain", i + 1);
        }
        let truth = fields[2]
            .parse()
            .with_context(|| format!("line {}", i + 1))?;
        out.push(Label {
            domain,
            class: fields[1].trim().to_owned(),
            truth,
        });
    }
    Ok(out)
}

pub fn read_labels(path: &Path) -> anyhow::Result<Vec<Label>> {
    let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    parse_labels(&text).with_context(|| format!("parse {}", path.display()))
}

/// Writes labels as TSV behind a comment header (`header` lines are prefixed with `# `).
pub fn write_labels(path: &Path, header: &[&str], labels: &[Label]) -> io::Result<()> {
    let mut out = io::BufWriter::new(fs::File::create(path)?);
    for h in header {
        writeln!(out, "# {h}")?;
    }
    writeln!(out, "# domain\tclass\ttruth")?;
    for l in labels {
        writeln!(out, "{}\t{}\t{}", l.domain, l.class, l.truth)?;
    }
    out.flush()
}

/// Finds the label a verdict on a key belongs to.
///
/// A verdict on key K belongs to label D if K == D, K ends with `.D` (K is a name under D), or D
/// ends with `.K` (K is a parent of D, e.g. a verdict on the ICANN registered domain of a host
/// labelled under a private suffix). Of several matching labels the longest D wins (ties: the
/// lexicographically smallest, so the answer does not depend on label order).
pub struct LabelIndex {
    labels: Vec<Label>,
    exact: HashMap<String, usize>,
    /// For every proper parent P of a label's domain: the longest label under P.
    under: HashMap<String, usize>,
}

impl LabelIndex {
    pub fn new(labels: Vec<Label>) -> Self {
        let mut exact: HashMap<String, usize> = HashMap::new();
        let mut under: HashMap<String, usize> = HashMap::new();
        let better = |labels: &[Label], new: usize, old: usize| {
            let (a, b) = (&labels[new].domain, &labels[old].domain);
            a.len() > b.len() || (a.len() == b.len() && a < b)
        };
        for (i, l) in labels.iter().enumerate() {
            exact.entry(l.domain.clone()).or_insert(i);
            for (pos, _) in l.domain.match_indices('.') {
                let parent = &l.domain[pos + 1..];
                match under.get(parent) {
                    Some(&old) if !better(&labels, i, old) => {}
                    _ => {
                        under.insert(parent.to_owned(), i);
                    }
                }
            }
        }
        Self {
            labels,
            exact,
            under,
        }
    }

    pub fn labels(&self) -> &[Label] {
        &self.labels
    }

    /// The label a verdict on `key` belongs to, if any.
    pub fn label_for(&self, key: &str) -> Option<&Label> {
        let key = normalize(key);
        // A label under the key is longer than the key, so it wins over every other match.
        if let Some(&i) = self.under.get(&key) {
            return Some(&self.labels[i]);
        }
        if let Some(&i) = self.exact.get(&key) {
            return Some(&self.labels[i]);
        }
        // The longest parent of the key that is labelled.
        key.match_indices('.')
            .map(|(pos, _)| &key[pos + 1..])
            .find_map(|parent| self.exact.get(parent))
            .map(|&i| &self.labels[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_labels_roundtrip_and_match() {
        let labels = vec![
            Label::new("diexgwdi.cn", "flux-2009", Truth::Flux),
            Label::new("ntp.org", "ntp-pool", Truth::Hard),
            Label::new("pool.ntp.org", "ntp-pool", Truth::Hard),
            Label::new("myhost.duckdns.org", "dyndns", Truth::Benign),
            Label::new("zz.duckdns.org", "dyndns", Truth::Benign),
            Label::new("Example.COM.", "cdn", Truth::Benign),
        ];
        let dir = std::env::temp_dir().join(format!("flux-eval-labels-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("labels.tsv");
        write_labels(&p, &["test"], &labels).unwrap();
        let back = read_labels(&p).unwrap();
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(back, labels);
        assert_eq!(back[5].domain, "example.com");

        let idx = LabelIndex::new(back);
        let d = |k: &str| idx.label_for(k).map(|l| l.domain.as_str());
        assert_eq!(d("diexgwdi.cn"), Some("diexgwdi.cn"));
        assert_eq!(d("rsqh.diexgwdi.cn."), Some("diexgwdi.cn"));
        assert_eq!(d("xdiexgwdi.cn"), None);
        assert_eq!(d("0.de.pool.ntp.org"), Some("pool.ntp.org"));
        assert_eq!(d("www.ntp.org"), Some("ntp.org"));
        // Parent of labelled hosts: the longest label under it.
        assert_eq!(d("duckdns.org"), Some("myhost.duckdns.org"));
        assert_eq!(d("a.myhost.duckdns.org"), Some("myhost.duckdns.org"));
        assert_eq!(d("www.example.com"), Some("example.com"));
        assert_eq!(d("com.cn"), None);

        assert!(parse_labels("a.com\tx\tmaybe\n").is_err());
        assert!(parse_labels("a.com\tx\n").is_err());
        assert_eq!(parse_labels("# c\n\na.com\tx\tFLUX\r\n").unwrap().len(), 1);
    }
}
