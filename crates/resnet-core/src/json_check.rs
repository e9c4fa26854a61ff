//! Readable messages for settings that arrive as JSON (a spec, an optimizer config). serde's own
//! errors name neither the field nor the allowed values ("unknown variant `D`, expected one of
//! `A`, `B`, `C` at line 1 column 206"; "invalid type: null, expected f32 at line 1 column 10"),
//! so the fields are checked on the parsed `Value` first and the first problem is reported as
//! "`shortcut` must be one of 'A', 'B', 'C', got 'D'".

use serde_json::{Map, Value};

pub(crate) type Check = std::result::Result<(), String>;

/// A JSON value as a user would recognise it in a message.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null (NaN and Infinity have no JSON form and arrive as null)".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{s}'"),
        Value::Array(_) => format!("an array ({v})"),
        Value::Object(_) => "an object".into(),
    }
}

/// The object's fields, for checks that name them with a prefix (`stages[1].`).
pub(crate) struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: String,
}

impl<'a> Fields<'a> {
    /// `what` names the whole value in the error when it is not an object ("the spec").
    pub(crate) fn of(v: &'a Value, prefix: &str, what: &str) -> std::result::Result<Self, String> {
        match v.as_object() {
            Some(obj) => Ok(Fields {
                obj,
                prefix: prefix.to_string(),
            }),
            None => Err(format!("{what} must be an object, got {}", describe(v))),
        }
    }

    fn get(&self, key: &str, required: bool) -> std::result::Result<Option<&'a Value>, String> {
        match self.obj.get(key) {
            Some(v) => Ok(Some(v)),
            None if required => Err(format!("`{}{key}` is missing", self.prefix)),
            None => Ok(None),
        }
    }

    fn bad(&self, key: &str, expected: &str, v: &Value) -> String {
        format!("`{}{key}` must be {expected}, got {}", self.prefix, describe(v))
    }

    /// A string among `allowed`.
    pub(crate) fn one_of(&self, key: &str, allowed: &[&str], required: bool) -> Check {
        let Some(v) = self.get(key, required)? else {
            return Ok(());
        };
        match v.as_str() {
            Some(s) if allowed.contains(&s) => Ok(()),
            _ => {
                let list = allowed.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(", ");
                Err(self.bad(key, &format!("one of {list}"), v))
            }
        }
    }

    pub(crate) fn boolean(&self, key: &str, required: bool) -> Check {
        let Some(v) = self.get(key, required)? else {
            return Ok(());
        };
        if v.is_boolean() {
            Ok(())
        } else {
            Err(self.bad(key, "true or false", v))
        }
    }

    /// A non-negative integer.
    pub(crate) fn count(&self, key: &str, required: bool) -> Check {
        let Some(v) = self.get(key, required)? else {
            return Ok(());
        };
        if is_count(v) {
            Ok(())
        } else {
            Err(self.bad(key, "a non-negative integer", v))
        }
    }

    /// A finite number.
    pub(crate) fn number(&self, key: &str, required: bool) -> Check {
        let Some(v) = self.get(key, required)? else {
            return Ok(());
        };
        if v.as_f64().is_some_and(f64::is_finite) {
            Ok(())
        } else {
            Err(self.bad(key, "a finite number", v))
        }
    }

    /// An array of non-negative integers.
    pub(crate) fn counts(&self, key: &str, required: bool) -> Check {
        let Some(v) = self.get(key, required)? else {
            return Ok(());
        };
        match v.as_array() {
            Some(items) => match items.iter().position(|x| !is_count(x)) {
                None => Ok(()),
                Some(i) => Err(format!(
                    "`{}{key}[{i}]` must be a non-negative integer, got {}",
                    self.prefix,
                    describe(&items[i])
                )),
            },
            None => Err(self.bad(key, "an array of non-negative integers", v)),
        }
    }

    /// The value of `key` when present (for nested objects and arrays).
    pub(crate) fn value(&self, key: &str, required: bool) -> std::result::Result<Option<&'a Value>, String> {
        self.get(key, required)
    }
}

fn is_count(v: &Value) -> bool {
    v.is_u64()
        || v.as_f64()
            .is_some_and(|x| x >= 0.0 && x.fract() == 0.0 && x <= u64::MAX as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_name_field_value_and_allowed() {
        let v = json!({ "shortcut": "D", "lr": null, "n": 4.5, "m": [1, -2] });
        let f = Fields::of(&v, "", "x").unwrap();
        assert_eq!(
            f.one_of("shortcut", &["A", "B", "C"], true).unwrap_err(),
            "`shortcut` must be one of 'A', 'B', 'C', got 'D'"
        );
        assert!(f
            .number("lr", true)
            .unwrap_err()
            .starts_with("`lr` must be a finite number, got null"));
        assert_eq!(
            f.count("n", true).unwrap_err(),
            "`n` must be a non-negative integer, got 4.5"
        );
        assert_eq!(
            f.counts("m", true).unwrap_err(),
            "`m[1]` must be a non-negative integer, got -2"
        );
        assert_eq!(f.boolean("plain", true).unwrap_err(), "`plain` is missing");
        assert!(f.boolean("plain", false).is_ok());
    }
}
