//! What the host itself reads of a tariff document: its currency, minor units and which
//! services are in volume mode. The rater owns the rest; a document that is not TOML (a
//! tenant's own rater may read any format) gives the defaults.

/// The host's view of a tariff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TariffInfo {
    /// `currency`, if the document says.
    pub currency: Option<String>,
    /// `minor_units` (default 2, at most 6).
    pub minor_units: u8,
}

impl TariffInfo {
    pub fn read(tariff: &str) -> TariffInfo {
        let table = tariff.parse::<toml::Table>().ok();
        let get = |k: &str| table.as_ref().and_then(|t| t.get(k));
        TariffInfo {
            currency: get("currency").and_then(|v| v.as_str()).map(str::to_owned),
            minor_units: get("minor_units")
                .and_then(toml::Value::as_integer)
                .and_then(|v| u8::try_from(v).ok())
                .filter(|&v| v <= 6)
                .unwrap_or(2),
        }
    }
}

/// A volume-mode service: its name and the outcome and direction it charges (the
/// first of its `outcomes`; by default `delivered` outbound, `received` inbound).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeService {
    pub name: String,
    pub outcome: String,
    pub direction: String,
}

/// The services with `mode = "volume"` (settled at period end).
pub fn volume_services(tariff: &str) -> Vec<VolumeService> {
    let Ok(table) = tariff.parse::<toml::Table>() else {
        return Vec::new();
    };
    let str_of =
        |v: &toml::Value, k: &str| v.get(k).and_then(toml::Value::as_str).map(str::to_owned);
    table
        .get("service")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter(|s| s.get("mode").and_then(toml::Value::as_str) == Some("volume"))
        .filter_map(|s| {
            let direction = str_of(s, "direction").unwrap_or_else(|| "outbound".into());
            let outcome = s
                .get("outcomes")
                .and_then(toml::Value::as_array)
                .and_then(|a| a.first()?.as_str().map(str::to_owned))
                .unwrap_or_else(|| {
                    if direction == "inbound" {
                        "received"
                    } else {
                        "delivered"
                    }
                    .to_owned()
                });
            Some(VolumeService {
                name: str_of(s, "name")?,
                outcome,
                direction,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_currency_minor_units_and_volume_services() {
        let t = "id = \"x\"\ncurrency = \"JPY\"\nminor_units = 0\n[[service]]\nname = \"a\"\nmode = \"volume\"\n[[service]]\nname = \"b\"\nmode = \"graduated\"\n";
        assert_eq!(
            TariffInfo::read(t),
            TariffInfo {
                currency: Some("JPY".into()),
                minor_units: 0
            }
        );
        assert_eq!(
            volume_services(t),
            [VolumeService {
                name: "a".into(),
                outcome: "delivered".into(),
                direction: "outbound".into()
            }]
        );
        assert_eq!(TariffInfo::read("not toml [").minor_units, 2);
        assert!(volume_services("not toml [").is_empty());
    }
}
