//! JSON merge patch (RFC 7396), as `PATCH /config` applies it: objects merge key by key, `null`
//! deletes a key, anything else replaces the value.

use serde_json::{Map, Value};

/// Apply `patch` to `target`; returns whether `target` changed.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) -> bool {
    let Value::Object(patch) = patch else {
        if target == patch {
            return false;
        }
        *target = patch.clone();
        return true;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
        // Replacing a non-object with the (possibly empty) patched object is a change.
        merge_object(target, patch);
        return true;
    }
    merge_object(target, patch)
}

fn merge_object(target: &mut Value, patch: &Map<String, Value>) -> bool {
    let Value::Object(map) = target else {
        return false;
    };
    let mut changed = false;
    for (key, value) in patch {
        if value.is_null() {
            changed |= map.remove(key).is_some();
            continue;
        }
        match map.get_mut(key) {
            Some(existing) => changed |= merge_patch(existing, value),
            None => {
                let mut fresh = Value::Null;
                merge_patch(&mut fresh, value);
                map.insert(key.clone(), fresh);
                changed = true;
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn patched(target: Value, patch: Value) -> (Value, bool) {
        let mut t = target;
        let changed = merge_patch(&mut t, &patch);
        (t, changed)
    }

    #[test]
    fn rfc7396_examples() {
        // The examples of RFC 7396, appendix A.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (target, patch, want) in cases {
            let (got, _) = patched(target.clone(), patch.clone());
            assert_eq!(got, want, "{target} + {patch}");
        }
    }

    #[test]
    fn pause_and_parameters_like_patronictl() {
        let config = json!({"ttl": 30, "postgresql": {"parameters": {"max_connections": 100}}});
        let (c, changed) = patched(config.clone(), json!({"pause": true}));
        assert!(changed);
        assert_eq!(c["pause"], true);
        let (c, changed) = patched(c, json!({"pause": null}));
        assert!(changed);
        assert_eq!(c, config);
        let (_, changed) = patched(config.clone(), json!({"pause": null}));
        assert!(!changed, "deleting an absent key changes nothing");
        let (c, changed) = patched(
            config.clone(),
            json!({"postgresql": {"parameters": {"max_connections": 200, "work_mem": "8MB"}}}),
        );
        assert!(changed);
        assert_eq!(
            c,
            json!({"ttl": 30, "postgresql": {"parameters": {"max_connections": 200, "work_mem": "8MB"}}})
        );
        let (_, changed) = patched(config.clone(), json!({"ttl": 30}));
        assert!(!changed);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            "[a-c]{0,2}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[a-d]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Drop nulls inside objects, recursively (what merging into nothing does).
    fn without_nulls(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), without_nulls(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    proptest! {
        /// Applying a patch twice gives the same result as once, and a second application
        /// reports no change.
        #[test]
        fn idempotent(target in json_value(), patch in json_value()) {
            let (once, _) = patched(target, patch.clone());
            let (twice, changed) = patched(once.clone(), patch);
            prop_assert_eq!(&once, &twice);
            prop_assert!(!changed);
        }

        /// "changed" is true exactly when the document changed.
        #[test]
        fn change_flag_is_exact(target in json_value(), patch in json_value()) {
            let (after, changed) = patched(target.clone(), patch);
            prop_assert_eq!(changed, after != target);
        }

        /// Every non-null key of an object patch ends up in the result (nulls stripped); keys
        /// patched with null are gone; keys not in the patch are untouched.
        #[test]
        fn keys_land_where_the_patch_says(
            target in prop::collection::btree_map("[a-d]", json_value(), 0..4),
            patch in prop::collection::btree_map("[a-d]", json_value(), 0..4),
        ) {
            let target: Map<String, Value> = target.into_iter().collect();
            let patch_map: Map<String, Value> = patch.into_iter().collect();
            let (after, _) = patched(Value::Object(target.clone()), Value::Object(patch_map.clone()));
            let after = after.as_object().cloned().unwrap_or_default();
            for (k, v) in &patch_map {
                if v.is_null() {
                    prop_assert!(!after.contains_key(k));
                } else if !v.is_object() {
                    prop_assert_eq!(after.get(k), Some(&without_nulls(v)));
                }
            }
            for (k, v) in &target {
                if !patch_map.contains_key(k) {
                    prop_assert_eq!(after.get(k), Some(v));
                }
            }
        }
    }
}
