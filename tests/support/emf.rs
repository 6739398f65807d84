//! A validator of CloudWatch Embedded Metric Format documents, after the specification
//! (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>):
//! a JSON object whose `_aws` member holds an integer `Timestamp` (ms since the epoch) and a
//! `CloudWatchMetrics` array of directives, each with a `Namespace` (1–1024 characters),
//! `Dimensions` (an array of dimension sets, each an array of at most 30 keys, every key a
//! top-level string member) and `Metrics` (at most 100 definitions, each a `Name` whose
//! top-level member is a number, or an array of at most 100 numbers, and an optional `Unit`
//! from CloudWatch's list).

use serde_json::Value;

/// The units CloudWatch accepts.
pub const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Checks one line of output; returns the document, or what is wrong with it.
pub fn validate_line(line: &str) -> Result<Value, String> {
    if line.contains('\n') {
        return Err("an EMF document is one line".into());
    }
    let doc: Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line}"))?;
    validate(&doc)?;
    Ok(doc)
}

/// Checks a parsed document against the specification's structure.
pub fn validate(doc: &Value) -> Result<(), String> {
    let top = doc.as_object().ok_or("the document is not a JSON object")?;
    let aws = top
        .get("_aws")
        .and_then(Value::as_object)
        .ok_or("no _aws object")?;
    let ts = aws.get("Timestamp").ok_or("no _aws.Timestamp")?;
    if !(ts.is_u64() || ts.is_i64()) {
        return Err(format!("_aws.Timestamp is not an integer: {ts}"));
    }
    // Milliseconds, not seconds: anything before 2001 is a unit mistake.
    if ts.as_i64().unwrap_or(0) < 1_000_000_000_000 {
        return Err(format!("_aws.Timestamp is not in milliseconds: {ts}"));
    }
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(Value::as_array)
        .ok_or("no _aws.CloudWatchMetrics array")?;
    if directives.is_empty() {
        return Err("_aws.CloudWatchMetrics is empty".into());
    }
    for (i, d) in directives.iter().enumerate() {
        let ns = d
            .get("Namespace")
            .and_then(Value::as_str)
            .ok_or(format!("directive {i}: no Namespace string"))?;
        if ns.is_empty() || ns.len() > 1024 {
            return Err(format!(
                "directive {i}: Namespace of {} characters",
                ns.len()
            ));
        }
        let sets = d
            .get("Dimensions")
            .and_then(Value::as_array)
            .ok_or(format!("directive {i}: no Dimensions array"))?;
        for set in sets {
            let keys = set
                .as_array()
                .ok_or(format!("directive {i}: a dimension set is not an array"))?;
            if keys.len() > 30 {
                return Err(format!(
                    "directive {i}: {} dimensions in a set (at most 30)",
                    keys.len()
                ));
            }
            for k in keys {
                let k = k
                    .as_str()
                    .ok_or(format!("directive {i}: a dimension key is not a string"))?;
                match top.get(k) {
                    Some(Value::String(_)) => {}
                    Some(v) => return Err(format!("dimension {k} is not a string: {v}")),
                    None => return Err(format!("dimension {k} has no top-level value")),
                }
            }
        }
        let metrics = d
            .get("Metrics")
            .and_then(Value::as_array)
            .ok_or(format!("directive {i}: no Metrics array"))?;
        if metrics.len() > 100 {
            return Err(format!(
                "directive {i}: {} metrics (at most 100)",
                metrics.len()
            ));
        }
        for m in metrics {
            let name = m
                .get("Name")
                .and_then(Value::as_str)
                .ok_or(format!("directive {i}: a metric without a Name string"))?;
            if name.is_empty() || name.len() > 1024 {
                return Err(format!("metric name of {} characters", name.len()));
            }
            if let Some(unit) = m.get("Unit") {
                let unit = unit
                    .as_str()
                    .ok_or(format!("metric {name}: Unit is not a string"))?;
                if !UNITS.contains(&unit) {
                    return Err(format!("metric {name}: unknown unit {unit}"));
                }
            }
            match top.get(name) {
                Some(Value::Number(_)) => {}
                Some(Value::Array(a)) if a.len() <= 100 && a.iter().all(Value::is_number) => {}
                Some(v) => return Err(format!("metric {name} is not a number: {v}")),
                None => return Err(format!("metric {name} has no top-level value")),
            }
        }
    }
    Ok(())
}

/// The numeric value of metric `name` in a validated document.
pub fn metric(doc: &Value, name: &str) -> Option<f64> {
    let declared = doc["_aws"]["CloudWatchMetrics"]
        .as_array()?
        .iter()
        .flat_map(|d| d["Metrics"].as_array().into_iter().flatten())
        .any(|m| m["Name"] == name);
    declared.then(|| doc[name].as_f64()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({
            "_aws": {"Timestamp": 1_764_000_000_000_i64, "CloudWatchMetrics": [{
                "Namespace": "ghevents", "Dimensions": [["FunctionName"]],
                "Metrics": [{"Name": "NewEvents", "Unit": "Count"}]}]},
            "FunctionName": "f", "NewEvents": 3
        })
    }

    #[test]
    fn the_validator_accepts_a_good_document_and_names_each_fault() {
        assert_eq!(validate(&good()), Ok(()));
        let broken = |f: &dyn Fn(&mut Value)| {
            let mut d = good();
            f(&mut d);
            validate(&d).unwrap_err()
        };
        assert!(broken(&|d| d["_aws"]["Timestamp"] = json!(1.5)).contains("integer"));
        assert!(broken(&|d| d["_aws"]["Timestamp"] = json!(1_764_000_000)).contains("milliseconds"));
        assert!(broken(&|d| d["NewEvents"] = json!("3")).contains("not a number"));
        assert!(broken(&|d| {
            d.as_object_mut().unwrap().remove("NewEvents");
        })
        .contains("NewEvents has no top-level value"));
        assert!(broken(&|d| d["FunctionName"] = json!(1)).contains("not a string"));
        assert!(broken(
            &|d| d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] = json!("Pages")
        )
        .contains("unknown unit"));
        assert!(broken(&|d| {
            let many: Vec<Value> = (0..101).map(|i| json!({"Name": format!("M{i}")})).collect();
            for i in 0..101 {
                d[format!("M{i}")] = json!(1);
            }
            d["_aws"]["CloudWatchMetrics"][0]["Metrics"] = json!(many);
        })
        .contains("at most 100"));
        assert!(broken(&|d| {
            let keys: Vec<String> = (0..31).map(|i| format!("D{i}")).collect();
            for k in &keys {
                d[k.as_str()] = json!("x");
            }
            d["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = json!([keys]);
        })
        .contains("at most 30"));
    }
}
