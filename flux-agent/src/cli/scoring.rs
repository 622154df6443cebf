//! Options shared by every command that scores: databases, allowlist, limits.

use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;
use flux_detect::{
    enrich::{Enricher, default_db_dir},
    known_good::Allowlist,
    score::{ScorerConfig, ScorerSetup},
};
use log::{info, warn};

#[derive(Debug, clap::Args)]
pub struct ScoringArgs {
    /// IP-to-ASN database (repeatable): iptoasn.com TSV, ip-location-db ASN CSV, or ASN .mmdb.
    /// Default: the files `cargo xtask setup` installs in the database folder.
    #[arg(long = "asn-db", value_name = "PATH")]
    pub asn_db: Vec<PathBuf>,

    /// IP-to-country database (repeatable): ip-location-db country CSV, iptoasn TSV, or
    /// country .mmdb.
    #[arg(long = "geo-db", value_name = "PATH")]
    pub geo_db: Vec<PathBuf>,

    /// Folder with the default databases. Default: $FLUX_AGENT_DB_DIR or /var/lib/flux-agent/db.
    #[arg(long, value_name = "DIR")]
    pub db_dir: Option<PathBuf>,

    /// Use no database: networks are approximated by /16 (IPv4) and /48 (IPv6) prefixes.
    #[arg(long, conflicts_with_all = ["asn_db", "geo_db", "db_dir"])]
    pub no_db: bool,

    /// Extra allowlist file (repeatable; one domain suffix, AS123 or CIDR per line).
    #[arg(long = "allowlist", value_name = "FILE")]
    pub allowlist: Vec<PathBuf>,

    /// Leave out the built-in allowlist of CDNs, clouds, NTP pool and DNS seeds.
    #[arg(long)]
    pub no_default_allowlist: bool,

    /// Keys (names and domains) tracked at most; the least recently used is dropped beyond it.
    #[arg(long, value_name = "N", default_value_t = ScorerConfig::default().max_keys)]
    pub max_keys: usize,

    /// How long a key's own evidence must hold at the block score before an automatic block
    /// (rounded down to minutes, at most 255; 0 blocks at the next score on new data).
    #[arg(long, value_name = "DUR", default_value = "2m", value_parser = humantime::parse_duration)]
    pub block_hold: std::time::Duration,
}

impl ScoringArgs {
    pub fn setup(&self) -> anyhow::Result<ScorerSetup> {
        let enricher = if self.no_db {
            Enricher::empty()
        } else if !self.asn_db.is_empty() || !self.geo_db.is_empty() {
            Enricher::load(&self.asn_db, &self.geo_db).context("cannot load IP database")?
        } else {
            let dir = self.db_dir.clone().unwrap_or_else(default_db_dir);
            Enricher::load_dir(&dir)
                .with_context(|| format!("cannot load IP databases from {}", dir.display()))?
        };
        if enricher.has_asn() {
            info!("{}", enricher.describe());
        } else {
            warn!(
                "no ASN database: scoring falls back to prefix diversity (/16, /48); \
                 run `cargo xtask setup` or pass --asn-db"
            );
        }
        let mut allowlist = if self.no_default_allowlist {
            Allowlist::empty()
        } else {
            Allowlist::builtin()
        };
        for f in &self.allowlist {
            allowlist.add_file(f).context("cannot load allowlist")?;
        }
        Ok(ScorerSetup {
            config: ScorerConfig {
                max_keys: self.max_keys,
                block_hold_minutes: u8::try_from(self.block_hold.as_secs() / 60)
                    .map_err(|_| anyhow::anyhow!("--block-hold is at most 255 minutes"))?,
                ..ScorerConfig::default()
            },
            enricher: Arc::new(enricher),
            allowlist: Arc::new(allowlist),
        })
    }
}
